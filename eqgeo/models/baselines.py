"""PyG's SchNet, ViSNet and DimeNet++ as baselines: eqgeo's neighbour lists, eqgeo's model interfaces.

:class:`SchNetBaseline` and :class:`ViSNetBaseline` hold an unmodified
:class:`torch_geometric.nn.models.SchNet` / :class:`torch_geometric.nn.models.ViSNet` (its
``forward`` is what runs) and give it two things:

- **eqgeo's neighbour list** (:func:`eqgeo.data.radius_graph`) instead of PyG's
  ``radius_graph`` (which needs pyg-lib): SchNet gets a :class:`NeighborListInteractionGraph`
  through its ``interaction_graph`` argument; ViSNet, which has no such argument, gets a
  :class:`NeighborListDistance` in place of its distance module
  (``representation_model.distance``), returning what PyG's ``Distance`` returns: the radius
  edges plus one self-loop per atom, their lengths (zero for the loops) and vectors;
- **the interfaces of eqgeo's models**, so that ``eqgeo-train`` runs them unchanged:
  ``mode="property"`` behaves like :class:`~eqgeo.models.PropertyModel` (``y``, per-target
  normalisation in float64, ``"sum"``/``"mean"`` targets) and ``mode="energy"`` like
  :class:`~eqgeo.models.InteratomicPotential` (float64 energies with per-species shifts,
  forces ``-dE/dpos``).

:class:`DimeNetPPBaseline` holds PyG's :class:`torch_geometric.nn.models.DimeNetPlusPlus`, whose
``forward`` calls PyG's ``radius_graph`` (pyg-lib) and builds its triplets with torch_sparse's
``SparseTensor``, neither of which installs everywhere: the wrapper runs the same steps with PyG's
blocks (its bases, embedding, interaction and output blocks, unmodified) on eqgeo's neighbour list
and :func:`triplets`, plain PyTorch.

``eqgeo-train`` builds them from their configs' ``_target_`` (``model=schnet``, ``model=visnet``,
``model=dimenetpp``), with ``mode`` from the task (``${task.kind}``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.nn.models import DimeNetPlusPlus, SchNet, ViSNet
from torch_geometric.nn.models.schnet import RadiusInteractionGraph
from torch_geometric.nn.models.visnet import Distance, GatedEquivariantBlock

from ..data import keys as K
from ..data.neighbors import edge_vectors, radius_graph
from ..nn.buffers import keep_float64
from ._common import energy_and_forces, naming_graphs, scatter_sum, species_types
from .potential import InteratomicPotential
from .property import _REDUCES, PropertyModel, set_target_statistics, target_statistics

__all__ = [
    "NeighborListInteractionGraph",
    "NeighborListDistance",
    "SchNetBaseline",
    "ViSNetBaseline",
    "DimeNetPPBaseline",
    "triplets",
    "MODES",
]

#: What a network predicts: ``"property"`` (graph targets, as :class:`~eqgeo.models.PropertyModel`)
#: or ``"energy"`` (energies and forces, as :class:`~eqgeo.models.InteratomicPotential`).
MODES = ("property", "energy")
# PyG's SchNet and ViSNet embed atomic numbers in a table of 100 rows.
_MAX_Z = 100


def _radius_edges(pos: Tensor, cutoff: float, batch: Tensor, max_num_neighbors: Optional[int]) -> Tensor:
    """:func:`eqgeo.data.radius_graph` for any order of the atoms (it needs a sorted ``batch``)."""
    pos = pos.detach()
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        order = torch.argsort(batch, stable=True)
        return order[radius_graph(pos[order], cutoff, batch[order], max_num_neighbors=max_num_neighbors)]
    return radius_graph(pos, cutoff, batch, max_num_neighbors=max_num_neighbors)


class NeighborListInteractionGraph(RadiusInteractionGraph):
    """SchNet's ``interaction_graph`` on eqgeo's neighbour list: ``(pos, batch) -> (edge_index, lengths)``.

    Edges are those of :func:`eqgeo.data.radius_graph` (``0 < d < cutoff`` within each graph,
    ``[source j, centre i]``); with ``max_num_neighbors`` the nearest ones are kept (PyG keeps
    the first ones its search finds). Lengths are differentiable in ``pos``.
    """

    def __init__(self, cutoff: float, max_num_neighbors: Optional[int] = None) -> None:
        super().__init__(cutoff, max_num_neighbors)

    def forward(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        edge_index = _radius_edges(pos, self.cutoff, batch, self.max_num_neighbors)
        return edge_index, edge_vectors(pos, edge_index).norm(dim=-1)


class NeighborListDistance(Distance):
    """ViSNet's distance module on eqgeo's neighbour list: ``(pos, batch) -> (edge_index, lengths, vectors)``.

    Returns what :class:`torch_geometric.nn.models.visnet.Distance` returns: the edges of
    :func:`eqgeo.data.radius_graph` followed, with ``add_self_loops`` (ViSNet's setting), by one
    self-loop per atom; the edge lengths (zero for the loops, without a norm of a zero vector, so
    no NaN gradients) and the vectors ``pos[j] - pos[i]`` (zero for the loops), both in the dtype
    of ``pos``. The vectors are a fresh tensor: ViSNet normalises them in place.
    """

    def __init__(self, cutoff: float, max_num_neighbors: Optional[int] = None, add_self_loops: bool = True) -> None:
        super().__init__(cutoff, max_num_neighbors, add_self_loops)

    def forward(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        edge_index = _radius_edges(pos, self.cutoff, batch, self.max_num_neighbors)
        vec = edge_vectors(pos, edge_index)
        length = vec.norm(dim=-1)
        n = pos.shape[0] if self.add_self_loops else 0
        loops = torch.arange(n, device=edge_index.device)
        edge_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
        return edge_index, torch.cat([length, pos.new_zeros(n)]), torch.cat([vec, pos.new_zeros(n, 3)])


class _PyGBaseline(torch.nn.Module):
    """Species, inputs, statistics and the two output modes around a PyG network ``self.net``.

    Subclasses build ``self.net`` with ``self.num_outputs`` outputs per atom and implement
    :meth:`atom_sums`.
    """

    def __init__(
        self,
        species: Sequence[int],
        mode: str,
        num_targets: Optional[int],
        reduce: Union[str, Sequence[str], None],
        cutoff: float,
        max_num_neighbors: Optional[int],
        avg_num_neighbors: Optional[float],
        dipole: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if mode not in MODES:
            raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
        if dipole and mode != "property":
            raise ValueError(f"{name}: dipole=True is for mode='property', not mode={mode!r}")
        if dipole and num_targets not in (None, 0):
            raise ValueError(
                f"{name}: with dipole=True the network predicts the dipole moment mu alone (PyG's dipole mode "
                f"returns only its norm), so num_targets must be 0, got {num_targets}: train the other targets in "
                f"another run, or set task.dipole=false to read mu out as a scalar beside them"
            )
        #: predict the dipole moment from per-atom charges (PyG's ``dipole=True``) instead of graph scalars
        self.dipole = bool(dipole)
        species = [int(z) for z in species]
        if not species or len(set(species)) != len(species) or not all(1 <= z < _MAX_Z for z in species):
            raise ValueError(f"{name}: species must be distinct atomic numbers 1..{_MAX_Z - 1} (PyG's table), got {species}")
        self.mode = mode
        self.cutoff, self.max_num_neighbors = float(cutoff), max_num_neighbors
        #: kept for the training pipeline's uniform interface; PyG's networks sum their messages
        #: without dividing by a neighbour count, so it is not used
        self.avg_num_neighbors = None if avg_num_neighbors is None else float(avg_num_neighbors)
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("atomic_numbers", torch.tensor(species, dtype=torch.long))
        self.register_buffer("type_of", table, persistent=False)
        if mode == "property":
            least = 0 if dipole else 1  # with dipole the charges predict mu, no graph scalar
            num_targets = least if num_targets is None else int(num_targets)
            reduce = "sum" if reduce is None else reduce
            reduces = [reduce] * num_targets if isinstance(reduce, str) else list(reduce)
            if num_targets < least or len(reduces) != num_targets or any(r not in _REDUCES for r in reduces):
                raise ValueError(
                    f"{name}: num_targets must be >= {least} and reduce one of {_REDUCES} or one per target, got "
                    f"num_targets={num_targets}, reduce={reduce!r}"
                )
            self.num_targets, self.reduces = num_targets, reduces
            self.num_outputs = 1 if dipole else num_targets  # with dipole: one charge per atom
            self.register_buffer("target_mean", torch.zeros(num_targets, dtype=torch.float64))
            self.register_buffer("target_std", torch.ones(num_targets))
            self.register_buffer("sum_mask", torch.tensor([r == "sum" for r in reduces]), persistent=False)
        else:
            if num_targets is not None or reduce is not None:
                raise ValueError(f"{name}: num_targets and reduce are for mode='property', not mode='energy'")
            self.num_outputs = 1
            self.register_buffer("energy_shift", torch.zeros(len(species), dtype=torch.float64))
            self.register_buffer("energy_scale", torch.ones(()))

    @property
    def species(self) -> list[int]:
        """The atomic numbers the model knows, in the order of its per-species shifts."""
        return self.atomic_numbers.tolist()

    def _stats_buffer(self) -> Tensor:
        return self.target_std if self.mode == "property" else self.energy_scale

    def _apply(self, fn, *args, **kwargs):
        keep = ["target_mean"] if self.mode == "property" else ["energy_shift"]
        return keep_float64(self, keep, lambda: super(_PyGBaseline, self)._apply(fn, *args, **kwargs))

    # ------------------------------------------------------------------ statistics
    def set_statistics(self, mean_or_shift, std_or_scale) -> None:
        """The training-data statistics, as the eqgeo model of the same mode takes them.

        ``mode="property"``: target means (per atom for ``"sum"`` targets) and standard
        deviations, ``(num_targets,)`` each (:meth:`PropertyModel.set_statistics`).
        ``mode="energy"``: per-species energy shifts ``(num_species,)`` (eV) and one energy scale
        (a number, or equal values per species): PyG's forward sums the atoms' outputs before
        returning them, so a scale per species cannot be applied.
        """
        if self.mode == "property":
            set_target_statistics(self, mean_or_shift, std_or_scale)
            return
        shift = torch.as_tensor(mean_or_shift, dtype=torch.float64).reshape(-1)
        scale = torch.as_tensor(std_or_scale, dtype=torch.float64).reshape(-1)
        if shift.numel() != len(self.species):
            raise ValueError(f"energy_shift needs one value per species {self.species}, got {shift.numel()}")
        if scale.numel() not in (1, len(self.species)) or not bool((scale == scale[0]).all()):
            raise ValueError(
                f"{type(self).__name__} takes one energy scale for all species (PyG's forward returns sums over "
                f"atoms), got {scale.tolist()}"
            )
        self.energy_shift.copy_(shift)
        self.energy_scale.copy_(scale[0])

    def fit_statistics(self, targets: Tensor, num_atoms: Tensor) -> None:
        """``mode="property"``: statistics from training targets ``(G, num_targets)`` and atom counts
        ``(G,)`` (:func:`~eqgeo.models.property.target_statistics`)."""
        if self.mode != "property":
            raise ValueError("fit_statistics is for mode='property'; use set_statistics(energy_shift, energy_scale)")
        self.set_statistics(*target_statistics(targets, num_atoms, self.reduces))

    # ------------------------------------------------------------------ forward
    def atom_sums(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        """PyG's forward: the sum over each graph's atoms of the network's ``num_outputs`` outputs."""
        raise NotImplementedError

    def _inputs(self, data) -> tuple[Tensor, Tensor, Tensor, int]:
        name = type(self).__name__
        for key in (K.ATOMIC_NUMBER, K.POSITION):
            if getattr(data, key, None) is None:
                raise ValueError(f"the model needs data.{key}, which this {type(data).__name__} does not have")
        if getattr(data, K.EDGE_INDEX, None) is not None:
            raise ValueError(
                f"{name} builds its neighbour list at cutoff={self.cutoff:g} inside PyG's forward, which takes "
                f"positions only: data.{K.EDGE_INDEX} would not be used; remove it"
            )
        cell, pbc = getattr(data, K.CELL, None), getattr(data, K.PBC, None)
        if cell is not None and (pbc is None or bool(torch.as_tensor(pbc).any())):
            raise ValueError(f"{name} is for molecules (PyG's network has no periodic images); the data has a periodic cell")
        z, pos = data[K.ATOMIC_NUMBER], data[K.POSITION].to(self._stats_buffer().dtype)
        if z.dim() != 1 or pos.shape != (z.shape[0], 3):
            raise ValueError(f"expected z of shape (N,) and pos of shape (N, 3), got {tuple(z.shape)} and {tuple(pos.shape)}")
        batch = getattr(data, K.BATCH, None)
        if batch is None:
            return z, pos, torch.zeros_like(z), 1
        num_graphs = int(data.num_graphs) if getattr(data, "num_graphs", None) is not None else int(batch.max()) + 1
        return z, pos, batch, num_graphs

    def _graph_outputs(self, z: Tensor, pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        out = self.atom_sums(z, pos, batch)
        if out.shape[0] < num_graphs:  # PyG sizes its readout by batch.max(): trailing empty graphs
            out = torch.cat([out, out.new_zeros(num_graphs - out.shape[0], out.shape[1])])
        return out

    def forward(self, data, compute_forces: Optional[bool] = None) -> dict[str, Tensor]:
        """Outputs of a ``Data``/``Batch`` of molecules (``z``, ``pos``, ``batch``; no ``edge_index``).

        ``mode="property"``: ``{"y": (G, num_targets)}`` in float64, as :class:`PropertyModel`; with
        ``dipole=True`` (SchNet): ``{"y": (G, 0), "mu": (G,)}``, the dipole moment's norm in float64.
        ``mode="energy"``: ``{"energy": (G,)}`` in float64 and ``"forces"`` ``(N, 3)`` =
        ``-dE/dpos`` (unless ``compute_forces=False``), built with ``create_graph=True`` in training
        mode, by the same :func:`~eqgeo.models.energy_and_forces` as :class:`InteratomicPotential`.
        """
        z, pos, batch, num_graphs = self._inputs(data)
        with naming_graphs(data):
            types = species_types(z, self.type_of, self.atomic_numbers, batch)
        if self.mode == "property":
            if compute_forces:
                raise ValueError("compute_forces is for mode='energy'")
            if self.dipole:
                mu = self._graph_outputs(z, pos, batch, num_graphs)[:, 0].to(torch.float64)
                return {"y": mu.new_zeros(num_graphs, 0), "mu": mu}
            return {"y": self._property(z, pos, batch, num_graphs)}
        return self._energy(z, pos, batch, num_graphs, types, True if compute_forces is None else compute_forces)

    def _property(self, z: Tensor, pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        o = self._graph_outputs(z, pos, batch, num_graphs) * self.target_std.to(pos.dtype)
        atoms = scatter_sum(torch.ones_like(batch, dtype=pos.dtype), batch, num_graphs)
        mask = self.sum_mask
        y = torch.where(mask, o, o / atoms.clamp(min=1)[:, None]).to(torch.float64)
        return y + self.target_mean * torch.where(mask, atoms[:, None].to(torch.float64), torch.ones_like(y))

    def _energy(self, z, pos, batch, num_graphs: int, types: Tensor, compute_forces: bool) -> dict[str, Tensor]:
        def energy_of(pos: Tensor, strain: None) -> dict[str, Tensor]:
            e = self._graph_outputs(z, pos, batch, num_graphs)[:, 0] * self.energy_scale.to(pos.dtype)
            return {"energy": e.to(torch.float64) + scatter_sum(self.energy_shift[types], batch, num_graphs)}

        return energy_and_forces(energy_of, pos, training=self.training, compute_forces=compute_forces)

    def _describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        if self.mode == "property" and self.dipole:
            what = "the dipole moment (charges times positions)"
        elif self.mode == "property":
            what = f"{self.num_targets} targets ({'/'.join(sorted(set(self.reduces)))})"
        else:
            what = "energy and forces"
        return (
            f"{type(self).__name__}(species={self.species}, {what}, {self._describe()}, cutoff={self.cutoff:g}, "
            f"{n} weights)"
        )


class SchNetBaseline(_PyGBaseline):
    r"""PyG's :class:`~torch_geometric.nn.models.SchNet` (https://arxiv.org/abs/1706.08566) on
    eqgeo's neighbour list, with the interface of :class:`~eqgeo.models.PropertyModel`
    (``mode="property"``) or :class:`~eqgeo.models.InteratomicPotential` (``mode="energy"``).

    PyG's ``forward`` runs unchanged; its ``interaction_graph`` is a
    :class:`NeighborListInteractionGraph`, and for ``num_targets > 1`` its last layer ``lin2``
    has ``num_targets`` outputs. The wrapper then de-normalises the sums over atoms:

    .. math::

        y_t = \sigma_t \cdot \mathrm{reduce}_t(\mathrm{SchNet}(\mathcal{G})_t) + \mu_t\,[n \text{ for "sum"}],
        \qquad E = s \cdot \mathrm{SchNet}(\mathcal{G}) + \sum_i \mu_{Z_i},

    with ``"mean"`` targets divided by the number of atoms ``n``, the target statistics ``μ, σ``
    (per atom for ``"sum"``) and per-species shifts ``μ_Z`` kept in float64 (``y`` and ``E`` are
    float64), and forces ``F = -dE/dpos``. Invariant under rotations, reflections, translations
    and permutations; smooth at the cutoff (SchNet's cosine envelope).

    Args:
        species: atomic numbers the model knows (below 100, PyG's embedding table).
        mode: ``"property"`` or ``"energy"``.
        num_targets, reduce: ``mode="property"`` only (defaults 1 and ``"sum"``).
        hidden_channels, num_filters, num_interactions, num_gaussians: PyG's SchNet arguments.
        cutoff: neighbour cutoff (Å).
        max_num_neighbors: nearest neighbours kept per atom (``None``: all; PyG's default, 32,
            keeps the first found).
        avg_num_neighbors: accepted for ``eqgeo-train``'s uniform interface; not used (SchNet's
            messages are plain sums).
        dipole: predict the dipole moment ``mu`` (alone: ``num_targets`` 0) as SchNet's paper does, with
            PyG's ``SchNet(dipole=True)``: one charge :math:`q_i` per atom and
            :math:`\mu = \lVert\sum_i q_i (\mathbf r_i - \mathbf r_\mathrm{cm})\rVert` about the centre of
            mass (charges not constrained to sum to zero), returned as ``out["mu"]`` (``task.dipole=true``).
            No target statistics are applied to it. Invariant under rotations, reflections,
            translations and permutations.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> model = SchNetBaseline([1, 8], mode="energy", hidden_channels=8, num_filters=8, num_interactions=2)
        >>> water = Data(z=torch.tensor([8, 1, 1]), pos=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
        >>> out = model(water)
        >>> out["energy"].dtype, out["forces"].shape
        (torch.float64, torch.Size([3, 3]))
    """

    def __init__(
        self,
        species: Sequence[int],
        mode: str = "property",
        num_targets: Optional[int] = None,
        reduce: Union[str, Sequence[str], None] = None,
        *,
        hidden_channels: int = 128,
        num_filters: int = 128,
        num_interactions: int = 6,
        num_gaussians: int = 50,
        cutoff: float = 5.0,
        max_num_neighbors: Optional[int] = None,
        avg_num_neighbors: Optional[float] = None,
        dipole: bool = False,
    ) -> None:
        super().__init__(species, mode, num_targets, reduce, cutoff, max_num_neighbors, avg_num_neighbors, dipole)
        self.net = SchNet(
            hidden_channels=hidden_channels, num_filters=num_filters, num_interactions=num_interactions,
            num_gaussians=num_gaussians, cutoff=cutoff, readout="add", dipole=dipole,
            interaction_graph=NeighborListInteractionGraph(cutoff, max_num_neighbors),
        )
        if self.num_outputs != 1:
            self.net.lin2 = torch.nn.Linear(hidden_channels // 2, self.num_outputs)
            self.net.reset_parameters()

    def atom_sums(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        return self.net(z, pos, batch)

    def _describe(self) -> str:
        n = self.net
        return (
            f"hidden_channels={n.hidden_channels}, num_filters={n.num_filters}, num_interactions={n.num_interactions}, "
            f"num_gaussians={n.num_gaussians}"
        )


class ViSNetBaseline(_PyGBaseline):
    r"""PyG's :class:`~torch_geometric.nn.models.ViSNet` (https://arxiv.org/abs/2210.16518) on
    eqgeo's neighbour list, with the interface of :class:`~eqgeo.models.PropertyModel`
    (``mode="property"``) or :class:`~eqgeo.models.InteratomicPotential` (``mode="energy"``).

    PyG's ``forward`` runs unchanged (``reduce_op="sum"``, its ``mean``/``std`` left at 0 and 1,
    its ``derivative`` off: forces come from the wrapper); its distance module
    ``representation_model.distance`` is a :class:`NeighborListDistance` (radius edges plus the
    self-loops PyG's ``Distance`` adds), and for ``num_targets > 1`` the last block of its output
    network has ``num_targets`` outputs. De-normalisation and statistics as
    :class:`SchNetBaseline`. Invariant under rotations, reflections, translations and
    permutations. Not smooth at the cutoff once trained: the vector message
    ``vec_j s_1 + s_2 d_ij`` of PyG's ``ViS_MP`` has ``s = SiLU(s_proj(v_j))``, which tends to
    ``SiLU(bias)`` (zero at initialisation only) as an edge reaches the cutoff, so forces jump
    when an atom crosses it. An atom without neighbours keeps zero vector features, whose norm in
    the output block has a NaN second derivative: training on forces with such an atom in the
    batch gives NaN gradients (molecules whose atoms all have a neighbour are fine).

    Args:
        species: atomic numbers the model knows (below 100, PyG's embedding table).
        mode: ``"property"`` or ``"energy"``.
        num_targets, reduce: ``mode="property"`` only (defaults 1 and ``"sum"``).
        hidden_channels, num_layers, num_heads, num_rbf, lmax, trainable_rbf, vecnorm_type,
            trainable_vecnorm, vertex: PyG's ViSNet arguments.
        cutoff: neighbour cutoff (Å).
        max_num_neighbors: nearest neighbours kept per atom (``None``: all).
        avg_num_neighbors: accepted for ``eqgeo-train``'s uniform interface; not used.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> model = ViSNetBaseline([1, 8], num_targets=2, reduce="mean", hidden_channels=8, num_heads=2, num_layers=2)
        >>> water = Data(z=torch.tensor([8, 1, 1]), pos=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
        >>> model(water)["y"].shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        species: Sequence[int],
        mode: str = "property",
        num_targets: Optional[int] = None,
        reduce: Union[str, Sequence[str], None] = None,
        *,
        hidden_channels: int = 128,
        num_layers: int = 6,
        num_heads: int = 8,
        num_rbf: int = 32,
        lmax: int = 1,
        trainable_rbf: bool = False,
        vecnorm_type: Optional[str] = None,
        trainable_vecnorm: bool = False,
        vertex: bool = False,
        cutoff: float = 5.0,
        max_num_neighbors: Optional[int] = None,
        avg_num_neighbors: Optional[float] = None,
    ) -> None:
        super().__init__(species, mode, num_targets, reduce, cutoff, max_num_neighbors, avg_num_neighbors)
        self.net = ViSNet(
            lmax=lmax, vecnorm_type=vecnorm_type, trainable_vecnorm=trainable_vecnorm, num_heads=num_heads,
            num_layers=num_layers, hidden_channels=hidden_channels, num_rbf=num_rbf, trainable_rbf=trainable_rbf,
            max_z=_MAX_Z, cutoff=cutoff, vertex=vertex, reduce_op="sum",
        )
        self.net.representation_model.distance = NeighborListDistance(cutoff, max_num_neighbors)
        if self.num_outputs != 1:
            self.net.output_model.output_network[-1] = GatedEquivariantBlock(hidden_channels // 2, self.num_outputs)
            self.net.reset_parameters()

    def atom_sums(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        y, _ = self.net(z, pos, batch)
        return y

    def _describe(self) -> str:
        r = self.net.representation_model
        return (
            f"hidden_channels={r.hidden_channels}, num_layers={r.num_layers}, num_heads={r.num_heads}, "
            f"num_rbf={r.num_rbf}, lmax={r.lmax}"
        )


def triplets(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Every two-edge path ``k -> j -> i`` with ``k != i`` of a directed graph, in plain PyTorch.

    What PyG's ``torch_geometric.nn.models.dimenet.triplets`` computes with torch_sparse (the same
    paths; their order may differ).

    Args:
        edge_index: ``(2, E)`` edges ``[source j, target i]``.
        num_nodes: the number of nodes.

    Returns:
        ``(idx_i, idx_j, idx_k, idx_kj, idx_ji)``: per path, its three nodes, the index of its edge
        ``k -> j`` and of its edge ``j -> i`` in ``edge_index``.

    Example:
        >>> idx_i, idx_j, idx_k, idx_kj, idx_ji = triplets(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), 3)
        >>> sorted(zip(idx_k.tolist(), idx_j.tolist(), idx_i.tolist()))  # the chain 0 - 1 - 2
        [(0, 1, 2), (2, 1, 0)]
    """
    row, col = edge_index  # j -> i
    num_edges = row.numel()
    order = torch.argsort(col, stable=True)  # edges grouped by target
    counts = torch.bincount(col, minlength=num_nodes)
    start = torch.cumsum(counts, 0) - counts  # the first edge into each node, in ``order``
    per_edge = counts[row]  # edges k -> j into the source j of each edge j -> i
    idx_ji = torch.repeat_interleave(torch.arange(num_edges, device=row.device), per_edge)
    first = torch.cumsum(per_edge, 0) - per_edge
    offset = torch.arange(idx_ji.numel(), device=row.device) - first[idx_ji]
    idx_kj = order[start[row[idx_ji]] + offset]
    idx_i, idx_j, idx_k = col[idx_ji], row[idx_ji], row[idx_kj]
    keep = idx_i != idx_k
    return idx_i[keep], idx_j[keep], idx_k[keep], idx_kj[keep], idx_ji[keep]


class DimeNetPPBaseline(_PyGBaseline):
    r"""PyG's :class:`~torch_geometric.nn.models.DimeNetPlusPlus` (https://arxiv.org/abs/2011.14115)
    on eqgeo's neighbour list and :func:`triplets`, with the interface of
    :class:`~eqgeo.models.PropertyModel` (``mode="property"``) or
    :class:`~eqgeo.models.InteratomicPotential` (``mode="energy"``).

    PyG's forward needs pyg-lib (``radius_graph``) and torch_sparse (its triplets); this runs its
    steps with its own blocks, unmodified: distances and angles ``atan2(|a x b|, a . b)`` of every
    triplet ``k -> j -> i`` (DimeNet++'s ``pos_ij``, ``pos_jk``), the radial and spherical bases,
    the embedding block, the interaction and output blocks, and the sum over atoms (tested equal
    to PyG's forward run on a brute-force neighbour list and triplets). De-normalisation and statistics as
    :class:`SchNetBaseline`; ``num_targets`` are PyG's ``out_channels``. Invariant under
    rotations, reflections, translations and permutations; smooth at the cutoff (DimeNet's
    polynomial envelope).

    Args:
        species: atomic numbers the model knows (below 95, PyG's embedding table).
        mode: ``"property"`` or ``"energy"``.
        num_targets, reduce: ``mode="property"`` only (defaults 1 and ``"sum"``).
        hidden_channels, num_blocks, int_emb_size, basis_emb_size, out_emb_channels, num_spherical,
            num_radial, envelope_exponent, num_before_skip, num_after_skip, num_output_layers:
            PyG's DimeNet++ arguments (defaults: the paper's QM9 model).
        cutoff: neighbour cutoff (Å).
        max_num_neighbors: nearest neighbours kept per atom (``None``: all).
        avg_num_neighbors: accepted for ``eqgeo-train``'s uniform interface; not used.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> model = DimeNetPPBaseline([1, 8], hidden_channels=8, num_blocks=1, int_emb_size=4, basis_emb_size=2,
        ...                           out_emb_channels=8, num_spherical=3, num_radial=3)
        >>> water = Data(z=torch.tensor([8, 1, 1]), pos=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
        >>> model(water)["y"].shape
        torch.Size([1, 1])
    """

    def __init__(
        self,
        species: Sequence[int],
        mode: str = "property",
        num_targets: Optional[int] = None,
        reduce: Union[str, Sequence[str], None] = None,
        *,
        hidden_channels: int = 128,
        num_blocks: int = 4,
        int_emb_size: int = 64,
        basis_emb_size: int = 8,
        out_emb_channels: int = 256,
        num_spherical: int = 7,
        num_radial: int = 6,
        envelope_exponent: int = 5,
        num_before_skip: int = 1,
        num_after_skip: int = 2,
        num_output_layers: int = 3,
        cutoff: float = 5.0,
        max_num_neighbors: Optional[int] = None,
        avg_num_neighbors: Optional[float] = None,
    ) -> None:
        if any(int(z) >= 95 for z in species):
            raise ValueError(f"DimeNetPPBaseline: species must be below 95 (PyG's DimeNet embedding table), got {list(species)}")
        super().__init__(species, mode, num_targets, reduce, cutoff, max_num_neighbors, avg_num_neighbors)
        self.net = DimeNetPlusPlus(
            hidden_channels=hidden_channels, out_channels=self.num_outputs, num_blocks=num_blocks,
            int_emb_size=int_emb_size, basis_emb_size=basis_emb_size, out_emb_channels=out_emb_channels,
            num_spherical=num_spherical, num_radial=num_radial, cutoff=cutoff, envelope_exponent=envelope_exponent,
            num_before_skip=num_before_skip, num_after_skip=num_after_skip, num_output_layers=num_output_layers,
        )
        self._sizes = dict(hidden_channels=hidden_channels, num_blocks=num_blocks, num_spherical=num_spherical,
                           num_radial=num_radial)

    def atom_sums(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        net, n = self.net, pos.shape[0]
        edge_index = _radius_edges(pos, self.cutoff, batch, self.max_num_neighbors)
        j, i = edge_index
        idx_i, idx_j, idx_k, idx_kj, idx_ji = triplets(edge_index, n)
        dist = (pos[i] - pos[j]).square().sum(dim=-1).sqrt()
        pos_jk, pos_ij = pos[idx_j] - pos[idx_k], pos[idx_i] - pos[idx_j]
        a = (pos_ij * pos_jk).sum(dim=-1)
        b = torch.cross(pos_ij, pos_jk, dim=1).norm(dim=-1)
        angle = torch.atan2(b, a)
        rbf = net.rbf(dist)
        sbf = net.sbf(dist, angle, idx_kj)
        x = net.emb(z, rbf, i, j)
        P = net.output_blocks[0](x, rbf, i, num_nodes=n)
        for interaction_block, output_block in zip(net.interaction_blocks, net.output_blocks[1:]):
            x = interaction_block(x, rbf, sbf, idx_kj, idx_ji)
            P = P + output_block(x, rbf, i, num_nodes=n)
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        return scatter_sum(P, batch, num_graphs)

    def _describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._sizes.items())
