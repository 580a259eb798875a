"""Helpers shared by the test files: prerequisites that CI must have, and small shared pieces.

Locally a missing prerequisite (a test oracle such as e3nn or mpmath, a C compiler, the
``../shared/data`` folder) skips the test with the reason; under ``CI=true`` it is a failure, so
CI runs every test it claims to run.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

#: ``CI=true`` in the environment (as CI services and ``.ci/run`` set it)
IN_CI = os.environ.get("CI", "").lower() == "true"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EQGEO_SHARED_DATA", REPO.parent / "shared" / "data"))

#: tolerances per dtype for quantities of order one
TOLERANCES = {torch.float32: 1e-5, torch.float64: 1e-10}


def require(missing: str) -> None:
    """Skip the calling test because ``missing`` is absent; under ``CI=true``, fail instead."""
    if os.environ.get("CI", "").lower() == "true":  # read now: tests of this helper set it
        pytest.fail(f"{missing} (CI=true: a prerequisite that CI must provide is missing)", pytrace=False)
    pytest.skip(missing)


def oracle(name: str) -> ModuleType:
    """Import a test oracle (``e3nn.o3``, ``mpmath``...): :func:`require` it when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        require(f"test oracle {name!r} is not installed ({error}); pip install -e '.[test]'")


def shared_path(*parts: str) -> Path:
    """A path under ``../shared/data``, which must exist (:func:`require` it otherwise)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        require(f"shared data {path} not found (set EQGEO_SHARED_DATA to the shared data folder)")
    return path


def reset_dynamo():
    """Fixture body: a clean ``torch._dynamo`` state before and after a test."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def toy_docking_complex(seed: int = 0):
    """A :class:`~eqgeo.datasets.docking.DockingComplex` small enough for any test: a flexible ligand
    (RDKit conformer of seed ``seed``) in a shell of 60 carbon 'pocket' atoms 6-8 Å from its
    centroid, with a start conformer (the crystal in another frame) and no symmetry copies."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from eqgeo.data.poses import rotatable_bonds, symmetry_references
    from eqgeo.datasets.docking import DockingComplex
    from eqgeo.o3 import rand_matrix

    mol = Chem.AddHs(Chem.MolFromSmiles("CCOc1ccc(CC(=O)O)cc1"))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    mol = Chem.RemoveHs(mol)
    crystal = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)
    bonds, moving = rotatable_bonds(mol)
    g = torch.Generator().manual_seed(seed)
    shell = torch.randn(60, 3, dtype=torch.float64, generator=g)
    pocket = crystal.mean(0) + shell / shell.norm(dim=1, keepdim=True) * (6 + 2 * torch.rand(60, 1, generator=g, dtype=torch.float64))
    start = crystal @ rand_matrix(dtype=torch.float64).T + 20.0
    return DockingComplex(
        name="toy", ligand_z=torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()]), crystal=crystal, start=start,
        matched=crystal.clone(), matched_rmsd=0.0, bonds=bonds, moving=moving, references=symmetry_references(mol, []),
        pocket_z=torch.full((60,), 6), pocket_pos=pocket, pocket_centre=crystal.mean(0), has_start_conf=True,
    )
