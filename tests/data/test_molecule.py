"""RDKit converters: SMILES, Mol, SDF, MOL2 on built molecules and the shared ligand files."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem

from eqgeo.data import InvalidInputError, SkipReport, from_rdkit_mol, from_smiles, keys, mol_from_smiles, read_mol2, read_sdf


def test_from_smiles_fields_and_bonds():
    data = from_smiles("CC=O", seed=0)
    assert data[keys.ATOMIC_NUMBER].tolist() == [6, 6, 8, 1, 1, 1, 1]
    assert data[keys.POSITION].shape == (7, 3)
    assert data[keys.SMILES] == "CC=O"
    # 6 bonds, both directions, typed; C=O is the only double bond
    assert data[keys.BOND_INDEX].shape == (2, 12)
    double = data[keys.BOND_INDEX][:, data[keys.BOND_TYPE] == keys.BOND_TYPES.index("DOUBLE")]
    assert sorted(double.t().tolist()) == [[1, 2], [2, 1]]
    hyb = [keys.HYBRIDIZATIONS[h] for h in data[keys.HYBRIDIZATION][:3].tolist()]
    assert hyb == ["SP3", "SP2", "SP2"]
    assert keys.EDGE_INDEX not in data  # radius edges are added separately


def test_from_smiles_aromatic_and_charged():
    data = from_smiles("c1ccccc1C(=O)[O-]", seed=1)
    assert data[keys.IS_AROMATIC][:6].all() and not data[keys.IS_AROMATIC][6:].any()
    assert data[keys.FORMAL_CHARGE].sum() == -1
    assert (data[keys.BOND_TYPE] == keys.BOND_TYPES.index("AROMATIC")).sum() == 12


def test_etkdg_seed_is_reproducible_and_mmff_moves_atoms():
    a, b = from_smiles("CCCCO", seed=7), from_smiles("CCCCO", seed=7)
    torch.testing.assert_close(a.pos, b.pos)
    opt = from_smiles("CCCCO", seed=7, optimize=True)
    assert not torch.allclose(a.pos, opt.pos)
    # bonded C-C distances are chemical after optimisation
    i, j = opt[keys.BOND_INDEX][:, 0]
    assert 1.4 < (opt.pos[i] - opt.pos[j]).norm() < 1.6


def test_without_hydrogens():
    assert from_smiles("CCO", add_hydrogens=False).z.tolist() == [6, 6, 8]


def test_from_rdkit_mol_needs_a_3d_conformer():
    mol = Chem.MolFromSmiles("CCO")
    with pytest.raises(InvalidInputError, match="no conformer"):
        from_rdkit_mol(mol)
    mol = mol_from_smiles("CCO")
    mol.GetConformer().SetAtomPosition(1, (float("nan"), 0.0, 0.0))
    with pytest.raises(InvalidInputError, match=r"non-finite .* atoms \[1\]"):
        from_rdkit_mol(mol, source="x.sdf", record=3)


def test_unknown_element_is_rejected():
    mol = Chem.AddHs(Chem.MolFromSmiles("C*"))
    from rdkit.Chem import AllChem

    AllChem.Compute2DCoords(mol)
    mol.GetConformer().Set3D(True)
    with pytest.raises(InvalidInputError, match="unknown element"):
        from_rdkit_mol(mol)


def test_invalid_smiles_names_the_smiles():
    with pytest.raises(InvalidInputError, match=r"<smiles> \[record C1CC\]: invalid SMILES"):
        from_smiles("C1CC")


def test_sdf_and_mol2_of_the_same_ligand(shared_data):
    folder = shared_data / "complexes/diffdock/1a0q"
    sdf = read_sdf(folder / "1a0q_ligand.sdf")
    mol2 = read_mol2(folder / "1a0q_ligand.mol2")
    assert len(sdf) == len(mol2) == 1
    s, m = sdf[0], mol2[0]
    # same heavy atoms at the same places (the files differ in hydrogens)
    heavy_s, heavy_m = s.pos[s.z > 1], m.pos[m.z > 1]
    assert heavy_s.shape == heavy_m.shape
    d = torch.cdist(heavy_s.double(), heavy_m.double())
    assert d.min(dim=1).values.max() < 1e-3
    assert sorted(s.z[s.z > 1].tolist()) == sorted(m.z[m.z > 1].tolist())


def test_multi_record_files(shared_data):
    vina = shared_data / "complexes/prolif/vina"
    poses_sdf, poses_mol2 = read_sdf(vina / "vina_output.sdf"), read_mol2(vina / "vina_output.mol2")
    assert len(poses_sdf) == len(poses_mol2) == 9
    assert all(p.num_nodes == 79 for p in poses_sdf + poses_mol2)
    assert len(read_sdf(shared_data / "complexes/posebusters/1of6/1of6_ligands.sdf")) == 8


def test_sanitization_failure_names_file_record_and_reason(shared_data):
    path = shared_data / "complexes/diffdock/examples/1cbr_ligand.sdf"
    with pytest.raises(InvalidInputError) as info:
        read_sdf(path)
    assert info.value.source == str(path)
    assert info.value.record == "0 (1cbr_ligand)"
    assert "sanitization failed" in info.value.reason and "valence" in info.value.reason


def test_sanitization_failure_skipped_and_reported(shared_data):
    path = shared_data / "complexes/diffdock/examples/1cbr_ligand.sdf"
    report = SkipReport()
    assert read_sdf(path, skip_invalid=True, report=report) == []
    assert report.count == 1
    assert "valence" in next(iter(report.reasons()))
    # without sanitization the record loads
    assert read_sdf(path, sanitize=False)[0].num_nodes == 49


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    with pytest.raises(InvalidInputError, match="empty"):
        read_sdf(empty)
    with pytest.raises(InvalidInputError, match="not found"):
        read_sdf(tmp_path / "missing.sdf")
    bad = tmp_path / "bad.mol2"
    bad.write_text("not a mol2 file\n")
    with pytest.raises(InvalidInputError, match="no @<TRIPOS>MOLECULE"):
        read_mol2(bad)


def test_truncated_sdf_record_is_skipped_with_a_reason(tmp_path):
    good = Chem.MolToMolBlock(mol_from_smiles("CO"))
    truncated = good[: len(good) // 2]
    path = tmp_path / "two.sdf"
    path.write_text(good + "$$$$\n" + truncated + "\n$$$$\n")
    report = SkipReport()
    graphs = read_sdf(path, skip_invalid=True, report=report)
    assert len(graphs) == 1 and report.count == 1
    assert report.errors[0].record.startswith("1")
