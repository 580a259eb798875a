"""Protein–ligand complex graphs on the shared complexes."""

from __future__ import annotations

import torch

from eqgeo.data import complex_graph, keys, read_pdb, read_sdf


def _load(folder, protein, ligand):
    return read_pdb(folder / protein), read_sdf(folder / ligand)[0]


def test_complex_graph_layout(shared_data):
    protein, ligand = _load(shared_data / "complexes/diffdock/1a0q", "1a0q_protein_processed.pdb", "1a0q_ligand.sdf")
    data = complex_graph(protein, ligand, pocket_radius=8.0, cross_cutoff=4.0)
    n_lig = ligand.num_nodes
    assert data.num_ligand_atoms == n_lig
    assert (data[keys.NODE_TYPE][:n_lig] == keys.NODE_LIGAND).all()
    assert (data[keys.NODE_TYPE][n_lig:] == keys.NODE_PROTEIN).all()
    torch.testing.assert_close(data.pos[:n_lig], ligand.pos)
    # ligand bonds only among ligand nodes, radius edges not added yet
    assert torch.equal(data[keys.BOND_INDEX], ligand[keys.BOND_INDEX])
    assert keys.EDGE_INDEX not in data
    # cross edges join a ligand and a protein atom closer than the cutoff, in both directions
    src, dst = data[keys.CROSS_EDGE_INDEX]
    assert ((src < n_lig) ^ (dst < n_lig)).all()
    assert (data.pos[src] - data.pos[dst]).norm(dim=-1).max() < 4.0
    assert {(a, b) for a, b in zip(src.tolist(), dst.tolist())} == {(b, a) for a, b in zip(src.tolist(), dst.tolist())}
    # ligand atoms carry the LIG residue type, protein atoms their parent atoms
    assert (data[keys.RESIDUE_TYPE][:n_lig] == keys.RESIDUE_TYPES.index("LIG")).all()
    torch.testing.assert_close(protein.pos[data[keys.PARENT_ATOM][n_lig:]], data.pos[n_lig:])


def test_raw_pdb_ligand_copy_removed_and_cofactors_flagged(shared_data):
    protein, ligand = _load(shared_data / "complexes/diffdock/examples", "6w70.pdb", "6w70_ligand.sdf")
    data = complex_graph(protein, ligand)
    heavy = int((ligand.z > 1).sum())
    assert data.num_removed_ligand_atoms == heavy  # the HETATM copy of GG2 in the raw entry
    protein_pos = data.pos[data[keys.NODE_TYPE] == keys.NODE_PROTEIN]
    assert torch.cdist(protein_pos.double(), ligand.pos.double()).min() > 1.0


def test_astex_metal_and_cofactor_flags(shared_data):
    root = shared_data / "complexes/posebusters_paper_data/astex_diverse_set"
    found_metal = found_hetero = False
    for name in ["1HNN_SKF", "1JD0_AZM", "1IA1_TQ3", "1XOZ_CIA"]:
        folder = root / name
        data = complex_graph(*_load(folder, f"{name}_protein.pdb", f"{name}_ligand.sdf"))
        pocket_hetero = data[keys.IS_HETERO] & (data[keys.NODE_TYPE] == keys.NODE_PROTEIN)
        found_hetero |= bool(pocket_hetero.any())
        found_metal |= bool(data[keys.IS_METAL].any())
        assert data.num_removed_ligand_atoms == 0  # processed files hold no ligand copy
    assert found_hetero and found_metal
