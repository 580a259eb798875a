"""Docking complexes from the Astex Diverse Set folder: atom order, references, pocket, cache, errors."""

import shutil

import pytest
import torch

from eqgeo.data.errors import InvalidInputError
from eqgeo.data.poses import superimpose, symmetric_rmsd
from eqgeo.datasets.docking import load_docking_complexes

from ..helpers import shared_path

IDS = ["1G9V_RQ3", "1OF6_DTY", "1GPK_HUP"]  # 6 rotatable bonds / 8 crystal copies / rigid ligand


@pytest.fixture
def astex():
    return shared_path("complexes", "posebusters_paper_data", "astex_diverse_set")


def test_records_are_consistent(astex, tmp_path):
    complexes, report = load_docking_complexes(astex, ids=IDS, cache_dir=tmp_path)
    assert [c.name for c in complexes] == sorted(IDS) and len(report) == 0
    for c in complexes:
        L = c.ligand_z.numel()
        assert c.crystal.shape == c.start.shape == c.matched.shape == (L, 3)
        assert (c.ligand_z > 1).all()  # heavy atoms only
        assert c.moving.shape == (c.bonds.shape[1], L)
        assert float(symmetric_rmsd(c.crystal, c.references)) == 0.0
        # the start conformer's atoms are in the crystal order: bonded distances agree
        d_start, d_crystal = torch.cdist(c.start, c.start), torch.cdist(c.crystal, c.crystal)
        bonded = (d_crystal < 1.7) & (d_crystal > 0)
        assert (d_start[bonded] - d_crystal[bonded]).abs().max() < 0.25  # mismatched atoms would be > 1 Å off
        # matching torsions never makes the conformer worse than superimposing it as it is
        rigid = float((superimpose(c.start, c.crystal) - c.crystal).square().sum(-1).mean().sqrt())
        assert c.matched_rmsd <= rigid + 1e-9 and c.matched_rmsd < 1.5
        # the pocket: protein heavy atoms within 10 Å of the ligand, centred on the crystal ligand
        d = torch.cdist(c.pocket_pos, c.crystal).min(1).values
        assert d.max() < 10.0 and d.min() > 1.5 and (c.pocket_z > 1).all()
        torch.testing.assert_close(c.pocket_centre, c.crystal.mean(0))
    by_name = {c.name: c for c in complexes}
    assert by_name["1GPK_HUP"].bonds.shape[1] == 0 and by_name["1G9V_RQ3"].bonds.shape[1] == 6
    assert by_name["1OF6_DTY"].references.shape[0] >= 8  # every copy is a reference


def test_cache_round_trip(astex, tmp_path):
    first, _ = load_docking_complexes(astex, ids=IDS[:1], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("complexes-*.pt"))) == 1
    again, _ = load_docking_complexes(astex, ids=IDS[:1], cache_dir=tmp_path)
    for a, b in zip(first, again):
        for key, value in a.to_dict().items():
            other = getattr(b, key)
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_excluded_and_invalid_complexes_are_reported(astex, tmp_path):
    root = tmp_path / "complexes"
    for name in IDS[:2]:
        shutil.copytree(astex / name, root / name)
    bad = root / IDS[0] / f"{IDS[0]}_ligand_start_conf.sdf"
    bad.write_text(bad.read_text().replace(" C ", " Q ", 1))  # an atom of an unknown element
    with pytest.raises(InvalidInputError, match=IDS[0]):
        load_docking_complexes(root, cache_dir=tmp_path / "cache")
    complexes, report = load_docking_complexes(root, exclude=["1of6"], skip_invalid=True, cache_dir=tmp_path / "cache")
    assert complexes == []  # one invalid (skipped), one excluded
    named = {e.source: e.reason for e in report.errors}
    assert any(IDS[1] in source and "excluded" in reason for source, reason in named.items())
    assert any(source.endswith(bad.name) for source in named)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_docking_complexes(tmp_path / "nowhere", cache_dir=tmp_path)


def test_sphere_pocket_uses_only_the_site_centre_and_size(astex, tmp_path):
    (shaped,), _ = load_docking_complexes(astex, ids=IDS[:1], pocket_radius=6.0, cache_dir=tmp_path)
    (sphere,), _ = load_docking_complexes(astex, ids=IDS[:1], pocket_radius=6.0, pocket_shape="sphere", cache_dir=tmp_path)
    extent = float((sphere.crystal - sphere.pocket_centre).norm(dim=1).max())
    d_centre = (sphere.pocket_pos - sphere.pocket_centre).norm(dim=1)
    assert d_centre.max() < 6.0 + extent
    # the sphere holds atoms farther than 6 Å from every ligand atom: its edge does not follow the ligand
    assert (torch.cdist(sphere.pocket_pos, sphere.crystal).min(1).values > 6.0).any()
    assert sphere.pocket_z.numel() > shaped.pocket_z.numel()
    with pytest.raises(ValueError, match="pocket_shape"):
        load_docking_complexes(astex, ids=IDS[:1], pocket_shape="cube", cache_dir=tmp_path)


def test_ball_pocket_uses_only_the_site_centre(astex, tmp_path):
    """``ball``: every protein atom within the radius of the site centre and no other, whatever the ligand's size
    (the ``sphere`` of the same radius, which adds the ligand's radius, is larger: the control)."""
    from eqgeo.data.complex import remove_ligand_copies
    from eqgeo.data.protein import read_pdb

    (ball,), _ = load_docking_complexes(astex, ids=IDS[:1], pocket_radius=8.0, pocket_shape="ball", cache_dir=tmp_path)
    (sphere,), _ = load_docking_complexes(astex, ids=IDS[:1], pocket_radius=8.0, pocket_shape="sphere", cache_dir=tmp_path)
    protein, _ = remove_ligand_copies(read_pdb(astex / IDS[0] / f"{IDS[0]}_protein.pdb", dtype=torch.float64), ball.crystal)
    inside = (protein.pos.double() - ball.pocket_centre).norm(dim=1) < 8.0
    assert ball.pocket_z.numel() == int(inside.sum()) > 0
    assert torch.allclose(ball.pocket_pos.sort(0).values, protein.pos[inside].double().sort(0).values)
    assert sphere.pocket_z.numel() > ball.pocket_z.numel()
