"""normreg.param_groups with several penalties, and GroupLasso's output-channel layout recipe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normreg
from normreg.optim import ProxAdam


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.dec = nn.ConvTranspose2d(4, 5, 3)
        self.fc = nn.Linear(5, 2)


def _out_channel_norms(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach().double()
    if isinstance(module, nn.ConvTranspose2d):  # (in, out, kh, kw)
        w = w.transpose(0, 1)
    return w.flatten(1).norm(dim=1)


def test_several_penalties_by_type_and_name():
    net = Net()
    l1, gl = normreg.L1(1e-3), normreg.GroupLasso(1e-2, dim=0)  # an int dim: the object itself
    groups = normreg.param_groups(net, {nn.Conv2d: gl, "fc.*": l1, "dec.*": None})
    by_pen = {id(g["penalty"]): g["param_names"] for g in groups}
    assert by_pen[id(gl)] == ["enc.weight"]
    assert by_pen[id(l1)] == ["fc.weight"]  # fc.bias is excluded by the default "*bias"
    assert sorted(by_pen[id(None)]) == sorted(
        ["enc.bias", "bn.weight", "bn.bias", "dec.weight", "dec.bias", "fc.bias"]
    )
    assert groups[-1]["penalty"] is None
    # every trainable parameter exactly once
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters())
    # the first matching entry wins (dict order)
    groups = normreg.param_groups(net, {"*.weight": l1, nn.Conv2d: gl})
    assert [g["param_names"] for g in groups if g["penalty"] is l1][0] == [
        "enc.weight",
        "dec.weight",
        "fc.weight",
    ]


def test_one_penalty_keeps_the_two_groups_and_the_object():
    net = Net()
    pen = normreg.L1(1e-3)
    groups = normreg.param_groups(net, pen, lr=0.1)
    assert [g["penalty"] for g in groups] == [pen, None]
    assert groups[0]["penalty"] is pen and all(g["lr"] == 0.1 for g in groups)
    assert groups[0]["param_names"] == ["enc.weight", "dec.weight", "fc.weight"]


def test_group_lasso_out_groups_output_channels_of_every_layer():
    torch.manual_seed(0)
    net = Net()
    groups = normreg.param_groups(net, normreg.GroupLasso(0.5, dim="out"))
    dims = {n: g["penalty"].dim for g in groups if g["penalty"] is not None for n in g["param_names"]}
    assert dims == {"enc.weight": 0, "dec.weight": 1, "fc.weight": 0}
    total = sum(float(g["penalty"].value(g["params"]).detach()) for g in groups if g["penalty"] is not None)
    want = 0.5 * sum(float(_out_channel_norms(m).sum()) for m in (net.enc, net.dec, net.fc))
    assert total == pytest.approx(want, rel=1e-6)


def test_group_lasso_out_prox_zeroes_whole_output_channels_of_a_transposed_conv():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.dec.weight[:, 2] *= 1e-3  # one weak output channel
    norms = _out_channel_norms(net.dec)
    lam = float(norms[2]) * 2.0  # lr * lam exceeds that channel's norm only
    assert lam < float(norms[[0, 1, 3, 4]].min())
    groups = normreg.param_groups(net, {nn.ConvTranspose2d: normreg.GroupLasso(lam, dim="out")})
    opt = ProxAdam(groups, lr=1.0, penalty_mode="prox")
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    w = net.dec.weight.detach()
    assert bool((w[:, 2] == 0).all())
    assert all(bool((w[:, j] != 0).any()) for j in (0, 1, 3, 4))


def test_sum_with_a_layout_recipe_resolves_its_terms():
    net = Net()
    pen = normreg.L1(1e-4) + normreg.GroupLasso(1e-3, dim="out")
    groups = normreg.param_groups(net, pen)
    dec = [g["penalty"] for g in groups if "dec.weight" in g["param_names"]][0]
    assert isinstance(dec, normreg.Sum) and [getattr(t, "dim", None) for t in dec.terms][-1] == 1
    plain = normreg.L1(1e-4) + normreg.GroupLasso(1e-3, dim=0)  # an int dim: no recipe
    assert plain.for_module(net.dec) is plain


def test_default_is_output_channels_and_bare_tensors_read_out_in():
    """GroupLasso() groups output channels: per layer through param_groups / for_module (the
    transposed conv's dim 1), and a bare tensor as an (out, in, ...) weight (dim 0)."""
    net = Net()
    default = normreg.GroupLasso(1e-3)
    assert default.for_module(net.dec).dim == 1 and default.for_module(net.enc).dim == 0
    assert default.for_module(net.dec, "bias").dim == 0
    w = torch.randn(3, 4, 2, dtype=torch.float64)
    want = 1e-3 * w.flatten(1).norm(dim=1).sum()  # rows = output channels
    torch.testing.assert_close(default.value(w), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        normreg.GroupLasso(1e-3, dim=1).value(w),
        1e-3 * w.transpose(0, 1).flatten(1).norm(dim=1).sum(),
        rtol=1e-12,
        atol=0,
    )
    dims = {
        n: g["penalty"].dim
        for g in normreg.param_groups(net, default)
        if g["penalty"] is not None
        for n in g["param_names"]
    }
    assert dims == {"enc.weight": 0, "dec.weight": 1, "fc.weight": 0}


def test_layout_recipe_bad_arguments():
    with pytest.raises(ValueError, match="'dim'"):
        normreg.GroupLasso(1e-3, dim="in")
    net = Net()
    with pytest.raises(TypeError, match="'penalty' keys"):
        normreg.param_groups(net, {3: normreg.L1(1.0)})
    with pytest.raises(TypeError, match=r"'penalty'\['fc\.\*'\]"):
        normreg.param_groups(net, {"fc.*": 0.1})
    with pytest.raises(ValueError, match="empty dict"):
        normreg.param_groups(net, {})
    with pytest.raises(TypeError, match="'penalty' must be"):
        normreg.param_groups(net, 0.1)
