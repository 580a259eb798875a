"""The generic ASE-file dataset and the default cache location."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from torch_geometric.data import Batch

from eqgeo.data import InvalidInputError, RadiusGraph, edge_vectors, keys
from eqgeo.data.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV, KCAL_PER_MOL_TO_EV
from eqgeo.datasets import ASEDataset, _cached, default_cache_root

from ._schnetpack import write_schnetpack_db


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


# ---------------------------------------------------------------------------------------------
# ASE databases in the schnetpack layout: properties in row.data, units in the metadata
# ---------------------------------------------------------------------------------------------


def _molecules():
    """Water and methane as schnetpack stores them: every property in the row's data as an array."""
    water = Atoms("OH2", positions=[[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
    methane = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    return [
        (water, {"gap": np.array([0.3]), "energy_U0": np.array([-76.4]), "forces": np.full((3, 3), 0.01)}),
        (methane, {"gap": np.array([0.5]), "energy_U0": np.array([-40.5]), "forces": np.zeros((5, 3))}),
    ]


def _schnetpack_db(path, units, distance_unit="Ang", atomrefs=None):
    return write_schnetpack_db(path, _molecules(), units, distance_unit=distance_unit, atomrefs=atomrefs)


def test_ase_db_reads_row_data_with_metadata_units(tmp_path):
    path = _schnetpack_db(tmp_path / "mols.db", {"gap": "Hartree", "energy_U0": "Ha", "forces": "Hartree/Bohr"})
    dataset = ASEDataset(path, tmp_path / "cache", energy_key="gap")
    assert len(dataset) == 2 and dataset.report.count == 0
    assert dataset[0][keys.ENERGY].item() == pytest.approx(0.3 * HARTREE_TO_EV, rel=1e-12)
    assert dataset[1][keys.ENERGY].item() == pytest.approx(0.5 * HARTREE_TO_EV, rel=1e-12)
    # forces from row.data too, in Hartree/Bohr -> eV/Å
    assert dataset[0][keys.FORCES][0, 0].item() == pytest.approx(0.01 * HARTREE_TO_EV / BOHR_TO_ANGSTROM, rel=1e-6)
    assert dataset[1][keys.ATOMIC_NUMBER].tolist() == [6, 1, 1, 1, 1]
    u0 = ASEDataset(path, tmp_path / "cache", energy_key="energy_U0")
    assert u0[1][keys.ENERGY].item() == pytest.approx(-40.5 * HARTREE_TO_EV, rel=1e-12)
    # an energy_unit that agrees with the metadata is accepted; one that contradicts it raises
    assert ASEDataset(path, tmp_path / "c2", energy_key="gap", energy_unit="Hartree")[0][keys.ENERGY].item() == pytest.approx(
        0.3 * HARTREE_TO_EV
    )
    with pytest.raises(InvalidInputError, match=r"energy_unit='eV' contradicts the unit 'Hartree' .* for 'gap'"):
        ASEDataset(path, tmp_path / "c3", energy_key="gap", energy_unit="eV")


def test_ase_db_absent_key_raises_naming_key_and_keys_present(tmp_path):
    path = _schnetpack_db(tmp_path / "mols.db", {"gap": "eV", "energy_U0": "eV", "forces": "eV/Ang"})
    with pytest.raises(InvalidInputError) as info:
        ASEDataset(path, tmp_path / "cache", energy_key="homo")
    message = str(info.value)
    assert "mols.db [record row 1]: no energy entry 'homo' in this frame" in message
    assert "row data ['energy_U0', 'forces', 'gap']" in message
    # skipped frames are reported, not dropped silently; a dataset with no frame left raises
    with pytest.raises(InvalidInputError, match="no valid record"):
        ASEDataset(path, tmp_path / "cache", energy_key="homo", skip_invalid=True)


def test_ase_db_without_units_needs_energy_unit(tmp_path):
    path = _schnetpack_db(tmp_path / "mols.db", {})
    with pytest.raises(InvalidInputError, match=r"\[record row 1\]: frame has an energy \('gap'\) but energy_unit was not given"):
        ASEDataset(path, tmp_path / "cache", energy_key="gap", forces_key="forces", energy_unit=None)
    dataset = ASEDataset(path, tmp_path / "cache", energy_key="gap", energy_unit="kcal/mol")
    assert dataset[0][keys.ENERGY].item() == pytest.approx(0.3 * KCAL_PER_MOL_TO_EV)


def test_ase_db_distance_unit_and_atomrefs(tmp_path):
    refs = [0.0] * 100
    refs[1], refs[6], refs[8] = -0.5, -37.8, -75.0
    path = _schnetpack_db(
        tmp_path / "mols.db", {"gap": "Ha", "energy_U0": "Ha", "forces": "Ha/Bohr"}, distance_unit="Bohr",
        atomrefs={"energy_U0": refs},
    )
    dataset = ASEDataset(path, tmp_path / "cache", energy_key="energy_U0")
    assert dataset[0][keys.POSITION][1, 1].item() == pytest.approx(0.7572 * BOHR_TO_ANGSTROM, rel=1e-6)
    assert dataset.metadata["_distance_unit"] == "Bohr"
    assert dataset.atom_references() == pytest.approx({1: -0.5 * HARTREE_TO_EV, 6: -37.8 * HARTREE_TO_EV, 8: -75.0 * HARTREE_TO_EV})
    assert ASEDataset(path, tmp_path / "cache", energy_key="gap").atom_references() is None


def test_requested_key_absent_from_xyz_raises_and_partial_energies_are_named(tmp_path):
    path = tmp_path / "two.xyz"
    path.write_text("1\nenergy=-1.0 U0=-3.0\nH 0 0 0\n1\nU0=-4.0\nH 0 0 0\n")
    with pytest.raises(InvalidInputError, match=r"two.xyz \[record 0\]: no energy entry 'gap' in this frame; it has: .*'U0'"):
        ASEDataset(path, tmp_path / "cache", energy_key="gap", energy_unit="eV")
    # the default "energy" is optional, but not in some frames only
    with pytest.raises(InvalidInputError, match=r"two.xyz \[record 1\]: no energy entry 'energy' in this frame, while 1 other"):
        ASEDataset(path, tmp_path / "cache", energy_unit="eV")
    dataset = ASEDataset(path, tmp_path / "cache", energy_unit="eV", skip_invalid=True)
    assert len(dataset) == 1 and dataset.report.count == 1 and "record 1" in str(dataset.report.errors[0])
    assert ASEDataset(path, tmp_path / "cache", energy_key="U0", energy_unit="eV")[1][keys.ENERGY].item() == -4.0


def test_cache_version_is_part_of_the_cache_name(tmp_path, monkeypatch):
    """What a cache holds changed with version 2 (database rows read with their data and metadata
    units): a cache written under an older version is never read, the dataset is rebuilt beside it."""
    assert _cached.CACHE_VERSION >= 2
    path = _schnetpack_db(tmp_path / "mols.db", {"gap": "Ha", "energy_U0": "Ha", "forces": "Ha/Bohr"})
    monkeypatch.setattr(_cached, "CACHE_VERSION", 1)
    old = ASEDataset(path, tmp_path / "cache", energy_key="gap")
    old.save([old[1]], old.processed_paths[0])  # a stale cache: other graphs under the old version's name
    assert len(ASEDataset(path, tmp_path / "cache", energy_key="gap")) == 1  # the same version reads it back
    monkeypatch.undo()
    current = ASEDataset(path, tmp_path / "cache", energy_key="gap")
    assert current.processed_paths[0] != old.processed_paths[0] and len(current) == 2
    assert current[0][keys.ENERGY].item() == pytest.approx(0.3 * HARTREE_TO_EV, rel=1e-12)
