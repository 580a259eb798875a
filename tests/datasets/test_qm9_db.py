"""QM9 from an ASE database in schnetpack's layout, and QM9 sources that are files.

The databases are written here from the first rows of the shared qm9pack CSV prefix (the raw
QM9 values, in Hartree, Debye, Bohr^3 ...), so the same molecules read from both sources must
give the same targets in eqgeo's (PyG's) units.
"""

from __future__ import annotations

import ast
import csv

import numpy as np
import pytest
import torch
from ase import Atoms

from eqgeo.data import InvalidInputError, keys
from eqgeo.data.units import BOHR_TO_ANGSTROM, DEBYE_PER_E_ANGSTROM, HARTREE_TO_EV
from eqgeo.datasets import QM9
from eqgeo.datasets.qm9 import ATOM_REFERENCES, TARGETS

from ._schnetpack import write_schnetpack_db

NUM_ROWS = 6  # CH4, NH3, H2O, C2H2, HCN, H2CO

# schnetpack.datasets.QM9's property names -> the qm9pack column holding the same raw value
SCHNETPACK_COLUMNS = {
    "rotational_constant_A": "RotA_GHz",
    "rotational_constant_B": "RotB_GHz",
    "rotational_constant_C": "RotC_GHz",
    "dipole_moment": "Dipole_debye",
    "isotropic_polarizability": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "electronic_spatial_extent": "R2_bohr2",
    "zpve": "ZPVE_au",
    "energy_U0": "InternalEnergy_0K_au",
    "energy_U": "InternalEnergy_298K_au",
    "enthalpy_H": "Enthalphy_298K_au",
    "free_energy": "GibbsFreeEnergy_298K_au",
    "heat_capacity": "Heatcapacity_Cv_cal_mol_K",
}
# the units schnetpack's QM9 writes into _property_unit_dict (the raw QM9 units)
SCHNETPACK_UNITS = {
    "rotational_constant_A": "GHz", "rotational_constant_B": "GHz", "rotational_constant_C": "GHz",
    "dipole_moment": "Debye", "isotropic_polarizability": "a0 a0 a0", "homo": "Ha", "lumo": "Ha", "gap": "Ha",
    "electronic_spatial_extent": "a0 a0", "zpve": "Ha", "energy_U0": "Ha", "energy_U": "Ha", "enthalpy_H": "Ha",
    "free_energy": "Ha", "heat_capacity": "cal/mol/K",
}  # fmt: skip
ENERGIES = ("energy_U0", "energy_U", "enthalpy_H", "free_energy")


def _atomrefs(factor: float = 1.0, names=ENERGIES) -> dict:
    """schnetpack's atomrefs: {property: [value per atomic number 0..99]} in the property's unit."""
    refs = {}
    for k, name in enumerate(names):
        values = [0.0] * 100
        for z, row in ATOM_REFERENCES.items():
            values[z] = row[k] / factor
        refs[name] = values
    return refs


@pytest.fixture
def rows(shared_data):
    with open(shared_data / "qm9/qm9pack/qm9_part1.first2000.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [next(reader) for _ in range(NUM_ROWS)]
    return reader.fieldnames, rows


@pytest.fixture
def csv_dataset(rows, tmp_path):
    """The wheel path: the same molecules as one qm9pack-style CSV file (a file as source)."""
    fieldnames, data = rows
    path = tmp_path / "qm9_first.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(data)
    return QM9(tmp_path / "cache_csv", source=path)


def _molecules(csv_rows, *, names=None, scale=None, length=1.0, index_key=False, drop=None):
    """schnetpack's rows of the qm9pack CSV rows: ``(atoms, data, key_value_pairs)`` with every property a
    1-element array in ``data`` under ``names`` (schnetpack's by default), times ``scale``; positions
    divided by ``length`` (Å per the database's distance unit); ``drop=(i, name)`` leaves one property
    out of row ``i``; ``index_key`` stores the QM9 index as a key."""
    names = names or {name: name for name in SCHNETPACK_COLUMNS}
    scale = scale or {}
    for i, row in enumerate(csv_rows):
        atoms = Atoms(ast.literal_eval(row["Elements"]), positions=np.array(ast.literal_eval(row["XYZ_Ang"])) / length)
        data = {names[n]: np.array([float(row[c]) * scale.get(n, 1.0)]) for n, c in SCHNETPACK_COLUMNS.items()}
        if drop is not None and i == drop[0]:
            del data[drop[1]]
        yield atoms, data, ({"index": int(row["Index"])} if index_key else {})


def _write_db(path, csv_rows, **options):
    """The database schnetpack's QM9 writes: its names and units, positions in Å, QM9's atomrefs."""
    return write_schnetpack_db(path, _molecules(csv_rows, **options), SCHNETPACK_UNITS, atomrefs=_atomrefs())


def test_schnetpack_db_gives_the_wheel_targets(rows, csv_dataset, tmp_path):
    db = _write_db(tmp_path / "qm9.db", rows[1])
    dataset = QM9(tmp_path / "cache", source=db)
    assert len(dataset) == NUM_ROWS == len(csv_dataset) and dataset.report.count == 0
    for from_db, from_csv in zip(dataset, csv_dataset):
        assert torch.equal(from_db[keys.ATOMIC_NUMBER], from_csv[keys.ATOMIC_NUMBER])
        torch.testing.assert_close(from_db[keys.POSITION], from_csv[keys.POSITION], atol=0, rtol=0)
        torch.testing.assert_close(from_db[keys.TARGET], from_csv[keys.TARGET], atol=1e-9, rtol=1e-12)
    methane = dict(zip(TARGETS, dataset[0][keys.TARGET][0].tolist()))
    assert methane["U0"] == pytest.approx(-40.47893 * HARTREE_TO_EV, abs=1e-9)
    assert methane["U0_atom"] == pytest.approx(-17.1722, abs=1e-4)
    assert methane["gap"] == pytest.approx(0.5048 * HARTREE_TO_EV) and methane["A"] == 157.7118
    # no QM9 index in the rows: named by row, not as gdb_<n>
    assert dataset[0][keys.NAME] == "qm9:row1" and int(dataset[0][keys.MOLECULE_INDEX]) == 1


def test_other_units_and_short_names_give_the_same_targets(rows, csv_dataset, tmp_path):
    """Energies in eV, positions in Bohr, the dipole in e*Ang, alpha in Ang^3, short property names."""
    short = {"dipole_moment": "mu", "isotropic_polarizability": "alpha", "electronic_spatial_extent": "r2",
             "energy_U0": "U0", "energy_U": "U", "enthalpy_H": "H", "free_energy": "G", "heat_capacity": "Cv",
             "rotational_constant_A": "A", "rotational_constant_B": "B", "rotational_constant_C": "C"}
    names = {n: short.get(n, n) for n in SCHNETPACK_COLUMNS}
    units = dict(SCHNETPACK_UNITS, dipole_moment="e*Ang", isotropic_polarizability="Ang^3")
    scale = {n: HARTREE_TO_EV for n, u in SCHNETPACK_UNITS.items() if u == "Ha"}
    scale.update(dipole_moment=1 / DEBYE_PER_E_ANGSTROM, isotropic_polarizability=BOHR_TO_ANGSTROM**3)
    units.update({n: "eV" for n in scale if SCHNETPACK_UNITS[n] == "Ha"})
    db = write_schnetpack_db(
        tmp_path / "qm9_ev.db",
        _molecules(rows[1], names=names, scale=scale, length=BOHR_TO_ANGSTROM),
        {names[n]: u for n, u in units.items()},
        distance_unit="Bohr",
        atomrefs=_atomrefs(1 / HARTREE_TO_EV, [names[n] for n in ENERGIES]),
    )
    dataset = QM9(tmp_path / "cache", source=db)
    for from_db, from_csv in zip(dataset, csv_dataset):
        torch.testing.assert_close(from_db[keys.POSITION], from_csv[keys.POSITION], atol=1e-6, rtol=0)
        torch.testing.assert_close(from_db[keys.TARGET], from_csv[keys.TARGET], atol=1e-8, rtol=1e-10)


def test_missing_property_is_named_with_the_row_and_keys(rows, tmp_path):
    db = _write_db(tmp_path / "qm9.db", rows[1], drop=(1, "gap"))
    with pytest.raises(InvalidInputError) as info:
        QM9(tmp_path / "cache", source=db)
    message = str(info.value)
    assert "qm9.db [record row 2]: no 'gap' (QM9 target 'gap') in the row; it has [" in message
    assert "'energy_U0'" in message
    dataset = QM9(tmp_path / "cache", source=db, skip_invalid=True)
    assert len(dataset) == NUM_ROWS - 1 and dataset.report.count == 1


def test_database_without_units_or_with_other_atomrefs_raises(rows, tmp_path):
    db = write_schnetpack_db(tmp_path / "nounits.db", _molecules(rows[1][:2]), None)
    with pytest.raises(InvalidInputError, match=r"nounits.db: the database metadata has no '_property_unit_dict'"):
        QM9(tmp_path / "cache", source=db)
    partial = dict(SCHNETPACK_UNITS)
    del partial["zpve"]
    db = write_schnetpack_db(tmp_path / "partial.db", _molecules(rows[1][:2]), partial, atomrefs=_atomrefs())
    with pytest.raises(InvalidInputError, match=r"no unit for QM9 target 'zpve' .*looked for \['zpve'\]"):
        QM9(tmp_path / "cache", source=db)
    refs = _atomrefs()
    refs["energy_U0"][6] += 0.01  # not QM9's carbon
    db = write_schnetpack_db(tmp_path / "refs.db", _molecules(rows[1][:2]), SCHNETPACK_UNITS, distance_unit=None, atomrefs=refs)
    with pytest.raises(InvalidInputError, match=r"atomrefs\['energy_U0'\]\[6\] = .* differs from QM9's isolated-atom energy"):
        QM9(tmp_path / "cache", source=db)
    # atomrefs are optional: QM9's table is used
    db = write_schnetpack_db(tmp_path / "norefs.db", _molecules(rows[1][:2]), SCHNETPACK_UNITS, distance_unit=None)
    assert len(QM9(tmp_path / "cache", source=db)) == 2


def test_index_key_names_molecules_and_uncharacterized_are_reported(rows, tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    db = _write_db(folder / "qm9.db", rows[1], index_key=True)
    (folder / "uncharacterized.txt").write_text("header\n    1     3   0.1   0.2\n")  # index 3: H2O
    dataset = QM9(tmp_path / "cache", source=db)
    assert [d[keys.NAME] for d in dataset] == ["gdb_1", "gdb_2", "gdb_4", "gdb_5", "gdb_6"]
    assert dataset.report.count == 1 and "uncharacterized" in dataset.report.errors[0].reason


def test_source_that_is_a_file(rows, tmp_path, shared_data):
    other = tmp_path / "notes.txt"
    other.write_text("not QM9")
    with pytest.raises(InvalidInputError, match=r"notes.txt: QM9 source is a file that QM9 does not read; expected a folder"):
        QM9(tmp_path / "cache", source=other)
    with pytest.raises(InvalidInputError, match=r"fake.db: QM9 source is a .db file but not an SQLite"):
        (tmp_path / "fake.db").write_text("text")
        QM9(tmp_path / "cache", source=tmp_path / "fake.db")
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match=r"QM9 source is a CSV file but not a qm9pack one"):
        QM9(tmp_path / "cache", source=table)
    with pytest.raises(FileNotFoundError, match=r"QM9 source .*nowhere does not exist; expected"):
        QM9(tmp_path / "cache", source=tmp_path / "nowhere")
    # an .sdf file with its .sdf.csv next to it is read as the raw layout
    raw = QM9(tmp_path / "cache", source=shared_data / "qm9/deepchem/qm9_mini.sdf")
    assert len(raw) == 21
    # a folder holding only a database: the error says to pass the file
    folder = tmp_path / "only_db"
    folder.mkdir()
    _write_db(folder / "qm9.db", rows[1][:1])
    with pytest.raises(FileNotFoundError, match=r"pass the file itself, e.g. source=.*qm9.db"):
        QM9(tmp_path / "cache", source=folder)
