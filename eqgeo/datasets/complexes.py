"""Protein–ligand complexes from a folder, one sub-folder per complex, as complex graphs.

Recognised layouts of a sub-folder ``<ID>/``:

* **PoseBusters / Astex**: ``<ID>_protein.pdb``, the crystal ligand ``<ID>_ligand.sdf``, every
  crystal copy ``<ID>_ligands.sdf`` and the docking input ``<ID>_ligand_start_conf.sdf``;
* **PDBbind-like**: ``<id>_protein*.pdb`` with ``<id>_ligand.sdf`` and/or ``<id>_ligand.mol2``.

The pocket is cropped while the dataset is processed (around the crystal ligand); the files are
never edited and the cache is written elsewhere. Sub-folders in any other layout are skipped and
named in :attr:`ProteinLigandComplexes.layout_report`; complexes whose files are invalid raise,
or with ``skip_invalid=True`` are skipped and named in :attr:`ProteinLigandComplexes.report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch_geometric.data import Data

from ..data import keys as K
from ..data.complex import complex_graph
from ..data.errors import InvalidInputError, SkipReport
from ..data.molecule import read_mol2, read_sdf
from ..data.protein import read_pdb
from ._cached import CachedDataset

__all__ = ["ProteinLigandComplexes", "ComplexFiles", "find_complex_files"]

LIGAND_CHOICES = ("crystal", "start_conf")


@dataclass(frozen=True)
class ComplexFiles:
    """The files of one complex."""

    name: str
    layout: str  # "posebusters" or "pdbbind"
    protein: Path
    ligands: tuple[Path, ...]  # crystal ligand candidates, in the order tried
    start_conf: Path | None = None
    all_copies: Path | None = None


def _posebusters(folder: Path) -> ComplexFiles | None:
    name = folder.name
    protein, ligand = folder / f"{name}_protein.pdb", folder / f"{name}_ligand.sdf"
    if not (protein.is_file() and ligand.is_file()):
        return None
    start, copies = folder / f"{name}_ligand_start_conf.sdf", folder / f"{name}_ligands.sdf"
    return ComplexFiles(name, "posebusters", protein, (ligand,), start if start.is_file() else None, copies if copies.is_file() else None)


def _pdbbind(folder: Path) -> ComplexFiles | None:
    name = folder.name
    proteins = sorted(folder.glob(f"{name}_protein*.pdb"))
    ligands = tuple(p for p in (folder / f"{name}_ligand.sdf", folder / f"{name}_ligand.mol2") if p.is_file())
    if len(proteins) != 1 or not ligands:
        return None
    copies = folder / f"{name}_ligands.sdf"
    return ComplexFiles(name, "pdbbind", proteins[0], ligands, None, copies if copies.is_file() else None)


def _what_is_missing(folder: Path) -> str:
    """Why ``folder`` is in neither layout, naming the file(s) it lacks."""
    name = folder.name
    names = sorted(p.name for p in folder.iterdir())
    listing = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "") if names else "nothing"
    proteins = sorted(p.name for p in folder.glob(f"{name}_protein*.pdb"))
    has_ligand = any((folder / f"{name}_ligand{ext}").is_file() for ext in (".sdf", ".mol2"))
    missing = []
    if not proteins:
        missing.append(f"the protein {name}_protein.pdb (or {name}_protein*.pdb)")
    if not has_ligand:
        missing.append(f"the crystal ligand {name}_ligand.sdf (or {name}_ligand.mol2)")
    if missing:
        what = f"missing {' and '.join(missing)}"
    else:  # several candidate proteins and no PoseBusters-style <name>_protein.pdb to choose
        what = f"{len(proteins)} protein files {proteins}, expected one {name}_protein.pdb or one {name}_protein*.pdb"
    return f"not a PoseBusters/Astex or PDBbind-like complex folder: {what} (the folder holds: {listing})"


def find_complex_files(root: str | Path, ids: list[str] | None = None) -> tuple[list[ComplexFiles], SkipReport]:
    """The complexes under ``root`` in a known layout, and a report naming the other folders and,
    for each, the file(s) it lacks (e.g. ``1abc_ligand.sdf``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"complex folder {root} does not exist")
    found, report = [], SkipReport()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if ids is not None and folder.name not in ids:
            continue
        files = _posebusters(folder) or _pdbbind(folder)
        if files is None:
            report.add(InvalidInputError(folder, _what_is_missing(folder)))
        else:
            found.append(files)
    if ids is not None:
        missing = sorted(set(ids) - {f.name for f in found} - {Path(e.source).name for e in report.errors})
        if missing:
            raise FileNotFoundError(f"no complex folder under {root} for ids {missing}")
    return found, report


def _read_ligand(path: Path) -> Data:
    reader = read_mol2 if path.suffix == ".mol2" else read_sdf
    return reader(path)[0]


def _crystal_ligand(files: ComplexFiles) -> tuple[Data, Path]:
    """The first crystal ligand file that loads (``.sdf`` before ``.mol2``); all errors if none."""
    errors = []
    for path in files.ligands:
        try:
            return _read_ligand(path), path
        except InvalidInputError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    reasons = "; ".join(f"{Path(e.source).name}: {e.reason}" for e in errors)
    raise InvalidInputError(files.protein.parent, f"no ligand file loads ({reasons})")


def complex_from_files(files: ComplexFiles, ligand: str, pocket_radius: float, cross_cutoff: float) -> Data:
    """Complex graph of one complex's files; the pocket is always cropped around the crystal ligand."""
    crystal, ligand_path = _crystal_ligand(files)
    ligand_graph = crystal
    if ligand == "start_conf":
        if files.start_conf is None:
            raise InvalidInputError(
                files.protein.parent, f"ligand='start_conf' but {files.name}_ligand_start_conf.sdf is missing from this folder"
            )
        ligand_graph, ligand_path = read_sdf(files.start_conf)[0], files.start_conf
    protein = read_pdb(files.protein)
    data = complex_graph(
        protein, ligand_graph, pocket_radius=pocket_radius, cross_cutoff=cross_cutoff, pocket_around=crystal[K.POSITION]
    )
    data[K.NAME] = files.name
    data[K.LIGAND_FILE] = ligand_path.name
    data[K.LAYOUT] = files.layout
    return data


class ProteinLigandComplexes(CachedDataset):
    """Every complex under ``root`` as a complex graph (:func:`eqgeo.data.complex_graph`).

    Args:
        root: folder with one sub-folder per complex (read only; never written to).
        cache_dir: cache folder (default ``<cache root>/complexes``).
        ligand: ``"crystal"`` (``_ligand.sdf``, else ``_ligand.mol2``; the file used is in
            ``ligand_file``) or ``"start_conf"`` (the docking input conformer of the
            PoseBusters layout, placed in the crystal ligand's pocket).
        pocket_radius: protein atoms within this distance (Å) of the crystal ligand.
        cross_cutoff: ligand–pocket cross-edge cutoff (Å).
        ids: only these sub-folders.
        skip_invalid: skip complexes with invalid files, listed in :attr:`report`.
        transform, pre_transform, pre_filter, force_reload: as in PyG.

    Attributes:
        layout_report: the sub-folders skipped because their layout is not recognised.
        report: the complexes skipped as invalid (``skip_invalid=True``).
    """

    cache_name = "complexes"

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path | None = None,
        *,
        ligand: str = "crystal",
        pocket_radius: float = 10.0,
        cross_cutoff: float = 5.0,
        ids: list[str] | None = None,
        skip_invalid: bool = False,
        transform=None,
        pre_transform=None,
        pre_filter=None,
        force_reload: bool = False,
    ):
        if ligand not in LIGAND_CHOICES:
            raise ValueError(f"ligand must be one of {LIGAND_CHOICES}, got {ligand!r}")
        self.folder = Path(root)
        self.complexes, self.layout_report = find_complex_files(self.folder, ids)
        if not self.complexes:
            raise FileNotFoundError(f"no complex in a known layout under {self.folder}:\n{self.layout_report}")
        self.ligand, self.pocket_radius, self.cross_cutoff = ligand, pocket_radius, cross_cutoff
        self.skip_invalid = skip_invalid
        super().__init__(cache_dir, transform, pre_transform, pre_filter, force_reload)

    def source_files(self) -> list[Path]:
        files = []
        for c in self.complexes:
            files += [c.protein, *c.ligands] + ([c.start_conf] if c.start_conf else [])
        return files

    def options(self) -> dict:
        return {
            "ligand": self.ligand,
            "pocket_radius": self.pocket_radius,
            "cross_cutoff": self.cross_cutoff,
            "skip_invalid": self.skip_invalid,
        }

    def read(self, report: SkipReport) -> list[Data]:
        graphs = []
        for files in self.complexes:
            data = report.guard(lambda: complex_from_files(files, self.ligand, self.pocket_radius, self.cross_cutoff), self.skip_invalid)
            if data is not None:
                graphs.append(data)
        return graphs
