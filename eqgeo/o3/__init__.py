"""Representations of O(3): irreps, rotations, Wigner D matrices, spherical harmonics, 3j symbols.

Conventions are e3nn's (same irreps strings, bases, signs and normalisations), so features
and weights interoperate with e3nn; eqgeo never imports e3nn.
"""

from ._irreps import Irrep, Irreps, MulIr
from ._rotation import (
    angles_to_matrix,
    angles_to_xyz,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    compose_angles,
    identity_angles,
    inverse_angles,
    matrix_to_angles,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_x,
    matrix_y,
    matrix_z,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rand_angles,
    rand_axis_angle,
    rand_matrix,
    rand_quaternion,
    xyz_to_angles,
)
from ._spherical_harmonics import SphericalHarmonics, spherical_harmonics
from ._wigner import change_basis_real_to_complex, clebsch_gordan, wigner_3j, wigner_D, wigner_D_from_matrix

__all__ = [
    "Irrep",
    "Irreps",
    "MulIr",
    "SphericalHarmonics",
    "spherical_harmonics",
    "wigner_3j",
    "wigner_D",
    "wigner_D_from_matrix",
    "clebsch_gordan",
    "change_basis_real_to_complex",
    "rand_matrix",
    "rand_angles",
    "rand_axis_angle",
    "rand_quaternion",
    "identity_angles",
    "angles_to_matrix",
    "matrix_to_angles",
    "angles_to_xyz",
    "xyz_to_angles",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "matrix_x",
    "matrix_y",
    "matrix_z",
    "compose_angles",
    "inverse_angles",
]
