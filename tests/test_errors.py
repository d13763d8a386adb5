"""Bad input: a TypeError or ValueError that names the argument, before anything changes."""

from __future__ import annotations

import pytest
import torch

import normreg

ALL = [normreg.L1, normreg.SquaredL2, normreg.L2Norm, normreg.Linf, normreg.L0]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_unsupported_dtypes_raise_type_error(dtype):
    bad = torch.ones(3, dtype=dtype)
    with pytest.raises(TypeError, match=r"'params'\[1\].*dtype"):
        normreg.L1(1.0).value([torch.ones(2), bad])


def test_non_tensor_entries_and_bad_containers():
    with pytest.raises(TypeError, match=r"'params'\[0\]"):
        normreg.L1(1.0).value([1.0, 2.0])
    with pytest.raises(TypeError, match="'params'"):
        normreg.L1(1.0).value(3.0)
    with pytest.raises(TypeError, match="'params'"):
        normreg.L1(1.0).value({"params": [torch.ones(2)]})


def test_empty_list_raises_value_error():
    with pytest.raises(ValueError, match="'params' is empty"):
        normreg.L1(1.0).value([])
    with pytest.raises(ValueError, match="'params' is empty"):
        normreg.L1(1.0).add_grad_(iter([]))


def test_mixed_devices_raise_value_error():
    with pytest.raises(ValueError, match=r"'params'\[1\] is on meta"):
        normreg.L1(1.0).value([torch.ones(2), torch.ones(2, device="meta")])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), -1e-12])
@pytest.mark.parametrize("cls", ALL)
def test_bad_strengths(cls, bad):
    with pytest.raises(ValueError, match="'strength' must be finite and >= 0"):
        cls(bad)


def test_bad_strength_types_and_elastic_net_args():
    with pytest.raises(TypeError, match="'strength'"):
        normreg.L1("0.1")
    with pytest.raises(ValueError, match="'l2'"):
        normreg.ElasticNet(0.1, -1)
    with pytest.raises(ValueError, match="'l1_ratio'"):
        normreg.ElasticNet.from_sklearn(0.1, 1.5)
    with pytest.raises(ValueError, match="'m'"):
        normreg.ElasticNet.from_sources(1.0, 0.5, 0.5, 0)
    with pytest.raises(TypeError, match="'dim'"):
        normreg.GroupLasso(0.1, dim=1.0)


@pytest.mark.parametrize(
    "bad", [torch.tensor(1 + 2j), torch.tensor(True), torch.tensor(1.0, requires_grad=True), 1 + 2j]
)
def test_complex_bool_and_grad_tensor_strengths_name_the_argument(bad):
    with pytest.raises(TypeError, match="'strength' must be a real number"):
        normreg.L1(bad)
    # a real one-element tensor is a strength like its value
    assert normreg.L1(torch.tensor(0.25)).strength == 0.25 and normreg.L1(torch.tensor(3)).strength == 3.0


def test_grad_with_other_shape_raises():
    # torch itself refuses p.grad of another shape; the bridge and the kernels check pairs too
    from normreg._bridge import paired, tensor_list

    tl = tensor_list([torch.randn(4), torch.randn(3)])
    with pytest.raises(ValueError, match=r"'grads'\[1\] has shape"):
        paired(tl, [torch.ones(4), torch.ones(5)], "grads")
    with pytest.raises(TypeError, match=r"'grads'\[0\] has dtype"):
        paired(tl, [torch.ones(4, dtype=torch.float64), torch.ones(3)], "grads")


def test_missing_grads_not_allocated_when_call_fails():
    a = torch.randn(4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    b.grad = torch.ones(3, 2).t()[0]  # non-contiguous (stride 2)
    assert not b.grad.is_contiguous()
    with pytest.raises(ValueError, match=r"'params'\[1\]\.grad has gaps"):
        normreg.L1(1.0).add_grad_([a, b])
    assert a.grad is None


def test_group_lasso_dim_out_of_range():
    with pytest.raises(ValueError, match="'dim'=2 is out of range for 'params'\\[1\\]"):
        normreg.GroupLasso(0.1, dim=2).value([torch.ones(2, 2, 2), torch.ones(3)])


def test_l0_has_no_gradient():
    with pytest.raises(ValueError, match="L0 has no gradient"):
        normreg.L0(0.1).add_grad_([torch.ones(3, requires_grad=True)])


def test_shared_memory_in_place_is_refused():
    from normreg._bridge import tensor_list

    w = torch.ones(4)
    with pytest.raises(ValueError, match=r"'params'\[1\] shares memory"):
        tensor_list([w, w], inplace=True)
    with pytest.raises(ValueError, match="has gaps"):
        tensor_list([torch.ones(3, 4)[:, ::2]], inplace=True)
    tensor_list([torch.ones(3, 2).t()], inplace=True)  # dense, only transposed: taken in place


def test_set_num_threads_validation():
    with pytest.raises(ValueError, match="'n'"):
        normreg.set_num_threads(-1)
    with pytest.raises(TypeError, match="'n'"):
        normreg.set_num_threads(1.5)


def test_param_groups_validation():
    with pytest.raises(TypeError, match="'model'"):
        normreg.param_groups([torch.ones(1)], normreg.L1(0.1))
    with pytest.raises(TypeError, match="'penalty'"):
        normreg.param_groups(torch.nn.Linear(2, 2), 0.1)
    with pytest.raises(TypeError, match="'exclude'"):
        normreg.param_groups(torch.nn.Linear(2, 2), normreg.L1(0.1), exclude=[3])


def test_kernel_layer_checks_too():
    C = normreg._C
    with pytest.raises(ValueError, match="'strength' must be finite and >= 0"):
        C.penalty_value("l1", [0], [0], [0], [-1.0], [0.0])
    with pytest.raises(TypeError, match="unsupported dtype code"):
        C.penalty_value("l1", [0], [0], [7], [1.0], [0.0])
    with pytest.raises(ValueError, match="unknown penalty kind"):
        C.penalty_value("l3", [0], [0], [0], [1.0], [0.0])
    with pytest.raises(ValueError, match="L0 has no gradient"):
        C.penalty_grad("l0", [0], [0], [0], [0], [1.0], [0.0], 1.0, True)
