"""eqgeo-train --multirun sweeps (one folder per job), reproducible runs, TensorBoard logs."""

import json
import struct

import pytest
import torch
from omegaconf import OmegaConf

from eqgeo.training import train

from ._helpers import TINY, TINY_QM9, cfg as _cfg, console_script, run_cli

pytestmark = pytest.mark.slow


def _scalar_tags(event_file) -> set[str]:
    """Tags of the scalars in a TensorBoard event file (TFRecord framing: length, CRC, Event proto, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    data, tags, offset = event_file.read_bytes(), set(), 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = Event.FromString(data[offset + 12:offset + 12 + length])
        tags.update(value.tag for value in event.summary.value)
        offset += 12 + length + 4
    return tags


def test_multirun_sweep_writes_one_folder_per_job(tmp_path):
    exe = console_script("eqgeo-train")
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith("model.channels=")]
    out = run_cli([exe, "--multirun", "model.channels=4,8", *tiny, *TINY_QM9, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    jobs = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert [job.relative_to(tmp_path).as_posix() for job in jobs] == ["sweep/0", "sweep/1"]
    assert [OmegaConf.load(job / "config.yaml").model.channels for job in jobs] == [4, 8]
    hashes = {json.loads((job / "metrics.json").read_text())["config_hash"] for job in jobs}
    assert len(hashes) == 2
    for job in jobs:
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
    assert out.stdout.count("test: gap_mae") == 2


def test_same_seed_gives_identical_runs_and_tensorboard_logs(tmp_path):
    first = train(_cfg(TINY + TINY_QM9, tmp_path / "a"))
    torch.manual_seed(1234)  # the run's own seed, not the state it starts from, decides
    second = train(_cfg(TINY + TINY_QM9, tmp_path / "b"))
    assert first["config_hash"] == second["config_hash"]
    assert first["test"] == second["test"]
    untimed = [[{k: v for k, v in h.items() if k != "time_s"} for h in run["validation_history"]] for run in (first, second)]
    assert untimed[0] == untimed[1]  # the wall time of each validation differs, every metric is identical
    assert all(h["time_s"] > 0 for h in first["validation_history"])

    # the TensorBoard log next to the CSV log holds the same curves
    tags = set().union(*(_scalar_tags(f) for f in (tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*")))
    assert {"val/loss", "val/gap_mae", "train/loss_epoch", "test/gap_mae"} <= tags
    assert (tmp_path / "a" / "logs" / "metrics.csv").is_file()
