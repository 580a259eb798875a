"""Docking inference: iterative refinement, the two benchmark tracks and their evaluation.

A trained :class:`eqgeo.models.DockingModel` predicts, for a ligand pose in its pocket, the
translation, rotation and torsion changes that bring it to the crystal pose and a confidence
logit that the pose is within :data:`SUCCESS_RMSD` of it. At test time the predicted moves are
applied iteratively (:func:`refine`).

Two tracks, on complexes never seen in training:

* **(a) pose refinement**: the crystal pose moved by a random rigid rotation, translation and
  torsion changes large enough that doing nothing fails (the median starting RMSD is reported);
  each start is one trial.
* **(b) pocket-given redocking**: the RDKit start conformer at random orientations, its
  centroid at a random point near the pocket centre (the crystal ligand's centroid, as Vina's
  box is centred); several starts are refined and the one with the highest confidence is the
  answer (top-1).

Beside the model, every track reports two trivial baselines on the same starts: **no change**,
and the ligand's **centroid moved to the pocket centre**. Metrics: symmetry-corrected
heavy-atom RMSD to the closest crystal copy, success rate (RMSD < 2 Å, %) and median RMSD.

Nothing here imports :mod:`eqgeo.training` or Lightning: ``eqgeo-evaluate``, the training task's
test stage and user scripts all call :func:`evaluate_docking` (or :func:`complex_rmsds` and
:func:`docking_metrics`, complex by complex).
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ..data import keys as K
from ..data.poses import move_pose, perturb_pose, random_rotation_vector, rigid_move, symmetric_rmsd
from ..datasets.docking import DockingComplex
from ..models import DockingModel
from ..models.docking import FixedPocketForward

__all__ = [
    "SUCCESS_RMSD",
    "TRACK_A",
    "TRACK_B",
    "pose_graph",
    "pose_forward",
    "refine",
    "dock",
    "track_a_starts",
    "track_b_starts",
    "benchmark_starts",
    "complex_rmsds",
    "docking_metrics",
    "evaluate_docking",
    "metric_names",
    "metric_unit",
]

#: A pose is a success when its symmetry-corrected RMSD is below this (Å).
SUCCESS_RMSD = 2.0
#: Track (a) starts: per complex, the crystal pose moved by torsions U(-torsion, torsion), a rotation of
#: angle U(0, rotation) rad and a translation N(0, translation^2) Å per axis.
TRACK_A = {"starts": 4, "translation": 2.0, "rotation": 1.0, "torsion": math.pi}
#: Track (b) starts: the start conformer at random orientations, centroid within ``offset`` Å of the pocket centre.
TRACK_B = {"starts": 8, "offset": 2.0}

#: Every RMSD metric, ``name -> (the RMSDs it summarises, statistic)``: for each track and method
#: (``start``: no change, ``centroid``: centroid to the pocket centre, ``model``) the success rate
#: and median RMSD; track (b) also the oracle's success (best of the starts: an upper bound of
#: ranking, not a result) and the matched conformer's median RMSD (``floor``: the best rigid +
#: torsion docking of the start conformer can do).
_RMSD_METRICS: dict[str, tuple[str, str]] = {
    **{f"{track}_{method}_{statistic}": (f"{track}_{method}", statistic)
       for track in "ab" for method in ("start", "centroid", "model") for statistic in ("success", "median_rmsd")},
    "b_model_oracle_success": ("b_model_oracle", "success"),
    "b_floor_median_rmsd": ("b_floor", "median_rmsd"),
}


# ------------------------------------------------------------------------------------ graphs
def pose_graph(c: DockingComplex, pose: Tensor, dtype: torch.dtype = torch.float32) -> Data:
    """Graph of ligand heavy atoms at ``pose`` ``(L, 3)`` plus the pocket (no edges: the model
    builds its radius graph from the positions)."""
    data = Data(num_nodes=c.ligand_z.numel() + c.pocket_z.numel())
    data[K.ATOMIC_NUMBER] = torch.cat([c.ligand_z, c.pocket_z])
    data[K.POSITION] = torch.cat([pose, c.pocket_pos]).to(dtype)
    data[K.NODE_TYPE] = torch.cat(
        [torch.full((c.ligand_z.numel(),), K.NODE_LIGAND), torch.full((c.pocket_z.numel(),), K.NODE_PROTEIN)]
    )
    data[K.ROTATABLE_BOND_INDEX] = c.bonds
    return data


# ----------------------------------------------------------------------------- benchmark starts
def track_a_starts(c: DockingComplex, num: int, seed: int, *, translation: float, rotation: float, torsion: float) -> Tensor:
    """Track (a) starts ``(num, L, 3)``: the crystal pose with torsions ``U(-torsion, torsion)``,
    a rotation of angle ``U(0, rotation)`` (rad) and a translation ``N(0, translation^2)`` per axis."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        d = (torch.rand(c.bonds.shape[1], dtype=torch.float64, generator=g) * 2 - 1) * torsion
        w = random_rotation_vector(rotation, g)
        t = torch.randn(3, dtype=torch.float64, generator=g) * translation
        out.append(perturb_pose(c.crystal, c.bonds, c.moving, t, w, d))
    return torch.stack(out)


def track_b_starts(c: DockingComplex, num: int, seed: int, *, offset: float) -> Tensor:
    """Track (b) starts ``(num, L, 3)``: the start conformer, uniformly random orientation,
    centroid uniform in a ball of radius ``offset`` (Å) about the pocket centre."""
    g = torch.Generator().manual_seed(seed)
    out = []
    centred = c.start - c.start.mean(0)
    for _ in range(num):
        w = random_rotation_vector(math.pi, g)
        direction = torch.randn(3, dtype=torch.float64, generator=g)
        radius = offset * float(torch.rand((), generator=g)) ** (1 / 3)
        shift = direction / direction.norm() * radius
        out.append(rigid_move(centred, w, c.pocket_centre + shift))
    return torch.stack(out)


def _complex_seed(seed: int, name: str, track: str) -> int:
    """A seed of its own for each complex and track: the same starts whatever else is in the folder."""
    return zlib.crc32(f"{seed}/{track}/{name}".encode())


def benchmark_starts(complexes: Sequence[DockingComplex], track_a: dict, track_b: dict, seed: int) -> dict[str, list[Tensor]]:
    """The fixed starts of both tracks for each complex (seeded by ``seed`` and the complex's name):
    ``{"a": [(S_a, L, 3), ...], "b": [(S_b, L, 3), ...]}``; ``track_a`` / ``track_b`` as
    :data:`TRACK_A` / :data:`TRACK_B`."""
    return {
        "a": [track_a_starts(c, track_a["starts"], _complex_seed(seed, c.name, "a"), translation=track_a["translation"],
                             rotation=track_a["rotation"], torsion=track_a["torsion"]) for c in complexes],
        "b": [track_b_starts(c, track_b["starts"], _complex_seed(seed, c.name, "b"), offset=track_b["offset"])
              for c in complexes],
    }


# ---------------------------------------------------------------------------------- refinement
def pose_forward(model: DockingModel, c: DockingComplex) -> Callable[[Tensor], dict[str, Tensor]]:
    """The model's outputs for poses ``(S, L, 3)`` of ``c``'s ligand in its pocket: ``model(batch)``
    of the :func:`pose_graph` batch, computed by :class:`~eqgeo.models.docking.FixedPocketForward`
    (the pocket's part once, then only what each pose changes; the same outputs up to float
    round-off) when the model allows it, otherwise by the whole graph every time."""
    if FixedPocketForward.supports(model):
        return FixedPocketForward(model, c.ligand_z, c.pocket_z, c.pocket_pos, c.bonds)
    dtype, device = model.translation_scale.dtype, model.translation_scale.device

    def whole_graph(poses: Tensor) -> dict[str, Tensor]:
        return model(Batch.from_data_list([pose_graph(c, p, dtype) for p in poses]).to(device))

    return whole_graph


@torch.no_grad()
def refine(
    model: DockingModel, c: DockingComplex, starts: Tensor, steps: int = 6, step_size: float = 0.5, *, forward=None
) -> tuple[Tensor, Tensor]:
    """Apply the model's moves ``steps`` times to every start; return the final poses
    ``(S, L, 3)`` and the model's confidence logits ``(S,)`` for them.

    Each step scales the predicted translation, rotation and torsions by ``step_size`` (the
    last step by 1), so the poses approach the predicted target rather than jumping at it. The
    starts move independently of each other, all in one batch; ``forward`` (default
    :func:`pose_forward`: the pocket's part of the network once per call) may be shared by
    calls on the same complex.
    """
    if forward is None:
        forward = pose_forward(model, c)
    poses = starts.to(torch.float64).clone()
    T = c.bonds.shape[1]
    for step in range(steps + 1):
        out = forward(poses)
        if step == steps:
            return poses, out["confidence"].double().cpu()
        alpha = 1.0 if step == steps - 1 else step_size
        tr, rot = out["translation"].double().cpu(), out["rotation"].double().cpu()
        tor = out["torsion"].double().cpu().reshape(len(poses), T)
        poses = move_pose(poses, c.bonds, c.moving, alpha * tr, alpha * rot, alpha * tor)
    raise AssertionError("unreachable")


def dock(
    model: DockingModel, c: DockingComplex, *, starts: int = 32, steps: int = 6, step_size: float = 0.5,
    offset: float = 2.0, seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Docks ``c``'s start conformer into its pocket as track (b) does: ``starts`` random orientations with the
    centroid within ``offset`` Å of the pocket centre (:func:`track_b_starts`), each refined
    (:func:`refine`); returns the poses ``(S, L, 3)`` and confidence logits ``(S,)``, most confident first."""
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    poses, confidence = refine(model, c, track_b_starts(c, starts, seed, offset=offset), steps, step_size)
    order = torch.argsort(confidence, descending=True, stable=True)
    return poses[order], confidence[order]


# ---------------------------------------------------------------------------------- evaluation
def complex_rmsds(
    model: Optional[DockingModel], c: DockingComplex, starts: dict[str, Tensor], *, steps: int = 6, step_size: float = 0.5
) -> dict[str, list[float]]:
    """The RMSDs (Å) every method reaches on one complex, ``{"<track>_<method>": [...]}``, for
    :func:`docking_metrics`.

    ``starts`` is ``{"a": (S_a, L, 3), "b": (S_b, L, 3)}``. Track (a) gives one RMSD per start
    and method; track (b), only for a complex with a start conformer (without one it would
    redock the crystal geometry: flattering), one per method: the first start for the
    baselines (no ranking), the most confident refined pose for the model, and beside them
    ``b_model_oracle`` (the best refined pose) and ``b_floor`` (the matched conformer). The
    model's rows are there only when ``model`` is given; both tracks' starts are refined in one
    :func:`refine` (each start moves by itself).
    """
    tracks = {"a": starts["a"], **({"b": starts["b"]} if c.has_start_conf else {})}
    rows: dict[str, list[float]] = {}
    for track, poses in tracks.items():
        first = poses if track == "a" else poses[:1]
        rows[f"{track}_start"] = symmetric_rmsd(first, c.references).tolist()
        centred = first - first.mean(1, keepdim=True) + c.pocket_centre
        rows[f"{track}_centroid"] = symmetric_rmsd(centred, c.references).tolist()
    if model is not None:
        final, confidence = refine(model, c, torch.cat(list(tracks.values())), steps, step_size)
        sizes = [len(p) for p in tracks.values()]
        for track, poses, logits in zip(tracks, final.split(sizes), confidence.split(sizes)):
            rmsd = symmetric_rmsd(poses, c.references)
            if track == "a":
                rows["a_model"] = rmsd.tolist()
            else:
                rows["b_model"], rows["b_model_oracle"] = [float(rmsd[logits.argmax()])], [float(rmsd.min())]
    if c.has_start_conf:
        rows["b_floor"] = [c.matched_rmsd]
    return rows


def _statistic(values: Sequence[float], statistic: str) -> float:
    values = torch.tensor(list(values), dtype=torch.float64)
    if statistic == "success":
        return 100.0 * float((values < SUCCESS_RMSD).double().mean())
    return float(torch.quantile(values, 0.5))  # the mean of the two middle values when even


def docking_metrics(per_complex: Sequence[dict[str, list[float]]]) -> dict[str, float]:
    """The metrics of :func:`evaluate_docking` from each complex's :func:`complex_rmsds`.

    Success rates (%) and median RMSDs (Å) are over all the RMSDs of a method, whichever
    complex they come from; ``b_complexes`` counts the complexes of track (b). Only the
    metrics of the methods that ran are there (no ``*_model_*`` without a model).
    """
    rows: dict[str, list[float]] = {}
    for rmsds in per_complex:
        for method, values in rmsds.items():
            rows.setdefault(method, []).extend(values)
    metrics = {"b_complexes": float(sum("b_start" in rmsds for rmsds in per_complex))}
    for name, (method, statistic) in _RMSD_METRICS.items():
        if method in rows:
            metrics[name] = _statistic(rows[method], statistic)
    return metrics


def evaluate_docking(
    model: Optional[DockingModel],
    complexes: Sequence[DockingComplex],
    starts: dict[str, Sequence[Tensor]],
    *,
    steps: int = 6,
    step_size: float = 0.5,
) -> dict[str, float]:
    """Both tracks on ``complexes``: baselines, and the model when given.

    Args:
        starts: ``{"a": [per complex (S, L, 3)], "b": [...]}`` from :func:`benchmark_starts` (or
            :func:`track_a_starts` / :func:`track_b_starts`).
        steps, step_size: refinement (:func:`refine`).

    Returns:
        ``{"a_<method>_success": %, "a_<method>_median_rmsd": Å, ...}`` for ``method`` in
        ``start`` (no change), ``centroid`` (centroid to the pocket centre), ``model``; track
        (b) also ``b_model_oracle_success`` (best of the starts, not a result: an upper bound
        of ranking) and ``b_floor_median_rmsd`` (the matched conformer: the best rigid +
        torsion docking of the start conformer can do). Track (b) takes only complexes with a
        start conformer (``b_complexes``). :func:`metric_names` lists them all.
    """
    return docking_metrics([
        complex_rmsds(model, c, {track: poses[k] for track, poses in starts.items() if track == "a" or c.has_start_conf},
                      steps=steps, step_size=step_size)
        for k, c in enumerate(complexes)
    ])


def metric_names() -> list[str]:
    """Every metric :func:`evaluate_docking` can report (with a model and track (b) complexes)."""
    return [*_RMSD_METRICS, "b_complexes"]


def metric_unit(name: str) -> str:
    """Unit of a docking metric of :func:`evaluate_docking`."""
    return "%" if name.endswith("success") else "complexes" if name.endswith("complexes") else "Å"
