"""Molecular property model: graph scalars, the dipole moment and per-atom vectors."""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence, Union

import torch
from torch import Tensor

from ..data import keys as K
from ..data.neighbors import edge_vectors
from ..nn import Linear
from ..o3 import Irreps
from ..nn.buffers import keep_float64
from ._common import SpeciesEmbedding, graph_inputs, naming_graphs, scalar_head, scatter_sum
from .architecture import Architecture

__all__ = ["PropertyModel", "target_statistics", "DEBYE_PER_E_ANGSTROM"]

#: 1 e·Å in debye (CODATA 2018: e·Å = 1.602176634e-29 C·m, 1 D = 3.33564095e-30 C·m).
DEBYE_PER_E_ANGSTROM = 4.803204712570264
_REDUCES = ("sum", "mean")


def target_statistics(targets: Tensor, num_atoms: Tensor, reduces: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Means and standard deviations of training targets ``(G, T)`` for :meth:`PropertyModel.set_statistics`.

    ``"mean"`` targets: mean and std over graphs. ``"sum"`` targets: the mean per atom and the
    std of the per-atom value, so ``y ~ n (mu + sigma o)`` with ``o`` of order one per atom. A
    zero std (a constant target) becomes 1.
    """
    y = torch.as_tensor(targets, dtype=torch.float64).reshape(len(num_atoms), -1)
    n = torch.as_tensor(num_atoms, dtype=torch.float64).reshape(-1, 1)
    per_atom = torch.tensor([r == "sum" for r in reduces], dtype=torch.bool)
    values = torch.where(per_atom, y / n, y)
    std = values.std(0) if len(y) > 1 else torch.ones(y.shape[1], dtype=torch.float64)
    return values.mean(0), torch.where(std > 0, std, torch.ones_like(std))


def set_target_statistics(model: torch.nn.Module, mean, std) -> None:
    """Checks and copies target means (float64) and standard deviations into ``model.target_mean`` /
    ``model.target_std`` (``model.num_targets`` of each); shared by the property networks."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    std = torch.as_tensor(std, dtype=model.target_std.dtype).reshape(-1)
    if mean.numel() != model.num_targets or std.numel() != model.num_targets:
        raise ValueError(f"set_statistics needs {model.num_targets} means and stds, got {mean.numel()}, {std.numel()}")
    if not bool((std > 0).all()):
        raise ValueError(f"target standard deviations must be > 0, got {std.tolist()}")
    model.target_mean.copy_(mean)
    model.target_std.copy_(std)


class PropertyModel(torch.nn.Module):
    r"""Equivariant network for molecular properties (QM9-style) on either layer type.

    Readouts from the node features :math:`h_i` after the interaction layers:

    - **graph scalars** ``y`` (``num_targets``): an invariant head per atom, summed
      (``reduce="sum"``, extensive targets such as energies) or averaged (``"mean"``) over
      the graph, then de-normalised: :math:`y = \sigma \cdot \mathrm{reduce}_i(o_i) + n\,\mu`
      for ``"sum"`` (``μ`` per atom) and :math:`y = \sigma \cdot \mathrm{mean}_i(o_i) + \mu` for
      ``"mean"``, with the target means and standard deviations from the training data stored in
      the ``state_dict`` (:meth:`set_statistics`, :meth:`fit_statistics`);
    - the **dipole moment** (``dipole=True``), from predicted partial charges :math:`q_i`
      (``0e``) and atomic dipoles :math:`\boldsymbol\mu_i` (``1o``), not a scalar guess:

      .. math::

          \boldsymbol\mu = \sum_i q_i (\mathbf{r}_i - \bar{\mathbf{r}}) + \boldsymbol\mu_i, \qquad
          q_i = \tilde q_i - \frac{1}{n} \sum_j \tilde q_j + \frac{Q}{n},

      with the charges shifted so that they add up to the molecule's total charge :math:`Q`
      (``data.charge``, one per graph, when present, else the sum of ``data.formal_charge``, else 0), which makes the dipole independent of the
      origin for neutral molecules; :math:`\bar{\mathbf{r}}` is the centroid. Returned as a
      vector ``dipole`` ``(G, 3)`` and its norm ``mu`` ``(G,)``, in debye for positions in Å
      (QM9's ``mu``), and the charges as ``charges`` ``(N,)`` in units of e;
    - **per-atom vectors** (``num_vectors > 0``): ``vectors`` ``(N, num_vectors, 3)`` (``1o``).

    Args:
        species: atomic numbers the model knows; others raise.
        num_targets: number of graph scalars ``y``.
        reduce: ``"sum"`` or ``"mean"``, for all targets or one per target.
        dipole: predict the dipole moment (and charges).
        num_vectors: number of per-atom vectors.
        **architecture: the keyword arguments of :class:`~eqgeo.models.Architecture` with its
            defaults (as :class:`~eqgeo.models.InteratomicPotential`); any other keyword raises
            ``TypeError``.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> model = PropertyModel([1, 6, 8], num_targets=2, dipole=True, channels=8, lmax=1, num_layers=2)
        >>> mol = Data(z=torch.tensor([8, 1, 1]), pos=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
        >>> out = model(mol)
        >>> out["y"].shape, out["dipole"].shape, out["mu"].shape
        (torch.Size([1, 2]), torch.Size([1, 3]), torch.Size([1]))
    """

    #: The architecture when an argument is not given.
    default_architecture: ClassVar[Architecture] = Architecture()

    def __init__(
        self,
        species: Sequence[int],
        num_targets: int = 1,
        reduce: Union[str, Sequence[str]] = "sum",
        *,
        dipole: bool = False,
        num_vectors: int = 0,
        **architecture,
    ) -> None:
        super().__init__()
        arch = Architecture.from_arguments(type(self).__name__, architecture, self.default_architecture)
        if num_targets < 0 or num_vectors < 0 or (num_targets == 0 and not dipole and num_vectors == 0):
            raise ValueError(
                f"PropertyModel needs something to predict: num_targets={num_targets}, dipole={dipole}, "
                f"num_vectors={num_vectors}"
            )
        reduces = [reduce] * num_targets if isinstance(reduce, str) else list(reduce)
        if len(reduces) != num_targets or any(r not in _REDUCES for r in reduces):
            raise ValueError(f"reduce must be one of {_REDUCES} or one per target ({num_targets}), got {reduce!r}")
        self.architecture = arch
        self.num_targets, self.reduces = int(num_targets), reduces
        self.dipole, self.num_vectors = bool(dipole), int(num_vectors)
        self.cutoff, self.max_num_neighbors = float(arch.cutoff), arch.max_num_neighbors
        self.embedding = SpeciesEmbedding(species, arch.channels)
        self.interactions = arch.interaction_stack(self.embedding.irreps_out, self.embedding.num_types)
        irreps = self.interactions.irreps_out
        need = (["1o"] if (dipole or num_vectors) else [])
        missing = [ir for ir in need if ir not in irreps]
        if missing:
            raise ValueError(f"PropertyModel: the hidden irreps {irreps} have no {missing[0]} for the vector readouts")
        self.scalars = scalar_head(irreps, arch.readout_hidden, num_targets + int(dipole)) if (num_targets or dipole) else None
        self.atomic_dipoles = Linear(irreps, "1x1o") if dipole else None
        self.vectors = Linear(irreps, Irreps([(num_vectors, "1o")])) if num_vectors else None
        self.register_buffer("target_mean", torch.zeros(num_targets, dtype=torch.float64))
        self.register_buffer("target_std", torch.ones(num_targets))
        self.register_buffer("sum_mask", torch.tensor([r == "sum" for r in reduces], dtype=torch.bool), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        return keep_float64(self, ["target_mean"], lambda: super(PropertyModel, self)._apply(fn, *args, **kwargs))

    def set_statistics(self, mean, std) -> None:
        """Target means (per atom for ``"sum"`` targets) and standard deviations, ``(num_targets,)``."""
        set_target_statistics(self, mean, std)

    def fit_statistics(self, targets: Tensor, num_atoms: Tensor) -> None:
        """Set the statistics from training targets ``(G, num_targets)`` and atom counts ``(G,)``
        (see :func:`target_statistics`)."""
        self.set_statistics(*target_statistics(targets, num_atoms, self.reduces))

    def predict(
        self,
        z: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        batch: Tensor,
        num_graphs: int,
        charge: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        """The readouts from plain tensors (the part :func:`torch.compile` captures as one graph)."""
        types = self.embedding.types(z, batch)
        h = self.embedding.embedding(types)
        h = self.interactions(h, edge_index, edge_vectors(pos, edge_index), types)
        out: dict[str, Tensor] = {}
        ones = torch.ones_like(batch, dtype=h.dtype)
        atoms = scatter_sum(ones, batch, num_graphs)
        count = atoms.clamp(min=1)  # a divisor; an empty graph gets zeros
        s = self.scalars(h) if self.scalars is not None else None
        if self.num_targets:
            o = s[:, : self.num_targets] * self.target_std.to(h.dtype)
            total = scatter_sum(o, batch, num_graphs)
            mask = self.sum_mask
            y = torch.where(mask, total, total / count[:, None]).to(torch.float64)
            out["y"] = y + self.target_mean * torch.where(mask, atoms[:, None].to(torch.float64), torch.ones_like(y))
        if self.dipole:
            q = s[:, self.num_targets]
            total_q = torch.zeros(num_graphs, dtype=h.dtype, device=h.device) if charge is None else charge.to(h.dtype)
            q = q + ((total_q - scatter_sum(q, batch, num_graphs)) / count)[batch]
            centroid = scatter_sum(pos, batch, num_graphs) / count[:, None]
            mu = scatter_sum(q[:, None] * (pos - centroid[batch]) + self.atomic_dipoles(h), batch, num_graphs)
            mu = mu * DEBYE_PER_E_ANGSTROM
            out["charges"] = q
            out["dipole"] = mu
            out["mu"] = mu.square().sum(-1).clamp(min=torch.finfo(mu.dtype).tiny).sqrt()
        if self.vectors is not None:
            out["vectors"] = self.vectors(h).reshape(-1, self.num_vectors, 3)
        return out

    def forward(self, data) -> dict[str, Tensor]:
        """Readouts of a ``Data``/``Batch``: ``y`` ``(G, num_targets)`` (float64), ``dipole``
        ``(G, 3)`` and ``mu`` ``(G,)`` (debye), ``charges`` ``(N,)``, ``vectors`` ``(N, k, 3)``."""
        g = graph_inputs(data, self.cutoff, self.max_num_neighbors, dtype=self.target_std.dtype)
        if g.cell is not None:
            raise ValueError("PropertyModel is for molecules; the data has a periodic cell")
        charge = getattr(data, K.CHARGE, None)
        if charge is not None:
            charge = torch.as_tensor(charge, device=g.pos.device)
            if charge.numel() != g.num_graphs:
                raise ValueError(
                    f"data.{K.CHARGE} must hold one total charge per graph ({g.num_graphs}), got shape "
                    f"{tuple(charge.shape)}"
                )
            charge = charge.reshape(-1)
        elif getattr(data, K.FORMAL_CHARGE, None) is not None:
            charge = scatter_sum(data[K.FORMAL_CHARGE].to(g.pos.dtype), g.batch, g.num_graphs)
        with naming_graphs(data):
            return self.predict(g.z, g.pos, g.edge_index, g.batch, g.num_graphs, charge)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        heads = [f"{self.num_targets} targets ({'/'.join(sorted(set(self.reduces)))})"] if self.num_targets else []
        heads += ["dipole"] if self.dipole else []
        heads += [f"{self.num_vectors} vectors"] if self.num_vectors else []
        return (
            f"{type(self).__name__}(species={self.embedding.species}, {self.interactions.irreps_out}, "
            f"{len(self.interactions.convs)} {self.interactions.layer} layers, {', '.join(heads)}, {n} weights)"
        )
