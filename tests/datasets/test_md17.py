"""MD17 / rMD17: npz layouts, extended XYZ with explicit units, reference energies, the rMD17 split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eqgeo.data import InvalidInputError, keys, read_xyz
from eqgeo.data.units import KCAL_PER_MOL_TO_EV
from eqgeo.datasets import MD17, read_md17_npz, rmd17_splits


@pytest.fixture
def botnet(shared_data):
    return shared_data / "md17/botnet_ethanol"


def _frames_as_kcal_arrays(path, n=20):
    frames = read_xyz(path, index=f":{n}", energy_unit="eV")
    z = frames[0][keys.ATOMIC_NUMBER].numpy()
    R = np.stack([f.pos.double().numpy() for f in frames])
    E = np.array([f.energy.item() for f in frames]) / KCAL_PER_MOL_TO_EV
    F = np.stack([f.forces.double().numpy() for f in frames]) / KCAL_PER_MOL_TO_EV
    return frames, z, R, E, F


def test_botnet_ethanol_is_ev_and_uses_isolated_atoms(botnet, tmp_path):
    dataset = MD17(botnet / "train.xyz", tmp_path, energy_unit="eV", isolated_atoms=botnet / "isolated_atoms.xyz")
    assert len(dataset) == 1000
    data = dataset[0]
    assert data[keys.ENERGY].item() == pytest.approx(-4209.4657843064815)
    assert dataset.atomic_energies[6] == pytest.approx(-1025.2770951782686)
    expected_ref = 2 * -1025.2770951782686 + 6 * -13.568422383046626 + -2035.5709809589698
    assert data[keys.ENERGY_REFERENCE].item() == pytest.approx(expected_ref)
    assert -60 < (data[keys.ENERGY] - data[keys.ENERGY_REFERENCE]).item() < -20  # an atomisation energy in eV


def test_metatrain_ethanol_is_kcal_per_mol(shared_data, tmp_path):
    path = shared_data / "md17/metatrain/ethanol_reduced_100.xyz"
    dataset = MD17(path, tmp_path, energy_unit="kcal/mol")
    assert dataset[0][keys.ENERGY].item() == pytest.approx(-97079.92222178938 * KCAL_PER_MOL_TO_EV)
    assert dataset[0][keys.FORCES][0, 0].item() == pytest.approx(-32.31755688687498 * KCAL_PER_MOL_TO_EV, rel=1e-6)
    with pytest.raises(ValueError, match="energy_unit"):
        MD17(path, tmp_path)


def test_nequip_aspirin_kcal_per_mol(shared_data, tmp_path):
    dataset = MD17(shared_data / "md17/nequip/aspirin.xyz", tmp_path, energy_unit="kcal/mol")
    assert len(dataset) == 15 and dataset[0].num_nodes == 21
    assert dataset[0][keys.ENERGY].item() == pytest.approx(-405681.6 * KCAL_PER_MOL_TO_EV)


def test_rmd17_protocol_split(botnet, tmp_path):
    splits = rmd17_splits(botnet / "train.xyz", botnet / "test_MD.xyz", tmp_path, energy_unit="eV", seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 950, "val": 50, "test": 1000}
    train_names = {d.name for d in splits["train"]}
    assert not train_names & {d.name for d in splits["val"]}
    again = rmd17_splits(botnet / "train.xyz", botnet / "test_MD.xyz", tmp_path, energy_unit="eV", seed=0)
    assert [d.name for d in again["val"]] == [d.name for d in splits["val"]]


def test_one_file_split_holds_out_the_same_test_frames_whatever_the_training_size(shared_data, tmp_path):
    """3BPA: 50 test frames held out of the one file, training and validation drawn from the other 450."""
    path = shared_data / "md17/botnet_3bpa/train_300K.xyz"
    full = rmd17_splits(path, None, tmp_path, energy_unit="eV", seed=0, num_train=400, num_val=50, num_test=50)
    small = rmd17_splits(path, None, tmp_path, energy_unit="eV", seed=0, num_train=50, num_val=50, num_test=50)
    assert {k: len(v) for k, v in full.items()} == {"train": 400, "val": 50, "test": 50}
    names = {k: [d.name for d in v] for k, v in full.items()}
    assert len(set(names["train"]) | set(names["val"]) | set(names["test"])) == 500  # disjoint, all frames
    assert [d.name for d in small["test"]] == names["test"] and len(small["train"]) == 50
    other = rmd17_splits(path, None, tmp_path, energy_unit="eV", seed=1, num_train=400, num_val=50, num_test=50)
    assert [d.name for d in other["test"]] != names["test"]  # negative control: the seed picks them
    with pytest.raises(ValueError, match="num_test frames of .* are held out for testing; got num_test=None"):
        rmd17_splits(path, None, tmp_path, energy_unit="eV")
    with pytest.raises(ValueError, match="has 500 frames, fewer than num_train \\+ num_val \\+ num_test = 450 \\+ 50 \\+ 50"):
        rmd17_splits(path, None, tmp_path, energy_unit="eV", num_train=450, num_val=50, num_test=50)


@pytest.mark.parametrize("layout", ["sgdml", "rmd17"])
def test_npz_layouts_convert_kcal_per_mol(botnet, tmp_path, layout):
    frames, z, R, E, F = _frames_as_kcal_arrays(botnet / "train.xyz")
    path = tmp_path / f"ethanol_{layout}.npz"
    if layout == "sgdml":
        np.savez(path, z=z, R=R, E=E[:, None], F=F)
    else:
        np.savez(path, nuclear_charges=z, coords=R, energies=E, forces=F)
    dataset = MD17(path, tmp_path / "cache")
    assert len(dataset) == 20
    for ours, ref in zip(dataset, frames):
        assert ours[keys.ENERGY].item() == pytest.approx(ref[keys.ENERGY].item(), abs=1e-8)
        torch.testing.assert_close(ours[keys.FORCES], ref[keys.FORCES])
        torch.testing.assert_close(ours[keys.POSITION], ref[keys.POSITION])


def test_npz_mismatched_lengths_name_file_array_and_reason(botnet, tmp_path):
    _, z, R, E, F = _frames_as_kcal_arrays(botnet / "train.xyz", n=5)
    path = tmp_path / "bad.npz"
    np.savez(path, z=z, R=R, E=E[:4, None], F=F)
    with pytest.raises(InvalidInputError, match=r"bad.npz \[record E\]: E has 4 frames but R has 5"):
        read_md17_npz(path)
    np.savez(path, z=z[:-1], R=R, E=E, F=F)
    with pytest.raises(InvalidInputError, match=r"\[record R\]: R has shape"):
        read_md17_npz(path)
    np.savez(path, coords=R)
    with pytest.raises(InvalidInputError, match="not an sGDML"):
        read_md17_npz(path)


def test_npz_non_finite_frame_skipped_and_reported(botnet, tmp_path):
    _, z, R, E, F = _frames_as_kcal_arrays(botnet / "train.xyz", n=5)
    R[2, 0, 1] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, z=z, R=R, E=E, F=F)
    with pytest.raises(InvalidInputError, match=r"\[record frame 2\]: non-finite"):
        MD17(path, tmp_path / "cache")
    dataset = MD17(path, tmp_path / "cache", skip_invalid=True)
    assert len(dataset) == 4 and dataset.report.count == 1
    assert dataset.report.errors[0].record == "frame 2"
