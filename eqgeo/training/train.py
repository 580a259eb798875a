"""``eqgeo-train``: Hydra around a plain :func:`train` function (Lightning underneath).

    eqgeo-train                                   # short QM9 run (HOMO-LUMO gap), qm9pack data
    eqgeo-train experiment=rmd17                  # rMD17 ethanol energies and forces
    eqgeo-train model=transformer task.targets=[gap,homo] trainer.max_epochs=10
    eqgeo-train --multirun model.channels=16,32   # a sweep
    eqgeo-train ckpt_path=runs/.../checkpoints/last.ckpt   # resume after a kill
    eqgeo-train trainer.devices=4 trainer.strategy=ddp      # data-parallel on 4 GPUs (or CPU processes)
    eqgeo-train marker.path=epoch0.json                     # a file written once epoch 0 has ended

Under DDP the processes Lightning starts end with the ``eqgeo-train`` process that started them,
however it ends (a SIGKILL included), and a rendezvous that cannot complete fails after
``trainer.rendezvous_timeout_s`` (default 300 s) with a message naming what it waited for. Strategies
that start the processes with multiprocessing (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) are refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Optional

import hydra
from hydra.errors import InstantiationException
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ..inference.checkpoint import read_checkpoint
from ..inference.names import is_mean_predictor, mean_predictor_name
from .callbacks import EpochMarker
from .plots import learning_curves, parity_plot
from .tasks import RecordedTask

__all__ = ["train", "main"]

log = logging.getLogger(__name__)
_DTYPES = {"float32": "32-true", "float64": "64-true"}


#: Keys of a task config that the model configs read (``${task.kind}``, ``${task.network}``) to pick the
#: network the task trains; they are not arguments of the task.
_MODEL_SELECTION = ("kind", "network")


def _model_config(cfg: DictConfig, statistics: dict) -> dict:
    """The model config (``_target_`` and arguments) with the species and neighbour count of the training data."""
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config["species"] = [int(z) for z in statistics["species"]]
    config["avg_num_neighbors"] = float(statistics["avg_num_neighbors"])
    return config


def _build_task(cfg: DictConfig, dm) -> RecordedTask:
    """The task of ``cfg.task``, built by Hydra from its ``_target_``, with the model config and the
    arguments the task takes from the training data (its ``data_arguments``)."""
    config = OmegaConf.to_container(cfg.task, resolve=True)
    for key in _MODEL_SELECTION:
        config.pop(key, None)
    cls = hydra.utils.get_class(config["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, RecordedTask)):
        raise ValueError(f"task _target_ {config['_target_']} is not an eqgeo task (eqgeo.training.tasks.RecordedTask)")
    arguments = {k: v for k, v in config.items() if k != "_target_"}
    from_data = cls.data_arguments(dm, arguments)
    return _instantiate(config, model=_model_config(cfg, dm.statistics), **from_data, _recursive_=False,
                        _convert_="all")


def _instantiate(config, **options):
    """``hydra.utils.instantiate``, raising the target's own error (the file or the setting it names) instead of
    Hydra's wrapper around it."""
    try:
        return hydra.utils.instantiate(config, **options)
    except InstantiationException as error:
        if isinstance(error.__cause__, (FileNotFoundError, ValueError)):
            raise error.__cause__ from None
        raise


def _config_hash(cfg: DictConfig) -> str:
    """Hash of the options that decide what a run computes: not where it writes, where it resumes from,
    its marker file, how long its DDP processes wait for each other or how many threads it uses."""
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("run_dir", "ckpt_path", "marker")])
    if "trainer" in kept:  # how a run waits and threads does not change what it computes
        kept.trainer = OmegaConf.masked_copy(
            kept.trainer, [k for k in kept.trainer if k not in ("rendezvous_timeout_s", "intra_op_threads")])
    text = OmegaConf.to_yaml(kept, resolve=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Environment variable holding the job that the DDP processes Lightning starts from this one run.
_DDP_JOB = "EQGEO_DDP_JOB"
# Environment variable holding the process id of the eqgeo-train process that starts them (the launcher).
_LAUNCHER_PID = "EQGEO_DDP_LAUNCHER_PID"
# What Lightning's launcher sets in the launching process's environment, _DDP_JOB and _LAUNCHER_PID.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", _DDP_JOB, _LAUNCHER_PID)
# Seconds a DDP process waits for the rendezvous (trainer.rendezvous_timeout_s) when the config does not say.
_RENDEZVOUS_TIMEOUT_S = 300.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_parent_death_signal(signum: int) -> bool:
    """Linux: have the kernel send ``signum`` to this process when its parent ends (``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended. A zombie (ended, its exit status not yet collected
    by its parent) has ended, although ``os.kill(pid, 0)`` still succeeds on it; on Linux its state in
    ``/proc/<pid>/stat`` says so."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    if not sys.platform.startswith("linux"):
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # it ended in between
        return False
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # the state follows the command name


def _launcher_gone(pid: int) -> None:
    rank = os.environ.get("LOCAL_RANK", "?")
    with contextlib.suppress(OSError):
        os.write(2, f"eqgeo-train: DDP process LOCAL_RANK={rank} ends: the eqgeo-train process that started it "
                    f"(pid {pid}) has ended\n".encode())
    os._exit(1)


def _end_with_launcher(launcher_pid: int, *, direct_child: bool = True, parent_death_signal: bool = True,
                       poll_s: float = 1.0) -> None:
    """Makes this DDP process end when the ``eqgeo-train`` process that started it (``launcher_pid``) ends,
    however that ends: a launcher killed with SIGKILL runs no clean-up, and the processes it started
    would otherwise stay, training alone or waiting in ``init_process_group`` for a peer that is gone.

    Lightning starts every DDP process as a child of the launcher (``subprocess.Popen``), so by default
    (``direct_child``) the launcher is alive exactly while it is this process's parent: a process whose
    parent ends is handed to another one at once, whether or not the launcher's own parent has collected
    its exit status yet (a zombie launcher), and a reused process id cannot pass for it. On Linux, the kernel
    also sends SIGKILL as the parent ends (``PR_SET_PDEATHSIG``; a SIGKILL, because a process blocked in a
    collective or in the rendezvous runs no Python signal handler). Everywhere, a daemon thread checks
    the launcher every ``poll_s`` seconds and ends this process when it is gone. A launcher that ended
    before this was called is caught by the first check, made at once. With ``direct_child=False`` (a
    launcher that is not the parent) the launcher is alive while its process exists and is no zombie.
    """
    if direct_child:
        if parent_death_signal:
            _set_parent_death_signal(signal.SIGKILL)  # before the first check: no moment is left uncovered

        def alive() -> bool:
            return os.getppid() == launcher_pid
    else:

        def alive() -> bool:
            return _process_alive(launcher_pid)

    if not alive():
        _launcher_gone(launcher_pid)

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        _launcher_gone(launcher_pid)

    threading.Thread(target=watch, name="eqgeo-launcher-watch", daemon=True).start()


class DDPRendezvousError(RuntimeError):
    """The processes of a DDP job did not all meet in ``torch.distributed.init_process_group``."""


def _refuse_multiprocessing(start_method: str, strategy: str) -> None:
    """eqgeo-train runs DDP with the processes Lightning starts by running it again (start method
    ``popen``: ``trainer.strategy=ddp``, and Lightning's choice for ``auto`` on several devices), not with
    ``multiprocessing`` (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``; ``auto`` in a notebook)."""
    if start_method == "popen":
        return
    raise ValueError(
        f"{strategy} starts the DDP processes with multiprocessing (start method {start_method!r}), which "
        "eqgeo-train does not support: every process, global rank 0 too, then trains on a copy of the Trainer "
        "that this process never sees again (the learning curves, validation history and CSV logs it writes come "
        "from this process), Lightning's EMA callback (trainer.ema_decay) cannot be copied into a spawned "
        "process, and the processes would outlive an eqgeo-train that is killed. Use trainer.strategy=ddp: "
        "eqgeo-train starts one process per device, each ending with it (from a notebook, run eqgeo-train in a "
        "shell)"
    )


def _collective_timeout_setter():
    """The function that sets the timeout of a process group's collectives once it stands:
    ``ProcessGroup.set_timeout`` (documented), else ``distributed_c10d._set_pg_timeout``. Neither there is
    an error, not a silent fallback: collectives would keep the rendezvous' time limit."""
    from torch.distributed import distributed_c10d

    if hasattr(torch.distributed.ProcessGroup, "set_timeout"):
        return lambda group, timeout: group.set_timeout(timeout)
    if hasattr(distributed_c10d, "_set_pg_timeout"):
        return lambda group, timeout: distributed_c10d._set_pg_timeout(timeout, group)
    raise RuntimeError(
        f"torch {torch.__version__} has neither torch.distributed.ProcessGroup.set_timeout nor "
        "torch.distributed.distributed_c10d._set_pg_timeout: eqgeo-train's DDP runs wait trainer.rendezvous_timeout_s "
        "for the rendezvous and need one of them to give collectives their own, longer timeout afterwards "
        "(without it every collective would fail after trainer.rendezvous_timeout_s). Install a torch that has one"
    )


class _RendezvousBoundedDDP(DDPStrategy):
    """Lightning's DDP strategy whose rendezvous (``init_process_group``: the TCP store global rank 0
    serves, and every process joining it) fails after ``rendezvous_timeout`` seconds with a message
    naming what it waited for, instead of after torch's 30 minutes (and more: the TCP store retries).
    Collectives get the strategy's ``timeout`` once the process group stands.

    Made from the strategy Lightning builds (:meth:`adopt`), not constructed; only with the processes
    started by running eqgeo-train again (start method ``popen``, :func:`_refuse_multiprocessing`).
    """

    rendezvous_timeout: float

    @classmethod
    def adopt(cls, strategy: DDPStrategy, rendezvous_timeout: float, name: str) -> _RendezvousBoundedDDP:
        """Makes Lightning's own ``DDPStrategy`` of a Trainer (``trainer.strategy=ddp`` and the like, or
        Lightning's choice for ``auto`` on several devices; ``name`` says which, for messages) one of these,
        in place: the Trainer keeps the strategy it has set up, with the settings Lightning gave it, and is
        built once."""
        if type(strategy) is not DDPStrategy:
            raise TypeError(f"expected Lightning's DDPStrategy, got {type(strategy).__name__}")
        _refuse_multiprocessing(strategy._start_method, name)
        if not rendezvous_timeout > 0:
            raise ValueError(f"trainer.rendezvous_timeout_s must be positive, got {rendezvous_timeout}")
        _collective_timeout_setter()  # fails now, before any process starts, if it cannot be done
        strategy.__class__ = cls  # adds methods only; its one attribute is set below
        strategy.rendezvous_timeout = float(rendezvous_timeout)
        return strategy

    def setup_distributed(self) -> None:
        from torch.distributed.constants import default_pg_timeout

        collectives = self._timeout if self._timeout is not None else default_pg_timeout
        self._timeout = timedelta(seconds=self.rendezvous_timeout)
        try:
            super().setup_distributed()
        except (torch.distributed.DistStoreError, torch.distributed.DistNetworkError) as error:
            # the TCP store's server waiting for its clients, a client that cannot reach it; other
            # failures (a backend that is not built in...) are not the rendezvous' and go through as they are
            raise DDPRendezvousError(self._rendezvous_message(error)) from error
        finally:
            self._timeout = collectives
        _collective_timeout_setter()(torch.distributed.group.WORLD, collectives)

    def _rendezvous_message(self, error: Exception) -> str:
        env = self.cluster_environment
        rank, world = self.global_rank, self.world_size
        store = f"{env.main_address}:{env.main_port}" if env is not None else "MASTER_ADDR:MASTER_PORT"
        if rank == 0:
            waited = f"the job's {world - 1} other process(es) to join the TCP store it serves at {store}"
        else:
            waited = f"the TCP store of global rank 0 at {store} and the job's other processes to join it"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (
            f"DDP rendezvous failed (trainer.rendezvous_timeout_s={self.rendezvous_timeout:g}): global rank {rank} of "
            f"{world} waited in torch.distributed.init_process_group for {waited}; {type(error).__name__}: {reason}. "
            "The other processes may have ended or never started (see their output); for a slow start allow more "
            "time with trainer.rendezvous_timeout_s=<seconds>"
        )


@contextlib.contextmanager
def _launched_ddp_job(cfg: DictConfig, trainer: L.Trainer):
    """Runs one job whose other DDP processes on this node Lightning starts from this process.

    Lightning starts them by running this program again (``eqgeo-train`` or ``python -m
    eqgeo.training.train``) with ``LOCAL_RANK`` set. They read the job's resolved config and working
    directory from ``$EQGEO_DDP_JOB`` and run it as it is (:func:`main`) instead of composing a config
    from the command line, which under ``--multirun`` would start the whole sweep again and could
    resolve ``${now:...}`` to another folder, and end when this process ends (``$EQGEO_DDP_LAUNCHER_PID``,
    :func:`_end_with_launcher`). Afterwards the process group and the launcher's
    environment variables are removed, so the next job of a sweep starts its own processes.
    """
    if trainer.num_devices == 1 or "LOCAL_RANK" in os.environ:  # one process, or started by a launcher
        yield
        return
    saved = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    os.environ[_DDP_JOB] = json.dumps({"cwd": os.getcwd(), "config": OmegaConf.to_container(cfg, resolve=True)})
    os.environ[_LAUNCHER_PID] = str(os.getpid())
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _SaveConfig(Callback):
    """Writes the resolved config to ``config.yaml`` as fitting starts, from global rank 0 only (the
    ranks are known once Lightning has set its processes up)."""

    def __init__(self, cfg: DictConfig, path: Path) -> None:
        self.cfg, self.path = cfg, path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            OmegaConf.save(self.cfg, self.path, resolve=True)


def _tensorboard(run_dir: Path, stage: str) -> TensorBoardLogger:
    """TensorBoard logs in ``run_dir/tensorboard``, one event file per stage. tensorboardX names event
    files by the second: one logger for fit and test would have the test's file overwrite the fit's
    after a fit shorter than a second."""
    return TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False, filename_suffix=f".{stage}")


def _whole_test_set(dm):
    """The whole test split in this process (under DDP, eqgeo's ``test_dataloader`` is a shard)."""
    return dm.loader("test") if hasattr(dm, "loader") else dm.test_dataloader()


#: Below this many edges per training batch, torch's intra-op threads do not pay (each OpenMP
#: region costs more than it saves, and on a busy machine a descheduled thread stalls every region):
#: ``trainer.intra_op_threads=auto`` then trains on one thread (experiments/benchmarks/results/
#: training_epoch.md: 5 rMD17 frames, 360 edges, are fastest on one thread in every condition).
AUTO_THREADS_MIN_EDGES = 4000


def _set_intra_op_threads(setting, dm, statistics: dict) -> None:
    """``trainer.intra_op_threads``: ``auto`` (one thread for small batches, else torch's
    default), or a number of threads."""
    if setting is None or setting == "auto":
        batch = next(iter(dm.train_dataloader()))
        edges = batch.num_nodes * float(statistics["avg_num_neighbors"])
        if edges < AUTO_THREADS_MIN_EDGES:
            log.info("trainer.intra_op_threads=auto: %d edges per batch (< %d), training on 1 thread",
                     int(edges), AUTO_THREADS_MIN_EDGES)
            torch.set_num_threads(1)
    elif isinstance(setting, int) and setting >= 1:
        torch.set_num_threads(setting)
    else:
        raise ValueError(f"trainer.intra_op_threads must be 'auto' or a positive integer, got {setting!r}")


def _check_run(cfg: DictConfig) -> None:
    """What can be refused before any data are read: the dtype, a strategy that starts its processes by
    multiprocessing, a ``ckpt_path`` that cannot be resumed from."""
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {cfg.dtype!r}")
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str) and strategy.lower() in StrategyRegistry:
        _refuse_multiprocessing(StrategyRegistry[strategy.lower()]["init_params"].get("start_method", "popen"),
                                f"trainer.strategy={strategy}")
    if cfg.ckpt_path is not None:
        read_checkpoint(cfg.ckpt_path, resumable=True)


def _data_module(cfg: DictConfig) -> tuple[L.LightningDataModule, list[dict]]:
    """The data module of ``cfg.data``, set up for fitting, and the inputs it left out (each with its reason)."""
    dm = _instantiate(cfg.data)
    dm.setup("fit")
    skipped = [e.to_dict() for e in getattr(getattr(dm, "report", None), "errors", [])]
    if skipped:
        log.warning("%d input folders/files left out (listed in metrics.json under 'skipped'):\n%s", len(skipped), dm.report)
    return dm, skipped


def _callbacks(cfg: DictConfig, trainer_cfg: dict, run_dir: Path) -> list[Callback]:
    """Checkpoints (the best by ``val/loss`` first), early stopping, the learning rate, EMA and the epoch marker;
    pops their settings from ``trainer_cfg``."""
    ema_decay = trainer_cfg.pop("ema_decay")
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/loss", save_last=True),
        # checked when validation ends, not when a training epoch ends: a run that trainer.max_steps stops inside
        # its first epoch has no val/loss at that epoch's end, and Lightning's default check would raise there
        EarlyStopping(monitor="val/loss", patience=trainer_cfg.pop("early_stopping_patience"),
                      check_on_train_epoch_end=False),
        LearningRateMonitor(),
    ]
    if ema_decay is not None:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        # buffers are not averaged: the species tables are integers (averaging truncates them) and the
        # statistics buffers are constants
        callbacks.append(EMAWeightAveraging(decay=ema_decay, use_buffers=False))
    marker = cfg.get("marker") or {}
    if marker.get("path") is not None:
        callbacks.append(EpochMarker(marker["path"], marker.get("epoch", 0)))
    return callbacks + [_SaveConfig(cfg, run_dir / "config.yaml")]


def _trainer(cfg: DictConfig, dm, run_dir: Path) -> tuple[L.Trainer, CSVLogger]:
    """The Lightning trainer of ``cfg.trainer``, its threads set for the data, DDP with a bounded rendezvous;
    and the CSV logger the learning curves are read back from."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    rendezvous_timeout = float(trainer_cfg.pop("rendezvous_timeout_s", _RENDEZVOUS_TIMEOUT_S))
    _set_intra_op_threads(trainer_cfg.pop("intra_op_threads", "auto"), dm, dm.statistics)
    callbacks = _callbacks(cfg, trainer_cfg, run_dir)
    csv_logger = CSVLogger(run_dir, name="logs", version="")
    trainer = L.Trainer(
        **trainer_cfg,
        default_root_dir=run_dir,
        precision=_DTYPES[cfg.dtype],
        callbacks=callbacks,
        logger=[csv_logger, _tensorboard(run_dir, "fit")],
        inference_mode=False,  # validation needs autograd for the forces
    )
    if type(trainer.strategy) is DDPStrategy:  # trainer.strategy=ddp and the like, or auto on several devices
        _RendezvousBoundedDDP.adopt(trainer.strategy, rendezvous_timeout, f"trainer.strategy={cfg.trainer.get('strategy')}")
    return trainer, csv_logger


def _load_best(task: RecordedTask, trainer: L.Trainer) -> Optional[str]:
    """Loads the best checkpoint's weights into ``task``; returns its path (``None`` when none was saved).

    These are the weights in the checkpoint's ``state_dict``, which validation chose and
    ``load_from_checkpoint`` gives (with EMA, the average). ``trainer.test(ckpt_path=best)`` would let
    the EMA callback restore the raw, non-averaged weights instead."""
    best = trainer.checkpoint_callback.best_model_path or None
    if best is not None:
        task.load_state_dict(torch.load(best, map_location=task.device, weights_only=True)["state_dict"])
    else:
        log.warning("no validation ran before training stopped (at step %d, inside epoch %d): the test uses the "
                    "last weights, and metrics.json has best_checkpoint null", trainer.global_step, trainer.current_epoch)
    return best


def _test(task: RecordedTask, trainer: L.Trainer, dm, csv_logger: CSVLogger, run_dir: Path) -> tuple[dict, dict]:
    """Tests ``task`` on the whole test split; returns the test metrics and, on global rank 0, the figures."""
    trainer.loggers = [csv_logger, _tensorboard(run_dir, "test")]
    trainer.test(task, datamodule=dm, verbose=False)
    test = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    figures = {}
    if trainer.is_global_zero:
        csv_logger.save()
        figures = {
            "parity": parity_plot(task, _whole_test_set(dm), run_dir / "parity.png").name,
            "learning_curves": learning_curves(Path(csv_logger.log_dir) / "metrics.csv", run_dir / "learning_curves.png").name,
        }
    return test, figures


def _metrics(cfg: DictConfig, task: RecordedTask, dm, trainer: L.Trainer, **results) -> dict:
    """The contents of ``metrics.json``: what ran, on what, for how long, and the test metrics with units."""
    units = task.metric_units()
    return {
        "config_hash": _config_hash(cfg),
        "task": type(task).__name__,
        "data": _data_record(dm),
        "model": {"class": type(task.model).__name__, "parameters": sum(p.numel() for p in task.model.parameters())},
        "epochs": trainer.current_epoch,
        "wall_time_s": results["wall_time_s"],
        "best_checkpoint": results["best"],
        "figures": results["figures"],
        "test": {name: {"value": value, "unit": units[name]} for name, value in sorted(results["test"].items())},
        "validation_history": task.history,
        "skipped": results["skipped"],  # inputs the data module left out, each with its reason
    }


def _data_record(dm) -> dict:
    """What ``metrics.json`` says of the data: split sizes; ``dataset``, the name the leaderboard groups runs
    under; ``origin``, the files it came from; ``split_digest`` where the splits have sample indices (QM9)."""
    record = {**dm.sizes(), "dataset": dm.dataset, "source": type(dm).__name__, "origin": dm.origin}
    digest = dm.split_digest() if hasattr(dm, "split_digest") else None
    return {**record, "split_digest": digest} if digest else record


def train(cfg: DictConfig) -> dict:
    """Train and test one configuration; returns the contents of the run's ``metrics.json``.

    Writes into ``cfg.run_dir``: ``checkpoints/`` (``best.ckpt`` by validation loss and
    ``last.ckpt``), CSV logs (``logs/metrics.csv``), TensorBoard logs (``tensorboard/``),
    ``config.yaml``, ``metrics.json``, ``parity.png`` (test set) and ``learning_curves.png``.

    Under DDP (``trainer.devices=N trainer.strategy=ddp``, ``trainer.num_nodes``) every process
    trains on its shard of the training set; validation and test metrics are exact over the whole
    split (each sample evaluated once, sums all-reduced, see :class:`~eqgeo.inference.metrics.ErrorSums`);
    only global rank 0 writes the files, and every process returns the same metrics.
    """
    start = time.time()
    _check_run(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, skipped = _data_module(cfg)
    task = _build_task(cfg, dm)
    trainer, csv_logger = _trainer(cfg, dm, run_dir)
    with _launched_ddp_job(cfg, trainer):
        trainer.fit(task, datamodule=dm, ckpt_path=cfg.ckpt_path)
        best = _load_best(task, trainer)
        test, figures = _test(task, trainer, dm, csv_logger, run_dir)
        is_global_zero = trainer.is_global_zero  # read while the DDP job is up
    metrics = _metrics(cfg, task, dm, trainer, wall_time_s=round(time.time() - start, 1), best=best, figures=figures,
                       test=test, skipped=skipped)
    if is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


@rank_zero_only
def _report(metrics: dict, run_dir: str) -> None:
    test = metrics["test"]
    shown = []
    for k, v in test.items():
        if k.endswith("_mae") and not is_mean_predictor(k):
            reference = test.get(mean_predictor_name(k))
            shown.append(f"{k} {v['value']:.4g} {v['unit']}"
                         + ("" if reference is None else f" (predicting the training mean: {reference['value']:.4g} {reference['unit']})"))
    print(f"test: {', '.join(shown)}")
    print(f"results: {Path(run_dir).resolve()} (metrics.json, parity.png, learning_curves.png, checkpoints/, logs/, "
          "tensorboard/)")


@hydra.main(version_base="1.3", config_path="pkg://eqgeo.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    _report(train(cfg), cfg.run_dir)


def main() -> None:
    """Console entry point ``eqgeo-train``."""
    job = os.environ.get(_DDP_JOB)
    if job is not None and os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP process started by Lightning
        if os.environ.get(_LAUNCHER_PID):
            _end_with_launcher(int(os.environ[_LAUNCHER_PID]))
        job = json.loads(job)
        torch.set_float32_matmul_precision("high")
        os.chdir(job["cwd"])
        train(OmegaConf.create(job["config"]))
        return
    torch.set_float32_matmul_precision("high")
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
