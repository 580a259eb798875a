import math

import pytest
import torch

from eqgeo import o3
from ..helpers import oracle


def test_rand_matrix_is_rotation(dtype):
    R = o3.rand_matrix(100, dtype=dtype)
    eye = torch.eye(3, dtype=dtype).expand(100, 3, 3)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (R @ R.transpose(-1, -2) - eye).abs().max() < tol
    assert (torch.linalg.det(R) - 1).abs().max() < tol
    assert R.shape == (100, 3, 3) and R.dtype == dtype


def test_rand_matrix_is_haar_distributed():
    # For Haar measure E[R] = 0 and E[R_ij^2] = 1/3.
    R = o3.rand_matrix(100_000, dtype=torch.float64)
    assert R.mean(0).abs().max() < 0.01
    assert (R.pow(2).mean(0) - 1 / 3).abs().max() < 0.01


def test_euler_convention_is_y_x_y():
    a, b, c = torch.tensor(0.3, dtype=torch.float64), torch.tensor(1.1, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64)
    R = o3.angles_to_matrix(a, b, c)
    assert torch.allclose(R, o3.matrix_y(a) @ o3.matrix_x(b) @ o3.matrix_y(c))
    Ry = o3.matrix_y(torch.tensor(math.pi / 2, dtype=torch.float64))
    # rotating e_z by +90 degrees about y gives e_x
    assert torch.allclose(Ry @ torch.tensor([0, 0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0, 0], dtype=torch.float64), atol=1e-15)
    # angles_to_xyz: beta is the angle from the y (polar) axis
    assert torch.allclose(o3.angles_to_xyz(a, torch.tensor(0.0, dtype=torch.float64)), torch.tensor([0, 1.0, 0], dtype=torch.float64))


def test_roundtrips():
    R = o3.rand_matrix(50, dtype=torch.float64)
    assert (o3.angles_to_matrix(*o3.matrix_to_angles(R)) - R).abs().max() < 1e-10
    axis, angle = o3.matrix_to_axis_angle(R)
    assert (o3.axis_angle_to_matrix(axis, angle) - R).abs().max() < 1e-12
    q = o3.matrix_to_quaternion(R)
    assert (o3.quaternion_to_matrix(q) - R).abs().max() < 1e-12
    assert (o3.quaternion_to_matrix(o3.axis_angle_to_quaternion(axis, angle)) - R).abs().max() < 1e-12
    a, b = o3.xyz_to_angles(torch.randn(10, 3, dtype=torch.float64))
    xyz = o3.angles_to_xyz(a, b)
    assert (o3.xyz_to_angles(xyz)[0] - a).abs().max() < 1e-12
    # compose / inverse
    a1, b1, c1 = o3.rand_angles(5, dtype=torch.float64)
    a2, b2, c2 = o3.rand_angles(5, dtype=torch.float64)
    R12 = o3.angles_to_matrix(*o3.compose_angles(a1, b1, c1, a2, b2, c2))
    assert (R12 - o3.angles_to_matrix(a1, b1, c1) @ o3.angles_to_matrix(a2, b2, c2)).abs().max() < 1e-10
    Rinv = o3.angles_to_matrix(*o3.inverse_angles(a1, b1, c1))
    assert (Rinv @ o3.angles_to_matrix(a1, b1, c1) - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-12


def test_matrix_to_quaternion_near_pi():
    axis = torch.tensor([[1.0, 2.0, -0.5]], dtype=torch.float64)
    R = o3.axis_angle_to_matrix(axis, torch.tensor([math.pi - 1e-9], dtype=torch.float64))
    assert (o3.quaternion_to_matrix(o3.matrix_to_quaternion(R)) - R).abs().max() < 1e-12


def test_matrix_to_angles_rejects_improper():
    with pytest.raises(ValueError, match="det"):
        o3.matrix_to_angles(-torch.eye(3))


def test_same_conventions_as_e3nn():
    e3nn_o3 = oracle("e3nn.o3")
    a, b, c = o3.rand_angles(10, dtype=torch.float64)
    assert torch.allclose(o3.angles_to_matrix(a, b, c), e3nn_o3.angles_to_matrix(a, b, c), atol=1e-14)
    assert torch.allclose(o3.angles_to_xyz(a, b), e3nn_o3.angles_to_xyz(a, b), atol=1e-14)
    R = o3.rand_matrix(10, dtype=torch.float64)
    for mine, theirs in zip(o3.matrix_to_angles(R), e3nn_o3.matrix_to_angles(R)):
        assert torch.allclose(mine, theirs, atol=1e-8)
