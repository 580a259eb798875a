"""ASE-readable structures (XYZ, extended XYZ, ASE databases, ...) to graphs, with energies and forces.

Energies and forces are converted to eV and eV/Å on load. Most files do not say their unit, so
``energy_unit`` is a required argument whenever a frame carries an energy or forces: it is a
parameter, never a guess (rMD17-derived files come both in eV and in kcal/mol). ASE databases
(``.db`` SQLite or ASE JSON) may say it:

* ASE's own ``energy`` and ``forces`` columns (a row's calculator results) are in eV and eV/Å,
  ASE's convention for its databases;
* schnetpack writes every property into the row's ``data`` and its unit into the database's
  metadata (``_property_unit_dict``, and ``_distance_unit`` for positions); those units apply
  to the row's ``data`` and ``key_value_pairs``, never to ASE's columns.

A unit the file states is used (an ``energy_unit`` that disagrees with it raises). Forces whose
unit is not stated are in ``energy_unit`` per the file's length unit (a database's
``_distance_unit``, else Å).

An entry is looked up, in order, in the frame's calculator results, its ``info`` (extended XYZ
comment line), and, for database rows, the row's ``key_value_pairs`` and ``data`` (where
schnetpack stores every property, as ``data={"gap": np.array([0.25]), ...}``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Data

from . import keys as K
from .errors import InvalidInputError, SkipReport
from .units import energy_factor, unit_factor

__all__ = [
    "from_ase_atoms",
    "read_structures",
    "read_xyz",
    "lookup_entry",
    "ENTRY_PLACES",
    "is_ase_db",
    "ASEDatabase",
    "read_ase_db_metadata",
]

# containers that a database row's Atoms carries in ``info`` (``AtomsRow.toatoms(add_additional_information=True)``)
_ROW_INFO = ("key_value_pairs", "data", "unique_id")
#: Places :func:`lookup_entry` searches, in its default order (``"arrays"``: per-atom entries).
ENTRY_PLACES = ("calculator", "arrays", "info", "key_value_pairs", "data")
# places whose units a database's metadata (``_property_unit_dict``) gives
_METADATA_PLACES = ("key_value_pairs", "data")
# units of ASE's own database columns (a row's calculator results), by ASE's convention
_ASE_COLUMN_UNITS = {"energy": "eV", "force": "eV/Ang"}


def lookup_entry(atoms: Atoms, key: str, places: tuple[str, ...] = ENTRY_PLACES) -> tuple[object, str] | None:
    """The entry ``key`` of a frame and the place it was found in, or ``None``.

    Places, searched in the order given (default :data:`ENTRY_PLACES`): ``"calculator"``
    (``atoms.calc.results``; for a database row, ASE's own columns), ``"arrays"`` (per-atom
    arrays), ``"info"``, and a database row's ``"key_value_pairs"`` and ``"data"`` (in
    ``atoms.info``, see :class:`ASEDatabase`).
    """
    for place in places:
        if place == "calculator":
            if atoms.calc is not None and key in atoms.calc.results:
                return atoms.calc.results[key], place
        elif place == "arrays":
            if key in atoms.arrays:
                return atoms.arrays[key], place
        elif place == "info":
            if key in atoms.info and key not in _ROW_INFO:
                return atoms.info[key], place
        elif place in _METADATA_PLACES:
            values = atoms.info.get(place)
            if isinstance(values, Mapping) and key in values:
                return values[key], place
        else:
            raise ValueError(f"unknown place {place!r}; expected some of {ENTRY_PLACES}")
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


def _frame_energy(atoms: Atoms, key: str, source: str = "<ase Atoms>", record=None) -> tuple[float, str] | None:
    found = lookup_entry(atoms, key, tuple(p for p in ENTRY_PLACES if p != "arrays"))
    if found is None:
        return None
    value, place = found
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidInputError(source, f"entry {key!r} is not a number: {value!r}", record) from None
    if array.size != 1:
        raise InvalidInputError(source, f"entry {key!r} holds {array.size} values, expected one number per frame", record)
    return float(array[0]), place


def _frame_forces(atoms: Atoms, key: str, source: str = "<ase Atoms>", record=None) -> tuple[np.ndarray, str] | None:
    found = lookup_entry(atoms, key)
    if found is None:
        return None
    value, place = found
    try:
        return np.asarray(value, dtype=np.float64), place
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
    key: str,
    quantity: str,
    place: str,
    *,
    units: Mapping[str, str] | None,
    db_row: bool,
    energy_unit: str | None,
    distance_unit: str,
    source: str,
    record,
) -> float | None:
    """Conversion factor of the energy or forces entry ``key`` found in ``place``.

    The unit the file states: for a database row, ASE's convention for its own columns
    (calculator results: eV, eV/Å), or the metadata ``units`` for ``key_value_pairs`` / ``data``
    entries they list; checked against ``energy_unit`` when both are given (for forces, the
    energy part of the unit). Else ``energy_unit`` (forces: per ``distance_unit``); else ``None``.
    """
    if db_row and place == "calculator":
        unit, stated_by = _ASE_COLUMN_UNITS[quantity], "ASE's convention for its database columns"
    elif units is not None and place in _METADATA_PLACES and key in units:
        unit, stated_by = units[key], "the metadata"
    else:
        if energy_unit is None:
            return None
        return energy_factor(energy_unit) if quantity == "energy" else unit_factor(f"{energy_unit}/{distance_unit}", "force")
    try:
        factor = unit_factor(unit, quantity)
        energy_part = factor if quantity == "energy" else energy_factor(str(unit).rpartition("/")[0])
    except ValueError as error:
        raise InvalidInputError(source, f"unit {unit!r} of {key!r} in {stated_by}: {error}", record) from None
    if energy_unit is not None and not np.isclose(energy_part, energy_factor(energy_unit), rtol=1e-9, atol=0.0):
        raise InvalidInputError(
            source,
            f"energy_unit={energy_unit!r} contradicts the unit {unit!r} that {stated_by} gives for {key!r}; "
            "leave energy_unit out to use it",
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
    distance_unit: str = "Ang",
    db_row: bool = False,
    source: str | Path = "<ase Atoms>",
    record: str | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Graph of an ASE ``Atoms`` object.

    Args:
        atoms: the structure; energy and forces are read from its calculator results, ``info`` /
            ``arrays``, or (a database row's Atoms) ``info["key_value_pairs"]`` / ``info["data"]``.
        energy_unit: unit of the stored energy (forces: that unit per ``distance_unit``), e.g.
            ``"eV"`` or ``"kcal/mol"``; required when the frame has an energy or forces whose
            unit the file does not state (see ``units`` and ``db_row``).
        energy_key: name of the energy entry.
        forces_key: name of the forces entry.
        require_energy, require_forces: raise when the entry is absent (naming the entries the
            frame has) instead of returning a graph without it.
        units: unit of each entry of a database row's ``key_value_pairs`` / ``data`` by name
            (the database's ``_property_unit_dict``), e.g. ``{"forces": "Ha/Bohr", "gap":
            "Hartree"}``; not applied to calculator results (ASE's columns).
        distance_unit: length unit of the file the frame was read from (its positions already
            converted to Å, as :class:`ASEDatabase` does): forces whose unit is not stated are in
            ``energy_unit`` per this unit.
        db_row: ``atoms`` is a database row (:meth:`ASEDatabase.frames`): its calculator
            results are ASE's ``energy`` / ``forces`` columns, in eV and eV/Å by ASE's convention.
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
    energy, energy_place = _frame_energy(atoms, energy_key, source, record) or (None, None)
    forces, forces_place = _frame_forces(atoms, forces_key, source, record) or (None, None)
    stated = {
        "units": units, "db_row": db_row, "energy_unit": energy_unit, "distance_unit": distance_unit,
        "source": source, "record": record,
    }  # fmt: skip
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
        factor = _factor(energy_key, "energy", energy_place, **stated)
        if factor is None:
            raise InvalidInputError(
                source, f"frame has an energy ({energy_key!r}) but energy_unit was not given (e.g. 'eV', 'kcal/mol')", record
            )
        data[K.ENERGY] = torch.tensor([energy * factor], dtype=torch.float64)
    if forces is not None:
        factor = _factor(forces_key, "force", forces_place, **stated)
        if factor is None:
            raise InvalidInputError(
                source, f"frame has forces ({forces_key!r}) but energy_unit was not given (e.g. 'eV', 'kcal/mol')", record
            )
        data[K.FORCES] = torch.as_tensor(forces * factor, dtype=torch.float64).to(dtype)
    return data


_SQLITE_HEADER = b"SQLite format 3\x00"


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


def is_ase_db(path: str | Path, format: str | None = None) -> bool:
    """Whether :func:`read_structures` reads ``path`` as an ASE database: ``format`` ``"db"`` or
    ``"json"``, else a ``.db`` / ``.sqlite`` / ``.sqlite3`` file or an ASE JSON database."""
    path = Path(path)
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


class ASEDatabase:
    """An ASE database file (SQLite, whatever its suffix, or ASE JSON), read only.

    Opening it checks that it is a readable ASE database and reads its metadata (e.g.
    schnetpack's ``_property_unit_dict``, ``_distance_unit`` and ``atomrefs``) and number of rows;
    :meth:`frames` gives the rows one at a time as ``Atoms`` in Å.

    Attributes:
        path: the file.
        metadata: the database's metadata (``{}`` when it has none).
        count: its number of rows.

    Raises:
        InvalidInputError: a missing or empty file, or one that is not a readable ASE database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInputError(self.path, "file not found")
        if self.path.stat().st_size == 0:
            raise InvalidInputError(self.path, "file is empty")
        try:
            with self._connect() as db:
                self.metadata = dict(db.metadata)
                self.count = db.count()
        except Exception as error:  # sqlite3 / json errors of a file that is not an ASE database
            raise InvalidInputError(self.path, f"not a readable ASE database: {type(error).__name__}: {error}") from None

    def _connect(self):
        import ase.db

        sqlite = _is_sqlite(self.path) or self.path.suffix.lower() in (".db", ".sqlite", ".sqlite3")
        kind = "db" if sqlite else "json"
        return ase.db.connect(str(self.path), type=kind, serial=True)

    @property
    def units(self) -> dict[str, str] | None:
        """The metadata's ``_property_unit_dict`` (unit of each row ``data`` entry), or ``None``."""
        units = self.metadata.get("_property_unit_dict")
        return dict(units) if isinstance(units, Mapping) else None

    @property
    def distance_unit(self) -> str:
        """The unit of the stored positions and cells: the metadata's ``_distance_unit``, else Å."""
        return self.metadata.get("_distance_unit", "Ang")

    def length_factor(self) -> float:
        """Factor that converts :attr:`distance_unit` to Å."""
        try:
            return unit_factor(self.distance_unit, "length")
        except ValueError as error:
            raise InvalidInputError(self.path, f"metadata _distance_unit: {error}") from None

    def frames(self, index: str | int | slice = ":") -> Iterator[tuple[int, Atoms]]:
        """The selected rows as ``(row id, Atoms)``, read one at a time, positions and cells
        converted to Å, the row's ``key_value_pairs`` and ``data`` in the Atoms' ``info`` and
        ASE's own columns (energy, forces, ...) as its calculator results.

        Args:
            index: a slice of the rows (``":"``, ``"10:20"``, ``3``) or an ASE database query
                string (``"natoms<10"``), as ``ase.io.read`` takes it.

        Raises:
            InvalidInputError: an unknown ``_distance_unit``, a query or row ASE cannot read,
                or no row selected.
        """
        length = self.length_factor()
        found = False
        try:
            with self._connect() as db:
                for row in self._select(db, index):
                    atoms = row.toatoms(add_additional_information=True)
                    if length != 1.0:
                        atoms.positions = atoms.positions * length
                        atoms.cell = np.asarray(atoms.cell) * length
                    found = True
                    yield row.id, atoms
        except InvalidInputError:
            raise
        except Exception as error:
            raise InvalidInputError(self.path, f"ASE could not read the database: {type(error).__name__}: {error}") from None
        if not found:
            raise InvalidInputError(self.path, f"no row selected (index {index!r})" if index != ":" else "the database has no rows")

    def _select(self, db, index):
        from ase.io.formats import string2index

        selection = index
        if isinstance(index, str):
            try:
                selection = string2index(index)
            except ValueError:  # not a slice: kept as a query string
                selection = index
        if isinstance(selection, str):  # an ASE database query, e.g. "natoms<10"
            return db.select(selection)
        if isinstance(selection, int):
            selection = slice(selection, selection + 1 or None)
        ids = range(self.count)[selection]
        if ids.step > 0:  # streamed
            return itertools.islice(db.select(), ids.start, ids.stop, ids.step)
        rows = list(db.select())
        return (rows[i] for i in ids)


def read_ase_db_metadata(path: str | Path) -> dict:
    """The metadata of an ASE database (``{}`` when it has none), e.g. schnetpack's
    ``_property_unit_dict``, ``_distance_unit`` and ``atomrefs``; see :class:`ASEDatabase`."""
    return ASEDatabase(path).metadata


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
    if is_ase_db(path, format):
        database = ASEDatabase(path)
        frames = [(f"row {row_id}", atoms) for row_id, atoms in database.frames(index)]
        units, distance_unit, db_row = database.units, database.distance_unit, True
    else:
        frames = list(enumerate(_read_frames(path, index, format)))
        units, distance_unit, db_row = None, "Ang", False
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
                distance_unit=distance_unit,
                db_row=db_row,
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
