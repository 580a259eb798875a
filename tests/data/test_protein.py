"""PDB reader, residue graphs and pocket selection on the shared protein files."""

from __future__ import annotations

import pytest
import torch

from eqgeo.data import InvalidInputError, keys, read_pdb, read_sdf, residue_graph, select_pocket

PDB_LINES = (
    "ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00           N\n"
    "ATOM      2  CA  ALA A   1      11.639   6.071  -5.147  1.00  0.00           C\n"
    "ATOM      3  HA  ALA A   1      11.000   6.000  -5.000  1.00  0.00           H\n"
    "ATOM      4  CA AGLY A   2      12.000   7.000  -4.000  0.50  0.00           C\n"
    "ATOM      5  CA BGLY A   2      12.500   7.500  -4.500  0.50  0.00           C\n"
    "HETATM    6 ZN    ZN B 101      15.000   5.000  -3.000  1.00  0.00          ZN\n"
    "HETATM    7  O   HOH B 201      16.000   5.000  -3.000  1.00  0.00           O\n"
    "END\n"
)


@pytest.fixture
def tiny_pdb(tmp_path):
    path = tmp_path / "tiny.pdb"
    path.write_text(PDB_LINES)
    return path


def test_tiny_pdb_fields(tiny_pdb):
    data = read_pdb(tiny_pdb)
    assert data[keys.ATOMIC_NUMBER].tolist() == [7, 6, 6, 30]  # H, altloc B and water dropped
    assert data[keys.ATOM_NAME].tolist() == [0, 1, 1, keys.PROTEIN_ATOM_NAMES.index(keys.UNKNOWN)]
    assert [keys.RESIDUE_TYPES[t] for t in data[keys.RESIDUE_TYPE].tolist()] == ["ALA", "ALA", "GLY", keys.UNKNOWN]
    assert data[keys.RESIDUE_ID].tolist() == [0, 0, 1, 2]
    assert data[keys.RESIDUE_NUMBER].tolist() == [1, 1, 2, 101]
    assert data[keys.CHAIN_ID].tolist() == [0, 0, 0, 1] and data[keys.CHAIN_NAMES] == "AB"
    assert data[keys.IS_HETERO].tolist() == [False, False, False, True]
    assert data[keys.IS_METAL].tolist() == [False, False, False, True]
    torch.testing.assert_close(data[keys.POSITION][2], torch.tensor([12.0, 7.0, -4.0]))  # first altloc kept


def test_optional_hydrogens_and_water(tiny_pdb):
    assert read_pdb(tiny_pdb, include_hydrogens=True, keep_water=True).num_nodes == 6


def test_residue_graph(tiny_pdb):
    res = residue_graph(read_pdb(tiny_pdb))
    assert res.num_nodes == 2  # ALA and GLY; the zinc is not a residue
    assert res[keys.PARENT_ATOM].tolist() == [1, 2]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "no ATOM/HETATM"),
        ("HEADER    nothing here\nEND\n", "no ATOM/HETATM"),
        (PDB_LINES[:40], r"\[record line 1\]: truncated ATOM record"),
        (PDB_LINES.replace("11.104", "1x.104"), "unreadable coordinates"),
        (PDB_LINES.replace("           N\n", "          XX\n", 1), "unknown element 'XX'"),
    ],
)
def test_bad_pdb(tmp_path, text, match):
    path = tmp_path / "bad.pdb"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=match) as info:
        read_pdb(path)
    assert info.value.source == str(path)


def test_shared_octamer(shared_data):
    data = read_pdb(shared_data / "complexes/posebusters/1of6/1of6_protein_one_lig_removed.pdb")
    assert data.num_nodes == 20_912 and data[keys.CHAIN_NAMES] == "ABCDEFGH"
    assert not data[keys.IS_HETERO].any()
    res = residue_graph(data)
    assert res.num_nodes == int(data[keys.RESIDUE_ID].max()) + 1  # every residue has a C-alpha
    assert (data[keys.ATOMIC_NUMBER][res[keys.PARENT_ATOM]] == 6).all()


def test_raw_pdb_with_hetatm(shared_data):
    folder = shared_data / "complexes/diffdock/examples"
    data = read_pdb(folder / "6w70.pdb")
    with_water = read_pdb(folder / "6w70.pdb", keep_water=True)
    assert with_water.num_nodes > data.num_nodes
    assert data[keys.IS_HETERO].sum() > 0  # GG2, ACT, SO4 are kept as atoms


def test_pocket_selection(shared_data):
    folder = shared_data / "complexes/posebusters_paper_data/astex_diverse_set/1G9V_RQ3"
    protein = read_pdb(folder / "1G9V_RQ3_protein.pdb")
    ligand = read_sdf(folder / "1G9V_RQ3_ligand.sdf")[0]
    pocket = select_pocket(protein, ligand.pos)  # default 10 A
    assert 0 < pocket.num_nodes < protein.num_nodes
    d = torch.cdist(pocket.pos.double(), ligand.pos.double()).min(dim=1).values
    assert d.max() < 10.0
    outside = torch.ones(protein.num_nodes, dtype=torch.bool)
    outside[pocket[keys.PARENT_ATOM]] = False
    assert torch.cdist(protein.pos[outside].double(), ligand.pos.double()).min() >= 10.0
    torch.testing.assert_close(protein.pos[pocket[keys.PARENT_ATOM]], pocket.pos)
    whole = select_pocket(protein, ligand.pos, 10.0, whole_residues=True)
    assert whole.num_nodes >= pocket.num_nodes
    assert set(whole[keys.RESIDUE_ID].tolist()) == set(pocket[keys.RESIDUE_ID].tolist())


def test_every_shared_pdb_loads(shared_data):
    paths = sorted((shared_data / "complexes").rglob("*.pdb"))
    assert len(paths) > 60
    for path in paths:
        assert read_pdb(path).num_nodes > 0
