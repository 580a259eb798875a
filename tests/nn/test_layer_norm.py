import copy
import doctest
import io
import math

import pytest
import torch

from eqgeo.nn.layer_norm import EquivariantLayerNorm
from eqgeo.o3 import Irreps
from eqgeo.testing import assert_equivariant

IRREPS = Irreps("6x0e+3x0o+4x1o+2x1e+3x2e")


def _copies(irreps, x):
    return [x[..., sl].reshape(*x.shape[:-1], mul, ir.dim) for sl, (mul, ir) in zip(irreps.slices(), irreps)]


def _randomise(ln):
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
        ln.bias.normal_()


def test_repr():
    expected = "EquivariantLayerNorm(8x0e+4x1o -> 8x0e+4x1o | component, 20 weights)"
    assert repr(EquivariantLayerNorm("8x0e+4x1o")) == expected
    assert (
        repr(EquivariantLayerNorm("8x0e+4x1o", affine=False, normalization="norm"))
        == "EquivariantLayerNorm(8x0e+4x1o -> 8x0e+4x1o | norm, 0 weights)"
    )


def test_parameter_shapes():
    ln = EquivariantLayerNorm(IRREPS)
    assert ln.weight.shape == (IRREPS.num_irreps,) and ln.bias.shape == (6,)
    assert ln.irreps_in == ln.irreps_out == IRREPS


def test_construction_errors_and_bad_input():
    with pytest.raises(ValueError, match="normalization must be one of"):
        EquivariantLayerNorm("4x1o", normalization="integral")
    with pytest.raises(ValueError, match="eps"):
        EquivariantLayerNorm("4x1o", eps=-1.0)
    message = r"EquivariantLayerNorm expects features of irreps 8x0e\+4x1o \(dim 20\), got last dimension 19"
    with pytest.raises(ValueError, match=message):
        EquivariantLayerNorm("8x0e+4x1o")(torch.randn(3, 19))


def test_hand_computed_example():
    ln = EquivariantLayerNorm("2x0e+1x1o+1x0o", eps=1e-5).double()
    x = torch.tensor([[1.0, 3.0, 0.0, 3.0, 4.0, -2.0]], dtype=torch.float64)
    # 0e: centred [-1, 1], mean square 1; 1o: component mean square 25/3; 0o: not centred, square 4
    s, v, q = math.sqrt(1 + 1e-5), math.sqrt(25 / 3 + 1e-5), math.sqrt(4 + 1e-5)
    expected = torch.tensor([[-1 / s, 1 / s, 0.0, 3 / v, 4 / v, -2 / q]], dtype=torch.float64)
    torch.testing.assert_close(ln(x), expected)
    ln_norm = EquivariantLayerNorm("2x0e+1x1o+1x0o", eps=1e-5, normalization="norm").double()
    expected[0, 2:5] = torch.tensor([0.0, 3.0, 4.0]) / math.sqrt(25 + 1e-5)
    torch.testing.assert_close(ln_norm(x), expected)


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_normalises_every_entry(normalization):
    ln = EquivariantLayerNorm(IRREPS, eps=0.0, normalization=normalization).double()
    x = 3.0 * IRREPS.randn(50, -1, dtype=torch.float64) + 2.0  # offset and scale
    for (mul, ir), yc, xc in zip(IRREPS, _copies(IRREPS, ln(x)), _copies(IRREPS, x)):
        sq = yc.pow(2).sum(-1) if normalization == "norm" else yc.pow(2).mean(-1)
        torch.testing.assert_close(sq.mean(-1), torch.ones(50, dtype=torch.float64))
        if ir.is_scalar():
            torch.testing.assert_close(yc.mean(-2), torch.zeros(50, 1, dtype=torch.float64))
        else:
            # no centring: every copy is the input copy times one positive number per sample
            ratio = (yc * xc).sum(-1) / xc.pow(2).sum(-1)
            torch.testing.assert_close(yc, ratio[..., None] * xc)
            torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
            assert (ratio > 0).all()


def test_invariant_to_scale_and_scalar_shift():
    ln = EquivariantLayerNorm(IRREPS, eps=0.0).double()
    _randomise(ln)
    x = IRREPS.randn(8, -1, dtype=torch.float64)
    shifted = x.clone()
    shifted[:, IRREPS.slices()[0]] += torch.randn(8, 1, dtype=torch.float64)
    torch.testing.assert_close(ln(7.5 * x), ln(x))
    torch.testing.assert_close(ln(shifted), ln(x))


def test_affine_weights_per_copy_and_bias_on_even_scalars_only():
    plain = EquivariantLayerNorm(IRREPS, affine=False).double()
    ln = EquivariantLayerNorm(IRREPS).double()
    _randomise(ln)
    x = IRREPS.randn(5, -1, dtype=torch.float64)
    copy_irreps = [ir for mul, ir in IRREPS for _ in range(mul)]
    w = torch.cat([ln.weight[i : i + 1].expand(ir.dim) for i, ir in enumerate(copy_irreps)])
    b = torch.zeros(IRREPS.dim, dtype=torch.float64)
    b[IRREPS.slices()[0]] = ln.bias
    torch.testing.assert_close(ln(x), plain(x) * w + b)


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_equivariance(normalization, dtype, tol):
    ln = EquivariantLayerNorm(IRREPS, normalization=normalization).to(dtype)
    _randomise(ln)
    x = IRREPS.randn(10, -1, dtype=dtype)
    assert_equivariant(ln, [x], [IRREPS], [IRREPS], tolerance=tol, ntrials=3)


def test_centring_vectors_breaks_equivariance_negative_control():
    # negative control: centring the 1o channels (a standard LayerNorm) breaks equivariance.
    irreps = Irreps("4x1o")
    x = irreps.randn(10, -1, dtype=torch.float64)
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(lambda v: torch.nn.functional.layer_norm(v, (12,)), [x], [irreps], [irreps])
    assert_equivariant(EquivariantLayerNorm(irreps).double(), [x], [irreps], [irreps])


def test_unit_second_moment_at_init():
    ln = EquivariantLayerNorm("32x0e+16x1o+8x2e")
    x = 4.0 * torch.randn(100_000, ln.irreps_in.dim) + 1.0
    y = ln(x)
    for sl, (mul, ir) in zip(ln.irreps_out.slices(), ln.irreps_out):
        m2 = y[:, sl].pow(2).mean().item()
        assert 0.99 < m2 < 1.01, f"{mul}x{ir}: {m2}"


def test_double_backward():
    ln = EquivariantLayerNorm("3x0e+1x0o+2x1o+1x2e").double()
    _randomise(ln)
    x = ln.irreps_in.randn(2, -1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ln, (x,))
    assert torch.autograd.gradgradcheck(ln, (x,))


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    ln = EquivariantLayerNorm(IRREPS)
    _randomise(ln)
    x = IRREPS.randn(7, -1)
    compiled = torch.compile(ln, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ln(x))


def test_deepcopy_state_dict_and_reset_parameters():
    ln = EquivariantLayerNorm(IRREPS)
    _randomise(ln)
    x = IRREPS.randn(4, -1)
    torch.testing.assert_close(copy.deepcopy(ln)(x), ln(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(ln.state_dict(), buffer)
    buffer.seek(0)
    fresh = EquivariantLayerNorm(IRREPS)
    assert not torch.equal(fresh(x), ln(x))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), ln(x), rtol=0, atol=0)
    ln.reset_parameters()
    assert torch.equal(ln.weight, torch.ones(IRREPS.num_irreps)) and torch.equal(ln.bias, torch.zeros(6))
    torch.testing.assert_close(ln(x), fresh.__class__(IRREPS)(x))


def test_docstring_examples():
    import eqgeo.nn.layer_norm as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
