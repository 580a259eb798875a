"""Lightning tasks: loss, metrics and optimiser around a plain eqgeo model.

The network is an ordinary ``torch.nn.Module`` (:mod:`eqgeo.models`), built by
:func:`~eqgeo.inference.checkpoint.instantiate_model` from the model config's ``_target_`` and
arguments plus the training-data statistics. All of these are plain numbers and lists, stored as
hyperparameters. Every checkpoint also records the task's and the model's ``_target_`` and
arguments (:mod:`eqgeo.inference.checkpoint`), so :func:`~eqgeo.inference.checkpoint.load_model`
rebuilds the network without this package. Each task computes its statistics from the data
module itself (:meth:`data_arguments`), so no caller has to know which task it runs.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import lightning as L
import torch

from ..data import keys as K
from ..inference.checkpoint import FORMAT, RECORD_KEY, instantiate_model, qualified_name
from ..inference.metrics import (DIPOLE_TARGET, ENERGY_UNITS, ErrorSums, atoms_per_graph, display_unit, energy_errors,
                                 property_errors, property_prediction, scalar_targets)
from ..inference.names import MEAN_PREDICTOR, mean_predictor_name

__all__ = ["PropertyTask", "EnergyForcesTask", "display_unit", "adam", "adam_with_schedule", "cosine_factor",
           "LR_SCHEDULES", "RecordedTask", "CosineSchedule", "plan_epochs"]


def adam(params, **options) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused implementation where every parameter allows it (CPU or
    CUDA floating-point tensors): one kernel for all parameters instead of a loop over them,
    about 1 ms less per step for an 80,000-weight potential on one CPU core. Same update."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, fused=fused or None, **options)


#: Learning-rate schedules of the tasks (``task.lr_schedule``).
LR_SCHEDULES = ("plateau", "cosine")


def adam_with_schedule(task: L.LightningModule) -> dict:
    """Adam and the learning-rate schedule of the task's hyperparameters (every eqgeo task trains this way).

    - ``lr_schedule: plateau`` (default): ReduceLROnPlateau on ``val/loss``, times ``lr_factor``
      after ``lr_patience`` epochs without a relative improvement of ``lr_threshold``.
    - ``lr_schedule: cosine``: a linear warm-up over ``warmup_epochs`` (fractions allowed), then a
      cosine from ``lr`` to 0 at the last planned step, stepped every batch. The plan is
      ``trainer.max_epochs`` (which must be finite), or under a wall-clock budget
      (``trainer.max_time``) the epochs that fit it at the pace so far (:func:`plan_epochs`), so
      that the rate reaches 0 when the budget ends, whatever the machine's speed.
    """
    hp = task.hparams
    opt = adam(task.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    schedule, warmup = hp.get("lr_schedule", "plateau"), float(hp.get("warmup_epochs", 0.0))
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"task.lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "plateau":
        if warmup:
            raise ValueError("task.warmup_epochs is for lr_schedule=cosine (a plateau schedule has no warm-up)")
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=hp.lr_factor, patience=hp.lr_patience,
                                                           threshold=hp.get("lr_threshold", 1e-4))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}
    total = task.trainer.estimated_stepping_batches
    if not math.isfinite(total) or total < 1:
        raise ValueError("task.lr_schedule=cosine decays over trainer.max_epochs; set a finite trainer.max_epochs "
                         f"(the run has {total} steps)")
    steps_per_epoch = total / max(task.trainer.max_epochs, 1)
    cosine = CosineSchedule(total=int(total), warmup=int(round(warmup * steps_per_epoch)),
                            steps_per_epoch=steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor of :func:`adam_with_schedule`'s cosine schedule at ``step`` of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineSchedule:
    """:func:`cosine_factor` over ``total`` steps, a number that :meth:`plan` may change during the run
    (``LambdaLR`` saves and restores its attributes with the checkpoint)."""

    def __init__(self, total: int, warmup: int, steps_per_epoch: float) -> None:
        self.total, self.warmup, self.steps_per_epoch = total, warmup, steps_per_epoch

    def __call__(self, step: int) -> float:
        return cosine_factor(step, self.total, self.warmup)

    def plan(self, epochs: int) -> None:
        """Decay to 0 at the end of epoch ``epochs`` instead."""
        self.total = max(int(round(epochs * self.steps_per_epoch)), self.warmup + 1)


def plan_epochs(max_epochs: int, epochs_done: int, elapsed_s: float, remaining_s: Optional[float]) -> int:
    """The epochs a run will reach: ``max_epochs``, or fewer when its wall-clock budget (``remaining_s``
    seconds left after ``epochs_done`` epochs in ``elapsed_s``; ``None``: no budget) ends it first at
    the mean pace so far. Never fewer than the next epoch, which the run is about to start."""
    if remaining_s is None or epochs_done < 1:
        return max_epochs
    pace = elapsed_s / epochs_done
    fit = epochs_done + int(max(remaining_s, 0.0) // pace) if pace > 0 else max_epochs
    return max(min(max_epochs, fit), min(max_epochs, epochs_done + 1))


def budget_timer(trainer):
    """Lightning's ``Timer`` callback of ``trainer`` (there when ``trainer.max_time`` is set), else ``None``."""
    from lightning.pytorch.callbacks import Timer

    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


class RecordedTask(L.LightningModule):
    """A task whose checkpoints record what built them (:mod:`eqgeo.inference.checkpoint`).

    Subclasses set :attr:`kind` and build their network with :meth:`build_model`.
    """

    #: What the task's model predicts (one of :data:`eqgeo.inference.checkpoint.KINDS`).
    kind: str = ""

    def build_model(self, config: dict, **extra) -> torch.nn.Module:
        """The network of the model config ``config`` (``_target_`` and arguments) with the task's ``extra``
        arguments; its complete config is what checkpoints record."""
        model, self.model_config = instantiate_model(config, **extra)
        return model

    def on_fit_start(self) -> None:
        self._fit_started = time.monotonic()

    def training_time_s(self) -> float:
        """Seconds of training so far: Lightning's ``Timer`` (``trainer.max_time``; it counts the time of
        the runs a resumed run continues), else the time since this fit started."""
        timer = budget_timer(self.trainer)
        if timer is not None:
            return float(timer.time_elapsed())
        return time.monotonic() - getattr(self, "_fit_started", time.monotonic())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[RECORD_KEY] = {
            "format": FORMAT,
            "kind": self.kind,
            "task": {"_target_": qualified_name(type(self)), **dict(self.hparams)},
            "model": dict(self.model_config),
        }


class _Task(RecordedTask):
    units: dict[str, str] = {}

    def __init__(self, lr: float, weight_decay: float, lr_factor: float, lr_patience: int,
                 lr_schedule: str = "plateau") -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"task.lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.sums: dict[str, ErrorSums] = {}
        self.history: list[dict] = []
        self.plan: dict = {"epochs": None}  # see planned_epochs; saved with checkpoints

    def configure_optimizers(self):
        return adam_with_schedule(self)

    #: Checkpoint key of :attr:`plan`.
    PLAN_KEY = "eqgeo_plan"

    def planned_epochs(self) -> int:
        """The epochs the schedule plans for: ``trainer.max_epochs``, or under a wall-clock budget
        (``trainer.max_time``) the epochs that fit it at the pace so far, re-planned after every epoch."""
        return self.plan["epochs"] if self.plan["epochs"] is not None else self.trainer.max_epochs

    def on_train_epoch_end(self) -> None:
        """Under ``trainer.max_time``, re-plans the schedule (the cosine's last step, a fractional
        ``stage_two_epoch``) for the epochs that fit the time left (:func:`plan_epochs`)."""
        timer, max_epochs = budget_timer(self.trainer), self.trainer.max_epochs
        if timer is None or timer.time_remaining() is None or max_epochs is None or max_epochs < 1:
            return
        epochs = plan_epochs(max_epochs, self.current_epoch + 1, timer.time_elapsed(), timer.time_remaining())
        self.plan["epochs"] = epochs = self.trainer.strategy.broadcast(epochs, src=0)  # one plan for all processes
        self.log("epochs_planned", float(epochs), rank_zero_only=True)
        for config in self.trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(schedule, CosineSchedule):
                    schedule.plan(epochs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[self.PLAN_KEY] = dict(self.plan)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.plan.update(checkpoint.get(self.PLAN_KEY, {}))

    def forward(self, batch):
        return self.model(batch)

    # ------------------------------------------------------------------ metrics
    def _stage_sums(self, stage: str) -> ErrorSums:
        return self.sums.setdefault(stage, ErrorSums())

    def on_validation_epoch_start(self) -> None:
        self.sums["val"] = ErrorSums()

    def on_test_epoch_start(self) -> None:
        self.sums["test"] = ErrorSums()

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
        logged.update(sums.metrics(self.units, prefix=f"{stage}/"))
        for key, value in logged.items():
            # equal in every process already: "max" syncs without changing the value (no averaging)
            self.log(key, value, prog_bar=key.endswith("_mae") and stage == "val", sync_dist=True, reduce_fx="max")
        return logged

    def on_validation_epoch_end(self) -> None:
        """Logs the validation metrics; :attr:`history` (``metrics.json``'s ``validation_history``) also
        keeps the training time at that point (``time_s``: learning curves against wall time)."""
        if not self.trainer.sanity_checking:
            logged = self._log_epoch("val")
            self.history.append({"epoch": self.current_epoch, "time_s": self.training_time_s(), **logged})

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def metric_units(self) -> dict[str, str]:
        """``{"<name>_mae": unit, "<name>_rmse": unit}`` of the logged metrics."""
        out = {}
        for name, unit in self.units.items():
            shown = display_unit(unit)[0]
            out[f"{name}_mae"] = out[f"{name}_rmse"] = shown
        return out

    def errors(self, batch) -> dict[str, torch.Tensor]:
        """The errors of one batch, by metric name (what validation and test add up)."""
        raise NotImplementedError

    def loss(self, batch, errors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch from its :meth:`errors`."""
        raise NotImplementedError

    def _step(self, batch, stage: Optional[str]) -> torch.Tensor:
        errors = self.errors(batch)
        if stage is not None:
            self._stage_sums(stage).add_all(errors)
        return self.loss(batch, errors)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, None)
        self.log("train/loss", loss, batch_size=batch.num_graphs, on_step=True, on_epoch=True, prog_bar=True,
                 sync_dist=True)  # under DDP: the mean over processes (their shards repeat a few graphs)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._step(batch, "val")
        self._stage_sums("val").add_loss(loss, batch.num_graphs)  # logged as val/loss at the epoch's end

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")


def _takes_argument(target, name: str) -> bool:
    """Whether the model class ``target`` (a ``_target_`` string) takes the argument ``name``; True when the class
    cannot be resolved here, so that :func:`instantiate_model` reports that error."""
    import inspect

    from hydra.utils import get_class

    try:
        parameters = inspect.signature(get_class(target)).parameters
    except Exception:  # noqa: BLE001  an unknown _target_: instantiate_model says so
        return True
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class PropertyTask(_Task):
    """Graph properties (QM9): L1 or L2 loss on normalised targets, MAE in the targets' units.

    Args:
        model: the model config: ``_target_`` (:class:`~eqgeo.models.PropertyModel` or a PyG
            baseline) and its arguments, with ``species`` and ``avg_num_neighbors`` from the
            training data. The task adds ``num_targets`` and ``reduce``.
        targets: names of the predicted targets, columns of ``data.y`` named by ``target_names``.
        target_names, target_units: the dataset's column names and units.
        reduce: ``"sum"`` (extensive) or ``"mean"``.
        dipole: predict ``mu`` (which ``targets`` must hold) as the norm of the model's equivariant
            dipole vector (:class:`~eqgeo.models.PropertyModel` with ``dipole=True``: partial charges
            and atomic dipoles) instead of by a scalar readout; the other targets keep theirs.
        loss: ``"l1"`` or ``"l2"``.
        statistics: ``{"mean": [...], "std": [...]}`` of the targets (see
            :meth:`~eqgeo.models.PropertyModel.fit_statistics`); ``None`` leaves 0 and 1.
        lr, weight_decay: Adam.
        lr_schedule, lr_factor, lr_patience, lr_threshold, warmup_epochs: the learning-rate
            schedule (:func:`adam_with_schedule`).
    """

    kind = "property"

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
        lr_schedule: str = "plateau",
        lr_threshold: float = 1e-4,
        warmup_epochs: float = 0.0,
        dipole: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, lr_factor, lr_patience, lr_schedule)
        if loss not in ("l1", "l2"):
            raise ValueError(f"task.loss must be l1 or l2, got {loss!r}")
        unknown = [t for t in targets if t not in target_names]
        if not targets or unknown:
            raise ValueError(f"task.targets {list(targets)}: unknown {unknown}; the dataset has {list(target_names)}")
        if dipole and DIPOLE_TARGET not in targets:
            raise ValueError(f"task.dipole=true predicts {DIPOLE_TARGET!r} from the dipole head; task.targets "
                             f"{list(targets)} has no {DIPOLE_TARGET!r}")
        self.save_hyperparameters()
        self.columns = [list(target_names).index(t) for t in targets]
        self.units = {t: target_units[c] for t, c in zip(targets, self.columns)}
        scalars = scalar_targets(targets, dipole)
        extra = {"dipole": True} if dipole else {}
        if dipole and not _takes_argument(model.get("_target_"), "dipole"):
            raise ValueError(f"task.dipole=true needs a model with a dipole head (eqgeo's PropertyModel; "
                             f"SchNetBaseline's charges); {model.get('_target_')} takes no 'dipole' argument. Set "
                             f"task.dipole=false to predict {DIPOLE_TARGET!r} with a scalar readout")
        self.model = self.build_model(model, num_targets=len(scalars), reduce=reduce, **extra)
        # every target's statistics (the model holds those of its scalar readouts): loss scale, mean predictor
        reduces = self.target_reduces(targets, reduce, dipole)
        # (not saved: the hyperparameters hold them, and checkpoints keep the state dict of earlier versions)
        self.register_buffer("target_mean", torch.zeros(len(targets), dtype=torch.float64), persistent=False)
        self.register_buffer("target_std", torch.ones(len(targets), dtype=torch.float64), persistent=False)
        self.register_buffer("sum_mask", torch.tensor([r == "sum" for r in reduces]), persistent=False)
        if statistics is not None:
            self.target_mean.copy_(torch.tensor(statistics["mean"], dtype=torch.float64))
            self.target_std.copy_(torch.tensor(statistics["std"], dtype=torch.float64))
            if scalars:
                keep = [list(targets).index(t) for t in scalars]
                self.model.set_statistics([statistics["mean"][k] for k in keep], [statistics["std"][k] for k in keep])

    @staticmethod
    def target_reduces(targets: Sequence[str], reduce: str, dipole: bool) -> list[str]:
        """``reduce`` for every target but the one a dipole head predicts (a norm, never a sum of atoms)."""
        return ["mean" if dipole and t == DIPOLE_TARGET else reduce for t in targets]

    @classmethod
    def data_arguments(cls, dm, config: dict) -> dict:
        """The arguments that come from the training data: the dataset's target names and units, and
        the mean and spread of the chosen targets over the training molecules."""
        from ..models.property import target_statistics
        from .datamodules import QM9DataModule

        if not isinstance(dm, QM9DataModule):
            raise ValueError(f"task=property needs graph targets (data=qm9), got data={type(dm).__name__}")
        unknown = [t for t in config["targets"] if t not in dm.target_names]
        if unknown:
            raise ValueError(f"task.targets: unknown {unknown}; QM9 targets are {list(dm.target_names)}")
        stats = dm.statistics
        columns = [dm.target_names.index(t) for t in config["targets"]]
        reduces = cls.target_reduces(config["targets"], config.get("reduce", "mean"), config.get("dipole", False))
        mean, std = target_statistics(stats["y"][:, columns], stats["num_atoms"], reduces)
        return {"target_names": list(dm.target_names), "target_units": list(dm.target_units),
                "statistics": {"mean": mean.tolist(), "std": std.tolist()}}

    def prediction(self, batch) -> torch.Tensor:
        """``(G, len(targets))`` float64 predictions of one batch (:func:`property_prediction`)."""
        hp = self.hparams
        return property_prediction(self.model(batch), hp.targets, hp.get("dipole", False))

    def errors(self, batch) -> dict[str, torch.Tensor]:
        return property_errors(self.prediction(batch), batch, self.columns, self.hparams.targets)

    def loss(self, batch, errors: dict[str, torch.Tensor]) -> torch.Tensor:
        err = torch.stack([errors[t] for t in self.hparams.targets], dim=1)
        scale = self.target_std.to(err.dtype)
        scale = torch.where(self.sum_mask, scale * atoms_per_graph(batch, err.dtype)[:, None], scale)
        err = err / scale
        return err.abs().mean() if self.hparams.loss == "l1" else err.square().mean()

    #: Suffix of the test metrics of the mean predictor (``gap_mean_predictor_mae``; :mod:`eqgeo.inference.names`).
    MEAN_PREDICTOR = MEAN_PREDICTOR

    def mean_predictor_errors(self, batch) -> dict[str, torch.Tensor]:
        """The errors of predicting the training mean for every graph (times its atoms for ``reduce: sum``
        targets): the reference a trained model's test error is read against."""
        atoms = atoms_per_graph(batch, torch.float64)[:, None]
        mean = self.target_mean
        pred = torch.where(self.sum_mask, mean * atoms, mean.expand(atoms.shape[0], -1))
        return property_errors(pred, batch, self.columns, self.hparams.targets)

    def test_step(self, batch, batch_idx):
        super().test_step(batch, batch_idx)
        self._stage_sums("mean_predictor").add_all(self.mean_predictor_errors(batch))

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.sums["mean_predictor"] = ErrorSums()

    def on_test_epoch_end(self) -> None:
        """The test metrics, and those of the mean predictor on the same test graphs (``<target>_mean_predictor_mae``)."""
        super().on_test_epoch_end()
        sums = self._stage_sums("mean_predictor").total(list(self.units), self._all_reduce)
        for key, value in sums.metrics(self.units).items():
            self.log(f"test/{self.mean_predictor_name(key)}", value, sync_dist=True, reduce_fx="max")

    mean_predictor_name = staticmethod(mean_predictor_name)

    def metric_units(self) -> dict[str, str]:
        units = super().metric_units()
        return {**units, **{self.mean_predictor_name(k): u for k, u in units.items()}}

    def predictions(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{target: (true, predicted)}`` of one batch, for parity plots."""

        with torch.no_grad():
            pred = self.prediction(batch)
        y = batch[K.TARGET][:, self.columns]
        return {t: (y[:, k], pred[:, k]) for k, t in enumerate(self.hparams.targets)}


class EnergyForcesTask(_Task):
    """Energies and forces: ``w_E MSE(E / N) + w_F MSE(F)``; energy MAE (meV, meV/atom), force MAE (meV/Å).

    Args:
        model: the model config: ``_target_`` (:class:`~eqgeo.models.InteratomicPotential` or a
            PyG baseline) and its arguments, with ``species`` and ``avg_num_neighbors``.
        energy_weight, forces_weight: loss weights (energies per atom in eV, forces in eV/Å).
        statistics: ``{"energy_shift": [...], "energy_scale": float, "energy_reference": str}`` (see
            :func:`eqgeo.models.dataset_statistics`; the last only says how the shifts were chosen).
        lr, weight_decay: Adam.
        lr_schedule, lr_factor, lr_patience, lr_threshold, warmup_epochs: the learning-rate
            schedule (:func:`adam_with_schedule`).
        stage_two_epoch, stage_two_energy_weight, stage_two_forces_weight: from this epoch on
            (``None``: never; a fraction 0 < f < 1: that fraction of the planned epochs,
            :meth:`planned_epochs`), train with these weights instead, as MACE's second stage raises the energy weight (1000 and
            100 there, from 3/4 of the epochs) once the forces are learned; see :meth:`loss_weights`.
    """

    kind = "energy"
    units = ENERGY_UNITS

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
        lr_schedule: str = "plateau",
        lr_threshold: float = 1e-4,
        warmup_epochs: float = 0.0,
        stage_two_epoch: Optional[float] = None,
        stage_two_energy_weight: float = 1000.0,
        stage_two_forces_weight: float = 100.0,
    ) -> None:
        super().__init__(lr, weight_decay, lr_factor, lr_patience, lr_schedule)
        if stage_two_epoch is not None and stage_two_epoch < 0:
            raise ValueError(f"task.stage_two_epoch must be >= 0 or null, got {stage_two_epoch}")
        self.save_hyperparameters()
        self.model = self.build_model(model)
        if statistics is not None:
            self.model.set_statistics(statistics["energy_shift"], statistics["energy_scale"])

    @classmethod
    def data_arguments(cls, dm, config: dict) -> dict:
        """The energy shifts and scale of the training frames (:func:`eqgeo.models.dataset_statistics`)."""
        stats = dm.statistics
        if "energy_shift" not in stats:
            raise ValueError(f"task=energy_forces needs energies and forces (data=rmd17), got data={type(dm).__name__}")
        return {"statistics": {"energy_shift": stats["energy_shift"].tolist(), "energy_scale": float(stats["energy_scale"]),
                               "energy_reference": stats.get("energy_reference")}}  # how the shifts were chosen

    def errors(self, batch) -> dict[str, torch.Tensor]:
        return energy_errors(self.model(batch), batch)

    def loss_weights(self) -> tuple[float, float]:
        """``(energy weight, forces weight)`` of the loss now: the stage-two weights while training from
        epoch ``stage_two_epoch`` on, else ``energy_weight`` and ``forces_weight``. Validation always
        uses the latter, so that ``val/loss`` (checkpoints, early stopping, the plateau schedule)
        compares like with like across the switch."""
        hp = self.hparams
        second = hp.get("stage_two_epoch")
        if self.training and second is not None:
            start = self.plan.get("stage_two_from")
            start = self._epoch_of(second) if start is None else start
            if self.current_epoch >= start:
                self.plan["stage_two_from"] = start  # once begun, it stays, whatever later re-planning says
                return hp.stage_two_energy_weight, hp.stage_two_forces_weight
        return hp.energy_weight, hp.forces_weight

    def _epoch_of(self, start: float) -> float:
        """``stage_two_epoch`` as an epoch: a number of epochs, or a fraction (0 < f < 1) of the planned
        epochs (``trainer.max_epochs``, or fewer under ``trainer.max_time``: :meth:`planned_epochs`)."""
        if not 0 < start < 1:
            return start
        max_epochs = self.planned_epochs()
        if max_epochs is None or max_epochs < 1:
            raise ValueError(f"task.stage_two_epoch={start} is a fraction of trainer.max_epochs, which is not set "
                             f"({max_epochs}); give an epoch number")
        return int(start * max_epochs)

    def loss(self, batch, errors: dict[str, torch.Tensor]) -> torch.Tensor:
        df = errors["forces"]
        energy_weight, forces_weight = self.loss_weights()
        loss = energy_weight * errors["energy_per_atom"].square().mean() + forces_weight * df.square().mean()
        return loss.to(df.dtype)

    def predictions(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"energy": (true, predicted), "forces": ...}`` of one batch, for parity plots."""

        out = self.model(batch)
        return {
            "energy": (batch[K.ENERGY].reshape(-1), out["energy"].detach()),
            "forces": (batch[K.FORCES].reshape(-1), out["forces"].detach().reshape(-1)),
        }
