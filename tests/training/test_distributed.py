"""eqgeo-train under DDP: two CPU processes (gloo) started through the CLI; exact metrics, outputs written once."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from eqgeo.data import keys as K
from eqgeo.training import PropertyTask

from .test_train import TINY, TINY_QM9, _cfg

# Odd validation and test sizes: the two processes get shards of 5 and 4, and 6 and 5 molecules, and with
# batches of 4 a different number of batches; Lightning's own DistributedSampler would repeat one molecule
# of each split. float64, so that the re-evaluation below agrees to rounding.
SPLITS = ["data.num_val=9", "data.num_test=11", "data.batch_size=4", "dtype=float64", "trainer.max_epochs=2"]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
JOB_FILES = [".hydra", "checkpoints", "config.yaml", "learning_curves.png", "logs", "metrics.json", "parity.png",
             "tensorboard", "train.log"]


def _errors_mev(task: PropertyTask, loader) -> torch.Tensor:
    """Predicted minus true gap (meV) of every molecule of ``loader``, in one process."""
    errors = []
    with torch.no_grad():
        for batch in loader:
            errors.append(task.model(batch)["y"][:, 0] - batch[K.TARGET][:, task.columns[0]].to(torch.float64))
    return torch.cat(errors) * 1000.0


def test_ddp_jobs_of_a_sweep_report_exact_metrics_once(tmp_path):
    # two DDP jobs in one sweep (with and without EMA): each job starts its own second process
    tiny = [o for o in TINY if not o.startswith("trainer.ema_decay=")]
    out = subprocess.run(
        [sys.executable, "-m", "eqgeo.training.train", "--multirun", "trainer.ema_decay=0.9,null", *tiny, *TINY_QM9,
         *SPLITS, *DDP, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stderr.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # each job ran in two processes

    # one folder per job, its files written once, by global rank 0
    jobs = [tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"]
    assert sorted(p.parent for p in tmp_path.rglob("metrics.json")) == jobs
    for job in jobs:
        assert sorted(p.name for p in job.iterdir()) == JOB_FILES
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
    assert out.stdout.count("test: gap_mae") == 2

    # exact: one process re-evaluates each best checkpoint on the whole split and gets the reported metrics
    dm = instantiate(_cfg(TINY + TINY_QM9 + SPLITS, tmp_path / "unused").data)
    dm.setup()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["data"]["val"] == 9 and metrics["data"]["test"] == 11
        checkpoint = torch.load(metrics["best_checkpoint"], weights_only=True)
        task = PropertyTask(**checkpoint["hyper_parameters"]).double()  # float64 before loading float64 weights
        task.load_state_dict(checkpoint["state_dict"])
        test = _errors_mev(task, dm.loader("test"))
        assert test.numel() == 11
        # metrics.json has the test metrics as Lightning logs them, in float32
        assert metrics["test"]["gap_mae"]["value"] == pytest.approx(test.abs().mean().item(), rel=1e-6)
        assert metrics["test"]["gap_rmse"]["value"] == pytest.approx(test.square().mean().sqrt().item(), rel=1e-6)

        # validation too: the checkpoint holds the weights validated at its epoch (history kept in float64)
        [validated] = [h for h in metrics["validation_history"] if h["epoch"] == checkpoint["epoch"]]
        assert validated["val/loss"] == min(h["val/loss"] for h in metrics["validation_history"])
        val = _errors_mev(task, dm.loader("val"))
        assert val.numel() == 9
        assert validated["val/gap_mae"] == pytest.approx(val.abs().mean().item(), rel=1e-10)
        assert validated["val/gap_rmse"] == pytest.approx(val.square().mean().sqrt().item(), rel=1e-10)
