import copy
import pickle

import pytest
import torch

from eqgeo.o3 import Irrep, Irreps, rand_matrix


def test_irrep_parse_and_properties():
    ir = Irrep("2o")
    assert (ir.l, ir.p, ir.dim) == (2, -1, 5)
    assert Irrep(1, 1) == Irrep("1e") and str(Irrep(1, 1)) == "1e"
    assert Irrep(Irrep("0e")).is_scalar() and not Irrep("0o").is_scalar()
    assert Irrep(("3o")) == Irrep(3, -1)


@pytest.mark.parametrize("bad", ["1", "1x", "e", "-1e", "1.5e", "2y", ""])
def test_irrep_malformed(bad):
    with pytest.raises(ValueError, match="irrep"):
        Irrep(bad)


def test_irrep_product_selection_rule():
    assert list(Irrep("1o") * Irrep("1o")) == [Irrep("0e"), Irrep("1e"), Irrep("2e")]
    assert list(Irrep("2e") * Irrep("1o")) == [Irrep("1o"), Irrep("2o"), Irrep("3o")]
    assert list(Irrep("0o") * Irrep("3e")) == [Irrep("3o")]
    assert 3 * Irrep("1o") == Irreps("3x1o")
    assert Irrep("1o") + Irrep("0e") == Irreps("1o+0e")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("16x0e + 8x1o + 4x2e", [(16, (0, 1)), (8, (1, -1)), (4, (2, 1))]),
        ("16x0e+8x1o+4x2e", [(16, (0, 1)), (8, (1, -1)), (4, (2, 1))]),
        ("1o", [(1, (1, -1))]),
        ("  2x3o  +0e ", [(2, (3, -1)), (1, (0, 1))]),
        ("0x1e", [(0, (1, 1))]),
        ("", []),
    ],
)
def test_irreps_parse(text, expected):
    irreps = Irreps(text)
    assert [(m, (ir.l, ir.p)) for m, ir in irreps] == expected
    assert Irreps(str(irreps)) == irreps
    assert Irreps(repr(irreps)) == irreps


@pytest.mark.parametrize("bad, token", [("1x", "1x"), ("3y", "3y"), ("-1e", "-1e"), ("2xx0e", "2xx0e"), ("1.5x0e", "1.5x0e"), ("1o++0e", "empty term")])
def test_irreps_malformed_names_token(bad, token):
    with pytest.raises(ValueError) as err:
        Irreps(bad)
    assert token in str(err.value)


def test_irreps_properties():
    x = Irreps("16x0e+8x1o+4x2e")
    assert x.dim == 16 + 24 + 20
    assert x.num_irreps == 28
    assert x.lmax == 2
    assert x.ls == [0] * 16 + [1] * 8 + [2] * 4
    assert [(m, str(ir)) for m, ir in x] == [(16, "0e"), (8, "1o"), (4, "2e")]
    assert x.slices() == [slice(0, 16), slice(16, 40), slice(40, 60)]
    assert x.count("1o") == 8 and "2e" in x and "2o" not in x
    assert x[1:] == Irreps("8x1o+4x2e") and x[0].mul == 16
    with pytest.raises(ValueError):
        Irreps("").lmax


def test_irreps_algebra():
    a, b = Irreps("2x0e"), Irreps("1o")
    assert a + b == Irreps("2x0e+1o") and a + "1o" == Irreps("2x0e+1x1o") and "1o" + a == Irreps("1o+2x0e")
    assert 2 * Irreps("0e+1o") == Irreps("0e+1o+0e+1o") == Irreps("0e+1o") * 2
    assert Irreps("0e+0e+1o+0x2e+1o").simplify() == Irreps("2x0e+2x1o")
    assert Irreps("1o+0e+1e+0o+1o").sort().irreps == Irreps("0o+0e+1o+1o+1e")
    s = Irreps("1o+0e+1e").sort()
    assert s.inv == (1, 0, 2) and s.p == (1, 0, 2)
    assert Irreps("1o+0e+1o").regroup() == Irreps("0e+2x1o")
    assert Irreps("1x0e+1x0e") != Irreps("2x0e")
    assert Irreps.spherical_harmonics(3) == Irreps("0e+1o+2e+3o")
    assert Irreps.spherical_harmonics(2, p=1) == Irreps("0e+1e+2e")
    assert Irreps("0e+1o+2e").filter(lmax=1) == Irreps("0e+1o")
    assert Irreps("0e+1o+2e").filter(drop="1o") == Irreps("0e+2e")


def test_irreps_immutable_hashable_pickle():
    x = Irreps("3x0e+1o")
    assert hash(x) == hash(Irreps("3x0e+1o"))
    assert pickle.loads(pickle.dumps(x)) == x and copy.deepcopy(x) == x
    assert pickle.loads(pickle.dumps(Irrep("2o"))) == Irrep("2o")


def test_randn_shapes_and_normalization(dtype):
    irreps = Irreps("4x0e+3x1o+2x2e")
    x = irreps.randn(7, -1, 2, dtype=dtype)
    assert x.shape == (7, irreps.dim, 2) and x.dtype == dtype
    y = irreps.randn(1000, -1, normalization="norm", dtype=dtype)
    for s, (mul, ir) in zip(irreps.slices(), irreps):
        norms = y[:, s].reshape(1000, mul, ir.dim).norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    with pytest.raises(ValueError, match="-1"):
        irreps.randn(3, 4)


def test_D_from_matrix_structure_and_homomorphism():
    irreps = Irreps("2x0e+1o+1e+2o")
    R1, R2 = rand_matrix(2, dtype=torch.float64)
    for A, B in [(R1, R2), (-R1, R2), (-R1, -R2)]:
        lhs = irreps.D_from_matrix(A @ B)
        rhs = irreps.D_from_matrix(A) @ irreps.D_from_matrix(B)
        assert (lhs - rhs).abs().max() < 1e-11
    D = irreps.D_from_matrix(-R1)  # improper
    assert torch.equal(D[:2, :2], torch.eye(2, dtype=torch.float64))  # 0e
    assert (D[2:5, 2:5] - (-R1)).abs().max() < 1e-12  # 1o: the matrix itself
    assert (D[5:8, 5:8] - R1).abs().max() < 1e-12  # 1e: pseudovector
    assert (D[:2, 2:] == 0).all()  # block diagonal


def test_D_from_angles_matches_matrix():
    from eqgeo.o3 import angles_to_matrix, rand_angles

    irreps = Irreps("0e+1o+2e")
    a, b, c = rand_angles(4, dtype=torch.float64)
    D1 = irreps.D_from_angles(a, b, c)
    D2 = irreps.D_from_matrix(angles_to_matrix(a, b, c))
    assert (D1 - D2).abs().max() < 1e-12
    Dk = irreps.D_from_angles(a, b, c, k=torch.ones(4))
    assert (Dk[:, 1:4, 1:4] + angles_to_matrix(a, b, c)).abs().max() < 1e-12
