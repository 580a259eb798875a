"""``eqgeo-dock``: dock a ligand (SDF or SMILES) into a protein (PDB) about a given site with a trained model.

    eqgeo-dock CHECKPOINT PROTEIN.pdb LIGAND (--centre X Y Z | --site REFERENCE.sdf) [--output poses.sdf]
        [--starts 32] [--steps N] [--seed 0] [--pocket-radius R]

The ligand's conformer (its 3D SDF record, or RDKit's ETKDG conformer of a SMILES) is placed at
``--starts`` random orientations within 2 Å of the centre, refined by the model
(:func:`eqgeo.inference.docking.dock`, as track (b) of the benchmark), and written to ``--output`` as
an SDF, most confident first, with hydrogens placed by RDKit and, per pose, the properties
``eqgeo_rank``, ``eqgeo_confidence`` (the model's logit) and ``eqgeo_probability`` (its sigmoid: the
model's estimate that the pose is within 2 Å of the bound one). The pocket is cut as the run that
trained the model cut its pockets (its ``data.pocket_shape`` and ``data.pocket_radius``, which an
exported checkpoint carries); ``--pocket-radius`` overrides the radius. Nothing here imports
``eqgeo.training`` or Lightning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from rdkit import Chem
from torch import Tensor

__all__ = ["write_poses_sdf", "main"]


def write_poses_sdf(path: str | Path, heavy: Chem.Mol, poses: Tensor, confidence: Tensor, *, hydrogens: bool = True) -> Path:
    """Writes ``poses`` ``(S, L, 3)`` of the heavy-atom molecule ``heavy`` (its atom order) to an SDF, with
    their rank, confidence logit and probability as SD properties; ``hydrogens`` adds hydrogens at
    RDKit's positions for them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if poses.ndim != 3 or poses.shape[1:] != (heavy.GetNumAtoms(), 3) or len(confidence) != len(poses):
        raise ValueError(f"poses {tuple(poses.shape)} and confidences {tuple(confidence.shape)} do not fit a ligand of "
                         f"{heavy.GetNumAtoms()} heavy atoms")
    with Chem.SDWriter(str(path)) as writer:
        for rank, (pose, logit) in enumerate(zip(poses.tolist(), confidence.tolist()), start=1):
            mol = Chem.Mol(heavy)
            conf = mol.GetConformer()
            for i, xyz in enumerate(pose):
                conf.SetAtomPosition(i, xyz)
            if hydrogens:
                mol.UpdatePropertyCache(strict=False)
                mol = Chem.AddHs(mol, addCoords=True)
            mol.SetProp("_Name", f"{heavy.GetProp('_Name') if heavy.HasProp('_Name') else 'ligand'} pose {rank}")
            mol.SetIntProp("eqgeo_rank", rank)
            mol.SetDoubleProp("eqgeo_confidence", float(logit))
            mol.SetDoubleProp("eqgeo_probability", float(torch.sigmoid(torch.tensor(logit))))
            writer.write(mol)
    return path


def _centre(args, parser) -> list[float]:
    if (args.centre is None) == (args.site is None):
        parser.error("give the site as --centre X Y Z or as --site REFERENCE.sdf (its centroid), one of the two")
    if args.centre is not None:
        return list(args.centre)
    site = Path(args.site)
    if not site.is_file():
        parser.error(f"--site {site} does not exist")
    mol = Chem.MolFromMolFile(str(site), removeHs=False, sanitize=False)
    if mol is None or mol.GetNumConformers() == 0:
        parser.error(f"--site {site}: RDKit could not read a molecule with coordinates")
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]  # the centroid of the heavy atoms
    return mol.GetConformer().GetPositions()[heavy or list(range(mol.GetNumAtoms()))].mean(0).tolist()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="eqgeo-dock", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a docking checkpoint (eqgeo-train, eqgeo-export, or the shipped "
                        "experiments/results/checkpoints/docking.ckpt)")
    parser.add_argument("protein", help="the protein, a PDB file")
    parser.add_argument("ligand", help="the ligand: an SDF/MOL file or a SMILES string")
    parser.add_argument("--centre", type=float, nargs=3, metavar=("X", "Y", "Z"), help="the site's centre, Å")
    parser.add_argument("--site", help="an SDF whose centroid is the site's centre (e.g. a known ligand)")
    parser.add_argument("--output", default="poses.sdf", help="the SDF to write (default poses.sdf)")
    parser.add_argument("--starts", type=int, default=32, help="random starts refined (default 32)")
    parser.add_argument("--steps", type=int, default=None, help="refinement steps (default: the checkpoint's)")
    parser.add_argument("--pocket-radius", type=float, default=None, help="default: the training run's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    centre = _centre(args, parser)

    from ..datasets.docking import complex_from_inputs
    from .checkpoint import CheckpointError, read_checkpoint
    from .docking import TRACK_B, dock
    from .evaluate import _docking_settings

    try:
        checkpoint = read_checkpoint(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as error:
        parser.exit(2, f"eqgeo-dock: {error}\n")
    if checkpoint.kind != "docking":
        parser.exit(2, f"eqgeo-dock: {args.checkpoint} is a {checkpoint.kind} model, not a docking one\n")
    settings = _docking_settings(checkpoint.path, args.seed)
    shape = settings["pocket_shape"]
    if shape == "ligand":  # the run cut pockets along the bound ligand, which a new ligand does not have
        print("eqgeo-dock: the model was trained on ligand-shaped pockets; a ball of the same radius about the "
              "centre is used", file=sys.stderr)
        shape = "ball"
    radius = args.pocket_radius if args.pocket_radius is not None else settings["pocket_radius"]
    try:
        c, heavy = complex_from_inputs(args.protein, args.ligand, centre, pocket_radius=radius, pocket_shape=shape,
                                       seed=args.seed)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"eqgeo-dock: {error}\n")
    model = checkpoint.build_model()
    steps = args.steps if args.steps is not None else checkpoint.task["refine_steps"]
    poses, confidence = dock(model, c, starts=args.starts, steps=steps, step_size=checkpoint.task["step_size"],
                             offset=settings["track_b"].get("offset", TRACK_B["offset"]), seed=args.seed)
    out = write_poses_sdf(args.output, heavy, poses, confidence)
    print(f"{out}: {len(poses)} poses of {c.name} ({c.ligand_z.numel()} heavy atoms, {c.bonds.shape[1]} rotatable "
          f"bonds) in {c.pocket_z.numel()} pocket atoms ({shape}, {radius:g} Å about {[round(x, 2) for x in centre]}); "
          f"top confidence {float(torch.sigmoid(confidence[0])):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
