"""A dataset over any ASE-readable file of structures, with energies and forces in eV / eV/Å."""

from __future__ import annotations

from pathlib import Path

from torch_geometric.data import Data

from ..data.errors import SkipReport
from ..data.structures import read_structures
from ._cached import CachedDataset

__all__ = ["ASEDataset"]


class ASEDataset(CachedDataset):
    """Every frame of an ASE-readable file (extended XYZ, ASE database, VASP, ...), cached.

    Graphs are built by :func:`eqgeo.data.from_ase_atoms`: ``z``, ``pos``, ``energy`` (eV),
    ``forces`` (eV/Å), and ``cell`` / ``pbc`` for periodic frames.

    Args:
        path: the structure file.
        root: cache folder (default ``<cache root>/ase``).
        energy_unit: unit of the stored energies (forces: per Å); required when the file has
            energies or forces.
        index: ASE frame selection.
        format: ASE format name (``None``: from the file name).
        energy_key, forces_key: names of the energy / forces entries.
        skip_invalid: skip invalid frames and list them in :attr:`report`.
        transform, pre_transform, pre_filter, force_reload: as in PyG.
    """

    cache_name = "ase"

    def __init__(
        self,
        path: str | Path,
        root: str | Path | None = None,
        *,
        energy_unit: str | None = None,
        index: str = ":",
        format: str | None = None,
        energy_key: str = "energy",
        forces_key: str = "forces",
        skip_invalid: bool = False,
        transform=None,
        pre_transform=None,
        pre_filter=None,
        force_reload: bool = False,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"structure file {self.path} does not exist")
        self.energy_unit, self.index, self.format = energy_unit, index, format
        self.energy_key, self.forces_key, self.skip_invalid = energy_key, forces_key, skip_invalid
        super().__init__(root, transform, pre_transform, pre_filter, force_reload)

    def source_files(self) -> list[Path]:
        return [self.path]

    def options(self) -> dict:
        return {
            "energy_unit": self.energy_unit,
            "index": self.index,
            "format": self.format,
            "energy_key": self.energy_key,
            "forces_key": self.forces_key,
            "skip_invalid": self.skip_invalid,
        }

    def read(self, report: SkipReport) -> list[Data]:
        return read_structures(
            self.path,
            index=self.index,
            format=self.format,
            energy_unit=self.energy_unit,
            energy_key=self.energy_key,
            forces_key=self.forces_key,
            skip_invalid=self.skip_invalid,
            report=report,
        )
