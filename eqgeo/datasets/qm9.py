"""QM9: 130,831 small organic molecules with 19 DFT targets in PyG's units, read offline.

Sources, in order of preference when ``source=None``:

1. the CSV files of the ``qm9pack==1.0.3`` wheel (``pip install eqgeo[qm9]``), read directly
   from the installed package's ``data`` folder (its Python module is not imported);
2. otherwise an error saying how to get the data.

``source=<folder>`` reads either the standard raw files (``gdb9.sdf`` + ``gdb9.sdf.csv``, or any
``<name>.sdf`` + ``<name>.sdf.csv`` pair; an ``uncharacterized.txt`` next to them excludes the
listed molecules as PyG does) or a folder of qm9pack-style CSV files (e.g. a prefix of one).
``source=<file>`` reads one qm9pack-style CSV file, a ``<name>.sdf`` with its ``<name>.sdf.csv``,
or an ASE database (``.db``) in schnetpack's QM9 layout:

* one row per molecule, positions in ``metadata["_distance_unit"]`` (Å when absent), every
  property in the row's ``data`` as a 1-element array, under schnetpack's names
  (``schnetpack.datasets.QM9``): ``rotational_constant_A/B/C``, ``dipole_moment``,
  ``isotropic_polarizability``, ``homo``, ``lumo``, ``gap``, ``electronic_spatial_extent``,
  ``zpve``, ``energy_U0``, ``energy_U``, ``enthalpy_H``, ``free_energy``, ``heat_capacity``
  (the short names ``A``, ``mu``, ``alpha``, ``r2``, ``U0``, ``U``, ``H``, ``G``, ``Cv`` are
  accepted too, see :data:`ASE_DB_NAMES`);
* the unit of every property in ``metadata["_property_unit_dict"]`` (required: schnetpack
  writes ``GHz``, ``Debye``, ``a0 a0 a0``, ``Ha``, ``a0 a0``, ``cal/mol/K``); values are
  converted to the units below, as for the other sources;
* isolated-atom energies in ``metadata["atomrefs"]`` (``{property: [value per Z 0..99]}`` in
  the property's unit), optional: where present for U0, U, H and G they must agree with
  :data:`ATOM_REFERENCES` (they do for schnetpack, which reads the same QM9 ``atomref`` table),
  so the atomisation targets are the same whatever the source; a database whose references
  differ raises instead of giving other ``*_atom`` values.

The database holds no QM9 index: ``idx`` is an ``index`` / ``idx`` key of the row if it has
one, else the row id (the QM9 index only when the database holds all 133,885 molecules in QM9's
order), and ``name`` is ``gdb_<idx>`` when ``idx`` is the QM9 index, else ``<db name>:row<id>``.
An ``uncharacterized.txt`` next to the database excludes the listed molecules (reported) when
``idx`` is the QM9 index. ``smiles`` is empty for database rows.

Targets (``y``, float64, shape ``(1, 19)``), in PyG's order and units:

===== ========== ============================== =======================================
index name       unit                           meaning
===== ========== ============================== =======================================
0     mu         D (Debye)                      dipole moment
1     alpha      a0^3 (Bohr^3)                  isotropic polarizability
2     homo       eV                             HOMO energy
3     lumo       eV                             LUMO energy
4     gap        eV                             HOMO-LUMO gap
5     r2         a0^2                           electronic spatial extent
6     zpve       eV                             zero-point vibrational energy
7     U0         eV                             internal energy at 0 K
8     U          eV                             internal energy at 298.15 K
9     H          eV                             enthalpy at 298.15 K
10    G          eV                             free energy at 298.15 K
11    cv         cal/(mol K)                    heat capacity at 298.15 K
12    U0_atom    eV                             atomisation energy at 0 K
13    U_atom     eV                             atomisation energy at 298.15 K
14    H_atom     eV                             atomisation enthalpy at 298.15 K
15    G_atom     eV                             atomisation free energy at 298.15 K
16    A          GHz                            rotational constant
17    B          GHz                            rotational constant
18    C          GHz                            rotational constant
===== ========== ============================== =======================================

Atomisation energies subtract the dataset's published isolated-atom energies
(:data:`ATOM_REFERENCES`, Hartree) from U0, U, H and G. Each graph has ``z``, ``pos`` (Å),
``y``, ``smiles``, ``name`` (``gdb_<index>``) and ``idx`` (the QM9 index).
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from ..data import keys as K
from ..data.errors import InvalidInputError, SkipReport
from ..data.structures import ASEDatabase, lookup_entry
from ..data.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV, unit_factor
from ._cached import CachedDataset, random_split_indices

__all__ = ["QM9", "TARGETS", "TARGET_UNITS", "ATOM_REFERENCES", "ASE_DB_NAMES", "qm9pack_folder"]

TARGETS = (
    "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "cv",
    "U0_atom", "U_atom", "H_atom", "G_atom", "A", "B", "C",
)  # fmt: skip
TARGET_UNITS = (
    "D", "a0^3", "eV", "eV", "eV", "a0^2", "eV", "eV", "eV", "eV", "eV", "cal/(mol K)",
    "eV", "eV", "eV", "eV", "GHz", "GHz", "GHz",
)  # fmt: skip

#: Isolated-atom energies in Hartree (QM9's atomref table): U0, U (298 K), H, G per element.
ATOM_REFERENCES = {
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}

NUM_MOLECULES = 130_831
#: Molecules in QM9 including the 3,054 "uncharacterized" ones (a complete ASE database).
NUM_MOLECULES_ALL = 133_885
STANDARD_SPLIT = (110_000, 10_000)

_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_CSV_HEADER_START = ["XYZ_file", "Index", "SMILES"]
# qm9pack column -> factor to PyG's unit, in TARGETS order for the 12 direct targets
_CSV_DIRECT = [
    ("Dipole_debye", 1.0),
    ("Polarizability_bohr3", 1.0),
    ("HOMO_au", HARTREE_TO_EV),
    ("LUMO_au", HARTREE_TO_EV),
    ("HOMO_LUMO_gap_au", HARTREE_TO_EV),
    ("R2_bohr2", 1.0),
    ("ZPVE_au", HARTREE_TO_EV),
    ("InternalEnergy_0K_au", HARTREE_TO_EV),
    ("InternalEnergy_298K_au", HARTREE_TO_EV),
    ("Enthalphy_298K_au", HARTREE_TO_EV),
    ("GibbsFreeEnergy_298K_au", HARTREE_TO_EV),
    ("Heatcapacity_Cv_cal_mol_K", 1.0),
]
_CSV_ENERGIES = ["InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au"]
_CSV_ROTATIONAL = ["RotA_GHz", "RotB_GHz", "RotC_GHz"]
# gdb9.sdf.csv column -> factor; the *_atom columns there are kcal/mol
_RAW_COLUMNS = [
    ("mu", 1.0), ("alpha", 1.0), ("homo", HARTREE_TO_EV), ("lumo", HARTREE_TO_EV), ("gap", HARTREE_TO_EV),
    ("r2", 1.0), ("zpve", HARTREE_TO_EV), ("u0", HARTREE_TO_EV), ("u298", HARTREE_TO_EV),
    ("h298", HARTREE_TO_EV), ("g298", HARTREE_TO_EV), ("cv", 1.0),
    ("u0_atom", KCAL_PER_MOL_TO_EV), ("u298_atom", KCAL_PER_MOL_TO_EV), ("h298_atom", KCAL_PER_MOL_TO_EV),
    ("g298_atom", KCAL_PER_MOL_TO_EV), ("A", 1.0), ("B", 1.0), ("C", 1.0),
]  # fmt: skip


def qm9pack_folder() -> Path | None:
    """The ``data`` folder of the installed ``qm9pack`` wheel, or ``None`` (module not imported)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


# ------------------------------------------------------------------------------------------
# qm9pack CSV rows
# ------------------------------------------------------------------------------------------


def _parse_list(text: str) -> list[str]:
    return [t.strip().strip("'\"") for t in text.replace("[", "").replace("]", "").split(",") if t.strip()]


def _parse_positions(text: str, n: int, source: str, record: str) -> torch.Tensor:
    try:
        values = [float(t) for t in _parse_list(text)]
    except ValueError:
        raise InvalidInputError(source, "unreadable XYZ_Ang coordinates", record) from None
    if len(values) != 3 * n:
        raise InvalidInputError(source, f"XYZ_Ang has {len(values)} numbers for {n} atoms (expected {3 * n})", record)
    if not all(map(math.isfinite, values)):
        raise InvalidInputError(source, "non-finite (NaN or infinite) coordinates", record)
    return torch.tensor(values, dtype=torch.float64).view(n, 3)


def _atomisation(z: list[int], energies_ha: list[float], source: str, record: str) -> list[float]:
    try:
        refs = [sum(ATOM_REFERENCES[zi][k] for zi in z) for k in range(4)]
    except KeyError as error:
        raise InvalidInputError(source, f"no atomic reference energy for element Z={error.args[0]}", record) from None
    return [(e - ref) * HARTREE_TO_EV for e, ref in zip(energies_ha, refs)]


def _csv_row_to_data(row: dict, source: str) -> Data:
    record = row.get("XYZ_file", "?")
    try:
        elements = _parse_list(row["Elements"])
        n = int(row["N_atoms"])
        index = int(row["Index"])
    except (KeyError, ValueError) as error:
        raise InvalidInputError(source, f"missing or unreadable column: {error}", record) from None
    if len(elements) != n:
        raise InvalidInputError(source, f"N_atoms is {n} but Elements lists {len(elements)} atoms", record)
    unknown = [e for e in elements if e not in _SYMBOLS]
    if unknown:
        raise InvalidInputError(source, f"unknown elements {sorted(set(unknown))}", record)
    z = [_SYMBOLS[e] for e in elements]
    pos = _parse_positions(row["XYZ_Ang"], n, source, record)
    try:
        direct = [float(row[column]) * factor for column, factor in _CSV_DIRECT]
        energies = [float(row[column]) for column in _CSV_ENERGIES]
        rotational = [float(row[column]) for column in _CSV_ROTATIONAL]
    except (KeyError, ValueError) as error:
        raise InvalidInputError(source, f"missing or unreadable target: {error}", record) from None
    y = direct + _atomisation(z, energies, source, record) + rotational
    return _molecule(z, pos, y, index, row.get("SMILES", ""))


def _molecule(z: list[int], pos: torch.Tensor, y: list[float], index: int, smiles: str) -> Data:
    data = Data(num_nodes=len(z))
    data[K.ATOMIC_NUMBER] = torch.tensor(z, dtype=torch.long)
    data[K.POSITION] = pos.to(torch.float32)
    data[K.TARGET] = torch.tensor([y], dtype=torch.float64)
    data[K.SMILES] = smiles
    data[K.NAME] = f"gdb_{index}"
    data[K.MOLECULE_INDEX] = torch.tensor([index])
    return data


def _is_qm9pack_csv(path: Path) -> bool:
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return header[:3] == _CSV_HEADER_START


def _read_csv_files(files: list[Path], report: SkipReport, skip_invalid: bool) -> list[Data]:
    graphs = []
    for path in files:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                data = report.guard(lambda: _csv_row_to_data(row, str(path)), skip_invalid)
                if data is not None:
                    graphs.append(data)
    return graphs


# ------------------------------------------------------------------------------------------
# raw gdb9.sdf + gdb9.sdf.csv
# ------------------------------------------------------------------------------------------


_UNCHARACTERIZED = "uncharacterized.txt"
_UNCHARACTERIZED_REASON = "listed in uncharacterized.txt (failed QM9's geometry consistency check)"


def _uncharacterized_in(folder: Path) -> list[Path]:
    """``[<folder>/uncharacterized.txt]`` when that file exists, else ``[]``: the extra source file
    that excludes the molecules QM9 lists as uncharacterized."""
    listed = folder / _UNCHARACTERIZED
    return [listed] if listed.is_file() else []


def _read_uncharacterized(files: list[Path]) -> set[int]:
    """Indices listed in the ``uncharacterized.txt`` among ``files`` (lines ``<n> <index> ...``
    between rules); empty when there is none."""
    path = next((f for f in files if f.name == _UNCHARACTERIZED), None)
    if path is None:
        return set()
    out = set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            out.add(int(parts[1]))
    return out


def _raw_record_to_data(mol, row: dict, source: str, record: str) -> Data:
    from rdkit import Chem

    from ..data.molecule import from_rdkit_mol

    if mol is None:
        raise InvalidInputError(source, "RDKit could not parse the record", record)
    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
    if name != row["mol_id"].strip():
        raise InvalidInputError(source, f"SDF record {name!r} does not match CSV row {row['mol_id']!r}", record)
    graph = from_rdkit_mol(mol, source=source, record=record, dtype=torch.float64)
    try:
        y = [float(row[column]) * factor for column, factor in _RAW_COLUMNS]
    except (KeyError, ValueError) as error:
        raise InvalidInputError(source, f"missing or unreadable target: {error}", record) from None
    try:
        smiles = Chem.MolToSmiles(mol)
    except Exception:  # unsanitised molecules may fail; the graph does not need it
        smiles = ""
    return _molecule(graph[K.ATOMIC_NUMBER].tolist(), graph[K.POSITION], y, int(name.split("_")[-1]), smiles)


def _read_raw(sdf: Path, table: Path, uncharacterized: set[int], report: SkipReport, skip_invalid: bool) -> list[Data]:
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with BlockLogs():
        supplier = Chem.SDMolSupplier(str(sdf), removeHs=False, sanitize=False)
        if len(supplier) != len(rows):
            raise InvalidInputError(sdf, f"{len(supplier)} SDF records but {len(rows)} rows in {table.name}")
        graphs = []
        for i, row in enumerate(rows):
            record = f"{i} ({row.get('mol_id', '?')})"
            index = int(row["mol_id"].split("_")[-1])
            if index in uncharacterized:
                report.add(InvalidInputError(sdf, _UNCHARACTERIZED_REASON, record))
                continue
            data = report.guard(lambda: _raw_record_to_data(supplier[i], row, str(sdf), record), skip_invalid)
            if data is not None:
                graphs.append(data)
    return graphs


# ------------------------------------------------------------------------------------------
# ASE database (schnetpack's QM9 layout)
# ------------------------------------------------------------------------------------------

#: Property names looked up in an ASE database for each of the 15 direct targets, in order:
#: schnetpack's (``schnetpack.datasets.QM9``) first, then short aliases. With the unit kind of each.
ASE_DB_NAMES = {
    "mu": (("dipole_moment", "mu"), "dipole"),
    "alpha": (("isotropic_polarizability", "alpha"), "polarizability"),
    "homo": (("homo",), "energy"),
    "lumo": (("lumo",), "energy"),
    "gap": (("gap",), "energy"),
    "r2": (("electronic_spatial_extent", "r2"), "spatial_extent"),
    "zpve": (("zpve",), "energy"),
    "U0": (("energy_U0", "U0"), "energy"),
    "U": (("energy_U", "U"), "energy"),
    "H": (("enthalpy_H", "H"), "energy"),
    "G": (("free_energy", "G"), "energy"),
    "cv": (("heat_capacity", "Cv", "cv"), "heat_capacity"),
    "A": (("rotational_constant_A", "A"), "frequency"),
    "B": (("rotational_constant_B", "B"), "frequency"),
    "C": (("rotational_constant_C", "C"), "frequency"),
}  # fmt: skip
_DB_ENERGIES = ("U0", "U", "H", "G")  # in ATOM_REFERENCES' column order
_DB_INDEX_KEYS = ("index", "idx")
# atomrefs must match QM9's table to its 6 decimals (Hartree)
_ATOMREF_TOLERANCE_EV = 2e-6 * HARTREE_TO_EV


# a property is looked up in the row's data (schnetpack), then its key_value_pairs
_DB_PLACES = ("data", "key_value_pairs")


class _DbLayout:
    """Names, unit factors and atom references of a schnetpack-style QM9 database."""

    def __init__(self, database: ASEDatabase) -> None:
        source, metadata = str(database.path), database.metadata
        units = metadata.get("_property_unit_dict")
        if not isinstance(units, dict) or not units:
            raise InvalidInputError(
                source,
                "the database metadata has no '_property_unit_dict', so the units of its values are unknown; "
                f"expected a schnetpack-style QM9 database (metadata keys: {sorted(metadata)})",
            )
        self.names, self.factors = {}, {}
        for target, (candidates, kind) in ASE_DB_NAMES.items():
            name = next((c for c in candidates if c in units), None)
            if name is None:
                raise InvalidInputError(
                    source,
                    f"no unit for QM9 target {target!r} in metadata _property_unit_dict (looked for {list(candidates)}); "
                    f"it lists {sorted(units)}",
                )
            try:
                self.factors[target] = unit_factor(units[name], kind)
            except ValueError as error:
                raise InvalidInputError(source, f"unit of {name!r} in metadata _property_unit_dict: {error}") from None
            self.names[target] = name
        self.full = database.count == NUM_MOLECULES_ALL
        self._check_atomrefs(source, metadata.get("atomrefs"))

    def _check_atomrefs(self, source: str, atomrefs) -> None:
        """Atom references in the metadata must be QM9's (:data:`ATOM_REFERENCES`), as schnetpack's are."""
        if atomrefs is None:
            return
        if not isinstance(atomrefs, dict):
            raise InvalidInputError(source, f"metadata atomrefs is a {type(atomrefs).__name__}; expected {{property: [value per Z]}}")
        for k, target in enumerate(_DB_ENERGIES):
            refs = atomrefs.get(self.names[target])
            if refs is None:
                continue
            for z, published in ATOM_REFERENCES.items():
                value = float(refs[z]) * self.factors[target] if z < len(refs) else float("nan")
                if not abs(value - published[k] * HARTREE_TO_EV) <= _ATOMREF_TOLERANCE_EV:
                    raise InvalidInputError(
                        source,
                        f"metadata atomrefs[{self.names[target]!r}][{z}] = {value:.6f} eV differs from QM9's isolated-atom "
                        f"energy {published[k] * HARTREE_TO_EV:.6f} eV ({published[k]} Ha): the {target}_atom targets would "
                        "not be QM9's",
                    )


def _db_row_to_data(row_id: int, atoms, layout: _DbLayout, source: str, stem: str) -> Data:
    """The graph of one database row (``atoms`` from :meth:`ASEDatabase.frames`, positions in Å)."""
    record = f"row {row_id}"
    z = [int(v) for v in atoms.numbers]
    if not z:
        raise InvalidInputError(source, "row has no atoms", record)
    unknown = sorted({v for v in z if v not in ATOM_REFERENCES})
    if unknown:
        raise InvalidInputError(source, f"unknown elements (atomic numbers {unknown}; QM9 has H, C, N, O, F)", record)
    pos = torch.tensor(np.array(atoms.positions, dtype=np.float64))
    if not bool(torch.isfinite(pos).all()):
        raise InvalidInputError(source, "non-finite (NaN or infinite) coordinates", record)
    values = {}
    for target, name in layout.names.items():
        found = lookup_entry(atoms, name, _DB_PLACES)
        if found is None:
            present = sorted(set(atoms.info.get("data") or {}) | set(atoms.info.get("key_value_pairs") or {}))
            raise InvalidInputError(source, f"no {name!r} (QM9 target {target!r}) in the row; it has {present}", record)
        value = found[0]
        try:
            array = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
        except (TypeError, ValueError):
            raise InvalidInputError(source, f"{name!r} is not a number: {value!r}", record) from None
        if len(array) != 1 or not math.isfinite(array[0]):
            raise InvalidInputError(source, f"{name!r} must be one finite number, got {array}", record)
        values[target] = array[0] * layout.factors[target]
    refs = [sum(ATOM_REFERENCES[zi][k] for zi in z) * HARTREE_TO_EV for k in range(4)]
    atomisation = [values[target] - ref for target, ref in zip(_DB_ENERGIES, refs)]
    y = [values[t] for t in TARGETS[:12]] + atomisation + [values[t] for t in ("A", "B", "C")]
    key_value_pairs = atoms.info.get("key_value_pairs") or {}
    key = next((key_value_pairs[k] for k in _DB_INDEX_KEYS if k in key_value_pairs), None)
    index = int(key) if key is not None else int(row_id)
    data = _molecule(z, pos, y, index, "")
    if key is None and not layout.full:
        data[K.NAME] = f"{stem}:row{row_id}"
    return data


def _read_ase_db(path: Path, uncharacterized: set[int], report: SkipReport, skip_invalid: bool) -> list[Data]:
    source = str(path)
    database = ASEDatabase(path)
    layout = _DbLayout(database)
    graphs = []
    for row_id, atoms in database.frames():
        data = report.guard(lambda: _db_row_to_data(row_id, atoms, layout, source, path.stem), skip_invalid)
        if data is None:
            continue
        if uncharacterized and data[K.NAME].startswith("gdb_") and int(data[K.MOLECULE_INDEX]) in uncharacterized:
            report.add(InvalidInputError(source, _UNCHARACTERIZED_REASON, f"row {row_id}"))
            continue
        graphs.append(data)
    return graphs


# ------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------


_EXPECTED = (
    "a folder holding <name>.sdf + <name>.sdf.csv (e.g. gdb9.sdf) or qm9pack-style CSV files, or one file: "
    "an ASE database (.db, schnetpack's QM9 layout), a qm9pack-style CSV file, or a <name>.sdf with its "
    "<name>.sdf.csv next to it"
)


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def _source_file(path: Path) -> tuple[str, list[Path]]:
    """The kind and files of a ``source`` that is a file (see :func:`_find_source`)."""
    if path.suffix.lower() == ".db" or _is_sqlite(path):
        if not _is_sqlite(path):
            raise InvalidInputError(path, "QM9 source is a .db file but not an SQLite (ASE) database")
        return "asedb", [path, *_uncharacterized_in(path.parent)]
    if path.suffix.lower() == ".sdf":
        table = path.with_name(path.name + ".csv")
        if not table.is_file():
            raise InvalidInputError(path, f"QM9 source is an SDF file but its table {table.name} is not next to it")
        return "raw", [path, table, *_uncharacterized_in(path.parent)]
    if path.suffix.lower() == ".csv":
        if _is_qm9pack_csv(path):
            return "csv", [path]
        sdf = path.with_name(path.name[: -len(".csv")])
        if sdf.suffix.lower() == ".sdf" and sdf.is_file():
            return _source_file(sdf)
        raise InvalidInputError(
            path, f"QM9 source is a CSV file but not a qm9pack one (its header does not start with {_CSV_HEADER_START})"
        )
    raise InvalidInputError(path, f"QM9 source is a file that QM9 does not read; expected {_EXPECTED}")


def _find_source(source: str | Path | None) -> tuple[str, list[Path]]:
    """``("raw", [sdf, csv, (uncharacterized)])``, ``("csv", [csv files])`` or ``("asedb", [db, (uncharacterized)])``."""
    if source is None:
        folder = qm9pack_folder()
        if folder is None:
            raise FileNotFoundError(
                "QM9 needs its data: `pip install eqgeo[qm9]` (the qm9pack==1.0.3 wheel), or pass "
                f"source=<path>: {_EXPECTED}"
            )
        return "csv", sorted(p for p in folder.glob("qm9_part*.csv"))
    folder = Path(source)
    if not folder.exists():
        raise FileNotFoundError(f"QM9 source {folder} does not exist; expected {_EXPECTED}")
    if folder.is_file():
        return _source_file(folder)
    for sdf in sorted(folder.glob("*.sdf")):
        table = sdf.with_name(sdf.name + ".csv")
        if table.exists():
            return "raw", [sdf, table, *_uncharacterized_in(folder)]
    files = sorted(p for p in folder.glob("*.csv") if _is_qm9pack_csv(p))
    if not files:
        dbs = sorted(p.name for p in folder.glob("*.db"))
        hint = f"; to read an ASE database pass the file itself, e.g. source={folder / dbs[0]}" if dbs else ""
        raise FileNotFoundError(f"{folder} holds neither <name>.sdf + <name>.sdf.csv nor qm9pack-style CSV files{hint}")
    return "csv", files


class QM9(CachedDataset):
    """QM9 molecules with the 19 targets of PyG's ``QM9`` (see the module docstring for units).

    Args:
        root: cache folder (default ``<cache root>/qm9``, see
            :func:`eqgeo.datasets.default_cache_root`).
        source: ``None`` (the installed qm9pack wheel), a folder of raw or qm9pack-style files,
            or one file: an ASE database (``.db``, schnetpack's QM9 layout), a qm9pack-style CSV
            file, or a ``<name>.sdf`` with ``<name>.sdf.csv`` next to it (see the module docstring).
        subset: keep a seeded random sample of this many molecules (for quick runs); the
            cache holds the whole source.
        subset_seed: seed of that sample.
        skip_invalid: skip invalid records and list them in :attr:`report` instead of raising.
        transform, pre_transform, pre_filter, force_reload: as in PyG.

    Example:
        >>> dataset = QM9(source="shared/data/qm9/qm9pack")  # doctest: +SKIP
        >>> splits = dataset.split(seed=0)                    # doctest: +SKIP
    """

    cache_name = "qm9"
    targets = TARGETS
    target_units = TARGET_UNITS

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        source: str | Path | None = None,
        subset: int | None = None,
        subset_seed: int = 0,
        skip_invalid: bool = False,
        transform=None,
        pre_transform=None,
        pre_filter=None,
        force_reload: bool = False,
    ):
        self.source_kind, self._files = _find_source(source)
        self.skip_invalid = skip_invalid
        super().__init__(root, transform, pre_transform, pre_filter, force_reload)
        if subset is not None:
            self._take_subset(subset, subset_seed)

    def source_files(self) -> list[Path]:
        return self._files

    def options(self) -> dict:
        return {"kind": self.source_kind, "skip_invalid": self.skip_invalid}

    def read(self, report: SkipReport) -> list[Data]:
        uncharacterized = _read_uncharacterized(self._files)
        if self.source_kind == "asedb":
            return _read_ase_db(self._files[0], uncharacterized, report, self.skip_invalid)
        if self.source_kind == "raw":
            sdf, table = self._files[:2]
            return _read_raw(sdf, table, uncharacterized, report, self.skip_invalid)
        return _read_csv_files(self._files, report, self.skip_invalid)

    def _take_subset(self, subset: int, seed: int) -> None:
        if not 0 < subset <= len(self):
            raise ValueError(f"subset={subset} must be between 1 and the {len(self)} molecules of the source")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        self._indices = sorted(perm[:subset].tolist())

    def target_index(self, name: str) -> int:
        """Column of target ``name`` in ``y`` (e.g. ``"U0_atom"`` -> 12)."""
        try:
            return TARGETS.index(name)
        except ValueError:
            raise KeyError(f"unknown QM9 target {name!r}; targets are {TARGETS}") from None

    def split(self, seed: int = 0, num_train: int | None = None, num_val: int | None = None) -> dict[str, torch.Tensor]:
        """Seeded random train/val/test indices into this dataset.

        With ``num_train`` / ``num_val`` left ``None``: the standard 110,000 / 10,000 / rest
        split when the dataset holds more than 120,000 molecules, otherwise the same
        proportions of this (smaller) dataset, rounded down.
        """
        n = len(self)
        if num_train is None or num_val is None:
            standard = n > sum(STANDARD_SPLIT)
            num_train = num_train if num_train is not None else (STANDARD_SPLIT[0] if standard else n * STANDARD_SPLIT[0] // NUM_MOLECULES)
            num_val = num_val if num_val is not None else (STANDARD_SPLIT[1] if standard else n * STANDARD_SPLIT[1] // NUM_MOLECULES)
        train, val, test = random_split_indices(n, (num_train, num_val), seed)
        return {"train": train, "val": val, "test": test}
