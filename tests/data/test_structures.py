"""ASE-readable files: XYZ / extended XYZ with energies, forces, cells and explicit units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eqgeo.data import InvalidInputError, SkipReport, from_ase_atoms, keys, read_structures, read_xyz
from eqgeo.data.structures import ASEDatabase, is_ase_db, lookup_entry
from eqgeo.data.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV, KCAL_PER_MOL_TO_EV

from ..datasets._schnetpack import write_schnetpack_db


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


def test_unit_factor_spellings_and_errors():
    from eqgeo.data.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV, unit_factor

    assert unit_factor("Ha", "energy") == unit_factor("Hartree", "energy") == HARTREE_TO_EV
    assert unit_factor("Hartree/Bohr", "force") == pytest.approx(HARTREE_TO_EV / BOHR_TO_ANGSTROM)
    assert unit_factor("kcal/mol/Ang", "force") == pytest.approx(KCAL_PER_MOL_TO_EV)
    assert unit_factor("eV/Å", "force") == 1.0 and unit_factor("Bohr", "length") == BOHR_TO_ANGSTROM
    assert unit_factor("a0 a0 a0", "polarizability") == unit_factor("Bohr^3", "polarizability") == 1.0
    assert unit_factor("Ang^3", "polarizability") == pytest.approx(BOHR_TO_ANGSTROM**-3)
    assert unit_factor("a0 a0", "spatial_extent") == 1.0 and unit_factor("Debye", "dipole") == 1.0
    assert unit_factor("cal/mol/K", "heat_capacity") == 1.0 and unit_factor("GHz", "frequency") == 1.0
    with pytest.raises(ValueError, match=r"unknown force unit 'eV'; expected <energy>/<length>"):
        unit_factor("eV", "force")
    with pytest.raises(ValueError, match=r"unknown dipole unit 'C m' \(to convert to D\)"):
        unit_factor("C m", "dipole")


def test_ase_json_database_rows_with_data(tmp_path):
    """An ASE JSON database: row data and key-value pairs are read, and a missing key is named."""
    from ase.db import connect

    from eqgeo.data import read_structures

    path = tmp_path / "rows.json"
    with connect(str(path)) as db:
        db.write(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), dipole_set=1, data={"homo": [-0.4]})
        db.write(Atoms("H2", positions=[[0, 0, 0], [0.75, 0, 0]]), dipole_set=2, data={"homo": [-0.5]})
    frames = read_structures(path, energy_key="homo", energy_unit="Hartree", require_energy=True)
    assert [f[keys.ENERGY].item() for f in frames] == pytest.approx([-0.4 * 27.211386246, -0.5 * 27.211386246])
    assert frames[1][keys.NAME] == "rows:row 2"
    # index: a slice of the rows, or an ASE database query
    assert [f[keys.NAME] for f in read_structures(path, index="1:", energy_key="homo", energy_unit="Ha")] == ["rows:row 2"]
    assert [f[keys.NAME] for f in read_structures(path, index="dipole_set=1", energy_key="homo", energy_unit="Ha")] == ["rows:row 1"]
    with pytest.raises(InvalidInputError, match=r"rows.json \[record row 1\]: no energy entry 'lumo' .*"
                       r"row key_value_pairs \['dipole_set'\]; row data \['homo'\]"):
        read_structures(path, energy_key="lumo", energy_unit="Hartree", require_energy=True)
    with pytest.raises(InvalidInputError, match=r"entry 'homo' holds 2 values, expected one number"):
        from_ase_atoms(Atoms("H", info={"homo": [1.0, 2.0]}), energy_key="homo", energy_unit="eV")


# ---------------------------------------------------------------------------------------------
# ASE databases: which unit applies to which entry
# ---------------------------------------------------------------------------------------------


def _forces(n: int) -> np.ndarray:
    return np.arange(3 * n, dtype=np.float64).reshape(n, 3) * 0.01


def test_forces_without_a_stated_unit_are_per_the_files_distance_unit(tmp_path):
    """Positions in Bohr and forces in row data with no unit in the metadata: the forces are in
    energy_unit per Bohr (-dE/dx in the file's own units), not per Å."""
    water = Atoms("OH2", positions=[[0.0, 0.0, 0.22], [0.0, 1.43, -0.89], [0.0, -1.43, -0.89]])
    rows = [(water, {"energy_U0": np.array([-76.4]), "forces": _forces(3)})]
    path = write_schnetpack_db(tmp_path / "bohr.db", rows, {"energy_U0": "Ha"}, distance_unit="Bohr")
    (frame,) = read_structures(path, energy_key="energy_U0", energy_unit="Hartree")
    assert frame[keys.POSITION][1, 1].item() == pytest.approx(1.43 * BOHR_TO_ANGSTROM, rel=1e-6)
    assert frame[keys.ENERGY].item() == pytest.approx(-76.4 * HARTREE_TO_EV, rel=1e-12)
    expected = _forces(3) * HARTREE_TO_EV / BOHR_TO_ANGSTROM
    np.testing.assert_allclose(frame[keys.FORCES].double().numpy(), expected, rtol=1e-6)
    # no units in the metadata at all: energy_unit per Bohr too
    path = write_schnetpack_db(tmp_path / "nounits.db", rows, None, distance_unit="Bohr")
    (frame,) = read_structures(path, energy_key="energy_U0", energy_unit="kcal/mol")
    np.testing.assert_allclose(frame[keys.FORCES].double().numpy(), _forces(3) * KCAL_PER_MOL_TO_EV / BOHR_TO_ANGSTROM, rtol=1e-6)
    # a file that is not a database: per Å
    frame = from_ase_atoms(Atoms("H", info={"e": 1.0}, calculator=None), energy_key="e", energy_unit="Ha")
    assert frame[keys.ENERGY].item() == pytest.approx(HARTREE_TO_EV)


def test_ase_columns_are_ev_whatever_the_metadata_lists(tmp_path):
    """ASE's own energy/forces columns (a row's calculator results) are eV and eV/Å by ASE's
    convention; a unit that _property_unit_dict lists under the same name is for row data only."""
    methane = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    methane.calc = SinglePointCalculator(methane, energy=-1100.0, forces=_forces(5))
    units = {"energy": "Ha", "forces": "Ha/Bohr", "gap": "Ha"}
    path = write_schnetpack_db(tmp_path / "columns.db", [(methane, {"gap": np.array([0.5])})], units)
    (frame,) = read_structures(path)
    assert frame[keys.ENERGY].item() == -1100.0
    np.testing.assert_allclose(frame[keys.FORCES].double().numpy(), _forces(5), rtol=1e-6)
    # the row's data still takes the metadata's unit; ASE's forces stay eV/Å beside it
    (frame,) = read_structures(path, energy_key="gap")
    assert frame[keys.ENERGY].item() == pytest.approx(0.5 * HARTREE_TO_EV, rel=1e-12)
    np.testing.assert_allclose(frame[keys.FORCES].double().numpy(), _forces(5), rtol=1e-6)
    # an energy_unit that contradicts ASE's convention raises, as one contradicting the metadata does
    with pytest.raises(InvalidInputError, match=r"energy_unit='kcal/mol' contradicts the unit 'eV' that ASE's convention"):
        read_structures(path, energy_unit="kcal/mol")
    # the same entries outside a database have no stated unit: energy_unit applies
    frame = from_ase_atoms(methane, energy_unit="kcal/mol", units=units)
    assert frame[keys.ENERGY].item() == pytest.approx(-1100.0 * KCAL_PER_MOL_TO_EV)


def test_ase_database_rows_slices_and_files(tmp_path):
    molecules = [
        (Atoms("H2", positions=[[0, 0, 0], [0.7 + 0.01 * i, 0, 0]]), {"e": np.array([float(i)])}, {"step": i}) for i in range(5)
    ]
    path = write_schnetpack_db(tmp_path / "h2.sqlite", molecules, {"e": "eV"})
    assert is_ase_db(path) and not is_ase_db(tmp_path / "h2.xyz")
    database = ASEDatabase(path)  # an SQLite database whatever its suffix
    assert database.count == 5 and database.units == {"e": "eV"} and database.distance_unit == "Ang"
    assert [row_id for row_id, _ in database.frames()] == [1, 2, 3, 4, 5]
    assert [row_id for row_id, _ in database.frames("1::2")] == [2, 4]
    assert [row_id for row_id, _ in database.frames("::-2")] == [5, 3, 1]
    assert [row_id for row_id, _ in database.frames(-1)] == [5]
    ((row_id, atoms),) = database.frames("step>3")  # a query
    value, place = lookup_entry(atoms, "e")
    assert row_id == 5 and place == "data" and value.tolist() == [4.0]
    assert lookup_entry(atoms, "step") == (4, "key_value_pairs") and lookup_entry(atoms, "step", ("data",)) is None
    with pytest.raises(InvalidInputError, match=r"no row selected \(index '7:'\)"):
        list(database.frames("7:"))
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"empty.db: file is empty"):
        ASEDatabase(empty)
    assert empty.read_bytes() == b""  # not made into a database by looking at it
    text = tmp_path / "text.db"
    text.write_text("not a database")
    with pytest.raises(InvalidInputError, match=r"text.db: not a readable ASE database"):
        ASEDatabase(text)


def test_unit_values_are_codata_2018_and_ase_differs_by_1e_8():
    """The units module's docstring: CODATA 2018; ASE's (CODATA 2014) within ~1e-8 relative."""
    import ase.units

    from eqgeo.data.units import DEBYE_PER_E_ANGSTROM

    assert HARTREE_TO_EV == 27.211386246 and BOHR_TO_ANGSTROM == 0.529177210903
    for ours, ases in (
        (HARTREE_TO_EV, ase.units.Hartree),
        (BOHR_TO_ANGSTROM, ase.units.Bohr),
        (KCAL_PER_MOL_TO_EV, ase.units.kcal / ase.units.mol),
        (DEBYE_PER_E_ANGSTROM, 1 / ase.units.Debye),
    ):
        assert ours != ases and abs(ases / ours - 1) < 2e-8
