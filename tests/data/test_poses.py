"""Ligand pose geometry: rotatable bonds, torsion and rigid moves, Kabsch, symmetric RMSD, conformer matching."""

import math

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from eqgeo.data.errors import InvalidInputError
from eqgeo.data.poses import (
    apply_torsions,
    dihedral_angles,
    kabsch,
    match_atoms,
    match_torsions,
    matrix_to_rotation_vector,
    move_pose,
    perturb_pose,
    random_rotation_vector,
    rigid_move,
    rotatable_bonds,
    rotation_vector_to_matrix,
    superimpose,
    symmetric_rmsd,
    symmetry_references,
)
from eqgeo.o3 import rand_matrix


def _embedded(smiles: str, seed: int = 0) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return Chem.RemoveHs(mol)


def _pos(mol: Chem.Mol) -> torch.Tensor:
    return torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)


@pytest.mark.parametrize(
    "smiles, expected",
    [
        ("CCCC", 1),  # only the middle bond moves heavy atoms
        ("CC", 0),
        ("c1ccccc1-c1ccccc1", 1),  # biaryl bond, not ring bonds
        ("CC(=O)NC", 0),  # amide C-N is planar; the others are terminal
        ("CCC(=O)NCC", 2),  # C-C(=O) and N-C, not the amide
        ("CC#CC", 0),  # bonds next to sp carbons move nothing
        ("C1CCCCC1", 0),
    ],
)
def test_rotatable_bond_count(smiles, expected):
    bonds, moving = rotatable_bonds(Chem.MolFromSmiles(smiles))
    assert bonds.shape == (2, expected) and moving.shape == (expected, Chem.MolFromSmiles(smiles).GetNumAtoms())


def test_moving_side_is_the_smaller_side_and_excludes_the_fixed_atom():
    mol = Chem.MolFromSmiles("CCCCCC(C)(C)C")
    bonds, moving = rotatable_bonds(mol)
    n = mol.GetNumAtoms()
    for k in range(bonds.shape[1]):
        i, j = bonds[:, k].tolist()
        assert moving[k, j] and not moving[k, i]
        assert 2 * int(moving[k].sum()) <= n


def test_torsion_changes_dihedrals_by_the_angle_and_keeps_bond_geometry():
    mol = _embedded("CCOc1ccc(CC(=O)O)cc1CCN")
    pos = _pos(mol)
    bonds, moving = rotatable_bonds(mol)
    angles = torch.rand(bonds.shape[1], dtype=torch.float64) * 2 - 1
    new = apply_torsions(pos, bonds, moving, angles)
    before, after = dihedral_angles(pos, bonds, moving), dihedral_angles(new, bonds, moving)
    change = torch.atan2((after - before).sin(), (after - before).cos())
    torch.testing.assert_close(change, angles, atol=1e-10, rtol=0)
    for bond in mol.GetBonds():  # bond lengths
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        assert abs((new[a] - new[b]).norm() - (pos[a] - pos[b]).norm()) < 1e-10
    for atom in mol.GetAtoms():  # bond angles: distances between the neighbours of each atom
        nb = [x.GetIdx() for x in atom.GetNeighbors()]
        for x in nb:
            for y in nb:
                assert abs((new[x] - new[y]).norm() - (pos[x] - pos[y]).norm()) < 1e-10
    # superimposed: no rigid part left, so the centroid stays
    torch.testing.assert_close(new.mean(0), pos.mean(0), atol=1e-10, rtol=0)
    assert not torch.allclose(new, pos, atol=1e-3)


def test_perturb_then_move_back_is_exact():
    mol = _embedded("CC(C)Cc1ccc(cc1)C(C)C(=O)O")
    pos = _pos(mol)
    bonds, moving = rotatable_bonds(mol)
    for _ in range(5):
        t, w = torch.randn(3, dtype=torch.float64) * 3, random_rotation_vector(math.pi)
        d = (torch.rand(bonds.shape[1], dtype=torch.float64) * 2 - 1) * math.pi
        moved = perturb_pose(pos, bonds, moving, t, w, d)
        assert (moved - pos).norm(dim=1).mean() > 0.5
        torch.testing.assert_close(move_pose(moved, bonds, moving, -t, -w, -d), pos, atol=1e-10, rtol=0)


def test_rotation_vectors_round_trip_at_every_angle():
    axes = torch.randn(200, 3, dtype=torch.float64)
    axes = axes / axes.norm(dim=1, keepdim=True)
    angles = torch.cat([torch.tensor([0.0, 1e-9, 1e-4, math.pi - 1e-7, math.pi - 1e-3]), torch.rand(195) * math.pi]).double()
    omega = axes * angles[:, None]
    back = matrix_to_rotation_vector(rotation_vector_to_matrix(omega))
    torch.testing.assert_close(rotation_vector_to_matrix(back), rotation_vector_to_matrix(omega), atol=1e-9, rtol=0)
    torch.testing.assert_close(back[angles < 3.0], omega[angles < 3.0], atol=1e-9, rtol=0)
    R = rand_matrix(100, dtype=torch.float64)
    torch.testing.assert_close(rotation_vector_to_matrix(matrix_to_rotation_vector(R)), R, atol=1e-9, rtol=0)


def test_rigid_move_rotates_about_the_centroid():
    pos = torch.randn(10, 3, dtype=torch.float64)
    w = torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)
    moved = rigid_move(pos, w, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    c = pos.mean(0)
    expected = torch.stack([-(pos[:, 1] - c[1]), pos[:, 0] - c[0], pos[:, 2] - c[2]], 1) + c + torch.tensor([1.0, 0, 0]).double()
    torch.testing.assert_close(moved, expected, atol=1e-12, rtol=0)


def test_kabsch_recovers_a_rotation_and_never_reflects():
    P = torch.randn(12, 3, dtype=torch.float64)
    R, t = rand_matrix(dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    R_fit, t_fit = kabsch(P, P @ R.T + t)
    torch.testing.assert_close(R_fit, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t_fit, t, atol=1e-10, rtol=0)
    mirrored = P * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # a reflection is not reachable
    R_m, _ = kabsch(P, mirrored)
    assert torch.linalg.det(R_m) > 0.999
    assert (superimpose(P, mirrored) - mirrored).norm() > 1e-3


def test_symmetric_rmsd_forgives_equivalent_atoms_only():
    mol = _embedded("OC(=O)c1ccccc1")
    pos = _pos(mol)
    refs = symmetry_references(mol, [])
    assert refs.shape[0] >= 4  # 2 (carboxylate O) x 2 (ring flip) automorphisms, plus the identity itself
    assert float(symmetric_rmsd(pos, refs)) < 1e-12
    swapped = pos.clone()
    swapped[[0, 2]] = pos[[2, 0]]  # the two carboxylate oxygens exchanged
    assert float((swapped - pos).square().sum(-1).mean().sqrt()) > 0.3
    assert float(symmetric_rmsd(swapped, refs)) < 1e-12
    shifted = pos + torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(symmetric_rmsd(shifted, refs), torch.tensor(3.0, dtype=torch.float64))
    batch = torch.stack([pos, shifted])
    torch.testing.assert_close(symmetric_rmsd(batch, refs), torch.tensor([0.0, 3.0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_symmetric_rmsd_takes_the_closest_copy():
    mol = _embedded("CCO")
    pos = _pos(mol)
    copy = Chem.Mol(mol)
    conf = copy.GetConformer()
    for k in range(copy.GetNumAtoms()):
        x, y, z = (pos[k] + torch.tensor([10.0, 0, 0], dtype=torch.float64)).tolist()
        conf.SetAtomPosition(k, (x, y, z))
    refs = symmetry_references(mol, [copy])
    assert float(symmetric_rmsd(pos + torch.tensor([9.5, 0, 0], dtype=torch.float64), refs)) == pytest.approx(0.5)


def test_match_atoms_ignores_bond_orders_and_hydrogens_but_not_the_graph():
    kekule = Chem.MolFromSmiles("OC(=O)c1ccccc1")
    other = Chem.AddHs(Chem.MolFromSmiles("[O-]C(=O)C1=CC=CC=C1"))
    matches = match_atoms(kekule, other)
    assert matches and all(len(m) == kekule.GetNumAtoms() for m in matches)
    with pytest.raises(InvalidInputError, match="bond graph differs"):
        match_atoms(Chem.MolFromSmiles("OC(=O)c1ccccc1"), Chem.MolFromSmiles("OCC(=O)C1CCCC1"), "other.sdf")
    with pytest.raises(InvalidInputError, match="other.sdf: 3 heavy atoms"):
        match_atoms(kekule, Chem.MolFromSmiles("CCO"), "other.sdf")


def test_match_torsions_undoes_a_torsion_change():
    mol = _embedded("CCCOc1ccc(CCC(=O)O)cc1")
    target = _pos(mol)
    bonds, moving = rotatable_bonds(mol)
    twisted = apply_torsions(target, bonds, moving, torch.tensor([2.0, -1.5, 1.0, -2.5, 0.7, 3.0][: bonds.shape[1]]).double())
    R = rand_matrix(dtype=torch.float64)
    start = twisted @ R.T + 5.0  # in another frame
    assert float((superimpose(start, target) - target).square().sum(-1).mean().sqrt()) > 0.5
    angles, matched, rmsd = match_torsions(start, target, bonds, moving)
    assert rmsd < 0.05 and float((matched - target).square().sum(-1).mean().sqrt()) == pytest.approx(rmsd)
    assert angles.abs().max() <= math.pi


def test_docstring_examples():
    import doctest

    import eqgeo.data.poses

    result = doctest.testmod(eqgeo.data.poses)
    assert result.attempted > 0 and result.failed == 0
