"""Buffers that keep float64 when a module is cast to another dtype (for layers and models that
hold statistics or constants that float32 would round: ``_apply`` overrides call :func:`keep_float64`)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["keep_float64"]


def keep_float64(module: torch.nn.Module, names: Sequence[str], apply: Callable) -> torch.nn.Module:
    """Run ``module._apply``'s ``apply`` but keep the buffers ``names`` in float64 (moved only).

    Used for statistics that must not be rounded to float32: energy shifts and target means (a
    molecule's total energy of ~ -10^5 eV has a float32 resolution of ~10 meV) and
    ``avg_num_neighbors``.
    """
    saved = {n: module._buffers[n] for n in names}
    out = apply()
    for n, t in saved.items():
        device = module._buffers[n].device
        module._buffers[n] = t.to(device=device, dtype=torch.float64)
    return out
