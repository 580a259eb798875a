"""ASE-readable structures (XYZ, extended XYZ, ASE databases, ...) to graphs, with energies and forces.

Energies and forces are converted to eV and eV/Å on load. Most files do not say their unit, so
``energy_unit`` is a required argument whenever a frame carries an energy or forces: it is a
parameter, never a guess (rMD17-derived files come both in eV and in kcal/mol). ASE databases
(``.db`` SQLite or ASE JSON) may say it: schnetpack writes the unit of every property into the
database's metadata (``_property_unit_dict``, and ``_distance_unit`` for positions), and those
units are used (an ``energy_unit`` that disagrees with them raises).

An entry is looked up, in order, in the frame's calculator results, its ``info`` (extended XYZ
comment line), and, for database rows, the row's ``key_value_pairs`` and ``data`` (where
schnetpack stores every property, as ``data={"gap": np.array([0.25]), ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Data

from . import keys as K
from .errors import InvalidInputError, SkipReport
from .units import energy_factor, unit_factor

__all__ = ["from_ase_atoms", "read_structures", "read_xyz", "read_ase_db_metadata"]

# containers that a database row's Atoms carries in ``info`` (``AtomsRow.toatoms(add_additional_information=True)``)
_ROW_INFO = ("key_value_pairs", "data", "unique_id")


def _lookup(atoms: Atoms, key: str, per_atom: bool = False):
    """The entry ``key`` of a frame, or ``None``: calculator results, ``arrays`` (per-atom entries)
    or ``info``, then a database row's ``key_value_pairs`` and ``data``."""
    if atoms.calc is not None and key in atoms.calc.results:
        return atoms.calc.results[key]
    if per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    if key in atoms.info and key not in _ROW_INFO:
        return atoms.info[key]
    for container in ("key_value_pairs", "data"):
        values = atoms.info.get(container)
        if isinstance(values, Mapping) and key in values:
            return values[key]
    return None


def _present_keys(atoms: Atoms) -> str:
    """What a frame holds, by place, for error messages."""
    places = []
    if atoms.calc is not None and atoms.calc.results:
        places.append(f"calculator results {sorted(atoms.calc.results)}")
    info = sorted(k for k in atoms.info if k not in _ROW_INFO)
    if info:
        places.append(f"info {info}")
    for container in ("key_value_pairs", "data"):
        values = atoms.info.get(container)
        if isinstance(values, Mapping) and values:
            places.append(f"row {container} {sorted(values)}")
    arrays = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
    if arrays:
        places.append(f"per-atom arrays {arrays}")
    return "; ".join(places) if places else "no entries at all (only atoms and positions)"


def _missing(atoms: Atoms, key: str, what: str, source: str, record) -> InvalidInputError:
    return InvalidInputError(source, f"no {what} entry {key!r} in this frame; it has: {_present_keys(atoms)}", record)


def _frame_energy(atoms: Atoms, key: str, source: str = "<ase Atoms>", record=None) -> float | None:
    value = _lookup(atoms, key)
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidInputError(source, f"entry {key!r} is not a number: {value!r}", record) from None
    if array.size != 1:
        raise InvalidInputError(source, f"entry {key!r} holds {array.size} values, expected one number per frame", record)
    return float(array[0])


def _frame_forces(atoms: Atoms, key: str, source: str = "<ase Atoms>", record=None) -> np.ndarray | None:
    value = _lookup(atoms, key, per_atom=True)
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(source, f"entry {key!r} is not an array of numbers", record) from None


def _check_values(atoms: Atoms, energy, forces, source: str, record) -> None:
    if len(atoms) == 0:
        raise InvalidInputError(source, "structure has no atoms", record)
    if (atoms.numbers <= 0).any():
        raise InvalidInputError(source, f"unknown element (atomic number 0) at atoms {np.flatnonzero(atoms.numbers <= 0).tolist()}", record)
    bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if bad.size:
        raise InvalidInputError(source, f"non-finite (NaN or infinite) coordinates for atoms {bad.tolist()}", record)
    if energy is not None and not np.isfinite(energy):
        raise InvalidInputError(source, f"non-finite energy {energy}", record)
    if forces is not None:
        if forces.shape != (len(atoms), 3):
            raise InvalidInputError(source, f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)", record)
        if not np.isfinite(forces).all():
            raise InvalidInputError(source, "non-finite (NaN or infinite) forces", record)


def _factor(
    key: str, quantity: str, units: Mapping[str, str] | None, energy_unit: str | None, source: str, record
) -> float | None:
    """Conversion factor of entry ``key``: its unit in ``units`` (a database's metadata) if listed,
    checked against ``energy_unit`` when both are given (for forces, the energy part of the unit);
    else from ``energy_unit`` (forces: per Å); else ``None``."""
    if units is None or key not in units:
        if energy_unit is None:
            return None
        return energy_factor(energy_unit) if quantity == "energy" else unit_factor(f"{energy_unit}/Ang", "force")
    unit = units[key]
    try:
        factor = unit_factor(unit, quantity)
        energy_part = factor if quantity == "energy" else energy_factor(str(unit).rpartition("/")[0])
    except ValueError as error:
        raise InvalidInputError(source, f"unit {unit!r} of {key!r} in the metadata: {error}", record) from None
    if energy_unit is not None and not np.isclose(energy_part, energy_factor(energy_unit), rtol=1e-9, atol=0.0):
        raise InvalidInputError(
            source,
            f"energy_unit={energy_unit!r} contradicts the unit {unit!r} that the metadata gives for {key!r}; "
            "leave energy_unit out to use the metadata's",
            record,
        )
    return factor


def from_ase_atoms(
    atoms: Atoms,
    *,
    energy_unit: str | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    require_energy: bool = False,
    require_forces: bool = False,
    units: Mapping[str, str] | None = None,
    source: str | Path = "<ase Atoms>",
    record: str | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Graph of an ASE ``Atoms`` object.

    Args:
        atoms: the structure; energy and forces are read from its calculator results, ``info`` /
            ``arrays``, or (a database row's Atoms) ``info["key_value_pairs"]`` / ``info["data"]``.
        energy_unit: unit of the stored energy (forces: that unit per Å), e.g. ``"eV"`` or
            ``"kcal/mol"``; required when the frame has an energy or forces whose unit
            ``units`` does not give.
        energy_key: name of the energy entry.
        forces_key: name of the forces entry.
        require_energy, require_forces: raise when the entry is absent (naming the entries the
            frame has) instead of returning a graph without it.
        units: unit of each entry by name (a database's ``_property_unit_dict``), e.g.
            ``{"energy": "eV", "forces": "eV/Ang", "gap": "Hartree"}``.
        source: file, named in errors.
        record: frame, named in errors.
        dtype: float dtype of ``pos`` and ``forces`` (energies are always float64).

    Returns:
        ``Data`` with ``z``, ``pos``, ``name`` and, when present, ``energy`` (eV, float64),
        ``forces`` (eV/Å), and ``cell`` / ``pbc`` when the structure is periodic along at
        least one cell vector.

    Raises:
        InvalidInputError: no atoms, unknown elements, non-finite values, forces of the wrong
            shape, an energy without a unit, or a required entry that is absent.
    """
    source = str(source)
    energy = _frame_energy(atoms, energy_key, source, record)
    forces = _frame_forces(atoms, forces_key, source, record)
    if energy is None and require_energy:
        raise _missing(atoms, energy_key, "energy", source, record)
    if forces is None and require_forces:
        raise _missing(atoms, forces_key, "forces", source, record)
    _check_values(atoms, energy, forces, source, record)
    data = Data(num_nodes=len(atoms))
    data[K.ATOMIC_NUMBER] = torch.as_tensor(atoms.numbers, dtype=torch.long)
    data[K.POSITION] = torch.as_tensor(atoms.positions, dtype=torch.float64).to(dtype)
    data[K.NAME] = f"{Path(source).stem}:{record}" if record is not None else Path(source).stem
    if atoms.pbc.any():
        data[K.CELL] = torch.as_tensor(np.asarray(atoms.cell), dtype=torch.float64).to(dtype).unsqueeze(0)
        data[K.PBC] = torch.as_tensor(atoms.pbc, dtype=torch.bool).unsqueeze(0)
    if energy is not None:
        factor = _factor(energy_key, "energy", units, energy_unit, source, record)
        if factor is None:
            raise InvalidInputError(
                source, f"frame has an energy ({energy_key!r}) but energy_unit was not given (e.g. 'eV', 'kcal/mol')", record
            )
        data[K.ENERGY] = torch.tensor([energy * factor], dtype=torch.float64)
    if forces is not None:
        factor = _factor(forces_key, "force", units, energy_unit, source, record)
        if factor is None:
            raise InvalidInputError(
                source, f"frame has forces ({forces_key!r}) but energy_unit was not given (e.g. 'eV', 'kcal/mol')", record
            )
        data[K.FORCES] = torch.as_tensor(forces * factor, dtype=torch.float64).to(dtype)
    return data


def _is_ase_db(path: Path, format: str | None) -> bool:
    if format is not None:
        return format in ("db", "json")
    if path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
        return True
    if path.suffix.lower() == ".json":
        try:
            from ase.io.formats import filetype

            return filetype(str(path), guess=False) == "json"
        except Exception:  # not an ASE JSON database: leave it to ase.io.read to judge
            return False
    return False


def read_ase_db_metadata(path: str | Path) -> dict:
    """The metadata of an ASE database (``{}`` when it has none), e.g. schnetpack's
    ``_property_unit_dict``, ``_distance_unit`` and ``atomrefs``."""
    import ase.db

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    try:
        with ase.db.connect(str(path), serial=True) as db:
            return dict(db.metadata)
    except Exception as error:  # sqlite3 / json errors of a file that is not an ASE database
        raise InvalidInputError(path, f"not a readable ASE database: {type(error).__name__}: {error}") from None


def _read_db_frames(path: Path, index: str) -> tuple[list[tuple[str, Atoms]], dict]:
    """``(record, Atoms)`` of the selected rows of an ASE database, positions and cells in Å, and
    its metadata. A row's ``key_value_pairs`` and ``data`` are in the Atoms' ``info``."""
    import ase.db
    from ase.io.formats import string2index

    if path.stat().st_size == 0:
        raise InvalidInputError(path, "file is empty")
    metadata = read_ase_db_metadata(path)
    distance_unit = metadata.get("_distance_unit", "Ang")
    try:
        length = unit_factor(distance_unit, "length")
    except ValueError as error:
        raise InvalidInputError(path, f"metadata _distance_unit: {error}") from None
    try:
        with ase.db.connect(str(path), serial=True) as db:
            selection = index
            if isinstance(index, str):
                try:
                    selection = string2index(index)
                except ValueError:  # not a slice: kept as a query string
                    selection = index
            if isinstance(selection, str):  # an ASE database query, e.g. "natoms<10"
                rows = list(db.select(selection))
            else:
                if isinstance(selection, int):
                    selection = slice(selection, selection + 1 or None)
                ids = range(db.count())[selection]
                rows = list(db.select())
                rows = [rows[i] for i in ids]
    except InvalidInputError:
        raise
    except Exception as error:
        raise InvalidInputError(path, f"ASE could not read the database: {type(error).__name__}: {error}") from None
    if not rows:
        raise InvalidInputError(path, f"no row selected (index {index!r})" if index != ":" else "the database has no rows")
    frames = []
    for row in rows:
        atoms = row.toatoms(add_additional_information=True)
        if length != 1.0:
            atoms.positions = atoms.positions * length
            atoms.cell = np.asarray(atoms.cell) * length
        frames.append((f"row {row.id}", atoms))
    return frames, metadata


def _read_frames(path: Path, index: str, format: str | None) -> list[Atoms]:
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InvalidInputError(path, "file is empty")
    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except Exception as error:  # ASE raises many types (ValueError, KeyError, IndexError, XYZError...)
        raise InvalidInputError(path, f"ASE could not read the file: {type(error).__name__}: {error}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InvalidInputError(path, "no structure in the file")
    return frames


def read_structures(
    path: str | Path,
    *,
    index: str = ":",
    format: str | None = None,
    energy_unit: str | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    require_energy: bool = False,
    require_forces: bool = False,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Data]:
    """Graphs of every frame of an ASE-readable file or ASE database (see :func:`from_ase_atoms`).

    Args:
        path: the file: any format ``ase.io.read`` knows, or an ASE database (``.db`` SQLite,
            ASE JSON), read row by row with each row's ``key_value_pairs`` and ``data`` and the
            units of the database's metadata (``_property_unit_dict``, ``_distance_unit``).
        index: ASE frame selection (``":"``: all frames; for a database also a query string).
        format: ASE format name, ``None`` to infer it from the file name.
        require_energy, require_forces: every frame must have the entry (see
            :func:`from_ase_atoms`). Without them an entry may be absent from every frame, but
            not from some frames only: a file where some frames have ``energy_key`` and others do
            not raises, naming them (or skips them with ``skip_invalid``).
        skip_invalid: skip invalid frames and add them to ``report`` instead of raising. A
            file that cannot be parsed at all always raises.
        report: collects skipped frames.

    Raises:
        InvalidInputError: see :func:`from_ase_atoms`; also for missing, empty or unparsable
            files.
    """
    path = Path(path)
    report = SkipReport() if report is None else report
    if _is_ase_db(path, format):
        if not path.is_file():
            raise InvalidInputError(path, "file not found")
        frames, metadata = _read_db_frames(path, index)
        units = metadata.get("_property_unit_dict")
        units = dict(units) if isinstance(units, Mapping) else None
    else:
        frames = list(enumerate(_read_frames(path, index, format)))
        units = None
    graphs, records = [], []
    for record, atoms in frames:
        data = report.guard(
            lambda: from_ase_atoms(
                atoms,
                energy_unit=energy_unit,
                energy_key=energy_key,
                forces_key=forces_key,
                require_energy=require_energy,
                require_forces=require_forces,
                units=units,
                source=path,
                record=record,
                dtype=dtype,
            ),
            skip_invalid,
        )
        if data is not None:
            graphs.append(data)
            records.append((record, atoms))
    return _drop_partial(graphs, records, energy_key, forces_key, path, report, skip_invalid)


def _drop_partial(graphs, records, energy_key, forces_key, path, report, skip_invalid) -> list[Data]:
    """Frames lacking an entry that other frames of the same file have: raise (or skip and report)."""
    for key, name, what in ((K.ENERGY, energy_key, "energy"), (K.FORCES, forces_key, "forces")):
        has = [key in g for g in graphs]
        if any(has) and not all(has):
            lacking = [i for i, h in enumerate(has) if not h]
            for i in lacking:
                record, atoms = records[i]
                reason = (
                    f"no {what} entry {name!r} in this frame, while {sum(has)} other frames of the file have one "
                    f"(it has: {_present_keys(atoms)})"
                )
                error = InvalidInputError(path, reason, record)
                if not skip_invalid:
                    raise error
                report.add(error)
            keep = set(range(len(graphs))) - set(lacking)
            graphs = [g for i, g in enumerate(graphs) if i in keep]
            records = [r for i, r in enumerate(records) if i in keep]
    return graphs


def read_xyz(path: str | Path, **kwargs) -> list[Data]:
    """Graphs of every frame of an XYZ or extended-XYZ file; see :func:`read_structures`."""
    return read_structures(path, format="extxyz", **kwargs)
