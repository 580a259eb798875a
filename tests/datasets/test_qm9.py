"""QM9 on the shared 2000-row qm9pack prefix and the 21-molecule raw (gdb9.sdf layout) sample."""

from __future__ import annotations

import csv

import pytest
import torch
from ase.io import read as ase_read

from eqgeo.data import InvalidInputError, keys
from eqgeo.data.units import HARTREE_TO_EV
from eqgeo.datasets import QM9
from eqgeo.datasets.qm9 import ATOM_REFERENCES, TARGETS, qm9pack_folder

from ..helpers import shared_path


@pytest.fixture(scope="module")
def qm9_prefix(tmp_path_factory):
    return QM9(tmp_path_factory.mktemp("qm9"), source=shared_path("qm9", "qm9pack"))


def test_prefix_size_and_fields(qm9_prefix):
    assert len(qm9_prefix) == 2000 and qm9_prefix.report.count == 0
    data = qm9_prefix[0]
    assert data[keys.NAME] == "gdb_1" and data[keys.SMILES] == "C"
    assert data[keys.ATOMIC_NUMBER].tolist() == [6, 1, 1, 1, 1]
    assert data[keys.TARGET].shape == (1, 19) and data[keys.TARGET].dtype == torch.float64


def test_methane_values_in_pyg_units(qm9_prefix):
    y = qm9_prefix[0][keys.TARGET][0]
    col = {name: float(y[i]) for i, name in enumerate(TARGETS)}
    u0_ha = -40.47893
    assert col["U0"] == pytest.approx(u0_ha * HARTREE_TO_EV, abs=1e-9)
    assert col["U0"] == pytest.approx(-1101.4878, abs=1e-4)
    ref = ATOM_REFERENCES[6][0] + 4 * ATOM_REFERENCES[1][0]
    assert ref == pytest.approx(-37.846772 + 4 * -0.500273)
    assert col["U0_atom"] == pytest.approx((u0_ha - ref) * HARTREE_TO_EV, abs=1e-9)
    assert col["U0_atom"] == pytest.approx(-17.1722, abs=1e-4)
    assert col["homo"] == pytest.approx(-0.3877 * HARTREE_TO_EV)
    assert col["gap"] == pytest.approx(0.5048 * HARTREE_TO_EV)
    assert col["mu"] == 0.0 and col["alpha"] == 13.21 and col["r2"] == 35.3641 and col["cv"] == 6.469
    assert col["A"] == 157.7118


def test_raw_sdf_layout_agrees_with_csv(qm9_prefix, shared_data, tmp_path):
    """The raw files' *_atom columns are published kcal/mol values: an independent check of
    the atomic reference energies (U0, U, H, G) and of every unit conversion."""
    raw = QM9(tmp_path, source=shared_data / "qm9/deepchem")
    assert len(raw) == 21
    by_index = {int(d.idx): d for d in (qm9_prefix[i] for i in range(40))}
    for data in raw:
        other = by_index[int(data.idx)]
        assert torch.equal(data[keys.ATOMIC_NUMBER], other[keys.ATOMIC_NUMBER])
        torch.testing.assert_close(data[keys.POSITION], other[keys.POSITION], atol=1e-4, rtol=0)
        torch.testing.assert_close(data[keys.TARGET], other[keys.TARGET], atol=2e-4, rtol=1e-7)


def test_metatrain_extxyz_agrees(qm9_prefix, shared_data):
    """A third copy of the raw values (Hartree in an extended-XYZ file)."""
    frames = ase_read(shared_data / "qm9/metatrain/qm9_reduced_100.xyz", ":10")
    for i, atoms in enumerate(frames):
        y = qm9_prefix[i][keys.TARGET][0]
        assert float(y[TARGETS.index("U0")]) == pytest.approx(atoms.info["U0"] * HARTREE_TO_EV, abs=1e-6)
        assert float(y[TARGETS.index("lumo")]) == pytest.approx(atoms.info["epsLUMO"] * HARTREE_TO_EV, abs=1e-6)


def test_cache_is_reused_and_keyed_by_source(qm9_prefix, shared_data, monkeypatch):
    root = qm9_prefix.root
    monkeypatch.setattr(QM9, "read", lambda self, report: pytest.fail("processed again"))
    again = QM9(root, source=shared_data / "qm9/qm9pack")
    assert len(again) == 2000 and again.processed_paths == qm9_prefix.processed_paths
    assert "site-packages" not in root


def test_subset_and_splits(qm9_prefix, shared_data):
    subset = QM9(qm9_prefix.root, source=shared_data / "qm9/qm9pack", subset=100, subset_seed=3)
    same = QM9(qm9_prefix.root, source=shared_data / "qm9/qm9pack", subset=100, subset_seed=3)
    assert len(subset) == 100
    assert [d.name for d in subset] == [d.name for d in same]
    split = subset.split(seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [84, 7, 9]  # 110000/130831, 10000/130831
    split = qm9_prefix.split(seed=1, num_train=1500, num_val=250)
    together = torch.cat(list(split.values()))
    assert torch.equal(torch.sort(together).values, torch.arange(2000))
    assert torch.equal(qm9_prefix.split(seed=1, num_train=1500, num_val=250)["train"], split["train"])
    with pytest.raises(ValueError, match="need 2100"):
        qm9_prefix.split(num_train=2000, num_val=100)
    with pytest.raises(ValueError, match="subset"):
        QM9(qm9_prefix.root, source=shared_data / "qm9/qm9pack", subset=5000)


def _write_rows(shared_data, path, edit):
    with open(shared_data / "qm9/qm9pack/qm9_part1.first2000.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [next(reader) for _ in range(4)]
    edit(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def test_invalid_rows_raise_or_are_reported(shared_data, tmp_path):
    def corrupt(rows):
        rows[1]["N_atoms"] = "7"  # mismatched lengths
        rows[2]["Elements"] = rows[2]["Elements"].replace("'O'", "'Xx'")  # H2O
        rows[3]["XYZ_Ang"] = rows[3]["XYZ_Ang"].replace("0.5995394918", "nan", 1)  # C2H2

    source = tmp_path / "csv"
    source.mkdir()
    _write_rows(shared_data, source / "qm9_bad.csv", corrupt)
    with pytest.raises(InvalidInputError, match=r"qm9_bad.csv \[record dsgdb9nsd_000002.xyz\]: N_atoms is 7"):
        QM9(tmp_path / "cache", source=source)
    dataset = QM9(tmp_path / "cache", source=source, skip_invalid=True)
    assert len(dataset) == 1 and dataset.report.count == 3
    reasons = " | ".join(dataset.report.reasons())
    assert "N_atoms" in reasons and "non-finite" in reasons and "unknown elements" in reasons


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        QM9(tmp_path / "cache", source=tmp_path)


def test_qm9pack_wheel_is_found():
    folder = qm9pack_folder()
    assert sorted(p.name for p in folder.glob("qm9_part*.csv")) == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]
