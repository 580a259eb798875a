"""Lightning tasks: loss, metrics and optimiser around a plain eqgeo model.

The network is an ordinary ``torch.nn.Module`` from :mod:`eqgeo.models`, built from the
architecture arguments and the training-data statistics, both stored as hyperparameters (plain
numbers and lists), so a checkpoint rebuilds the model with ``Task.load_from_checkpoint`` and
loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import lightning as L
import torch

from ..data import keys as K
from ..models import build_model

__all__ = ["PropertyTask", "EnergyForcesTask", "display_unit"]

# Targets in eV are reported in meV (as QM9 and rMD17 papers do).
_DISPLAY = {"eV": ("meV", 1000.0), "eV/atom": ("meV/atom", 1000.0), "eV/Å": ("meV/Å", 1000.0)}


def display_unit(unit: str) -> tuple[str, float]:
    """The unit a metric in ``unit`` is reported in, and the factor to it."""
    return _DISPLAY.get(unit, (unit, 1.0))


def adam(params, **options) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused implementation where every parameter allows it (CPU or
    CUDA floating-point tensors): one kernel for all parameters instead of a loop over them,
    about 1 ms less per step for an 80,000-weight potential on one CPU core. Same update."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, fused=fused or None, **options)


def adam_with_plateau(task: L.LightningModule) -> dict:
    """Adam, and ReduceLROnPlateau on ``val/loss``, from the task's ``lr``, ``weight_decay``,
    ``lr_factor`` and ``lr_patience`` hyperparameters (every eqgeo task trains this way)."""
    hp = task.hparams
    opt = adam(task.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=hp.lr_factor, patience=hp.lr_patience)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}


class _Sums:
    """Sums of absolute and squared errors over an epoch, per metric (exact, not batch-averaged), and
    of the loss weighted by graphs. Under DDP each process sums its own shard; :meth:`total` adds the
    shards up, so the metrics are those of the whole split."""

    def __init__(self) -> None:
        self.abs: dict[str, float] = {}
        self.sq: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.loss, self.graphs = 0.0, 0

    def add(self, name: str, error: torch.Tensor) -> None:
        e = error.detach().to(torch.float64)
        self.abs[name] = self.abs.get(name, 0.0) + e.abs().sum().item()
        self.sq[name] = self.sq.get(name, 0.0) + e.square().sum().item()
        self.n[name] = self.n.get(name, 0) + e.numel()

    def add_loss(self, loss: torch.Tensor, graphs: int) -> None:
        """A batch's mean loss over its ``graphs`` graphs (the epoch loss is the mean over all graphs)."""
        self.loss += loss.detach().to(torch.float64).item() * graphs
        self.graphs += graphs

    def total(self, names: Sequence[str], all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> "_Sums":
        """The sums over all processes: ``all_reduce`` sums a float64 tensor across them (identity in one
        process). ``names`` fixes the layout, the same in every process even where a shard missed a name."""
        local = [[self.abs.get(k, 0.0), self.sq.get(k, 0.0), float(self.n.get(k, 0))] for k in names]
        summed = all_reduce(torch.tensor(local + [[self.loss, float(self.graphs), 0.0]], dtype=torch.float64))
        out = _Sums()
        for k, (a, s, n) in zip(names, summed.tolist()):
            out.abs[k], out.sq[k], out.n[k] = a, s, int(n)
        out.loss, out.graphs = summed[-1, 0].item(), int(summed[-1, 1].item())
        return out

    def results(self) -> dict[str, tuple[float, float]]:
        return {k: (self.abs[k] / self.n[k], (self.sq[k] / self.n[k]) ** 0.5) for k in self.n if self.n[k]}

    def mean_loss(self) -> Optional[float]:
        return self.loss / self.graphs if self.graphs else None


class _Task(L.LightningModule):
    units: dict[str, str] = {}

    def __init__(self, lr: float, weight_decay: float, lr_factor: float, lr_patience: int) -> None:
        super().__init__()
        self._sums: dict[str, _Sums] = {}
        self.history: list[dict] = []

    def configure_optimizers(self):
        return adam_with_plateau(self)

    def forward(self, batch):
        return self.model(batch)

    # ------------------------------------------------------------------ metrics
    def _stage_sums(self, stage: str) -> _Sums:
        return self._sums.setdefault(stage, _Sums())

    def on_validation_epoch_start(self) -> None:
        self._sums["val"] = _Sums()

    def on_test_epoch_start(self) -> None:
        self._sums["test"] = _Sums()

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(tensor.to(self.device), reduce_op="sum").cpu()

    def _log_epoch(self, stage: str) -> dict[str, float]:
        """Logs the epoch's metrics over the whole split: the sums of every process's shard are
        all-reduced first, so every process logs (and checkpoints, stops early, lowers the learning
        rate on) the same exact values."""
        sums = self._stage_sums(stage).total(list(self.units), self._all_reduce)
        logged = {}
        if stage == "val" and sums.mean_loss() is not None:
            logged["val/loss"] = sums.mean_loss()
        for name, (mae, rmse) in sums.results().items():
            unit, factor = display_unit(self.units[name])
            logged[f"{stage}/{name}_mae"] = mae * factor
            logged[f"{stage}/{name}_rmse"] = rmse * factor
        for key, value in logged.items():
            # equal in every process already: "max" syncs without changing the value (no averaging)
            self.log(key, value, prog_bar=key.endswith("_mae") and stage == "val", sync_dist=True, reduce_fx="max")
        return logged

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, **self._log_epoch("val")})

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def metric_units(self) -> dict[str, str]:
        """``{"<name>_mae": unit, "<name>_rmse": unit}`` of the logged metrics."""
        out = {}
        for name, unit in self.units.items():
            shown = display_unit(unit)[0]
            out[f"{name}_mae"] = out[f"{name}_rmse"] = shown
        return out

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, None)
        self.log("train/loss", loss, batch_size=batch.num_graphs, on_step=True, on_epoch=True, prog_bar=True,
                 sync_dist=True)  # under DDP: the mean over processes (their shards repeat a few graphs)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch, "val")
        self._stage_sums("val").add_loss(loss, batch.num_graphs)  # logged as val/loss at the epoch's end

    def test_step(self, batch, batch_idx):
        self._loss(batch, "test")


class PropertyTask(_Task):
    """Graph properties (QM9): L1 or L2 loss on normalised targets, MAE in the targets' units.

    Args:
        model: architecture arguments of :class:`~eqgeo.models.PropertyModel` plus ``species``
            and ``avg_num_neighbors`` (from the training data).
        targets: names of the predicted targets, columns of ``data.y`` named by ``target_names``.
        target_names, target_units: the dataset's column names and units.
        reduce: ``"sum"`` (extensive) or ``"mean"``.
        loss: ``"l1"`` or ``"l2"``.
        statistics: ``{"mean": [...], "std": [...]}`` of the targets (see
            :meth:`~eqgeo.models.PropertyModel.fit_statistics`); ``None`` leaves 0 and 1.
        lr, weight_decay, lr_factor, lr_patience: Adam and ReduceLROnPlateau on ``val/loss``.
    """

    def __init__(
        self,
        model: dict,
        targets: Sequence[str],
        target_names: Sequence[str],
        target_units: Sequence[str],
        reduce: str = "mean",
        loss: str = "l1",
        statistics: Optional[dict] = None,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        lr_factor: float = 0.8,
        lr_patience: int = 10,
    ) -> None:
        super().__init__(lr, weight_decay, lr_factor, lr_patience)
        if loss not in ("l1", "l2"):
            raise ValueError(f"task.loss must be l1 or l2, got {loss!r}")
        unknown = [t for t in targets if t not in target_names]
        if not targets or unknown:
            raise ValueError(f"task.targets {list(targets)}: unknown {unknown}; the dataset has {list(target_names)}")
        self.save_hyperparameters()
        self.columns = [list(target_names).index(t) for t in targets]
        self.units = {t: target_units[c] for t, c in zip(targets, self.columns)}
        self.model = build_model("property", num_targets=len(targets), reduce=reduce, **model)  # model.name picks it
        if statistics is not None:
            self.model.set_statistics(statistics["mean"], statistics["std"])

    def _loss(self, batch, stage: Optional[str]) -> torch.Tensor:
        pred = self.model(batch)["y"]
        y = batch[K.TARGET][:, self.columns].to(pred.dtype)
        scale = self.model.target_std.to(pred.dtype)
        counts = torch.bincount(batch.batch, minlength=batch.num_graphs).to(pred.dtype)[:, None]
        scale = torch.where(self.model.sum_mask, scale * counts, scale)
        err = (pred - y) / scale
        if stage is not None:
            for k, name in enumerate(self.hparams.targets):
                self._stage_sums(stage).add(name, pred[:, k] - y[:, k])
        return err.abs().mean() if self.hparams.loss == "l1" else err.square().mean()

    def predictions(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{target: (true, predicted)}`` of one batch, for parity plots."""
        with torch.no_grad():
            pred = self.model(batch)["y"]
        y = batch[K.TARGET][:, self.columns]
        return {t: (y[:, k], pred[:, k]) for k, t in enumerate(self.hparams.targets)}


class EnergyForcesTask(_Task):
    """Energies and forces: ``w_E MSE(E / N) + w_F MSE(F)``; energy MAE (meV, meV/atom), force MAE (meV/Å).

    Args:
        model: architecture arguments of :class:`~eqgeo.models.InteratomicPotential` plus
            ``species`` and ``avg_num_neighbors``.
        energy_weight, forces_weight: loss weights.
        statistics: ``{"energy_shift": [...], "energy_scale": float}`` (see
            :func:`eqgeo.models.dataset_statistics`).
        lr, weight_decay, lr_factor, lr_patience: Adam and ReduceLROnPlateau on ``val/loss``.
    """

    units = {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Å"}

    def __init__(
        self,
        model: dict,
        energy_weight: float = 1.0,
        forces_weight: float = 1000.0,
        statistics: Optional[dict] = None,
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        lr_factor: float = 0.8,
        lr_patience: int = 50,
    ) -> None:
        super().__init__(lr, weight_decay, lr_factor, lr_patience)
        self.save_hyperparameters()
        self.model = build_model("energy", **model)  # model.name: eqgeo (InteratomicPotential), schnet, visnet
        if statistics is not None:
            self.model.set_statistics(statistics["energy_shift"], statistics["energy_scale"])

    def _loss(self, batch, stage: Optional[str]) -> torch.Tensor:
        out = self.model(batch)
        energy = batch[K.ENERGY].to(torch.float64).reshape(-1)
        counts = torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)
        de = out["energy"] - energy
        df = out["forces"] - batch[K.FORCES].to(out["forces"].dtype)
        if stage is not None:
            sums = self._stage_sums(stage)
            sums.add("energy", de)
            sums.add("energy_per_atom", de / counts)
            sums.add("forces", df)
        loss = self.hparams.energy_weight * (de / counts).square().mean() + self.hparams.forces_weight * df.square().mean()
        return loss.to(out["forces"].dtype)

    def predictions(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"energy": (true, predicted), "forces": ...}`` of one batch, for parity plots."""
        out = self.model(batch)
        return {
            "energy": (batch[K.ENERGY].reshape(-1), out["energy"].detach()),
            "forces": (batch[K.FORCES].reshape(-1), out["forces"].detach().reshape(-1)),
        }
