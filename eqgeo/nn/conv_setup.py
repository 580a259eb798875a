"""Construction of the interaction layers: irreps of the edge harmonics, NequIP's ``"uvu"`` paths, checks,
and the edge filter (harmonics times a learned radial function) that both layers build and apply alike.

Shared by :class:`~eqgeo.nn.EquivariantConv` and :class:`~eqgeo.nn.EquivariantTransformerConv`,
so that both parse their arguments and fail at construction with the same messages, each naming
the layer and the offending irreps.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..o3 import Irreps
from .edges import EdgeEncoder, check_edge_inputs
from .radial import RadialMLP
from .tensor_product import TensorProduct

__all__ = ["sh_irreps", "layer_irreps", "uvu_instructions", "check_reachable", "check_positive", "num_weights",
           "edge_filter", "edge_weights"]


def sh_irreps(name: str, irreps_sh) -> Irreps:
    """Irreps of the edge harmonics from an ``lmax`` or irreps ``1x0e+1x1o+...``."""
    if isinstance(irreps_sh, int) and not isinstance(irreps_sh, bool):
        if irreps_sh < 0:
            raise ValueError(f"{name}: lmax must be >= 0, got {irreps_sh}")
        return Irreps.spherical_harmonics(irreps_sh)
    irreps = Irreps(irreps_sh)
    ls = [ir.l for _, ir in irreps]
    if (
        not len(irreps)
        or any(mul != 1 or ir.p != (-1) ** ir.l for mul, ir in irreps)
        or len(set(ls)) != len(ls)
    ):
        raise ValueError(
            f"{name}: irreps_sh must be spherical-harmonic irreps such as 1x0e+1x1o+1x2e (multiplicity 1, "
            f"parity (-1)^l, each l once), got {irreps}"
        )
    return irreps


def layer_irreps(name: str, irreps_in, irreps_out, irreps_sh) -> tuple[Irreps, Irreps, Irreps]:
    """Parsed and checked ``(irreps_in, irreps_out, irreps_sh)`` of a convolution layer."""
    irreps_in, irreps_out = Irreps(irreps_in), Irreps(irreps_out)
    if not len(irreps_in) or not len(irreps_out):
        raise ValueError(f"{name}: irreps_in and irreps_out must be non-empty, got {irreps_in} -> {irreps_out}")
    return irreps_in, irreps_out, sh_irreps(name, irreps_sh)


def uvu_instructions(irreps_in: Irreps, irreps_sh: Irreps, targets) -> tuple[Irreps, list[tuple]]:
    """NequIP's convolution paths: every ``irreps_in[i] x irreps_sh[j] -> ir`` with ``ir`` in ``targets``.

    Each path has its own output block ``mul_i x ir`` (``"uvu"``: output channel = input
    channel, one weight per channel and path, supplied per edge).
    """
    targets = set(targets)
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in targets:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    return Irreps(mid), instructions


def check_reachable(name: str, irreps_in: Irreps, irreps_sh: Irreps, irreps_mid: Irreps, irreps_out: Irreps) -> None:
    """Every irrep of ``irreps_out`` must be produced by some path (otherwise it would stay zero)."""
    produced = {ir for _, ir in irreps_mid}
    missing = [str(ir) for _, ir in irreps_out if ir not in produced]
    if missing:
        raise ValueError(
            f"{name}: irreps_out {irreps_out} asks for {', '.join(sorted(set(missing)))}, which no path "
            f"{irreps_in} x {irreps_sh} produces"
        )


def check_positive(name: str, **values) -> None:
    """Raise ``ValueError`` naming the layer ``name`` and the argument unless every value is > 0."""
    for what, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}: {what} must be > 0, got {value}")


def num_weights(module: torch.nn.Module) -> int:
    """Number of learnable weights of ``module`` (the count the layers' one-line reprs state)."""
    return sum(p.numel() for p in module.parameters())


def edge_filter(
    layer: torch.nn.Module,
    targets,
    num_radial: int,
    cutoff: float,
    radial_hidden: int,
    radial_layers: int,
    basis: str,
    p: float,
) -> list[tuple]:
    """Builds the edge filter of an interaction layer onto ``layer``, which has its parsed ``irreps_in``,
    ``irreps_sh`` and ``irreps_out``: the ``"uvu"`` paths to ``targets`` (sets ``irreps_mid``), the
    :class:`~eqgeo.nn.edges.EdgeEncoder` (``edge_encoder``), the per-edge-weighted
    :class:`~eqgeo.nn.TensorProduct` (``tp``) and the radial MLP that gives its weights (``radial_mlp``).
    Sets ``num_radial`` and ``cutoff``; returns the paths' instructions."""
    name = type(layer).__name__
    if radial_layers < 0:
        raise ValueError(f"{name}: radial_layers must be >= 0, got {radial_layers}")
    layer.num_radial = int(num_radial)
    layer.cutoff = float(cutoff)
    layer.irreps_mid, instructions = uvu_instructions(layer.irreps_in, layer.irreps_sh, targets)
    check_reachable(name, layer.irreps_in, layer.irreps_sh, layer.irreps_mid, layer.irreps_out)
    layer.edge_encoder = EdgeEncoder(layer.irreps_sh, layer.num_radial, layer.cutoff, basis, p)
    layer.tp = TensorProduct(
        layer.irreps_in, layer.irreps_sh, layer.irreps_mid, instructions, shared_weights=False, internal_weights=False
    )
    layer.radial_mlp = RadialMLP(layer.num_radial, [int(radial_hidden)] * int(radial_layers), num_out=layer.tp.weight_numel)
    return instructions


def edge_weights(
    layer: torch.nn.Module,
    x: Tensor,
    edge_index: Tensor,
    edge_vec: Tensor,
    edge_sh: Optional[Tensor],
    edge_radial: Optional[Tensor],
    edge_envelope: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """``(edge_sh, edge_weight, envelope)`` of a layer built with :func:`edge_filter`: its inputs checked,
    the edge features computed where not given, and the tensor-product weights of each edge,
    ``radial_mlp(edge_radial) * envelope``."""
    check_edge_inputs(
        type(layer).__name__, x, layer.irreps_in, edge_index, edge_vec, edge_sh, layer.irreps_sh, edge_radial,
        layer.num_radial, edge_envelope,
    )
    edge_sh, edge_radial, envelope = layer.edge_encoder(edge_vec, edge_sh, edge_radial, edge_envelope)
    return edge_sh, layer.radial_mlp(edge_radial) * envelope[:, None], envelope
