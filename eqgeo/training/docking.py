"""Docking: pose sampling, iterative refinement, the two benchmark tracks, data module and task.

Training follows DiffDock's recipe in its regression form: a training pose is a known pose
(the crystal ligand, or the start conformer with its torsions matched to it) moved by a random
torsion change, rotation and translation of a random size; the network
(:class:`eqgeo.models.DockingModel`) learns the moves that undo them, and a confidence logit
that the pose it sees is within 2 Å of the crystal. At test time the predicted moves are
applied iteratively (:func:`refine`).

Two tracks, on test complexes never seen in training (the split is by complex):

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
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Batch, Data

from ..data import keys as K
from ..data.errors import InvalidInputError, SkipReport
from ..data.poses import move_pose, perturb_pose, random_rotation_vector, rigid_move, symmetric_rmsd
from ..datasets.docking import DockingComplex, load_docking_complexes, pdb_id
from ..models import DOCKING_SPECIES, DockingModel
from ..models.docking import FixedPocketForward
from .tasks import adam_with_plateau

__all__ = [
    "pose_graph",
    "sample_training_pose",
    "pose_forward",
    "refine",
    "track_a_starts",
    "track_b_starts",
    "benchmark_starts",
    "evaluate_docking",
    "DockingDataModule",
    "DockingTask",
    "SUCCESS_RMSD",
]

#: A pose is a success when its symmetry-corrected RMSD is below this (Å).
SUCCESS_RMSD = 2.0
#: Track (a) starts: per complex, the crystal pose moved by torsions U(-torsion, torsion), a rotation of
#: angle U(0, rotation) rad and a translation N(0, translation^2) Å per axis.
TRACK_A = {"starts": 4, "translation": 2.0, "rotation": 1.0, "torsion": math.pi}
#: Track (b) starts: the start conformer at random orientations, centroid within ``offset`` Å of the pocket centre.
TRACK_B = {"starts": 8, "offset": 2.0}
#: Default held-out duplicates: complexes under ``complexes/posebusters`` that are Astex entries.
ASTEX_DUPLICATES = ("1ia1", "1of6", "1s3v", "1uou")


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


def _wrap(angle: Tensor) -> Tensor:
    return torch.atan2(angle.sin(), angle.cos())


def sample_training_pose(
    c: DockingComplex,
    generator: torch.Generator,
    *,
    max_translation: float = 3.0,
    conformer_probability: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """A training example: a known pose moved by random moves of a random size ``s ~ U(0, 1)``.

    The known pose is the crystal pose or (with ``conformer_probability``, when the complex has
    a start conformer) the conformer matched to it. The moves: torsions ``U(-sπ, sπ)``, a
    rotation of angle ``U(0, sπ)`` about a random axis, a translation ``N(0, (s
    max_translation)^2)`` per axis. The targets are the moves that undo them; the confidence
    label is whether the moved pose is within :data:`SUCCESS_RMSD` of the crystal.
    """
    s = float(torch.rand((), generator=generator))
    conformer = c.has_start_conf and float(torch.rand((), generator=generator)) < conformer_probability
    base = c.matched if conformer else c.crystal
    T = c.bonds.shape[1]
    torsion = (torch.rand(T, dtype=torch.float64, generator=generator) * 2 - 1) * s * math.pi
    rotation = random_rotation_vector(s * math.pi, generator)
    translation = torch.randn(3, dtype=torch.float64, generator=generator) * s * max_translation
    pose = perturb_pose(base, c.bonds, c.moving, translation, rotation, torsion)
    data = pose_graph(c, pose, dtype)
    data.target_translation = -translation.to(dtype)[None]
    data.target_rotation = -rotation.to(dtype)[None]
    data.target_torsion = _wrap(-torsion).to(dtype)
    rmsd = symmetric_rmsd(pose, c.references)
    data.rmsd = rmsd.reshape(1).to(dtype)
    data.label = (rmsd < SUCCESS_RMSD).reshape(1).to(dtype)
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
    ``{"a": [(S_a, L, 3), ...], "b": [(S_b, L, 3), ...]}``; ``track_a`` / ``track_b`` as in
    :class:`DockingDataModule`."""
    return {
        "a": [track_a_starts(c, track_a["starts"], _complex_seed(seed, c.name, "a"), translation=track_a["translation"],
                             rotation=track_a["rotation"], torsion=track_a["torsion"]) for c in complexes],
        "b": [track_b_starts(c, track_b["starts"], _complex_seed(seed, c.name, "b"), offset=track_b["offset"])
              for c in complexes],
    }


# ---------------------------------------------------------------------------------- refinement
def pose_forward(model: DockingModel, c: DockingComplex):
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


def _stats(rmsd: Sequence[float]) -> dict[str, float]:
    values = torch.tensor(list(rmsd), dtype=torch.float64)
    return {"success": 100.0 * float((values < SUCCESS_RMSD).double().mean()),
            "median_rmsd": float(torch.quantile(values, 0.5))}  # the mean of the two middle values when even


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
        starts: ``{"a": [per complex (S, L, 3)], "b": [...]}`` from :func:`track_a_starts` /
            :func:`track_b_starts`.

    Returns:
        ``{"a_<method>_success": %, "a_<method>_median_rmsd": Å, ...}`` for ``method`` in
        ``start`` (no change), ``centroid`` (centroid to the pocket centre), ``model``; track
        (b) also ``b_model_oracle_success`` (best of the starts, not a result: an upper bound
        of ranking) and ``b_floor_median_rmsd`` (the matched conformer: the best rigid +
        torsion docking of the start conformer can do). Track (b) takes only complexes with a
        start conformer (``b_complexes``).
    """
    rows: dict[str, list[float]] = {}
    for k, c in enumerate(complexes):
        tracks = {"a": starts["a"][k]}
        if c.has_start_conf:  # track (b) without a start conformer would redock the crystal geometry: flattering
            tracks["b"] = starts["b"][k]
        if model is not None:  # both tracks' starts refined together (each start moves by itself)
            final, confidence = refine(model, c, torch.cat(list(tracks.values())), steps, step_size)
            sizes = [len(p) for p in tracks.values()]
            refined = dict(zip(tracks, zip(final.split(sizes), confidence.split(sizes))))
        for track, poses in tracks.items():
            first = poses if track == "a" else poses[:1]  # track (b) without ranking: the first start
            rows.setdefault(f"{track}_start", []).extend(symmetric_rmsd(first, c.references).tolist())
            centred = first - first.mean(1, keepdim=True) + c.pocket_centre
            rows.setdefault(f"{track}_centroid", []).extend(symmetric_rmsd(centred, c.references).tolist())
            if model is not None:
                final, confidence = refined[track]
                rmsd = symmetric_rmsd(final, c.references)
                if track == "a":
                    rows.setdefault("a_model", []).extend(rmsd.tolist())
                else:
                    rows.setdefault("b_model", []).append(float(rmsd[confidence.argmax()]))
                    rows.setdefault("b_model_oracle", []).append(float(rmsd.min()))
            if track == "b":
                rows.setdefault("b_floor", []).append(c.matched_rmsd)
    metrics = {"b_complexes": float(sum(c.has_start_conf for c in complexes))}
    for name, values in rows.items():
        for key, value in _stats(values).items():
            if name == "b_floor" and key == "success":
                continue
            if name == "b_model_oracle" and key == "median_rmsd":
                continue
            metrics[f"{name}_{key}"] = value
    return metrics


def metric_unit(name: str) -> str:
    """Unit of a docking metric of :func:`evaluate_docking`."""
    return "%" if name.endswith("success") else "complexes" if name.endswith("complexes") else "Å"


# ---------------------------------------------------------------------------------- data
class _TrainingPoses(Dataset):
    """``poses_per_complex`` random poses of each complex per epoch (fresh each time), or fixed ones."""

    def __init__(self, complexes, poses_per_complex: int, seed: Optional[int], max_translation: float, dtype):
        self.complexes, self.n, self.seed = list(complexes), int(poses_per_complex), seed
        self.max_translation, self.dtype = max_translation, dtype

    def __len__(self) -> int:
        return len(self.complexes) * self.n

    def __getitem__(self, index: int) -> Data:
        if self.seed is None:  # training: drawn from the global RNG (seeded by Lightning)
            seed = int(torch.randint(0, 2**62, ()))
        else:  # validation: the same poses every epoch
            seed = self.seed * 1_000_003 + index
        g = torch.Generator().manual_seed(seed)
        return sample_training_pose(self.complexes[index % len(self.complexes)], g,
                                    max_translation=self.max_translation, dtype=self.dtype)


class _Cases(Dataset):
    """Indices of the test complexes (the test stage refines the whole split at its end)."""

    def __init__(self, num: int):
        self.num = num

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> int:
        return index


def _first(items: list) -> int:
    return items[0]


class DockingDataModule(L.LightningDataModule):
    """Complexes split by complex into train/val/test, training poses and the fixed test starts.

    Args:
        root: folder of complex folders (default config: the Astex Diverse Set).
        extra_roots: more complex folders used for training only.
        exclude: PDB ids never taken from ``extra_roots`` (default the four
            ``complexes/posebusters`` entries that duplicate Astex complexes); extra complexes
            whose PDB id is a validation or test complex are left out too. Both are listed in
            :attr:`report`.
        num_val, num_test: complexes held out (seeded split); the rest of ``root`` trains.
        pocket_radius, pocket_shape: pocket crop (Å; ``"ligand"`` or ``"sphere"``, see
            :func:`eqgeo.datasets.load_docking_complexes`).
        poses_per_complex: training poses per complex per epoch; val_poses: fixed poses per
            validation complex.
        max_translation: largest translation spread of training poses, Å.
        track_a: ``{"starts", "translation" (Å), "rotation" (rad), "torsion" (rad)}``.
        track_b: ``{"starts", "offset" (Å)}``.
        batch_size, seed, cutoff, cache_dir, dtype: as usual (``dtype`` of positions).
    """

    def __init__(
        self,
        root: str,
        extra_roots: Sequence[str] = (),
        exclude: Sequence[str] = ASTEX_DUPLICATES,
        num_val: int = 8,
        num_test: int = 12,
        pocket_radius: float = 10.0,
        pocket_shape: str = "ligand",
        poses_per_complex: int = 4,
        val_poses: int = 4,
        max_translation: float = 3.0,
        track_a: Optional[dict] = None,
        track_b: Optional[dict] = None,
        batch_size: int = 4,
        seed: int = 0,
        cutoff: float = 5.0,
        cache_dir: Optional[str] = None,
        num_complexes: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.root, self.extra_roots, self.exclude = root, list(extra_roots), [e.lower() for e in exclude]
        self.num_val, self.num_test, self.num_complexes = int(num_val), int(num_test), num_complexes
        self.pocket_radius, self.poses_per_complex, self.val_poses = pocket_radius, poses_per_complex, val_poses
        self.pocket_shape = pocket_shape
        self.max_translation = float(max_translation)
        self.track_a = {**TRACK_A, **(track_a or {})}
        self.track_b = {**TRACK_B, **(track_b or {})}
        self.batch_size, self.seed, self.cutoff, self.cache_dir = int(batch_size), int(seed), float(cutoff), cache_dir
        self.dtype = torch.float32
        self.statistics: dict = {}
        self.complexes: dict[str, list[DockingComplex]] = {}
        self.starts: dict[str, list[Tensor]] = {}

    def _load(self, root: str, exclude: Sequence[str], first: Optional[int] = None) -> list[DockingComplex]:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"complex folder {root} does not exist; set data.root=<folder of complex folders>")
        ids = None if first is None else sorted(p.name for p in Path(root).iterdir() if p.is_dir())[: int(first)]
        complexes, report = load_docking_complexes(root, ids=ids, exclude=exclude, pocket_radius=self.pocket_radius,
                                                   pocket_shape=self.pocket_shape,
                                                   skip_invalid=True, cache_dir=self.cache_dir)
        self.report.extend(report)
        return complexes

    def setup(self, stage: Optional[str] = None) -> None:
        if self.complexes:
            return
        self.report = SkipReport()
        main = self._load(self.root, (), self.num_complexes)  # `exclude` is for the extra training folders
        if not main:
            raise ValueError(f"no complex under {self.root} could be read:\n{self.report}")
        if self.num_val + self.num_test >= len(main):
            raise ValueError(f"data.num_val + data.num_test = {self.num_val + self.num_test} leaves no training complex "
                             f"of the {len(main)} under {self.root}")
        perm = torch.randperm(len(main), generator=torch.Generator().manual_seed(self.seed)).tolist()
        test = [main[i] for i in sorted(perm[: self.num_test])]
        val = [main[i] for i in sorted(perm[self.num_test : self.num_test + self.num_val])]
        train = [main[i] for i in sorted(perm[self.num_test + self.num_val :])]
        held_out = {pdb_id(c.name) for c in val + test}
        for root in self.extra_roots:
            for c in self._load(root, self.exclude):
                if pdb_id(c.name) in held_out:
                    self.report.add(InvalidInputError(f"{root}/{c.name}", "excluded: same PDB entry as a held-out complex"))
                else:
                    train.append(c)
        self.complexes = {"train": train, "val": val, "test": test}
        self.starts = benchmark_starts(test, self.track_a, self.track_b, self.seed)
        self.statistics = self._statistics(train)

    def _statistics(self, train: list[DockingComplex]) -> dict:
        """Species, mean neighbour count at the cutoff, and the spread of the training moves."""
        from ..data.neighbors import radius_graph

        g = torch.Generator().manual_seed(self.seed + 1)
        samples = [sample_training_pose(train[k % len(train)], g, max_translation=self.max_translation, dtype=torch.float64)
                   for k in range(min(64, 8 * len(train)))]
        neighbours = [radius_graph(d.pos, self.cutoff).shape[1] / d.num_nodes for d in samples]
        tr = torch.cat([d.target_translation for d in samples])
        rot = torch.cat([d.target_rotation for d in samples])
        tor = torch.cat([d.target_torsion for d in samples])
        return {
            "species": list(DOCKING_SPECIES),
            "avg_num_neighbors": float(sum(neighbours) / len(neighbours)),
            "translation_scale": float(tr.square().mean().sqrt()),
            "rotation_scale": float(rot.square().mean().sqrt()),
            "torsion_scale": float(tor.square().mean().sqrt()) if tor.numel() else 1.0,
        }

    def sizes(self) -> dict[str, int]:
        return {name: len(cs) for name, cs in self.complexes.items()}

    def train_dataloader(self):
        ds = _TrainingPoses(self.complexes["train"], self.poses_per_complex, None, self.max_translation, self.dtype)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, collate_fn=Batch.from_data_list,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self):
        ds = _TrainingPoses(self.complexes["val"], self.val_poses, self.seed + 17, self.max_translation, self.dtype)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, collate_fn=Batch.from_data_list)

    def test_dataloader(self):
        return DataLoader(_Cases(len(self.complexes["test"])), batch_size=1, collate_fn=_first)


# ---------------------------------------------------------------------------------- task
class DockingTask(L.LightningModule):
    """Trains :class:`~eqgeo.models.DockingModel` to undo pose moves; tests both docking tracks.

    Loss: ``|Δt|²/s_t² + |Δω|²/s_r² + mean wrap(Δτ)²/s_τ² + w_c BCE(confidence, RMSD < 2 Å)``
    with ``s`` the spread of the training moves (from the data module's statistics).

    Args:
        model: architecture arguments of :class:`~eqgeo.models.DockingModel` plus ``species``
            and ``avg_num_neighbors``.
        statistics: ``{"translation_scale", "rotation_scale", "torsion_scale"}``.
        confidence_weight: weight of the confidence loss.
        refine_steps, step_size: test-time refinement (:func:`refine`).
        lr, weight_decay, lr_factor, lr_patience: Adam and ReduceLROnPlateau on ``val/loss``.
    """

    units = {"translation": "Å", "rotation": "rad", "torsion": "rad"}

    def __init__(
        self,
        model: dict,
        statistics: Optional[dict] = None,
        confidence_weight: float = 1.0,
        refine_steps: int = 6,
        step_size: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_factor: float = 0.8,
        lr_patience: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = DockingModel(**model)
        if statistics is not None:
            self.model.set_statistics(statistics["translation_scale"], statistics["rotation_scale"], statistics["torsion_scale"])
        self.history: list[dict] = []
        self._val: dict[str, list[Tensor]] = {}
        self._test_starts: Optional[dict] = None

    def configure_optimizers(self):
        return adam_with_plateau(self)

    def forward(self, batch):
        return self.model(batch)

    def _errors(self, batch) -> dict[str, Tensor]:
        out = self.model(batch)
        return {
            "translation": out["translation"] - batch.target_translation,
            "rotation": out["rotation"] - batch.target_rotation,
            "torsion": _wrap(out["torsion"] - batch.target_torsion),
            "confidence": out["confidence"],
        }

    def _loss(self, batch, errors) -> Tensor:
        m = self.model
        loss = errors["translation"].square().sum(-1).mean() / m.translation_scale**2
        loss = loss + errors["rotation"].square().sum(-1).mean() / m.rotation_scale**2
        if errors["torsion"].numel():
            loss = loss + errors["torsion"].square().mean() / m.torsion_scale**2
        bce = torch.nn.functional.binary_cross_entropy_with_logits(errors["confidence"], batch.label.to(errors["confidence"].dtype))
        return loss + self.hparams.confidence_weight * bce

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, self._errors(batch))
        self.log("train/loss", loss, batch_size=batch.num_graphs, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch, batch_idx):
        errors = self._errors(batch)
        loss = self._loss(batch, errors)
        self.log("val/loss", loss, batch_size=batch.num_graphs, on_epoch=True, sync_dist=True)
        self._val.setdefault("translation", []).append(errors["translation"].norm(dim=-1).detach())
        self._val.setdefault("rotation", []).append(errors["rotation"].norm(dim=-1).detach())
        self._val.setdefault("torsion", []).append(errors["torsion"].abs().detach())
        right = ((errors["confidence"] > 0) == (batch.label > 0.5)).double()
        self._val.setdefault("confidence_accuracy", []).append(right.detach())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        logged = {}
        for name, chunks in self._val.items():
            values = torch.cat(chunks).double()
            if values.numel():
                key = f"val/{name}_mae" if name in self.units else f"val/{name}"
                logged[key] = float(values.mean()) * (100.0 if name == "confidence_accuracy" else 1.0)
        for key, value in logged.items():
            self.log(key, value, prog_bar=key == "val/translation_mae", sync_dist=True)
        self.history.append({"epoch": self.current_epoch, **logged})

    def test_step(self, index, batch_idx):
        pass  # the whole test split is refined at the epoch's end

    def on_test_epoch_end(self) -> None:
        """Both tracks on every test complex. Under DDP each process sees a shard of the test
        loader, so every process refines the whole split instead (the same exact numbers everywhere)."""
        dm = self.trainer.datamodule
        self.eval()
        metrics = evaluate_docking(self.model, dm.complexes["test"], dm.starts, steps=self.hparams.refine_steps,
                                   step_size=self.hparams.step_size)
        for name, value in metrics.items():
            self.log(f"test/{name}", value, sync_dist=True, reduce_fx="max")

    def metric_units(self) -> dict[str, str]:
        names = [f"{t}_{m}_{k}" for t in "ab" for m in ("start", "centroid", "model") for k in ("success", "median_rmsd")]
        names += ["b_model_oracle_success", "b_floor_median_rmsd", "b_complexes"]
        return {n: metric_unit(n) for n in names}

    def predictions(self, index) -> dict[str, tuple[Tensor, Tensor]]:
        """One-shot moves predicted for training-style poses of test complex ``index``: ``{move: (true, predicted)}``."""
        if self._trainer is None or not isinstance(self.trainer.datamodule, DockingDataModule):
            raise RuntimeError("DockingTask.predictions needs a trainer with a DockingDataModule")
        c = self.trainer.datamodule.complexes["test"][index]
        g = torch.Generator().manual_seed(index)
        batch = Batch.from_data_list([sample_training_pose(c, g, dtype=self.model.translation_scale.dtype) for _ in range(4)])
        batch = batch.to(self.device)
        with torch.no_grad():
            out = self.model(batch)
        return {
            "translation": (batch.target_translation.reshape(-1), out["translation"].reshape(-1)),
            "rotation": (batch.target_rotation.reshape(-1), out["rotation"].reshape(-1)),
            "torsion": (batch.target_torsion, out["torsion"]),
        }
