"""ASE databases in schnetpack's layout, written for tests (one writer for every test that needs one).

schnetpack (``schnetpack.data.ASEAtomsData``) writes one row per structure with every property
in the row's ``data`` as an array (a 1-element array for a scalar, ``(n_atoms, 3)`` for forces),
and the units in the database's metadata: ``_property_unit_dict`` (unit of each property),
``_distance_unit`` (of the positions) and, optionally, ``atomrefs`` (``{property: [value per
atomic number 0..99]}`` in the property's unit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from ase import Atoms
from ase.db import connect

__all__ = ["write_schnetpack_db"]


def write_schnetpack_db(
    path: str | Path,
    rows: Iterable[tuple],
    units: Mapping[str, str] | None,
    *,
    distance_unit: str | None = "Ang",
    atomrefs: Mapping[str, list[float]] | None = None,
) -> Path:
    """Write ``rows`` to a new ASE SQLite database at ``path`` (whatever its suffix), laid out as schnetpack writes it.

    Args:
        rows: ``(atoms, data)`` or ``(atoms, data, key_value_pairs)`` per row; ``atoms``
            positions are stored as given (in ``distance_unit``), ``data`` is the row's data.
        units: the metadata's ``_property_unit_dict`` (left out when ``None``).
        distance_unit: the metadata's ``_distance_unit`` (left out when ``None``).
        atomrefs: the metadata's ``atomrefs`` (left out when ``None``).

    Returns:
        ``path``.
    """
    path = Path(path)
    with connect(str(path), type="db") as db:
        for atoms, data, *key_value_pairs in rows:
            assert isinstance(atoms, Atoms)
            db.write(atoms, data=dict(data), **(dict(key_value_pairs[0]) if key_value_pairs else {}))
    metadata = {}
    if units is not None:
        metadata["_property_unit_dict"] = dict(units)
    if distance_unit is not None:
        metadata["_distance_unit"] = distance_unit
    if atomrefs is not None:
        metadata["atomrefs"] = {name: list(values) for name, values in atomrefs.items()}
    connect(str(path), type="db").metadata = metadata
    return path
