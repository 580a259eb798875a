"""The generic ASE-file dataset and the default cache location."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from torch_geometric.data import Batch

from eqgeo.data import RadiusGraph, edge_vectors, keys
from eqgeo.data.units import HARTREE_TO_EV
from eqgeo.datasets import ASEDataset, default_cache_root


def test_any_info_key_as_energy(shared_data, tmp_path):
    dataset = ASEDataset(shared_data / "qm9/metatrain/qm9_reduced_100.xyz", tmp_path, energy_key="U0", energy_unit="Hartree")
    assert len(dataset) == 100
    assert dataset[0][keys.ENERGY].item() == pytest.approx(-40.47893 * HARTREE_TO_EV)


def test_periodic_frames_keep_cells_and_batch(tmp_path):
    frames = []
    for a in (3.5, 3.6, 3.7):
        atoms = bulk("Cu", "fcc", a=a) * (2, 1, 1)
        atoms.calc = SinglePointCalculator(atoms, energy=-a, forces=torch.zeros(2, 3).numpy())
        frames.append(atoms)
    path = tmp_path / "cu.extxyz"
    write(path, frames)
    dataset = ASEDataset(path, tmp_path / "cache", energy_unit="eV")
    batch = Batch.from_data_list(list(dataset))
    assert batch[keys.CELL].shape == (3, 3, 3) and batch[keys.ENERGY].shape == (3,)
    batch = RadiusGraph(3.0)(batch)
    vec = edge_vectors(batch.pos, batch[keys.EDGE_INDEX], batch[keys.SHIFTS], batch[keys.CELL], batch.batch)
    assert (vec.norm(dim=-1) < 3.0).all()
    # fcc nearest neighbours: 12 per atom at a / sqrt(2)
    counts = torch.bincount(batch[keys.EDGE_INDEX][1])
    assert (counts == 12).all()


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("EQGEO_CACHE", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    monkeypatch.delenv("EQGEO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "eqgeo"
