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
