"""ProteinLigandComplexes over the shared PoseBusters/Astex and PDBbind-like folders."""

from __future__ import annotations

import os

import pytest
import torch

from eqgeo.data import InvalidInputError, keys
from eqgeo.datasets import ProteinLigandComplexes

ASTEX = "complexes/posebusters_paper_data/astex_diverse_set"
IDS = ["1G9V_RQ3", "1JD0_AZM", "1OF6_DTY"]


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_astex_layout(shared_data, tmp_path):
    folder = shared_data / ASTEX
    before = _snapshot(folder / IDS[0])
    dataset = ProteinLigandComplexes(folder, tmp_path, ids=IDS)
    assert [d.name for d in dataset] == IDS
    assert _snapshot(folder / IDS[0]) == before  # nothing written or edited
    for data in dataset:
        assert data.layout == "posebusters" and data.ligand_file == f"{data.name}_ligand.sdf"
        n_lig = int(data.num_ligand_atoms)
        lig, prot = data.pos[:n_lig], data.pos[n_lig:]
        assert torch.cdist(prot.double(), lig.double()).min(dim=1).values.max() < 10.0
    zinc = dataset[1]  # carbonic anhydrase with its zinc
    assert (zinc[keys.IS_METAL] & (zinc[keys.NODE_TYPE] == keys.NODE_PROTEIN)).any()


def test_start_conformer_in_the_crystal_pocket(shared_data, tmp_path):
    folder = shared_data / ASTEX
    crystal = ProteinLigandComplexes(folder, tmp_path, ids=IDS[:1])[0]
    start = ProteinLigandComplexes(folder, tmp_path, ids=IDS[:1], ligand="start_conf")[0]
    assert start.ligand_file.endswith("_ligand_start_conf.sdf")
    assert int(start.num_ligand_atoms) > int(crystal.num_ligand_atoms)  # the start conformer has hydrogens
    protein = lambda d: set(d[keys.PARENT_ATOM][d[keys.NODE_TYPE] == keys.NODE_PROTEIN].tolist())  # noqa: E731
    assert protein(start) == protein(crystal)


def test_pdbbind_layouts_and_layout_report(shared_data, tmp_path):
    posebusters = ProteinLigandComplexes(shared_data / "complexes/posebusters", tmp_path)
    assert [d.name for d in posebusters] == ["1ia1", "1of6", "1s3v", "1uou"]
    assert [os.path.basename(e.source) for e in posebusters.layout_report.errors] == ["5ze6"]
    diffdock = ProteinLigandComplexes(shared_data / "complexes/diffdock", tmp_path)
    assert [d.name for d in diffdock] == ["1a0q"] and diffdock[0].layout == "pdbbind"
    assert "not a PoseBusters/Astex or PDBbind-like" in str(diffdock.layout_report)


def test_invalid_ligand_raises_or_is_reported(shared_data, tmp_path):
    root = tmp_path / "complexes"
    (root / "1cbr").mkdir(parents=True)
    examples = shared_data / "complexes/diffdock/examples"
    for name in ("1cbr_protein.pdb", "1cbr_ligand.sdf"):
        (root / "1cbr" / name).symlink_to(examples / name)
    (root / "1a0q").symlink_to(shared_data / "complexes/diffdock/1a0q", target_is_directory=True)
    with pytest.raises(InvalidInputError, match=r"1cbr_ligand.sdf \[record 0 \(1cbr_ligand\)\]: RDKit sanitization failed"):
        ProteinLigandComplexes(root, tmp_path / "cache")
    dataset = ProteinLigandComplexes(root, tmp_path / "cache", skip_invalid=True)
    assert [d.name for d in dataset] == ["1a0q"]
    assert dataset.report.count == 1 and "valence" in dataset.report.errors[0].reason


def test_layout_report_names_the_missing_file(shared_data, tmp_path):
    """A folder without ``<id>_ligand.sdf`` (or .mol2) / without a protein is skipped, naming what it lacks."""
    from eqgeo.datasets import find_complex_files

    examples = shared_data / "complexes/diffdock/examples"
    root = tmp_path / "complexes"
    for folder, names in {
        "1cbr": ["1cbr_protein.pdb"],  # no ligand
        "1a46": ["1a46_ligand.sdf"],  # no protein
        "6ahs": ["6ahs_protein_processed.pdb", "6ahs_ligand.sdf"],  # complete
    }.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).symlink_to(examples / name)
    (root / "6ahs" / "6ahs_protein_copy.pdb").symlink_to(examples / "6ahs_protein_processed.pdb")  # 2 proteins
    (root / "6moa").mkdir()  # empty
    found, report = find_complex_files(root)
    assert found == []
    reasons = {os.path.basename(e.source): e.reason for e in report.errors}
    assert set(reasons) == {"1cbr", "1a46", "6ahs", "6moa"}
    assert "missing the crystal ligand 1cbr_ligand.sdf (or 1cbr_ligand.mol2)" in reasons["1cbr"]
    assert "holds: 1cbr_protein.pdb" in reasons["1cbr"] and "missing the protein" not in reasons["1cbr"]
    assert "missing the protein 1a46_protein.pdb (or 1a46_protein*.pdb)" in reasons["1a46"]
    assert "2 protein files ['6ahs_protein_copy.pdb', '6ahs_protein_processed.pdb']" in reasons["6ahs"]
    assert "missing the protein 6moa_protein.pdb" in reasons["6moa"] and "6moa_ligand.sdf" in reasons["6moa"]
    assert "holds: nothing" in reasons["6moa"]
    # the folder is named: it is the error's source
    assert str(root / "1cbr") in {e.source for e in report.errors}


def test_docking_names_the_missing_ligand_sdf(shared_data, tmp_path):
    """A PDBbind-like folder with only ``<id>_ligand.mol2``: docking needs the .sdf and names it."""
    from eqgeo.datasets import load_docking_complexes

    source = shared_data / "complexes/diffdock/1a0q"
    folder = tmp_path / "complexes" / "1a0q"
    folder.mkdir(parents=True)
    for name in ("1a0q_protein_processed.pdb", "1a0q_ligand.mol2"):
        (folder / name).symlink_to(source / name)
    with pytest.raises(InvalidInputError, match=r"1a0q: docking needs the crystal ligand as SDF: 1a0q_ligand.sdf is missing "
                       r"\(found only 1a0q_ligand.mol2\)"):
        load_docking_complexes(folder.parent, cache_dir=tmp_path / "cache")
    complexes, report = load_docking_complexes(folder.parent, skip_invalid=True, cache_dir=tmp_path / "cache")
    assert complexes == [] and "1a0q_ligand.sdf is missing" in report.errors[0].reason
    assert report.errors[0].source == str(folder)


def test_start_conf_names_the_missing_file(shared_data, tmp_path):
    with pytest.raises(InvalidInputError, match=r"ligand='start_conf' but 1a0q_ligand_start_conf.sdf is missing"):
        ProteinLigandComplexes(shared_data / "complexes/diffdock", tmp_path, ligand="start_conf")
