"""MD17 / rMD17 molecular-dynamics frames with energies and forces, converted to eV and eV/Å.

Readable layouts:

* sGDML / original MD17 ``.npz`` (also PyG's MD17 raw files): ``R`` (frames, atoms, 3) Å,
  ``E`` (frames, 1) kcal/mol, ``F`` (frames, atoms, 3) kcal/mol/Å, ``z`` (atoms,);
* rMD17 ``.npz``: ``nuclear_charges`` (atoms,), ``coords`` (frames, atoms, 3) Å,
  ``energies`` (frames,) kcal/mol, ``forces`` (frames, atoms, 3) kcal/mol/Å;
* extended XYZ (``.xyz`` / ``.extxyz``) with ``energy`` and ``forces``. These files carry no
  unit and both kinds exist (the shared rMD17-derived BOTNet ethanol files are eV, the
  metatrain ethanol file is kcal/mol), so ``energy_unit`` must be given.

The npz layouts default to ``energy_unit="kcal/mol"``, their documented unit.

The rMD17 protocol: 950 training and 50 validation frames drawn (seeded) from the training
file, and a separate test file: :func:`rmd17_splits`. Per-species reference energies come from
an isolated-atoms file when one is given (``energy_ref`` per graph, :attr:`MD17.atomic_energies`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from ..data import keys as K
from ..data.errors import InvalidInputError, SkipReport
from ..data.structures import read_structures
from ..data.units import energy_factor
from ._cached import CachedDataset, random_split_indices

__all__ = ["MD17", "held_out_split", "read_isolated_atoms", "read_md17_npz", "rmd17_splits"]

_NPZ_LAYOUTS = {
    "sgdml": {"z": "z", "pos": "R", "energy": "E", "forces": "F"},
    "rmd17": {"z": "nuclear_charges", "pos": "coords", "energy": "energies", "forces": "forces"},
}


def _npz_layout(arrays, path: Path) -> dict[str, str]:
    for layout in _NPZ_LAYOUTS.values():
        if all(key in arrays for key in layout.values()):
            return layout
    found = sorted(arrays.keys())
    raise InvalidInputError(path, f"not an sGDML (z, R, E, F) or rMD17 (nuclear_charges, coords, energies, forces) npz; keys: {found}")


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as error:
        raise InvalidInputError(path, f"numpy could not read the npz: {error}") from None
    layout = _npz_layout(arrays, path)
    z = np.asarray(arrays[layout["z"]]).reshape(-1).astype(np.int64)
    pos = np.asarray(arrays[layout["pos"]], dtype=np.float64)
    energy = np.asarray(arrays[layout["energy"]], dtype=np.float64).reshape(-1)
    forces = np.asarray(arrays[layout["forces"]], dtype=np.float64)
    _check_npz_shapes(path, layout, z, pos, energy, forces)
    return z, pos, energy, forces


def _check_npz_shapes(path: Path, layout: dict, z, pos, energy, forces) -> None:
    n_atoms = z.shape[0]
    if pos.ndim != 3 or pos.shape[1:] != (n_atoms, 3):
        raise InvalidInputError(path, f"{layout['pos']} has shape {pos.shape}, expected (frames, {n_atoms}, 3) for {n_atoms} atoms in {layout['z']}", layout["pos"])
    if forces.shape != pos.shape:
        raise InvalidInputError(path, f"{layout['forces']} has shape {forces.shape} but {layout['pos']} has {pos.shape}", layout["forces"])
    if energy.shape[0] != pos.shape[0]:
        raise InvalidInputError(path, f"{layout['energy']} has {energy.shape[0]} frames but {layout['pos']} has {pos.shape[0]}", layout["energy"])
    if (z <= 0).any() or (z > 118).any():
        raise InvalidInputError(path, f"unknown elements (atomic numbers {sorted(set(z[(z <= 0) | (z > 118)].tolist()))})", layout["z"])


def _npz_frame(z, pos, energy, forces, factor: float, path: Path, frame: int) -> Data:
    if not np.isfinite(pos).all():
        raise InvalidInputError(path, "non-finite (NaN or infinite) coordinates", f"frame {frame}")
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        raise InvalidInputError(path, "non-finite energy or forces", f"frame {frame}")
    data = Data(num_nodes=z.shape[0])
    data[K.ATOMIC_NUMBER] = torch.from_numpy(z)
    data[K.POSITION] = torch.from_numpy(pos).to(torch.float32)
    data[K.ENERGY] = torch.tensor([energy * factor], dtype=torch.float64)
    data[K.FORCES] = torch.from_numpy(forces * factor).to(torch.float32)
    data[K.NAME] = f"{path.stem}:{frame}"
    return data


def read_md17_npz(path: str | Path, *, energy_unit: str = "kcal/mol", skip_invalid: bool = False, report: SkipReport | None = None) -> list[Data]:
    """Graphs of every frame of an sGDML or rMD17 ``.npz`` file (energies in eV, forces in eV/Å).

    Raises:
        InvalidInputError: unknown layout, mismatched array lengths, unknown elements, or a
            frame with non-finite values (that one is skipped with ``skip_invalid=True``).
    """
    path = Path(path)
    report = SkipReport() if report is None else report
    z, pos, energy, forces = _npz_arrays(path)
    factor = energy_factor(energy_unit)
    graphs = []
    for frame in range(pos.shape[0]):
        data = report.guard(lambda: _npz_frame(z, pos[frame], energy[frame], forces[frame], factor, path, frame), skip_invalid)
        if data is not None:
            graphs.append(data)
    return graphs


def read_isolated_atoms(path: str | Path, energy_unit: str) -> dict[int, float]:
    """Energies (eV) of isolated atoms, by atomic number, from a file of one-atom frames."""
    energies = {}
    for data in read_structures(path, energy_unit=energy_unit):
        if data.num_nodes != 1 or K.ENERGY not in data:
            raise InvalidInputError(path, f"every frame must be one atom with an energy; frame {data[K.NAME]} is not")
        energies[int(data[K.ATOMIC_NUMBER][0])] = float(data[K.ENERGY][0])
    return energies


class MD17(CachedDataset):
    """Frames of one MD17 / rMD17 file (``.npz`` or extended XYZ), in eV and eV/Å.

    Args:
        path: the data file.
        root: cache folder (default ``<cache root>/md17``).
        energy_unit: unit of the file's energies (forces: per Å). Defaults to ``"kcal/mol"``
            for ``.npz`` files; required for XYZ files.
        isolated_atoms: optional file of isolated-atom energies; each graph then has
            ``energy_ref`` (sum of its atoms' reference energies, eV).
        isolated_atoms_unit: unit of that file (default: ``energy_unit``).
        skip_invalid: skip invalid frames and list them in :attr:`report`.
        transform, pre_transform, pre_filter, force_reload: as in PyG.

    Attributes:
        atomic_energies: ``{atomic number: eV}`` from ``isolated_atoms`` (empty without it).
    """

    cache_name = "md17"

    def __init__(
        self,
        path: str | Path,
        root: str | Path | None = None,
        *,
        energy_unit: str | None = None,
        isolated_atoms: str | Path | None = None,
        isolated_atoms_unit: str | None = None,
        skip_invalid: bool = False,
        transform=None,
        pre_transform=None,
        pre_filter=None,
        force_reload: bool = False,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"MD17 file {self.path} does not exist")
        self.is_npz = self.path.suffix == ".npz"
        if energy_unit is None and not self.is_npz:
            raise ValueError(
                f"{self.path.name}: extended XYZ files do not state their energy unit; pass energy_unit "
                "('eV' for the BOTNet rMD17 ethanol files, 'kcal/mol' for raw rMD17/metatrain values)"
            )
        self.energy_unit = energy_unit or "kcal/mol"
        energy_factor(self.energy_unit)  # fail early on an unknown unit
        self.isolated_atoms = Path(isolated_atoms) if isolated_atoms is not None else None
        self.isolated_atoms_unit = isolated_atoms_unit or self.energy_unit
        self.skip_invalid = skip_invalid
        self.atomic_energies = (
            read_isolated_atoms(self.isolated_atoms, self.isolated_atoms_unit) if self.isolated_atoms else {}
        )
        super().__init__(root, transform, pre_transform, pre_filter, force_reload)

    def source_files(self) -> list[Path]:
        return [self.path] + ([self.isolated_atoms] if self.isolated_atoms else [])

    def options(self) -> dict:
        return {"unit": self.energy_unit, "iso_unit": self.isolated_atoms_unit, "skip_invalid": self.skip_invalid}

    def read(self, report: SkipReport) -> list[Data]:
        if self.is_npz:
            graphs = read_md17_npz(self.path, energy_unit=self.energy_unit, skip_invalid=self.skip_invalid, report=report)
        else:
            graphs = read_structures(self.path, energy_unit=self.energy_unit, skip_invalid=self.skip_invalid, report=report)
        for data in graphs:
            if K.ENERGY not in data or K.FORCES not in data:
                raise InvalidInputError(self.path, "frame without energy or forces", data[K.NAME])
            if self.atomic_energies:
                data[K.ENERGY_REFERENCE] = torch.tensor([self._reference(data)], dtype=torch.float64)
        return graphs

    def _reference(self, data: Data) -> float:
        try:
            return sum(self.atomic_energies[int(z)] for z in data[K.ATOMIC_NUMBER])
        except KeyError as error:
            raise InvalidInputError(self.isolated_atoms, f"no isolated-atom energy for Z={error.args[0]}") from None

    def split(self, seed: int = 0, num_train: int = 950, num_val: int = 50) -> dict[str, torch.Tensor]:
        """Seeded random ``train`` / ``val`` indices (rMD17 protocol: 950 / 50); the rest is ``unused``."""
        train, val, rest = random_split_indices(len(self), (num_train, num_val), seed)
        return {"train": train, "val": val, "unused": rest}


def rmd17_splits(
    train_file: str | Path,
    test_file: str | Path | None,
    root: str | Path | None = None,
    *,
    energy_unit: str | None = None,
    isolated_atoms: str | Path | None = None,
    seed: int = 0,
    num_train: int = 950,
    num_val: int = 50,
    num_test: int | None = None,
) -> dict[str, MD17]:
    """The rMD17 protocol: 950 train / 50 validation frames from ``train_file``, all of ``test_file``
    (its first ``num_test`` frames when ``num_test`` is given).

    With ``test_file=None`` (one file, as 3BPA's ``train_300K.xyz``), ``num_test`` frames of
    ``train_file`` are held out first (seeded by ``seed``), and training and validation frames are
    drawn from the rest (seeded by ``seed + 1``): the test frames stay the same whatever
    ``num_train`` and ``num_val`` are (smaller training sets for learning curves).

    Returns:
        ``{"train", "val", "test"}`` datasets (index selections of one ``MD17`` dataset, or train and
        val of one and test the whole test file).
    """
    kwargs = dict(energy_unit=energy_unit, isolated_atoms=isolated_atoms)
    full = MD17(train_file, root, **kwargs)
    if test_file is not None:
        split = full.split(seed, num_train, num_val)
        test = MD17(test_file, root, **kwargs)
        if num_test is not None:
            test = test.index_select(torch.arange(min(num_test, len(test))))
        return {"train": full.index_select(split["train"]), "val": full.index_select(split["val"]), "test": test}
    if num_test is None or num_test < 1:
        raise ValueError(f"without a test file, num_test frames of {train_file} are held out for testing; got "
                         f"num_test={num_test}")
    if num_test + num_train + num_val > len(full):
        raise ValueError(f"{train_file} has {len(full)} frames, fewer than num_train + num_val + num_test = "
                         f"{num_train} + {num_val} + {num_test}")
    return {name: full.index_select(index) for name, index in
            held_out_split(len(full), num_train, num_val, num_test, seed).items()}


def held_out_split(num_frames: int, num_train: int, num_val: int, num_test: int, seed: int) -> dict[str, torch.Tensor]:
    """The frame indices (into one file of ``num_frames`` frames) of :func:`rmd17_splits` without a test file:
    ``num_test`` frames held out with ``seed``, then ``num_train`` and ``num_val`` drawn from the rest with
    ``seed + 1``. The peer drivers of ``experiments/md`` write these frames for MACE and NequIP.

    Example:
        >>> split = held_out_split(500, 400, 50, 50, seed=0)
        >>> [len(split[k]) for k in ("train", "val", "test")]
        [400, 50, 50]
        >>> held_out_split(500, 10, 5, 50, seed=0)["test"].equal(split["test"])  # fixed whatever num_train
        True
    """
    test, rest = random_split_indices(num_frames, (num_test,), seed)
    train, val, _ = random_split_indices(len(rest), (num_train, num_val), seed + 1)
    return {"train": rest[train], "val": rest[val], "test": test}
