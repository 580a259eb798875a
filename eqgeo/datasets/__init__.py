"""Datasets processed once from offline files and cached: QM9, MD17, protein–ligand complexes, ASE files.

Caches live under ``root`` / ``cache_dir`` arguments, by default under
:func:`default_cache_root` (``$EQGEO_CACHE`` or ``~/.cache/eqgeo``), never in site-packages or
next to the source files.
"""

from ._cached import CachedDataset, default_cache_root, random_split_indices
from .ase_dataset import ASEDataset
from .complexes import ComplexFiles, ProteinLigandComplexes, find_complex_files
from .docking import DockingComplex, load_docking_complexes
from .md17 import MD17, held_out_split, read_isolated_atoms, read_md17_npz, rmd17_splits
from .qm9 import QM9

__all__ = [
    "CachedDataset",
    "default_cache_root",
    "random_split_indices",
    "QM9",
    "MD17",
    "rmd17_splits",
    "held_out_split",
    "read_md17_npz",
    "read_isolated_atoms",
    "ASEDataset",
    "ProteinLigandComplexes",
    "ComplexFiles",
    "find_complex_files",
    "DockingComplex",
    "load_docking_complexes",
]
