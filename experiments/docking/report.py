"""Docking results of an ``eqgeo-train experiment=docking`` run (or an ``eqgeo-evaluate`` folder) as Markdown.

    python experiments/docking/report.py RUN_DIR [--output FILE] [--note TEXT]

One table per track: the model beside the two trivial baselines (no change; centroid moved to
the pocket centre), with success rate (symmetry-corrected heavy-atom RMSD < 2 Å) and median
RMSD; the starting RMSD is the "no change" row.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROWS = (("model", "eqgeo DockingModel"), ("centroid", "baseline: centroid to pocket centre"), ("start", "baseline: no change (start)"))


def report(run_dir: Path, note: str = "") -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("task") != "DockingTask":
        raise SystemExit(f"{run_dir}/metrics.json is not a docking run (task {metrics.get('task')!r})")
    test = {k: v["value"] for k, v in metrics["test"].items()}
    lines = [f"# Docking: {run_dir.name}", ""]
    if note:
        lines += [note, ""]
    data = metrics["data"]
    lines += [
        f"- complexes: {data.get('train', '?')} train / {data.get('val', '?')} validation / {data.get('test', data.get('size', '?'))} test "
        "(split by complex)",
        f"- model: {metrics.get('model', {}).get('class', 'DockingModel')}, {metrics.get('model', {}).get('parameters', '?')} weights; "
        f"{metrics.get('epochs', '?')} epochs; wall time {metrics.get('wall_time_s', '?')} s",
        f"- report made with torch {torch.__version__} on {platform.machine()} (the run's own machine is in the note above)",
        "",
    ]
    for track, title in (("a", "Track (a): pose refinement (each perturbed start is one trial)"),
                         ("b", "Track (b): pocket-given redocking (top-1 of the starts by confidence)")):
        lines += [f"## {title}", "", "| method | success (RMSD < 2 Å) | median RMSD (Å) |", "|---|---:|---:|"]
        for key, label in ROWS:
            s, m = test.get(f"{track}_{key}_success"), test.get(f"{track}_{key}_median_rmsd")
            if s is not None:
                lines.append(f"| {label} | {s:.1f} % | {m:.2f} |")
        if track == "b":
            if "b_model_oracle_success" in test:
                lines.append(f"| (best of the starts, an upper bound of ranking) | {test['b_model_oracle_success']:.1f} % | |")
            if "b_floor_median_rmsd" in test:
                lines.append(f"| (floor: start conformer with torsions matched to the crystal) | | {test['b_floor_median_rmsd']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    text = report(args.run_dir, args.note)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
