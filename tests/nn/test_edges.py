"""edge_lengths / EdgeEncoder: lengths with finite derivatives at a self loop; the encoder equals its parts."""

import pytest
import torch

from eqgeo.nn import EdgeEncoder, PolynomialCutoff, RadialEmbedding, edge_lengths
from eqgeo.o3 import Irreps, SphericalHarmonics


def test_edge_lengths_are_norms_with_zero_derivatives_at_a_self_loop():
    vec = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 2.0, 2.0]], dtype=torch.float64, requires_grad=True)
    r = edge_lengths(vec)
    assert torch.equal(r.detach(), torch.tensor([5.0, 0.0, 3.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(r.square().sum() + r.sum(), vec, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), vec)
    assert torch.isfinite(grad).all() and torch.isfinite(second).all()
    assert torch.equal(grad[1], torch.zeros(3, dtype=torch.float64)) and torch.equal(second[1], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(grad[0], vec.detach()[0] / 5.0 + 2 * vec.detach()[0])


def test_plain_norm_gives_nan_at_a_self_loop_negative_control():
    """What edge_lengths avoids: the gradient of the plain length sqrt(x.x) at a zero vector is NaN."""
    vec = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(vec.square().sum(dim=-1).sqrt().sum(), vec)
    assert torch.isnan(grad).all()


@pytest.mark.parametrize("basis", ["bessel", "gaussian"])
def test_edge_encoder_equals_its_parts_and_keeps_what_is_given(basis):
    irreps_sh = Irreps.spherical_harmonics(2)
    encoder = EdgeEncoder(irreps_sh, num_radial=6, cutoff=3.0, basis=basis, p=6).double()
    vec = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sh, radial, envelope = encoder(vec, None, None)
    r = vec.norm(dim=-1)
    torch.testing.assert_close(sh, SphericalHarmonics(irreps_sh, normalize=True, normalization="component")(vec))
    expected_radial, expected_envelope = RadialEmbedding(6, 3.0, basis=basis, p=6).double().embed(r)
    torch.testing.assert_close(radial, expected_radial)
    torch.testing.assert_close(envelope, PolynomialCutoff(3.0, 6)(r))
    torch.testing.assert_close(envelope, expected_envelope)
    # precomputed inputs are passed through untouched; a missing envelope is computed from the lengths
    given_sh, given_radial = torch.ones_like(sh), torch.ones_like(radial)
    out = encoder(vec, given_sh, given_radial)
    assert out[0] is given_sh and out[1] is given_radial
    torch.testing.assert_close(out[2], envelope)
