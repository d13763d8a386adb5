"""normreg.compress: channel norms, channel groups, MAC count, removal of zero channels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normreg
from normreg.compress import (
    PruneError,
    channel_groups,
    channel_norms,
    count_macs,
    count_zero_channels,
    prunable_layers,
    prune_zero_channels,
    zero_channels,
)
from normreg.gan.config import TrainConfig
from normreg.gan.data import input_channels
from normreg.gan.models import DCGANGenerator, UNetGenerator, build_models


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convs: one thread is ~100x faster than two on a busy machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _close(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float64
    assert torch.allclose(a, b, rtol=1e-12, atol=0.0)


def _needs_tp():
    pytest.importorskip("torch_pruning")


# ---- channel norms ----------------------------------------------------------------------------


def test_channel_norms_match_direct_torch():
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, groups=1),
        nn.BatchNorm2d(6),
        nn.ConvTranspose2d(6, 4, 4, 2, 1, groups=2),
        nn.InstanceNorm2d(4, affine=True),
        nn.GroupNorm(2, 4),
        nn.BatchNorm2d(4, affine=False),
        nn.Flatten(),
        nn.Linear(4, 5),
    )
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    norms = channel_norms(m)
    assert list(norms) == ["0", "1", "2", "3", "4", "7"]  # the non-affine BatchNorm has no scale
    w0 = m[0].weight.double()
    _close(norms["0"], torch.stack([w0[c].pow(2).sum().sqrt() for c in range(6)]))
    # ConvTranspose2d(6, 4, groups=2): weight (6, 2, 4, 4); output channel c is in group c // 2,
    # whose input rows are 3*(c//2) .. 3*(c//2)+2, column c % 2
    w2 = m[2].weight.double()
    ref = [w2[3 * (c // 2) : 3 * (c // 2) + 3, c % 2].pow(2).sum().sqrt() for c in range(4)]
    _close(norms["2"], torch.stack(ref))
    w7 = m[7].weight.double()
    _close(norms["7"], torch.stack([w7[c].pow(2).sum().sqrt() for c in range(5)]))
    for k in ("1", "3", "4"):
        _close(norms[k], m[int(k)].weight.double().abs())
    assert all(v.dtype == torch.float64 for v in norms.values())


# ---- MACs -------------------------------------------------------------------------------------


def test_count_macs_hand_count():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1),  # 10x10 -> 10x10
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, 2, 1, groups=2),  # 10x10 -> 5x5
        nn.ConvTranspose2d(8, 4, 4, 2, 1),  # 5x5 -> 10x10
        nn.Flatten(),
        nn.Linear(4 * 10 * 10, 7),
    )
    n = 2
    conv1 = 8 * 3 * 3 * 3 * 10 * 10  # Cout * Cin * k * k * Hout * Wout
    conv2 = 8 * (8 // 2) * 3 * 3 * 5 * 5  # / groups
    convt = 8 * 4 * 4 * 4 * 5 * 5  # Cin * Cout * k * k * Hin * Win: each input pixel scatters a kernel
    lin = 400 * 7
    m.train()
    assert count_macs(m, (n, 3, 10, 10)) == n * (conv1 + conv2 + convt + lin)
    assert m.training and all(c.training for c in m)  # mode restored


def test_count_macs_unet_and_dcgan_formulas():
    g = UNetGenerator(2, 1, 16, 0.25)  # channels 8, 16, 32, 64 (depth 4)
    ch = [8, 16, 32, 64]
    downs = sum(co * ci * 16 * (16 >> (i + 1)) ** 2 for i, (ci, co) in enumerate(zip([2, *ch[:-1]], ch)))
    ups_in = [64, 64, 32, 16]
    ups_out = [32, 16, 8, 1]
    ups = sum(ci * co * 16 * (2**j) ** 2 for j, (ci, co) in enumerate(zip(ups_in, ups_out)))
    assert count_macs(g, (1, 2, 16, 16)) == downs + ups
    d = DCGANGenerator(8, 3, 16, 0.25)  # fc: 8 -> 32*(4x4); convT 32 -> 16 on 4x4; convT 16 -> 3 on 8x8
    assert count_macs(d, (1, 8)) == 8 * 32 * 16 + 32 * 16 * 16 * 4 * 4 + 16 * 3 * 16 * 8 * 8


def test_count_macs_bad_input():
    m = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="'model'"):
        count_macs("net", (1, 3))
    with pytest.raises(ValueError, match="'input_shape'"):
        count_macs(m, (1, 0))
    with pytest.raises(TypeError, match="'input_shape'"):
        count_macs(m, 3)


# ---- the models the trainer builds ------------------------------------------------------------

FAMILIES = [  # (task, image channels, size, width); width 1 at 8 px: the default run's models
    ("completion", 1, 8, 1.0),
    ("completion", 3, 16, 0.125),
    ("denoise", 1, 16, 0.125),
    ("superres", 3, 32, 0.125),
    ("superres", 1, 8, 0.125),
    ("unconditional", 1, 8, 1.0),
    ("unconditional", 3, 32, 0.125),
]


def _generator(task: str, channels: int, size: int, width: float = 0.125, dropout: float = 0.0):
    cfg = TrainConfig(task=task, width=width, z_dim=8, dropout=dropout)
    c_cond = input_channels(cfg, channels) if task != "unconditional" else 0
    g, _ = build_models(cfg, channels, size, c_cond)
    x = torch.randn(3, 8) if task == "unconditional" else torch.rand(3, c_cond, size, size) * 2 - 1
    with torch.no_grad():  # trained-looking norm layers: the removal rule must see their stats
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1)
        if task == "superres":  # a non-trivial correction
            g.ups[-1].weight.normal_(0, 0.02)
    return g, x


def _zero_by_hand(g: nn.Module, gen: torch.Generator) -> dict[str, set[int]]:
    """Zero channels of every prunable layer in the two ways the rule accepts; returns them.

    Also makes one channel per layer look zero but not be (zero weights, BatchNorm shift
    kept): it must stay."""
    zeroed = {}
    for p in prunable_layers(g):
        perm = torch.randperm(p.channels, generator=gen).tolist()
        slim, conv, alive = perm[0], perm[1], perm[2]
        with torch.no_grad():
            dim = 1 if isinstance(p.module, nn.ConvTranspose2d) else 0
            for c in [conv, alive] if p.norm is not None else [conv]:
                for r in range(c * p.units, (c + 1) * p.units):
                    p.module.weight.select(dim, r).zero_()
                    if p.module.bias is not None:
                        p.module.bias[r] = 0
            out = {conv}
            if p.norm is not None:
                p.norm.running_mean[conv] = 0
                p.norm.bias[conv] = 0
                p.norm.weight[slim] = 0  # slimming: scale and shift zero, the conv may be anything
                p.norm.bias[slim] = 0
                p.norm.bias[alive] = 0.3  # a constant channel: not removable
                out.add(slim)
        zeroed[p.name] = out
    return zeroed


def _param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _expected(task: str, g: nn.Module, kept: dict[str, int], c_in: int, size: int) -> tuple[int, int]:
    """(parameters, MACs) of the pruned generator, from the surviving channel counts and the
    architecture's wiring (skips concatenated for the U-Net), by the layer formulas."""
    params = macs = 0
    if task == "unconditional":
        z = g.fc[0].in_features
        c0 = kept["fc.0"]
        params += z * c0 * 16 + c0 * 16 + 2 * c0
        macs += z * c0 * 16
        prev, side = c0, 4
        for m in [m for m in g.net if isinstance(m, nn.ConvTranspose2d)]:
            name = f"net.{list(g.net).index(m)}"
            co = kept.get(name, m.out_channels)
            params += prev * co * 16 + (co if m.bias is not None else 0) + (2 * co if name in kept else 0)
            macs += prev * co * 16 * side * side
            prev, side = co, side * 2
        return params, macs
    depth = len(g.downs)
    d_out = [kept.get(f"downs.{i}.0", g.downs[i][0].out_channels) for i in range(depth)]
    prev = c_in
    for i in range(depth):
        conv = g.downs[i][0]
        params += (
            prev * d_out[i] * 16
            + (d_out[i] if conv.bias is not None else 0)
            + (2 * d_out[i] if len(g.downs[i]) > 1 else 0)
        )
        macs += d_out[i] * prev * 16 * (size >> (i + 1)) ** 2
        prev = d_out[i]
    h = d_out[-1]
    for j in range(depth):
        up = g.ups[j]
        conv = up if isinstance(up, nn.ConvTranspose2d) else up[0]
        cin = h if j == 0 else h + d_out[depth - 1 - j]
        co = kept.get(f"ups.{j}.0", conv.out_channels)
        params += (
            cin * co * 16
            + (co if conv.bias is not None else 0)
            + (2 * co if not isinstance(up, nn.ConvTranspose2d) else 0)
        )
        macs += cin * co * 16 * (size >> (depth - j)) ** 2
        h = co
    return params, macs


@pytest.mark.parametrize(
    "task,channels,size,width", FAMILIES, ids=[f"{t}-c{c}-{s}px-w{w:g}" for t, c, s, w in FAMILIES]
)
def test_prune_equivalence_every_generator(task, channels, size, width):
    _needs_tp()
    g, x = _generator(task, channels, size, width, dropout=0.5 if task == "completion" else 0.0)
    g.train()
    zeroed = _zero_by_hand(g, torch.Generator().manual_seed(size + channels))
    masks = zero_channels(g)
    assert {k: set(torch.nonzero(v).flatten().tolist()) for k, v in masks.items()} == zeroed
    dense_params, dense_macs = _param_count(g), count_macs(g, (1, *x.shape[1:]))
    before = {k: v.clone() for k, v in g.state_dict().items()}
    small = prune_zero_channels(g, x)
    assert small.training and g.training
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in before.items())  # the model is untouched
    g.eval()
    small.eval()
    with torch.no_grad():
        assert (small(x) - g(x)).abs().max() <= 1e-5
    assert count_zero_channels(small)[0] == 0
    kept = {p.name: p.channels for p in prunable_layers(small)}
    for p in prunable_layers(g):
        assert kept[p.name] == p.channels - len(zeroed[p.name])
    c_in = x.shape[1] if task != "unconditional" else 0
    params, macs = _expected(task, small, kept, c_in, size)
    assert _param_count(small) == params < dense_params
    assert count_macs(small, (1, *x.shape[1:])) == macs < dense_macs


@pytest.mark.parametrize("method,strength", [("slimming", 2.0), ("group_lasso", 5.0), ("l0", 0.5)])
def test_prune_after_prox_steps(method, strength):
    """Channels zeroed by ProxAdam's proximal step (not by hand) are removed exactly."""
    _needs_tp()
    g = UNetGenerator(2, 1, 8, 0.25)
    x = torch.rand(4, 2, 8, 8)
    target = torch.rand(4, 1, 8, 8)
    opt = normreg.optim.ProxAdam(channel_groups(g, method, strength), lr=0.05, penalty_mode="prox")
    for _ in range(8):
        opt.zero_grad()
        (g(x) - target).pow(2).mean().backward()
        opt.step()
    zero, total = count_zero_channels(g)
    assert 0 < zero < total
    if method != "slimming":  # the first layer has no norm: its weights and bias went to zero
        assert int(zero_channels(g)["downs.0.0"].sum()) > 0
    full = sum(bool(m.all()) for m in zero_channels(g).values())  # such a layer keeps one channel
    small = prune_zero_channels(g, x)
    assert count_zero_channels(small) == (full, total - zero + full)
    g.eval()
    small.eval()
    with torch.no_grad():
        assert (small(x) - g(x)).abs().max() <= 1e-5
    assert count_macs(small, (1, 2, 8, 8)) < count_macs(g, (1, 2, 8, 8))


def test_group_lasso_channels_before_batchnorm_need_fresh_statistics():
    """Under group lasso a zeroed conv channel before a BatchNorm keeps a stale running mean
    (it decays as 0.9^n): not removable until the statistics are re-estimated (docs)."""
    from torch.optim.swa_utils import update_bn

    g = UNetGenerator(2, 1, 8, 0.25)
    x, target = torch.rand(4, 2, 8, 8), torch.rand(4, 1, 8, 8)
    opt = normreg.optim.ProxAdam(channel_groups(g, "group_lasso", 3.0), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        (g(x) - target).pow(2).mean().backward()
        opt.step()
    dead = {p.name: channel_norms(g)[p.name] == 0 for p in prunable_layers(g) if p.norm is not None}
    stale = {k: v & ~zero_channels(g)[k] for k, v in dead.items()}
    assert sum(int(v.sum()) for v in stale.values()) > 0  # zero weights, channel not removable
    update_bn([x], g)
    after = zero_channels(g)
    assert all(bool((after[k] | ~v).all()) for k, v in stale.items())  # now they are


def test_constant_channel_is_kept_and_removing_it_would_be_wrong():
    """A zeroed conv channel before a BatchNorm with a non-zero shift is a constant: the
    consumer's zero padding makes it non-constant downstream, so it is not removable."""
    g = UNetGenerator(1, 1, 8, 0.25)
    with torch.no_grad():
        g.downs[1][0].weight[3].zero_()
        g.downs[1][1].bias[3] = 0.5
        g.downs[1][1].running_mean[3] = 0.0
    assert not bool(zero_channels(g)["downs.1.0"][3])
    g.eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        y = g(x)
        g.downs[1][1].bias[3] = 0.0  # what dropping the channel would amount to
        assert (g(x) - y).abs().max() > 1e-3


# ---- channel groups ---------------------------------------------------------------------------


def test_channel_groups_follow_the_prunable_layers():
    g = UNetGenerator(2, 1, 8, 0.25)
    groups = channel_groups(g, "group_lasso", 1e-3, lr=1e-2)
    pen = {n: gr["penalty"] for gr in groups for n in gr["param_names"]}
    assert set(pen) == {n for n, _ in g.named_parameters()}
    assert all(gr["lr"] == 1e-2 for gr in groups)
    for p in prunable_layers(g):
        w = pen[f"{p.name}.weight"]
        assert isinstance(w, normreg.GroupLasso) and w.strength == 1e-3
        assert w.dim == (1 if isinstance(p.module, nn.ConvTranspose2d) else 0)
        if p.norm is not None:
            assert isinstance(pen[f"{p.norm_name}.bias"], normreg.L1)
            assert pen[f"{p.norm_name}.weight"] is None
    out = "ups.2"  # the output layer: its channels are the image's
    assert pen[f"{out}.weight"] is None and pen[f"{out}.bias"] is None
    slim = {n: gr["penalty"] for gr in channel_groups(g, "slimming", 1e-3) for n in gr["param_names"]}
    norms = {p.norm_name for p in prunable_layers(g) if p.norm is not None}
    assert {n for n, v in slim.items() if v is not None} == {
        f"{k}.{s}" for k in norms for s in ("weight", "bias")
    }
    l0 = {n: gr["penalty"] for gr in channel_groups(g, "l0", 1e-3) for n in gr["param_names"]}
    assert isinstance(l0["downs.0.0.weight"], normreg.L0) and l0["ups.2.weight"] is None
    d = DCGANGenerator(8, 1, 16, 0.25)
    dl = {n: gr["penalty"] for gr in channel_groups(d, "group_lasso", 1e-3) for n in gr["param_names"]}
    assert dl["fc.0.weight"].dim == 0 and dl["net.0.weight"].dim == 1 and dl["net.3.weight"] is None


def test_channel_groups_bad_input():
    g = UNetGenerator(2, 1, 8, 0.25)
    with pytest.raises(ValueError, match="'method'"):
        channel_groups(g, "lasso", 1e-3)
    with pytest.raises(TypeError, match="'method'"):
        channel_groups(g, None, 1e-3)
    with pytest.raises(ValueError, match="'strength'"):
        channel_groups(g, "slimming", -1.0)
    with pytest.raises(TypeError, match="'model'"):
        channel_groups([g], "slimming", 1.0)
    with pytest.raises(ValueError, match="no prunable layer"):
        channel_groups(nn.Conv2d(3, 3, 3), "group_lasso", 1.0)
    with pytest.raises(ValueError, match="slimming"):
        channel_groups(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3)), "slimming", 1.0)


# ---- prune: refusals --------------------------------------------------------------------------


class _AddsOne(nn.Module):
    """A zero channel does not stay zero: +1 after the first conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x) + 1.0)


def test_prune_refuses_what_it_cannot_prune_exactly():
    _needs_tp()
    m = _AddsOne()
    with torch.no_grad():
        m.a.weight[1].zero_()
        m.a.bias[1] = 0
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(PruneError, match="differ"):
        prune_zero_channels(m, torch.rand(1, 2, 5, 5))
    assert isinstance(PruneError("x"), ValueError)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


def test_prune_bad_arguments():
    g = UNetGenerator(2, 1, 8, 0.25)
    with pytest.raises(TypeError, match="'model'"):
        prune_zero_channels("G", torch.rand(1, 2, 8, 8))
    with pytest.raises(TypeError, match="'example_input'"):
        prune_zero_channels(g, [[1.0]])
    with pytest.raises(ValueError, match="'threshold'"):
        prune_zero_channels(g, torch.rand(1, 2, 8, 8), threshold=-1e-3)
    with pytest.raises(ValueError, match="'threshold'"):
        zero_channels(g, threshold=math.nan)


# ---- the adaptive λ on the zero-channel count --------------------------------------------------


def test_channel_controller_reaches_its_target():
    from normreg.compress import ChannelSparsityController

    g = UNetGenerator(2, 1, 8, 0.25)
    x, target = torch.rand(8, 2, 8, 8), torch.rand(8, 1, 8, 8)
    ctl = ChannelSparsityController(g, target=0.3, gain=4.0)
    opt = normreg.optim.ProxAdam(channel_groups(g, "slimming", 0.05), lr=0.02, penalty_schedule=ctl)
    factors = []
    for _ in range(40):
        opt.zero_grad()
        (g(x) - target).pow(2).mean().backward()
        opt.step()
        factors.append(ctl.factor)
    zero, total = count_zero_channels(g, running_stats=False)
    assert ctl.last_fraction == zero / total
    assert abs(zero / total - 0.3) <= 0.1
    assert max(factors) > 1.0  # λ was raised while too few channels were zero
    with pytest.raises(ValueError, match="no prunable layer"):
        ChannelSparsityController(nn.Linear(2, 2), target=0.5)
    with pytest.raises(ValueError, match="'target'"):
        ChannelSparsityController(g, target=1.5)
