"""Docking network: rigid-body and torsion updates of a ligand in a protein pocket, and a pose confidence."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ..data import keys as K
from ..data.neighbors import edge_vectors
from ..nn import FullyConnectedTensorProduct, Linear
from ..o3 import Irreps
from ._common import InteractionStack, SpeciesEmbedding, graph_inputs, hidden_irreps, scalar_head, scatter_sum

__all__ = ["DockingModel", "DOCKING_SPECIES"]

#: Elements of ligands and pockets with their own embedding; others share an "other" type.
DOCKING_SPECIES = (1, 5, 6, 7, 8, 9, 11, 12, 14, 15, 16, 17, 19, 20, 25, 26, 27, 28, 29, 30, 34, 35, 53)


class DockingModel(torch.nn.Module):
    r"""Equivariant docking network on a pocket + ligand complex graph (DiffDock-style updates).

    The ligand and pocket atoms (``node_type`` 0 and 1, :func:`eqgeo.data.complex_graph`)
    share one radius graph; after the interaction layers, with :math:`L` the ligand atoms of a
    complex, :math:`\bar{\mathbf r}` their centroid and :math:`h_i` the node features:

    .. math::

        \mathbf t = s_t \frac{1}{|L|} \sum_{i \in L} W_t h_i \quad (1o), \qquad
        \boldsymbol\omega = s_r \frac{1}{|L|} \sum_{i \in L}
            \big[(\mathbf r_i - \bar{\mathbf r}) \times W_v h_i + W_\omega h_i\big] \quad (1e),

    a translation (Å) and a rotation as an axis–angle pseudovector (radians; the cross product of
    two polar vectors is axial, and :math:`W_\omega` exists when the hidden irreps have ``1e``);
    for every rotatable bond ``(i, j)`` (``data.rotatable_bond_index``, the ``j`` side turns about
    the axis ``i -> j``) a torsion update (radians)

    .. math::

        \delta\theta_{ij} = s_\tau\, \big[ T(h_i, h_j) - T(h_j, h_i) \big] \otimes Y^{1}(\hat{\mathbf r}_{ij})
        \quad (0o),

    with :math:`T` a fully connected tensor product to ``1e`` features: a pseudoscalar (a
    dihedral angle changes sign under reflection) that does not depend on which end is called
    ``i`` (turning the ``j`` side by :math:`\theta` about ``i -> j`` is the same relative motion as
    turning the ``i`` side by :math:`\theta` about ``j -> i``); and a pose confidence (``0e``, a
    logit) from the mean invariant readout of the ligand atoms. The scales :math:`s_t, s_r,
    s_\tau` are buffers (:meth:`set_statistics`, e.g. the spread of the training perturbations),
    so a loaded model predicts in Å and radians.

    Args:
        species: elements with their own embedding (others share one "other" type); ligand and
            protein atoms of the same element have separate embeddings.
        The other arguments are those of :class:`~eqgeo.models.InteratomicPotential`
        (default ``parity="full"``).

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> model = DockingModel(channels=4, lmax=1, num_layers=2)
        >>> data = Data(z=torch.tensor([6, 6, 8, 7]), pos=torch.randn(4, 3), node_type=torch.tensor([0, 0, 0, 1]),
        ...             rotatable_bond_index=torch.tensor([[0], [1]]))
        >>> out = model(data)
        >>> [tuple(out[k].shape) for k in ("translation", "rotation", "torsion", "confidence")]
        [(1, 3), (1, 3), (1,), (1,)]
    """

    def __init__(
        self,
        species: Sequence[int] = DOCKING_SPECIES,
        channels: int = 16,
        lmax: int = 2,
        num_layers: int = 4,
        *,
        parity: str = "full",
        layer: str = "conv",
        cutoff: float = 5.0,
        num_radial: int = 8,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        avg_num_neighbors: float = 20.0,
        heads: int = 4,
        key_dim: int = 8,
        readout_hidden: int = 16,
        max_num_neighbors: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.cutoff, self.max_num_neighbors = float(cutoff), max_num_neighbors
        self.embedding = SpeciesEmbedding(species, channels, num_kinds=2, allow_unknown=True)
        self.interactions = InteractionStack(
            self.embedding.irreps_out, hidden_irreps(channels, lmax, parity), lmax, num_layers, layer=layer,
            cutoff=cutoff, num_radial=num_radial, radial_hidden=radial_hidden, radial_layers=radial_layers,
            avg_num_neighbors=avg_num_neighbors, heads=heads, key_dim=key_dim,
        )
        irreps = self.interactions.irreps_out
        if "1o" not in irreps:
            raise ValueError(f"DockingModel: the hidden irreps {irreps} have no 1o (use lmax >= 1)")
        self.translation_head = Linear(irreps, "1x1o")
        self.lever_head = Linear(irreps, "1x1o")
        self.rotation_head = Linear(irreps, "1x1e") if "1e" in irreps else None
        pair = Irreps([(channels, "1e")])
        self.torsion_pair = FullyConnectedTensorProduct(irreps, irreps, pair)
        self.torsion_out = FullyConnectedTensorProduct(pair, "1x1o", "1x0o")
        self.confidence_head = scalar_head(irreps, readout_hidden, 1)
        self.register_buffer("translation_scale", torch.ones(()))
        self.register_buffer("rotation_scale", torch.ones(()))
        self.register_buffer("torsion_scale", torch.ones(()))

    def set_statistics(self, translation_scale: float, rotation_scale: float, torsion_scale: float) -> None:
        """Scales of the three updates (Å, rad, rad), e.g. the spread of the training perturbations."""
        for name, value in (("translation_scale", translation_scale), ("rotation_scale", rotation_scale),
                            ("torsion_scale", torsion_scale)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
            getattr(self, name).fill_(float(value))

    def predict(
        self,
        z: Tensor,
        pos: Tensor,
        node_type: Tensor,
        edge_index: Tensor,
        batch: Tensor,
        num_graphs: int,
        rotatable_bond_index: Tensor,
    ) -> dict[str, Tensor]:
        """The updates from plain tensors (the part :func:`torch.compile` captures as one graph)."""
        h = self.embedding(z, node_type)
        h = self.interactions(h, edge_index, edge_vectors(pos, edge_index))
        lig = (node_type == K.NODE_LIGAND).to(h.dtype)
        n_lig = scatter_sum(lig, batch, num_graphs).clamp(min=1)[:, None]
        centroid = scatter_sum(pos * lig[:, None], batch, num_graphs) / n_lig

        def ligand_mean(v: Tensor) -> Tensor:
            return scatter_sum(v * lig[:, None], batch, num_graphs) / n_lig

        translation = ligand_mean(self.translation_head(h)) * self.translation_scale
        axial = torch.linalg.cross(pos - centroid[batch], self.lever_head(h), dim=-1)
        if self.rotation_head is not None:
            axial = axial + self.rotation_head(h)
        rotation = ligand_mean(axial) * self.rotation_scale
        i, j = rotatable_bond_index[0], rotatable_bond_index[1]
        pair = self.torsion_pair(h[i], h[j]) - self.torsion_pair(h[j], h[i])
        bond = pos[j] - pos[i]
        y1 = bond * (3.0**0.5) / bond.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(pos.dtype).eps)
        torsion = self.torsion_out(pair, y1).squeeze(-1) * self.torsion_scale
        confidence = ligand_mean(self.confidence_head(h)).squeeze(-1)
        return {"translation": translation, "rotation": rotation, "torsion": torsion, "confidence": confidence}

    def forward(self, data) -> dict[str, Tensor]:
        """``translation`` ``(G, 3)`` Å, ``rotation`` ``(G, 3)`` rad (axis–angle), ``torsion`` ``(T,)``
        rad per rotatable bond, ``confidence`` ``(G,)`` logit."""
        g = graph_inputs(data, self.cutoff, self.max_num_neighbors, dtype=self.translation_scale.dtype)
        node_type = getattr(data, K.NODE_TYPE, None)
        if node_type is None:
            raise ValueError("DockingModel needs data.node_type (0 ligand, 1 protein), as from eqgeo.data.complex_graph")
        if node_type.shape != g.z.shape or not bool(((node_type == K.NODE_LIGAND) | (node_type == K.NODE_PROTEIN)).all()):
            raise ValueError(
                f"data.node_type must be {K.NODE_LIGAND} (ligand) or {K.NODE_PROTEIN} (protein) for each of the "
                f"{g.z.numel()} atoms, got values {sorted(set(node_type.flatten().tolist()))} of shape {tuple(node_type.shape)}"
            )
        if g.cell is not None:
            raise ValueError("DockingModel does not take periodic cells")
        bonds = getattr(data, K.ROTATABLE_BOND_INDEX, None)
        if bonds is None:
            bonds = torch.zeros(2, 0, dtype=torch.long, device=g.pos.device)
        elif bonds.dim() != 2 or bonds.shape[0] != 2:
            raise ValueError(f"rotatable_bond_index must have shape (2, T), got {tuple(bonds.shape)}")
        elif bonds.numel() and not bool((node_type[bonds] == K.NODE_LIGAND).all()):
            raise ValueError("rotatable_bond_index has bonds with a protein atom; torsions are ligand bonds")
        return self.predict(g.z, g.pos, node_type, g.edge_index, g.batch, g.num_graphs, bonds)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}({self.interactions.irreps_out}, {len(self.interactions.convs)} "
            f"{self.interactions.layer} layers, cutoff={self.cutoff:g}, {n} weights)"
        )
