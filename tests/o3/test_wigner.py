import itertools

import pytest
import torch

from eqgeo import o3
from ..helpers import oracle


def _triples(lmax):
    for l1, l2 in itertools.product(range(lmax + 1), repeat=2):
        for l3 in range(abs(l1 - l2), min(l1 + l2, lmax) + 1):
            yield l1, l2, l3


@pytest.mark.parametrize("l1,l2,l3", list(_triples(4)))
def test_3j_invariant_and_normalised(l1, l2, l3):
    C = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    assert C.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    assert abs(C.norm().item() - 1) < 1e-14
    R = o3.rand_matrix(dtype=torch.float64)
    D1, D2, D3 = (o3.wigner_D_from_matrix(l, R) for l in (l1, l2, l3))
    rotated = torch.einsum("ia,jb,kc,abc->ijk", D1, D2, D3, C)
    assert (rotated - C).abs().max() < 1e-13


def test_3j_selection_rules():
    # In the real basis index m = i - l; the entry vanishes unless |m3| = |m1| + |m2| or ||m1| - |m2||.
    for l1, l2, l3 in _triples(4):
        C = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        for i, j, k in itertools.product(range(2 * l1 + 1), range(2 * l2 + 1), range(2 * l3 + 1)):
            m1, m2, m3 = abs(i - l1), abs(j - l2), abs(k - l3)
            if m3 not in (m1 + m2, abs(m1 - m2)):
                assert C[i, j, k] == 0
    for bad in [(1, 1, 3), (0, 2, 1), (4, 1, 2)]:
        with pytest.raises(ValueError, match="triangle"):
            o3.wigner_3j(*bad)


def test_3j_known_values_and_cache():
    C110 = o3.wigner_3j(1, 1, 0, dtype=torch.float64)[:, :, 0]
    assert torch.allclose(C110, torch.eye(3, dtype=torch.float64) / 3**0.5, atol=1e-16)
    C111 = o3.wigner_3j(1, 1, 1, dtype=torch.float64)
    eps = torch.zeros(3, 3, 3, dtype=torch.float64)
    for (i, j, k), s in {(0, 1, 2): 1, (1, 2, 0): 1, (2, 0, 1): 1, (0, 2, 1): -1, (2, 1, 0): -1, (1, 0, 2): -1}.items():
        eps[i, j, k] = s
    assert torch.allclose(C111.abs(), eps.abs() / 6**0.5, atol=1e-16)
    a = o3.wigner_3j(2, 2, 2)
    a.zero_()  # a fresh tensor each call: mutating it must not corrupt the cache
    assert o3.wigner_3j(2, 2, 2).abs().sum() > 0
    assert o3.wigner_3j(1, 1, 1).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("l", [0, 1, 2, 3, 5, 8, 12, 20])
def test_wigner_D_homomorphism_orthogonal(l):
    R1, R2 = o3.rand_matrix(2, dtype=torch.float64)
    D = o3.wigner_D_from_matrix
    assert (D(l, R1 @ R2) - D(l, R1) @ D(l, R2)).abs().max() < 1e-11
    eye = torch.eye(2 * l + 1, dtype=torch.float64)
    assert (D(l, R1) @ D(l, R1).T - eye).abs().max() < 1e-12
    assert (D(l, torch.eye(3, dtype=torch.float64)) - eye).abs().max() < 1e-14


def test_D_of_1o_is_the_rotation_matrix_exactly():
    R = o3.rand_matrix(20, dtype=torch.float64)
    assert (o3.Irrep("1o").D_from_matrix(R) - R).abs().max() < 1e-12
    assert (o3.Irrep("1o").D_from_matrix(-R) + R).abs().max() < 1e-12
    assert (o3.Irrep("1e").D_from_matrix(-R) - R).abs().max() < 1e-12


def test_wigner_D_from_angles_and_batch(dtype):
    a, b, c = o3.rand_angles(3, 4, dtype=dtype)
    D = o3.wigner_D(2, a, b, c)
    assert D.shape == (3, 4, 5, 5) and D.dtype == dtype
    Dm = o3.wigner_D_from_matrix(2, o3.angles_to_matrix(a, b, c))
    torch.testing.assert_close(D, Dm)


def test_wigner_D_differentiable():
    axis = torch.randn(3, dtype=torch.float64)
    angle = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: o3.wigner_D_from_matrix(3, o3.axis_angle_to_matrix(axis, t)), (angle,))


@pytest.mark.slow
def test_matches_e3nn():
    e3nn_o3 = oracle("e3nn.o3")
    for l1, l2, l3 in _triples(6):
        mine = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        theirs = e3nn_o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert (mine - theirs).abs().max() < 1e-12, (l1, l2, l3)  # same numbers, same sign
    R = o3.rand_matrix(5, dtype=torch.float64)
    for l in range(6):
        # e3nn 0.6 keeps float32 generators, so it only agrees to ~1e-6
        assert (o3.wigner_D_from_matrix(l, R) - e3nn_o3.Irrep(l, 1).D_from_matrix(R)).abs().max() < 1e-5


def test_change_of_basis_is_unitary():
    for l in range(5):
        Q = o3.change_basis_real_to_complex(l)
        assert torch.allclose(Q @ Q.conj().T, torch.eye(2 * l + 1, dtype=Q.dtype), atol=1e-14)
