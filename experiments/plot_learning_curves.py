"""Learning curves of equal-budget runs: validation MAE against training wall time, one line per run, from
the ``validation_history`` (with ``time_s``) of each run's ``metrics.json``.

    python experiments/plot_learning_curves.py experiments/qm9/results/budget_qm9/gap --metric gap_mae
    python experiments/plot_learning_curves.py experiments/md/results/budget_rmd17 --metric forces_mae

Writes ``<folder>_learning_curves.png`` next to the folder (log-scale MAE), and prints each run's last value.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curves(folder: Path, metric: str) -> dict[str, tuple[list[float], list[float], str]]:
    """``{run: (minutes, values, unit)}`` of every ``<run>/metrics.json`` under ``folder`` that logged
    ``val/<metric>`` with times."""
    out = {}
    for path in sorted(folder.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        history = [h for h in metrics.get("validation_history", []) if "time_s" in h and f"val/{metric}" in h]
        if history:
            unit = metrics.get("test", {}).get(metric, {}).get("unit", "")
            out[path.parent.name] = ([h["time_s"] / 60.0 for h in history], [h[f"val/{metric}"] for h in history], unit)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of run folders, each with metrics.json")
    parser.add_argument("--metric", required=True, help="a validation metric without its prefix: gap_mae, forces_mae")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    lines = curves(args.folder, args.metric)
    if not lines:
        parser.error(f"no run under {args.folder} has a validation history of val/{args.metric} with times (time_s)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (minutes, values, unit) in lines.items():
        ax.plot(minutes, values, label=name)
        print(f"{name}: {values[-1]:.4g} {unit} after {minutes[-1]:.1f} min")
    unit = next(iter(lines.values()))[2]
    ax.set_yscale("log")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel(f"validation {args.metric.replace('_', ' ')} ({unit})")
    ax.set_title(args.title or args.folder.name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = args.folder.parent / f"{args.folder.name}_learning_curves.png"
    fig.savefig(out, dpi=120)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
