"""A physics term for docking: an empirical protein–ligand score of AutoDock Vina's functional form, and
a pose search on it (Monte Carlo steps, each followed by a gradient-based local optimisation in the
ligand's translation, orientation and torsions).

The score is eqgeo's own implementation of the form published by Trott & Olson (J. Comput. Chem. 2010,
31, 455): for every ligand–protein heavy-atom pair within 8 Å, with the surface distance
``d = r - R_i - R_j`` (``R`` the X-Score van der Waals radii),

- ``gauss1 = exp(-(d / 0.5)^2)`` and ``gauss2 = exp(-((d - 3) / 2)^2)`` (steric attraction),
- ``repulsion = d^2`` for ``d < 0``,
- ``hydrophobic``: 1 for ``d < 0.5``, falling linearly to 0 at ``d = 1.5``, between hydrophobic atoms,
- ``hbond``: 1 for ``d < -0.7``, falling linearly to 0 at ``d = 0``, between a donor and an acceptor,

weighted ``-0.0356, -0.00516, 0.840, -0.0351, -0.587`` (kcal/mol); the same terms between ligand atoms
more than three bonds apart (the ligand's own clashes); and a quadratic penalty on atoms outside the
search box. Atom types come from the heavy atoms' elements and geometry alone (no hydrogens, no bond
orders: what a :class:`~eqgeo.datasets.docking.DockingComplex` holds): a carbon bonded to no N or O, a
halogen or a sulfur is hydrophobic; an O is an acceptor, and a donor when it is a hydroxyl (one heavy
neighbour at a single-bond length) or unbound (water, hydroxide); an N with at most two heavy neighbours
is a donor unless both its bonds are aromatic/imine-short, and an acceptor when they are; metal ions
are donors (they bind acceptors), as in Vina. This is an approximation of Vina's typing, which reads
hydrogens and bond orders: it is a term against clashes and for contacts, not a reimplementation of
Vina, and its results are reported beside Vina's own.

Nothing here is learned: :func:`search` is used alone (a physics baseline) and after the learned
refinement of :func:`eqgeo.inference.docking.refine` (the docking pipeline), and its energy can rank
poses beside the learned confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..data.poses import apply_torsions

__all__ = ["WEIGHTS", "AtomTypes", "type_atoms", "ligand_types", "Scorer", "complex_scorer", "search", "refine_search", "dock_search", "quaternion_matrix"]

#: Weights (kcal/mol) of gauss1, gauss2, repulsion, hydrophobic and hbond (Trott & Olson 2010).
WEIGHTS = (-0.0356, -0.00516, 0.840, -0.0351, -0.587)
#: Pair cutoff (Å).
CUTOFF = 8.0
#: X-Score van der Waals radii (Å) by atomic number; metals 1.2.
_VDW = {6: 1.9, 7: 1.8, 8: 1.7, 9: 1.5, 15: 2.1, 16: 2.0, 17: 1.8, 35: 2.0, 53: 2.2}
_METALS = {3, 11, 12, 13, 19, 20, 25, 26, 27, 28, 29, 30, 48, 80}
#: Covalent radii (Å) for finding bonds from distances (metals are ions here: never bonded).
_COVALENT = {5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 14: 1.11, 15: 1.07, 16: 1.05, 17: 1.02, 34: 1.2, 35: 1.2, 53: 1.39}
_HALOGENS = {9, 17, 35, 53}


@dataclass
class AtomTypes:
    """Per atom: van der Waals radius (Å) and the hydrophobic, donor and acceptor flags."""

    radius: Tensor
    hydrophobic: Tensor
    donor: Tensor
    acceptor: Tensor


def _bonded(z: Tensor, pos: Tensor) -> Tensor:
    """``(N, N)`` bonds from distances: closer than the sum of covalent radii plus 0.45 Å (ions never)."""
    rc = torch.tensor([_COVALENT.get(int(a), float("nan")) for a in z], dtype=pos.dtype)
    r = torch.cdist(pos, pos)
    bonded = r < rc[:, None] + rc[None, :] + 0.45  # NaN (an ion or unknown element) compares False
    bonded.fill_diagonal_(False)
    return bonded


def type_atoms(z: Tensor, pos: Tensor) -> AtomTypes:
    """Vina-like types of heavy atoms ``z`` ``(N,)`` at ``pos`` ``(N, 3)`` (module docstring)."""
    z = z.long()
    pos = pos.to(torch.float64)
    bonded = _bonded(z, pos)
    r = torch.cdist(pos, pos)
    degree = bonded.sum(1)
    polar = (z == 7) | (z == 8)
    mean_length = torch.where(bonded, r, torch.zeros_like(r)).sum(1) / degree.clamp(min=1)
    longest = torch.where(bonded, r, torch.zeros_like(r)).amax(1)
    carbon_h = (z == 6) & ~(bonded & polar[None, :]).any(1)
    halogen = torch.tensor([int(a) in _HALOGENS for a in z], dtype=torch.bool)
    metal = torch.tensor([int(a) in _METALS for a in z], dtype=torch.bool)
    hydrophobic = carbon_h | halogen | (z == 16)
    short_n = (z == 7) & (degree >= 1) & (longest < 1.37)  # aromatic / imine nitrogen: a lone pair
    n_free = (z == 7) & (degree <= 2)
    o_hydroxyl = (z == 8) & (((degree == 1) & (longest > 1.32)) | (degree == 0))
    donor = (n_free & ~(short_n & (degree == 2))) | o_hydroxyl | metal
    acceptor = (z == 8) | (n_free & short_n)
    radius = torch.tensor([_VDW.get(int(a), 1.2 if int(a) in _METALS else 1.9) for a in z], dtype=torch.float64)
    return AtomTypes(radius, hydrophobic, donor, acceptor)


def ligand_types(z: Tensor, pos: Tensor) -> tuple[AtomTypes, Tensor]:
    """The ligand's types and its intramolecular pairs ``(2, M)``: atoms more than three bonds apart."""
    types = type_atoms(z, pos)
    bonded = _bonded(z.long(), pos.to(torch.float64))
    n = z.numel()
    hops = torch.full((n, n), n + 1, dtype=torch.long)
    hops[bonded] = 1
    hops.fill_diagonal_(0)
    for k in range(n):  # Floyd–Warshall on a small graph
        hops = torch.minimum(hops, hops[:, k : k + 1] + hops[k : k + 1, :])
    i, j = torch.triu_indices(n, n, 1)
    far = hops[i, j] > 3
    return types, torch.stack([i[far], j[far]])


def _pair_terms(d: Tensor, hydrophobic: Tensor, hbond: Tensor) -> Tensor:
    """The weighted sum of the five terms for surface distances ``d`` (pairs already within the cutoff)."""
    w = WEIGHTS
    gauss1 = torch.exp(-(d / 0.5).square())
    gauss2 = torch.exp(-((d - 3.0) / 2.0).square())
    repulsion = d.clamp(max=0.0).square()
    hydro = ((1.5 - d) / 1.0).clamp(0.0, 1.0) * hydrophobic
    hb = (-d / 0.7).clamp(0.0, 1.0) * hbond
    return w[0] * gauss1 + w[1] * gauss2 + w[2] * repulsion + w[3] * hydro + w[4] * hb


class Scorer:
    """The score of ligand poses in one receptor site.

    Args:
        ligand_z: ``(L,)`` ligand heavy atoms; ligand_pos: ``(L, 3)`` any pose of it (for its bonds).
        protein_z, protein_pos: ``(P,)`` / ``(P, 3)`` receptor heavy atoms about the site (all within
            the box plus the 8 Å cutoff matter).
        centre: ``(3,)`` the box centre; box: its edge (Å), as Vina's search box.
    """

    def __init__(self, ligand_z: Tensor, ligand_pos: Tensor, protein_z: Tensor, protein_pos: Tensor,
                 centre: Tensor, box: float = 25.0, dtype: torch.dtype = torch.float32) -> None:
        if protein_z.numel() == 0:
            raise ValueError("the receptor site holds no protein atom: nothing to score against")
        self.dtype = dtype
        self.lig, self.pairs = ligand_types(ligand_z, ligand_pos)
        site = type_atoms(protein_z, protein_pos)
        self.protein_pos = protein_pos.to(dtype)
        self.centre, self.half = centre.to(dtype), box / 2
        L = ligand_z.numel()
        self.sum_radius = (self.lig.radius[:, None] + site.radius[None, :]).to(dtype)  # (L, P)
        self.hydrophobic = (self.lig.hydrophobic[:, None] & site.hydrophobic[None, :]).to(dtype)
        self.hbond = ((self.lig.donor[:, None] & site.acceptor[None, :])
                      | (self.lig.acceptor[:, None] & site.donor[None, :])).to(dtype)
        i, j = self.pairs
        lt = self.lig
        self.intra_radius = (lt.radius[i] + lt.radius[j]).to(dtype)
        self.intra_hydrophobic = (lt.hydrophobic[i] & lt.hydrophobic[j]).to(dtype)
        self.intra_hbond = ((lt.donor[i] & lt.acceptor[j]) | (lt.acceptor[i] & lt.donor[j])).to(dtype)
        self.num_ligand = L

    def near(self, poses: Tensor, margin: float = 2.0) -> Tensor:
        """For each pose ``(S, L, 3)``, the indices ``(S, K)`` of the protein atoms within ``CUTOFF + margin``
        of one of its atoms (padded with the nearest others): the atoms that count while the pose moves
        less than ``margin``."""
        with torch.no_grad():
            nearest = torch.cdist(self.protein_pos[None], poses.to(self.dtype)).amin(-1)  # (S, P)
            k = max(int((nearest < CUTOFF + margin).sum(1).max()), 1)
            return nearest.topk(k, dim=1, largest=False).indices

    def inter(self, poses: Tensor, near: Optional[Tensor] = None) -> Tensor:
        """Ligand–protein energy ``(S,)`` of poses ``(S, L, 3)`` (kcal/mol-like units); only the protein
        atoms ``near`` ``(S, K)`` (:meth:`near`) when given, else all."""
        poses = poses.to(self.dtype)
        if near is None:
            r = torch.cdist(poses, self.protein_pos[None].expand(poses.shape[0], -1, -1))
            sum_radius, hydrophobic, hbond = self.sum_radius, self.hydrophobic, self.hbond
        else:
            r = torch.cdist(poses, self.protein_pos[near])
            pick = near[:, None, :].expand(-1, self.num_ligand, -1)
            sum_radius, hydrophobic, hbond = (x[None].expand(len(near), -1, -1).gather(2, pick)
                                              for x in (self.sum_radius, self.hydrophobic, self.hbond))
        d = r - sum_radius
        e = _pair_terms(d, hydrophobic, hbond) * (r < CUTOFF)
        return e.sum((-1, -2))

    def intra(self, poses: Tensor) -> Tensor:
        """The ligand's own energy ``(S,)`` (pairs more than three bonds apart)."""
        i, j = self.pairs
        if i.numel() == 0:
            return poses.new_zeros(poses.shape[0], dtype=self.dtype)
        r = (poses[:, i] - poses[:, j]).to(self.dtype).norm(dim=-1)
        d = r - self.intra_radius
        return (_pair_terms(d, self.intra_hydrophobic, self.intra_hbond) * (r < CUTOFF)).sum(-1)

    def outside(self, poses: Tensor) -> Tensor:
        """The box penalty ``(S,)``: squared distances (Å²) of atoms outside the box."""
        excess = ((poses.to(self.dtype) - self.centre).abs() - self.half).clamp(min=0.0)
        return excess.square().sum((-1, -2))

    def __call__(self, poses: Tensor, near: Optional[Tensor] = None) -> Tensor:
        """The total energy ``(S,)`` that :func:`search` minimises: inter + intra + box penalty."""
        return self.inter(poses, near) + self.intra(poses) + self.outside(poses)


def quaternion_matrix(v: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of the unit quaternions ``(1, v) / |(1, v)|``: smooth at ``v = 0``."""
    q = torch.cat([torch.ones_like(v[..., :1]), v], -1)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*v.shape[:-1], 3, 3)


def _posed(base: Tensor, bonds: Tensor, moving: Tensor, t: Tensor, v: Tensor, tor: Tensor) -> Tensor:
    twisted = apply_torsions(base, bonds, moving, tor, align=False) if bonds.shape[1] else base
    c = twisted.mean(-2, keepdim=True)
    return (twisted - c) @ quaternion_matrix(v).transpose(-1, -2) + c + t[..., None, :]


def _local(scorer: Scorer, base: Tensor, bonds: Tensor, moving: Tensor, steps: int, lr: float) -> tuple[Tensor, Tensor]:
    """Adam on translation, orientation and torsions of each pose of ``base`` ``(S, L, 3)`` (the protein atoms
    near each start count: :meth:`Scorer.near`); the final poses and their energies (all atoms)."""
    S, T = base.shape[0], bonds.shape[1]
    near = scorer.near(base, margin=3.0)
    t = torch.zeros(S, 3, dtype=base.dtype, requires_grad=True)
    v = torch.zeros(S, 3, dtype=base.dtype, requires_grad=True)
    tor = torch.zeros(S, T, dtype=base.dtype, requires_grad=True)
    opt = torch.optim.Adam([{"params": [t], "lr": lr}, {"params": [v], "lr": lr * 0.1},
                            {"params": [tor], "lr": lr * 0.5}])
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        scorer(_posed(base, bonds, moving, t, v, tor), near).sum().backward()
        opt.step()
    with torch.no_grad():
        poses = _posed(base, bonds, moving, t, v, tor)
        return poses, scorer(poses)


@torch.no_grad()
def _kick(poses: Tensor, bonds: Tensor, moving: Tensor, g: torch.Generator, translation: float,
          rotation: float) -> Tensor:
    """Each pose moved by one random change, as Vina's Monte Carlo mutates: a translation
    ``N(0, translation^2)`` per axis, a rotation of angle up to ``rotation``, or one torsion set at random."""
    from ..data.poses import random_rotation_vector, rigid_move

    S, T = poses.shape[0], bonds.shape[1]
    kind = torch.randint(0, 3 if T else 2, (S,), generator=g)
    t = torch.randn(S, 3, generator=g, dtype=poses.dtype) * translation * (kind == 0)[:, None]
    w = torch.stack([random_rotation_vector(rotation, g, poses.dtype) for _ in range(S)]) * (kind == 1)[:, None]
    out = rigid_move(poses, w, t)
    if T:
        which = torch.randint(0, T, (S,), generator=g)
        angles = torch.zeros(S, T, dtype=poses.dtype)
        angles[torch.arange(S), which] = (torch.rand(S, generator=g, dtype=poses.dtype) * 2 - 1) * math.pi
        angles = angles * (kind == 2)[:, None]
        out = apply_torsions(out, bonds, moving, angles, align=False)
    return out


def search(
    scorer: Scorer,
    starts: Tensor,
    bonds: Tensor,
    moving: Tensor,
    *,
    rounds: int = 10,
    steps: int = 30,
    first_steps: int = 100,
    lr: float = 0.2,
    temperature: float = 1.2,
    translation: float = 1.0,
    rotation: float = 0.5,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Minimise the score from each start ``(S, L, 3)``: a local optimisation (``first_steps`` Adam steps),
    then ``rounds`` Monte Carlo steps, each a random change (:func:`_kick`) and ``steps`` of local
    optimisation, accepted by the Metropolis rule at ``temperature``. Returns the best pose each chain met
    ``(S, L, 3)`` and its energy ``(S,)``; bond lengths and angles are those of the starts.
    ``rounds=0`` is a local optimisation alone."""
    g = torch.Generator().manual_seed(seed)
    current, energy = _local(scorer, starts.to(scorer.dtype), bonds, moving, first_steps, lr)
    best, best_energy = current.clone(), energy.clone()
    for _ in range(rounds):
        trial, trial_energy = _local(scorer, _kick(current, bonds, moving, g, translation, rotation), bonds, moving, steps, lr)
        accept = (trial_energy < energy) | (torch.rand(len(energy), generator=g, dtype=energy.dtype)
                                            < torch.exp(-(trial_energy - energy) / temperature))
        current = torch.where(accept[:, None, None], trial, current)
        energy = torch.where(accept, trial_energy, energy)
        better = energy < best_energy
        best = torch.where(better[:, None, None], current, best)
        best_energy = torch.where(better, energy, best_energy)
    return best, best_energy


def complex_scorer(c, box: float = 25.0, dtype: torch.dtype = torch.float32) -> Scorer:
    """The :class:`Scorer` of a :class:`~eqgeo.datasets.docking.DockingComplex` about its pocket centre (its
    ligand typed on the start conformer when it has one, never on the crystal pose). The pocket must
    reach the box plus the cutoff for the score to be whole (e.g. load it as an 18 Å ball for a 25 Å box)."""
    shape = c.start if c.has_start_conf else c.crystal
    return Scorer(c.ligand_z, shape, c.pocket_z, c.pocket_pos, c.pocket_centre, box=box, dtype=dtype)


def refine_search(scorer: Scorer, starts: Tensor, bonds: Tensor, moving: Tensor, *, recentre: bool = True,
                  **options) -> tuple[Tensor, Tensor]:
    """Refinement of each start ``(S, L, 3)`` (track a): :func:`search` from the start and, with ``recentre``,
    from a copy of it with its centroid at the box centre (what the centroid baseline does); per start the
    lower-energy result ``(S, L, 3)`` and its energy ``(S,)``. ``options`` go to :func:`search`."""
    if not recentre:
        return search(scorer, starts, bonds, moving, **options)
    S = starts.shape[0]
    centred = starts - starts.mean(-2, keepdim=True) + scorer.centre.to(starts.dtype)
    poses, energy = search(scorer, torch.cat([starts, centred]), bonds, moving, **options)
    first = energy[:S] <= energy[S:]
    return torch.where(first[:, None, None], poses[:S], poses[S:]), torch.minimum(energy[:S], energy[S:])


def dock_search(
    site,
    starts: Tensor,
    *,
    rounds: int = 10,
    box: float = 25.0,
    seed: int = 0,
    model=None,
    pocket=None,
    learned_first: bool = False,
    steps: int = 6,
    step_size: float = 0.5,
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Docking with the physics term: each start ``(S, L, 3)`` of ``site``'s ligand (a
    :class:`~eqgeo.datasets.docking.DockingComplex` whose protein reaches the box plus the cutoff) is a
    Monte Carlo chain of :func:`search`; with a learned ``model`` (and ``pocket``, the same complex cut as
    its training pockets), ``learned_first`` refines the starts with the model before the search, and the
    model's confidence logits of the final poses are returned beside their energies.

    Returns the poses ``(S, L, 3)``, their energies ``(S,)`` and confidences ``(S,)`` (or None), lowest
    energy first."""
    from .docking import pose_forward, refine

    if model is not None and pocket is None:
        raise ValueError("a learned model needs its pocket: the complex cut as its training pockets were")
    poses = starts.to(torch.float64)
    forward = pose_forward(model, pocket) if model is not None else None
    if model is not None and learned_first:
        poses, _ = refine(model, pocket, poses, steps, step_size, forward=forward)
    poses, energy = search(complex_scorer(site, box=box), poses, site.bonds, site.moving, rounds=rounds, seed=seed)
    poses = poses.to(torch.float64)
    confidence = None
    if model is not None:
        with torch.no_grad():
            confidence = forward(poses)["confidence"].double().cpu()
    order = torch.argsort(energy, stable=True)
    return poses[order], energy[order], None if confidence is None else confidence[order]
