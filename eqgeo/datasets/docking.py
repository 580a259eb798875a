"""Docking complexes: a ligand's crystal pose, its start conformer and pocket, ready for pose sampling.

Each complex folder (PoseBusters/Astex layout, or PDBbind-like; see
:func:`eqgeo.datasets.find_complex_files`) becomes one :class:`DockingComplex` record:

* the crystal ligand's heavy atoms (``_ligand.sdf``), its rotatable bonds and the atoms each
  one moves (:func:`eqgeo.data.poses.rotatable_bonds`);
* every crystal copy (``_ligands.sdf``) under every automorphism, for the symmetry-corrected
  RMSD (:func:`eqgeo.data.poses.symmetry_references`);
* the docking start conformer (``_ligand_start_conf.sdf``, RDKit-generated, in its own frame),
  its heavy atoms put in the crystal ligand's atom order, and the same conformer with its
  torsions matched to the crystal pose (:func:`eqgeo.data.poses.match_torsions`): the best pose
  a rigid + torsion docking of that conformer can reach;
* the protein pocket: heavy atoms within ``pocket_radius`` of the crystal ligand, or of a sphere
  about its centroid (``pocket_shape``) (cropped at
  load time; the files are never edited), and the pocket centre, the crystal ligand's centroid,
  which is how a docking program such as Vina is given the site (the centre of its box).

Records are cached as plain tensors (loaded with ``weights_only=True``) under the eqgeo cache.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

import torch
from rdkit import Chem
from rdkit.rdBase import BlockLogs
from torch import Tensor

from ..data import keys as K
from ..data.complex import remove_ligand_copies
from ..data.errors import InvalidInputError, SkipReport
from ..data.poses import match_atoms, match_torsions, remove_hydrogens, rotatable_bonds, symmetry_references
from ..data.protein import read_pdb, select_pocket
from ._cached import default_cache_root, fingerprint
from .complexes import ComplexFiles, find_complex_files

__all__ = ["DockingComplex", "load_docking_complexes", "pdb_id"]

_CACHE_VERSION = 2


@dataclass
class DockingComplex:
    """One protein–ligand complex for docking (heavy atoms only; Å; float64 positions).

    Shapes: ``L`` ligand heavy atoms, ``T`` rotatable bonds, ``K`` reference poses, ``P``
    pocket atoms.
    """

    name: str
    ligand_z: Tensor  # (L,)
    crystal: Tensor  # (L, 3) the crystal pose (the `_ligand.sdf` copy)
    start: Tensor  # (L, 3) start conformer, crystal atom order, in its own frame
    matched: Tensor  # (L, 3) start conformer with torsions matched, superimposed on the crystal pose
    matched_rmsd: float  # RMSD (Å) of `matched` to the crystal pose: the floor of rigid+torsion docking
    bonds: Tensor  # (2, T) rotatable bonds [fixed, moving]
    moving: Tensor  # (T, L) atoms each bond moves
    references: Tensor  # (K, L, 3) every crystal copy under every automorphism
    pocket_z: Tensor  # (P,)
    pocket_pos: Tensor  # (P, 3)
    pocket_centre: Tensor  # (3,) the crystal ligand's centroid (the site a docking box is centred on)
    has_start_conf: bool

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "DockingComplex":
        return cls(**d)


def pdb_id(name: str) -> str:
    """The 4-character PDB id of a complex folder name (``1G9V_RQ3`` -> ``1g9v``)."""
    return name[:4].lower()


def _read_mol(path: Path, remove_hs: bool = True) -> Chem.Mol:
    with BlockLogs():
        mol = Chem.MolFromMolFile(str(path), removeHs=False, sanitize=True)
    if mol is None:
        raise InvalidInputError(path, "RDKit could not read or sanitise the ligand")
    return remove_hydrogens(mol) if remove_hs else mol


def _read_copies(path: Path) -> list[Chem.Mol]:
    with BlockLogs():
        mols = list(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True))
    bad = [k for k, m in enumerate(mols) if m is None]
    if bad or not mols:
        raise InvalidInputError(path, f"records {bad} cannot be read" if bad else "no records", None)
    return mols


POCKET_SHAPES = ("ligand", "sphere", "ball")


def _crop(protein, crystal: Tensor, radius: float, shape: str):
    """Protein atoms within ``radius`` of any crystal ligand atom (``"ligand"``: the crop follows the
    ligand's shape), within ``radius`` plus the ligand's radius of its centroid (``"sphere"``: only
    the site's centre and the ligand's size are used), or within ``radius`` of the centroid (``"ball"``:
    only the site's centre, as a fixed docking box)."""
    if shape == "ligand":
        return select_pocket(protein, crystal, radius)
    centre = crystal.mean(0, keepdim=True)
    extent = float((crystal - centre).norm(dim=1).max()) if shape == "sphere" else 0.0
    return select_pocket(protein, centre, radius + extent)


def _complex(files: ComplexFiles, pocket_radius: float, pocket_shape: str = "ligand") -> DockingComplex:
    ligand_path = next((p for p in files.ligands if p.suffix == ".sdf"), None)
    if ligand_path is None:
        present = ", ".join(p.name for p in files.ligands)
        raise InvalidInputError(
            files.protein.parent,
            f"docking needs the crystal ligand as SDF: {files.name}_ligand.sdf is missing (found only {present})",
        )
    crystal_mol = _read_mol(ligand_path)
    crystal = torch.tensor(crystal_mol.GetConformer().GetPositions(), dtype=torch.float64)
    z = torch.tensor([a.GetAtomicNum() for a in crystal_mol.GetAtoms()], dtype=torch.long)
    bonds, moving = rotatable_bonds(crystal_mol)
    copies = _read_copies(files.all_copies) if files.all_copies is not None else []
    references = symmetry_references(crystal_mol, copies, str(files.all_copies or ligand_path))
    if files.start_conf is not None:
        start_mol = _read_mol(files.start_conf, remove_hs=False)
        order = match_atoms(crystal_mol, start_mol, str(files.start_conf))[0]
        start = torch.tensor(remove_hydrogens(start_mol).GetConformer().GetPositions(), dtype=torch.float64)[list(order)]
        _, matched, matched_rmsd = match_torsions(start, crystal, bonds, moving)
    else:  # no generated conformer: the crystal geometry is the only one there is
        start, matched, matched_rmsd = crystal.clone(), crystal.clone(), 0.0
    protein = read_pdb(files.protein, dtype=torch.float64)
    protein, _ = remove_ligand_copies(protein, crystal)
    pocket = _crop(protein, crystal, pocket_radius, pocket_shape)
    if pocket.num_nodes == 0:
        raise InvalidInputError(files.protein, f"no protein atom within {pocket_radius} Å of the ligand {ligand_path.name}")
    return DockingComplex(
        name=files.name, ligand_z=z, crystal=crystal, start=start, matched=matched, matched_rmsd=float(matched_rmsd),
        bonds=bonds, moving=moving, references=references, pocket_z=pocket[K.ATOMIC_NUMBER],
        pocket_pos=pocket[K.POSITION].to(torch.float64), pocket_centre=crystal.mean(0),
        has_start_conf=files.start_conf is not None,
    )


def load_docking_complexes(
    root: str | Path,
    *,
    ids: Optional[Sequence[str]] = None,
    exclude: Sequence[str] = (),
    pocket_radius: float = 10.0,
    pocket_shape: str = "ligand",
    skip_invalid: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[list[DockingComplex], SkipReport]:
    """Every complex under ``root`` as a :class:`DockingComplex` (cached).

    Args:
        root: folder of complex folders (read only).
        ids: only these folder names.
        exclude: PDB ids (case-insensitive, e.g. ``1ia1``) to leave out, e.g. duplicates of a
            test set; they are named in the returned report, never dropped silently.
        pocket_radius: protein heavy atoms within this distance (Å) of the crystal ligand.
        pocket_shape: ``"ligand"`` (within ``pocket_radius`` of any crystal ligand atom: the crop
            follows the ligand's shape, as PDBbind pockets do), ``"sphere"`` (within
            ``pocket_radius`` plus the ligand's radius of its centroid: the site's centre and the
            ligand's size only) or ``"ball"`` (within ``pocket_radius`` of the centroid: the site's
            centre only, as a fixed docking box).
        skip_invalid: skip complexes whose files are invalid (listed in the report) instead
            of raising.
        cache_dir: default ``<eqgeo cache>/docking``.

    Returns:
        The complexes, sorted by name, and a report of what was left out and why.
    """
    found, report = find_complex_files(root, list(ids) if ids is not None else None)
    excluded = {e.lower() for e in exclude}
    kept = []
    for files in found:
        if pdb_id(files.name) in excluded:
            report.add(InvalidInputError(files.protein.parent, "excluded (duplicates a held-out complex)"))
        else:
            kept.append(files)
    if not found:
        raise FileNotFoundError(f"no complex folder in a known layout under {root}:\n{report}")
    if not kept:
        return [], report
    sources = [p for f in kept for p in (f.protein, *f.ligands, f.start_conf, f.all_copies) if p is not None]
    if pocket_shape not in POCKET_SHAPES:
        raise ValueError(f"pocket_shape must be one of {POCKET_SHAPES}, got {pocket_shape!r}")
    options = {"pocket_radius": pocket_radius, "v": _CACHE_VERSION, "skip": skip_invalid}
    if pocket_shape != "ligand":  # the key of existing "ligand" caches stays as it was
        options["pocket_shape"] = pocket_shape
    key = fingerprint(sources, options)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_root() / "docking"
    path = cache / f"complexes-{key}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        for error in saved["skipped"]:
            report.add(InvalidInputError(**error))
        return [DockingComplex.from_dict(d) for d in saved["complexes"]], report
    complexes, skipped = [], SkipReport()
    for files in kept:
        record = skipped.guard(lambda: _complex(files, pocket_radius, pocket_shape), skip_invalid)
        if record is not None:
            complexes.append(record)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"complexes": [c.to_dict() for c in complexes], "skipped": [e.to_dict() for e in skipped.errors]}, tmp)
    tmp.replace(path)
    report.extend(skipped)
    return complexes, report


def complex_from_inputs(
    protein: str | Path,
    ligand: str | Path,
    centre: Sequence[float],
    *,
    pocket_radius: float = 10.0,
    pocket_shape: str = "ball",
    seed: int = 0,
) -> tuple[DockingComplex, Chem.Mol]:
    """A user's protein and ligand as a :class:`DockingComplex` for docking about ``centre`` (Å), and the
    ligand's heavy-atom molecule in the complex's atom order (to write poses with).

    Args:
        protein: a PDB file.
        ligand: an SDF/MOL file (its first record; its 3D coordinates are the conformer, a 2D or
            coordinate-free record gets one from RDKit's ETKDG with ``seed``) or a SMILES string
            (ETKDG conformer with ``seed``).
        centre: the site's centre, as a docking box is centred.
        pocket_radius, pocket_shape: ``"ball"`` (protein atoms within ``pocket_radius`` of ``centre``)
            or ``"sphere"`` (within ``pocket_radius`` plus the conformer's radius); ``"ligand"`` needs
            a known pose and is refused.

    Nothing is known of a bound pose: ``crystal``, ``matched`` and ``references`` hold the conformer
    (RMSDs against them are to the input conformer), ``matched_rmsd`` is 0.
    """
    if pocket_shape not in ("ball", "sphere"):
        raise ValueError(f"docking a new ligand needs pocket_shape ball or sphere (a ligand-shaped pocket needs "
                         f"the bound pose), got {pocket_shape!r}")
    centre_t = torch.as_tensor(centre, dtype=torch.float64).reshape(-1)
    if centre_t.numel() != 3 or not bool(torch.isfinite(centre_t).all()):
        raise ValueError(f"the site centre must be 3 finite numbers (Å), got {list(centre)}")
    mol, source = _user_ligand(ligand, seed)
    heavy = remove_hydrogens(mol)
    start = torch.tensor(heavy.GetConformer().GetPositions(), dtype=torch.float64)
    bonds, moving = rotatable_bonds(heavy)
    extent = float((start - start.mean(0)).norm(dim=1).max()) if pocket_shape == "sphere" else 0.0
    pocket = select_pocket(read_pdb(protein, dtype=torch.float64), centre_t[None], pocket_radius + extent)
    if pocket.num_nodes == 0:
        raise InvalidInputError(protein, f"no protein heavy atom within {pocket_radius + extent:g} Å of the centre "
                                         f"{[round(float(x), 3) for x in centre_t]}")
    z = torch.tensor([a.GetAtomicNum() for a in heavy.GetAtoms()], dtype=torch.long)
    c = DockingComplex(
        name=source, ligand_z=z, crystal=start.clone(), start=start, matched=start.clone(), matched_rmsd=0.0,
        bonds=bonds, moving=moving, references=start[None].clone(), pocket_z=pocket[K.ATOMIC_NUMBER],
        pocket_pos=pocket[K.POSITION].to(torch.float64), pocket_centre=centre_t, has_start_conf=True,
    )
    return c, heavy


def _user_ligand(ligand: str | Path, seed: int) -> tuple[Chem.Mol, str]:
    """The ligand with hydrogens and one 3D conformer, and a name for it (file stem or the SMILES)."""
    from rdkit.Chem import AllChem

    path = Path(ligand)
    if path.suffix.lower() in (".sdf", ".mol") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"ligand file {path} does not exist")
        mol = _read_mol(path, remove_hs=False)
        name = path.stem
        conf = mol.GetConformer() if mol.GetNumConformers() else None
        if conf is not None and conf.Is3D():
            return Chem.AddHs(mol, addCoords=True), name
    else:
        with BlockLogs():
            mol = Chem.MolFromSmiles(str(ligand))
        if mol is None:
            raise ValueError(f"the ligand {str(ligand)!r} is neither a file nor a SMILES string RDKit can parse")
        name = str(ligand)
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"RDKit could not embed a 3D conformer of the ligand {name}")
    return mol, name
