"""eqgeo-dock: a user's ligand (SDF or SMILES) docked into a user's protein about a given site."""

import shutil

import pytest
import torch
from rdkit import Chem

from eqgeo.cli import dock as dock_cli
from eqgeo.datasets.docking import complex_from_inputs
from eqgeo.inference.dock import write_poses_sdf
from eqgeo.inference.docking import dock

from ..helpers import shared_path
from .test_checkpoint import OLD

NAME = "1G9V_RQ3"


@pytest.fixture
def inputs(tmp_path):
    folder = shared_path("complexes", "posebusters_paper_data", "astex_diverse_set", NAME)
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"  # the old docking run, away from its data
    shutil.copytree(OLD / "docking", tmp_path / "run")
    return folder / f"{NAME}_protein.pdb", folder / f"{NAME}_ligand.sdf", checkpoint


@pytest.mark.parametrize("physics", [True, False])
def test_dock_writes_ranked_poses_with_their_confidence(inputs, tmp_path, capsys, physics):
    protein, ligand, checkpoint = inputs
    out = tmp_path / "poses.sdf"
    options = ["--rounds", "1"] if physics else ["--no-physics"]
    assert dock_cli([str(checkpoint), str(protein), str(ligand), "--site", str(ligand), "--starts", "5",
                     "--output", str(out), *options]) == 0
    assert "5 poses" in capsys.readouterr().out
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    heavy = Chem.MolFromMolFile(str(ligand))
    assert len(mols) == 5 and all(m is not None for m in mols)
    assert [m.GetIntProp("eqgeo_rank") for m in mols] == [1, 2, 3, 4, 5]
    confidences = [m.GetDoubleProp("eqgeo_confidence") for m in mols]
    if physics:  # ranked by the physics score, lowest first; poses that bind
        energies = [m.GetDoubleProp("eqgeo_energy") for m in mols]
        assert energies == sorted(energies) and energies[0] < -3.0
        assert len(set(confidences)) == 5  # the model's confidence of each final pose is there too
    else:
        assert confidences == sorted(confidences, reverse=True) and not mols[0].HasProp("eqgeo_energy")
    for m in mols:
        assert m.GetNumHeavyAtoms() == heavy.GetNumAtoms() and m.GetNumAtoms() > m.GetNumHeavyAtoms()  # hydrogens added
        assert 0.0 < m.GetDoubleProp("eqgeo_probability") < 1.0
        # the same molecule (graph and elements) as the input
        assert m.HasSubstructMatch(Chem.RemoveHs(heavy), useChirality=False)
    # the poses sit in the site: centroids within a few Å of the reference ligand's centroid
    centre = torch.tensor(heavy.GetConformer().GetPositions()).mean(0)
    for m in mols:
        xyz = torch.tensor(Chem.RemoveHs(m).GetConformer().GetPositions())
        assert float((xyz.mean(0) - centre).norm()) < 6.0


def test_complex_from_smiles_is_the_same_molecule_and_pocket_as_from_its_file(inputs):
    protein, ligand, _ = inputs
    heavy = Chem.MolFromMolFile(str(ligand))
    centre = heavy.GetConformer().GetPositions().mean(0).tolist()
    from_file, _ = complex_from_inputs(protein, ligand, centre, pocket_radius=8.0)
    from_smiles, mol = complex_from_inputs(protein, Chem.MolToSmiles(heavy), centre, pocket_radius=8.0)
    assert sorted(from_smiles.ligand_z.tolist()) == sorted(from_file.ligand_z.tolist())
    assert from_smiles.bonds.shape == from_file.bonds.shape
    assert torch.equal(from_smiles.pocket_pos, from_file.pocket_pos)  # a ball about the centre: the ligand does not matter
    assert float((from_file.pocket_pos - torch.tensor(centre)).norm(dim=1).max()) < 8.0
    assert mol.GetNumAtoms() == from_smiles.ligand_z.numel()


def test_dock_refuses_bad_input_by_name(inputs, tmp_path):
    protein, ligand, checkpoint = inputs
    with pytest.raises(SystemExit):  # neither --centre nor --site
        dock_cli([str(checkpoint), str(protein), str(ligand)])
    with pytest.raises(SystemExit):
        dock_cli([str(checkpoint), str(protein), "C1CC(", "--centre", "0", "0", "0"])
    with pytest.raises(ValueError, match="SMILES"):
        complex_from_inputs(protein, "C1CC(", [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="ball or sphere"):
        complex_from_inputs(protein, ligand, [0.0, 0.0, 0.0], pocket_shape="ligand")
    with pytest.raises(Exception, match="no protein heavy atom"):
        complex_from_inputs(protein, ligand, [500.0, 500.0, 500.0])
    with pytest.raises(ValueError, match="heavy atoms"):
        write_poses_sdf(tmp_path / "x.sdf", Chem.MolFromSmiles("CCO"), torch.zeros(1, 4, 3), torch.zeros(1))
    with pytest.raises(ValueError, match="starts"):
        dock(None, None, starts=0)
