"""eqgeo-train under DDP: two CPU processes (gloo) started through the CLI; exact metrics, outputs written once;
no process outlives a killed launcher; a rendezvous that cannot complete fails with a clear message, and
collectives get their own time limit afterwards; strategies that start processes with multiprocessing are
refused."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import psutil
import pytest
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from eqgeo.data import keys as K
from eqgeo.training import PropertyTask, train
from eqgeo.training.train import DDPRendezvousError, _process_alive, _RendezvousBoundedDDP

from ._helpers import (
    DDP, GONE_TIMEOUT_S, MARKER_TIMEOUT_S, TINY, TINY_QM9, alive, cfg as _cfg, cli_env, processes_with_env, run_cli,
    started, wait_for_file, wait_until_gone,
)

# A hang guard for a process that must finish importing eqgeo (torch, Lightning) before it can act.
IMPORT_TIMEOUT_S = 300

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


@pytest.mark.slow
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


@pytest.mark.slow
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


_LATE_CHILD = """
import os, sys, time
from eqgeo.training.train import _end_with_launcher
mode, folder = sys.argv[1], sys.argv[2]
open(os.path.join(folder, mode + ".ready"), "w").close()
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.05)
# the watching thread checks once an hour: only the first check, made at once, can end this process in time
_end_with_launcher(int(os.environ["EQGEO_DDP_LAUNCHER_PID"]), direct_child=mode == "child", poll_s=3600)
open(os.path.join(folder, mode + ".passed"), "w").close()
time.sleep(3600)
"""
_LATE_LAUNCHER = """
import os, subprocess, sys, time
env = {**os.environ, "EQGEO_DDP_LAUNCHER_PID": str(os.getpid())}
for mode in ("child", "pid"):
    subprocess.Popen([sys.executable, sys.argv[1], mode, sys.argv[2]], env=env)
time.sleep(3600)
"""


@pytest.mark.slow
def test_a_launcher_gone_before_the_guard_is_seen_gone_though_not_yet_reaped(tmp_path):
    """A launcher that ends before its processes reach _end_with_launcher, and whose exit status its parent has
    not collected yet (a zombie: os.kill(pid, 0) still succeeds on it, as on a reused pid): the guard ends them
    at once, both as the launcher's children (their parent is no longer the launcher) and watching the pid
    (direct_child=False: a zombie is no live launcher), instead of letting them through."""
    (tmp_path / "child.py").write_text(_LATE_CHILD)
    (tmp_path / "launcher.py").write_text(_LATE_LAUNCHER)
    log = tmp_path / "run.log"
    with log.open("w") as output, started([sys.executable, tmp_path / "launcher.py", tmp_path / "child.py", tmp_path],
                                          cwd=tmp_path, env=cli_env(), stdout=output, stderr=subprocess.STDOUT) as launcher:
        for mode in ("child", "pid"):
            wait_for_file(tmp_path / f"{mode}.ready", launcher, timeout=IMPORT_TIMEOUT_S, log=log)
        children = psutil.Process(launcher.pid).children()
        assert len(children) == 2
        launcher.send_signal(signal.SIGKILL)  # and not collected: no launcher.wait() or poll() until the end
        zombie = psutil.Process(launcher.pid)
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while zombie.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert zombie.status() == psutil.STATUS_ZOMBIE
        (tmp_path / "go").touch()
        assert wait_until_gone(children) == []
        assert zombie.status() == psutil.STATUS_ZOMBIE  # still not collected when they ended
        assert not list(tmp_path.glob("*.passed"))
        launcher.wait()
    said = f"ends: the eqgeo-train process that started it (pid {launcher.pid}) has ended"
    assert log.read_text().count(said) == 2, log.read_text()[-4000:]


def test_a_zombie_is_no_live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert _process_alive(proc.pid)
        proc.kill()  # not collected: a zombie until proc.wait()
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, 0)  # succeeds on a zombie
        assert not _process_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()


# Runs a command (the launcher) and collects the exit status of every process that ends under it: as a child
# subreaper it becomes the parent of the launcher's processes once the launcher is gone. One line per process,
# "<pid> <wait status>", after a first line "launcher <pid>"; it ends once no process is left under it.
_REAPER = """
import ctypes, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
statuses = open(sys.argv[1], "w", buffering=1)
statuses.write(f"launcher {subprocess.Popen(sys.argv[2:]).pid}\\n")
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    statuses.write(f"{pid} {status}\\n")
"""


def _statuses(path) -> tuple[int | None, dict[int, int]]:
    """The launcher's pid (None until written) and the wait status of each process _REAPER has collected."""
    lines = [line.split() for line in path.read_text().splitlines()] if path.is_file() else []
    launcher = int(lines[0][1]) if lines else None
    return launcher, {int(pid): int(status) for pid, status in lines[1:]}


def _launcher(reaper: subprocess.Popen, statuses) -> psutil.Process:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while (pid := _statuses(statuses)[0]) is None:
        if reaper.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the launcher was not started (reaper exit status {reaper.poll()})")
        time.sleep(0.1)
    return psutil.Process(pid)


def _rank1_process(launcher: psutil.Process, timeout: float = MARKER_TIMEOUT_S) -> psutil.Process:
    """The DDP process of global rank 1 the launcher starts, once it exists (fails if the launcher ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(launcher):
        for child in launcher.children():
            with contextlib.suppress(psutil.Error):
                if child.environ().get("LOCAL_RANK") == "1":
                    return child
        time.sleep(0.1)
    pytest.fail(f"no rank-1 process appeared (launcher alive: {alive(launcher)})")


@pytest.mark.slow
@pytest.mark.parametrize("when", ["training", "before_rendezvous"])
def test_a_killed_launcher_leaves_no_ddp_process(tmp_path, when):
    """SIGKILL to the eqgeo-train process of a 2-process DDP run: no process of the run remains (found as the
    launcher's descendants before the kill, and by a token in their environment after), and the rank-1
    process ended because of the guard (:func:`_end_with_launcher`): killed by the parent-death signal, or
    exited saying that its launcher has ended. The run is started under a child subreaper, which collects
    rank 1's exit status once the launcher is gone.

    ``training``: killed once epoch 0 has ended (its marker), both processes training. ``before_rendezvous``:
    killed as soon as the rank-1 process exists, before it has imported eqgeo (so it gets longer). Both fail
    without the guard: rank 1 would wait in init_process_group for a launcher that is gone (the rendezvous
    time limit is set far beyond this test's wait), or, while training, end by itself as its next collective
    fails once rank 0 is gone, with neither the parent-death signal nor the guard's line.
    """
    token, marker, log, statuses = uuid.uuid4().hex, tmp_path / "epoch0.json", tmp_path / "run.log", tmp_path / "statuses"
    (tmp_path / "reaper.py").write_text(_REAPER)
    args = [sys.executable, tmp_path / "reaper.py", statuses, sys.executable, "-m", "eqgeo.training.train", *TINY,
            *TINY_QM9, *DDP, "trainer.max_epochs=1000", "trainer.early_stopping_patience=1000",
            "trainer.rendezvous_timeout_s=36000", f"marker.path={marker}", f"hydra.run.dir={tmp_path / 'run'}"]
    with log.open("w") as output, started(args, cwd=tmp_path, env=cli_env(EQGEO_TEST_RUN=token), stdout=output,
                                          stderr=subprocess.STDOUT) as reaper:
        launcher = _launcher(reaper, statuses)
        if when == "training":
            wait_for_file(marker, reaper, log=log)  # epoch 0 has ended: it took both processes
        rank1 = _rank1_process(launcher)
        run = {p.pid: p for p in [rank1, *launcher.children(recursive=True)]}
        run.update((p.pid, p) for p in processes_with_env("EQGEO_TEST_RUN", token) if p.pid != launcher.pid)
        launcher.send_signal(signal.SIGKILL)
        left = wait_until_gone(run.values(), GONE_TIMEOUT_S if when == "training" else IMPORT_TIMEOUT_S)
        left += [p for p in processes_with_env("EQGEO_TEST_RUN", token) if p.pid not in run]
        assert not left, f"processes of the run left after its launcher was killed: {[p.pid for p in left]}"
        reaper.wait(timeout=GONE_TIMEOUT_S)  # it ends once every process under it has

    status = _statuses(statuses)[1][rank1.pid]
    said = f"LOCAL_RANK=1 ends: the eqgeo-train process that started it (pid {launcher.pid}) has ended"
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # the parent-death signal
    exited = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1 and said in log.read_text()
    assert killed or exited, f"rank 1 ended with wait status {status}, not by the guard\n{log.read_text()[-4000:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
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


def _one_process_strategy(monkeypatch, **kwargs) -> _RendezvousBoundedDDP:
    """Lightning's DDP strategy on one CPU process (gloo), made bounded as eqgeo-train does (7 s rendezvous)."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    strategy = DDPStrategy(accelerator=CPUAccelerator(), parallel_devices=[torch.device("cpu")],
                           cluster_environment=LightningEnvironment(), process_group_backend="gloo", **kwargs)
    return _RendezvousBoundedDDP.adopt(strategy, 7, "trainer.strategy=ddp")


def test_collectives_get_their_own_timeout_after_a_bounded_rendezvous(monkeypatch):
    """One gloo process: init_process_group waits trainer.rendezvous_timeout_s, the process group it leaves
    gives collectives the strategy's timeout (Lightning's 30 minutes), not the rendezvous' 7 s."""
    assert not torch.distributed.is_initialized()
    strategy = _one_process_strategy(monkeypatch)
    assert strategy._timeout == timedelta(minutes=30)
    waited = []
    init = torch.distributed.init_process_group
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **kw: waited.append(kw["timeout"]) or init(*a, **kw))
    try:
        strategy.setup_distributed()
        assert waited == [timedelta(seconds=7)]
        gloo = torch.distributed.group.WORLD._get_backend(torch.device("cpu"))
        assert gloo.options._timeout == timedelta(minutes=30) == strategy._timeout
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("error", [
    torch.distributed.DistStoreError("Timed out after 8 seconds waiting for clients. 1/2 clients joined."),  # rank 0
    torch.distributed.DistNetworkError("The client socket has timed out after 7000ms while trying to connect"),  # others
    RuntimeError("Distributed package doesn't have NCCL built in"),  # not the rendezvous': goes through as it is
], ids=["store", "network", "other"])
def test_only_rendezvous_failures_are_reported_as_such(monkeypatch, error):
    def fail(self):
        raise error

    strategy = _one_process_strategy(monkeypatch)
    monkeypatch.setattr(DDPStrategy, "setup_distributed", fail)
    with pytest.raises(RuntimeError) as raised:
        strategy.setup_distributed()
    if isinstance(error, torch.distributed.DistError):
        assert type(raised.value) is DDPRendezvousError and raised.value.__cause__ is error
        assert str(raised.value).startswith("DDP rendezvous failed (trainer.rendezvous_timeout_s=7): global rank 0 of 1")
        assert f"{type(error).__name__}: {error}" in str(raised.value)
    else:
        assert raised.value is error
    assert strategy._timeout == timedelta(minutes=30)  # the collectives' timeout is back


def test_without_a_way_to_set_the_collective_timeout_ddp_is_refused(monkeypatch):
    """Where torch can set neither, collectives would keep the rendezvous' limit: an error, before any process starts."""
    from torch.distributed import distributed_c10d

    monkeypatch.delattr(torch.distributed.ProcessGroup, "set_timeout")
    monkeypatch.delattr(distributed_c10d, "_set_pg_timeout")
    with pytest.raises(RuntimeError, match=r"has neither torch.distributed.ProcessGroup.set_timeout nor .*_set_pg_timeout"):
        _one_process_strategy(monkeypatch)


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook", "DDP_Spawn_Find_Unused_Parameters_True"])
def test_multiprocessing_strategies_are_refused(tmp_path, strategy):
    """Their processes (rank 0 too) would outlive a killed eqgeo-train, and work on copies of the Trainer whose
    logs and history never reach the run's files: refused at once, before the data are read."""
    cfg = _cfg([*TINY, *TINY_QM9, "trainer.accelerator=cpu", "trainer.devices=2", f"trainer.strategy={strategy}"],
               tmp_path / "run")
    with pytest.raises(ValueError, match=rf"trainer.strategy={strategy} starts the DDP processes with multiprocessing "
                                         r"\(start method '(spawn|fork)'\), which eqgeo-train does not support.*"
                                         r"Use trainer.strategy=ddp"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_lightnings_own_multiprocessing_choice_is_refused():
    """trainer.strategy=auto on several devices in a notebook: Lightning picks ddp_fork, refused as it is built."""
    strategy = DDPStrategy(start_method="fork")
    with pytest.raises(ValueError, match=r"trainer.strategy=auto starts the DDP processes with multiprocessing"):
        _RendezvousBoundedDDP.adopt(strategy, 300, "trainer.strategy=auto")
    assert type(strategy) is DDPStrategy
