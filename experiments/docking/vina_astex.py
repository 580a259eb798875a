"""AutoDock Vina on eqgeo's docking benchmark: the same complexes, the same starts, the same metric.

    python experiments/docking/vina_astex.py [--root ASTEX_FOLDER] [--out runs/vina_astex] [--seed 0]
        [--box 25] [--exhaustiveness 8] [--cpu 2] [--ids 1G9V_RQ3 ...] [--results experiments/docking/results/vina_astex]

Vina runs in its own environment (``experiments/peers/setup.sh docking`` makes ``.venvs/docking``;
``experiments/docking/vina_worker.py`` is the part that runs there). This script, in eqgeo's
environment, makes the benchmark's starts with ``eqgeo.inference.docking.benchmark_starts`` (the
seed and ``TRACK_A`` / ``TRACK_B`` that ``eqgeo-evaluate`` uses, so the model's and Vina's starts are
identical), hands them to the worker, and scores what comes back with eqgeo's symmetry-corrected
heavy-atom RMSD (``symmetric_rmsd`` against every crystal copy):

- **track (a), Vina local optimisation**: each perturbed crystal pose (4 per complex) optimised by
  Vina's BFGS in its scoring function (position, orientation, torsions), one RMSD per start;
- **track (b), Vina docking** in a ``--box`` Å cube about the pocket centre (the crystal ligand's
  centroid: the same centre as the model's pocket), from the first track-(b) start (the RDKit start
  conformer; Vina draws its own positions, orientations and torsions): the top-scored pose is
  top-1; the best of its ``--n-poses`` poses is reported as an oracle (not a result).

Beside them, the two trivial baselines of ``complex_rmsds`` on the same starts (no change; centroid
moved to the pocket centre), and the PoseBusters ``dock`` checks of each method's top-1 poses (% valid,
% valid and < 2 Å; the worker's ``bust``). Every metric is given on all complexes and on the ones that
overlap none of the PoseBusters training set (``overlap.overlapping_astex_ids``). Complexes Vina
fails on are named and counted as failures (RMSD infinite), never dropped.

Writes ``<out>/vina.json`` (the worker's raw poses and energies), and ``<results>.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overlap import overlapping_astex_ids, rel  # noqa: E402  the sibling script's helpers

from eqgeo.data.poses import symmetric_rmsd  # noqa: E402
from eqgeo.datasets.docking import DockingComplex, load_docking_complexes  # noqa: E402
from eqgeo.inference.docking import SUCCESS_RMSD, TRACK_A, TRACK_B, benchmark_starts, complex_rmsds  # noqa: E402
from eqgeo.leaderboard import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOCKING_PYTHON = REPO / ".venvs" / "docking" / "bin" / "python"
WORKER = Path(__file__).resolve().parent / "vina_worker.py"
METHODS = {  # name -> what the table calls it
    "a_vina": "(a) AutoDock Vina 1.2.7, local optimisation of each start",
    "a_centroid": "(a) baseline: centroid to pocket centre",
    "a_start": "(a) baseline: no change (start)",
    "b_vina": "(b) AutoDock Vina 1.2.7, docking (top-scored pose)",
    "b_vina_oracle": "(b) Vina, best of its poses (oracle: not a result)",
    "b_centroid": "(b) baseline: centroid to pocket centre (first start)",
    "b_start": "(b) baseline: no change (first start)",
}


def _default_root() -> Path:
    shared = Path(os.environ.get("EQGEO_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared / "complexes" / "posebusters_paper_data" / "astex_diverse_set"


def _files(root: Path, name: str) -> tuple[Path, Path]:
    return root / name / f"{name}_ligand.sdf", root / name / f"{name}_protein.pdb"


def run_worker(command: str, job: dict, work: Path) -> dict:
    """The worker's ``command`` (``dock`` or ``bust``) on ``job`` in the docking venv."""
    if not DOCKING_PYTHON.exists():
        raise SystemExit(f"{rel(DOCKING_PYTHON)} is missing: run experiments/peers/setup.sh docking")
    work.mkdir(parents=True, exist_ok=True)
    job_path, out_path = work / f"{command}_job.json", work / f"{command}.json"
    job_path.write_text(json.dumps(job))
    subprocess.run([str(DOCKING_PYTHON), str(WORKER), command, str(job_path), str(out_path)], check=True)
    return json.loads(out_path.read_text())


def dock_job(complexes: list[DockingComplex], starts: dict, root: Path, args) -> dict:
    specs = []
    for k, c in enumerate(complexes):
        ligand, protein = _files(root, c.name)
        specs.append({"name": c.name, "ligand_sdf": str(ligand), "protein_pdb": str(protein),
                      "centre": c.pocket_centre.tolist(), "a_starts": starts["a"][k].tolist(),
                      "b_start": starts["b"][k][0].tolist()})
    return {"box": args.box, "exhaustiveness": args.exhaustiveness, "n_poses": args.n_poses, "cpu": args.cpu,
            "seed": args.seed, "complexes": specs}


def vina_rmsds(c: DockingComplex, result: dict) -> dict[str, list[float]]:
    """Vina's RMSDs on one complex (the failed ones infinite: a failure, never a gap)."""
    if result["error"] is not None:
        inf = float("inf")
        return {"a_vina": [inf] * TRACK_A["starts"], "b_vina": [inf], "b_vina_oracle": [inf]}
    a = symmetric_rmsd(torch.tensor(result["a_poses"], dtype=torch.float64), c.references)
    b = symmetric_rmsd(torch.tensor(result["b_poses"], dtype=torch.float64), c.references)
    return {"a_vina": a.tolist(), "b_vina": [float(b[0])], "b_vina_oracle": [float(b.min())]}


def summary(rows: list[dict[str, list[float]]], valid: dict[str, list[bool]] | None = None,
            methods: dict[str, str] = METHODS) -> dict[str, dict]:
    """Per method: success (% < 2 Å), median RMSD (Å), count, and, for checked methods, % PB-valid and %
    valid and < 2 Å."""
    out = {}
    for method in methods:
        values = torch.tensor([v for r in rows for v in r.get(method, [])], dtype=torch.float64)
        if values.numel() == 0:
            continue
        entry = {"success": 100.0 * float((values < SUCCESS_RMSD).double().mean()),
                 "median_rmsd": float(torch.quantile(values, 0.5)), "count": int(values.numel())}
        if valid is not None and method in valid:
            ok = torch.tensor(valid[method], dtype=torch.bool)
            entry["pb_valid"] = 100.0 * float(ok.double().mean())
            entry["pb_valid_success"] = 100.0 * float((ok & (values < SUCCESS_RMSD)).double().mean())
        out[method] = entry
    return out


def bust_job(complexes, results, root: Path) -> dict:
    """The top-1 poses of Vina's two tracks (every track-(a) start; track (b)'s top-scored pose)."""
    poses = []
    for c, r in zip(complexes, results):
        if r["error"] is not None:
            continue
        ligand, protein = _files(root, c.name)
        for k, xyz in enumerate(r["a_poses"]):
            poses.append({"id": f"a_vina/{c.name}/{k}", "ligand_sdf": str(ligand), "protein_pdb": str(protein), "xyz": xyz})
        poses.append({"id": f"b_vina/{c.name}/0", "ligand_sdf": str(ligand), "protein_pdb": str(protein),
                      "xyz": r["b_poses"][0]})
    return {"poses": poses}


def validity(complexes, results, busted: dict) -> dict[str, dict[str, list[bool]]]:
    """``{"a_vina": {name: [valid per start]}, "b_vina": {name: [valid]}}`` (a failed complex: not valid)."""
    by_id = {p["id"]: p["pb_valid"] for p in busted["poses"]}
    out: dict[str, dict[str, list[bool]]] = {"a_vina": {}, "b_vina": {}}
    for c, r in zip(complexes, results):
        out["a_vina"][c.name] = [by_id.get(f"a_vina/{c.name}/{k}", False) for k in range(TRACK_A["starts"])]
        out["b_vina"][c.name] = [by_id.get(f"b_vina/{c.name}/0", False)]
    return out


def _finite(obj):
    """``obj`` with every infinite RMSD (a failed complex) written as null: JSON has no infinity."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and math.isinf(obj) else obj


def table(title: str, stats: dict[str, dict], methods: dict[str, str] = METHODS) -> list[str]:
    lines = [f"**{title}**", "", "| method | poses | success (< 2 Å, %) | median RMSD (Å) | PB-valid (%) | PB-valid and < 2 Å (%) |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, label in methods.items():
        s = stats.get(method)
        if s is None:
            continue
        pb = (f"{s['pb_valid']:.1f} | {s['pb_valid_success']:.1f}" if "pb_valid" in s else "– | –")
        lines.append(f"| {label} | {s['count']} | {s['success']:.1f} | {s['median_rmsd']:.2f} | {pb} |")
    return lines + [""]


def _short(error: str) -> str:
    """An error message on one line, at most 120 characters (Vina's run over several)."""
    text = " ".join(error.split())
    return text if len(text) <= 120 else text[:117] + "..."


def _previous_rows(previous: dict, name: str) -> tuple[dict[str, list[float]], dict[str, list[bool]]]:
    """A complex's rows and PoseBusters verdicts as an earlier run of this script recorded them."""
    row = {m: [float("inf") if v is None else v for v in values] for m, values in previous["per_complex"][name].items()}
    failed_checks, failed = previous["pb_failed_checks"], name in previous["failed"]
    valid = {"a_vina": [not failed and f"a_vina/{name}/{k}" not in failed_checks for k in range(len(row["a_vina"]))],
             "b_vina": [not failed and f"b_vina/{name}/0" not in failed_checks]}
    return row, valid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=_default_root(), help="folder of complex folders (default: Astex)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "vina_astex")
    parser.add_argument("--results", type=Path, default=REPO / "experiments" / "docking" / "results" / "vina_astex")
    parser.add_argument("--seed", type=int, default=0, help="the benchmark starts' seed (eqgeo-evaluate's) and Vina's")
    parser.add_argument("--box", type=float, default=25.0, help="edge (Å) of Vina's cubic box about the pocket centre")
    parser.add_argument("--exhaustiveness", type=int, default=8)
    parser.add_argument("--n-poses", type=int, default=9)
    parser.add_argument("--cpu", type=int, default=2)
    parser.add_argument("--ids", nargs="+", default=None, help="only these complexes")
    parser.add_argument("--rerun-failed", action="store_true",
                        help="run again only the complexes that failed in <results>.json (same settings) and merge "
                             "them into it; the other complexes keep their recorded rows")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    previous = None
    if args.rerun_failed:
        previous = json.loads(args.results.with_suffix(".json").read_text())
        settings = {"seed": args.seed, "box_A": args.box, "exhaustiveness": args.exhaustiveness, "n_poses": args.n_poses,
                    "cpu": args.cpu, "root": rel(args.root)}
        differ = {k: (previous[k], v) for k, v in settings.items() if previous[k] != v}
        if differ:
            parser.error(f"--rerun-failed needs the settings of {args.results}.json; these differ (recorded, given): {differ}")
        if args.ids is not None:
            parser.error("--rerun-failed runs the recorded failures: leave out --ids")
        if not previous["failed"]:
            parser.error(f"nothing failed in {args.results}.json")
        args.ids = list(previous["per_complex"])
    complexes, report = load_docking_complexes(args.root, ids=args.ids)
    if report.errors:
        print(f"complexes left out (not readable):\n{report}", file=sys.stderr)
    keep = [i for i, c in enumerate(complexes) if previous is None or c.name in previous["failed"]]
    todo = [complexes[i] for i in keep]  # the complexes to run (again), in order
    starts_all = benchmark_starts(complexes, TRACK_A, TRACK_B, args.seed)
    starts = {t: [starts_all[t][i] for i in keep] for t in starts_all}
    start = time.perf_counter()
    results = run_worker("dock", dock_job(todo, starts, args.root, args), args.out)["complexes"]
    wall = time.perf_counter() - start
    fresh_rows = {}
    for k, (c, r) in enumerate(zip(todo, results)):
        if r["name"] != c.name:
            raise RuntimeError(f"the worker's complex {k} is {r['name']}, not {c.name}")
        fresh_rows[c.name] = {**complex_rmsds(None, c, {"a": starts["a"][k], "b": starts["b"][k]}), **vina_rmsds(c, r)}
    busted = run_worker("bust", bust_job(todo, results, args.root), args.out)
    fresh_valid = validity(todo, results, busted)
    rows, valid_by_complex = [], {"a_vina": {}, "b_vina": {}}
    for c in complexes:
        if c.name in fresh_rows:
            rows.append(fresh_rows[c.name])
            for m in valid_by_complex:
                valid_by_complex[m][c.name] = fresh_valid[m][c.name]
        else:
            row, valid = _previous_rows(previous, c.name)
            rows.append(row)
            for m in valid_by_complex:
                valid_by_complex[m][c.name] = valid[m]
    overlapping = overlapping_astex_ids()
    subsets = {"all": [c.name for c in complexes], "clean": [c.name for c in complexes if c.name not in overlapping]}
    stats = {}
    for subset, names in subsets.items():
        keep = [i for i, c in enumerate(complexes) if c.name in names]
        valid = {m: [v for i in keep for v in valid_by_complex[m][complexes[i].name]] for m in valid_by_complex}
        stats[subset] = summary([rows[i] for i in keep], valid)
    failed = {r["name"]: r["error"] for r in results if r["error"] is not None}
    ok = [r for r in results if r["error"] is None]
    timing = {"wall_s": wall, "per_complex_docking_s": sum(r["b_s"] for r in ok) / max(len(ok), 1),
              "per_start_local_s": sum(r["a_s"] for r in ok) / max(len(ok) * TRACK_A["starts"], 1),
              "per_complex_receptor_s": sum(r["receptor_s"] for r in ok) / max(len(ok), 1)}
    shown = [rel(a) if Path(a).is_absolute() else a for a in argv]  # no path of this machine in the results
    command = shlex.join(["python", "experiments/docking/vina_astex.py", *shown])
    pb_failed = {p["id"]: p["failed"] or p["error"] for p in busted["poses"] if not p["pb_valid"]}
    record = {"command": command, "root": rel(args.root), "complexes": len(complexes), "clean_complexes": len(subsets["clean"]),
              "seed": args.seed, "box_A": args.box, "exhaustiveness": args.exhaustiveness, "n_poses": args.n_poses,
              "cpu": args.cpu, "tracks": {"a": TRACK_A, "b": TRACK_B}, "failed": failed, "timing": timing,
              "machine": f"{os.cpu_count()} CPU cores ({cpu_model()})",
              "receptor_dropped": {r["name"]: r["receptor_dropped"] for r in ok if r.get("receptor_dropped")},
              "metrics": stats, "per_complex": {c.name: r for c, r in zip(complexes, rows)}, "pb_failed_checks": pb_failed}
    if previous is not None:  # the earlier run's record stays, with what this one changed
        record.update({"command": previous["command"], "timing": previous["timing"],
                       "receptor_dropped": {**previous.get("receptor_dropped", {}), **record["receptor_dropped"]},
                       "pb_failed_checks": {**{k: v for k, v in previous["pb_failed_checks"].items()
                                               if k.split("/")[1] not in previous["failed"]}, **pb_failed},
                       "reruns": [*previous.get("reruns", []), {"command": command, "complexes": sorted(previous["failed"]),
                                                                "earlier_errors": previous["failed"], "timing": timing}]})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(_finite(record), indent=1))
    timing = record["timing"]
    lines = ["# AutoDock Vina on the docking benchmark (eqgeo's starts and RMSD)", "",
             f"Command: `{record['command']}`; {len(complexes)} complexes of `{record['root']}`, seed {args.seed}, "
             f"box {args.box:g} Å, exhaustiveness {args.exhaustiveness}, {args.cpu} CPU threads; {record['machine']}.",
             f"Vina: {timing['per_complex_docking_s']:.1f} s per complex docking (track b), "
             f"{timing['per_start_local_s']:.2f} s per local optimisation (track a), receptor preparation "
             f"{timing['per_complex_receptor_s']:.1f} s; failed: {', '.join(f'{k} ({_short(v)})' for k, v in failed.items()) or 'none'}."]
    for rerun in record.get("reruns", []):
        lines.append(f"Run again with `{rerun['command']}` (after fixing what failed): "
                     + "; ".join(f"{k} ({_short(v)})" for k, v in rerun["earlier_errors"].items()) + ".")
    if record["receptor_dropped"]:
        lines.append("Receptor atoms Vina has no type for, left out: " + "; ".join(
            f"{k}: {len(v)} ({', '.join(line[12:26].strip() for line in v)})" for k, v in record["receptor_dropped"].items()) + ".")
    lines.append("")
    lines += table(f"All {len(complexes)} complexes", stats["all"])
    lines += table(f"The {len(subsets['clean'])} complexes that overlap no PoseBusters training complex (experiments/docking/results/overlap.md)", stats["clean"])
    args.results.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
