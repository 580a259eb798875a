"""Edge geometry shared by the interaction layers and the models built on them.

An edge from neighbour ``j`` to centre ``i`` carries the vector ``edge_vec = pos[j] + shift - pos[i]``
(:func:`eqgeo.data.edge_vectors`); a layer needs its spherical harmonics, its length, the radial
embedding of that length and the cutoff envelope. :class:`EdgeEncoder` computes them in one place
for :class:`~eqgeo.nn.EquivariantConv` and :class:`~eqgeo.nn.EquivariantTransformerConv`, and
:func:`edge_lengths` is the length that every part of eqgeo uses (the layers and
:class:`~eqgeo.models.InteractionStack`, which computes the edge features once for all layers),
so that a self loop (a zero vector) has finite derivatives everywhere.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..o3 import Irreps, SphericalHarmonics
from .radial import PolynomialCutoff, RadialEmbedding

__all__ = ["edge_lengths", "EdgeEncoder", "check_edge_inputs"]


def edge_lengths(edge_vec: Tensor) -> Tensor:
    """``|edge_vec|`` with zero derivatives of every order at a zero vector (a self loop), not NaN."""
    sq = edge_vec.square().sum(dim=-1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.where(nonzero, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


class EdgeEncoder(torch.nn.Module):
    """Spherical harmonics, radial embedding and cutoff envelope of edge vectors (one place for both layers).

    Args:
        irreps_sh: irreps of the harmonics (``"component"`` normalisation).
        num_radial: size of the radial basis.
        cutoff: cutoff radius of the basis and the envelope.
        basis: ``"bessel"`` or ``"gaussian"`` (:class:`~eqgeo.nn.RadialEmbedding`).
        p: exponent of the :class:`~eqgeo.nn.PolynomialCutoff` envelope.

    ``forward(edge_vec, edge_sh, edge_radial, edge_envelope)`` returns ``(edge_sh, edge_radial,
    edge_envelope)``, computing those given as ``None`` from ``edge_vec`` (a layer of a stack
    receives them precomputed, once for all layers).

    Shapes:
        edge_vec ``(E, 3)``; edge_sh ``(E, irreps_sh.dim)``; edge_radial ``(E, num_radial)``;
        edge_envelope ``(E,)``.
    """

    def __init__(self, irreps_sh: Irreps, num_radial: int, cutoff: float, basis: str, p: float) -> None:
        super().__init__()
        # "component": every Y^l_m has unit mean square over directions (NequIP), so messages
        # keep unit variance.
        self.sh = SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.radial_embedding = RadialEmbedding(num_radial, cutoff, basis=basis, p=p)
        self.cutoff_fn = PolynomialCutoff(cutoff, p)

    def forward(
        self, edge_vec: Tensor, edge_sh: Optional[Tensor], edge_radial: Optional[Tensor],
        edge_envelope: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        if edge_sh is None:
            edge_sh = self.sh(edge_vec)
        if edge_radial is None or edge_envelope is None:
            r = edge_lengths(edge_vec)
            if edge_radial is None:
                edge_radial, edge_envelope = self.radial_embedding.embed(r)
            else:
                edge_envelope = self.cutoff_fn(r)
        return edge_sh, edge_radial, edge_envelope


def check_edge_inputs(
    name: str,
    x: Tensor,
    irreps_in: Irreps,
    edge_index: Tensor,
    edge_vec: Tensor,
    edge_sh: Optional[Tensor],
    irreps_sh: Irreps,
    edge_radial: Optional[Tensor],
    num_radial: int,
    edge_envelope: Optional[Tensor] = None,
) -> None:
    """Shape checks of ``forward``'s arguments, naming the expected irreps."""
    if x.dim() != 2 or x.shape[-1] != irreps_in.dim:
        raise ValueError(
            f"{name} expects x of shape (num_nodes, {irreps_in.dim}) for irreps_in {irreps_in}, got {tuple(x.shape)}"
        )
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name} expects edge_index of shape (2, num_edges), got {tuple(edge_index.shape)}")
    num_edges = edge_index.shape[1]
    if edge_vec.shape != (num_edges, 3):
        raise ValueError(f"{name} expects edge_vec of shape ({num_edges}, 3) (irreps 1o), got {tuple(edge_vec.shape)}")
    if edge_sh is not None and edge_sh.shape != (num_edges, irreps_sh.dim):
        raise ValueError(
            f"{name} expects edge_sh of shape ({num_edges}, {irreps_sh.dim}) for irreps_sh {irreps_sh}, "
            f"got {tuple(edge_sh.shape)}"
        )
    if edge_radial is not None and edge_radial.shape != (num_edges, num_radial):
        raise ValueError(
            f"{name} expects edge_radial of shape ({num_edges}, {num_radial}) ({num_radial}x0e), "
            f"got {tuple(edge_radial.shape)}"
        )
    if edge_envelope is not None and edge_envelope.shape != (num_edges,):
        raise ValueError(
            f"{name} expects edge_envelope of shape ({num_edges},) (the cutoff envelope of each edge), "
            f"got {tuple(edge_envelope.shape)}"
        )
