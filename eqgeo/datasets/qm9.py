"""QM9: 130,831 small organic molecules with 19 DFT targets in PyG's units, read offline.

Sources, in order of preference when ``source=None``:

1. the CSV files of the ``qm9pack==1.0.3`` wheel (``pip install eqgeo[qm9]``), read directly
   from the installed package's ``data`` folder (its Python module is not imported);
2. otherwise an error saying how to get the data.

``source=<folder>`` reads either the standard raw files (``gdb9.sdf`` + ``gdb9.sdf.csv``, or any
``<name>.sdf`` + ``<name>.sdf.csv`` pair; an ``uncharacterized.txt`` next to them excludes the
listed molecules as PyG does) or a folder of qm9pack-style CSV files (e.g. a prefix of one).

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

import torch
from torch_geometric.data import Data

from ..data import keys as K
from ..data.errors import InvalidInputError, SkipReport
from ..data.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV
from ._cached import CachedDataset, random_split_indices

__all__ = ["QM9", "TARGETS", "TARGET_UNITS", "ATOM_REFERENCES", "qm9pack_folder"]

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


def _read_uncharacterized(path: Path) -> set[int]:
    """Indices listed in ``uncharacterized.txt`` (lines ``<n> <index> ...`` between rules)."""
    if not path.exists():
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
                report.add(InvalidInputError(sdf, "listed in uncharacterized.txt (failed QM9's geometry consistency check)", record))
                continue
            data = report.guard(lambda: _raw_record_to_data(supplier[i], row, str(sdf), record), skip_invalid)
            if data is not None:
                graphs.append(data)
    return graphs


# ------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------


def _find_source(source: str | Path | None) -> tuple[str, list[Path]]:
    """``("raw", [sdf, csv, (uncharacterized)])`` or ``("csv", [csv files])``."""
    if source is None:
        folder = qm9pack_folder()
        if folder is None:
            raise FileNotFoundError(
                "QM9 needs its data: `pip install eqgeo[qm9]` (the qm9pack==1.0.3 wheel), or pass "
                "source=<folder> holding gdb9.sdf and gdb9.sdf.csv (or qm9pack-style CSV files)"
            )
        return "csv", sorted(p for p in folder.glob("qm9_part*.csv"))
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"QM9 source folder {folder} does not exist")
    for sdf in sorted(folder.glob("*.sdf")):
        table = sdf.with_name(sdf.name + ".csv")
        if table.exists():
            extra = [folder / "uncharacterized.txt"] if (folder / "uncharacterized.txt").exists() else []
            return "raw", [sdf, table, *extra]
    files = sorted(p for p in folder.glob("*.csv") if _is_qm9pack_csv(p))
    if not files:
        raise FileNotFoundError(f"{folder} holds neither <name>.sdf + <name>.sdf.csv nor qm9pack-style CSV files")
    return "csv", files


class QM9(CachedDataset):
    """QM9 molecules with the 19 targets of PyG's ``QM9`` (see the module docstring for units).

    Args:
        root: cache folder (default ``<cache root>/qm9``, see
            :func:`eqgeo.datasets.default_cache_root`).
        source: ``None`` (the installed qm9pack wheel) or a folder of raw or qm9pack-style files.
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
        if self.source_kind == "raw":
            sdf, table, *extra = self._files
            uncharacterized = _read_uncharacterized(extra[0]) if extra else set()
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
