"""eqgeo-train with PyG's SchNet and ViSNet (model=schnet, model=visnet): smoke runs, checkpoints that
rebuild the baseline from their hyperparameters and load with weights_only=True."""

import pytest
import torch
from hydra import compose, initialize_config_module

from eqgeo.models import SchNetBaseline, ViSNetBaseline
from eqgeo.training import EnergyForcesTask, PropertyTask, train

TRAINER = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.ema_decay=0.9"]
TINY_MODEL = {
    "schnet": ["model=schnet", "model.hidden_channels=8", "model.num_filters=8", "model.num_interactions=1",
               "model.num_gaussians=8"],
    "visnet": ["model=visnet", "model.hidden_channels=8", "model.num_heads=2", "model.num_layers=1", "model.num_rbf=8"],
}
CLASSES = {"schnet": SchNetBaseline, "visnet": ViSNetBaseline}
TINY_QM9 = ["data.subset=60", "data.num_train=30", "data.num_val=10", "data.num_test=10", "data.batch_size=10"]
TINY_MD17 = ["data.num_train=10", "data.num_val=5", "data.num_test=5", "data.batch_size=5"]


def _cfg(overrides, tmp_path):
    with initialize_config_module(config_module="eqgeo.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides) + [f"run_dir={tmp_path}"])


def _check_checkpoint(path, task_cls, model_cls):
    checkpoint = torch.load(path, weights_only=True)
    task = task_cls.load_from_checkpoint(path, weights_only=True)
    assert type(task.model) is model_cls and task.model.net is not None
    for key, value in task.model.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][f"model.{key}"], rtol=0, atol=0)
    return checkpoint, task


@pytest.mark.parametrize("name", ["schnet", "visnet"])
def test_qm9_smoke_run(tmp_path, name):
    metrics = train(_cfg(TRAINER + TINY_QM9 + TINY_MODEL[name] + ["task.targets=[gap,U0]", "task.reduce=sum"], tmp_path))
    assert metrics["model"]["class"] == CLASSES[name].__name__
    assert metrics["test"]["gap_mae"]["unit"] == "meV" and metrics["test"]["U0_mae"]["value"] > 0
    checkpoint, task = _check_checkpoint(tmp_path / "checkpoints" / "best.ckpt", PropertyTask, CLASSES[name])
    assert checkpoint["hyper_parameters"]["model"]["name"] == name
    assert task.model.mode == "property" and task.model.num_targets == 2
    assert checkpoint["state_dict"]["model.target_mean"].dtype == torch.float64


@pytest.mark.parametrize("name", ["schnet", "visnet"])
def test_rmd17_smoke_run(tmp_path, name, shared_data, monkeypatch):
    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared_data))
    metrics = train(_cfg(TRAINER + TINY_MD17 + TINY_MODEL[name] + ["experiment=rmd17"], tmp_path))
    assert metrics["model"]["class"] == CLASSES[name].__name__
    assert {"energy_mae", "energy_per_atom_mae", "forces_mae"} <= set(metrics["test"])
    assert metrics["test"]["forces_mae"]["unit"] == "meV/Å"
    checkpoint, task = _check_checkpoint(tmp_path / "checkpoints" / "last.ckpt", EnergyForcesTask, CLASSES[name])
    assert task.model.mode == "energy" and len(task.model.species) == 3  # H, C, O (values: see the EMA test)
    shift = checkpoint["state_dict"]["model.energy_shift"]
    assert shift.dtype == torch.float64 and shift.abs().sum() > 0  # per species, from the training data


def test_checkpoint_keeps_the_species_table(tmp_path):
    train(_cfg(TRAINER + TINY_QM9 + TINY_MODEL["schnet"], tmp_path))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    species = checkpoint["hyper_parameters"]["model"]["species"]
    assert checkpoint["state_dict"]["model.atomic_numbers"].tolist() == species
