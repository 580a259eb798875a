import copy
import doctest
import io

import pytest
import torch

from eqgeo.nn.dropout import IrrepsDropout
from eqgeo.o3 import Irreps
from eqgeo.testing import assert_equivariant

IRREPS = Irreps("4x0e+2x0o+3x1o+2x2e+1x3o")


def _seeded(module, seed=1234):
    """The module with a fixed mask: the RNG is reseeded before every call."""

    def f(x):
        torch.manual_seed(seed)
        return module(x)

    return f


def _copy_scales(x, y):
    """``(..., num_irreps)`` factor by which each copy was multiplied; asserts copies move as a whole."""
    scales = []
    for sl, (mul, ir) in zip(IRREPS.slices(), IRREPS):
        xc = x[..., sl].reshape(*x.shape[:-1], mul, ir.dim)
        yc = y[..., sl].reshape(*x.shape[:-1], mul, ir.dim)
        s = yc[..., :1] / xc[..., :1]
        torch.testing.assert_close(yc, s * xc)
        scales.append(s[..., 0])
    return torch.cat(scales, dim=-1)


def test_repr_and_irreps():
    d = IrrepsDropout("8x0e+4x1o", p=0.1)
    assert repr(d) == "IrrepsDropout(8x0e+4x1o -> 8x0e+4x1o | p=0.1, 0 weights)"
    assert d.irreps_in == d.irreps_out == Irreps("8x0e+4x1o")


def test_bad_p_and_bad_input():
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
            IrrepsDropout("1o", p)
    message = r"IrrepsDropout expects features of irreps 8x0e\+4x1o \(dim 20\), got last dimension 12"
    with pytest.raises(ValueError, match=message):
        IrrepsDropout("8x0e+4x1o", 0.5)(torch.randn(2, 12))


def test_eval_is_identity():
    d = IrrepsDropout(IRREPS, p=0.5).eval()
    x = IRREPS.randn(10, -1)
    assert d(x) is x


def test_drops_whole_copies_with_inverse_keep_scaling(dtype):
    p = 0.3
    d = IrrepsDropout(IRREPS, p=p)
    x = IRREPS.randn(2000, -1, dtype=dtype)
    scales = _copy_scales(x, d(x))
    kept = scales != 0
    torch.testing.assert_close(scales[kept], torch.full_like(scales[kept], 1 / (1 - p)))
    assert abs((~kept).double().mean().item() - p) < 0.015  # 24000 copies: 5 sigma
    # masks differ between samples and between copies
    assert not (kept == kept[:1]).all(dim=-1).all()
    assert not (kept == kept[:, :1]).all()


def test_moments():
    p = 0.25
    d = IrrepsDropout(IRREPS, p=p)
    x = IRREPS.randn(50_000, -1)
    y = d(x)
    # E[y] = x: average ratio on a constant input; E[y^2] = E[x^2] / (1 - p)
    assert d(torch.ones(50_000, IRREPS.dim)).mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.pow(2).mean().item() / x.pow(2).mean().item() == pytest.approx(1 / (1 - p), rel=0.02)


def test_p_zero_and_one():
    x = IRREPS.randn(5, -1)
    assert torch.equal(IrrepsDropout(IRREPS, 0.0)(x), x)
    assert torch.equal(IrrepsDropout(IRREPS, 1.0)(x), torch.zeros_like(x))


def test_equivariance_in_training(dtype, tol):
    d = IrrepsDropout(IRREPS, p=0.5)
    x = IRREPS.randn(10, -1, dtype=dtype)
    assert_equivariant(_seeded(d), [x], [IRREPS], [IRREPS], tolerance=tol, ntrials=3)


def test_componentwise_dropout_is_not_equivariant_negative_control():
    x = IRREPS.randn(10, -1, dtype=torch.float64)
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(_seeded(torch.nn.Dropout(0.5)), [x], [IRREPS], [IRREPS])


def test_double_backward():
    d = IrrepsDropout("2x0e+2x1o", p=0.5)
    x = d.irreps_in.randn(3, -1, dtype=torch.float64, requires_grad=True)
    f = _seeded(d)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.slow
@pytest.mark.parametrize("training", [True, False])
def test_compile_fullgraph_matches_eager(training):
    d = IrrepsDropout(IRREPS, p=0.4).train(training)
    x = IRREPS.randn(7, -1)
    compiled = torch.compile(d, fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    out = compiled(x)
    torch.manual_seed(5)
    torch.testing.assert_close(out, d(x))
    _copy_scales(x, out)


def test_deepcopy_and_state_dict_round_trip():
    d = IrrepsDropout(IRREPS, p=0.4)
    x = IRREPS.randn(6, -1)
    other = copy.deepcopy(d)
    assert other.p == d.p and repr(other) == repr(d)
    torch.testing.assert_close(_seeded(other)(x), _seeded(d)(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(d.state_dict(), buffer)
    buffer.seek(0)
    fresh = IrrepsDropout(IRREPS, p=0.4)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(_seeded(fresh)(x), _seeded(d)(x), rtol=0, atol=0)


def test_docstring_examples():
    import eqgeo.nn.dropout as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
