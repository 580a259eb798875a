"""What the tests of eqgeo-train share: tiny settings, config composition, and CLI processes that never
outlive their test.

No test here depends on how fast the machine is: a test waits for what a run itself signals (its
exit, a marker file), and the time limits below only guard against a hang. They are generous, so that
the suite passes on a machine several times slower or busier than a developer's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from hydra import compose, initialize_config_module

from ..helpers import require

TINY = ["model.channels=4", "model.lmax=1", "model.num_layers=1", "model.radial_hidden=8", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "trainer.ema_decay=0.9"]
TINY_QM9 = ["data.subset=60", "data.num_train=30", "data.num_val=10", "data.num_test=10", "data.batch_size=10"]
TINY_MD17 = ["data.num_train=10", "data.num_val=5", "data.num_test=5", "data.batch_size=5"]
TINY_DOCKING = ["experiment=docking", "data.num_complexes=7", "data.num_val=1", "data.num_test=2", "data.poses_per_complex=2",
                "data.val_poses=2", "data.batch_size=2", "data.track_a.starts=2", "data.track_b.starts=2",
                "task.refine_steps=2", "model.parity=full"]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]

# Hang guards (seconds), not speed checks: a CLI run of a tiny config, and a run reaching its marker.
CLI_TIMEOUT_S = 1200
MARKER_TIMEOUT_S = 900
# How long processes that were killed, or whose launcher was, may take to be gone.
GONE_TIMEOUT_S = 30


def cfg(overrides, run_dir=None):
    """The composed ``eqgeo-train`` config, with ``run_dir`` when given."""
    with initialize_config_module(config_module="eqgeo.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides) + ([f"run_dir={run_dir}"] if run_dir is not None else []))


def cli_env(**extra: str) -> dict:
    """The environment of a CLI subprocess: one thread per process (DDP runs two), full Hydra errors."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", **extra}


def console_script(name: str) -> str:
    """The path of console script ``name``; where it is not on PATH the test is skipped, and fails under CI
    (``CI=true``), where a skipped test would hide that the package is not installed as it should be."""
    path = shutil.which(name)
    if path is None:
        require(f"the {name} console script is not on PATH (pip install -e .)")
    return path


def alive(process: psutil.Process) -> bool:
    """Still running (a zombie has ended: only its exit status waits to be collected)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until_gone(processes, timeout: float = GONE_TIMEOUT_S) -> list[psutil.Process]:
    """The ``processes`` still alive after up to ``timeout`` seconds (returns as soon as none is)."""
    deadline = time.monotonic() + timeout
    remaining = [p for p in processes if alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.2)
        remaining = [p for p in remaining if alive(p)]
    return remaining


def processes_with_env(key: str, value: str) -> list[psutil.Process]:
    """The processes of this user whose environment has ``key=value`` (a token a test gave one run)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and process.environ().get(key) == value and alive(process):
                found.append(process)
    return found


def end_process_tree(proc: subprocess.Popen) -> None:
    """Kills ``proc`` (started in its own session), its process group and every descendant it has."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader while members are left
    for process in family:
        with contextlib.suppress(psutil.Error):
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=GONE_TIMEOUT_S)


@contextlib.contextmanager
def started(args, **popen_kwargs):
    """``subprocess.Popen(args)`` in a session of its own; on leaving, whatever is left of it is killed."""
    proc = subprocess.Popen([str(a) for a in args], start_new_session=True, **popen_kwargs)
    try:
        yield proc
    finally:
        end_process_tree(proc)


def run_cli(args, *, cwd, timeout: float = CLI_TIMEOUT_S, env=None) -> subprocess.CompletedProcess:
    """Runs a command to its end with its output captured; a run past ``timeout`` (a hang) is killed with
    all its processes and fails the test."""
    with started(args, cwd=cwd, env=cli_env() if env is None else env, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_process_tree(proc)
            out, err = proc.communicate()
            pytest.fail(f"{' '.join(map(str, args))} did not end within {timeout} s (a hang guard); its processes were "
                        f"killed. Last output:\n{(out or '')[-2000:]}\n{(err or '')[-4000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = MARKER_TIMEOUT_S, log: Path | None = None) -> None:
    """Waits until the run ``proc`` writes ``path``; fails if the run ends first, or after ``timeout``
    seconds (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        tail = lambda: log.read_text()[-4000:] if log is not None and log.is_file() else ""  # noqa: E731
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit status {proc.returncode}) before it wrote {path.name}\n{tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not write {path.name} within {timeout} s (a hang guard)\n{tail()}")
        time.sleep(0.5)
