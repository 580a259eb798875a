"""Ligand poses: rotatable bonds, torsion and rigid-body moves, alignment and symmetric RMSD.

A pose is the ``(L, 3)`` positions of a ligand's heavy atoms in a fixed atom order. It changes
by three kinds of moves, the degrees of freedom a docking model predicts:

* a **translation** ``t`` (Å) of every atom;
* a **rotation** about the ligand's centroid, given as an axis–angle vector ``ω`` (radians;
  ``|ω|`` is the angle);
* **torsion** changes ``δ`` (radians), one per rotatable bond ``(i, j)``: the atoms on ``j``'s
  side turn by ``δ`` about the axis ``i -> j``, and the result is then superimposed
  (Kabsch) on the pose before the change, so that a torsion move carries no rigid motion.

With that convention the three moves undo each other exactly: a pose made from ``X`` by
torsions ``δ``, then rotation ``ω``, then translation ``t`` returns to ``X`` under
translation ``-t``, then rotation ``-ω``, then torsions ``-δ`` (:func:`perturb_pose` and
:func:`move_pose` use this order).

Poses are judged by :func:`symmetric_rmsd`: the heavy-atom RMSD, without superposition, to the
closest crystal copy under every graph automorphism of the ligand (a flipped phenyl ring or
swapped carboxylate oxygens is not an error), as PoseBusters and the docking papers report it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from rdkit import Chem
from torch import Tensor

from ..o3 import axis_angle_to_matrix, rand_matrix
from .errors import InvalidInputError

__all__ = [
    "rotatable_bonds",
    "apply_torsions",
    "kabsch",
    "superimpose",
    "rotation_vector_to_matrix",
    "matrix_to_rotation_vector",
    "rigid_move",
    "move_pose",
    "perturb_pose",
    "random_rotation_vector",
    "remove_hydrogens",
    "match_atoms",
    "symmetry_references",
    "symmetric_rmsd",
    "match_torsions",
    "dihedral_angles",
]


# --------------------------------------------------------------------------------- topology
def _is_amide_cn(bond: Chem.Bond) -> bool:
    """A C(=O)-N or C(=S)-N bond: a partial double bond, kept planar (not rotatable)."""
    for c, n in ((bond.GetBeginAtom(), bond.GetEndAtom()), (bond.GetEndAtom(), bond.GetBeginAtom())):
        if c.GetAtomicNum() == 6 and n.GetAtomicNum() == 7:
            for other in c.GetBonds():
                partner = other.GetOtherAtom(c)
                if other.GetBondType() == Chem.BondType.DOUBLE and partner.GetAtomicNum() in (8, 16):
                    return True
    return False


def rotatable_bonds(mol: Chem.Mol) -> tuple[Tensor, Tensor]:
    """Rotatable bonds of a molecule and the atoms each one moves.

    A bond is rotatable when it is single, not in a ring, not an amide C–N, and both its atoms
    have another heavy neighbour and are not linear (``sp``); turning it then changes where
    heavy atoms are. Of the two sides, the one with fewer atoms moves.

    Args:
        mol: an RDKit molecule (hydrogens, if present, ride with their heavy atom's side).

    Returns:
        ``bonds`` ``(2, T)`` long, ``[fixed atom i, moving atom j]``, and ``moving`` ``(T, N)``
        bool, the atoms on ``j``'s side (``j`` included, ``i`` not).

    Example:
        >>> from rdkit import Chem
        >>> bonds, moving = rotatable_bonds(Chem.MolFromSmiles("CCCC(=O)NC"))
        >>> bonds.tolist(), moving.sum(1).tolist()  # C1-C2 and C2-C3; amide C-N and terminal bonds are not
        ([[2, 3], [1, 2]], [2, 3])
    """
    n = mol.GetNumAtoms()
    neighbours = [[nb.GetIdx() for nb in a.GetNeighbors()] for a in mol.GetAtoms()]
    heavy_degree = [sum(mol.GetAtomWithIdx(k).GetAtomicNum() > 1 for k in nbs) for nbs in neighbours]
    pairs, masks = [], []
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtom(), bond.GetEndAtom()
        i, j = a.GetIdx(), b.GetIdx()
        if bond.GetBondType() != Chem.BondType.SINGLE or bond.IsInRing() or a.GetAtomicNum() == 1 or b.GetAtomicNum() == 1:
            continue
        if heavy_degree[i] < 2 or heavy_degree[j] < 2 or _is_amide_cn(bond):
            continue
        if Chem.HybridizationType.SP in (a.GetHybridization(), b.GetHybridization()):
            continue
        side = torch.zeros(n, dtype=torch.bool)
        side[j] = True
        stack = [j]
        while stack:  # the bond is acyclic, so j's side is what j reaches without crossing it
            k = stack.pop()
            for m in neighbours[k]:
                if not side[m] and not (k == j and m == i):
                    side[m] = True
                    stack.append(m)
        if 2 * int(side.sum()) > n:
            i, j = j, i
            side = ~side
        pairs.append((i, j))
        masks.append(side)
    bonds = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.contiguous()
    moving = torch.stack(masks) if masks else torch.zeros(0, n, dtype=torch.bool)
    return bonds, moving


# --------------------------------------------------------------------------------- geometry
def rotation_vector_to_matrix(omega: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of axis–angle vectors ``(..., 3)`` (zero -> identity)."""
    angle = omega.norm(dim=-1)
    safe = torch.where(angle[..., None] > 0, omega, torch.ones_like(omega))
    R = axis_angle_to_matrix(safe, angle)
    return torch.where(angle[..., None, None] > 0, R, torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(R))


def matrix_to_rotation_vector(R: Tensor) -> Tensor:
    """Axis–angle vectors ``(..., 3)``, angle in ``[0, π]``, of rotation matrices ``(..., 3, 3)``."""
    w = (R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1])
    axis2s = torch.stack(w, dim=-1)  # 2 sin(angle) * axis
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    sin = axis2s.norm(dim=-1) / 2
    angle = torch.atan2(sin, cos)
    small = sin < 1e-6
    # near pi, sin -> 0 and the axis comes from the symmetric part: R + I = 2 n n^T (1 - cos)/... ~ 2 n n^T
    sym = (R + R.transpose(-1, -2)) / 2 - cos[..., None, None] * torch.eye(3, dtype=R.dtype, device=R.device)
    col = sym.diagonal(dim1=-2, dim2=-1).argmax(-1)
    n_pi = torch.gather(sym, -1, col[..., None, None].expand(*col.shape, 3, 1)).squeeze(-1)
    n_pi = n_pi / n_pi.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n_pi = n_pi * torch.where((n_pi * axis2s).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(R.dtype)
    n = torch.where(small[..., None], n_pi, axis2s / (2 * sin.clamp_min(1e-12))[..., None])
    out = n * angle[..., None]
    return torch.where((small & (cos > 0))[..., None], axis2s / 2, out)  # tiny angles: ω ≈ axial part


def random_rotation_vector(max_angle: float, generator: Optional[torch.Generator] = None, dtype=torch.float64) -> Tensor:
    """A rotation vector with a uniformly random axis; for ``max_angle >= π`` a uniformly random
    rotation (Haar measure on SO(3)), otherwise an angle uniform in ``[0, max_angle]``."""
    if max_angle >= math.pi:
        return matrix_to_rotation_vector(rand_matrix(dtype=dtype, generator=generator))
    axis = torch.randn(3, dtype=dtype, generator=generator)
    axis = axis / axis.norm()
    return axis * torch.rand((), dtype=dtype, generator=generator) * max_angle


def kabsch(P: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """The proper rotation ``R`` and translation ``t`` that minimise ``|P R^T + t - Q|``.

    Args:
        P, Q: ``(..., L, 3)`` corresponding points (batch dimensions broadcast).

    Returns:
        ``R`` ``(..., 3, 3)`` (``det R = +1``, never a reflection) and ``t`` ``(..., 3)``.
    """
    p0, q0 = P.mean(-2, keepdim=True), Q.mean(-2, keepdim=True)
    H = (P - p0).transpose(-1, -2) @ (Q - q0)
    U, _, Vh = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
    return R, (q0 - p0 @ R.transpose(-1, -2)).squeeze(-2)


def superimpose(P: Tensor, Q: Tensor) -> Tensor:
    """``P`` moved rigidly (no reflection) onto ``Q`` by :func:`kabsch`."""
    R, t = kabsch(P, Q)
    return P @ R.transpose(-1, -2) + t.unsqueeze(-2)


def _turn(pos: Tensor, i: int, j: int, moving: Tensor, angles: Tensor) -> Tensor:
    """``pos`` with ``moving`` atoms turned about ``i -> j`` by each of ``angles`` ``(S,)``: ``(S, L, 3)``."""
    R = axis_angle_to_matrix((pos[j] - pos[i]).expand(angles.shape[0], 3), angles.to(pos.dtype))
    turned = (pos - pos[j]) @ R.transpose(-1, -2) + pos[j]
    return torch.where(moving[:, None], turned, pos)


def _turn_each(pos: Tensor, i: int, j: int, moving: Tensor, angles: Tensor) -> Tensor:
    """Poses ``(B, L, 3)`` with ``moving`` atoms of pose ``b`` turned about ``i -> j`` by ``angles[b]``."""
    R = axis_angle_to_matrix(pos[:, j] - pos[:, i], angles.to(pos.dtype))
    origin = pos[:, j : j + 1]
    turned = (pos - origin) @ R.transpose(-1, -2) + origin
    return torch.where(moving[:, None], turned, pos)


def apply_torsions(pos: Tensor, bonds: Tensor, moving: Tensor, angles: Tensor, *, align: bool = True) -> Tensor:
    """Turn each rotatable bond ``(i, j)`` by ``angles[k]`` (radians, right-handed about ``i -> j``).

    Args:
        pos: ``(L, 3)`` pose, or poses ``(..., L, 3)``.
        bonds, moving: from :func:`rotatable_bonds` (``(2, T)`` and ``(T, L)``).
        angles: ``(T,)`` torsion changes, or ``(..., T)``: one row per pose.
        align: superimpose the result on ``pos`` (Kabsch), so the move has no rigid part.

    Returns:
        The new ``(L, 3)`` pose (``(..., L, 3)`` poses); bond lengths and bond angles are unchanged.
    """
    if (
        bonds.shape[1] != angles.shape[-1] or moving.shape != (bonds.shape[1], pos.shape[-2])
        or angles.shape[:-1] != pos.shape[:-2]
    ):
        raise ValueError(
            f"apply_torsions: {bonds.shape[1]} bonds, angles of shape {tuple(angles.shape)} and moving mask "
            f"{tuple(moving.shape)} for poses of shape {tuple(pos.shape)} do not agree"
        )
    if pos.dim() > 2:  # a batch of poses, each turned by its own angles
        flat = pos.reshape(-1, *pos.shape[-2:])
        new, turns = flat, angles.reshape(flat.shape[0], angles.shape[-1])
        for k in range(bonds.shape[1]):
            new = _turn_each(new, int(bonds[0, k]), int(bonds[1, k]), moving[k], turns[:, k])
        if align and bonds.shape[1]:
            new = superimpose(new, flat)
        return new.reshape(pos.shape)
    new = pos
    for k in range(bonds.shape[1]):
        new = _turn(new, int(bonds[0, k]), int(bonds[1, k]), moving[k], angles[k : k + 1])[0]
    if align and bonds.shape[1]:
        new = superimpose(new, pos)
    return new


def dihedral_angles(pos: Tensor, bonds: Tensor, moving: Tensor) -> Tensor:
    """A dihedral angle ``(T,)`` per rotatable bond ``(i, j)``: ``a-i-j-c`` with ``a`` and ``c`` the
    atoms nearest to ``i`` and ``j`` on their own sides (bonded neighbours, as bond lengths are
    shorter than any non-bonded distance). Differences of it are the torsion changes of
    :func:`apply_torsions`."""
    out = []
    for k in range(bonds.shape[1]):
        i, j = int(bonds[0, k]), int(bonds[1, k])
        b = (pos[j] - pos[i]) / (pos[j] - pos[i]).norm()
        side_j, side_i = moving[k].clone(), ~moving[k]
        side_j[j], side_i[i] = False, False
        inf = torch.full((pos.shape[0],), float("inf"), dtype=pos.dtype)
        a = int(torch.where(side_i, (pos - pos[i]).norm(dim=1), inf).argmin())
        c = int(torch.where(side_j, (pos - pos[j]).norm(dim=1), inf).argmin())
        u, v = pos[a] - pos[i], pos[c] - pos[j]
        u, v = u - (u @ b) * b, v - (v @ b) * b
        out.append(torch.atan2(torch.dot(torch.linalg.cross(u, v), b), torch.dot(u, v)))
    return torch.stack(out) if out else pos.new_zeros(0)


def rigid_move(pos: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
    """Rotate ``pos`` about its centroid by the axis–angle ``rotation``, then translate.

    Batches: poses ``(..., L, 3)`` with ``rotation`` and ``translation`` ``(..., 3)``, one per pose."""
    if pos.dim() > 2:
        c = pos.mean(-2, keepdim=True)
        R = rotation_vector_to_matrix(rotation.to(pos.dtype))
        return (pos - c) @ R.transpose(-1, -2) + c + translation.to(pos.dtype)[..., None, :]
    c = pos.mean(0)
    return (pos - c) @ rotation_vector_to_matrix(rotation.to(pos.dtype)).T + c + translation.to(pos.dtype)


def move_pose(pos, bonds, moving, translation, rotation, torsion) -> Tensor:
    """The update a docking model predicts: translation, then rotation about the (new) centroid,
    then torsion changes (superimposed); the inverse of :func:`perturb_pose`'s moves.

    Batches: poses ``(..., L, 3)`` with ``translation``, ``rotation`` ``(..., 3)`` and ``torsion``
    ``(..., T)``, one per pose (the same as moving each pose by itself, up to float round-off)."""
    moved = rigid_move(pos, rotation, translation)
    return apply_torsions(moved, bonds, moving, torsion.to(pos.dtype))


def perturb_pose(pos, bonds, moving, translation, rotation, torsion) -> Tensor:
    """Torsion changes (superimposed), then rotation about the centroid, then translation.

    ``move_pose(perturb_pose(X, b, m, t, w, d), b, m, -t, -w, -d)`` is ``X``.
    """
    twisted = apply_torsions(pos, bonds, moving, torsion.to(pos.dtype))
    return rigid_move(twisted, rotation, translation)


# ---------------------------------------------------------------------- atom correspondence
def _generic_query(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` as a substructure query matching elements and connectivity, any bond order."""
    params = Chem.AdjustQueryParameters.NoAdjustments()
    params.makeBondsGeneric = True
    return Chem.AdjustQueryProperties(Chem.RemoveHs(mol, sanitize=False), params)


def remove_hydrogens(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` without hydrogens: the heavy atoms a pose holds. Beyond RDKit's defaults it also
    removes hydrogens that define a double bond's stereo (amidine and guanidine ``=NH``) and
    hydrogens without neighbours; the result is not sanitised again."""
    params = Chem.RemoveHsParameters()
    params.removeDefiningBondStereo = True  # amidine/guanidine =NH hydrogens too
    params.removeDegreeZero = True
    return Chem.RemoveHs(mol, params, sanitize=False)


def match_atoms(reference: Chem.Mol, other: Chem.Mol, source: str = "<mol>", max_matches: int = 1000) -> list[tuple[int, ...]]:
    """Every way to map ``reference``'s heavy atoms onto ``other``'s heavy atoms.

    Matches elements and the bond graph, not bond orders, charges or hydrogens (files of one
    ligand differ in kekulisation and protonation).

    Returns:
        Tuples ``m`` with ``m[k]`` the heavy-atom index in ``other`` (hydrogens removed) of
        ``reference``'s heavy atom ``k``.

    Raises:
        InvalidInputError: the heavy-atom graphs differ (naming ``source``).
    """
    ref, oth = remove_hydrogens(reference), remove_hydrogens(other)
    if ref.GetNumAtoms() != oth.GetNumAtoms():
        raise InvalidInputError(source, f"{oth.GetNumAtoms()} heavy atoms, but the reference ligand has {ref.GetNumAtoms()}")
    matches = oth.GetSubstructMatches(_generic_query(ref), uniquify=False, useChirality=False, maxMatches=max_matches)
    if not matches:
        raise InvalidInputError(source, "its heavy-atom bond graph differs from the reference ligand's")
    return list(matches)


def symmetry_references(crystal: Chem.Mol, copies: list[Chem.Mol], source: str = "<mol>", max_matches: int = 1000) -> Tensor:
    """Every crystal copy under every automorphism, in ``crystal``'s heavy-atom order.

    Returns:
        ``(K, L, 3)`` float64: distinct reference poses for :func:`symmetric_rmsd` (``crystal``
        and its copies, each under every automorphism of the ligand's heavy-atom graph).
    """
    refs = [torch.tensor(remove_hydrogens(crystal).GetConformer().GetPositions(), dtype=torch.float64)]
    for k, copy in enumerate([crystal, *copies]):
        pos = torch.tensor(remove_hydrogens(copy).GetConformer().GetPositions(), dtype=torch.float64)
        for m in match_atoms(crystal, copy, source if k == 0 else f"{source} (copy {k - 1})", max_matches):
            refs.append(pos[list(m)])
    return torch.unique(torch.stack(refs), dim=0, sorted=False) if len(refs) > 1 else refs[0][None]


def symmetric_rmsd(pos: Tensor, references: Tensor) -> Tensor:
    """RMSD (Å, no superposition) of ``pos`` ``(..., L, 3)`` to the closest of ``references`` ``(K, L, 3)``."""
    d = (pos.unsqueeze(-3).to(references.dtype) - references).square().sum(-1).mean(-1)
    return d.min(-1).values.sqrt()


# ------------------------------------------------------------------------ conformer matching
def _descend(pos: Tensor, target: Tensor, bonds: Tensor, moving: Tensor, grids: list[Tensor]) -> tuple[Tensor, Tensor]:
    angles = pos.new_zeros(bonds.shape[1])
    current = pos
    for grid in grids:
        for k in range(bonds.shape[1]):
            trials = _turn(current, int(bonds[0, k]), int(bonds[1, k]), moving[k], grid)
            best = int((superimpose(trials, target) - target).square().sum(-1).mean(-1).argmin())
            current = trials[best]
            angles[k] = angles[k] + grid[best]
    return angles, current


def match_torsions(
    pos: Tensor, target: Tensor, bonds: Tensor, moving: Tensor, sweeps: int = 2, steps: int = 36, restarts: int = 4,
    seed: int = 0,
) -> tuple[Tensor, Tensor, float]:
    """Torsion changes that bring a conformer closest to a target pose (conformer matching, as
    DiffDock trains on).

    Coordinate descent from the conformer's own torsions and from ``restarts`` random ones:
    ``sweeps`` times, each bond in turn is scanned over ``steps`` angles of the full circle and
    set to the best (RMSD after superposition on ``target``); three more passes scan finer
    windows around the current angles. The best of the runs is returned.

    Returns:
        The torsion changes ``(T,)`` (radians, in ``(-π, π]``), the matched conformer
        superimposed on ``target`` ``(L, 3)``, and its RMSD (Å): the best that torsion and
        rigid moves of this conformer reach.
    """
    T = bonds.shape[1]
    full = torch.arange(steps, dtype=pos.dtype) * (2 * math.pi / steps)
    fine = [torch.linspace(-w, w, steps + 1, dtype=pos.dtype) for w in (8 * math.pi / steps, 2 * math.pi / steps, math.pi / (2 * steps))]
    g = torch.Generator().manual_seed(seed)
    best = (math.inf, pos.new_zeros(T), pos)
    for run in range(restarts + 1 if T else 1):
        init = pos.new_zeros(T) if run == 0 else (torch.rand(T, generator=g, dtype=pos.dtype) * 2 - 1) * math.pi
        start = apply_torsions(pos, bonds, moving, init, align=False)
        angles, current = _descend(start, target, bonds, moving, [full] * sweeps + fine)
        rmsd = float((superimpose(current, target) - target).square().sum(-1).mean().sqrt())
        if rmsd < best[0]:
            best = (rmsd, init + angles, current)
    rmsd, angles, current = best
    return torch.atan2(angles.sin(), angles.cos()), superimpose(current, target), rmsd
