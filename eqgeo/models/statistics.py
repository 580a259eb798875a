"""Normalisation statistics of a training set: neighbours per atom, per-species energy shifts, scales."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import torch

from ..data import keys as K
from ..data.neighbors import periodic_radius_graph, radius_graph

__all__ = ["dataset_statistics"]


def dataset_statistics(
    dataset: Iterable,
    cutoff: float,
    species: Optional[Sequence[int]] = None,
    energy_key: Optional[str] = K.ENERGY,
    forces_key: str = K.FORCES,
    atomic_energies: Optional[Mapping[int, float]] = None,
) -> dict:
    r"""Statistics that models keep as constants or buffers, from the graphs of a training set.

    Args:
        dataset: the training graphs.
        cutoff: neighbour-list cutoff of ``avg_num_neighbors`` (graphs without ``edge_index``).
        species: the atomic numbers the model knows (default: those in ``dataset``).
        energy_key, forces_key: the fields of the energies and forces (``energy_key=None``: none).
        atomic_energies: the energies (eV) of the isolated atoms, by atomic number (an
            ``isolated_atoms.xyz`` file: :func:`eqgeo.datasets.read_isolated_atoms`), if the data gives them.

    Returns:
        ``{"species": [...], "avg_num_neighbors": float, "num_graphs": int, "num_atoms": int}``
        plus, when the graphs have ``energy_key``: ``"energy_shift"`` (float64 ``(num_species,)``, eV
        per atom of each species), ``"energy_reference"`` (how it was chosen, below) and
        ``"energy_scale"`` (float: the RMS of the force components when the graphs have
        ``forces``, otherwise the RMS of the per-atom residual energy).

        The shift of species :math:`Z` is, in this order of preference:

        - ``"isolated atoms"``: :math:`E_0(Z) + \bar\varepsilon`, the isolated-atom energy plus the
          mean interaction energy per atom of the training set, :math:`\bar\varepsilon = \sum_g (E_g -
          \sum_{i \in g} E_0(Z_i)) / \sum_g N_g` (as MACE's E0s and scale-shift block);
        - ``"least squares"``: the least-squares fit of the energies on the species counts, when the
          training compositions determine it (the counts have full column rank);
        - ``"mean per atom"``: the mean energy per atom, the same for every species, when they do not
          (e.g. one molecule in every frame, where a per-species fit is any of infinitely many).

    Raises:
        ValueError: an empty dataset, a graph with an atomic number outside ``species`` (naming the
            graph), or a species without an isolated-atom energy.
    """
    graphs = list(dataset)
    if not graphs:
        raise ValueError("dataset_statistics: the dataset is empty")
    zs = [g[K.ATOMIC_NUMBER].long() for g in graphs]
    present = sorted({int(z) for zz in zs for z in zz.unique().tolist()})
    species = present if species is None else [int(z) for z in species]
    index = {z: i for i, z in enumerate(species)}
    counts = torch.zeros(len(graphs), len(species), dtype=torch.float64)
    neighbours, atoms = 0, 0
    for n, (g, z) in enumerate(zip(graphs, zs)):
        for value, c in zip(*z.unique(return_counts=True)):
            if int(value) not in index:
                name = getattr(g, K.NAME, None) or f"graph {n}"
                raise ValueError(f"dataset_statistics: {name} has atomic number {int(value)}, not in species {species}")
            counts[n, index[int(value)]] = float(c)
        edge_index = getattr(g, K.EDGE_INDEX, None)
        if edge_index is None:
            cell = getattr(g, K.CELL, None)
            if cell is not None:
                edge_index, _ = periodic_radius_graph(g[K.POSITION], cutoff, cell, getattr(g, K.PBC, None))
            else:
                edge_index = radius_graph(g[K.POSITION], cutoff)
        neighbours += edge_index.shape[1]
        atoms += z.numel()
    stats = {
        "species": species,
        "avg_num_neighbors": neighbours / max(atoms, 1),
        "num_graphs": len(graphs),
        "num_atoms": atoms,
    }
    if energy_key is not None and all(getattr(g, energy_key, None) is not None for g in graphs):
        energy = torch.stack([torch.as_tensor(g[energy_key], dtype=torch.float64).reshape(()) for g in graphs])
        stats["energy_shift"], stats["energy_reference"] = _energy_shift(counts, energy, species, atomic_energies)
        shift = stats["energy_shift"]
        if all(getattr(g, forces_key, None) is not None for g in graphs):
            forces = torch.cat([g[forces_key].to(torch.float64).reshape(-1) for g in graphs])
            scale = forces.square().mean().sqrt().item()
        else:
            residual = (energy - counts @ shift) / counts.sum(1)
            scale = residual.square().mean().sqrt().item()
        # a scale at round-off level (energies exactly linear in the counts, no forces) is no scale
        typical = energy.abs().max().item() / max(counts.sum(1).max().item(), 1.0)
        stats["energy_scale"] = scale if scale > 1e-8 * max(typical, 1.0) else 1.0
    return stats


def _energy_shift(counts: torch.Tensor, energy: torch.Tensor, species: Sequence[int],
                  atomic_energies: Optional[Mapping[int, float]]) -> tuple[torch.Tensor, str]:
    """The per-species energy shifts and how they were chosen (see :func:`dataset_statistics`)."""
    atoms = counts.sum()
    if atomic_energies:
        missing = [z for z in species if z not in atomic_energies]
        if missing:
            raise ValueError(f"dataset_statistics: no isolated-atom energy for atomic numbers {missing} "
                             f"(the isolated-atom energies cover {sorted(atomic_energies)})")
        e0 = torch.tensor([float(atomic_energies[z]) for z in species], dtype=torch.float64)
        return e0 + (energy - counts @ e0).sum() / atoms, "isolated atoms"
    if int(torch.linalg.matrix_rank(counts)) == counts.shape[1]:
        return torch.linalg.lstsq(counts, energy[:, None], driver="gelsd").solution[:, 0], "least squares"
    return torch.full((counts.shape[1],), float(energy.sum() / atoms), dtype=torch.float64), "mean per atom"
