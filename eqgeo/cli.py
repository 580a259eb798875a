"""eqgeo's console scripts, in one place: ``eqgeo-train``, ``eqgeo-evaluate``, ``eqgeo-export``,
``eqgeo-leaderboard`` and ``eqgeo-demo``.

Each entry point first calls :func:`configure_process` (before torch is imported) and then runs
its command, imported only when it runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Optional

__all__ = ["configure_process", "train", "evaluate", "export", "leaderboard", "demo"]

#: OpenMP threads that wait for work sleep instead of spinning. libgomp's default (spin for a
#: while, then sleep) makes a 2-thread PyTorch process on a shared machine spend most of its CPU
#: spinning as soon as another process wants a core: small-batch training steps went from 40 ms
#: to 0.3-4.6 s (experiments/benchmarks/results/profile_small_batch.md).
OMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}

#: glibc malloc: keep freed blocks below 32 MiB in the heap (no mmap/munmap per block, whose pages
#: the kernel zeroes again at every step: 800-1,400 page faults per small training step) and
#: trim the heap only above 128 MiB free. Values for ``mallopt`` (M_MMAP_THRESHOLD = -3,
#: M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2).
MALLOC_SETTINGS = {-3: 32 << 20, -1: 128 << 20, -2: 16 << 20}


def configure_process(*, force: bool = False) -> dict[str, str]:
    """Runtime settings for training and evaluation processes; returns what it set.

    - ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is already set (read by OpenMP when torch
      loads, so it only takes effect if torch is not imported yet, or in child processes);
    - glibc's malloc thresholds :data:`MALLOC_SETTINGS` (Linux with glibc only), unless
      ``EQGEO_MALLOC=0``.

    The console scripts call it first; a user's own training script can call it before
    ``import torch`` to get the same behaviour. ``force`` sets the OpenMP policy even when torch
    is already imported (for child processes started later).
    """
    done: dict[str, str] = {}
    if force or "torch" not in sys.modules:
        for name, value in OMP_DEFAULTS.items():
            if name not in os.environ:
                os.environ[name] = value
                done[name] = value
    if os.environ.get("EQGEO_MALLOC", "1").strip().lower() not in ("0", "false", "no", "off") and sys.platform == "linux":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (musl has no mallopt)
            return done
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        if all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items()):
            done["malloc"] = ", ".join(f"{k}={v}" for k, v in MALLOC_SETTINGS.items())
    return done


def train() -> None:
    """``eqgeo-train`` (Hydra overrides on the command line; see :mod:`eqgeo.training.train`)."""
    configure_process()
    from .training.train import main

    main()


def evaluate(argv: Optional[list[str]] = None) -> int:
    """``eqgeo-evaluate CHECKPOINT DATA`` (see :mod:`eqgeo.inference.evaluate`)."""
    configure_process()
    from .inference.evaluate import main

    return main(argv)


def export(argv: Optional[list[str]] = None) -> int:
    """``eqgeo-export CHECKPOINT OUTPUT``: the weights, hyperparameters and record of a checkpoint, for
    sharing a trained model (:func:`eqgeo.inference.checkpoint.export_checkpoint`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="eqgeo-export", description="Write the weights, hyperparameters and "
                                     "record of an eqgeo checkpoint to a small file that loads but does not resume.")
    parser.add_argument("checkpoint", help="a checkpoint eqgeo-train wrote (<run dir>/checkpoints/best.ckpt)")
    parser.add_argument("output", help="the file to write")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema",
                        help="the averaged weights (default, what the run's metrics used) or the optimiser's")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None, help="default: as trained")
    args = parser.parse_args(argv)
    import torch

    from .inference.checkpoint import CheckpointError, export_checkpoint

    try:
        out = export_checkpoint(args.checkpoint, args.output, args.weights,
                                getattr(torch, args.dtype) if args.dtype else None)
    except (FileNotFoundError, CheckpointError) as error:
        parser.exit(2, f"eqgeo-export: {error}\n")
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB ({args.weights} weights, not resumable)")
    return 0


def dock(argv: Optional[list[str]] = None) -> int:
    """``eqgeo-dock CHECKPOINT PROTEIN LIGAND --centre X Y Z`` (see :mod:`eqgeo.inference.dock`)."""
    configure_process()
    from .inference.dock import main

    return main(argv)


def leaderboard(argv: Optional[list[str]] = None) -> int:
    """``eqgeo-leaderboard RUNS_DIR`` (see :mod:`eqgeo.leaderboard`)."""
    from .leaderboard import main

    return main(argv)


def demo(argv: Optional[list[str]] = None) -> int:
    """``eqgeo-demo`` (see :mod:`eqgeo.demo`)."""
    configure_process()
    from .demo import main

    return main(argv)
