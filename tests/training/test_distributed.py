"""eqgeo-train under DDP: two CPU processes (gloo) started through the CLI; exact metrics, outputs written once;
no process outlives a killed launcher; a rendezvous that cannot complete fails with a clear message."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import psutil
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from eqgeo.data import keys as K
from eqgeo.training import PropertyTask

from ._helpers import (
    DDP, GONE_TIMEOUT_S, MARKER_TIMEOUT_S, TINY, TINY_QM9, alive, cfg as _cfg, cli_env, processes_with_env, run_cli,
    started, wait_for_file, wait_until_gone,
)

# A hang guard for a process that must finish importing eqgeo (torch, Lightning) before it can act.
IMPORT_TIMEOUT_S = 300

pytestmark = pytest.mark.slow

# Odd validation and test sizes: the two processes get shards of 5 and 4, and 6 and 5 molecules, and with
# batches of 4 a different number of batches; Lightning's own DistributedSampler would repeat one molecule
# of each split. float64, so that the re-evaluation below agrees to rounding.
SPLITS = ["data.num_val=9", "data.num_test=11", "data.batch_size=4", "dtype=float64", "trainer.max_epochs=2"]
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
    out = run_cli([sys.executable, "-m", "eqgeo.training.train", "--multirun", "trainer.ema_decay=0.9,null", *tiny,
                   *TINY_QM9, *SPLITS, *DDP, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
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


_CHILD = """
import os, sys, time
mode, ready = sys.argv[1], sys.argv[2]
if mode != "bare":
    from eqgeo.training.train import _end_with_launcher
    _end_with_launcher(int(os.environ["EQGEO_DDP_LAUNCHER_PID"]), parent_death_signal=mode == "pdeath", poll_s=0.2)
open(ready, "w").close()
time.sleep(3600)
"""
_LAUNCHER = """
import os, subprocess, sys, time
env = {**os.environ, "EQGEO_DDP_LAUNCHER_PID": str(os.getpid())}
for mode in ("pdeath", "watch", "bare"):
    subprocess.Popen([sys.executable, sys.argv[1], mode, os.path.join(sys.argv[2], mode)], env=env)
time.sleep(3600)
"""


def test_a_process_ends_with_its_launcher_and_without_the_guard_it_stays(tmp_path):
    """_end_with_launcher, with the parent-death signal and with the watching thread alone, ends a process
    once its launcher is SIGKILLed; a process without it (the negative control) stays behind."""
    (tmp_path / "child.py").write_text(_CHILD)
    (tmp_path / "launcher.py").write_text(_LAUNCHER)
    with started([sys.executable, tmp_path / "launcher.py", tmp_path / "child.py", tmp_path], cwd=tmp_path,
                 env=cli_env()) as launcher:
        for mode in ("pdeath", "watch", "bare"):
            wait_for_file(tmp_path / mode, launcher)
        children = {p.cmdline()[2]: p for p in psutil.Process(launcher.pid).children()}
        assert sorted(children) == ["bare", "pdeath", "watch"]
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        assert wait_until_gone([children["pdeath"], children["watch"]]) == []
        assert alive(children["bare"])  # an orphan: what every DDP process was without the guard
        children["bare"].kill()


def _rank1_process(launcher: subprocess.Popen, timeout: float = MARKER_TIMEOUT_S) -> psutil.Process:
    """The DDP process of global rank 1 the launcher starts, once it exists (fails if the launcher ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and launcher.poll() is None:
        for child in psutil.Process(launcher.pid).children():
            with contextlib.suppress(psutil.Error):
                if child.environ().get("LOCAL_RANK") == "1":
                    return child
        time.sleep(0.1)
    pytest.fail(f"no rank-1 process appeared (launcher exit status {launcher.poll()})")


@pytest.mark.parametrize("when", ["training", "before_rendezvous"])
def test_a_killed_launcher_leaves_no_ddp_process(tmp_path, when):
    """SIGKILL to the eqgeo-train process of a 2-process DDP run: no process of the run remains (found as the
    launcher's descendants before the kill, and by a token in their environment after).

    ``training``: killed once epoch 0 has ended (its marker), both processes training. Without the guard
    (:func:`_end_with_launcher`) this case passes too: rank 1's next collective fails once rank 0 is gone.
    ``before_rendezvous``: killed as soon as the rank-1 process exists, which without the guard waits in
    init_process_group for a launcher that is gone (the rendezvous time limit is set far beyond this test's
    wait): this case fails without the guard. The process has to import eqgeo before it can act, so it
    gets longer.
    """
    token, marker, log = uuid.uuid4().hex, tmp_path / "epoch0.json", tmp_path / "run.log"
    args = [sys.executable, "-m", "eqgeo.training.train", *TINY, *TINY_QM9, *DDP, "trainer.max_epochs=1000",
            "trainer.early_stopping_patience=1000", "trainer.rendezvous_timeout_s=36000", f"marker.path={marker}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    with log.open("w") as output, started(args, cwd=tmp_path, env=cli_env(EQGEO_TEST_RUN=token), stdout=output,
                                          stderr=subprocess.STDOUT) as launcher:
        if when == "training":
            wait_for_file(marker, launcher, log=log)  # epoch 0 has ended: it took both processes
        run = {p.pid: p for p in [_rank1_process(launcher), *psutil.Process(launcher.pid).children(recursive=True)]}
        run.update((p.pid, p) for p in processes_with_env("EQGEO_TEST_RUN", token) if p.pid != launcher.pid)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        left = wait_until_gone(run.values(), GONE_TIMEOUT_S if when == "training" else IMPORT_TIMEOUT_S)
        left += [p for p in processes_with_env("EQGEO_TEST_RUN", token) if p.pid not in run]
        assert not left, f"processes of the run left after its launcher was killed: {[p.pid for p in left]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rendezvous_that_cannot_complete_fails_clearly(tmp_path, rank):
    """Rank 0 whose peer never comes, and rank 1 whose rank 0 is not there (as after a killed launcher),
    fail after trainer.rendezvous_timeout_s with a message naming what they waited for."""
    port = _free_port()
    env = cli_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0", LOCAL_RANK=str(rank))
    overrides = [*TINY, *TINY_QM9, *DDP, "trainer.rendezvous_timeout_s=5"]
    if rank == 0:  # LOCAL_RANK set: Lightning starts no other process, as under an external launcher
        args = [sys.executable, "-m", "eqgeo.training.train", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    else:  # what a DDP process started by eqgeo-train runs, with the launcher's environment
        config = OmegaConf.to_container(_cfg(overrides, tmp_path / "run"), resolve=True)
        env.update(EQGEO_DDP_JOB=json.dumps({"cwd": str(tmp_path), "config": config}),
                   EQGEO_DDP_LAUNCHER_PID=str(os.getpid()))
        args = [sys.executable, "-m", "eqgeo.training.train"]
    out = run_cli(args, cwd=tmp_path, env=env)
    assert out.returncode != 0
    assert "DDPRendezvousError: DDP rendezvous failed (trainer.rendezvous_timeout_s=5)" in out.stderr, out.stderr[-4000:]
    waited = "to join the TCP store it serves at" if rank == 0 else "for the TCP store of global rank 0 at"
    assert f"global rank {rank} of 2 waited in torch.distributed.init_process_group" in out.stderr
    assert f"{waited} 127.0.0.1:{port}" in out.stderr
