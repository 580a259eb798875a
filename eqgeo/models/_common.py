"""Parts shared by eqgeo's models: species lookup and embedding, the interaction stack, graph
construction, energies and their derivatives."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..data import keys as K
from ..data.neighbors import periodic_radius_graph, radius_graph
from ..nn import EquivariantConv, EquivariantTransformerConv, Gate, Linear, ManyBodyProduct, RadialEmbedding
from ..nn.edges import edge_lengths
from ..o3 import Irreps, SphericalHarmonics

__all__ = [
    "hidden_irreps",
    "SpeciesEmbedding",
    "check_species",
    "species_types",
    "UnknownSpeciesError",
    "energy_and_forces",
    "naming_graphs",
    "InteractionStack",
    "graph_inputs",
    "PARITIES",
    "LAYERS",
]

#: ``"natural"``: hidden features ``c x 0e + c x 1o + c x 2e + ...`` (parity ``(-1)^l``, as MACE);
#: ``"full"``: both parities at every ``l`` (``c x 0e + c x 0o + c x 1o + c x 1e + ...``, NequIP's
#: ``parity: true``). Both are O(3)-equivariant: reflections are exact symmetries either way.
PARITIES = ("natural", "full")
#: Interaction layers: :class:`~eqgeo.nn.EquivariantConv` or :class:`~eqgeo.nn.EquivariantTransformerConv`.
LAYERS = ("conv", "transformer")


def hidden_irreps(channels: int, lmax: int, parity: str = "natural") -> Irreps:
    """Hidden irreps of ``channels`` copies of every irrep up to ``lmax`` (see :data:`PARITIES`)."""
    if channels <= 0 or lmax < 0:
        raise ValueError(f"channels must be > 0 and lmax >= 0, got channels={channels}, lmax={lmax}")
    if parity == "natural":
        return Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
    if parity == "full":
        return Irreps([(channels, (l, p)) for l in range(lmax + 1) for p in ((-1) ** l, -((-1) ** l))])
    raise ValueError(f"parity must be one of {PARITIES}, got {parity!r}")


class SpeciesEmbedding(torch.nn.Module):
    """Atomic numbers to type indices and learned scalar embeddings (``channels x 0e``).

    Args:
        species: the atomic numbers the model knows, in the order of its per-species
            parameters (e.g. ``[1, 6, 7, 8, 9]``).
        channels: embedding size.
        num_kinds: independent embeddings per species (e.g. 2: ligand and protein atoms).
        allow_unknown: map atomic numbers outside ``species`` to one extra "other" type instead
            of raising.

    An atomic number the model does not know raises :class:`UnknownSpeciesError` (a
    ``ValueError``) naming it, its element and, when ``batch`` is given, the graph (its index in
    the batch) and the atom's index within that graph of each such atom (checked in eager mode;
    compiled graphs skip the check).
    """

    def __init__(self, species: Sequence[int], channels: int, num_kinds: int = 1, allow_unknown: bool = False) -> None:
        super().__init__()
        species = [int(z) for z in species]
        if not species or len(set(species)) != len(species) or not all(1 <= z <= 118 for z in species):
            raise ValueError(f"species must be distinct atomic numbers 1..118, got {species}")
        self.allow_unknown = bool(allow_unknown)
        self.num_types = len(species) + int(self.allow_unknown)
        self.num_kinds = int(num_kinds)
        table = torch.full((119,), self.num_types - 1 if self.allow_unknown else -1, dtype=torch.long)
        table[torch.tensor(species)] = torch.arange(len(species))
        # persistent: a state_dict records which element each embedding row belongs to
        self.register_buffer("atomic_numbers", torch.tensor(species, dtype=torch.long))
        self.register_buffer("type_of", table)
        self.embedding = torch.nn.Embedding(self.num_types * self.num_kinds, channels)
        self.irreps_out = Irreps([(channels, "0e")])

    @property
    def species(self) -> list[int]:
        """The atomic numbers the model knows, in the order of its per-species parameters."""
        return self.atomic_numbers.tolist()

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()

    def types(self, z: Tensor, batch: Optional[Tensor] = None) -> Tensor:
        """Type index of each atom, ``(N,)``; ``batch`` (the graph of each atom) makes the error for an
        unknown element name the graph and the atom within it (see :func:`species_types`)."""
        return species_types(z, self.type_of, self.atomic_numbers, batch)

    def forward(self, z: Tensor, kind: Optional[Tensor] = None, batch: Optional[Tensor] = None) -> Tensor:
        t = self.types(z, batch)
        if kind is not None:
            t = t + self.num_types * kind
        return self.embedding(t)


def _element(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 1 <= z < len(chemical_symbols) else f"Z={z}"


class UnknownSpeciesError(ValueError):
    """An atomic number the model has no parameters for (see :func:`check_species`).

    Attributes:
        unknown: the unknown atomic numbers.
        species: the model's species.
        atoms: ``(graph, atom, element)`` of the first offending atoms: the graph's index in the
            batch and the atom's index within that graph.
        more: how many further offending atoms ``atoms`` leaves out.
    """

    def __init__(self, message: str, unknown=(), species=(), atoms=(), more: int = 0) -> None:
        super().__init__(message)
        self.unknown, self.species, self.atoms, self.more = list(unknown), list(species), list(atoms), int(more)

    @classmethod
    def build(cls, unknown, species, atoms, more: int = 0, names=None) -> UnknownSpeciesError:
        """The error with its message; ``names`` (one per graph of the batch, e.g. ``batch.name``)
        adds each graph's name."""
        if isinstance(names, str):  # a single Data's name
            names = [names]

        def graph(g: int) -> str:
            named = names is not None and 0 <= g < len(names) and names[g] is not None
            return f"graph {g} of the batch" + (f" (name {names[g]!r})" if named else "")

        where = "; ".join(f"{graph(g)}, atom {a} ({element})" for g, a, element in atoms)
        message = (
            f"atomic numbers {list(unknown)} are not among the model's species {list(species)} "
            f"({', '.join(_element(u) for u in unknown)} not in {', '.join(_element(int(s)) for s in species)}): "
            f"{where}{f'; and {more} more' if more else ''} (graph: its index in the batch; atom: its index within "
            "that graph)"
        )
        return cls(message, unknown, species, atoms, more)

    def with_names(self, names) -> UnknownSpeciesError:
        """The same error naming each graph by ``names`` (one per graph, e.g. ``batch.name``)."""
        return UnknownSpeciesError.build(self.unknown, self.species, self.atoms, self.more, names)


def check_species(
    z: Tensor,
    type_of: Tensor,
    species: Sequence[int],
    batch: Optional[Tensor] = None,
    limit: int = 10,
    names: Optional[Sequence[str]] = None,
) -> None:
    """Raise :class:`UnknownSpeciesError` (a ``ValueError``) if an atomic number is outside 1..118
    or has no entry (``-1``) in ``type_of``.

    The message names the unknown elements and, for the first ``limit`` offending atoms, the
    graph (its index in the batch, from ``batch``), the atom's index within that graph and its
    element, e.g. ``graph 1 of the batch, atom 3 (Br)``; with ``names`` (one per graph, e.g. a
    batch's ``name``: the file and frame it was read from) also the graph's name. Without
    ``batch`` all atoms are taken as one graph 0.
    """
    bad = (z < 1) | (z > 118) | (type_of[z.clamp(0, type_of.numel() - 1)] < 0)
    if not bool(bad.any()):
        return
    unknown = sorted({int(v) for v in z[bad].tolist()})
    if batch is None:
        batch = torch.zeros_like(z)
    batch = batch.to(z.device)
    num_graphs = int(batch.max()) + 1 if batch.numel() else 1
    # index of each atom within its graph: its position minus the position of its graph's first atom
    counts = torch.zeros(num_graphs, dtype=torch.long, device=z.device).index_add_(0, batch, torch.ones_like(batch))
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(z.numel(), device=z.device) - first[batch]
    where = bad.nonzero().flatten()
    atoms = [(int(batch[i]), int(local[i]), _element(int(z[i]))) for i in where[:limit].tolist()]
    raise UnknownSpeciesError.build(unknown, species, atoms, max(where.numel() - limit, 0), names)


def species_types(z: Tensor, type_of: Tensor, atomic_numbers: Tensor, batch: Optional[Tensor] = None) -> Tensor:
    """Type index of each atom, ``type_of[z]`` ``(N,)``, after :func:`check_species`: the one species
    lookup of eqgeo's networks (:class:`SpeciesEmbedding`) and the PyG baselines.

    Args:
        z: atomic numbers ``(N,)``.
        type_of: ``(119,)``, the type index of each atomic number (``-1``: unknown).
        atomic_numbers: the model's species ``(num_species,)``, named by the error.
        batch: the graph of each atom, for the error.

    Raises:
        UnknownSpeciesError: an atomic number outside ``atomic_numbers``, in eager mode. Compiled
            graphs skip the check, which reads tensors back to Python: ``atomic_numbers`` is
            read only when it runs, so that :func:`torch.compile` captures the lookup in the
            caller's graph (``fullgraph=True``).
    """
    if not torch.compiler.is_compiling() and z.numel():
        check_species(z, type_of, atomic_numbers.tolist(), batch)
    return type_of[z]


def energy_and_forces(
    energy_of: Callable[[Tensor, Optional[Tensor]], dict[str, Tensor]],
    pos: Tensor,
    *,
    training: bool,
    compute_forces: bool = True,
    volume: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    r"""Energies and their derivatives: the one forces-and-stress path of
    :class:`~eqgeo.models.InteratomicPotential` and the PyG baselines in ``mode="energy"``.

    .. math::

        \mathbf{F}_i = -\frac{\partial E}{\partial \mathbf{r}_i}, \qquad
        W = -\frac{\partial E}{\partial \epsilon}, \qquad
        \sigma = \frac{1}{V} \frac{\partial E}{\partial \epsilon},

    with :math:`E` the sum of the graphs' energies and :math:`\epsilon` a symmetric strain, zero,
    that ``energy_of`` applies to positions and cell (``x + x @ strain``, the strain of each
    atom's graph); :math:`\sigma` has ASE's sign (positive under tension).

    Args:
        energy_of: ``energy_of(pos, strain)``, the outputs with ``"energy"`` ``(G,)``; ``strain``
            is ``None`` without ``volume``, else the symmetric strain ``(G, 3, 3)``.
        pos: positions ``(N, 3)``; when derivatives are asked for and ``pos`` does not require
            grad, a detached copy that does is passed to ``energy_of``.
        training: build the derivatives with ``create_graph=True`` (when gradients are enabled),
            so that a loss on forces or stress back-propagates to the weights.
        compute_forces: add ``"forces"`` ``(N, 3)``.
        volume: the cell volumes ``(G,)`` of periodic graphs: add ``"virial"`` and ``"stress"``
            ``(G, 3, 3)``.

    Returns:
        ``energy_of``'s outputs and the derivatives asked for. Under :func:`torch.no_grad` the
        derivatives are still computed and every output is detached; under
        :func:`torch.inference_mode`, which has no autograd, asking for them raises
        ``RuntimeError``. A position or strain that the energy does not depend on gets a zero
        derivative.

    Example:
        >>> def energy_of(pos, strain):  # a spring of rest length 1 between two atoms
        ...     return {"energy": ((pos[1] - pos[0]).norm() - 1.0).square()[None]}
        >>> out = energy_and_forces(energy_of, torch.tensor([[0.0, 0, 0], [1.5, 0, 0]]), training=False)
        >>> out["forces"][:, 0]  # stretched by 0.5: the atoms are pulled together
        tensor([ 1., -1.])
    """
    compute_stress = volume is not None
    if (compute_forces or compute_stress) and torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{'forces and stress are' if compute_stress else 'forces are'} derivatives of the energy: run the "
            "model under torch.no_grad(), not torch.inference_mode() (or pass compute_forces=False)"
        )
    grad_was_enabled = torch.is_grad_enabled()
    create_graph = training and grad_was_enabled
    with torch.set_grad_enabled(grad_was_enabled or compute_forces or compute_stress):
        if (compute_forces or compute_stress) and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        strain = sym = None
        if compute_stress:
            strain = torch.zeros(volume.shape[0], 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
        out = energy_of(pos, sym)
        if compute_forces or compute_stress:
            wrt = [pos] + ([strain] if compute_stress else [])
            grads = torch.autograd.grad(
                out["energy"].sum(), wrt, create_graph=create_graph, retain_graph=grad_was_enabled, allow_unused=True
            )
            grads = [torch.zeros_like(t) if gr is None else gr.to(t.dtype) for gr, t in zip(grads, wrt)]
            if compute_forces:
                out["forces"] = -grads[0]
            if compute_stress:
                out["virial"] = -grads[1]
                out["stress"] = grads[1] / volume[:, None, None]
    if not grad_was_enabled:
        out = {k: v.detach() for k, v in out.items()}
    return out


@contextmanager
def naming_graphs(data):
    """Within it, an :class:`UnknownSpeciesError` names each graph by ``data.name`` (when the
    ``Data``/``Batch`` has names): for a model's forward, whose tensor-only parts check the species."""
    try:
        yield
    except UnknownSpeciesError as error:
        names = getattr(data, K.NAME, None)
        if names is None:
            raise
        raise error.with_names(names) from None


def _gate_for(irreps_target: Irreps) -> tuple[Irreps, Gate]:
    """The convolution output ``scalars + gates + gated`` that a :class:`Gate` turns into ``irreps_target``."""
    scalars = Irreps([(m, ir) for m, ir in irreps_target if ir.l == 0])
    gated = Irreps([(m, ir) for m, ir in irreps_target if ir.l > 0])
    gates = Irreps([(gated.num_irreps, "0e")]) if gated.num_irreps else Irreps("")
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gate = Gate(scalars, acts, gates, torch.sigmoid, gated)
    return scalars + gates + gated, gate


class InteractionStack(torch.nn.Module):
    r"""``num_layers`` interaction layers, each a convolution (or attention) followed by a gate.

    .. math::

        h^{(0)}_i = \mathrm{embedding}_i, \qquad
        h^{(t+1)}_i = P^{(t)}\Big(\mathrm{Gate}\big(\mathrm{Layer}^{(t)}(h^{(t)}, \mathbf{r})_i\big), Z_i\Big) \;[+\, h^{(t)}_i],

    where the layer is :class:`~eqgeo.nn.EquivariantConv` or
    :class:`~eqgeo.nn.EquivariantTransformerConv` and the residual is added when the irreps of
    ``h`` do not change. The irreps of each layer are the hidden irreps that its input can reach
    through the edge harmonics (the first layer, on scalars only, reaches ``0e, 1o, 2e, ...``),
    as in NequIP. The harmonics and radial embedding are computed once and shared by all layers.
    :math:`P^{(t)}` is the identity for ``correlation=1``, else a :class:`~eqgeo.nn.ManyBodyProduct`
    of that degree whose weights depend on the atom's species type :math:`Z_i` (``num_types`` of
    them; ``forward`` then takes ``node_types``).
    """

    def __init__(
        self,
        irreps_in,
        irreps_hidden,
        lmax: int,
        num_layers: int,
        *,
        layer: str = "conv",
        cutoff: float = 5.0,
        num_radial: int = 8,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        avg_num_neighbors: float = 10.0,
        heads: int = 4,
        key_dim: int = 8,
        basis: str = "bessel",
        p: float = 6,
        residual: bool = True,
        correlation: int = 1,
        num_types: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(correlation, int) or correlation < 1:
            raise ValueError(f"correlation must be an integer >= 1, got {correlation!r}")
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.irreps_in = Irreps(irreps_in)
        self.irreps_hidden = Irreps(irreps_hidden)
        self.irreps_sh = Irreps.spherical_harmonics(lmax)
        self.layer = layer
        self.cutoff = float(cutoff)
        self.sh = SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial_embedding = RadialEmbedding(num_radial, cutoff, basis=basis, p=p)
        self.convs = torch.nn.ModuleList()
        self.gates = torch.nn.ModuleList()
        self.num_types = int(num_types)
        # registered only when used: a correlation-1 stack keeps the state_dict of earlier versions
        self.products = torch.nn.ModuleList() if correlation > 1 else None
        self._residual = []
        irreps = self.irreps_in
        for t in range(num_layers):
            reachable = {ir for _, a in irreps for _, b in self.irreps_sh for ir in a * b}
            target = Irreps([(m, ir) for m, ir in self.irreps_hidden if ir in reachable])
            conv_out, gate = _gate_for(target)
            common = dict(num_radial=num_radial, cutoff=cutoff, radial_hidden=radial_hidden, radial_layers=radial_layers)
            if layer == "conv":
                conv = EquivariantConv(
                    irreps, conv_out, self.irreps_sh, **common, avg_num_neighbors=avg_num_neighbors, basis=basis, p=p
                )
            else:
                conv = EquivariantTransformerConv(
                    irreps, conv_out, self.irreps_sh, heads=heads, key_dim=key_dim, **common, basis=basis, p=p
                )
            self.convs.append(conv)
            self.gates.append(gate)
            if self.products is not None:
                self.products.append(ManyBodyProduct(gate.irreps_out, correlation, self.num_types))
            self._residual.append(bool(residual) and gate.irreps_out == irreps)
            irreps = gate.irreps_out
        self.irreps_out = irreps

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()
        for product in self.products or ():
            product.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_vec: Tensor, node_types: Optional[Tensor] = None) -> Tensor:
        """Node features after every layer; ``node_types`` ``(N,)``: each node's species type in
        ``[0, num_types)``, read by the many-body products (``correlation > 1``) only."""
        edge_sh = self.sh(edge_vec)
        edge_radial, edge_envelope = self.radial_embedding.embed(edge_lengths(edge_vec))
        for t, (conv, gate, residual) in enumerate(zip(self.convs, self.gates, self._residual)):
            y = gate(conv(x, edge_index, edge_vec, edge_sh=edge_sh, edge_radial=edge_radial, edge_envelope=edge_envelope))
            if self.products is not None:
                y = self.products[t](y, node_types)
            x = x + y if residual else y
        return x

    # ------------------------------------------------------------------------------------------
    # :meth:`forward` in parts, for callers that evaluate a layer on some of the nodes and edges
    # (e.g. :class:`~eqgeo.models.docking.FixedPocketForward`, which keeps what a fixed pocket
    # contributes). For a stack of :class:`~eqgeo.nn.EquivariantConv` layers, ``layer_update(t, x,
    # aggregate(layer_messages(t, x[src], edge_sh, layer_edge_weight(t, edge_radial, edge_envelope))))``
    # is layer ``t`` of :meth:`forward` (the same operations as ``EquivariantConv.forward``).
    def splittable(self) -> bool:
        """Whether every layer is an :class:`~eqgeo.nn.EquivariantConv` (whose forward the parts
        below reproduce; attention layers normalise over each node's edges and are not split) and no
        many-body product follows (the parts below do not apply one)."""
        return self.products is None and all(type(conv) is EquivariantConv for conv in self.convs)

    def edge_radial(self, edge_vec: Tensor) -> tuple[Tensor, Tensor]:
        """``(edge_radial, edge_envelope)`` of edge vectors, as :meth:`forward` computes them (they
        depend on the length only: an edge and its reverse have the same)."""
        return self.radial_embedding.embed(edge_lengths(edge_vec))

    def layer_edge_weight(self, t: int, edge_radial: Tensor, edge_envelope: Tensor) -> Tensor:
        """Per-edge tensor-product weights of layer ``t`` (they depend on the edge length only)."""
        return self.convs[t].radial_mlp(edge_radial) * edge_envelope[:, None]

    def layer_messages(self, t: int, x_src: Tensor, edge_sh: Tensor, edge_weight: Tensor) -> Tensor:
        """Messages of layer ``t`` along edges, from the features ``x_src`` of their source nodes."""
        return self.convs[t].tp(x_src, edge_sh, edge_weight)

    def layer_update(self, t: int, x: Tensor, aggregated: Tensor) -> Tensor:
        """Layer ``t``'s new features of nodes with features ``x`` and summed incoming messages ``aggregated``."""
        conv = self.convs[t]
        out = conv.linear(aggregated * conv.neighbor_count.rsqrt().to(aggregated.dtype))
        if conv.self_connection is not None:
            out = out + conv.self_connection(x)
        y = self.gates[t](out)
        return x + y if self._residual[t] else y


class GraphInputs:
    """Tensors a model reads from a PyG ``Data``/``Batch`` (see :func:`graph_inputs`)."""

    __slots__ = ("z", "pos", "batch", "num_graphs", "edge_index", "shifts", "cell")

    def __init__(self, z, pos, batch, num_graphs, edge_index, shifts, cell) -> None:
        self.z, self.pos, self.batch, self.num_graphs = z, pos, batch, num_graphs
        self.edge_index, self.shifts, self.cell = edge_index, shifts, cell


def graph_inputs(
    data, cutoff: float, max_num_neighbors: Optional[int] = None, dtype: Optional[torch.dtype] = None
) -> GraphInputs:
    """Atomic numbers, positions, batch vector and edges of a ``Data``/``Batch``.

    ``edge_index`` (and ``shifts`` for periodic graphs) are taken from ``data`` when present,
    otherwise built at ``cutoff`` with :func:`eqgeo.data.radius_graph`, or with
    :func:`eqgeo.data.periodic_radius_graph` when ``data`` has a ``cell`` with any periodic
    direction. Edges longer than ``cutoff`` contribute nothing (the envelope is zero there). Positions and cell are cast to ``dtype``
    (the model's), e.g. float64 positions from ASE into a float32 model.
    """
    for key in (K.ATOMIC_NUMBER, K.POSITION):
        if getattr(data, key, None) is None:
            raise ValueError(f"the model needs data.{key}, which this {type(data).__name__} does not have")
    z, pos = data[K.ATOMIC_NUMBER], data[K.POSITION]
    if dtype is not None and pos.dtype != dtype:
        pos = pos.to(dtype)
    if z.dim() != 1 or pos.shape != (z.shape[0], 3):
        raise ValueError(f"expected z of shape (N,) and pos of shape (N, 3), got {tuple(z.shape)} and {tuple(pos.shape)}")
    batch = getattr(data, K.BATCH, None)
    if batch is None:
        batch = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        num_graphs = 1
    else:
        num_graphs = int(data.num_graphs) if getattr(data, "num_graphs", None) is not None else int(batch.max()) + 1
    cell = getattr(data, K.CELL, None)
    if cell is not None and dtype is not None:
        cell = cell.to(dtype)
    pbc = getattr(data, K.PBC, None)
    periodic = cell is not None and (pbc is None or bool(torch.as_tensor(pbc).any()))
    edge_index = getattr(data, K.EDGE_INDEX, None)
    shifts = getattr(data, K.SHIFTS, None)
    if edge_index is None:
        if periodic:
            edge_index, shifts = periodic_radius_graph(
                pos.detach(), cutoff, cell.detach(), pbc, batch, max_num_neighbors=max_num_neighbors
            )
        else:
            edge_index = radius_graph(pos.detach(), cutoff, batch, max_num_neighbors=max_num_neighbors)
            shifts = None
    elif periodic and shifts is None:
        raise ValueError("data has a periodic cell and an edge_index but no shifts; drop edge_index to build the graph")
    if not periodic:
        cell, shifts = None, None
    return GraphInputs(z, pos, batch, num_graphs, edge_index, shifts, cell)


def scalar_head(irreps_in: Irreps, hidden: int, num_out: int) -> torch.nn.Sequential:
    """Invariant readout: ``Linear(irreps_in -> hidden x 0e)``, SiLU, ``Linear(-> num_out x 0e)``."""
    from ..nn.gate import Normalize2Mom

    return torch.nn.Sequential(
        Linear(irreps_in, Irreps([(hidden, "0e")])),
        Normalize2Mom(torch.nn.functional.silu),
        Linear(Irreps([(hidden, "0e")]), Irreps([(num_out, "0e")])),
    )


def scatter_sum(src: Tensor, index: Tensor, num: int) -> Tensor:
    """Sum of the rows of ``src`` per ``index`` (``num`` groups); works under ``torch.compile``."""
    out = src.new_zeros((num,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)
