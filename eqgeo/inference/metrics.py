"""Errors and metrics of trained models, the same in training (validation, test) and evaluation.

``eqgeo-train``'s tasks and ``eqgeo-evaluate`` compute their errors with the functions here and add
them up in an :class:`ErrorSums`. So a checkpoint evaluated on a run's own test split gives that
run's test metrics exactly.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

from ..data import keys as K

__all__ = ["ErrorSums", "display_unit", "property_errors", "energy_errors", "ENERGY_UNITS", "regression_metrics",
           "DIPOLE_TARGET", "scalar_targets", "property_prediction"]

# Targets in eV are reported in meV (as QM9 and rMD17 papers do).
_DISPLAY = {"eV": ("meV", 1000.0), "eV/atom": ("meV/atom", 1000.0), "eV/Å": ("meV/Å", 1000.0)}

#: Units of the errors :func:`energy_errors` returns.
ENERGY_UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Å"}


def display_unit(unit: str) -> tuple[str, float]:
    """The unit a metric in ``unit`` is reported in, and the factor to it."""
    return _DISPLAY.get(unit, (unit, 1.0))


def atoms_per_graph(batch, dtype: torch.dtype) -> Tensor:
    """The number of atoms of each graph of a PyG batch, ``(num_graphs,)``."""
    return torch.bincount(batch.batch, minlength=batch.num_graphs).to(dtype)


#: The target that a property model with a dipole head (``PropertyModel(dipole=True)``, ``task.dipole``)
#: predicts as the norm of its predicted dipole vector (charges and atomic dipoles), not by a scalar readout.
DIPOLE_TARGET = "mu"


def scalar_targets(targets: Sequence[str], dipole: bool) -> list[str]:
    """The targets a property model predicts by scalar readouts (``out["y"]``'s columns, in order)."""
    return [t for t in targets if not (dipole and t == DIPOLE_TARGET)]


def property_prediction(out: dict[str, Tensor], targets: Sequence[str], dipole: bool) -> Tensor:
    """``(G, len(targets))`` float64 predictions in the order of ``targets``, from a property model's
    readouts: ``out["y"]``'s columns (:func:`scalar_targets`) and, with ``dipole``, ``out["mu"]``
    for :data:`DIPOLE_TARGET`."""
    columns, k = [], 0
    for target in targets:
        if dipole and target == DIPOLE_TARGET:
            columns.append(out["mu"].to(torch.float64))
        else:
            columns.append(out["y"][:, k].to(torch.float64))
            k += 1
    return torch.stack(columns, dim=1)


def property_errors(pred: Tensor, batch, columns: Sequence[int], names: Sequence[str]) -> dict[str, Tensor]:
    """``{target: predicted - true}`` per graph, for the columns ``columns`` of ``batch.y``, named ``names``."""
    y = batch[K.TARGET][:, list(columns)].to(pred.dtype)
    return {name: pred[:, k] - y[:, k] for k, name in enumerate(names)}


def energy_errors(out: dict[str, Tensor], batch) -> dict[str, Tensor]:
    """Energy errors per graph (eV), per atom (eV/atom) and force errors per component (eV/Å).
    Energies are compared in float64: they are large sums of per-atom terms."""
    energy = batch[K.ENERGY].to(torch.float64).reshape(-1)
    de = out["energy"] - energy
    return {
        "energy": de,
        "energy_per_atom": de / atoms_per_graph(batch, torch.float64),
        "forces": out["forces"] - batch[K.FORCES].to(out["forces"].dtype),
    }


class ErrorSums:
    """Sums of absolute and squared errors over an epoch, per metric, and of the loss weighted by graphs.

    The metrics are exact, not batch averages. Under DDP each process sums its own shard and
    :meth:`total` adds the shards up, so the metrics are those of the whole split.
    """

    def __init__(self) -> None:
        self.abs: dict[str, float] = {}
        self.sq: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.loss, self.graphs = 0.0, 0

    def add(self, name: str, error: Tensor) -> None:
        e = error.detach().to(torch.float64)
        self.abs[name] = self.abs.get(name, 0.0) + e.abs().sum().item()
        self.sq[name] = self.sq.get(name, 0.0) + e.square().sum().item()
        self.n[name] = self.n.get(name, 0) + e.numel()

    def add_all(self, errors: dict[str, Tensor]) -> None:
        for name, error in errors.items():
            self.add(name, error)

    def add_loss(self, loss: Tensor, graphs: int) -> None:
        """A batch's mean loss over its ``graphs`` graphs (the epoch loss is the mean over all graphs)."""
        self.loss += loss.detach().to(torch.float64).item() * graphs
        self.graphs += graphs

    def total(self, names: Sequence[str], all_reduce: Callable[[Tensor], Tensor]) -> "ErrorSums":
        """The sums over all processes: ``all_reduce`` sums a float64 tensor across them (identity in one
        process). ``names`` fixes the layout, the same in every process even where a shard missed a name."""
        local = [[self.abs.get(k, 0.0), self.sq.get(k, 0.0), float(self.n.get(k, 0))] for k in names]
        summed = all_reduce(torch.tensor(local + [[self.loss, float(self.graphs), 0.0]], dtype=torch.float64))
        out = ErrorSums()
        for k, (a, s, n) in zip(names, summed.tolist()):
            out.abs[k], out.sq[k], out.n[k] = a, s, int(n)
        out.loss, out.graphs = summed[-1, 0].item(), int(summed[-1, 1].item())
        return out

    def results(self) -> dict[str, tuple[float, float]]:
        """``{name: (MAE, RMSE)}`` in the errors' own units."""
        return {k: (self.abs[k] / self.n[k], (self.sq[k] / self.n[k]) ** 0.5) for k in self.n if self.n[k]}

    def metrics(self, units: dict[str, str], prefix: str = "") -> dict[str, float]:
        """``{prefix + name_mae: value, prefix + name_rmse: value}`` in display units (meV for eV)."""
        out = {}
        for name, (mae, rmse) in self.results().items():
            factor = display_unit(units[name])[1]
            out[f"{prefix}{name}_mae"] = mae * factor
            out[f"{prefix}{name}_rmse"] = rmse * factor
        return out

    def mean_loss(self) -> Optional[float]:
        return self.loss / self.graphs if self.graphs else None


def regression_metrics(errors: Callable[[object], dict[str, Tensor]], batches: Iterable, units: dict[str, str],
                       device: torch.device) -> dict[str, dict]:
    """``{name_mae/name_rmse: {"value", "unit"}}`` over ``batches``. ``errors(batch)`` gives a batch's
    errors, as the task's test step computes them."""
    sums = ErrorSums()
    for batch in batches:
        sums.add_all(errors(batch.to(device)))
    return {name: {"value": value, "unit": display_unit(units[name.rsplit("_", 1)[0]])[0]}
            for name, value in sums.metrics(units).items()}
