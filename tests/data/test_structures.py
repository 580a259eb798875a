"""ASE-readable files: XYZ / extended XYZ with energies, forces, cells and explicit units."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eqgeo.data import InvalidInputError, SkipReport, from_ase_atoms, keys, read_xyz
from eqgeo.data.units import KCAL_PER_MOL_TO_EV


def test_units_are_converted_and_required():
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0, forces=[[1.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    data = from_ase_atoms(atoms, energy_unit="kcal/mol")
    assert data[keys.ENERGY].dtype == torch.float64
    torch.testing.assert_close(data[keys.ENERGY], torch.tensor([-10.0 * KCAL_PER_MOL_TO_EV], dtype=torch.float64))
    assert data[keys.FORCES][0, 0].item() == pytest.approx(KCAL_PER_MOL_TO_EV)
    with pytest.raises(InvalidInputError, match="energy_unit"):
        from_ase_atoms(atoms)


def test_periodic_cell_is_kept():
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=[[0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]], pbc=True)
    data = from_ase_atoms(atoms)
    assert data[keys.CELL].shape == (1, 3, 3) and data[keys.PBC].tolist() == [[True, True, True]]
    assert keys.CELL not in from_ase_atoms(Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]]))


def test_botnet_ethanol_is_ev(shared_data):
    frames = read_xyz(shared_data / "md17/botnet_ethanol/train.xyz", index=":3", energy_unit="eV")
    assert len(frames) == 3
    assert frames[0][keys.ENERGY].item() == pytest.approx(-4209.4657843064815)
    assert frames[0][keys.FORCES][0].tolist() == pytest.approx([-4.15950961, 0.10729389, 3.61777644], abs=1e-6)
    assert keys.CELL not in frames[0]  # the 50 A lattice is not periodic (pbc F)


def test_metatrain_ethanol_kcal_per_mol_lands_near_the_ev_files(shared_data):
    """The same molecule at the same level of theory: both files must agree in eV once converted."""
    kcal = read_xyz(shared_data / "md17/metatrain/ethanol_reduced_100.xyz", index=":5", energy_unit="kcal/mol")
    ev = read_xyz(shared_data / "md17/botnet_ethanol/train.xyz", index=":5", energy_unit="eV")
    mean_kcal = torch.cat([d.energy for d in kcal]).mean()
    mean_ev = torch.cat([d.energy for d in ev]).mean()
    assert abs(mean_kcal - mean_ev) < 1.0  # eV; the wrong unit would be off by ~93,000 eV


def test_bad_frames(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text("2\nenergy=1.0\nH 0 0 0\nH 0 0 nan\n2\nenergy=2.0\nH 0 0 0\nH 0 0 0.7\n")
    with pytest.raises(InvalidInputError, match=r"bad.xyz \[record 0\]: non-finite"):
        read_xyz(path, energy_unit="eV")
    report = SkipReport()
    frames = read_xyz(path, energy_unit="eV", skip_invalid=True, report=report)
    assert len(frames) == 1 and report.count == 1
    unknown = tmp_path / "unknown.xyz"
    unknown.write_text("1\n\nXq 0 0 0\n")
    with pytest.raises(InvalidInputError, match="ASE could not read"):
        read_xyz(unknown)
    truncated = tmp_path / "truncated.xyz"
    truncated.write_text("3\n\nH 0 0 0\n")
    with pytest.raises(InvalidInputError, match="truncated.xyz"):
        read_xyz(truncated)
