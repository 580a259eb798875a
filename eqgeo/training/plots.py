"""Figures of a run: parity plot (predicted vs true on the test set) and learning curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .tasks import display_unit  # noqa: E402

__all__ = ["parity_plot", "learning_curves"]


def parity_plot(task, loader, path: Path) -> Path:
    """Predicted against true values of every quantity of ``task`` over ``loader``, one panel each."""
    pairs: dict[str, list] = {}
    task.eval()
    for batch in loader:
        batch = batch.to(task.device) if hasattr(batch, "to") else batch  # docking: a complex index
        for name, (true, pred) in task.predictions(batch).items():
            pairs.setdefault(name, []).append((true.detach().double().cpu(), pred.detach().double().cpu()))
    fig, axes = plt.subplots(1, max(len(pairs), 1), figsize=(4.2 * max(len(pairs), 1), 4.0), squeeze=False)
    for ax, (name, chunks) in zip(axes[0], pairs.items()):
        true = torch.cat([t for t, _ in chunks])
        pred = torch.cat([p for _, p in chunks])
        unit, factor = display_unit(task.units.get(name, ""))
        mae = (pred - true).abs().mean().item() * factor
        lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(true.numpy(), pred.numpy(), s=6, alpha=0.6)
        raw_unit = task.units.get(name, "")
        ax.set_xlabel(f"true {name} ({raw_unit})" if raw_unit else f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: MAE {mae:.4g} {unit}, n={true.numel()}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _floats(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key, "")
        if value not in ("", None) and row.get("epoch", "") != "":
            y = float(value)
            if math.isfinite(y):
                xs.append(float(row["epoch"]))
                ys.append(y)
    return xs, ys


def learning_curves(metrics_csv: Path, path: Path) -> Path:
    """Training and validation loss, and validation MAEs, per epoch, from Lightning's CSV log."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = list(rows[0]) if rows else []
    fig, (ax_loss, ax_mae) = plt.subplots(1, 2, figsize=(9.0, 3.8))
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "validation")):
        xs, ys = _floats(rows, key)
        if xs:
            ax_loss.plot(xs, ys, marker="o", ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    for key in keys:
        if key.startswith("val/") and key.endswith("_mae"):
            xs, ys = _floats(rows, key)
            if xs:
                ax_mae.plot(xs, ys, marker="o", ms=3, label=key.split("/", 1)[1])
    ax_mae.set_xlabel("epoch")
    ax_mae.set_ylabel("validation MAE (reported units)")
    ax_mae.set_yscale("log")
    if ax_mae.lines:
        ax_mae.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
