"""eqgeo: E(3)-equivariant graph neural network layers for PyTorch Geometric.

After a plain ``import eqgeo`` every subpackage is reachable as an attribute (``eqgeo.o3``,
``eqgeo.nn``, ``eqgeo.datasets``, ...), each imported on first access (PEP 562 module
``__getattr__``): ``import eqgeo`` imports nothing heavy, not even torch (so the console scripts
in :mod:`eqgeo.cli` can set OpenMP's environment before torch loads), and Lightning and Hydra
(:mod:`eqgeo.training`), RDKit or ASE only when they are used. ``from eqgeo import *`` imports
the light subpackages (``__all__``), not ``training``, ``train`` and ``demo``; ``dir(eqgeo)``
lists them all.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Submodules imported on first attribute access, with what each holds.
_LAZY_SUBMODULES = {
    "o3": "irreducible representations, spherical harmonics, Clebsch-Gordan coefficients",
    "nn": "equivariant layers (convolutions, tensor products, gates, norms)",
    "data": "molecules, proteins, complexes and structures to graphs; neighbour lists; units",
    "datasets": "cached datasets (QM9, MD17, ASE files and databases, protein-ligand complexes)",
    "models": "interatomic potentials, property and docking models",
    "testing": "equivariance and gradient checks",
    "calculators": "the ASE calculator",
    "training": "Lightning/Hydra training and evaluation (heavy imports)",
    "demo": "the eqgeo-demo command",
    "train": "the python -m eqgeo.train entry point",
    "cli": "the console scripts",
    "leaderboard": "the eqgeo-leaderboard command",
}

# The light subpackages only: ``training``, ``demo``, ``train`` (and the commands) pull in Lightning and Hydra, so
# ``from eqgeo import *`` leaves them out; they are still attributes (imported on first access)
# and listed by ``dir(eqgeo)``.
__all__ = ["o3", "nn", "data", "datasets", "models", "testing", "calculators", "__version__"]


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module  # later accesses skip this function
        return module
    raise AttributeError(
        f"module 'eqgeo' has no attribute {name!r}; its subpackages are {sorted(_LAZY_SUBMODULES)}"
    )


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_LAZY_SUBMODULES))
