"""A dataset over any ASE-readable file of structures or ASE database, with energies and forces in eV / eV/Å."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch_geometric.data import Data

from ..data.errors import InvalidInputError, SkipReport
from ..data.structures import ASEDatabase, is_ase_db, read_structures
from ..data.units import unit_factor
from ._cached import CachedDataset

__all__ = ["ASEDataset"]


class ASEDataset(CachedDataset):
    """Every frame of an ASE-readable file (extended XYZ, VASP, ...) or row of an ASE database, cached.

    Graphs are built by :func:`eqgeo.data.from_ase_atoms`: ``z``, ``pos`` (Å), ``energy`` (eV),
    ``forces`` (eV/Å), and ``cell`` / ``pbc`` for periodic frames.

    ASE databases (``.db``, ASE JSON) are read row by row, properties included: a row's
    ``key_value_pairs`` and ``data`` (the schnetpack layout: ``data={"gap": np.array([..]), ...}``)
    are searched for ``energy_key`` / ``forces_key`` after its calculator results (ASE's own
    ``energy`` / ``forces`` columns, in eV and eV/Å by ASE's convention). The units in the
    database's metadata (``_property_unit_dict`` for the row's data, ``_distance_unit``), when
    present, are used, so ``energy_unit`` is then not needed; an ``energy_unit`` that
    contradicts them raises.

    Args:
        path: the structure file or database.
        root: cache folder (default ``<cache root>/ase``).
        energy_unit: unit of the stored energies (forces: per Å, or per the database's
            ``_distance_unit``); required when the frames have energies or forces and the file
            does not give their unit.
        index: ASE frame selection (for a database also a query string).
        format: ASE format name (``None``: from the file name).
        energy_key: the entry to read as ``energy`` (any scalar: ``"U0"``, ``"gap"``, ...). Given,
            it is required: a frame without it raises (or is skipped with ``skip_invalid``),
            naming the key, the entries the frame has, the file and the frame / row. Left
            ``None``, ``"energy"`` is read where present (all frames or none).
        forces_key: the same for ``forces`` (default: ``"forces"`` where present).
        skip_invalid: skip invalid frames and list them in :attr:`report`.
        transform, pre_transform, pre_filter, force_reload: as in PyG.

    Attributes:
        metadata: an ASE database's metadata (``{}`` for other files).
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
        energy_key: str | None = None,
        forces_key: str | None = None,
        skip_invalid: bool = False,
        transform=None,
        pre_transform=None,
        pre_filter=None,
        force_reload: bool = False,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"structure file {self.path} does not exist")
        if not self.path.is_file():
            raise FileNotFoundError(f"structure file {self.path} is a folder, not a file")
        self.energy_unit, self.index, self.format = energy_unit, index, format
        self.energy_key, self.forces_key, self.skip_invalid = energy_key, forces_key, skip_invalid
        self.metadata = ASEDatabase(self.path).metadata if is_ase_db(self.path, format) else {}
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
            energy_key=self.energy_key or "energy",
            forces_key=self.forces_key or "forces",
            require_energy=self.energy_key is not None,
            require_forces=self.forces_key is not None,
            skip_invalid=self.skip_invalid,
            report=report,
        )

    def atom_references(self) -> dict[int, float] | None:
        """Per-element reference values of the energy entry, in eV (``{Z: value}``, zeros left
        out), from an ASE database's ``metadata["atomrefs"]`` (schnetpack: ``{property: [value
        per atomic number 0..99]}`` in the property's unit), or ``None`` when it has none.

        These are not subtracted from ``energy``: subtract ``sum(refs[z])`` for atomisation energies.
        """
        key = self.energy_key or "energy"
        refs = self.metadata.get("atomrefs")
        if not isinstance(refs, Mapping) or key not in refs:
            return None
        units = self.metadata.get("_property_unit_dict") or {}
        unit = units.get(key, self.energy_unit)
        if unit is None:
            raise InvalidInputError(self.path, f"metadata atomrefs[{key!r}] have no unit: pass energy_unit")
        factor = unit_factor(unit, "energy")
        return {z: float(v) * factor for z, v in enumerate(refs[key]) if float(v) != 0.0}
