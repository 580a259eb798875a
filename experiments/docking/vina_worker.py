"""AutoDock Vina and PoseBusters, run inside ``.venvs/docking`` for ``experiments/docking/vina_astex.py``.

    .venvs/docking/bin/python experiments/docking/vina_worker.py dock JOB.json OUT.json
    .venvs/docking/bin/python experiments/docking/vina_worker.py bust JOB.json OUT.json

Nothing of eqgeo is imported here (the venv has no torch): the driver gives poses as heavy-atom
coordinates in the order of the crystal ligand's SDF and scores what comes back with eqgeo's
symmetry-corrected RMSD.

``dock``: for each complex of the job,

- the receptor: the protein PDB without waters (cofactors, ions and other hetero groups kept), hydrogens
  added at pH 7.4 and written as a rigid PDBQT by Open Babel (``obabel -xr -h -p 7.4``); atoms of a type
  Vina cannot read (e.g. vanadium) are left out and listed in ``receptor_dropped``;
- the ligand: the crystal SDF's heavy-atom topology at the given coordinates, hydrogens added by RDKit
  (``AddHs(addCoords=True)``), prepared by meeko 0.8 (``MoleculePreparation``: AutoDock atom types, Gasteiger
  charges, rotatable bonds);
- Vina 1.2.7's ``vina`` scoring function, maps in a cube of ``box`` Å about ``centre``; track (a): a local
  optimisation (``Vina.optimize``) of each start, its maps widened along an axis where the start reaches
  within 2 Å of the box's face, and by 10 Å more (twice at most) when the optimisation carries the ligand
  off them (the edges used: ``a_boxes``); track (b): ``Vina.dock`` (``exhaustiveness``, ``n_poses``,
  ``seed``) of the first track-(b) start (Vina draws its own starting positions, orientations and torsions
  in the box: the start's ring and bond geometry is what it keeps);
- every pose mapped back to the crystal heavy-atom order by a substructure match of the topology
  (bond orders compared when they agree, else only the graph); which of the symmetric matches is
  taken does not matter, the driver's RMSD is symmetry-corrected.

A complex that fails is reported with its error (``"error"``), never left out.

``bust``: the PoseBusters ``dock`` checks (chemical validity and consistency, geometry, clashes and
volume overlap with the protein, energy ratio) of each pose SDF against its protein PDB: per pose the
checks that failed and ``pb_valid`` (all passed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from rdkit import Chem

OBABEL = Path(sys.executable).parent / "obabel"


#: The AutoDock atom types Vina's ``vina`` scoring function reads in a receptor (case as Open Babel writes them).
VINA_TYPES = {"C", "A", "N", "NA", "NS", "OA", "OS", "SA", "S", "H", "HD", "HS", "F", "P", "Cl", "CL", "Br", "BR",
              "I", "Mg", "MG", "Ca", "CA", "Mn", "MN", "Fe", "FE", "Zn", "ZN", "Si", "SI", "B"}


def receptor_pdbqt(protein: Path, out: Path) -> tuple[Path, list[str]]:
    """The protein without waters as a rigid Vina receptor (Open Babel, hydrogens at pH 7.4), and the
    receptor atoms left out because Vina has no type for them (e.g. a vanadate's V), each as its PDBQT line."""
    dry = out.with_suffix(".pdb")
    dry.write_text("".join(line for line in protein.read_text().splitlines(keepends=True)
                           if not (line.startswith(("ATOM", "HETATM")) and line[17:20] in ("HOH", "WAT", "DOD"))))
    run = subprocess.run([str(OBABEL), "-ipdb", str(dry), "-xr", "-h", "-p", "7.4", "-opdbqt", "-O", str(out)],
                         capture_output=True, text=True)
    if run.returncode != 0 or not out.is_file() or "ATOM" not in out.read_text():
        raise RuntimeError(f"{protein}: Open Babel wrote no receptor PDBQT: {run.stderr.strip()}")
    kept, dropped = [], []
    for line in out.read_text().splitlines(keepends=True):
        if line.startswith(("ATOM", "HETATM")) and line[77:79].strip() not in VINA_TYPES:
            dropped.append(line.rstrip())
        else:
            kept.append(line)
    out.write_text("".join(kept))
    return out, dropped


def box_for(centre, box: float, xyz) -> list[float]:
    """The edges of a box about ``centre``: ``box`` Å, or wider along an axis where the pose ``xyz`` reaches
    within 2 Å of a face (Vina refuses to optimise a ligand outside its maps)."""
    reach = np.abs(np.asarray(xyz, dtype=float) - np.asarray(centre, dtype=float)).max(0)
    return [max(box, 2 * (float(r) + 2.0)) for r in reach]


def heavy_ligand(sdf: Path) -> Chem.Mol:
    mol = Chem.MolFromMolFile(str(sdf), removeHs=False, sanitize=True)
    if mol is None:
        raise ValueError(f"{sdf}: RDKit could not read the ligand")
    return Chem.RemoveHs(mol)


def with_coordinates(heavy: Chem.Mol, xyz) -> Chem.Mol:
    """``heavy`` (one conformer) at the coordinates ``xyz`` (L, 3), in its atom order."""
    xyz = np.asarray(xyz, dtype=float)
    if xyz.shape != (heavy.GetNumAtoms(), 3):
        raise ValueError(f"{xyz.shape[0]} coordinates for a ligand of {heavy.GetNumAtoms()} heavy atoms")
    mol = Chem.Mol(heavy)
    conf = mol.GetConformer()
    for i, p in enumerate(xyz):
        conf.SetAtomPosition(i, p.tolist())
    return mol


def ligand_pdbqt(heavy: Chem.Mol, xyz) -> str:
    from meeko import MoleculePreparation, PDBQTWriterLegacy

    mol = Chem.AddHs(with_coordinates(heavy, xyz), addCoords=True)
    setups = MoleculePreparation().prepare(mol)
    text, ok, error = PDBQTWriterLegacy.write_string(setups[0])
    if not ok:
        raise RuntimeError(f"meeko could not write the ligand PDBQT: {error}")
    return text


def _generic_bonds(mol: Chem.Mol) -> Chem.Mol:
    params = Chem.AdjustQueryParameters.NoAdjustments()
    params.makeBondsGeneric = True
    return Chem.AdjustQueryProperties(mol, params)


def poses_in_crystal_order(pdbqt: str, heavy: Chem.Mol) -> list[list[list[float]]]:
    """Every pose of a Vina PDBQT as heavy-atom coordinates in ``heavy``'s atom order."""
    from meeko import PDBQTMolecule, RDKitMolCreate

    mol = RDKitMolCreate.from_pdbqt_mol(PDBQTMolecule(pdbqt, is_dlg=False, skip_typing=True))[0]
    mol = Chem.RemoveHs(mol, sanitize=False)
    order = mol.GetSubstructMatch(heavy) or mol.GetSubstructMatch(_generic_bonds(heavy))
    if len(order) != heavy.GetNumAtoms():
        raise RuntimeError(f"Vina's pose ({mol.GetNumAtoms()} heavy atoms) does not match the ligand's topology")
    return [conf.GetPositions()[list(order)].tolist() for conf in mol.GetConformers()]


def dock_complex(job: dict, spec: dict, work: Path) -> dict:
    from vina import Vina

    out: dict = {"name": spec["name"], "error": None}
    try:
        heavy = heavy_ligand(Path(spec["ligand_sdf"]))
        start = time.perf_counter()
        receptor, out["receptor_dropped"] = receptor_pdbqt(Path(spec["protein_pdb"]), work / f"{spec['name']}_receptor.pdbqt")
        out["receptor_s"] = time.perf_counter() - start
        box = [job["box"]] * 3

        def vina_for(xyz, size=box) -> Vina:
            v = Vina(sf_name="vina", cpu=job["cpu"], seed=job["seed"], verbosity=0)
            v.set_receptor(str(receptor))
            v.set_ligand_from_string(ligand_pdbqt(heavy, xyz))
            v.compute_vina_maps(center=spec["centre"], box_size=size)
            return v

        start = time.perf_counter()
        out["a_poses"], out["a_energies"], out["a_boxes"] = [], [], []
        for k, xyz in enumerate(spec["a_starts"]):
            size = box_for(spec["centre"], job["box"], xyz)  # a start may reach past the box
            for attempt in range(3):  # the optimisation may carry the ligand off the maps: wider maps, again
                v = vina_for(xyz, size)
                try:
                    energy = float(v.optimize()[0])
                    break
                except RuntimeError as error:
                    if "outside the grid box" not in str(error) or attempt == 2:
                        raise
                    size = [edge + 10.0 for edge in size]
            out["a_boxes"].append(size)
            out["a_energies"].append(energy)
            pose = work / f"{spec['name']}_a{k}.pdbqt"
            v.write_pose(str(pose), overwrite=True)
            out["a_poses"].append(poses_in_crystal_order(pose.read_text(), heavy)[0])
        out["a_s"] = time.perf_counter() - start
        start = time.perf_counter()
        v = vina_for(spec["b_start"])
        v.dock(exhaustiveness=job["exhaustiveness"], n_poses=job["n_poses"])
        out["b_energies"] = [float(e) for e in v.energies(n_poses=job["n_poses"])[:, 0]]
        out["b_poses"] = poses_in_crystal_order(v.poses(n_poses=job["n_poses"]), heavy)
        out["b_s"] = time.perf_counter() - start  # maps, search and the poses' conversion
    except Exception as error:  # noqa: BLE001  reported per complex, with its name
        out["error"] = f"{type(error).__name__}: {error}"
        out["traceback"] = traceback.format_exc(limit=3)
    return out


def dock(job: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for k, spec in enumerate(job["complexes"]):
            results.append(dock_complex(job, spec, Path(tmp)))
            r = results[-1]
            status = r["error"] or f"track (b) {r['b_s']:.1f} s, track (a) {r['a_s']:.1f} s"
            print(f"[{k + 1}/{len(job['complexes'])}] {spec['name']}: {status}", flush=True)
    return {"complexes": results}


def bust(job: dict) -> dict:
    """PoseBusters ``dock`` checks of each pose: ``{"poses": [{"id", "pb_valid", "failed": [...]}]}``."""
    from posebusters import PoseBusters

    buster = PoseBusters(config="dock")
    with tempfile.TemporaryDirectory() as tmp:
        out = []
        for k, pose in enumerate(job["poses"]):
            sdf = Path(tmp) / f"pose{k}.sdf"
            mol = with_coordinates(heavy_ligand(Path(pose["ligand_sdf"])), pose["xyz"])
            with Chem.SDWriter(str(sdf)) as writer:
                writer.write(mol)
            try:
                table = buster.bust(mol_pred=str(sdf), mol_cond=pose["protein_pdb"], full_report=False)
                checks = {str(c): bool(v) for c, v in table.iloc[0].items() if isinstance(v, (bool, np.bool_))}
                out.append({"id": pose["id"], "pb_valid": all(checks.values()),
                            "failed": sorted(c for c, v in checks.items() if not v), "error": None})
            except Exception as error:  # noqa: BLE001  reported per pose
                out.append({"id": pose["id"], "pb_valid": False, "failed": [], "error": f"{type(error).__name__}: {error}"})
    return {"poses": out}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("dock", "bust"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    result = dock(job) if argv[0] == "dock" else bust(job)
    Path(argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
