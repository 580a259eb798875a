"""The physics term of docking: Vina-form typing and score, its invariances, and the pose search on it."""

import math

import pytest
import torch

from eqgeo.data.poses import perturb_pose, random_rotation_vector, rotation_vector_to_matrix, symmetric_rmsd
from eqgeo.datasets.docking import load_docking_complexes
from eqgeo.inference.physics import Scorer, _pair_terms, quaternion_matrix, search, type_atoms

from ..helpers import shared_path

NAME = "1HNN_SKF"  # a small ligand with one rotatable bond


@pytest.fixture(scope="module")
def complex_():
    root = shared_path("complexes", "posebusters_paper_data", "astex_diverse_set")
    (c,), _ = load_docking_complexes(root, ids=[NAME], pocket_radius=18.0, pocket_shape="ball")
    return c


def test_typing_reads_carbons_hydroxyls_carbonyls_and_ions_from_geometry():
    # ethanol C-C-O (single C-O bond, 1.43 Å), then a lone carbonyl C=O (1.23 Å) far away, then a zinc ion
    z = torch.tensor([6, 6, 8, 6, 8, 30])
    pos = torch.tensor([[0.0, 0, 0], [1.53, 0, 0], [2.0, 1.36, 0], [10, 0, 0], [11.23, 0, 0], [20, 0, 0]])
    t = type_atoms(z, pos)
    assert t.hydrophobic.tolist() == [True, False, False, False, False, False]  # only the C bonded to no O
    assert t.donor.tolist() == [False, False, True, False, False, True]  # the hydroxyl and the ion
    assert t.acceptor.tolist() == [False, False, True, False, True, False]  # both oxygens
    assert t.radius.tolist() == pytest.approx([1.9, 1.9, 1.7, 1.9, 1.7, 1.2])


def test_pair_terms_repel_overlap_reward_contact_and_vanish_far():
    d = torch.tensor([-1.0, 0.0, 6.0, 20.0])
    e = _pair_terms(d, torch.zeros(4), torch.zeros(4))
    assert e[0] > 0.5 and e[1] < 0 and abs(float(e[3])) < 1e-12  # overlap costs, contact pays, far is nothing
    hb = _pair_terms(torch.tensor([-0.8]), torch.zeros(1), torch.ones(1)) - _pair_terms(torch.tensor([-0.8]), torch.zeros(1), torch.zeros(1))
    assert float(hb) == pytest.approx(-0.587)  # a full hydrogen bond only between a donor and an acceptor


def test_quaternion_rotations_are_proper_and_have_a_gradient_at_identity():
    v = torch.randn(5, 3, dtype=torch.float64)
    R = quaternion_matrix(v)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5, dtype=torch.float64))
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (quaternion_matrix(zero) @ torch.tensor([1.0, 0, 0], dtype=torch.float64))[1].backward()
    assert zero.grad.abs().sum() > 0.5  # d/dv_z of the rotated x axis's y component is 2 at v = 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_is_invariant_under_rigid_motions_and_reflections_of_the_whole_complex(complex_, dtype):
    c = complex_
    g = torch.Generator().manual_seed(0)
    R = rotation_vector_to_matrix(random_rotation_vector(math.pi, g)) @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    shift = torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64)
    moved = lambda x: x @ R.T + shift  # noqa: E731
    a = Scorer(c.ligand_z, c.crystal, c.pocket_z, c.pocket_pos, c.pocket_centre, box=40.0, dtype=dtype)
    perm = torch.randperm(c.pocket_z.numel(), generator=g)
    b = Scorer(c.ligand_z, moved(c.crystal), c.pocket_z[perm], moved(c.pocket_pos)[perm], moved(c.pocket_centre), box=40.0, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    energy = float(a(c.crystal[None]))
    assert energy < -5.0  # a crystal pose binds
    assert float(b(moved(c.crystal)[None])) == pytest.approx(energy, abs=tol * abs(energy) * 10)
    # negative control: the ligand moved alone (1 Å) is scored differently
    assert abs(float(b(moved(c.crystal + torch.tensor([1.0, 0, 0], dtype=torch.float64))[None])) - energy) > 0.1


def test_near_atoms_give_the_exact_score(complex_):
    c = complex_
    s = Scorer(c.ligand_z, c.crystal, c.pocket_z, c.pocket_pos, c.pocket_centre, dtype=torch.float64)
    poses = torch.stack([c.crystal, c.crystal + torch.tensor([2.0, 0, 0], dtype=torch.float64)])
    near = s.near(poses, margin=0.0)
    assert near.shape[1] < c.pocket_z.numel()  # a subset
    assert torch.allclose(s.inter(poses, near), s.inter(poses), atol=1e-10)


def test_search_finds_the_crystal_pose_from_perturbed_starts(complex_):
    c = complex_
    s = Scorer(c.ligand_z, c.crystal, c.pocket_z, c.pocket_pos, c.pocket_centre)
    g = torch.Generator().manual_seed(1)
    unit = lambda v: v / v.norm()  # noqa: E731
    starts = torch.stack([perturb_pose(c.crystal, c.bonds, c.moving, unit(torch.randn(3, dtype=torch.float64, generator=g)) * 2.5,
                                       random_rotation_vector(0.6, g), torch.zeros(c.bonds.shape[1], dtype=torch.float64))
                          for _ in range(4)])
    start_rmsd = symmetric_rmsd(starts, c.references)
    assert (start_rmsd > 1.5).all()  # control: the starts are off
    poses, energy = search(s, starts, c.bonds, c.moving, rounds=2, steps=20, first_steps=80)
    rmsd = symmetric_rmsd(poses.double(), c.references)
    assert float(rmsd[energy.argmin()]) < 1.5
    assert torch.allclose(energy, s(poses), rtol=1e-4, atol=1e-3)  # the energies are the poses' own
    assert float(energy.min()) < float(s(starts).min())
    # bond lengths are the starts' (rigid moves and torsions only)
    d0, d1 = torch.cdist(starts[0], starts[0]), torch.cdist(poses[0].double(), poses[0].double())
    bonded = (d0 < 1.7) & (d0 > 0)
    assert torch.allclose(d0[bonded], d1[bonded], atol=1e-3)


def test_an_empty_site_is_refused(complex_):
    c = complex_
    with pytest.raises(ValueError, match="no protein atom"):
        Scorer(c.ligand_z, c.crystal, c.pocket_z[:0], c.pocket_pos[:0], c.pocket_centre)
