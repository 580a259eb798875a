"""Docking network: rigid-body and torsion updates of a ligand in a protein pocket, and a pose confidence."""

from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from ..data import keys as K
from ..data.neighbors import edge_vectors
from ..nn import FullyConnectedTensorProduct, Linear
from ..o3 import Irreps
from ._common import SpeciesEmbedding, graph_inputs, scalar_head, scatter_sum
from .architecture import Architecture

__all__ = ["DockingModel", "DOCKING_SPECIES", "FixedPocketForward"]

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
        **architecture: the keyword arguments of :class:`~eqgeo.models.Architecture`, with the
            defaults :attr:`default_architecture` (16 channels, ``lmax=2``, 4 layers,
            ``parity="full"``, ``avg_num_neighbors=20.0``, the others :class:`~eqgeo.models.Architecture`'s);
            any other keyword raises ``TypeError``.

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

    #: The architecture when an argument is not given: a wider neighbourhood (pockets are dense) and
    #: both parities (rotations are pseudovectors, ``1e``).
    default_architecture: ClassVar[Architecture] = Architecture(
        channels=16, num_layers=4, parity="full", avg_num_neighbors=20.0
    )

    def __init__(self, species: Sequence[int] = DOCKING_SPECIES, **architecture) -> None:
        super().__init__()
        arch = Architecture.from_arguments(type(self).__name__, architecture, self.default_architecture)
        self.architecture = arch
        self.cutoff, self.max_num_neighbors = float(arch.cutoff), arch.max_num_neighbors
        self.embedding = SpeciesEmbedding(species, arch.channels, num_kinds=2, allow_unknown=True)
        self.interactions = arch.interaction_stack(
            self.embedding.irreps_out, self.embedding.num_types * self.embedding.num_kinds
        )
        irreps = self.interactions.irreps_out
        if "1o" not in irreps:
            raise ValueError(f"DockingModel: the hidden irreps {irreps} have no 1o (use lmax >= 1)")
        self.translation_head = Linear(irreps, "1x1o")
        self.lever_head = Linear(irreps, "1x1o")
        self.rotation_head = Linear(irreps, "1x1e") if "1e" in irreps else None
        pair = Irreps([(arch.channels, "1e")])
        self.torsion_pair = FullyConnectedTensorProduct(irreps, irreps, pair)
        self.torsion_out = FullyConnectedTensorProduct(pair, "1x1o", "1x0o")
        self.confidence_head = scalar_head(irreps, arch.readout_hidden, 1)
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
        types = self.embedding.types(z) + self.embedding.num_types * node_type  # species and kind (ligand/protein)
        h = self.embedding.embedding(types)
        h = self.interactions(h, edge_index, edge_vectors(pos, edge_index), types)
        return self.readout(h, pos, node_type, batch, num_graphs, rotatable_bond_index)

    def readout(
        self, h: Tensor, pos: Tensor, node_type: Tensor, batch: Tensor, num_graphs: int, rotatable_bond_index: Tensor
    ) -> dict[str, Tensor]:
        """The updates and confidence from the final node features ``h`` (only ligand nodes count:
        the nodes given may be the ligand atoms alone)."""
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
        h_i, h_j = h[i], h[j]
        both = self.torsion_pair(torch.cat([h_i, h_j]), torch.cat([h_j, h_i]))  # T(h_i, h_j) and T(h_j, h_i), one call
        pair = both[: i.numel()] - both[i.numel() :]
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


class FixedPocketForward:
    r"""A :class:`DockingModel`'s outputs for many poses of one ligand in one fixed pocket, computing
    only what a pose changes (inference: no gradients).

    ``FixedPocketForward(model, ligand_z, pocket_z, pocket_pos, bonds)(poses)`` equals
    ``model(batch)`` for the batch of complex graphs (ligand atoms first, then the pocket) of the
    poses ``(S, L, 3)``, up to float round-off (the sums run in another order). With :math:`n`
    the number of interaction layers and a pocket atom's *level* its number of graph hops from the
    nearest ligand atom:

    * the outputs read the final features of ligand atoms only, so layer :math:`t` (from 0) is
      needed at nodes of level :math:`\le n - 1 - t` (the receptive field);
    * a pocket atom of level :math:`k` has, after :math:`t < k` layers, the features it has in
      the pocket alone: the pocket's own forward is computed once (with every pocket–pocket edge's
      harmonics, radial weights and messages, for the layers before the last), so layer :math:`t`
      is evaluated only at the ligand atoms and at pocket atoms of level
      :math:`\le \min(t + 1, n - 1 - t)`;
    * of the messages into those nodes, only those along an edge with a ligand atom (the graph
      between ligand and pocket is found per pose, as the model's radius graph would) or from a
      pocket atom whose features changed (level :math:`\le t`) are computed; the rest are the
      pocket's own.

    Needs a stack of :class:`~eqgeo.nn.EquivariantConv` layers and no ``max_num_neighbors``
    (:meth:`supports`); ``bonds`` are the rotatable bonds ``(2, T)`` in ligand atom numbers.
    ``threads``: torch's intra-op threads while it computes (default 1: its operations are small,
    a few thousand edges for a handful of poses, and a second thread costs more CPU than it saves
    time, and on a busy machine time too; ``None`` keeps torch's setting).
    """

    def __init__(
        self, model: DockingModel, ligand_z: Tensor, pocket_z: Tensor, pocket_pos: Tensor, bonds: Tensor,
        threads: Optional[int] = 1,
    ) -> None:
        if not self.supports(model):
            raise ValueError("FixedPocketForward needs EquivariantConv layers and max_num_neighbors=None")
        self.threads = threads
        with torch.no_grad(), _intra_op_threads(threads):
            self._setup(model, ligand_z, pocket_z, pocket_pos, bonds)

    def _setup(self, model: DockingModel, ligand_z: Tensor, pocket_z: Tensor, pocket_pos: Tensor, bonds: Tensor) -> None:
        from ..data.neighbors import radius_graph

        self.model, self.stack = model, model.interactions
        self.num_layers = len(self.stack.convs)
        self.dtype, self.device = model.translation_scale.dtype, model.translation_scale.device
        self.cutoff = model.cutoff
        self.ligand_z = ligand_z.to(self.device)
        self.bonds = bonds.to(self.device).reshape(2, -1)
        self.pocket_pos = pocket_pos.to(device=self.device, dtype=self.dtype)
        self._pocket64 = self.pocket_pos.double()
        P = self.pocket_pos.shape[0]
        self.x_ligand = model.embedding(self.ligand_z, torch.full_like(self.ligand_z, K.NODE_LIGAND))
        x = model.embedding(pocket_z.to(self.device), torch.full_like(pocket_z, K.NODE_PROTEIN).to(self.device))
        src, dst = radius_graph(self.pocket_pos, self.cutoff).to(self.device)
        order = torch.argsort(dst, stable=True)
        self.pp_src, self.pp_dst = src[order], dst[order]
        degree = torch.bincount(self.pp_dst, minlength=P)
        self.pp_ptr = torch.cat([degree.new_zeros(1), degree.cumsum(0)])
        vec = self.pocket_pos[self.pp_src] - self.pocket_pos[self.pp_dst]
        self.pp_sh = self.stack.sh(vec)
        radial, envelope = self.stack.edge_radial(vec)
        # per layer t: pocket-alone features x^(t) (t = 0..n), edge weights and messages
        # (or, where no pocket atom's features have changed yet, layer 0, each atom's summed messages)
        self.x_pocket, self.pp_weight, self.pp_message, self.pp_aggregated = [x], [], [], []
        last = self.num_layers - 1  # the last layer is needed at the ligand only: none of its pocket part is read
        for t in range(last if self.reach(last) == 0 else self.num_layers):
            w = self.stack.layer_edge_weight(t, radial, envelope)
            m = self.stack.layer_messages(t, x[self.pp_src], self.pp_sh, w)
            aggregated = m.new_zeros(P, m.shape[1]).index_add_(0, self.pp_dst, m)
            x = self.stack.layer_update(t, x, aggregated)
            self.x_pocket.append(x)
            self.pp_weight.append(w)
            self.pp_message.append(m if self.changed(t) > 0 else None)
            self.pp_aggregated.append(aggregated if self.changed(t) <= 0 else None)

    def reach(self, t: int) -> int:
        """The highest level at which layer ``t``'s outputs are needed (``n - 1 - t``) and can
        differ from the pocket's own (``t + 1``)."""
        return min(t + 1, self.num_layers - 1 - t)

    def changed(self, t: int) -> int:
        """The highest level of pocket atoms whose input features to layer ``t`` differ from the pocket's own."""
        return t

    @staticmethod
    def supports(model: DockingModel) -> bool:
        """Whether the model's layers can be split this way (:meth:`InteractionStack.splittable`)."""
        return model.max_num_neighbors is None and model.interactions.splittable()

    def __call__(self, poses: Tensor) -> dict[str, Tensor]:
        """Outputs for ligand poses ``(S, L, 3)``, as ``model(batch)`` of the ``S`` complex graphs."""
        with torch.no_grad(), _intra_op_threads(self.threads):
            return self._forward(poses)

    def _forward(self, poses: Tensor) -> dict[str, Tensor]:
        S, L = poses.shape[0], poses.shape[1]
        if poses.shape != (S, self.ligand_z.numel(), 3):
            raise ValueError(f"poses must have shape (S, {self.ligand_z.numel()}, 3), got {tuple(poses.shape)}")
        n, P, rc, dev, stack = self.num_layers, self.pocket_pos.shape[0], self.cutoff, self.device, self.stack
        n_max = max(self.reach(t) for t in range(n))  # the highest level any layer evaluates (n // 2)
        pos = poses.to(device=dev, dtype=self.dtype)  # the positions the model sees
        flat = pos.reshape(S * L, 3)
        # edges: 0 < |d| < cutoff in float64 (differences, not the |a|^2 - 2ab + |b|^2 trick), as the radius graph decides
        exact = pos.double()
        exact_dist = dict(compute_mode="donot_use_mm_for_euclid_dist")
        d_ll = torch.cdist(exact, exact, **exact_dist)
        upper = torch.ones(L, L, dtype=torch.bool, device=dev).triu(1)
        s_ll, a_ll, b_ll = ((d_ll > 0) & (d_ll < rc) & upper).nonzero(as_tuple=True)
        d_lp = torch.cdist(exact, self._pocket64.expand(S, P, 3), **exact_dist)
        s_c, a_c, p_c = ((d_lp > 0) & (d_lp < rc)).nonzero(as_tuple=True)

        # levels of the pocket atoms of each pose (tables of S * P, pocket atom p of pose s at s * P + p)
        big = n + 1
        sp_c = s_c * P + p_c
        level = torch.full((S * P,), big, dtype=torch.long, device=dev)
        level[sp_c] = 1
        for k in range(2, n_max + 1):
            frontier = (level == k - 1).reshape(S, P)
            hits = torch.zeros(S, P, device=dev).index_add_(1, self.pp_dst, frontier[:, self.pp_src].to(torch.float32))
            level = torch.where((hits.reshape(-1) > 0) & (level == big), k, level)
        sp_a = (level <= n_max).nonzero().flatten()  # the active pocket nodes (pose, atom), up to n_max
        num_a = sp_a.numel()
        s_a, p_a = sp_a // P, sp_a % P
        level_a = level.index_select(0, sp_a)
        SL = S * L
        # row of each pocket atom of each pose in the features [ligand | active | pocket alone]
        row = SL + num_a + torch.arange(P, device=dev).repeat(S)
        row[sp_a] = SL + torch.arange(num_a, device=dev)

        # edges with a ligand atom, ordered [ligand->ligand both ways, pocket->ligand, ligand->pocket]:
        # those into ligand atoms first; each pair's two edges share its radial weights
        lig_a, lig_b, lig_c = s_ll * L + a_ll, s_ll * L + b_ll, s_c * L + a_c
        num_ll, num_c = s_ll.numel(), s_c.numel()
        row_c = row.index_select(0, sp_c)
        g_src = torch.cat([lig_a, lig_b, row_c, lig_c] if n_max >= 1 else [lig_a, lig_b, row_c])
        g_dst = torch.cat([lig_b, lig_a, lig_c, row_c] if n_max >= 1 else [lig_b, lig_a, lig_c])
        pair = torch.arange(num_ll + num_c, device=dev)
        g_pair = torch.cat([pair[:num_ll], pair[:num_ll], pair[num_ll:], pair[num_ll:]])[: g_src.numel()]
        pair_vec = torch.cat([flat.index_select(0, lig_a) - flat.index_select(0, lig_b),
                              self.pocket_pos.index_select(0, p_c) - flat.index_select(0, lig_c)])
        g_vec = torch.cat([pair_vec[:num_ll], -pair_vec[:num_ll], pair_vec[num_ll:], -pair_vec[num_ll:]])
        g_sh = stack.sh(g_vec[: g_src.numel()])
        pair_radial, pair_envelope = stack.edge_radial(pair_vec)
        into_ligand = 2 * num_ll + num_c

        # pocket->pocket edges into active nodes
        start = self.pp_ptr.index_select(0, p_a)
        deg = self.pp_ptr.index_select(0, p_a + 1) - start
        node = torch.repeat_interleave(torch.arange(num_a, device=dev), deg)
        e = (start - torch.cumsum(deg, 0) + deg).index_select(0, node) + torch.arange(node.numel(), device=dev)
        sp_e = s_a.index_select(0, node) * P + self.pp_src.index_select(0, e)
        pp_src_row, pp_dst_row = row.index_select(0, sp_e), SL + node
        pp_src_level, pp_dst_level = level.index_select(0, sp_e), level_a.index_select(0, node)

        x_lig, x_act = self.x_ligand.repeat(S, 1), self.x_pocket[0].index_select(0, p_a)
        for t in range(n):
            reach, changed = self.reach(t), self.changed(t)
            features = torch.cat([x_lig, x_act, self.x_pocket[t]])
            geo = g_src.numel() if reach >= 1 else into_ligand
            pair_weight = stack.layer_edge_weight(t, pair_radial, pair_envelope)
            src, sh, w, dst = g_src[:geo], g_sh[:geo], pair_weight.index_select(0, g_pair[:geo]), g_dst[:geo]
            if reach >= 1 and changed > 0:  # else no pocket atom's features changed yet (their summed messages: below)
                into = pp_dst_level <= reach
                computed = (into & (pp_src_level <= changed)).nonzero().flatten()
                kept = (into & (pp_src_level > changed)).nonzero().flatten()
                e_computed = e.index_select(0, computed)
                src = torch.cat([src, pp_src_row.index_select(0, computed)])
                sh = torch.cat([sh, self.pp_sh.index_select(0, e_computed)])
                w = torch.cat([w, self.pp_weight[t].index_select(0, e_computed)])
                dst = torch.cat([dst, pp_dst_row.index_select(0, computed)])
            messages = stack.layer_messages(t, features.index_select(0, src), sh, w)
            size = SL + num_a if reach >= 1 else SL
            aggregated = messages.new_zeros(size, messages.shape[1]).index_add_(0, dst, messages)
            if reach >= 1 and changed <= 0:
                aggregated[SL:] += self.pp_aggregated[t].index_select(0, p_a)
            elif reach >= 1:
                aggregated.index_add_(0, pp_dst_row.index_select(0, kept),
                                      self.pp_message[t].index_select(0, e.index_select(0, kept)))
            if reach == 0:  # the ligand atoms only (the last layer; earlier ones only in tests' negative controls)
                x_lig = stack.layer_update(t, x_lig, aggregated)
                if t + 1 < n:
                    x_act = self.x_pocket[t + 1].index_select(0, p_a)
                continue
            rows = (level_a <= reach).nonzero().flatten()
            if rows.numel() == num_a:
                new = stack.layer_update(t, torch.cat([x_lig, x_act]), aggregated)
                x_lig, x_act = new[:SL], new[SL:]
            else:  # rows of level > t + 1 keep the pocket-alone features; those above `reach` are never read again
                new = stack.layer_update(
                    t, torch.cat([x_lig, x_act.index_select(0, rows)]),
                    torch.cat([aggregated[:SL], aggregated.index_select(0, SL + rows)]),
                )
                x_lig, x_act = new[:SL], self.x_pocket[t + 1].index_select(0, p_a)
                x_act[rows] = new[SL:]
        node_type = torch.full((SL,), K.NODE_LIGAND, dtype=torch.long, device=dev)
        batch = torch.arange(S, device=dev).repeat_interleave(L)
        bonds = (self.bonds[:, None, :] + (torch.arange(S, device=dev) * L)[None, :, None]).reshape(2, -1)
        return self.model.readout(x_lig, flat, node_type, batch, S, bonds)


@contextmanager
def _intra_op_threads(threads: Optional[int]):
    """torch's intra-op threads set to ``threads`` within (``None``: unchanged), restored after."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
