"""The derivative of the tensor-product backward op (double backward through the fast kernels)."""

import pytest
import torch

from eqgeo.nn import TensorProduct
from eqgeo.nn._tp import tensor_product_backward_op


def _tp(shared: bool):
    ins = [(0, 0, 0, "uvu", True), (1, 0, 1, "uvu", True), (1, 1, 2, "uvw", True), (0, 1, 3, "uvu", True)]
    return TensorProduct("3x0e+2x1o", "1x0e+1x1o", "3x0e+2x1o+2x1e+3x1o", ins, shared_weights=shared,
                         internal_weights=False).double()


@pytest.mark.parametrize("shared", [False, True], ids=["per-sample", "shared"])
def test_backward_op_has_exact_derivatives(shared):
    tp = _tp(shared)
    n = 4
    x1 = torch.randn(n, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(n, tp.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(1 if shared else n, tp.weight_numel, dtype=torch.float64)
    g = torch.randn(n, tp.irreps_out.dim, dtype=torch.float64)
    args = [t.requires_grad_(True) for t in (g, x1, x2, w)]
    assert torch.autograd.gradcheck(lambda *a: tensor_product_backward_op(*a, tp._key), args)
    assert torch.autograd.gradgradcheck(lambda *a: tensor_product_backward_op(*a, tp._key), args)


def test_second_derivative_matches_reference_implementation():
    """d/dx2 of |d<g, TP>/dx1|^2 (the shape of a force loss) equals the reference TP's."""
    tp = _tp(False)
    ref = _tp(False)
    ref.implementation = "reference"
    x1 = torch.randn(5, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(5, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, tp.weight_numel, dtype=torch.float64, requires_grad=True)
    results = []
    for module in (tp, ref):
        y = module(x1, x2, w)
        (g1,) = torch.autograd.grad(y.sin().sum(), x1, create_graph=True)
        results.append(torch.autograd.grad(g1.square().sum(), (x2, w)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_uuu_paths():
    tp = TensorProduct("3x0e+3x1o", "3x0e+3x1o", "3x0e+3x1o+3x1e", [(0, 0, 0, "uuu", True), (1, 1, 0, "uuu", True),
                       (1, 1, 2, "uuu", True), (0, 1, 1, "uuu", True)], shared_weights=False,
                       internal_weights=False).double()
    args = [torch.randn(3, d, dtype=torch.float64, requires_grad=True)
            for d in (tp.irreps_out.dim, tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel)]
    assert torch.autograd.gradgradcheck(lambda *a: tensor_product_backward_op(*a, tp._key), args)


def test_mixed_dtypes_are_refused():
    tp = _tp(False)
    x1 = torch.randn(2, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(2, tp.irreps_in2.dim, dtype=torch.float32)
    with pytest.raises(ValueError, match="needs x1 and x2 of one dtype"):
        tp(x1, x2, torch.randn(2, tp.weight_numel, dtype=torch.float64))
