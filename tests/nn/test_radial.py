import copy
import doctest
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eqgeo.nn.gate import second_moment
from eqgeo.nn.radial import BesselBasis, GaussianBasis, PolynomialCutoff, RadialEmbedding, RadialMLP
from eqgeo.testing import assert_equivariant
from ..helpers import oracle


def _state_dict_round_trip(module, make, x):
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = make()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), module(x), rtol=0, atol=0)
    torch.testing.assert_close(copy.deepcopy(module)(x), module(x), rtol=0, atol=0)
    return fresh


def _derivatives(f, r):
    """``f(r), f'(r), f''(r)`` elementwise by autograd."""
    r = r.clone().requires_grad_(True)
    y = f(r)
    (d1,) = torch.autograd.grad(y.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    return y.detach(), d1.detach(), d2


# ----------------------------------------------------------------------------- reprs
def test_reprs():
    assert repr(BesselBasis(8, 5.0)) == "BesselBasis(r -> 8x0e | cutoff=5, 0 weights)"
    assert repr(BesselBasis(8, 5.0, trainable=True)) == "BesselBasis(r -> 8x0e | cutoff=5, 8 weights)"
    assert repr(GaussianBasis(0.0, 4.0, 5)) == "GaussianBasis(r -> 5x0e | [0, 4], width=1, 0 weights)"
    assert repr(PolynomialCutoff(4.5, p=6)) == "PolynomialCutoff(r -> 0e | cutoff=4.5, p=6, 0 weights)"
    assert repr(RadialMLP(8, [64, 64], num_out=16)) == "RadialMLP(8x0e -> 64 -> 64 -> 16x0e | silu, 5632 weights)"
    assert repr(RadialMLP(8, [], num_out=3, act=None)) == "RadialMLP(8x0e -> 3x0e | linear, 24 weights)"
    assert repr(RadialEmbedding(8, 5.0)) == "RadialEmbedding(r -> 8x0e | bessel, cutoff=5, p=6, 0 weights)"
    expected = "RadialEmbedding(r -> 6x0e | gaussian, cutoff=3, p=6, 12 weights)"
    assert repr(RadialEmbedding(6, 3.0, "gaussian", trainable=True)) == expected


def test_construction_errors():
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        BesselBasis(8, 0.0)
    with pytest.raises(ValueError, match="num_basis must be > 0"):
        BesselBasis(0, 5.0)
    with pytest.raises(ValueError, match="stop must be > start"):
        GaussianBasis(2.0, 1.0, 4)
    with pytest.raises(ValueError, match="give width when num_basis == 1"):
        GaussianBasis(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="p must be > 0"):
        PolynomialCutoff(5.0, p=0)
    with pytest.raises(ValueError, match="layer sizes must be > 0"):
        RadialMLP(8, [0], num_out=4)
    with pytest.raises(ValueError, match=r"basis must be one of \('bessel', 'gaussian'\), got 'chebyshev'"):
        RadialEmbedding(8, 5.0, basis="chebyshev")


# ----------------------------------------------------------------------------- Bessel
def test_bessel_values(dtype):
    c = 4.0
    b = BesselBasis(6, c).to(dtype)
    r = torch.tensor([0.0, 1e-5, 0.3, 1.0, 2.7, 4.0], dtype=dtype)
    n = np.arange(1, 7)
    rr = r.double().numpy()[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.sqrt(2 / c) * np.sin(n * np.pi * rr / c) / rr
    expected[0] = np.sqrt(2 / c) * n * np.pi / c  # the limit at r = 0
    torch.testing.assert_close(b(r), torch.from_numpy(expected).to(dtype))
    assert b(r)[-1].abs().max() < 1e-5  # sin(n pi) = 0 at the cutoff


def test_bessel_orthonormal_by_quadrature():
    c = 5.0
    b = BesselBasis(10, c).double()
    t, w = np.polynomial.legendre.leggauss(200)
    r = torch.from_numpy(0.5 * c * (t + 1))
    w = torch.from_numpy(0.5 * c * w)
    e = b(r)  # (200, 10)
    gram = torch.einsum("i,in,im->nm", w * r**2, e, e)
    torch.testing.assert_close(gram, torch.eye(10, dtype=torch.float64), rtol=0, atol=1e-12)


def test_bessel_smooth_at_zero():
    b = BesselBasis(8, 5.0).double()
    y, d1, d2 = _derivatives(lambda r: b(r).sum(-1), torch.tensor([0.0, 1e-4, 1e-3 + 1e-9], dtype=torch.float64))
    assert torch.isfinite(d1).all() and torch.isfinite(d2).all()
    assert d1[0] == 0  # even function of r
    # d2 is continuous across the switch to the Taylor series at |a| = 1e-3
    torch.testing.assert_close(d2[0], d2[2], rtol=1e-4, atol=0)
    r = torch.tensor([0.0, 0.2, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(b, (r,))


def test_bessel_trainable_frequencies():
    b = BesselBasis(4, 3.0, trainable=True)
    assert [n for n, _ in b.named_parameters()] == ["frequencies"]
    b(torch.rand(10) * 3).sum().backward()
    assert b.frequencies.grad is not None and torch.isfinite(b.frequencies.grad).all()
    with torch.no_grad():
        b.frequencies.mul_(1.1)
    fresh = _state_dict_round_trip(b, lambda: BesselBasis(4, 3.0, trainable=True), torch.rand(5) * 3)
    assert torch.equal(fresh.frequencies, b.frequencies)
    b.reset_parameters()
    assert torch.equal(b.frequencies, torch.arange(1.0, 5.0))  # in units of pi
    assert [n for n, _ in BesselBasis(4, 3.0).named_buffers()] == ["frequencies"]


# ----------------------------------------------------------------------------- Gaussian
def test_gaussian_values(dtype):
    g = GaussianBasis(0.5, 3.5, num_basis=4).to(dtype)
    r = torch.tensor([0.0, 1.2, 3.9], dtype=dtype)
    mu = torch.tensor([0.5, 1.5, 2.5, 3.5], dtype=dtype)
    torch.testing.assert_close(g(r), torch.exp(-0.5 * (r[:, None] - mu) ** 2))
    g2 = GaussianBasis(0.0, 1.0, num_basis=1, width=0.5).to(dtype)
    torch.testing.assert_close(g2(r), torch.exp(-2.0 * r**2)[:, None])


def test_gaussian_trainable_and_round_trips():
    g = GaussianBasis(0.0, 5.0, 6, trainable=True).double()
    assert sorted(n for n, _ in g.named_parameters()) == ["centers", "widths"]
    with torch.no_grad():
        g.centers.add_(0.1)
        g.widths.mul_(0.7)
    r = torch.rand(7, dtype=torch.float64) * 5
    _state_dict_round_trip(g, lambda: GaussianBasis(0.0, 5.0, 6, trainable=True).double(), r)
    assert torch.autograd.gradgradcheck(g, (r.requires_grad_(True),))
    g.reset_parameters()
    torch.testing.assert_close(g.centers, torch.linspace(0, 5, 6, dtype=torch.float64))


# ----------------------------------------------------------------------------- cutoff
@pytest.mark.parametrize("p", [6, 3, 2.5])
def test_polynomial_cutoff_values(p):
    c = 2.0
    f = PolynomialCutoff(c, p=p).double()
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    expected = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    torch.testing.assert_close(f(c * x), expected)
    outside = torch.tensor([c, c + 1e-9, 3 * c, 1e30], dtype=torch.float64)
    assert torch.equal(f(outside), torch.zeros(4, dtype=torch.float64))
    assert f(torch.tensor(0.0)).item() == 1.0
    dense = f(torch.linspace(0, c, 1001, dtype=torch.float64))
    assert (dense.diff() <= 0).all()  # monotone from 1 to 0


def _jump_at_cutoff(f, c, h):
    """Largest difference of f, f', f'' between ``r = c(1 - h)`` and ``r = c(1 + h)``
    (autograd), and largest central finite-difference f', f'' at ``r = c`` with step ``c h``."""
    r = torch.tensor([c * (1 - h), c * (1 + h)], dtype=torch.float64)
    y, d1, d2 = _derivatives(f, r)
    s = torch.tensor([c * (1 - h), c, c * (1 + h)], dtype=torch.float64)
    v = f(s)
    fd1 = (v[2] - v[0]) / (2 * c * h)
    fd2 = (v[2] - 2 * v[1] + v[0]) / (c * h) ** 2
    return max(t.abs().item() for t in (y[0] - y[1], d1[0] - d1[1], d2[0] - d2[1], fd1, fd2))


@pytest.mark.parametrize("p", [6, 3])
def test_polynomial_cutoff_is_twice_continuously_differentiable_at_the_cutoff(p):
    c = 3.0
    f = PolynomialCutoff(c, p=p)
    jumps = [_jump_at_cutoff(f, c, h) for h in (1e-3, 1e-4, 1e-5)]
    # f, f', f'' agree on both sides up to O(h) (only the third derivative jumps),
    # so the gaps shrink tenfold with h
    assert jumps[0] < 0.1 and jumps[1] < 0.15 * jumps[0] and jumps[2] < 0.15 * jumps[1], jumps


def test_cosine_cutoff_fails_the_smoothness_check_negative_control():
    # the cosine cutoff has f'' = pi^2 / (2 c^2) just inside the cutoff and 0 outside
    c = 3.0

    def cosine(r):
        return torch.where(r < c, 0.5 * (torch.cos(math.pi * r.clamp(max=c) / c) + 1), torch.zeros_like(r))

    jumps = [_jump_at_cutoff(cosine, c, h) for h in (1e-3, 1e-4, 1e-5)]
    assert min(jumps) > 0.5 * math.pi**2 / (2 * c**2), jumps


def test_polynomial_cutoff_gradients_finite_everywhere():
    f = PolynomialCutoff(5.0)
    r = torch.tensor([0.0, 2.0, 5.0, 7.0, 1e30], requires_grad=True)
    (g,) = torch.autograd.grad(f(r).sum(), r)
    assert torch.isfinite(g).all() and g[0] == 0 and (g[2:] == 0).all()
    r64 = torch.tensor([0.3, 2.0, 4.9, 6.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(PolynomialCutoff(5.0), (r64,))


# ----------------------------------------------------------------------------- MLP
def test_radial_mlp_matches_definition():
    mlp = RadialMLP(5, [7], num_out=3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    w0, w1 = mlp.weights
    c = second_moment(F.silu) ** -0.5
    expected = (c * F.silu(x @ w0 / math.sqrt(5))) @ w1 / math.sqrt(7)
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("hidden", [[64, 64], [32], []])
def test_radial_mlp_unit_second_moment_at_init(hidden):
    mlp = RadialMLP(8, hidden, num_out=32)
    y = mlp(torch.randn(100_000, 8))
    assert 0.8 < y.pow(2).mean().item() < 1.25


def test_radial_mlp_bad_input():
    with pytest.raises(ValueError, match=r"RadialMLP expects features of irreps 8x0e \(dim 8\), got last dimension 7"):
        RadialMLP(8, [16], num_out=4)(torch.randn(3, 7))


def test_radial_mlp_double_backward_and_round_trips():
    mlp = RadialMLP(4, [6, 5], num_out=3).double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mlp, (x,))
    assert torch.autograd.gradgradcheck(mlp, (x,))
    fresh = _state_dict_round_trip(mlp, lambda: RadialMLP(4, [6, 5], num_out=3).double(), x.detach())
    assert all(torch.equal(a, b) for a, b in zip(fresh.weights, mlp.weights))
    before = [w.clone() for w in mlp.weights]
    mlp.reset_parameters()
    assert not any(torch.equal(a, b) for a, b in zip(before, mlp.weights))


def test_radial_mlp_matches_e3nn_fully_connected_net():
    e3nn_nn = oracle("e3nn.nn")
    ours = RadialMLP(8, [16, 12], num_out=5).double()
    theirs = e3nn_nn.FullyConnectedNet([8, 16, 12, 5], F.silu).double()
    with torch.no_grad():
        for i, w in enumerate(ours.weights):
            getattr(theirs, f"layer{i}").weight.copy_(w)
    act = theirs.layer0.act
    assert act.cst == pytest.approx(ours.act.cst, rel=5e-3)  # e3nn: Monte Carlo estimate
    act.cst, act._is_id = ours.act.cst, False
    x = torch.randn(10, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("basis", ["bessel", "gaussian"])
def test_radial_embedding_is_basis_times_cutoff(basis):
    emb = RadialEmbedding(6, 4.0, basis=basis, p=5).double()
    r = torch.tensor([0.0, 0.7, 2.0, 3.99, 4.0, 9.0], dtype=torch.float64)
    b = BesselBasis(6, 4.0) if basis == "bessel" else GaussianBasis(0.0, 4.0, 6)
    torch.testing.assert_close(emb(r), b.double()(r) * PolynomialCutoff(4.0, p=5)(r)[:, None])
    assert torch.equal(emb(r[-2:]), torch.zeros(2, 6, dtype=torch.float64))
    _, d1, d2 = _derivatives(lambda s: emb(s).sum(-1), torch.tensor([4.0 * (1 - 1e-4)], dtype=torch.float64))
    assert d1.abs().max() < 1e-4 and d2.abs().max() < 1.0
    r.requires_grad_(True)
    assert torch.autograd.gradgradcheck(emb, (r[1:4].detach().requires_grad_(True),))


def test_edge_embedding_pipeline_is_invariant(dtype, tol):
    emb = RadialEmbedding(8, 3.0).to(dtype)
    mlp = RadialMLP(8, [16], num_out=4).to(dtype)
    vectors = 1.5 * torch.randn(20, 3, dtype=dtype)

    def weights(v):
        return mlp(emb(v.norm(dim=-1)))

    assert_equivariant(weights, [vectors], ["1o"], ["4x0e"], tolerance=tol, ntrials=3)


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    emb = RadialEmbedding(8, 3.0)
    mlp = RadialMLP(8, [16], num_out=4)
    model = torch.nn.Sequential(emb, mlp)
    r = 3.5 * torch.rand(30)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(r), model(r))
    gauss = torch.compile(RadialEmbedding(8, 3.0, "gaussian", trainable=True), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(gauss(r), gauss._orig_mod(r))


def test_radial_embedding_round_trips():
    emb = RadialEmbedding(6, 3.0, basis="gaussian", trainable=True)
    with torch.no_grad():
        emb.basis.widths.mul_(0.5)
    _state_dict_round_trip(emb, lambda: RadialEmbedding(6, 3.0, basis="gaussian", trainable=True), torch.rand(9) * 3)


def test_docstring_examples():
    import eqgeo.nn.radial as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
