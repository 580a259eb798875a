import copy
import doctest
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eqgeo.nn.norm_activation import NormActivation
from eqgeo.o3 import Irreps
from eqgeo.testing import assert_equivariant
from ..helpers import oracle

IRREPS = Irreps("3x0e+2x0o+2x1o+1x1e+2x2e+1x3o")


def _copies(irreps: Irreps, x: torch.Tensor) -> list[torch.Tensor]:
    """Each entry of ``x`` as ``(..., mul, 2l+1)``."""
    return [x[..., sl].reshape(*x.shape[:-1], mul, ir.dim) for sl, (mul, ir) in zip(irreps.slices(), irreps)]


def test_repr():
    expected = "NormActivation(8x0e+4x1o -> 8x0e+4x1o | sigmoid, normalize, 0 weights)"
    assert repr(NormActivation("8x0e+4x1o", torch.sigmoid)) == expected
    assert (
        repr(NormActivation("8x0e+4x1o", F.silu, normalize=False, bias=True))
        == "NormActivation(8x0e+4x1o -> 8x0e+4x1o | silu, unnormalized, 12 weights)"
    )


def test_construction_errors():
    with pytest.raises(ValueError, match="epsilon only applies with normalize=True"):
        NormActivation("1o", torch.sigmoid, normalize=False, epsilon=1e-3)
    with pytest.raises(ValueError, match="strictly positive"):
        NormActivation("1o", torch.sigmoid, epsilon=0.0)
    with pytest.raises(ValueError, match="callable"):
        NormActivation("1o", "sigmoid")


def test_bad_feature_dimension():
    n = NormActivation("8x0e+4x1o", torch.sigmoid)
    message = r"NormActivation expects features of irreps 8x0e\+4x1o \(dim 20\), got last dimension 21"
    with pytest.raises(ValueError, match=message):
        n(torch.randn(2, 21))


@pytest.mark.parametrize("normalize", [True, False])
def test_values_match_the_definition(normalize, dtype):
    n = NormActivation(IRREPS, torch.sigmoid, normalize=normalize, bias=True).to(dtype)
    with torch.no_grad():
        n.biases.uniform_(-1, 1)
    x = IRREPS.randn(5, -1, dtype=dtype)
    y = n(x)
    k = 0
    for xc, yc in zip(_copies(IRREPS, x), _copies(IRREPS, y)):
        norm = xc.norm(dim=-1, keepdim=True)
        f = torch.sigmoid(norm + n.biases[k : k + xc.shape[-2], None])
        torch.testing.assert_close(yc, f * xc / norm if normalize else f * xc)
        k += xc.shape[-2]


def test_normalized_output_norms_are_f_of_input_norms():
    n = NormActivation(IRREPS, F.softplus).double()
    x = IRREPS.randn(50, -1, dtype=torch.float64)
    for xc, yc in zip(_copies(IRREPS, x), _copies(IRREPS, n(x))):
        torch.testing.assert_close(yc.norm(dim=-1), F.softplus(xc.norm(dim=-1)))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_equivariance(normalize, bias, dtype, tol):
    n = NormActivation(IRREPS, F.silu, normalize=normalize, bias=bias).to(dtype)
    if bias:
        with torch.no_grad():
            n.biases.normal_()
    x = IRREPS.randn(10, -1, dtype=dtype)
    assert_equivariant(n, [x], [IRREPS], [IRREPS], tolerance=tol, ntrials=3)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("f", [torch.sigmoid, F.silu, torch.abs], ids=["sigmoid", "silu", "abs"])
def test_zero_norm_is_safe(normalize, f):
    n = NormActivation(IRREPS, f, normalize=normalize, bias=True).double()
    x = IRREPS.randn(4, -1, dtype=torch.float64)
    x[0] = 0.0  # every copy zero
    x[1, IRREPS.slices()[2]] = 0.0  # the 1o copies zero
    x.requires_grad_(True)
    y = n(x)
    assert torch.isfinite(y).all() and (y[0] == 0).all()
    weights = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * weights).sum(), x, create_graph=True)
    assert torch.isfinite(grad).all()
    (grad2,) = torch.autograd.grad(grad.pow(2).sum(), x)
    assert torch.isfinite(grad2).all()
    (gb,) = torch.autograd.grad(n(x).sum(), n.biases)
    assert torch.isfinite(gb).all()


def _expected_second_moment(f, d: int) -> float:
    """E[f(|x|)^2] / d for x ~ N(0, I_d): the mean square component of a normalised output copy."""
    r = np.linspace(0.0, 12.0, 200_001)
    density = r ** (d - 1) * np.exp(-0.5 * r**2) / (2 ** (d / 2 - 1) * math.gamma(d / 2))
    fr = f(torch.from_numpy(r)).numpy()
    return float(np.trapezoid(fr**2 * density, r)) / d


@pytest.mark.parametrize("f", [torch.sigmoid, F.softplus], ids=["sigmoid", "softplus"])
def test_output_second_moment_at_init(f):
    # NormActivation keeps e3nn's unnormalised activations, so the output scale is
    # E[f(|x|)^2] / (2l+1) per component for unit-variance input; check that prediction.
    irreps = Irreps("16x0e+16x1o+16x2e")
    n = NormActivation(irreps, f)
    y = n(irreps.randn(20_000, -1, dtype=torch.float64))
    for sl, (mul, ir) in zip(irreps.slices(), irreps):
        expected = _expected_second_moment(f, ir.dim)
        assert y[:, sl].pow(2).mean().item() == pytest.approx(expected, rel=0.02), f"{mul}x{ir}"


def test_double_backward():
    n = NormActivation("1x0e+1x0o+2x1o+1x2e", F.silu, bias=True).double()
    x = n.irreps_in.randn(2, -1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(n, (x,))
    assert torch.autograd.gradgradcheck(n, (x,))
    n = NormActivation("2x1o+1x2e", torch.tanh, normalize=False).double()
    x = n.irreps_in.randn(2, -1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(n, (x,))


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    n = NormActivation(IRREPS, torch.sigmoid, bias=True)
    x = IRREPS.randn(7, -1)
    compiled = torch.compile(n, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), n(x))


def test_deepcopy_state_dict_and_reset_parameters():
    n = NormActivation(IRREPS, torch.sigmoid, bias=True)
    with torch.no_grad():
        n.biases.normal_()
    x = IRREPS.randn(4, -1)
    other = copy.deepcopy(n)
    torch.testing.assert_close(other(x), n(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(n.state_dict(), buffer)
    buffer.seek(0)
    fresh = NormActivation(IRREPS, torch.sigmoid, bias=True)
    assert not torch.equal(fresh(x), n(x))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), n(x), rtol=0, atol=0)
    n.reset_parameters()
    assert torch.equal(n.biases, torch.zeros(IRREPS.num_irreps))


@pytest.mark.parametrize("bias", [True, False])
def test_matches_e3nn(bias):
    e3nn_nn = oracle("e3nn.nn")
    ours = NormActivation(IRREPS, torch.sigmoid, bias=bias).double()
    theirs = e3nn_nn.NormActivation(IRREPS, torch.sigmoid, bias=bias).double()
    if bias:
        with torch.no_grad():
            ours.biases.normal_()
            theirs.biases.copy_(ours.biases)
    x = IRREPS.randn(20, -1, dtype=torch.float64)
    x[3, :7] = 0.0  # scalars at zero norm: clamped by epsilon in both
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_docstring_examples():
    import eqgeo.nn.norm_activation as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
