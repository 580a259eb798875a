"""Unit conversion factors to eqgeo's units (Å, eV, eV/Å) and unit-name parsing.

Values are CODATA 2018 (1 Hartree = 27.211386246 eV, 1 Bohr = 0.529177210903 Å, the exact 2019
SI values of e, N_A and c), as PyG's QM9 uses for Hartree. ASE's :mod:`ase.units` default to
CODATA 2014 (ASE 3.29: Hartree 27.211386024 eV, Bohr 0.52917721056 Å), so a value converted
with ASE's constants differs from eqgeo's by about 1e-8 relative (Hartree 8e-9, kcal/mol 9e-9,
debye 8e-9, Bohr 6e-10), far below the accuracy of the data.
"""

from __future__ import annotations

__all__ = [
    "HARTREE_TO_EV",
    "KCAL_PER_MOL_TO_EV",
    "KJ_PER_MOL_TO_EV",
    "BOHR_TO_ANGSTROM",
    "DEBYE_PER_E_ANGSTROM",
    "energy_factor",
    "unit_factor",
    "QUANTITIES",
]

#: 1 Hartree in eV.
HARTREE_TO_EV = 27.211386246
#: 1 kcal/mol in eV.
KCAL_PER_MOL_TO_EV = 0.0433641043
#: 1 kJ/mol in eV.
KJ_PER_MOL_TO_EV = KCAL_PER_MOL_TO_EV / 4.184
#: 1 Bohr in Å.
BOHR_TO_ANGSTROM = 0.529177210903
#: A dipole of 1 e·Å in debye (1 D = 1e-21 C m^2 / s / c).
DEBYE_PER_E_ANGSTROM = 4.803204712570264

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


def _canonical(unit: str) -> str:
    """Lower case, ``**`` as ``^``, one spelling per length unit, repeated factors as powers
    (``"a0 a0 a0"`` -> ``"a0^3"``), no spaces."""
    t = unit.strip().lower().replace("**", "^").replace("å", "ang").replace("angstrom", "ang").replace("bohr", "a0")
    tokens = t.split()
    if len(tokens) > 1 and len(set(tokens)) == 1:
        t = f"{tokens[0]}^{len(tokens)}"
    return t.replace(" ", "").replace("*", "")


_LENGTH_UNITS = {"ang": 1.0, "a": 1.0, "a0": BOHR_TO_ANGSTROM, "nm": 10.0}

#: Units each quantity is converted to (eqgeo's units; PyG's QM9 units for the QM9 targets), and the
#: spellings :func:`unit_factor` accepts for it (after :func:`_canonical`), with their factors.
QUANTITIES = {
    "energy": ("eV", _ENERGY_UNITS),
    "length": ("Å", _LENGTH_UNITS),
    "dipole": ("D", {"d": 1.0, "debye": 1.0, "eang": DEBYE_PER_E_ANGSTROM, "ea0": DEBYE_PER_E_ANGSTROM * BOHR_TO_ANGSTROM}),
    "polarizability": ("a0^3", {"a0^3": 1.0, "ang^3": BOHR_TO_ANGSTROM**-3, "a^3": BOHR_TO_ANGSTROM**-3}),
    "spatial_extent": ("a0^2", {"a0^2": 1.0, "ang^2": BOHR_TO_ANGSTROM**-2, "a^2": BOHR_TO_ANGSTROM**-2}),
    "frequency": ("GHz", {"ghz": 1.0, "mhz": 1e-3, "cm^-1": 29.9792458, "1/cm": 29.9792458}),
    "heat_capacity": (
        "cal/(mol K)",
        {"cal/mol/k": 1.0, "cal/(molk)": 1.0, "cal/molk": 1.0, "kcal/mol/k": 1e3, "j/mol/k": 1 / 4.184, "j/(molk)": 1 / 4.184},
    ),
}


def unit_factor(unit: str, quantity: str) -> float:
    """Factor that converts a ``quantity`` given in ``unit`` to eqgeo's unit for it.

    Quantities (see :data:`QUANTITIES`): ``"energy"`` (to eV), ``"force"`` (``<energy>/<length>``,
    to eV/Å), ``"length"`` (to Å), ``"dipole"`` (to D), ``"polarizability"`` (to a0^3),
    ``"spatial_extent"`` (to a0^2), ``"frequency"`` (to GHz), ``"heat_capacity"`` (to cal/(mol K)).
    Spellings are those of ASE databases and schnetpack (``"Ha"``, ``"Ang"``, ``"Bohr"``,
    ``"a0 a0 a0"``, ``"Debye"``, ``"cal/mol/K"``, ``"eV/Ang"``, ...), case-insensitive.

    Example:
        >>> round(unit_factor("Hartree/Bohr", "force"), 4)
        51.4221
        >>> unit_factor("a0 a0 a0", "polarizability")
        1.0
    """
    if not isinstance(unit, str):
        raise ValueError(f"unit must be a string, got {unit!r}")
    if quantity == "force":
        energy, sep, length = _canonical(unit).rpartition("/")
        if not sep or energy not in _ENERGY_UNITS or length not in _LENGTH_UNITS:
            raise ValueError(
                f"unknown force unit {unit!r}; expected <energy>/<length> with energy one of {sorted(_ENERGY_UNITS)} "
                f"and length one of {sorted(_LENGTH_UNITS)} (e.g. 'eV/Ang', 'Hartree/Bohr', 'kcal/mol/Ang')"
            )
        return _ENERGY_UNITS[energy] / _LENGTH_UNITS[length]
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; expected 'force' or one of {sorted(QUANTITIES)}")
    target, table = QUANTITIES[quantity]
    key = _canonical(unit)
    if key not in table:
        raise ValueError(f"unknown {quantity} unit {unit!r} (to convert to {target}); expected one of {sorted(table)}")
    return table[key]
