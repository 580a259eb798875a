"""Base of eqgeo's datasets: an ``InMemoryDataset`` processed once from source files and cached.

The cache lives under a configurable folder (default :func:`default_cache_root`), never next
to the source files or inside site-packages. Its file name is a fingerprint of the source
files (path, size, modification time), of the options and of :data:`CACHE_VERSION`, so a
changed file or option, or a new version of what is cached, makes a new cache instead of
reusing a stale one. What ``skip_invalid=True`` left out is saved next to the cache and loaded
back as :attr:`CachedDataset.report`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch_geometric.data import Data, InMemoryDataset

from ..data.errors import InvalidInputError, SkipReport

__all__ = ["default_cache_root", "CachedDataset", "random_split_indices"]

#: Version of what a cache holds for given files and options. It is part of the fingerprint that
#: names the cache file, so a bump makes every dataset rebuild its cache under a new name instead
#: of reading an old one. Bump it whenever the graphs read from the same files with the same
#: options change (a new field, another unit or conversion, rows or frames read differently).
#: 2: ASE databases read row by row (row data, metadata units, ``_distance_unit`` applied, frames
#: lacking an energy other frames have raise), ASE's own columns in eV and eV/Å whatever the
#: metadata lists, forces without a stated unit per the file's length unit.
CACHE_VERSION = 2


def default_cache_root() -> Path:
    """``$EQGEO_CACHE`` if set, else ``$XDG_CACHE_HOME/eqgeo``, else ``~/.cache/eqgeo``."""
    if os.environ.get("EQGEO_CACHE"):
        return Path(os.environ["EQGEO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "eqgeo"


def fingerprint(files: Iterable[Path], options: dict) -> str:
    """Short hash of the files' resolved paths, sizes and modification times, and ``options``."""
    entries = []
    for path in sorted(Path(f).resolve() for f in files):
        stat = path.stat()
        entries.append([str(path), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"v": CACHE_VERSION, "files": entries, "options": options}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def random_split_indices(num: int, sizes: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    """Seeded random disjoint index sets of the given sizes, plus the rest as a last set."""
    if sum(sizes) > num:
        raise ValueError(f"split sizes {sizes} need {sum(sizes)} items but the dataset has {num}")
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for size in sizes:
        out.append(perm[start : start + size])
        start += size
    out.append(perm[start:])
    return out


class CachedDataset(InMemoryDataset):
    """``InMemoryDataset`` read from source files by :meth:`read` and cached under ``cache_dir``.

    Subclasses set their options, then call ``super().__init__``, and implement
    :meth:`source_files` (the files the cache depends on), :meth:`options` (everything else it
    depends on) and :meth:`read` (the graphs, adding skipped records to the report).
    """

    #: Sub-folder of the cache root.
    cache_name = "dataset"

    def __init__(self, cache_dir, transform=None, pre_transform=None, pre_filter=None, force_reload: bool = False):
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_root() / self.cache_name
        self._tag = fingerprint(self.source_files(), self.options())
        super().__init__(str(cache_dir), transform, pre_transform, pre_filter, log=False, force_reload=force_reload)
        self.load(self.processed_paths[0])
        self.report = SkipReport.from_json(self._report_path)

    # -- to implement ----------------------------------------------------------------------
    def source_files(self) -> list[Path]:
        raise NotImplementedError

    def options(self) -> dict:
        raise NotImplementedError

    def read(self, report: SkipReport) -> list[Data]:
        raise NotImplementedError

    # -- InMemoryDataset plumbing ------------------------------------------------------------
    @property
    def raw_file_names(self) -> list[str]:
        return []

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.cache_name}_{self._tag}.pt"]

    @property
    def _report_path(self) -> Path:
        return Path(self.processed_paths[0]).with_suffix(".skipped.json")

    def process(self) -> None:
        report = SkipReport()
        data_list = self.read(report)
        if self.pre_filter is not None:
            data_list = [d for d in data_list if self.pre_filter(d)]
        if self.pre_transform is not None:
            data_list = [self.pre_transform(d) for d in data_list]
        if not data_list:
            raise InvalidInputError(", ".join(map(str, self.source_files())), f"no valid record ({report})")
        self.save(data_list, self.processed_paths[0])
        report.to_json(self._report_path)
