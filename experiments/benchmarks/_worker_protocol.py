"""What the benchmark scripts and their peer workers share: a plain extended-XYZ reader, the
all-pairs neighbour list, the epoch batches of an input ``.npz`` and the command loop of a warm
worker. NumPy and torch only (no eqgeo), so the workers import it in their own environments: each
worker runs as a script from this folder, which puts the folder on ``sys.path``.

Worker protocol: one command per line on stdin, one JSON line per answer on stdout, after a first
``{"ready": true}``: ``threads N``, ``train N`` and ``infer N`` (N timed passes of the benchmark
batch), ``epoch A B`` (training steps on epoch batches A..B-1), ``done`` (the worker's info).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8}


def read_extxyz(path: Path) -> list[dict]:
    """Frames of an extended XYZ file with ``species:S:1:pos:R:3[:forces:R:3]`` and ``energy=`` (plain reader)."""
    frames, lines, i = [], Path(path).read_text().splitlines(), 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i])
        header = lines[i + 1]
        energy = float(header.split("energy=")[1].split()[0])
        rows = [line.split() for line in lines[i + 2 : i + 2 + n]]
        frame = {
            "z": np.array([SYMBOLS[r[0]] for r in rows], dtype=np.int64),
            "pos": np.array([[float(v) for v in r[1:4]] for r in rows]),
            "energy": energy,
        }
        if len(rows[0]) >= 7:
            frame["forces"] = np.array([[float(v) for v in r[4:7]] for r in rows])
        frames.append(frame)
        i += n + 2
    return frames


def radius_edges(pos: torch.Tensor, batch: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``(2, E)``: every ordered pair ``(i, j)`` of distinct atoms of one graph closer than ``cutoff``
    (row 0 is ``i``; each worker says which role its model gives that row)."""
    with torch.no_grad():
        d = torch.cdist(pos, pos)
        mask = (d < cutoff) & (batch[:, None] == batch[None, :])
        mask.fill_diagonal_(False)
        return mask.nonzero().t().contiguous()


def epoch_batches(inputs, batch_size: int | None, make_batch) -> list:
    """``make_batch(z, pos, batch, energy, forces)`` of each full batch of the input's epoch frames
    (``ep_*`` arrays: frames concatenated, ``ep_ptr`` their offsets, ``ep_order`` the order); none
    when the input has no epoch."""
    if "ep_order" not in inputs.files:
        return []
    if not batch_size:
        raise ValueError(f"the input has epoch frames but its config gives no batch_size (got {batch_size!r})")
    ptr, order, batches = inputs["ep_ptr"], inputs["ep_order"], []
    for b in range(len(order) // batch_size):
        frames = order[b * batch_size : (b + 1) * batch_size]
        sl = [slice(ptr[f], ptr[f + 1]) for f in frames]
        batches.append(make_batch(
            np.concatenate([inputs["ep_z"][s] for s in sl]),
            np.concatenate([inputs["ep_pos"][s] for s in sl]),
            np.concatenate([np.full(s.stop - s.start, g) for g, s in enumerate(sl)]),
            inputs["ep_energy"][frames],
            np.concatenate([inputs["ep_forces"][s] for s in sl]),
        ))
    return batches


def energy_force_loss(energy, forces, ref_energy, ref_forces, dtype) -> torch.Tensor:
    """MSE(energy) + MSE(forces), each error taken in its reference's dtype, the sum in ``dtype``."""
    e_loss = (energy.to(ref_energy.dtype) - ref_energy).pow(2).mean()
    f_loss = (forces.to(ref_forces.dtype) - ref_forces).pow(2).mean()
    return e_loss.to(dtype) + f_loss.to(dtype)


def timed(fn, *args) -> tuple[float, float, float]:
    """Wall time (ms), CPU time of the process (ms, all its threads) and the value of ``fn(*args)``."""
    c0, t0 = time.process_time(), time.perf_counter()
    value = fn(*args)
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3, value


def serve(worker, extra: dict | None = None) -> None:
    """The command loop (module docstring) around ``worker``: ``model``, ``bench``, ``epoch``,
    ``train_step(batch)``, ``infer(batch)`` and ``info()``; ``extra`` maps further command names
    to functions of the command's integer arguments that return the answer."""
    extra = extra or {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], [int(a) for a in words[1:]]
        if cmd in extra:
            out = extra[cmd](args)
        elif cmd == "threads":
            torch.set_num_threads(args[0])
            out = {"threads": torch.get_num_threads()}
        elif cmd in ("train", "infer"):
            if cmd == "train":
                worker.model.train()
                runs = [timed(worker.train_step, worker.bench) for _ in range(args[0])]
            else:
                worker.model.eval()
                runs = [timed(worker.infer, worker.bench) for _ in range(args[0])]
                worker.model.train()
            out = {"ms": [r[0] for r in runs], "cpu_ms": [r[1] for r in runs], "loss": runs[-1][2]}
        elif cmd == "epoch":
            worker.model.train()
            runs = [timed(worker.train_step, b) for b in worker.epoch[args[0] : args[1]]]
            out = {"ms": [r[0] for r in runs], "cpu_ms": [r[1] for r in runs], "loss": runs[-1][2] if runs else None}
        elif cmd == "done":
            print(json.dumps(worker.info()), flush=True)
            return
        else:
            out = {"error": f"unknown command {line.strip()!r}"}
        print(json.dumps(out), flush=True)
