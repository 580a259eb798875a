"""Clebsch–Gordan (Wigner 3j) coefficients and Wigner D matrices in e3nn's real basis.

The real basis of degree ``l`` is e3nn's: the complex spherical harmonics (Condon–Shortley
phase) turned real by the matrix of :func:`change_basis_real_to_complex`, which includes the
factor ``(-i)^l`` that makes the coupling coefficients real. For ``l = 1`` the basis is
``(x, y, z)``, so the matrix of ``1o`` is the rotation matrix itself.

Everything here is exact to float64 rounding:

- the SU(2) Clebsch–Gordan coefficients are computed as exact rationals (their squares are
  rational) and rounded once;
- Wigner D matrices are built from the rotation matrix by the recursion
  ``D^{l+1} = P (D^l (x) R) P^T``, where ``P`` is the isometry onto the ``l+1`` part of
  ``l (x) 1`` given by the 3j symbols. No Euler angles, no matrix exponential, no float32
  constants, so ``D(R1 R2) = D(R1) D(R2)`` holds to ~1e-15 in float64 for every ``l``.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import torch

__all__ = ["wigner_3j", "wigner_D", "wigner_D_from_matrix", "change_basis_real_to_complex", "clebsch_gordan"]


def _check_triangle(l1: int, l2: int, l3: int) -> None:
    for l in (l1, l2, l3):
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise ValueError(f"wigner_3j needs integer degrees >= 0, got ({l1}, {l2}, {l3})")
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"wigner_3j({l1}, {l2}, {l3}): the degrees violate the triangle rule |l1-l2| <= l3 <= l1+l2")


@functools.lru_cache(maxsize=None)
def _su2_cg_squared_signed(j1: int, j2: int, j3: int) -> np.ndarray:
    """Complex-basis CG <j1 m1 j2 m2 | j3 m3> as float64, index ``[j1+m1, j2+m2, j3+m3]``.

    Racah's formula in exact rational arithmetic: ``C = S * sqrt(P)`` with rational ``S, P``;
    we form ``S^2 P`` exactly and round ``sign(S) sqrt(S^2 P)`` once.
    """
    f = math.factorial
    out = np.zeros((2 * j1 + 1, 2 * j2 + 1, 2 * j3 + 1))
    pre = Fraction((2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3), f(j1 + j2 + j3 + 1))
    for m1 in range(-j1, j1 + 1):
        for m2 in range(-j2, j2 + 1):
            m3 = m1 + m2
            if abs(m3) > j3:
                continue
            p = pre * Fraction(f(j3 + m3) * f(j3 - m3), f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
            kmin = max(0, -j1 + j2 + m3, -j1 + m1)
            kmax = min(j2 + j3 + m1, j3 - j1 + j2, j3 + m3)
            s = Fraction(0)
            for k in range(kmin, kmax + 1):
                s += (-1) ** (k + j2 + m2) * Fraction(
                    f(j2 + j3 + m1 - k) * f(j1 - m1 + k),
                    f(k) * f(j3 - j1 + j2 - k) * f(j3 + m3 - k) * f(k + j1 - j2 - m3),
                )
            if s != 0:
                out[j1 + m1, j2 + m2, j3 + m3] = math.copysign(math.sqrt(s * s * p), s)
    return out


def clebsch_gordan(j1: int, j2: int, j3: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """SU(2) Clebsch–Gordan coefficients ``<j1 m1 j2 m2 | j3 m3>`` in the complex basis."""
    _check_triangle(j1, j2, j3)
    return torch.tensor(_su2_cg_squared_signed(j1, j2, j3), dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _q_real_to_complex(l: int) -> np.ndarray:
    s = 1 / math.sqrt(2)
    q = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    for m in range(-l, 0):
        q[l + m, l - m] = s
        q[l + m, l + m] = -1j * s
    q[l, l] = 1
    for m in range(1, l + 1):
        q[l + m, l + m] = (-1) ** m * s
        q[l + m, l - m] = 1j * (-1) ** m * s
    return ((-1j) ** l) * q


def change_basis_real_to_complex(l: int, dtype=torch.complex128, device=None) -> torch.Tensor:
    """e3nn's unitary change of basis between real and complex spherical harmonics of degree l."""
    return torch.tensor(_q_real_to_complex(l), dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _wigner_3j_np(l1: int, l2: int, l3: int) -> np.ndarray:
    C = _su2_cg_squared_signed(l1, l2, l3).astype(np.complex128)
    Q1, Q2, Q3 = _q_real_to_complex(l1), _q_real_to_complex(l2), _q_real_to_complex(l3)
    C = np.einsum("ij,kl,nm,ikn->jlm", Q1, Q2, Q3.conj(), C)
    if np.abs(C.imag).max() > 1e-12:  # pragma: no cover - a mathematical invariant
        raise RuntimeError(f"3j symbols ({l1}, {l2}, {l3}) did not come out real")
    C = np.ascontiguousarray(C.real)
    C[np.abs(C) < 1e-15] = 0.0
    C /= np.linalg.norm(C)
    C.setflags(write=False)
    return C


def wigner_3j(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    """Real Clebsch–Gordan coefficients ``C[m1, m2, m3]`` of shape ``(2l1+1, 2l2+1, 2l3+1)``.

    Invariant: ``C_{ijk} = D1_{ia} D2_{jb} D3_{kc} C_{abc}`` for every rotation, with unit
    Frobenius norm and e3nn's sign. Zero unless the triangle rule holds (which is checked).
    Cached; a fresh tensor is returned each time (default dtype unless ``dtype`` is given).

    Example:
        >>> C = wigner_3j(1, 1, 0, dtype=torch.float64)
        >>> torch.allclose(C[:, :, 0], torch.eye(3, dtype=torch.float64) / 3**0.5)
        True
    """
    _check_triangle(l1, l2, l3)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return torch.tensor(_wigner_3j_np(l1, l2, l3), dtype=dtype, device=device)


# ----------------------------------------------------------------------------- Wigner D
@functools.lru_cache(maxsize=None)
def _lift_np(l: int) -> np.ndarray:
    """Isometry ``P`` of shape ``(2l+3, (2l+1)*3)`` onto the ``l+1`` part of ``l (x) 1``."""
    C = _wigner_3j_np(l, 1, l + 1)  # (2l+1, 3, 2l+3), norm 1, rows orthogonal with norm 1/(2l+3)
    P = np.sqrt(2 * l + 3) * C.reshape((2 * l + 1) * 3, 2 * l + 3).T
    P.setflags(write=False)
    return P


_LIFT_CACHE: dict = {}


def _lift(l: int, dtype: torch.dtype, device) -> torch.Tensor:
    key = (l, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    P = _LIFT_CACHE.get(key)
    if P is None:
        P = torch.tensor(_lift_np(l), dtype=dtype, device=device)
        _LIFT_CACHE[key] = P
    return P


def wigner_D_from_matrix(l: int, R: torch.Tensor) -> torch.Tensor:
    """Wigner D matrix ``(..., 2l+1, 2l+1)`` of the rotation ``R`` (``(..., 3, 3)``, det = +1).

    Exact recursion ``D^0 = 1``, ``D^1 = R``, ``D^{l+1} = P (D^l (x) R) P^T``; differentiable.
    """
    if isinstance(l, bool) or not isinstance(l, int) or l < 0:
        raise ValueError(f"wigner_D needs an integer l >= 0, got {l!r}")
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected rotation matrices of shape (..., 3, 3), got {tuple(R.shape)}")
    batch = R.shape[:-2]
    if l == 0:
        return torch.ones(*batch, 1, 1, dtype=R.dtype, device=R.device)
    D = R
    for k in range(1, l):
        P = _lift(k, R.dtype, R.device)
        n = 2 * k + 1
        # kron(D, R)[(a, b), (c, d)] = D[a, c] R[b, d]
        K = (D[..., :, None, :, None] * R[..., None, :, None, :]).reshape(*batch, 3 * n, 3 * n)
        D = P @ K @ P.T
    return D


def wigner_D(l: int, alpha, beta, gamma) -> torch.Tensor:
    """Wigner D matrix of ``Ry(alpha) Rx(beta) Ry(gamma)`` in e3nn's real basis."""
    from ._rotation import angles_to_matrix

    return wigner_D_from_matrix(l, angles_to_matrix(alpha, beta, gamma))
