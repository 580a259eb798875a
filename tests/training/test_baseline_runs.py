"""eqgeo-train with PyG's SchNet, ViSNet and DimeNet++ (model=schnet, model=visnet, model=dimenetpp): smoke runs, checkpoints that
rebuild the baseline from their hyperparameters, load with weights_only=True and reproduce the run's
test metrics."""

import hydra
import lightning as L
import pytest
import torch

from eqgeo.data import keys as K
from eqgeo.models import DimeNetPPBaseline, SchNetBaseline, ViSNetBaseline
from eqgeo.training import EnergyForcesTask, PropertyTask, train

from ._helpers import TINY, TINY_MD17, TINY_QM9, cfg as _cfg

pytestmark = pytest.mark.slow

TRAINER = [o for o in TINY if o.startswith("trainer.")]  # TINY's model.* settings are for eqgeo's own model
TINY_MODEL = {
    "schnet": ["model=schnet", "model.hidden_channels=8", "model.num_filters=8", "model.num_interactions=1",
               "model.num_gaussians=8"],
    "visnet": ["model=visnet", "model.hidden_channels=8", "model.num_heads=2", "model.num_layers=1", "model.num_rbf=8"],
    "dimenetpp": ["model=dimenetpp", "model.hidden_channels=8", "model.num_blocks=1", "model.int_emb_size=4",
                  "model.basis_emb_size=2", "model.out_emb_channels=8", "model.num_spherical=3", "model.num_radial=3"],
}
CLASSES = {"schnet": SchNetBaseline, "visnet": ViSNetBaseline, "dimenetpp": DimeNetPPBaseline}


def _reloaded(run_dir, task_cls, model_cls, cfg, metrics):
    """The run's best checkpoint rebuilt from its hyperparameters (weights_only=True); re-tested on the
    run's test split in a fresh trainer, it must give the test metrics the run reported."""
    path = run_dir / "checkpoints" / "best.ckpt"
    task = task_cls.load_from_checkpoint(path, weights_only=True)
    assert type(task.model) is model_cls and task.model.net is not None
    dm = hydra.utils.instantiate(cfg.data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, inference_mode=False, default_root_dir=run_dir / "retest")
    (retested,) = trainer.test(task, datamodule=dm, verbose=False)
    assert {f"test/{name}" for name in metrics["test"]} <= set(retested)
    for name, entry in metrics["test"].items():
        assert retested[f"test/{name}"] == pytest.approx(entry["value"], rel=1e-5), name
    return torch.load(path, weights_only=True), task


@pytest.mark.parametrize("name", ["schnet", "visnet", "dimenetpp"])
def test_qm9_smoke_run(tmp_path, name):
    cfg = _cfg(TRAINER + TINY_QM9 + TINY_MODEL[name] + ["task.targets=[gap,U0]", "task.reduce=sum"], tmp_path)
    metrics = train(cfg)
    assert metrics["model"]["class"] == CLASSES[name].__name__
    assert metrics["test"]["gap_mae"]["unit"] == "meV" and metrics["test"]["U0_mae"]["value"] > 0
    checkpoint, task = _reloaded(tmp_path, PropertyTask, CLASSES[name], cfg, metrics)
    assert checkpoint["hyper_parameters"]["model"]["_target_"] == f"eqgeo.models.{CLASSES[name].__name__}"
    assert checkpoint["eqgeo"]["model"] == {**checkpoint["hyper_parameters"]["model"], "num_targets": 2, "reduce": "sum"}
    assert task.model.mode == "property" and task.model.num_targets == 2
    assert checkpoint["state_dict"]["model.target_mean"].dtype == torch.float64


@pytest.mark.parametrize("name", ["schnet", "visnet"])
def test_rmd17_smoke_run(tmp_path, name, shared_data_env):
    cfg = _cfg(TRAINER + TINY_MD17 + TINY_MODEL[name] + ["experiment=rmd17"], tmp_path)
    metrics = train(cfg)
    assert metrics["model"]["class"] == CLASSES[name].__name__
    assert {"energy_mae", "energy_per_atom_mae", "forces_mae"} <= set(metrics["test"])
    assert metrics["test"]["forces_mae"]["unit"] == "meV/Å"
    checkpoint, task = _reloaded(tmp_path, EnergyForcesTask, CLASSES[name], cfg, metrics)
    assert task.model.mode == "energy" and task.model.species == [1, 6, 8]  # H, C, O (values: see the EMA test)
    shift = checkpoint["state_dict"]["model.energy_shift"]
    assert shift.dtype == torch.float64 and shift.abs().sum() > 0  # per species, from the training data


def test_checkpoint_keeps_the_species_table(tmp_path):
    """The species of the checkpoint are the elements of the training split, in the order of the table."""
    cfg = _cfg(TRAINER + TINY_QM9 + TINY_MODEL["schnet"], tmp_path)
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    elements = sorted({int(z) for g in dm.splits["train"] for z in g[K.ATOMIC_NUMBER]})
    assert checkpoint["hyper_parameters"]["model"]["species"] == elements
    assert checkpoint["state_dict"]["model.atomic_numbers"].tolist() == elements
