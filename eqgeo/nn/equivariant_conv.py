"""Equivariant point convolution as a PyG ``MessagePassing`` layer (NequIP's interaction)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing

from .buffers import keep_float64
from .conv_setup import check_positive, edge_filter, edge_weights, layer_irreps, num_weights
from .linear import Linear

__all__ = ["EquivariantConv"]


class EquivariantConv(MessagePassing):
    r"""Equivariant point convolution: NequIP's interaction (https://arxiv.org/abs/2101.03164) as a PyG layer.

    .. math::

        \mathbf{x}'_i = W_{\mathrm{out}} \left[ \frac{1}{\sqrt{\bar N}} \sum_{j \in \mathcal{N}(i)}
        \mathbf{x}_j \otimes_{\mathbf{w}_{ij}} Y(\hat{\mathbf{r}}_{ij}) \right] + W_{\mathrm{self}}\, \mathbf{x}_i,
        \qquad \mathbf{w}_{ij} = \mathrm{MLP}\big(B(r_{ij})\big)\, f_{\mathrm{cut}}(r_{ij}),

    with :math:`\mathbf{r}_{ij} = \mathbf{x}^{\mathrm{pos}}_j - \mathbf{x}^{\mathrm{pos}}_i` the
    edge vector from the centre ``i`` to its neighbour ``j`` (plus a periodic shift),
    :math:`Y` its spherical harmonics (``"component"`` normalisation), :math:`\otimes_{\mathbf{w}}`
    a :class:`~eqgeo.nn.TensorProduct` with one ``"uvu"`` path per pair (input irrep, harmonic)
    and output irrep present in ``irreps_out``, weighted per edge and channel by
    :math:`\mathbf{w}_{ij}`: a :class:`~eqgeo.nn.RadialMLP` of the radial embedding
    :math:`B` (basis times envelope, :class:`~eqgeo.nn.RadialEmbedding`) multiplied by the
    :class:`~eqgeo.nn.PolynomialCutoff` envelope :math:`f_{\mathrm{cut}}`, whose value and first
    two derivatives vanish at the cutoff, so outputs and forces are continuous when an atom
    crosses it. :math:`W_{\mathrm{out}}`, :math:`W_{\mathrm{self}}` are
    :class:`~eqgeo.nn.Linear` maps (the self-connection is all a node without neighbours gets).

    The sum is divided by :math:`\sqrt{\bar N}`, with :math:`\bar N` = ``avg_num_neighbors`` a
    constant of the model (the mean number of neighbours in the training data), as in NequIP and
    e3nn: messages from independent neighbours then add up to unit variance, and since the
    constant is never computed from the batch, a batch of graphs gives the same outputs as its
    graphs one by one.

    Equivariant under rotations, reflections and translations of the positions and permutations
    of the nodes: :math:`f(D_{\mathrm{in}}(R) x, R\, r) = D_{\mathrm{out}}(R) f(x, r)`.

    Args:
        irreps_in: irreps of the node features.
        irreps_out: irreps of the output; each must be reachable from
            ``irreps_in x irreps_sh``.
        irreps_sh: the edge harmonics, an ``lmax`` (``0..lmax``) or irreps ``"0e+1o+2e"``.
        num_radial: number of radial basis functions (default ``8``).
        cutoff: cutoff radius of the envelope, in the units of ``edge_vec`` (default ``5.0``).
        radial_hidden: width of the radial MLP's hidden layers (default ``64``).
        radial_layers: number of hidden layers of the radial MLP (default ``2``).
        avg_num_neighbors: :math:`\bar N` (keyword only, required), from the training data.
        basis: ``"bessel"`` (default) or ``"gaussian"`` radial basis.
        p: exponent of the polynomial envelope (default ``6``).
        self_connection: add :math:`W_{\mathrm{self}} x_i` (default ``True``).

    Shapes:
        - **x**: ``(num_nodes, irreps_in.dim)``
        - **edge_index**: ``(2, num_edges)``; ``edge_index[0]`` is the neighbour ``j`` (source),
          ``edge_index[1]`` the centre ``i`` (target)
        - **edge_vec**: ``(num_edges, 3)``, irreps ``1o``: ``pos[j] + shift - pos[i]``
        - **edge_sh** (optional, precomputed): ``(num_edges, irreps_sh.dim)``, the harmonics
          ``SphericalHarmonics(irreps_sh, normalize=True, normalization="component")(edge_vec)``
        - **edge_radial** (optional, precomputed): ``(num_edges, num_radial)``, irreps
          ``num_radial x 0e``, the basis times envelope
          ``RadialEmbedding(num_radial, cutoff, basis, p)(edge_vec.norm(dim=-1))``
        - **edge_envelope** (optional, precomputed): ``(num_edges,)``, the envelope
          ``PolynomialCutoff(cutoff, p)(edge_vec.norm(dim=-1))`` (the second output of
          :meth:`~eqgeo.nn.RadialEmbedding.embed`)
        - output: ``(num_nodes, irreps_out.dim)``

    Layers of one model can share ``edge_sh``, ``edge_radial`` and ``edge_envelope``
    (:class:`~eqgeo.models.InteractionStack`-style stacks compute them once per batch); when
    ``edge_envelope`` is not passed it is computed from ``edge_vec``, so a neighbour's
    contribution vanishes at the cutoff. A zero edge vector (a self loop) gives finite outputs and
    derivatives.

    Example:
        >>> import torch
        >>> conv = EquivariantConv("4x0e+2x1o", "4x0e+2x1o", irreps_sh=2, avg_num_neighbors=2.0)
        >>> conv
        EquivariantConv(4x0e+2x1o -> 4x0e+2x1o | sh 1x0e+1x1o+1x2e, cutoff=5, 5564 weights)
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.5, 0.0]])
        >>> edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])
        >>> edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
        >>> conv(torch.randn(3, 10), edge_index, edge_vec).shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        irreps_sh,
        num_radial: int = 8,
        cutoff: float = 5.0,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        *,
        avg_num_neighbors: float,
        basis: str = "bessel",
        p: float = 6,
        self_connection: bool = True,
    ) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        name = type(self).__name__
        self.irreps_in, self.irreps_out, self.irreps_sh = layer_irreps(name, irreps_in, irreps_out, irreps_sh)
        check_positive(
            name, num_radial=num_radial, cutoff=cutoff, radial_hidden=radial_hidden,
            avg_num_neighbors=avg_num_neighbors,
        )
        # a persistent buffer: a loaded state_dict restores the training data's value
        self.register_buffer("neighbor_count", torch.tensor(float(avg_num_neighbors), dtype=torch.float64))
        edge_filter(self, [ir for _, ir in self.irreps_out], num_radial, cutoff, radial_hidden, radial_layers, basis, p)
        self.linear = Linear(self.irreps_mid, self.irreps_out)
        self.self_connection = Linear(self.irreps_in, self.irreps_out) if self_connection else None
        self.reset_parameters()

    @property
    def avg_num_neighbors(self) -> float:
        """:math:`\\bar N`, stored in the ``state_dict`` as the float64 buffer ``neighbor_count``."""
        return float(self.neighbor_count)

    def _apply(self, fn, *args, **kwargs):
        return keep_float64(self, ["neighbor_count"], lambda: super(EquivariantConv, self)._apply(fn, *args, **kwargs))

    def reset_parameters(self) -> None:
        """Re-draw the weights of the radial MLP and the linear maps."""
        super().reset_parameters()
        self.radial_mlp.reset_parameters()
        self.linear.reset_parameters()
        if self.self_connection is not None:
            self.self_connection.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_vec: Tensor,
        edge_sh: Optional[Tensor] = None,
        edge_radial: Optional[Tensor] = None,
        edge_envelope: Optional[Tensor] = None,
    ) -> Tensor:
        edge_sh, edge_weight, _ = edge_weights(self, x, edge_index, edge_vec, edge_sh, edge_radial, edge_envelope)
        out = self.propagate(edge_index, x=x, edge_sh=edge_sh, edge_weight=edge_weight)
        out = self.linear(out * self.neighbor_count.rsqrt().to(out.dtype))
        if self.self_connection is not None:
            out = out + self.self_connection(x)
        return out

    def message(self, x_j: Tensor, edge_sh: Tensor, edge_weight: Tensor) -> Tensor:
        return self.tp(x_j, edge_sh, edge_weight)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out} | sh {self.irreps_sh}, "
            f"cutoff={self.cutoff:g}, {num_weights(self)} weights)"
        )
