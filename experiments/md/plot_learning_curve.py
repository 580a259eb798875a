"""The data-efficiency figure of experiments/md/learning_curve_rmd17.sh: test force MAE against training frames,
log-log, one line per lmax, with the slope of a least-squares line through each (log10 MAE against log10 N).

    python experiments/md/plot_learning_curve.py experiments/md/results/learning_curve_rmd17 [--minutes 8]

Writes <results>.png and <results>.md (the table of every run and the slopes).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import numpy as np


def read_runs(results: Path) -> dict[int, list[dict]]:
    """``{lmax: [run, ...]}`` sorted by training frames, from the ``lmax<L>_n<N>/metrics.json`` files."""
    curves: dict[int, list[dict]] = {}
    for path in sorted(results.glob("lmax*_n*/metrics.json")):
        match = re.fullmatch(r"lmax(\d+)_n(\d+)", path.parent.name)
        if match is None:
            continue
        metrics = json.loads(path.read_text())
        if metrics["data"]["train"] != int(match[2]):
            raise ValueError(f"{path}: {metrics['data']['train']} training frames, not the {match[2]} its folder names")
        curves.setdefault(int(match[1]), []).append({
            "n": int(match[2]), "forces": metrics["test"]["forces_mae"]["value"],
            "energy": metrics["test"]["energy_mae"]["value"], "epochs": metrics["epochs"],
            "minutes": metrics["wall_time_s"] / 60.0, "parameters": metrics["model"]["parameters"],
        })
    return {lmax: sorted(runs, key=lambda r: r["n"]) for lmax, runs in sorted(curves.items())}


def slope(runs: list[dict], key: str = "forces") -> float:
    """The least-squares slope of log10 MAE against log10 training frames (NaN with fewer than two runs)."""
    if len(runs) < 2:
        return float("nan")
    return float(np.polyfit(np.log10([r["n"] for r in runs]), np.log10([r[key] for r in runs]), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--minutes", type=float, default=8.0, help="the budget of each run (for the caption)")
    args = parser.parse_args(argv)
    curves = read_runs(args.results)
    if not curves:
        parser.error(f"no lmax<L>_n<N>/metrics.json under {args.results}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for lmax, runs in curves.items():
        n = [r["n"] for r in runs]
        ax.loglog(n, [r["forces"] for r in runs], "o-", label=f"lmax {lmax} (slope {slope(runs):.2f})")
    ax.set_xlabel("training frames (rMD17 ethanol)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title(f"eqgeo conv, {args.minutes:g} min per run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    figure = args.results.with_suffix(".png")
    fig.savefig(figure, dpi=120)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# Data efficiency: rMD17 ethanol force MAE against training frames ({args.minutes:g} min per run)", "",
             f"Command: `bash experiments/md/learning_curve_rmd17.sh {args.minutes:g}` (figure: `{figure.name}`), "
             f"results at commit {commit}.", "",
             "| lmax | parameters | training frames | epochs | minutes | test energy MAE (meV) | test force MAE (meV/Å) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lmax, runs in curves.items():
        for r in runs:
            lines.append(f"| {lmax} | {r['parameters']:,} | {r['n']} | {r['epochs']} | {r['minutes']:.1f} | "
                         f"{r['energy']:.2f} | {r['forces']:.2f} |")
    lines += ["", "Slopes of log10(force MAE) against log10(training frames), least squares over each line:", ""]
    lines += [f"- lmax {lmax}: {slope(runs):.3f} (energy: {slope(runs, 'energy'):.3f})" for lmax, runs in curves.items()]
    args.results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"{figure}\n{args.results.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
