"""ASE-readable structures (XYZ, extended XYZ, ...) to graphs, with energies and forces.

Energies and forces are converted to eV and eV/Å on load. Files do not say their unit, so
``energy_unit`` is a required argument whenever a frame carries an energy or forces: it is a
parameter, never a guess (rMD17-derived files come both in eV and in kcal/mol).
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Data

from . import keys as K
from .errors import InvalidInputError, SkipReport
from .units import energy_factor

__all__ = ["from_ase_atoms", "read_structures", "read_xyz"]


def _frame_energy(atoms: Atoms, key: str) -> float | None:
    if atoms.calc is not None and key in atoms.calc.results:
        return float(np.asarray(atoms.calc.results[key]).reshape(-1)[0])
    if key in atoms.info:
        return float(atoms.info[key])
    return None


def _frame_forces(atoms: Atoms, key: str) -> np.ndarray | None:
    if atoms.calc is not None and key in atoms.calc.results:
        return np.asarray(atoms.calc.results[key], dtype=np.float64)
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    return None


def _check_values(atoms: Atoms, energy, forces, source: str, record) -> None:
    if len(atoms) == 0:
        raise InvalidInputError(source, "structure has no atoms", record)
    if (atoms.numbers <= 0).any():
        raise InvalidInputError(source, f"unknown element (atomic number 0) at atoms {np.flatnonzero(atoms.numbers <= 0).tolist()}", record)
    bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if bad.size:
        raise InvalidInputError(source, f"non-finite (NaN or infinite) coordinates for atoms {bad.tolist()}", record)
    if energy is not None and not np.isfinite(energy):
        raise InvalidInputError(source, f"non-finite energy {energy}", record)
    if forces is not None:
        if forces.shape != (len(atoms), 3):
            raise InvalidInputError(source, f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)", record)
        if not np.isfinite(forces).all():
            raise InvalidInputError(source, "non-finite (NaN or infinite) forces", record)


def from_ase_atoms(
    atoms: Atoms,
    *,
    energy_unit: str | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    source: str | Path = "<ase Atoms>",
    record: str | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Graph of an ASE ``Atoms`` object.

    Args:
        atoms: the structure; energy and forces are read from its calculator results or from
            ``info`` / ``arrays``.
        energy_unit: unit of the stored energy (forces: that unit per Å), e.g. ``"eV"`` or
            ``"kcal/mol"``; required when the frame has an energy or forces.
        energy_key: name of the energy entry.
        forces_key: name of the forces entry.
        source: file, named in errors.
        record: frame, named in errors.
        dtype: float dtype of ``pos`` and ``forces`` (energies are always float64).

    Returns:
        ``Data`` with ``z``, ``pos``, ``name`` and, when present, ``energy`` (eV, float64),
        ``forces`` (eV/Å), and ``cell`` / ``pbc`` when the structure is periodic along at
        least one cell vector.

    Raises:
        InvalidInputError: no atoms, unknown elements, non-finite values, forces of the wrong
            shape, or an energy without ``energy_unit``.
    """
    source = str(source)
    energy, forces = _frame_energy(atoms, energy_key), _frame_forces(atoms, forces_key)
    _check_values(atoms, energy, forces, source, record)
    data = Data(num_nodes=len(atoms))
    data[K.ATOMIC_NUMBER] = torch.as_tensor(atoms.numbers, dtype=torch.long)
    data[K.POSITION] = torch.as_tensor(atoms.positions, dtype=torch.float64).to(dtype)
    data[K.NAME] = f"{Path(source).stem}:{record}" if record is not None else Path(source).stem
    if atoms.pbc.any():
        data[K.CELL] = torch.as_tensor(np.asarray(atoms.cell), dtype=torch.float64).to(dtype).unsqueeze(0)
        data[K.PBC] = torch.as_tensor(atoms.pbc, dtype=torch.bool).unsqueeze(0)
    if energy is None and forces is None:
        return data
    if energy_unit is None:
        raise InvalidInputError(source, "frame has an energy/forces but energy_unit was not given (e.g. 'eV', 'kcal/mol')", record)
    factor = energy_factor(energy_unit)
    if energy is not None:
        data[K.ENERGY] = torch.tensor([energy * factor], dtype=torch.float64)
    if forces is not None:
        data[K.FORCES] = torch.as_tensor(forces * factor, dtype=torch.float64).to(dtype)
    return data


def _read_frames(path: Path, index: str, format: str | None) -> list[Atoms]:
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InvalidInputError(path, "file is empty")
    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except Exception as error:  # ASE raises many types (ValueError, KeyError, IndexError, XYZError...)
        raise InvalidInputError(path, f"ASE could not read the file: {type(error).__name__}: {error}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InvalidInputError(path, "no structure in the file")
    return frames


def read_structures(
    path: str | Path,
    *,
    index: str = ":",
    format: str | None = None,
    energy_unit: str | None = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    skip_invalid: bool = False,
    report: SkipReport | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Data]:
    """Graphs of every frame of an ASE-readable file (see :func:`from_ase_atoms`).

    Args:
        path: the file.
        index: ASE frame selection (``":"``: all frames).
        format: ASE format name, ``None`` to infer it from the file name.
        skip_invalid: skip invalid frames and add them to ``report`` instead of raising. A
            file that cannot be parsed at all always raises.
        report: collects skipped frames.

    Raises:
        InvalidInputError: see :func:`from_ase_atoms`; also for missing, empty or unparsable
            files.
    """
    path = Path(path)
    report = SkipReport() if report is None else report
    graphs = []
    for frame_index, atoms in enumerate(_read_frames(path, index, format)):
        data = report.guard(
            lambda: from_ase_atoms(
                atoms,
                energy_unit=energy_unit,
                energy_key=energy_key,
                forces_key=forces_key,
                source=path,
                record=frame_index,
                dtype=dtype,
            ),
            skip_invalid,
        )
        if data is not None:
            graphs.append(data)
    return graphs


def read_xyz(path: str | Path, **kwargs) -> list[Data]:
    """Graphs of every frame of an XYZ or extended-XYZ file; see :func:`read_structures`."""
    return read_structures(path, format="extxyz", **kwargs)
