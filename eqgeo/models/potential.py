"""Interatomic potential: NequIP-style energies, forces and stress from a PyG ``Data``/``Batch``."""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from ..data.neighbors import edge_vectors
from ..nn.buffers import keep_float64
from ._common import SpeciesEmbedding, energy_and_forces, graph_inputs, naming_graphs, scalar_head, scatter_sum
from .architecture import Architecture

__all__ = ["InteratomicPotential"]


class InteratomicPotential(torch.nn.Module):
    r"""An E(3)-equivariant interatomic potential (NequIP, https://arxiv.org/abs/2101.03164).

    .. math::

        E = \sum_i \big( s_{Z_i} (\varepsilon_i + b) + \mu_{Z_i} \big), \qquad
        \mathbf{F}_i = -\frac{\partial E}{\partial \mathbf{r}_i}, \qquad
        \sigma = \frac{1}{V} \frac{\partial E}{\partial \epsilon},

    where :math:`\varepsilon_i` is an invariant readout of atom ``i``'s features after
    ``num_layers`` interaction layers (:class:`~eqgeo.nn.EquivariantConv` or
    :class:`~eqgeo.nn.EquivariantTransformerConv`, each followed by a gate) on a species
    embedding, and :math:`s_Z`, :math:`\mu_Z` are per-species scales and shifts taken from the
    training data (:meth:`from_data` / :meth:`set_statistics`), and :math:`b` a learned offset per
    atom (``energy_bias``, zero at the start). Forces are the negative gradient of
    the energy (through autograd, with ``create_graph=True`` while training so the force loss can
    be back-propagated); the stress of a periodic cell is the derivative with respect to a
    symmetric strain :math:`\epsilon` applied to positions and cell, divided by the volume
    (ASE's sign convention: positive under tension).

    Units are those of the data (eV, Å for eqgeo's datasets). The shifts :math:`\mu_Z` are kept
    in float64 whatever the model's dtype, and the total energy is returned in float64, so a
    float32 model does not round a total energy of -10^5 eV to 10 meV.

    Args:
        species: atomic numbers the model knows (e.g. ``[1, 6, 8]``); others raise.
        **architecture: the keyword arguments of :class:`~eqgeo.models.Architecture`
            (``channels``, ``lmax``, ``num_layers``, ``parity``, ``layer``, ``cutoff``, the radial
            MLPs, ``avg_num_neighbors``, attention, ``readout_hidden``, ``max_num_neighbors``)
            with its defaults; any other keyword raises ``TypeError``.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> model = InteratomicPotential([1, 8], channels=8, lmax=1, num_layers=2)
        >>> water = Data(z=torch.tensor([8, 1, 1]), pos=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
        >>> out = model(water)
        >>> out["energy"].shape, out["forces"].shape
        (torch.Size([1]), torch.Size([3, 3]))
    """

    #: The architecture when an argument is not given.
    default_architecture: ClassVar[Architecture] = Architecture()

    def __init__(self, species: Sequence[int], **architecture) -> None:
        super().__init__()
        arch = Architecture.from_arguments(type(self).__name__, architecture, self.default_architecture)
        self.architecture = arch
        self.cutoff = float(arch.cutoff)
        self.max_num_neighbors = arch.max_num_neighbors
        self.embedding = SpeciesEmbedding(species, arch.channels)
        self.interactions = arch.interaction_stack(self.embedding.irreps_out, self.embedding.num_types)
        self.readout = scalar_head(self.interactions.irreps_out, arch.readout_hidden, 1)
        n = len(self.embedding.species)
        self.register_buffer("energy_shift", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones(n))
        # b: the readout's mean output at the start is not zero (in 3 seeds of the 3BPA lmax-2 network, -0.02, 0.13 and
        # -0.53 energy scales per atom), an offset the forces do not see. Only the energy loss removes it, and through
        # the network's weights that took most of a 20-minute budget (experiments/md/results/budget_3bpa/*/metrics.json:
        # validation energy MAE equal to its RMSE, one constant offset, until the second stage). b moves the energy and
        # no force, and Adam's per-weight step size moves it at the full learning rate whatever the energy weight. One
        # number for all species: with one composition (rMD17, 3BPA) per-species offsets would not be determined.
        self.energy_bias = torch.nn.Parameter(torch.zeros(()))
        self.register_load_state_dict_pre_hook(_upgrade_on_load)

    #: Weights added since the first release: a state dict saved before may lack them (:meth:`upgrade_state_dict`).
    added_weights: ClassVar[tuple[str, ...]] = ("energy_bias",)

    @classmethod
    def upgrade_state_dict(cls, state: dict, prefix: str = "") -> None:
        """Adds, in place, the :attr:`added_weights` a state dict saved before they existed lacks, with the values
        that keep its function (zero, in the dtype of the saved readout). ``load_state_dict`` and eqgeo's checkpoint
        reader call it."""
        dtype = next((v.dtype for k, v in state.items() if k.startswith(prefix + "readout.") and v.is_floating_point()),
                     torch.get_default_dtype())
        for name in cls.added_weights:
            state.setdefault(prefix + name, torch.zeros((), dtype=dtype))

    # ------------------------------------------------------------------ statistics
    def set_statistics(self, energy_shift: Tensor, energy_scale) -> None:
        """Per-species energy shifts (``(num_species,)``, eV) and scales (a number or ``(num_species,)``)."""
        n = len(self.embedding.species)
        shift = torch.as_tensor(energy_shift, dtype=torch.float64).reshape(-1)
        scale = torch.as_tensor(energy_scale, dtype=self.energy_scale.dtype).reshape(-1).expand(n)
        if shift.numel() != n:
            raise ValueError(f"energy_shift needs one value per species {self.embedding.species}, got {shift.numel()}")
        self.energy_shift.copy_(shift)
        self.energy_scale.copy_(scale)

    @classmethod
    def from_data(cls, dataset, species: Optional[Sequence[int]] = None, **kwargs) -> "InteratomicPotential":
        """A model whose ``avg_num_neighbors``, energy shifts and scales come from ``dataset``.

        Shifts: from the isolated-atom energies of the dataset (its ``atomic_energies``, as
        :class:`~eqgeo.datasets.MD17` reads them from an ``isolated_atoms`` file), else fitted to
        the energies; scale: the RMS of the force components (or, without forces, of the per-atom
        residual energies); species: those present when not given. See
        :func:`eqgeo.models.dataset_statistics`.
        """
        from .statistics import dataset_statistics

        cutoff = kwargs.get("cutoff", cls.default_architecture.cutoff)
        stats = dataset_statistics(dataset, cutoff=cutoff, species=species,
                                   atomic_energies=getattr(dataset, "atomic_energies", None))
        if "energy_shift" not in stats:
            raise ValueError(
                f"{cls.__name__}.from_data needs graphs with data.energy to fit the per-species energy shifts"
            )
        kwargs.setdefault("avg_num_neighbors", stats["avg_num_neighbors"])
        model = cls(stats["species"], **kwargs)
        model.set_statistics(stats["energy_shift"], stats["energy_scale"])
        return model

    def _apply(self, fn, *args, **kwargs):
        return keep_float64(self, ["energy_shift"], lambda: super(InteratomicPotential, self)._apply(fn, *args, **kwargs))

    # ------------------------------------------------------------------ forward
    def atomic_energies(
        self,
        z: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        batch: Tensor,
        shifts: Optional[Tensor] = None,
        cell: Optional[Tensor] = None,
    ) -> Tensor:
        """Per-atom energies ``(N,)`` in float64 (scale and shift applied); plain tensors in and out.

        This is the part that :func:`torch.compile` captures as one graph (``fullgraph=True``).
        """
        types = self.embedding.types(z, batch)
        x = self.embedding.embedding(types)
        edge_vec = edge_vectors(pos, edge_index, shifts, cell, batch)
        x = self.interactions(x, edge_index, edge_vec, types)
        e = (self.readout(x).squeeze(-1) + self.energy_bias.to(x.dtype)) * self.energy_scale.to(x.dtype)[types]
        return e.to(torch.float64) + self.energy_shift[types]

    def forward(self, data, compute_forces: bool = True, compute_stress: Optional[bool] = None) -> dict[str, Tensor]:
        """Energies (float64, per graph), forces and, for periodic cells, stress and virial.

        Args:
            data: ``Data``/``Batch`` with ``z``, ``pos`` and optionally ``batch``, ``edge_index``
                (and ``shifts``), ``cell``/``pbc``; the graph is built at ``cutoff`` when absent.
            compute_forces: return ``forces = -dE/dpos``.
            compute_stress: return ``stress`` (eV/Å^3) and ``virial`` (eV); default: when the
                data has a periodic cell and forces are computed.

        Returns:
            ``{"energy": (G,), "atomic_energy": (N,), "forces": (N, 3), "stress": (G, 3, 3),
            "virial": (G, 3, 3)}`` (the keys that apply).
        """
        g = graph_inputs(data, self.cutoff, self.max_num_neighbors, dtype=self.energy_scale.dtype)
        periodic = g.cell is not None
        if compute_stress is None:
            compute_stress = periodic and compute_forces
        if compute_stress and not periodic:
            raise ValueError("compute_stress=True needs data with a periodic cell (data.cell, data.pbc)")
        cell = g.cell.to(g.pos.dtype).reshape(-1, 3, 3).expand(g.num_graphs, 3, 3) if periodic else None

        def energy_of(pos: Tensor, strain: Optional[Tensor]) -> dict[str, Tensor]:
            x_pos, x_cell = pos, cell
            if strain is not None:
                x_pos = pos + torch.einsum("ni,nij->nj", pos, strain[g.batch])
                x_cell = cell + cell @ strain
            with naming_graphs(data):
                atomic = self.atomic_energies(g.z, x_pos, g.edge_index, g.batch, g.shifts, x_cell)
            return {"energy": scatter_sum(atomic, g.batch, g.num_graphs), "atomic_energy": atomic}

        volume = torch.linalg.det(cell).abs() if compute_stress else None
        return energy_and_forces(energy_of, g.pos, training=self.training, compute_forces=compute_forces, volume=volume)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}(species={self.embedding.species}, {self.interactions.irreps_out}, "
            f"{len(self.interactions.convs)} {self.interactions.layer} layers, cutoff={self.cutoff:g}, {n} weights)"
        )


def _upgrade_on_load(module: InteratomicPotential, state: dict, prefix: str, *args) -> None:
    module.upgrade_state_dict(state, prefix)
