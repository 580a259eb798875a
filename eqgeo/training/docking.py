"""Docking training: training poses, the data module and the Lightning task.

Training follows DiffDock's recipe in its regression form: a training pose is a known pose
(the crystal ligand, or the start conformer with its torsions matched to it) moved by a random
torsion change, rotation and translation of a random size; the network
(:class:`eqgeo.models.DockingModel`) learns the moves that undo them, and a confidence logit
that the pose it sees is within 2 Å of the crystal.

The test stage refines the fixed starts of the two benchmark tracks on test complexes never seen
in training (the split is by complex), with the inference code any script uses:
:mod:`eqgeo.inference.docking` (:func:`~eqgeo.inference.docking.refine`, the tracks, the
baselines and the metrics).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch_geometric.data import Batch, Data

from ..data import keys as K
from ..data.errors import InvalidInputError, SkipReport
from ..data.poses import perturb_pose, random_rotation_vector, symmetric_rmsd
from ..datasets.docking import DockingComplex, load_docking_complexes, pdb_id
from ..inference.docking import (
    SUCCESS_RMSD,
    TRACK_A,
    TRACK_B,
    benchmark_starts,
    complex_rmsds,
    docking_metrics,
    metric_names,
    metric_unit,
    pose_graph,
    refine,
)
from ..models import DOCKING_SPECIES, DockingModel
from .tasks import RecordedTask, adam_with_schedule

__all__ = ["sample_training_pose", "DockingDataModule", "DockingTask", "ASTEX_DUPLICATES", "refined_examples", "fit_confidence"]

#: Default held-out duplicates: complexes under ``complexes/posebusters`` that are Astex entries.
ASTEX_DUPLICATES = ("1ia1", "1of6", "1s3v", "1uou")


# ------------------------------------------------------------------------------- training poses
def _wrap(angle: Tensor) -> Tensor:
    """Angles wrapped into ``(-π, π]``."""
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
    max_translation)^2)`` per axis. The targets (:data:`~eqgeo.data.keys.TARGET_TRANSLATION`,
    ...) are the moves that undo them; the confidence target is whether the moved pose is within
    :data:`~eqgeo.inference.docking.SUCCESS_RMSD` of the crystal.
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
    data[K.TARGET_TRANSLATION] = -translation.to(dtype)[None]
    data[K.TARGET_ROTATION] = -rotation.to(dtype)[None]
    data[K.TARGET_TORSION] = _wrap(-torsion).to(dtype)
    rmsd = symmetric_rmsd(pose, c.references)
    data[K.POSE_RMSD] = rmsd.reshape(1).to(dtype)
    data[K.CONFIDENCE_TARGET] = (rmsd < SUCCESS_RMSD).reshape(1).to(dtype)
    return data


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


class DockingDataModule(L.LightningDataModule):
    """Complexes split by complex into train/val/test, training poses and the fixed test starts.

    Args:
        root: folder of complex folders (default config: the Astex Diverse Set).
        extra_roots: more complex folders used for training only.
        exclude: PDB ids never taken from ``extra_roots`` (default the four
            ``complexes/posebusters`` entries that duplicate Astex complexes), nor from ``root`` when
            ``test_root`` is given; extra complexes whose PDB id is a validation or test complex are
            left out too. Both are listed in :attr:`report`.
        num_val, num_test: complexes held out (seeded split); the rest of ``root`` trains.
        test_root: a folder whose complexes are all the test split (e.g. train and validate on the
            PoseBusters set, test on Astex); ``num_test`` must then be 0, and complexes of ``root`` or
            ``extra_roots`` with the PDB id of a test complex never train or validate.
        pocket_radius, pocket_shape: pocket crop (Å; ``"ligand"``, ``"sphere"`` or ``"ball"``, see
            :func:`eqgeo.datasets.load_docking_complexes`).
        poses_per_complex: training poses per complex per epoch; val_poses: fixed poses per
            validation complex.
        max_translation: largest translation spread of training poses, Å.
        track_a: ``{"starts", "translation" (Å), "rotation" (rad), "torsion" (rad)}``, over
            :data:`~eqgeo.inference.docking.TRACK_A`.
        track_b: ``{"starts", "offset" (Å)}``, over :data:`~eqgeo.inference.docking.TRACK_B`.
        batch_size, seed, cutoff, cache_dir, dtype: as usual (``dtype`` of positions).
        dataset: the name runs are grouped under (``eqgeo-leaderboard``, ``metrics.json``; default: the
            folder name of ``root``).
    """

    def __init__(
        self,
        root: str,
        extra_roots: Sequence[str] = (),
        exclude: Sequence[str] = ASTEX_DUPLICATES,
        num_val: int = 8,
        num_test: int = 12,
        test_root: Optional[str] = None,
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
        dataset: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.origin = Path(root).name
        self.dataset = dataset or self.origin
        self.root, self.extra_roots, self.exclude = root, list(extra_roots), [e.lower() for e in exclude]
        self.num_val, self.num_test, self.num_complexes = int(num_val), int(num_test), num_complexes
        self.test_root = test_root
        if test_root is not None and self.num_test:
            raise ValueError(f"data.test_root={test_root} is the whole test split: set data.num_test=0 "
                             f"(got {self.num_test})")
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

    def _kept(self, root: str, complexes: list[DockingComplex], held_out: list[DockingComplex]) -> list[DockingComplex]:
        """``complexes`` without those of the PDB entry of a ``held_out`` complex (each named in the report)."""
        entries = {pdb_id(c.name) for c in held_out}
        for c in complexes:
            if pdb_id(c.name) in entries:
                self.report.add(InvalidInputError(f"{root}/{c.name}", "excluded: same PDB entry as a held-out complex"))
        return [c for c in complexes if pdb_id(c.name) not in entries]

    def setup(self, stage: Optional[str] = None) -> None:
        if self.complexes:
            return
        self.report = SkipReport()
        test = []
        if self.test_root is not None:
            test = self._load(self.test_root, ())
            if not test:
                raise ValueError(f"no complex under data.test_root={self.test_root} could be read:\n{self.report}")
        # without a test folder `exclude` is for the extra training folders only (root holds the test complexes)
        main = self._kept(self.root, self._load(self.root, self.exclude if test else (), self.num_complexes), test)
        if not main:
            raise ValueError(f"no complex under {self.root} could be read:\n{self.report}")
        if self.num_val + self.num_test >= len(main):
            raise ValueError(f"data.num_val + data.num_test = {self.num_val + self.num_test} leaves no training complex "
                             f"of the {len(main)} under {self.root}")
        perm = torch.randperm(len(main), generator=torch.Generator().manual_seed(self.seed)).tolist()
        test = test or [main[i] for i in sorted(perm[: self.num_test])]
        val = [main[i] for i in sorted(perm[self.num_test : self.num_test + self.num_val])]
        train = [main[i] for i in sorted(perm[self.num_test + self.num_val :])]
        for root in self.extra_roots:
            train += self._kept(root, self._load(root, self.exclude), val + test)
        self.complexes = {"train": train, "val": val, "test": test}
        self.starts = benchmark_starts(test, self.track_a, self.track_b, self.seed)
        self.statistics = self._statistics(train)

    def _statistics(self, train: list[DockingComplex]) -> dict:
        """Species, mean neighbour count at the cutoff, and the spread of the training moves."""
        from ..data.neighbors import radius_graph

        g = torch.Generator().manual_seed(self.seed + 1)
        samples = [sample_training_pose(train[k % len(train)], g, max_translation=self.max_translation, dtype=torch.float64)
                   for k in range(min(64, 8 * len(train)))]
        neighbours = [radius_graph(d[K.POSITION], self.cutoff).shape[1] / d.num_nodes for d in samples]
        tr = torch.cat([d[K.TARGET_TRANSLATION] for d in samples])
        rot = torch.cat([d[K.TARGET_ROTATION] for d in samples])
        tor = torch.cat([d[K.TARGET_TORSION] for d in samples])
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
        """The test complexes' indices, one per step, in order. Under DDP every process gets them all
        (Lightning keeps a ``DistributedSampler`` as it is, here one of a single replica): each
        process refines the whole split and logs the same exact metrics."""
        indices = range(len(self.complexes["test"]))
        return DataLoader(indices, batch_size=None, sampler=DistributedSampler(indices, num_replicas=1, rank=0, shuffle=False))


# ---------------------------------------------------------------------------------- task
class DockingTask(RecordedTask):
    """Trains :class:`~eqgeo.models.DockingModel` to undo pose moves; tests both docking tracks
    (:mod:`eqgeo.inference.docking`), one test complex per step.

    Loss: ``|Δt|²/s_t² + |Δω|²/s_r² + mean wrap(Δτ)²/s_τ² + w_c BCE(confidence, RMSD < 2 Å)``
    with ``s`` the spread of the training moves (from the data module's statistics).

    Args:
        model: the model config: ``_target_`` (:class:`~eqgeo.models.DockingModel`) and its
            arguments, with ``species`` and ``avg_num_neighbors``.
        statistics: ``{"translation_scale", "rotation_scale", "torsion_scale"}``.
        confidence_weight: weight of the confidence loss.
        refine_steps, step_size: test-time refinement (:func:`~eqgeo.inference.docking.refine`).
        lr, weight_decay, lr_factor, lr_patience: Adam and ReduceLROnPlateau on ``val/loss``.
    """

    kind = "docking"
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
        self.model = self.build_model(model)
        if not isinstance(self.model, DockingModel):
            raise ValueError(f"task=docking trains eqgeo's DockingModel (model=conv or model=transformer), "
                             f"not {model.get('_target_')}")
        if statistics is not None:
            self.model.set_statistics(statistics["translation_scale"], statistics["rotation_scale"], statistics["torsion_scale"])
        self.history: list[dict] = []
        self._val: dict[str, list[Tensor]] = {}
        self._test_rmsds: list[dict[str, list[float]]] = []  # per test complex, for the epoch's metrics

    @classmethod
    def data_arguments(cls, dm, config: dict) -> dict:
        """The spreads of the training moves, which scale the loss."""
        if not isinstance(dm, DockingDataModule):
            raise ValueError(f"task=docking needs protein-ligand complexes (data=astex), got data={type(dm).__name__}")
        return {"statistics": {k: dm.statistics[k] for k in ("translation_scale", "rotation_scale", "torsion_scale")}}

    def configure_optimizers(self):
        return adam_with_schedule(self)

    def forward(self, batch):
        return self.model(batch)

    def _errors(self, batch) -> dict[str, Tensor]:
        out = self.model(batch)
        return {
            "translation": out["translation"] - batch[K.TARGET_TRANSLATION],
            "rotation": out["rotation"] - batch[K.TARGET_ROTATION],
            "torsion": _wrap(out["torsion"] - batch[K.TARGET_TORSION]),
            "confidence": out["confidence"],
        }

    def _loss(self, batch, errors) -> Tensor:
        m = self.model
        loss = errors["translation"].square().sum(-1).mean() / m.translation_scale**2
        loss = loss + errors["rotation"].square().sum(-1).mean() / m.rotation_scale**2
        if errors["torsion"].numel():
            loss = loss + errors["torsion"].square().mean() / m.torsion_scale**2
        bce = torch.nn.functional.binary_cross_entropy_with_logits(errors["confidence"], batch[K.CONFIDENCE_TARGET].to(errors["confidence"].dtype))
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
        right = ((errors["confidence"] > 0) == (batch[K.CONFIDENCE_TARGET] > 0.5)).double()
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
        self.history.append({"epoch": self.current_epoch, "time_s": self.training_time_s(), **logged})

    def on_test_epoch_start(self) -> None:
        self._test_rmsds = []

    def test_step(self, index: int, batch_idx: int) -> None:
        """Both tracks on test complex ``index``: its fixed starts refined, the RMSDs of the model and
        the baselines kept for the epoch's metrics (:func:`~eqgeo.inference.docking.complex_rmsds`)."""
        dm = self.trainer.datamodule
        starts = {track: per_complex[index] for track, per_complex in dm.starts.items()}
        self._test_rmsds.append(complex_rmsds(self.model, dm.complexes["test"][index], starts,
                                              steps=self.hparams.refine_steps, step_size=self.hparams.step_size))

    def on_test_epoch_end(self) -> None:
        """The metrics of :func:`~eqgeo.inference.docking.evaluate_docking` over the whole test split
        (every process refined all of it: the same exact values everywhere)."""
        for name, value in docking_metrics(self._test_rmsds).items():
            self.log(f"test/{name}", value, sync_dist=True, reduce_fx="max")

    def metric_units(self) -> dict[str, str]:
        return {name: metric_unit(name) for name in metric_names()}

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
            "translation": (batch[K.TARGET_TRANSLATION].reshape(-1), out["translation"].reshape(-1)),
            "rotation": (batch[K.TARGET_ROTATION].reshape(-1), out["rotation"].reshape(-1)),
            "torsion": (batch[K.TARGET_TORSION], out["torsion"]),
        }


# ------------------------------------------------------------------- confidence on refined poses
def refined_examples(
    model: DockingModel, complexes: Sequence[DockingComplex], starts: dict[str, Sequence[Tensor]], *,
    steps: int = 6, step_size: float = 0.5,
) -> list[tuple[Tensor, Tensor]]:
    """What the confidence head sees at the model's own refined poses: per complex, the head's input at the
    ligand atoms ``(S, L, F)`` of each of its ``S`` starts (``starts["a"]`` and ``starts["b"]`` refined by
    :func:`~eqgeo.inference.docking.refine`) and the refined poses' RMSDs ``(S,)`` (Å)."""
    captured: list[Tensor] = []
    hook = model.confidence_head.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    dtype = model.translation_scale.dtype
    examples = []
    try:
        with torch.no_grad():
            for k, c in enumerate(complexes):
                poses = torch.cat([starts[track][k] for track in ("a", "b") if track in starts])
                final, _ = refine(model, c, poses, steps, step_size)
                captured.clear()
                batch = Batch.from_data_list([pose_graph(c, p, dtype) for p in final])
                model(batch.to(model.translation_scale.device))
                ligand = (batch[K.NODE_TYPE] == K.NODE_LIGAND).to(captured[-1].device)
                features = captured[-1][ligand].reshape(len(final), c.ligand_z.numel(), -1).cpu()
                examples.append((features, symmetric_rmsd(final, c.references)))
    finally:
        hook.remove()
    return examples


class _Poses:
    """:func:`refined_examples` of many complexes flattened for one head call: the ligand atoms' features
    ``(A, F)``, each atom's pose, and each pose's complex, RMSD and success label."""

    def __init__(self, examples: Sequence[tuple[Tensor, Tensor]], dtype: torch.dtype) -> None:
        self.features = torch.cat([f.reshape(-1, f.shape[-1]) for f, _ in examples]).to(dtype)
        sizes = [(f.shape[0], f.shape[1]) for f, _ in examples]  # (poses, ligand atoms) per complex
        self.num_poses = sum(s for s, _ in sizes)
        self.atom_pose = torch.repeat_interleave(torch.arange(self.num_poses), torch.tensor([n for s, n in sizes for _ in range(s)]))
        self.atoms_per_pose = torch.bincount(self.atom_pose, minlength=self.num_poses).to(dtype)
        self.pose_complex = torch.repeat_interleave(torch.arange(len(examples)), torch.tensor([s for s, _ in sizes]))
        self.rmsd = torch.cat([r for _, r in examples]).double()
        self.label = (self.rmsd < SUCCESS_RMSD).to(dtype)
        self.num_complexes = len(examples)

    def logits(self, head: torch.nn.Module) -> Tensor:
        """The confidence of every pose: the ligand mean of the head's output (as :class:`DockingModel` reads it)."""
        per_atom = head(self.features).squeeze(-1)
        return per_atom.new_zeros(self.num_poses).index_add(0, self.atom_pose, per_atom) / self.atoms_per_pose

    def ranking(self, head: torch.nn.Module) -> dict[str, float]:
        """Top-1 success (%), the oracle's (best of the poses) and the mean BCE of the poses."""
        with torch.no_grad():
            logits = self.logits(head).double()
        top1, oracle = [], []
        for k in range(self.num_complexes):
            mine = (self.pose_complex == k).nonzero().flatten()
            top1.append(float(self.rmsd[mine[logits[mine].argmax()]]) < SUCCESS_RMSD)
            oracle.append(float(self.rmsd[mine].min()) < SUCCESS_RMSD)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, self.label.double())
        return {"top1_success": 100.0 * sum(top1) / len(top1), "oracle_success": 100.0 * sum(oracle) / len(oracle),
                "bce": float(bce)}


def fit_confidence(
    model: DockingModel, train: Sequence[tuple[Tensor, Tensor]], val: Sequence[tuple[Tensor, Tensor]], *,
    epochs: int = 300, lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
) -> dict:
    """Refits ``model.confidence_head`` (the rest of the network fixed) to tell the model's own refined poses
    within :data:`~eqgeo.inference.docking.SUCCESS_RMSD` from the others, as DiffDock trains its confidence
    model on the poses its score model makes: the confidence trained on perturbed crystal poses never sees
    where refinement ends, and ranks those poses little better than chance.

    ``train`` and ``val`` are :func:`refined_examples`. Full-batch Adam on the binary cross-entropy of each
    pose (the successes weighted up to the failures' total), keeping the head with the best validation
    top-1 success (ties: lower validation BCE; the head as it was counts too). Returns the validation
    ranking before and after (``{"before", "after"}``: top-1 and oracle success, %, and BCE) and the epoch
    kept; the model is changed in place.
    """
    if not train or not val:
        raise ValueError("fit_confidence needs refined poses of training and of validation complexes")
    head = model.confidence_head
    dtype = next(head.parameters()).dtype
    train_poses, val_poses = _Poses(train, dtype), _Poses(val, dtype)
    positives = float(train_poses.label.sum())
    pos_weight = torch.tensor(max(train_poses.num_poses - positives, 1.0) / max(positives, 1.0), dtype=dtype)
    before = val_poses.ranking(head)
    best = (before["top1_success"], -before["bce"], {k: v.clone() for k, v in head.state_dict().items()}, 0)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(train_poses.logits(head), train_poses.label,
                                                                    pos_weight=pos_weight)
        loss.backward()
        optimizer.step()
        if epoch % 10 == 0 or epoch == epochs:
            now = val_poses.ranking(head)
            if (now["top1_success"], -now["bce"]) > best[:2]:
                best = (now["top1_success"], -now["bce"], {k: v.clone() for k, v in head.state_dict().items()}, epoch)
    head.load_state_dict(best[2])
    return {"before": before, "after": val_poses.ranking(head), "epoch": best[3], "train_poses": train_poses.num_poses,
            "train_successes": int(positives)}
