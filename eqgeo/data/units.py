"""Unit conversion factors to eqgeo's units (Å, eV, eV/Å) and unit-name parsing.

Values are CODATA 2018, as PyG's QM9 and ASE use them.
"""

from __future__ import annotations

__all__ = [
    "HARTREE_TO_EV",
    "KCAL_PER_MOL_TO_EV",
    "KJ_PER_MOL_TO_EV",
    "BOHR_TO_ANGSTROM",
    "energy_factor",
]

#: 1 Hartree in eV.
HARTREE_TO_EV = 27.211386246
#: 1 kcal/mol in eV.
KCAL_PER_MOL_TO_EV = 0.0433641043
#: 1 kJ/mol in eV.
KJ_PER_MOL_TO_EV = KCAL_PER_MOL_TO_EV / 4.184
#: 1 Bohr in Å.
BOHR_TO_ANGSTROM = 0.529177210903

_ENERGY_UNITS = {
    "ev": 1.0,
    "mev": 1e-3,
    "hartree": HARTREE_TO_EV,
    "ha": HARTREE_TO_EV,
    "kcal/mol": KCAL_PER_MOL_TO_EV,
    "kj/mol": KJ_PER_MOL_TO_EV,
}


def energy_factor(unit: str) -> float:
    """Factor that converts an energy in ``unit`` to eV (forces in ``unit``/Å to eV/Å).

    Args:
        unit: one of ``"eV"``, ``"meV"``, ``"Hartree"`` (``"Ha"``), ``"kcal/mol"``,
            ``"kJ/mol"`` (case-insensitive).

    Example:
        >>> round(energy_factor("kcal/mol"), 6)
        0.043364
    """
    try:
        return _ENERGY_UNITS[unit.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown energy unit {unit!r}; expected one of {sorted(_ENERGY_UNITS)}") from None
