"""Lightning callbacks of ``eqgeo-train`` that change nothing a run computes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["EpochMarker"]


class EpochMarker(Callback):
    """Writes the file ``path`` once epoch ``epoch`` (counted from 0) has ended, so that a script or a
    test can wait for a run to get that far instead of guessing how long it takes.

    "Ended" means its training, validation and checkpoints are done: the file is written as the next
    epoch starts (Lightning saves checkpoints at the end of an epoch, after the other callbacks), or as
    fitting ends when there is no next epoch. It holds JSON (``epoch``, ``global_step``, ``pid``,
    ``time``), is written by global rank 0 only, and appears whole (written next to it, then renamed).
    ``eqgeo-train marker.path=<file> marker.epoch=N`` sets it up.
    """

    def __init__(self, path: str | Path, epoch: int = 0) -> None:
        if int(epoch) < 0:
            raise ValueError(f"marker.epoch must be 0 or more, got {epoch}")
        self.path, self.epoch, self.written = Path(path), int(epoch), False

    def _write(self, trainer: L.Trainer) -> None:
        if self.written or trainer.current_epoch <= self.epoch:
            return
        self.written = True
        if not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"epoch": self.epoch, "global_step": trainer.global_step, "pid": os.getpid(),
                                       "time": time.time()}))
        os.replace(partial, self.path)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)
