"""The equivariance helpers must accept equivariant functions and reject the others."""

import pytest
import torch

from eqgeo import o3
from eqgeo.testing import NodeIndex, Nodes, assert_equivariant, equivariance_error


def _cross(a, b):
    return torch.linalg.cross(a, b, dim=-1)


def test_accepts_equivariant_functions(dtype):
    x = torch.randn(10, 3, dtype=dtype)
    y = torch.randn(10, 3, dtype=dtype)
    assert_equivariant(lambda a: a.norm(dim=-1, keepdim=True), [x], ["1o"], ["0e"])
    assert_equivariant(_cross, [x, y], ["1o", "1o"], ["1e"])
    f = o3.Irreps("2x0e+1o")
    assert_equivariant(lambda a: a * 3.0, [f.randn(10, -1, dtype=dtype)], [f], [f])
    # positions: differences are translation invariant vectors
    assert_equivariant(lambda p: p[1:] - p[:-1], [x], ["cartesian_points"], ["1o"])
    # positions out: centroid moves with the points
    assert_equivariant(lambda p: p.mean(0, keepdim=True), [x], ["cartesian_points"], ["cartesian_points"])


def test_rejects_non_invariant_scalar():
    x = torch.randn(10, 3, dtype=torch.float64)
    errors = equivariance_error(lambda a: a[:, :1], [x], ["1o"], ["0e"])
    assert errors["rotation"] > 1e-2 and errors["reflection"] > 1e-2
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(lambda a: a[:, :1], [x], ["1o"], ["0e"])


def test_rejects_wrong_parity():
    # The cross product of two vectors is a pseudovector: right under rotations, wrong parity.
    x, y = torch.randn(2, 10, 3, dtype=torch.float64)
    errors = equivariance_error(_cross, [x, y], ["1o", "1o"], ["1o"])
    assert errors["rotation"] < 1e-12
    assert errors["reflection"] > 1e-2
    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(_cross, [x, y], ["1o", "1o"], ["1o"])
    errors = equivariance_error(_cross, [x, y], ["1o", "1o"], ["1o"], do_parity=False)
    assert "reflection" not in errors


def test_rejects_translation_dependence():
    p = torch.randn(10, 3, dtype=torch.float64)
    errors = equivariance_error(lambda q: q.norm(dim=-1, keepdim=True), [p], ["cartesian_points"], ["0e"])
    assert errors["rotation"] < 1e-12 and errors["translation"] > 1e-2
    with pytest.raises(AssertionError, match="translation"):
        assert_equivariant(lambda q: q.norm(dim=-1, keepdim=True), [p], ["cartesian_points"], ["0e"])


def test_rejects_rotation_of_wrong_degree():
    x = torch.randn(10, 3, dtype=torch.float64)
    irreps = o3.Irreps("0e+1o+2e")
    f = lambda a: o3.spherical_harmonics([0, 1, 2], a, True)  # noqa: E731
    assert_equivariant(f, [x], ["1o"], [irreps])
    with pytest.raises(AssertionError):
        assert_equivariant(f, [x], ["1o"], [o3.Irreps("0e+1o+2o")])  # wrong parity of 2
    with pytest.raises(AssertionError):
        assert_equivariant(lambda a: o3.spherical_harmonics([0, 1, 2], a, True)[:, [0, 1, 2, 3, 5, 4, 6, 7, 8]], [x], ["1o"], [irreps])


def _message_passing(x, pos, edge_index):
    """Sum over incoming edges of x_j * |pos_j - pos_i|: permutation equivariant, invariant."""
    src, dst = edge_index
    w = (pos[src] - pos[dst]).norm(dim=-1, keepdim=True)
    return torch.zeros_like(x).index_add_(0, dst, x[src] * w)


def test_graph_functions_and_permutations():
    n = 8
    x = torch.randn(n, 4, dtype=torch.float64)
    pos = torch.randn(n, 3, dtype=torch.float64)
    edge_index = torch.randint(0, n, (2, 20))
    specs = [Nodes("4x0e"), Nodes("cartesian_points"), NodeIndex()]
    errors = assert_equivariant(_message_passing, [x, pos, edge_index], specs, [Nodes("4x0e")])
    assert set(errors) == {"rotation", "reflection", "translation", "permutation"}

    def not_permutation_equivariant(x, pos, edge_index):
        return _message_passing(x, pos, edge_index).cumsum(0)

    errors = equivariance_error(not_permutation_equivariant, [x, pos, edge_index], specs, [Nodes("4x0e")])
    assert errors["permutation"] > 1e-3 and errors["rotation"] < 1e-12
    with pytest.raises(AssertionError, match="permutation"):
        assert_equivariant(not_permutation_equivariant, [x, pos, edge_index], specs, [Nodes("4x0e")])

    def uses_raw_index(x, pos, edge_index):  # treats node 0 specially
        return _message_passing(x, pos, edge_index) + x[:1]

    with pytest.raises(AssertionError, match="permutation"):
        assert_equivariant(uses_raw_index, [x, pos, edge_index], specs, [Nodes("4x0e")])


def test_float32_functions_are_checked_in_float64():
    x = torch.randn(100, 3)
    errors = assert_equivariant(lambda a: o3.spherical_harmonics([1, 2], a, True), [x], ["1o"], ["1o+2e"])
    assert 0 < errors["rotation"] < 1e-5


def test_bad_specs_raise():
    x = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="irreps"):
        equivariance_error(lambda a: a, [x], ["1o"], ["2e"])
    with pytest.raises(ValueError, match="specs"):
        equivariance_error(lambda a: a, [x], ["1o", "1o"], ["1o"])
    with pytest.raises(ValueError, match="args_in"):
        assert_equivariant(lambda a: a)


def test_random_inputs_from_irreps():
    errors = assert_equivariant(lambda a: a * a.norm(dim=-1, keepdim=True), irreps_in=["1o"], irreps_out=["1o"])
    assert errors["rotation"] < 1e-12


def test_each_output_is_judged_on_its_own_scale():
    """A large invariant output beside a small vector output must not widen the vector's tolerance."""
    x = torch.randn(10, 3, dtype=torch.float64)
    bias = torch.tensor([1e-4, 0.0, 0.0], dtype=torch.float64)

    def big_energy_biased_forces(a):  # energy ~1e4, forces ~1 with a 1e-4 constant bias
        return 1e4 + a.norm(dim=-1, keepdim=True), a + bias

    with pytest.raises(AssertionError, match=r"output 1 under rotation"):
        assert_equivariant(big_energy_biased_forces, [x], ["1o"], ["0e", "1o"], tolerance=1e-6)
    # the same error is accepted against a tolerance of its own size, and output 0 is never blamed
    assert_equivariant(big_energy_biased_forces, [x], ["1o"], ["0e", "1o"], tolerance=1e-2)


def test_tolerance_is_relative_to_the_output_size():
    """Scaling an equivariant function by 1e6 keeps it within the float32 tolerance."""
    x = torch.randn(50, 3)
    assert_equivariant(lambda a: 1e6 * o3.spherical_harmonics([1, 2], a, True), [x], ["1o"], ["1o+2e"])
