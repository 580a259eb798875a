"""eqgeo's physics docking on the Astex benchmark beside AutoDock Vina: the same complexes, starts and metric.

    python experiments/docking/eqgeo_astex.py [--root ASTEX_FOLDER] [--seed 0] [--starts-b 32] [--rounds-b 10]
        [--rounds-a 10] [--box 25] [--ids 1G9V_RQ3 ...] [--results experiments/docking/results/eqgeo_astex]
        [--vina experiments/docking/results/vina_astex.json]

The search is ``eqgeo.inference.physics.search`` on ``eqgeo.inference.physics.Scorer`` (eqgeo's own
Vina-form score; nothing is learned), about the pocket centre (the crystal ligand's centroid: the
centre of Vina's box and of the model's pocket) in a ``--box`` Å cube; the protein is every heavy atom
within ``--site-radius`` Å of the centre (box half-diagonal plus the 8 Å cutoff are covered for the
ligand atoms that matter). The starts are ``eqgeo.inference.docking.benchmark_starts`` with the seed of
``eqgeo-evaluate`` and ``vina_astex.py`` (the first track-(b) start is Vina's start, and every track-(a)
start is Vina's):

- **track (a), refinement**: each perturbed crystal pose, and a copy of it with its centroid at the box
  centre (the centroid baseline's move; ``--no-recentre`` leaves it out), is optimised locally, then
  ``--rounds-a`` Monte Carlo rounds (small kicks); the lower-energy of the two is the answer, one RMSD
  per start;
- **track (b), docking**: ``--starts-b`` starts (the start conformer at random orientations, centroid
  within 2 Å of the centre), each a Monte Carlo chain of ``--rounds-b`` rounds; the lowest-energy pose
  is top-1, the best of all is an oracle (not a result).

Beside them, the trivial baselines and Vina's rows from ``--vina`` (its per-complex RMSDs and PB checks on
the same starts), and the PoseBusters ``dock`` checks of eqgeo's top-1 poses (the worker of
``vina_astex.py``, in ``.venvs/docking``). Metrics on all complexes and on those that overlap no
PoseBusters training complex. Writes ``<results>.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overlap import overlapping_astex_ids, rel  # noqa: E402
from vina_astex import REPO, _default_root, _files, _finite, run_worker, summary, table  # noqa: E402

from eqgeo.data.poses import symmetric_rmsd  # noqa: E402
from eqgeo.datasets.docking import load_docking_complexes  # noqa: E402
from eqgeo.inference.docking import TRACK_A, TRACK_B, benchmark_starts, complex_rmsds, pose_forward, refine  # noqa: E402
from eqgeo.inference.physics import complex_scorer, refine_search, search  # noqa: E402
from eqgeo.leaderboard import cpu_model  # noqa: E402

METHODS = {
    "a_learned": "(a) eqgeo learned model (refinement)",
    "a_physics": "(a) eqgeo physics search, refinement of each start",
    "a_vina": "(a) AutoDock Vina 1.2.7, local optimisation of each start",
    "a_centroid": "(a) baseline: centroid to pocket centre",
    "a_start": "(a) baseline: no change (start)",
    "b_learned": "(b) eqgeo learned model (most confident refined pose)",
    "b_learned_oracle": "(b) eqgeo learned model, best of its poses (oracle: not a result)",
    "b_physics": "(b) eqgeo physics search, docking (lowest-energy pose)",
    "b_physics_oracle": "(b) eqgeo physics search, best of its poses (oracle: not a result)",
    "b_vina": "(b) AutoDock Vina 1.2.7, docking (top-scored pose)",
    "b_vina_oracle": "(b) Vina, best of its poses (oracle: not a result)",
    "b_centroid": "(b) baseline: centroid to pocket centre (first start)",
    "b_start": "(b) baseline: no change (first start)",
}


def dock_complex(c, starts: dict, args, seed: int, learned=None) -> tuple[dict, dict, dict]:
    """eqgeo's RMSDs, top-1 poses and timings on one complex; ``learned``: ``(model, pocket complex, task)``
    adds the model's own rows and, with ``--learned-first``, refines the starts with it before the search."""
    scorer = complex_scorer(c, box=args.box)
    rows, timing = {}, {}
    if learned is not None:
        model, pocket, task = learned
        forward = pose_forward(model, pocket)
        t = time.perf_counter()
        refined, confidence = refine(model, pocket, torch.cat([starts["a"], starts["b"]]), task["refine_steps"],
                                     task["step_size"], forward=forward)
        timing["learned_s"] = time.perf_counter() - t
        a_learned, b_learned = refined.split([len(starts["a"]), len(starts["b"])])
        b_rmsd = symmetric_rmsd(b_learned, c.references)
        rows.update({"a_learned": symmetric_rmsd(a_learned, c.references).tolist(),
                     "b_learned": [float(b_rmsd[confidence[len(starts["a"]):].argmax()])],
                     "b_learned_oracle": [float(b_rmsd.min())]})
        if args.learned_first:
            starts = {"a": a_learned, "b": b_learned}
    t = time.perf_counter()
    a_poses, _ = refine_search(scorer, starts["a"], c.bonds, c.moving, recentre=not args.no_recentre,
                               rounds=args.rounds_a, translation=0.5, rotation=0.3, seed=seed)
    timing["a_s"] = time.perf_counter() - t
    t = time.perf_counter()
    b_poses, energy = search(scorer, starts["b"], c.bonds, c.moving, rounds=args.rounds_b, seed=seed + 1)
    timing["b_s"] = time.perf_counter() - t
    a_rmsd = symmetric_rmsd(a_poses.double(), c.references)
    b_rmsd = symmetric_rmsd(b_poses.double(), c.references)
    top = int(energy.argmin())
    rows.update({"a_physics": a_rmsd.tolist(), "b_physics": [float(b_rmsd[top])], "b_physics_oracle": [float(b_rmsd.min())]})
    poses = {"a_physics": a_poses.double().tolist(), "b_physics": [b_poses[top].double().tolist()]}
    return rows, poses, {**timing, "b_energy": float(energy[top])}


def learned_model(path: Path, complexes, root: Path):
    """The docking model of ``path``, its pocket of each complex (cut as its training pockets) and its task."""
    from eqgeo.inference.checkpoint import read_checkpoint
    from eqgeo.inference.evaluate import _docking_settings

    checkpoint = read_checkpoint(path)
    if checkpoint.kind != "docking":
        raise SystemExit(f"{path} is a {checkpoint.kind} checkpoint, not a docking one")
    settings = _docking_settings(checkpoint.path, None)
    pockets, report = load_docking_complexes(root, ids=[c.name for c in complexes], pocket_radius=settings["pocket_radius"],
                                             pocket_shape=settings["pocket_shape"])
    if [p.name for p in pockets] != [c.name for c in complexes]:
        raise SystemExit(f"the model's pockets could not be cut for every complex:\n{report}")
    return checkpoint.build_model(), pockets, checkpoint.task, settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=_default_root())
    parser.add_argument("--results", type=Path, default=REPO / "experiments" / "docking" / "results" / "eqgeo_astex")
    parser.add_argument("--vina", type=Path, default=REPO / "experiments" / "docking" / "results" / "vina_astex.json")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "eqgeo_astex", help="the PoseBusters worker's files")
    parser.add_argument("--seed", type=int, default=0, help="the benchmark starts' seed (eqgeo-evaluate's, vina_astex.py's)")
    parser.add_argument("--starts-b", type=int, default=32)
    parser.add_argument("--rounds-b", type=int, default=10)
    parser.add_argument("--rounds-a", type=int, default=10)
    parser.add_argument("--no-recentre", action="store_true",
                        help="track (a): search from each start only (default: also from it moved to the box centre)")
    parser.add_argument("--box", type=float, default=25.0)
    parser.add_argument("--site-radius", type=float, default=18.0)
    parser.add_argument("--ids", nargs="+", default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a docking model: its own rows beside the search's (its pockets and refinement as trained)")
    parser.add_argument("--learned-first", action="store_true",
                        help="with --checkpoint: the search starts from the model's refined poses")
    parser.add_argument("--retable", action="store_true",
                        help="only make the tables of <results>.json again, with the Vina rows of --vina")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.retable:
        return retable(args, argv)
    torch.set_num_threads(1)
    complexes, report = load_docking_complexes(args.root, ids=args.ids, pocket_radius=args.site_radius, pocket_shape="ball")
    if report.errors:
        print(f"complexes left out (not readable):\n{report}", file=sys.stderr)
    starts = benchmark_starts(complexes, TRACK_A, {**TRACK_B, "starts": args.starts_b}, args.seed)
    vina = json.loads(args.vina.read_text()) if args.vina.is_file() else None
    if vina is not None and vina["seed"] != args.seed:
        raise SystemExit(f"{args.vina} was run with seed {vina['seed']}, not {args.seed}: its starts differ")
    if args.learned_first and args.checkpoint is None:
        parser.error("--learned-first needs --checkpoint")
    learned = learned_model(args.checkpoint, complexes, args.root) if args.checkpoint is not None else None
    if args.learned_first:  # the search follows the model: its rows say so
        for track in "ab":
            METHODS[f"{track}_physics"] = METHODS[f"{track}_physics"].replace("physics search", "learned model, then physics search")
        METHODS["b_physics_oracle"] = METHODS["b_physics_oracle"].replace("physics search", "learned model, then physics search")
    rows, poses, timing = [], {}, {}
    for k, c in enumerate(complexes):
        model_inputs = None if learned is None else (learned[0], learned[1][k], learned[2])
        mine, poses[c.name], timing[c.name] = dock_complex(c, {"a": starts["a"][k], "b": starts["b"][k]}, args,
                                                           args.seed + 7 * k, model_inputs)
        row = {**complex_rmsds(None, c, {"a": starts["a"][k], "b": starts["b"][k]}), **mine}
        if vina is not None:
            theirs = vina["per_complex"][c.name]
            row.update({m: [float("inf") if v is None else v for v in theirs[m]] for m in ("a_vina", "b_vina", "b_vina_oracle")})
        rows.append(row)
        print(f"[{k + 1}/{len(complexes)}] {c.name}: (a) {[round(v, 1) for v in mine['a_physics']]}, (b) top-1 "
              f"{mine['b_physics'][0]:.2f} Å (best {mine['b_physics_oracle'][0]:.2f}); {timing[c.name]['b_s']:.1f} s", flush=True)
    bust = [{"id": f"{m}/{c.name}/{i}", "ligand_sdf": str(_files(args.root, c.name)[0]),
             "protein_pdb": str(_files(args.root, c.name)[1]), "xyz": xyz}
            for c in complexes for m in ("a_physics", "b_physics") for i, xyz in enumerate(poses[c.name][m])]
    busted = {p["id"]: p for p in run_worker("bust", {"poses": bust}, args.out)["poses"]}
    physics_failed = {i: p["failed"] or p["error"] for i, p in busted.items() if not p["pb_valid"]}
    n_a = sum(len(poses[c.name]["a_physics"]) for c in complexes)
    speed = {"a_s_per_start": sum(t["a_s"] for t in timing.values()) / n_a,
             "b_s_per_complex": sum(t["b_s"] for t in timing.values()) / len(complexes),
             "b_poses_per_s": args.starts_b * len(complexes) / sum(t["b_s"] for t in timing.values())}
    if learned is not None:  # the learned refinement: every start of both tracks, all its steps
        speed["learned_poses_per_s"] = (n_a + args.starts_b * len(complexes)) / sum(t["learned_s"] for t in timing.values())
    shown = [rel(a) if Path(a).is_absolute() else a for a in argv]
    record = {"command": shlex.join(["python", "experiments/docking/eqgeo_astex.py", *shown]), "root": rel(args.root),
              "seed": args.seed, "box_A": args.box, "site_radius_A": args.site_radius, "starts_b": args.starts_b,
              "rounds_b": args.rounds_b, "rounds_a": args.rounds_a, "recentre": not args.no_recentre, "threads": 1,
              "machine": f"{os.cpu_count()} CPU cores ({cpu_model()})", "speed": speed, "timing": timing,
              "checkpoint": rel(args.checkpoint) if args.checkpoint is not None else None, "learned_first": args.learned_first}
    write_report(record, [c.name for c in complexes], rows, physics_failed, vina, args)
    return 0


def write_report(record: dict, names: list[str], rows: list[dict], physics_failed: dict, vina: Optional[dict], args) -> None:
    """The metrics of every method on all complexes and on the clean ones, written to ``<results>.json`` / ``.md``."""
    failed_vina = set((vina or {}).get("pb_failed_checks", {}))
    vina_failed_complexes = set((vina or {}).get("failed", {}))

    def valid(method: str, name: str, count: int) -> list[bool]:
        if method.endswith("vina"):  # Vina's checks, from its run (a failed complex was never checked: not valid)
            return [name not in vina_failed_complexes and f"{method}/{name}/{i}" not in failed_vina for i in range(count)]
        return [f"{method}/{name}/{i}" not in physics_failed for i in range(count)]

    checked = [m for m in ("a_physics", "b_physics", "a_vina", "b_vina") if vina is not None or "physics" in m]
    overlapping = overlapping_astex_ids()
    subsets = {"all": names, "clean": [n for n in names if n not in overlapping]}
    stats = {}
    for subset, chosen in subsets.items():
        keep = [i for i, n in enumerate(names) if n in chosen]
        v = {m: [x for i in keep for x in valid(m, names[i], len(rows[i][m]))] for m in checked}
        stats[subset] = summary([rows[i] for i in keep], v, METHODS)
    record = {**record, "complexes": len(names), "clean_complexes": len(subsets["clean"]), "metrics": stats,
              "per_complex": dict(zip(names, rows)), "vina": rel(args.vina) if vina is not None else None,
              "pb_failed_checks": physics_failed}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(_finite(record), indent=1))
    speed = record["speed"]
    lines = ["# eqgeo's physics docking beside AutoDock Vina (eqgeo's starts and RMSD)", "",
             f"Command: `{record['command']}`; {len(names)} complexes of `{record['root']}`, seed {record['seed']}, "
             f"box {record['box_A']:g} Å, protein within {record['site_radius_A']:g} Å of the centre; track (b) "
             f"{record['starts_b']} starts x {record['rounds_b']} Monte Carlo rounds, track (a) {record['rounds_a']} "
             f"rounds per start; one CPU thread; {record['machine']}.",
             f"eqgeo: {speed['b_s_per_complex']:.1f} s per complex docking (track b, {speed['b_poses_per_s']:.1f} "
             f"poses/s), {speed['a_s_per_start']:.2f} s per refined start (track a)"
             + (f"; learned refinement {speed['learned_poses_per_s']:.1f} poses/s" if "learned_poses_per_s" in speed else "")
             + f". Vina's rows: `{record['vina']}` ({(vina or {}).get('cpu', '-')} threads)"
             + (f"; tables remade with them by `{record['retabled']}`" if record.get("retabled") else "") + ".", ""]
    lines += table(f"All {len(names)} complexes", stats["all"], METHODS)
    lines += table(f"The {len(subsets['clean'])} complexes that overlap no PoseBusters training complex "
                   "(experiments/docking/results/overlap.md)", stats["clean"], METHODS)
    args.results.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def retable(args, argv) -> int:
    """``--retable``: the tables of ``<results>.json`` made again with the Vina rows of ``--vina`` (after Vina was
    run again); eqgeo's own rows, checks and timings are the recorded ones."""
    record = json.loads(args.results.with_suffix(".json").read_text())
    vina = json.loads(args.vina.read_text())
    if vina["seed"] != record["seed"]:
        raise SystemExit(f"{args.vina} was run with seed {vina['seed']}, not {record['seed']}: its starts differ")
    names = list(record["per_complex"])
    rows = []
    for name in names:
        row = {m: [float("inf") if v is None else v for v in values] for m, values in record["per_complex"][name].items()}
        row.update({m: [float("inf") if v is None else v for v in vina["per_complex"][name][m]]
                    for m in ("a_vina", "b_vina", "b_vina_oracle")})
        rows.append(row)
    if record.get("learned_first"):
        for key in ("a_physics", "b_physics", "b_physics_oracle"):
            METHODS[key] = METHODS[key].replace("physics search", "learned model, then physics search")
    shown = [rel(a) if Path(a).is_absolute() else a for a in argv]
    record["retabled"] = shlex.join(["python", "experiments/docking/eqgeo_astex.py", *shown])
    write_report({k: v for k, v in record.items() if k not in ("metrics", "per_complex", "pb_failed_checks", "vina")},
           names, rows, record["pb_failed_checks"], vina, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
