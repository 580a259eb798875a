"""``eqgeo-train``: Hydra around a plain :func:`train` function (Lightning underneath).

    eqgeo-train                                   # short QM9 run (HOMO-LUMO gap), qm9pack data
    eqgeo-train experiment=rmd17                  # rMD17 ethanol energies and forces
    eqgeo-train model=transformer task.targets=[gap,homo] trainer.max_epochs=10
    eqgeo-train --multirun model.channels=16,32   # a sweep
    eqgeo-train ckpt_path=runs/.../checkpoints/last.ckpt   # resume after a kill
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from ..models.property import target_statistics
from .datamodules import QM9DataModule
from .plots import learning_curves, parity_plot
from .tasks import EnergyForcesTask, PropertyTask

__all__ = ["train", "main"]

log = logging.getLogger(__name__)
_DTYPES = {"float32": "32-true", "float64": "64-true"}


def _model_kwargs(cfg: DictConfig, statistics: dict) -> dict:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs["species"] = [int(z) for z in statistics["species"]]
    kwargs["avg_num_neighbors"] = float(statistics["avg_num_neighbors"])
    return kwargs


def _build_task(cfg: DictConfig, dm) -> L.LightningModule:
    """The task of ``cfg.task`` with the model's architecture and the training-data statistics."""
    stats = dm.statistics
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    target = task_cfg.pop("_target_")
    model = _model_kwargs(cfg, stats)
    if target.endswith("PropertyTask"):
        if not isinstance(dm, QM9DataModule):
            raise ValueError(f"task=property needs graph targets (data=qm9), got data={type(dm).__name__}")
        unknown = [t for t in task_cfg["targets"] if t not in dm.target_names]
        if unknown:
            raise ValueError(f"task.targets: unknown {unknown}; QM9 targets are {list(dm.target_names)}")
        columns = [dm.target_names.index(t) for t in task_cfg["targets"]]
        reduces = [task_cfg["reduce"]] * len(columns)
        mean, std = target_statistics(stats["y"][:, columns], stats["num_atoms"], reduces)
        statistics = {"mean": mean.tolist(), "std": std.tolist()}
        return PropertyTask(model, target_names=list(dm.target_names), target_units=list(dm.target_units),
                            statistics=statistics, **task_cfg)
    if target.endswith("EnergyForcesTask"):
        if "energy_shift" not in stats:
            raise ValueError(f"task=energy_forces needs energies and forces (data=rmd17), got data={type(dm).__name__}")
        statistics = {"energy_shift": stats["energy_shift"].tolist(), "energy_scale": float(stats["energy_scale"])}
        return EnergyForcesTask(model, statistics=statistics, **task_cfg)
    raise ValueError(f"unknown task {target!r}")


def _check_checkpoint(path: Path) -> None:
    """A resumable checkpoint: exists, loads with ``weights_only=True``, has weights and loop state."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; set ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(error).__name__}): it is truncated, corrupt or not an "
            "eqgeo/Lightning checkpoint (eqgeo loads checkpoints with weights_only=True only)"
        ) from None
    missing = [k for k in ("state_dict", "hyper_parameters", "loops") if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}: not a checkpoint written by eqgeo-train")


def _config_hash(cfg: DictConfig) -> str:
    text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("run_dir", "ckpt_path")]), resolve=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train(cfg: DictConfig) -> dict:
    """Train and test one configuration; returns the contents of the run's ``metrics.json``.

    Writes into ``cfg.run_dir``: ``checkpoints/`` (``best.ckpt`` by validation loss and
    ``last.ckpt``), CSV logs, ``config.yaml``, ``metrics.json``, ``parity.png`` (test set) and
    ``learning_curves.png``.
    """
    start = time.time()
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {cfg.dtype!r}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.ckpt_path is not None:
        _check_checkpoint(Path(cfg.ckpt_path))

    try:
        dm = hydra.utils.instantiate(cfg.data)
    except InstantiationException as error:  # show the data module's own message (file, override)
        if isinstance(error.__cause__, (FileNotFoundError, ValueError)):
            raise error.__cause__ from None
        raise
    dm.setup("fit")
    task = _build_task(cfg, dm)

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    ema_decay = trainer_cfg.pop("ema_decay")
    patience = trainer_cfg.pop("early_stopping_patience")
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/loss", save_last=True),
        EarlyStopping(monitor="val/loss", patience=patience),
        LearningRateMonitor(),
    ]
    if ema_decay is not None:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=ema_decay))
    trainer = L.Trainer(
        **trainer_cfg,
        default_root_dir=run_dir,
        precision=_DTYPES[cfg.dtype],
        callbacks=callbacks,
        logger=CSVLogger(run_dir, name="logs", version=""),
        inference_mode=False,  # validation needs autograd for the forces
    )
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    trainer.fit(task, datamodule=dm, ckpt_path=cfg.ckpt_path)
    best = callbacks[0].best_model_path or None
    trainer.test(task, datamodule=dm, ckpt_path=best, verbose=False)

    test = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    trainer.logger.save()
    figures = {
        "parity": parity_plot(task, dm.test_dataloader(), run_dir / "parity.png").name,
        "learning_curves": learning_curves(Path(trainer.logger.log_dir) / "metrics.csv", run_dir / "learning_curves.png").name,
    }
    units = task.metric_units()
    metrics = {
        "config_hash": _config_hash(cfg),
        "task": type(task).__name__,
        "data": {**dm.sizes(), "source": type(dm).__name__},
        "model": {"class": type(task.model).__name__, "parameters": sum(p.numel() for p in task.model.parameters())},
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.time() - start, 1),
        "best_checkpoint": best,
        "figures": figures,
        "test": {name: {"value": value, "unit": units[name]} for name, value in sorted(test.items())},
        "validation_history": task.history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://eqgeo.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    metrics = train(cfg)
    shown = ", ".join(f"{k} {v['value']:.4g} {v['unit']}" for k, v in metrics["test"].items() if k.endswith("_mae"))
    print(f"test: {shown}")
    print(f"results: {Path(cfg.run_dir).resolve()} (metrics.json, parity.png, learning_curves.png, checkpoints/, logs/)")


def main() -> None:
    """Console entry point ``eqgeo-train``."""
    torch.set_float32_matmul_precision("high")
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
