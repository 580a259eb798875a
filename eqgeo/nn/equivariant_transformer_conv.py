"""Equivariant graph attention as a PyG ``MessagePassing`` layer (SE(3)-Transformer, Equiformer)."""

from __future__ import annotations

import math
import typing
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter, softmax

from ..o3 import Irrep, Irreps
from .conv_setup import check_positive, edge_filter, edge_weights, layer_irreps, num_weights
from .linear import Linear

__all__ = ["EquivariantTransformerConv"]

_SCALAR = Irrep("0e")


class EquivariantTransformerConv(MessagePassing):
    r"""Equivariant graph attention: SE(3)-Transformer (https://arxiv.org/abs/2006.10503) and
    Equiformer (https://arxiv.org/abs/2206.11990) style, as a PyG layer.

    For each edge from neighbour ``j`` to centre ``i`` one tensor product of the neighbour's
    features with the edge harmonics, weighted per edge by a radial MLP (as in
    :class:`~eqgeo.nn.EquivariantConv`), gives the keys and values:

    .. math::

        \mathbf{m}_{ij} = \mathbf{x}_j \otimes_{\mathbf{w}_{ij}} Y(\hat{\mathbf{r}}_{ij}), \quad
        \mathbf{w}_{ij} = \mathrm{MLP}\big(B(r_{ij})\big)\, f_{\mathrm{cut}}(r_{ij}), \quad
        \mathbf{k}^h_{ij} = W^h_K\, \mathbf{m}_{ij}, \quad
        \mathbf{v}_{ij} = W_V\, \mathbf{m}_{ij}, \quad
        \mathbf{q}^h_i = W^h_Q\, \mathbf{x}_i,

    where queries and keys are ``key_dim`` scalars (``0e``) per head :math:`h` (the keys come
    from the ``0e`` outputs of the tensor product, such as :math:`\mathbf{x}^{(1o)}_j \cdot
    \hat{\mathbf{r}}_{ij}`, so they see the direction of the edge), and the values have irreps
    ``irreps_out``, **split over the heads**: head :math:`h` owns the channels
    ``[h m/H, (h+1) m/H)`` of every block ``m x ir`` of ``irreps_out`` (so every multiplicity
    must be divisible by ``heads``; Equiformer's ``irreps_head`` is ``irreps_out / heads``).
    Logits are rotation invariant,
    :math:`a^h_{ij} = \mathbf{q}^h_i \cdot \mathbf{k}^h_{ij} / \sqrt{d}` with
    :math:`d` = ``key_dim``, and the attention weights are a softmax over the incoming edges of
    ``i`` (:func:`torch_geometric.utils.softmax`), re-weighted by the cutoff envelope
    :math:`f = f_{\mathrm{cut}}(r)` and multiplied by it once more:

    .. math::

        \alpha^h_{ij} = f(r_{ij})\, \frac{f(r_{ij})\, \exp a^h_{ij}}{\sum_{k \in \mathcal{N}(i)}
        f(r_{ik})\, \exp a^h_{ik}}, \qquad
        \mathbf{x}'_i = W_O \Big[ \big\Vert_h \sum_{j \in \mathcal{N}(i)} \alpha^h_{ij}\,
        \mathbf{v}^h_{ij} \Big] + W_{\mathrm{self}}\, \mathbf{x}_i .

    Both factors of :math:`f` are needed for smoothness: inside the fraction, a neighbour
    entering the cutoff sphere does not change the other neighbours' weights abruptly (it
    enters the denominator with weight 0); outside, its own weight goes to zero even when it is
    the node's only neighbour (the fraction is then 1). Well inside the cutoff (:math:`f \approx 1`)
    this is the ordinary softmax. :math:`W_O` mixes the heads, :math:`W_{\mathrm{self}}` is the
    self-connection (all that a node without neighbours gets); all :math:`W` are
    :class:`~eqgeo.nn.Linear` maps.

    Equivariant under rotations, reflections and translations of the positions and permutations
    of the nodes; the attention weights are invariant.

    Args:
        irreps_in: irreps of the node features; must contain scalars (``0e``) for the queries.
        irreps_out: irreps of the output (and of the values); every multiplicity divisible by
            ``heads``, every irrep reachable from ``irreps_in x irreps_sh``.
        irreps_sh: the edge harmonics, an ``lmax`` or irreps ``"0e+1o+2e"``.
        heads: number of attention heads :math:`H` (default ``4``).
        key_dim: scalars per head in queries and keys, :math:`d` (default ``8``).
        num_radial: number of radial basis functions (default ``8``).
        cutoff: cutoff radius of the envelope (default ``5.0``).
        radial_hidden: width of the radial MLP's hidden layers (default ``64``).
        radial_layers: number of hidden layers of the radial MLP (default ``2``).
        basis: ``"bessel"`` (default) or ``"gaussian"`` radial basis.
        p: exponent of the polynomial envelope (default ``6``).
        self_connection: add :math:`W_{\mathrm{self}} x_i` (default ``True``).

    Shapes:
        - **x**: ``(num_nodes, irreps_in.dim)``
        - **edge_index**: ``(2, num_edges)``; ``edge_index[0]`` = neighbour ``j``, ``[1]`` = centre ``i``
        - **edge_vec**: ``(num_edges, 3)``, irreps ``1o``: ``pos[j] + shift - pos[i]``
        - **edge_sh** (optional): ``(num_edges, irreps_sh.dim)``, as for
          :class:`~eqgeo.nn.EquivariantConv` (``"component"``-normalised harmonics of ``edge_vec``)
        - **edge_radial** (optional): ``(num_edges, num_radial)``, basis times envelope, as for
          :class:`~eqgeo.nn.EquivariantConv`
        - **edge_envelope** (optional): ``(num_edges,)``, the cutoff envelope, as for
          :class:`~eqgeo.nn.EquivariantConv`
        - output: ``(num_nodes, irreps_out.dim)``; with ``return_attention_weights=True``
          also ``(edge_index, alpha)``, ``alpha`` of shape ``(num_edges, heads)``

    Example:
        >>> import torch
        >>> att = EquivariantTransformerConv("4x0e+2x1o", "4x0e+2x1o", irreps_sh=1, heads=2, key_dim=4)
        >>> att
        EquivariantTransformerConv(4x0e+2x1o -> 4x0e+2x1o | sh 1x0e+1x1o, 2 heads, cutoff=5, 5532 weights)
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.5, 0.0]])
        >>> edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])
        >>> out, (_, alpha) = att(torch.randn(3, 10), edge_index, pos[edge_index[0]] - pos[edge_index[1]],
        ...                       return_attention_weights=True)
        >>> out.shape, alpha.shape
        (torch.Size([3, 10]), torch.Size([4, 2]))
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        irreps_sh,
        heads: int = 4,
        key_dim: int = 8,
        num_radial: int = 8,
        cutoff: float = 5.0,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        *,
        basis: str = "bessel",
        p: float = 6,
        self_connection: bool = True,
    ) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        name = type(self).__name__
        self.irreps_in, self.irreps_out, self.irreps_sh = layer_irreps(name, irreps_in, irreps_out, irreps_sh)
        check_positive(
            name, heads=heads, key_dim=key_dim, num_radial=num_radial, cutoff=cutoff, radial_hidden=radial_hidden
        )
        if _SCALAR not in self.irreps_in:
            raise ValueError(f"{name}: irreps_in {self.irreps_in} has no scalars (0e) to compute the queries from")
        bad = [f"{mul}x{ir}" for mul, ir in self.irreps_out if mul % heads]
        if bad:
            raise ValueError(
                f"{name}: the values (irreps_out {self.irreps_out}) are split over {heads} heads, so every "
                f"multiplicity must be divisible by {heads}; not {', '.join(bad)}"
            )
        self.heads = int(heads)
        self.key_dim = int(key_dim)
        targets = {ir for _, ir in self.irreps_out} | {_SCALAR}
        edge_filter(self, targets, num_radial, cutoff, radial_hidden, radial_layers, basis, p)
        if _SCALAR not in self.irreps_mid:
            raise ValueError(f"{name}: no path {self.irreps_in} x {self.irreps_sh} -> 0e gives scalars for the keys")
        irreps_qk = Irreps([(self.heads * self.key_dim, "0e")])
        self.query = Linear(self.irreps_in, irreps_qk)
        self.key = Linear(self.irreps_mid, irreps_qk)
        self.value = Linear(self.irreps_mid, self.irreps_out)
        self.output = Linear(self.irreps_out, self.irreps_out)
        self.self_connection = Linear(self.irreps_in, self.irreps_out) if self_connection else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights of the radial MLP and the linear maps."""
        super().reset_parameters()
        for m in (self.radial_mlp, self.query, self.key, self.value, self.output, self.self_connection):
            if m is not None:
                m.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_vec: Tensor,
        edge_sh: Optional[Tensor] = None,
        edge_radial: Optional[Tensor] = None,
        edge_envelope: Optional[Tensor] = None,
        return_attention_weights: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        edge_sh, edge_weight, envelope = edge_weights(self, x, edge_index, edge_vec, edge_sh, edge_radial, edge_envelope)
        num_nodes = x.shape[0]
        alpha, value = self.edge_updater(
            edge_index, x=x, query=self.query(x), edge_sh=edge_sh, edge_weight=edge_weight, envelope=envelope,
            size=(num_nodes, num_nodes),
        )
        out = self.propagate(edge_index, value=value, alpha=alpha, size=(num_nodes, num_nodes))
        out = self.output(out)
        if self.self_connection is not None:
            out = out + self.self_connection(x)
        if return_attention_weights:
            return out, (edge_index, alpha)
        return out

    def edge_update(
        self,
        x_j: Tensor,
        query_i: Tensor,
        edge_sh: Tensor,
        edge_weight: Tensor,
        envelope: Tensor,
        index: Tensor,
        size_i: Optional[int],
    ) -> typing.Tuple[Tensor, Tensor]:  # spelled so that PyG's generated edge_updater resolves it
        """Attention weights ``(num_edges, heads)`` and values ``(num_edges, irreps_out.dim)`` of each edge."""
        m = self.tp(x_j, edge_sh, edge_weight)
        key = self.key(m).view(-1, self.heads, self.key_dim)
        logits = (query_i.view(-1, self.heads, self.key_dim) * key).sum(dim=-1) * (1.0 / math.sqrt(self.key_dim))
        # softmax re-weighted by the envelope: f_ij s_ij / sum_k f_ik s_ik = f_ij e^a_ij / sum_k f_ik e^a_ik
        weighted = softmax(logits, index, num_nodes=size_i) * envelope[:, None]
        total = scatter(weighted, index, dim=0, dim_size=size_i, reduce="sum").index_select(0, index)
        alpha = envelope[:, None] * weighted / torch.where(total > 0, total, torch.ones_like(total))
        return alpha, self.value(m)

    def message(self, value: Tensor, alpha: Tensor) -> Tensor:
        """Values weighted by their head's attention: block ``m x ir`` as ``(heads, m/heads, ir.dim)``."""
        parts = []
        for sl, (mul, ir) in zip(self.irreps_out.slices(), self.irreps_out):
            v = value[:, sl].reshape(-1, self.heads, mul // self.heads, ir.dim)
            parts.append((v * alpha[:, :, None, None]).reshape(-1, mul * ir.dim))
        return torch.cat(parts, dim=-1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out} | sh {self.irreps_sh}, {self.heads} heads, "
            f"cutoff={self.cutoff:g}, {num_weights(self)} weights)"
        )
