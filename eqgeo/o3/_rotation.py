"""Rotations of 3D space: random draws and conversions between parametrisations.

Conventions are e3nn's: Euler angles compose as ``R = Ry(alpha) Rx(beta) Ry(gamma)``, ``y`` is
the polar axis (``angles_to_xyz(alpha, beta) = (sin b sin a, cos b, sin b cos a)``), and every
function takes a batch shape ``*shape`` with ``dtype=`` / ``device=`` keywords.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "rand_matrix",
    "rand_angles",
    "identity_angles",
    "rand_axis_angle",
    "rand_quaternion",
    "matrix_x",
    "matrix_y",
    "matrix_z",
    "angles_to_matrix",
    "matrix_to_angles",
    "angles_to_xyz",
    "xyz_to_angles",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "compose_angles",
    "inverse_angles",
]


def _dtype(dtype):
    return torch.get_default_dtype() if dtype is None else dtype


def rand_quaternion(*shape, dtype=None, device=None, generator=None) -> torch.Tensor:
    """Uniformly (Haar) distributed unit quaternions ``(*shape, 4)``, real part first."""
    q = torch.randn(*shape, 4, dtype=_dtype(dtype), device=device, generator=generator)
    return q / q.norm(dim=-1, keepdim=True)


def rand_matrix(*shape, dtype=None, device=None, generator=None) -> torch.Tensor:
    """Uniformly (Haar) distributed rotation matrices ``(*shape, 3, 3)``, det = +1."""
    return quaternion_to_matrix(rand_quaternion(*shape, dtype=dtype, device=device, generator=generator))


def rand_angles(*shape, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler angles ``(alpha, beta, gamma)`` of a Haar-random rotation."""
    alpha, gamma = 2 * math.pi * torch.rand(2, *shape, dtype=_dtype(dtype), device=device)
    beta = torch.rand(*shape, dtype=_dtype(dtype), device=device).mul(2).sub(1).acos()
    return alpha, beta, gamma


def identity_angles(*shape, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero Euler angles."""
    z = torch.zeros(*shape, dtype=_dtype(dtype), device=device)
    return z, z.clone(), z.clone()


def rand_axis_angle(*shape, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis (unit vector) and angle of a Haar-random rotation."""
    return quaternion_to_axis_angle(rand_quaternion(*shape, dtype=dtype, device=device))


def _rot(angle: torch.Tensor, i: int, j: int, k: int) -> torch.Tensor:
    """Rotation about axis ``k``: the plane ``(i, j)`` turns by ``angle``."""
    angle = torch.as_tensor(angle)
    if not angle.is_floating_point():
        angle = angle.to(torch.get_default_dtype())
    c, s = angle.cos(), angle.sin()
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    rows = [[None] * 3 for _ in range(3)]
    rows[k][k] = o
    rows[i][k] = rows[k][i] = rows[j][k] = rows[k][j] = z
    rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_x(angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` about the x axis."""
    return _rot(angle, 1, 2, 0)


def matrix_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` about the y axis."""
    return _rot(angle, 2, 0, 1)


def matrix_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` about the z axis."""
    return _rot(angle, 0, 1, 2)


def angles_to_matrix(alpha, beta, gamma) -> torch.Tensor:
    """``Ry(alpha) @ Rx(beta) @ Ry(gamma)``."""
    alpha, beta, gamma = torch.broadcast_tensors(
        torch.as_tensor(alpha), torch.as_tensor(beta), torch.as_tensor(gamma)
    )
    return matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)


def angles_to_xyz(alpha, beta) -> torch.Tensor:
    """Point on the unit sphere at azimuth ``alpha`` (about y, from z) and polar angle ``beta``."""
    alpha, beta = torch.broadcast_tensors(torch.as_tensor(alpha), torch.as_tensor(beta))
    return torch.stack([beta.sin() * alpha.sin(), beta.cos(), beta.sin() * alpha.cos()], dim=-1)


def xyz_to_angles(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`angles_to_xyz` (``xyz`` need not be normalised)."""
    xyz = xyz / xyz.norm(dim=-1, keepdim=True)
    beta = torch.acos(xyz[..., 1].clamp(-1, 1))
    alpha = torch.atan2(xyz[..., 0], xyz[..., 2])
    return alpha, beta


def matrix_to_angles(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler angles of a rotation matrix; ``angles_to_matrix(*matrix_to_angles(R)) == R``."""
    if not torch.allclose(torch.linalg.det(R), R.new_tensor(1.0), atol=1e-4):
        raise ValueError("matrix_to_angles needs proper rotations (det = +1)")
    y = R[..., :, 1]  # R @ e_y
    alpha, beta = xyz_to_angles(y)
    R0 = angles_to_matrix(alpha, beta, torch.zeros_like(alpha))
    Rg = R0.transpose(-1, -2) @ R  # = Ry(gamma)
    gamma = torch.atan2(Rg[..., 0, 2], Rg[..., 0, 0])
    return alpha, beta, gamma


def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` about ``axis`` (Rodrigues' formula; axis need not be unit)."""
    axis, angle = torch.broadcast_tensors(axis, torch.as_tensor(angle, dtype=axis.dtype)[..., None])
    angle = angle[..., 0]
    n = axis / axis.norm(dim=-1, keepdim=True)
    c, s = angle.cos()[..., None, None], angle.sin()[..., None, None]
    K = torch.zeros(*n.shape[:-1], 3, 3, dtype=n.dtype, device=n.device)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -n[..., 2], n[..., 1], -n[..., 0]
    K = K - K.transpose(-1, -2)
    eye = torch.eye(3, dtype=n.dtype, device=n.device)
    return eye + s * K + (1 - c) * (K @ K)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a unit quaternion ``(w, x, y, z)``."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation matrix.

    Uses the largest of the four diagonal combinations, so it is accurate for every angle.
    """
    m = R
    t = torch.stack(
        [
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        dim=-1,
    )
    # Candidate quaternions, each scaled by 4 * (its largest component).
    cand = torch.stack(
        [
            torch.stack([t[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], t[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], t[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], t[..., 3]], -1),
        ],
        dim=-2,
    )
    best = t.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)


def axis_angle_to_quaternion(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Unit quaternion of the rotation by ``angle`` about ``axis``."""
    axis, angle = torch.broadcast_tensors(axis, torch.as_tensor(angle, dtype=axis.dtype)[..., None])
    n = axis / axis.norm(dim=-1, keepdim=True)
    half = angle[..., :1] / 2
    return torch.cat([half.cos(), half.sin() * n], dim=-1)


def quaternion_to_axis_angle(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis (unit) and angle in ``[0, 2 pi)`` of a unit quaternion."""
    v = q[..., 1:]
    s = v.norm(dim=-1)
    angle = 2 * torch.atan2(s, q[..., 0])
    axis = torch.where(s[..., None] > 0, v / s.clamp_min(torch.finfo(q.dtype).tiny)[..., None], torch.zeros_like(v))
    axis = torch.where(s[..., None] > 0, axis, axis.new_tensor([0.0, 1.0, 0.0]))
    return axis, angle


def matrix_to_axis_angle(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis (unit) and angle in ``[0, pi]`` of a rotation matrix."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def compose_angles(a1, b1, c1, a2, b2, c2):
    """Euler angles of ``R(a1, b1, c1) @ R(a2, b2, c2)``."""
    return matrix_to_angles(angles_to_matrix(a1, b1, c1) @ angles_to_matrix(a2, b2, c2))


def inverse_angles(a, b, c):
    """Euler angles of the inverse rotation."""
    return -c, -b, -a
