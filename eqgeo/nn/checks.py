"""Input checks that every layer of :mod:`eqgeo.nn` makes alike, with the same message."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_features"]


def check_features(name: str, irreps, dim: int, x: Tensor) -> None:
    """Raise ``ValueError`` unless the last dimension of ``x`` is ``dim``, the dimension of ``irreps``;
    the message names the layer ``name``, its irreps and what it got."""
    if x.shape[-1] != dim:
        raise ValueError(f"{name} expects features of irreps {irreps} (dim {dim}), got last dimension {x.shape[-1]}")
