"""Lightning data modules: QM9 and MD17-style files split into train / val / test loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

from ..data import keys as K
from ..models.statistics import dataset_statistics

__all__ = ["QM9DataModule", "MD17DataModule"]


def _require_file(path, what: str, override: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist (resolved from {Path.cwd()}); set {override}=/path/to/file")
    return p


class _Shard(DistributedSampler):
    """Every ``num_replicas``-th sample from ``rank`` on, in order, none repeated: each sample is
    evaluated once over all processes (shards differ by one sample at most).

    Lightning's default ``DistributedSampler`` pads the shards to equal length with repeated samples,
    which would weigh those samples twice in validation and test metrics. Being a
    ``DistributedSampler``, this one is kept by Lightning as it is.
    """

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = list(range(rank, len(dataset), num_replicas))
        self.num_samples = len(self.indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


class _SplitDataModule(L.LightningDataModule):
    """Holds ``train``/``val``/``test`` datasets (set by :meth:`setup`) and their statistics."""

    def __init__(self, batch_size: int, seed: int, cutoff: float) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.seed, self.cutoff = int(batch_size), int(seed), float(cutoff)
        self.splits: dict = {}
        self.statistics: dict = {}

    def sizes(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.splits.items()}

    #: ``{"train": [...], "val": [...], "test": [...]}``: each split's samples by their dataset index (QM9's
    #: ``idx``), in the split's order; empty where the data have no such index.
    split_indices: dict = {}

    def split_digest(self) -> Optional[str]:
        """SHA-256 (first 16 hex digits) of :attr:`split_indices`: two runs with equal digests trained,
        validated and tested on the same molecules (``None`` without indices)."""
        if not self.split_indices:
            return None
        import hashlib
        import json

        text = json.dumps({name: self.split_indices[name] for name in sorted(self.split_indices)})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _split(self, name: str):
        if name not in self.splits:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return self.splits[name]

    def loader(self, name: str, shuffle: bool = False) -> DataLoader:
        """All of split ``name`` in this process, whatever the number of processes (parity plots)."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self._split(name), batch_size=self.batch_size, shuffle=shuffle, generator=generator)

    def _evaluation_loader(self, name: str) -> DataLoader:
        """Split ``name`` in order; under DDP this process's :class:`_Shard` of it (no sample repeated)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self.loader(name)
        dataset = self._split(name)
        if len(dataset) < trainer.world_size:
            raise ValueError(f"the {name} split has {len(dataset)} samples, fewer than the {trainer.world_size} "
                             "processes: each process needs one at least")
        shard = _Shard(dataset, trainer.world_size, trainer.global_rank)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=shard)

    def train_dataloader(self):
        return self.loader("train", shuffle=True)  # Lightning shards it under DDP (DistributedSampler)

    def val_dataloader(self):
        return self._evaluation_loader("val")

    def test_dataloader(self):
        return self._evaluation_loader("test")


class QM9DataModule(_SplitDataModule):
    """QM9 (:class:`eqgeo.datasets.QM9`): a seeded subset, split into train / val / test.

    Args:
        source: ``None`` for the qm9pack wheel, or a folder of raw / qm9pack files.
        subset: molecules drawn before splitting (``None``: all).
        num_train, num_val: split sizes; num_test: test molecules (``None``: the rest).
        batch_size, seed, cutoff: loader batch size, split seed, cutoff of the statistics.
        dataset: the name runs are grouped under (``eqgeo-leaderboard``, ``metrics.json``).
    """

    def __init__(
        self,
        source: Optional[str] = None,
        subset: Optional[int] = 1000,
        num_train: int = 800,
        num_val: int = 100,
        num_test: Optional[int] = 100,
        batch_size: int = 32,
        seed: int = 0,
        cutoff: float = 5.0,
        dataset: str = "QM9",
    ) -> None:
        super().__init__(batch_size, seed, cutoff)
        self.dataset = dataset
        self.origin = "qm9pack wheel" if source is None else Path(source).name
        if source is not None and not Path(source).expanduser().exists():
            raise FileNotFoundError(f"QM9 source {source} does not exist; set data.source=/path/to/qm9 (or null for qm9pack)")
        self.source, self.subset = source, subset
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.target_names: tuple = ()
        self.target_units: tuple = ()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        from ..datasets import QM9

        dataset = QM9(source=self.source, subset=self.subset, subset_seed=self.seed)
        if self.num_train + self.num_val > len(dataset):
            raise ValueError(
                f"data.num_train + data.num_val = {self.num_train + self.num_val} exceeds the {len(dataset)} molecules "
                f"(data.subset={self.subset})"
            )
        split = dataset.split(self.seed, self.num_train, self.num_val)
        test = split["test"] if self.num_test is None else split["test"][: self.num_test]
        self.splits = {"train": dataset.index_select(split["train"]), "val": dataset.index_select(split["val"]),
                       "test": dataset.index_select(test)}
        self.target_names, self.target_units = tuple(QM9.targets), tuple(QM9.target_units)
        self.split_indices = {name: [int(g.idx) for g in ds] for name, ds in self.splits.items()}
        self.statistics = dataset_statistics(self.splits["train"], self.cutoff, energy_key=None)
        self.statistics["y"] = torch.cat([g[K.TARGET] for g in self.splits["train"]]).to(torch.float64)
        self.statistics["num_atoms"] = torch.tensor([g.num_nodes for g in self.splits["train"]])


class MD17DataModule(_SplitDataModule):
    """Energies and forces of MD17-style files (:func:`eqgeo.datasets.rmd17_splits`): train / val from
    ``train_file``, test = ``test_file`` (its first ``num_test`` frames when given), or with
    ``test_file=None`` ``num_test`` frames held out of ``train_file`` (seeded, fixed whatever the
    training size).

    Missing files stop with an error that names the file and the override to set. ``dataset`` is the
    name runs are grouped under (``eqgeo-leaderboard``, ``metrics.json``; default: the training file's
    folder and name).
    """

    def __init__(
        self,
        train_file: str,
        test_file: Optional[str],
        isolated_atoms: Optional[str] = None,
        energy_unit: Optional[str] = "eV",
        num_train: int = 950,
        num_val: int = 50,
        num_test: Optional[int] = None,
        batch_size: int = 5,
        seed: int = 0,
        cutoff: float = 5.0,
        dataset: Optional[str] = None,
    ) -> None:
        super().__init__(batch_size, seed, cutoff)
        self.origin = "/".join(Path(train_file).parts[-2:])
        self.dataset = dataset or self.origin
        self.train_file = _require_file(train_file, "training file", "data.train_file")
        self.test_file = None if test_file is None else _require_file(test_file, "test file", "data.test_file")
        self.isolated_atoms = None if isolated_atoms is None else _require_file(
            isolated_atoms, "isolated-atom file", "data.isolated_atoms"
        )
        self.energy_unit = energy_unit
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        from ..datasets import rmd17_splits

        splits = rmd17_splits(
            self.train_file, self.test_file, energy_unit=self.energy_unit, isolated_atoms=self.isolated_atoms,
            seed=self.seed, num_train=self.num_train, num_val=self.num_val, num_test=self.num_test,
        )
        self.splits = splits
        # the isolated-atom energies of data.isolated_atoms, when given, set the energy shifts
        atomic_energies = getattr(self.splits["train"], "atomic_energies", None)
        self.statistics = dataset_statistics(self.splits["train"], self.cutoff, atomic_energies=atomic_energies)
