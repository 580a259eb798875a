"""``eqgeo-dock``: dock a ligand (SDF or SMILES) into a protein (PDB) about a given site with a trained model.

    eqgeo-dock CHECKPOINT PROTEIN.pdb LIGAND (--centre X Y Z | --site REFERENCE.sdf) [--output poses.sdf]
        [--starts 32] [--rounds 10] [--box 25] [--no-physics] [--learned-first] [--steps N] [--seed 0]
        [--pocket-radius R]

The ligand's conformer (its 3D SDF record, or RDKit's ETKDG conformer of a SMILES) is placed at
``--starts`` random orientations within 2 Å of the centre (as track (b) of the benchmark). By default each
start is a Monte Carlo search on eqgeo's physics score (:func:`eqgeo.inference.physics.dock_search`: a
Vina-form score in a ``--box`` Å cube) and the poses are ranked by that score; ``--learned-first`` refines
the starts with the model before the search; ``--no-physics`` uses the model's refinement alone
(:func:`eqgeo.inference.docking.dock`), ranked by its confidence. The poses are written to ``--output`` as
an SDF, best first, with hydrogens placed by RDKit and, per pose, the properties ``eqgeo_rank``,
``eqgeo_energy`` (the physics score; not with ``--no-physics``), ``eqgeo_confidence`` (the model's logit)
and ``eqgeo_probability`` (its sigmoid: the model's estimate that the pose is within 2 Å of the bound
one). The pocket is cut as the run that
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


def write_poses_sdf(path: str | Path, heavy: Chem.Mol, poses: Tensor, confidence: Tensor, *, hydrogens: bool = True,
                    energy: Optional[Tensor] = None) -> Path:
    """Writes ``poses`` ``(S, L, 3)`` of the heavy-atom molecule ``heavy`` (its atom order) to an SDF, with
    their rank, confidence logit and probability (and ``energy``, the physics score, when given) as SD
    properties; ``hydrogens`` adds hydrogens at RDKit's positions for them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if (poses.ndim != 3 or poses.shape[1:] != (heavy.GetNumAtoms(), 3) or len(confidence) != len(poses)
            or (energy is not None and len(energy) != len(poses))):
        raise ValueError(f"poses {tuple(poses.shape)}, confidences {tuple(confidence.shape)} and energies "
                         f"{None if energy is None else tuple(energy.shape)} do not fit a ligand of "
                         f"{heavy.GetNumAtoms()} heavy atoms")
    energies = [None] * len(poses) if energy is None else energy.tolist()
    with Chem.SDWriter(str(path)) as writer:
        for rank, (pose, logit, e) in enumerate(zip(poses.tolist(), confidence.tolist(), energies), start=1):
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
            if e is not None:
                mol.SetDoubleProp("eqgeo_energy", float(e))
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
    parser.add_argument("--physics", action=argparse.BooleanOptionalAction, default=True,
                        help="search each start on eqgeo's physics score and rank by it (default); --no-physics: "
                             "the model's refinement alone, ranked by its confidence")
    parser.add_argument("--rounds", type=int, default=10, help="Monte Carlo rounds of the physics search (default 10)")
    parser.add_argument("--box", type=float, default=25.0, help="edge of the physics search box, Å (default 25)")
    parser.add_argument("--site-radius", type=float, default=18.0,
                        help="protein atoms within this distance of the centre are scored (default 18 Å)")
    parser.add_argument("--learned-first", action="store_true",
                        help="refine the starts with the model before the physics search")
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
    offset = settings["track_b"].get("offset", TRACK_B["offset"])
    energy = None
    if args.physics:
        from .docking import track_b_starts
        from .physics import dock_search

        try:
            site, _ = complex_from_inputs(args.protein, args.ligand, centre, pocket_radius=args.site_radius,
                                          pocket_shape="ball", seed=args.seed)
            poses, energy, confidence = dock_search(
                site, track_b_starts(c, args.starts, args.seed, offset=offset), rounds=args.rounds, box=args.box,
                seed=args.seed, model=model, pocket=c, learned_first=args.learned_first, steps=steps,
                step_size=checkpoint.task["step_size"])
        except ValueError as error:
            parser.exit(2, f"eqgeo-dock: {error}\n")
    else:
        poses, confidence = dock(model, c, starts=args.starts, steps=steps, step_size=checkpoint.task["step_size"],
                                 offset=offset, seed=args.seed)
    out = write_poses_sdf(args.output, heavy, poses, confidence, energy=energy)
    ranked = (f"ranked by the physics score, best {float(energy[0]):.2f}" if energy is not None
              else f"top confidence {float(torch.sigmoid(confidence[0])):.2f}")
    print(f"{out}: {len(poses)} poses of {c.name} ({c.ligand_z.numel()} heavy atoms, {c.bonds.shape[1]} rotatable "
          f"bonds) in {c.pocket_z.numel()} pocket atoms ({shape}, {radius:g} Å about {[round(x, 2) for x in centre]}); "
          f"{ranked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
