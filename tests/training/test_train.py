"""eqgeo-train: config composition, smoke runs of every experiment, resume, clear errors."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from eqgeo.training import train
from eqgeo.training.train import _config_hash

from ._helpers import TINY, TINY_MD17, TINY_QM9, cfg as _cfg, cli_env, run_cli, started, wait_for_file

CONF = Path(__file__).resolve().parents[2] / "eqgeo" / "conf"
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in ("data", "model", "task", "trainer", "experiment")}


def test_every_config_group_composes():
    assert set(GROUPS["experiment"]) >= {"qm9", "rmd17"} and {"conv", "transformer"} <= set(GROUPS["model"])
    for group, names in GROUPS.items():
        for name in names:
            cfg = _cfg([f"{group}={name}", "run_dir=x"])
            OmegaConf.to_container(cfg.model, resolve=True)  # interpolations resolve
            assert cfg.model.cutoff == cfg.cutoff and cfg.data.cutoff == cfg.cutoff


def test_one_word_overrides_swap_parts():
    assert _cfg(["model=transformer", "run_dir=x"]).model.layer == "transformer"
    cfg = _cfg(["experiment=rmd17", "run_dir=x"])
    assert cfg.data._target_.endswith("MD17DataModule") and cfg.task._target_.endswith("EnergyForcesTask")
    assert cfg.data.train_file.endswith("md17/botnet_ethanol/train.xyz")


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="chanels"):
        _cfg(["model.chanels=8", "run_dir=x"])


def test_config_hash_leaves_out_where_and_how_a_run_goes():
    """Output folder, resume point, marker file and rendezvous time limit change no result: same hash."""
    base = _cfg(["run_dir=a"])
    for other in (["run_dir=b", "ckpt_path=x.ckpt"], ["run_dir=a", "marker.path=m.json", "marker.epoch=3"],
                  ["run_dir=a", "trainer.rendezvous_timeout_s=5"]):
        assert _config_hash(_cfg(other)) == _config_hash(base), other
    assert _config_hash(_cfg(["run_dir=a", "trainer.max_epochs=7"])) != _config_hash(base)


@pytest.mark.slow
def test_qm9_smoke_run_writes_metrics_and_checkpoints(tmp_path):
    metrics = train(_cfg(TINY + TINY_QM9 + ["task.targets=[gap,homo]"], tmp_path))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config_hash"] == metrics["config_hash"] and len(saved["config_hash"]) == 12
    assert saved["data"]["train"] == 30 and saved["data"]["test"] == 10
    assert saved["test"]["gap_mae"]["unit"] == "meV" and saved["test"]["homo_mae"]["value"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    for figure in ("parity.png", "learning_curves.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["figures"] == {"parity": "parity.png", "learning_curves": "learning_curves.png"}
    checkpoint = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    stats = checkpoint["hyper_parameters"]["statistics"]
    assert len(stats["mean"]) == 2 and checkpoint["state_dict"]["model.target_std"].shape == (2,)
    # beside each test MAE, that of predicting the training mean for every test molecule (computed here from
    # the split itself); the trained model's own MAE differs from it
    dm = hydra.utils.instantiate(_cfg(TINY + TINY_QM9, tmp_path / "again").data)
    dm.setup("fit")
    # the split is published by its molecules' QM9 indices: the same config gives the same digest, another seed another
    assert saved["data"]["split_digest"] == dm.split_digest() and len(dm.split_digest()) == 16
    assert sorted(dm.split_indices) == ["test", "train", "val"] and len(dm.split_indices["train"]) == 30
    other = hydra.utils.instantiate(_cfg(TINY + TINY_QM9 + ["seed=1"], tmp_path / "other").data)
    other.setup("fit")
    assert other.split_digest() != dm.split_digest()
    y = torch.cat([g.y for g in dm.splits["test"]])
    for k, target in enumerate(("gap", "homo")):
        column = dm.target_names.index(target)
        expected = (y[:, column].double() - stats["mean"][k]).abs().mean().item() * 1000.0  # eV -> meV
        reference = saved["test"][f"{target}_mean_predictor_mae"]
        assert reference["unit"] == "meV" and reference["value"] == pytest.approx(expected, rel=1e-6)
        assert abs(saved["test"][f"{target}_mae"]["value"] - expected) > 1e-3 * expected


@pytest.mark.slow
def test_rmd17_smoke_run_and_resume(tmp_path, shared_data_env):
    first = train(_cfg(TINY + TINY_MD17 + ["experiment=rmd17"], tmp_path))
    assert first["epochs"] == 1
    assert {"energy_mae", "energy_per_atom_mae", "forces_mae"} <= set(first["test"])
    assert first["test"]["forces_mae"]["unit"] == "meV/Å"
    last = tmp_path / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=True)["global_step"]
    resumed = train(_cfg(TINY + TINY_MD17 + ["experiment=rmd17", "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path))
    assert resumed["epochs"] == 2
    assert torch.load(last, weights_only=True)["global_step"] == 2 * steps


@pytest.mark.slow
def test_max_steps_inside_the_first_epoch_tests_the_last_weights(tmp_path, caplog):
    """trainer.max_steps can stop a run before any validation: early stopping must not ask for the missing
    val/loss, and the test runs on the last weights, said so in the log and in metrics.json. A run of whole epochs
    is the control: it has a best checkpoint."""
    steps = TINY + TINY_QM9 + ["+trainer.max_steps=2"]  # 3 batches per epoch: stops inside the first
    with caplog.at_level("WARNING", logger=train.__module__):
        metrics = train(_cfg(steps, tmp_path / "steps"))
    assert metrics["best_checkpoint"] is None and metrics["test"]["gap_mae"]["value"] > 0
    assert torch.load(tmp_path / "steps" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert "no validation ran" in caplog.text
    control = train(_cfg(TINY + TINY_QM9, tmp_path / "epoch"))
    assert control["best_checkpoint"] is not None and Path(control["best_checkpoint"]).name == "best.ckpt"


def test_missing_data_file_names_the_file_and_the_override(tmp_path):
    cfg = _cfg(TINY + ["experiment=rmd17", "data.train_file=/nowhere/train.xyz"], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"/nowhere/train.xyz does not exist .*set data.train_file="):
        train(cfg)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint /nowhere.ckpt does not exist"):
        train(_cfg(TINY + TINY_QM9 + ["ckpt_path=/nowhere.ckpt"], tmp_path))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad.ckpt cannot be read .*truncated, corrupt"):
        train(_cfg(TINY + TINY_QM9 + [f"ckpt_path={bad}"], tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.parametrize("module", ["eqgeo.train", "eqgeo.training.train"])
def test_cli_prints_the_config_from_any_directory(tmp_path, module):
    out = run_cli([sys.executable, "-m", module, "--cfg", "job", "model=transformer"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "layer: transformer" in out.stdout and "_target_: eqgeo.training.QM9DataModule" in out.stdout


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_experiment_instantiates(experiment, shared_data_env):
    """Each experiment composes and its data module and task are built (without loading data)."""
    import hydra

    cfg = _cfg([f"experiment={experiment}", "run_dir=x"])
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm).__name__ == cfg.data._target_.rsplit(".", 1)[1]
    assert cfg.task._target_.rsplit(".", 1)[1] in {"PropertyTask", "EnergyForcesTask", "DockingTask"}


@pytest.mark.slow
def test_qm9_experiment_smoke_run(tmp_path):
    """experiment=qm9 (the full split by default) on tiny data: the overrides win over the experiment."""
    metrics = train(_cfg(TINY + ["experiment=qm9"] + TINY_QM9, tmp_path))
    assert metrics["data"]["train"] == 30 and metrics["test"]["gap_mae"]["unit"] == "meV"


@pytest.mark.slow
def test_resume_after_a_kill(tmp_path):
    """A run killed (SIGKILL) mid-training resumes from its last.ckpt and carries on counting."""
    run, marker, log = tmp_path / "run", tmp_path / "epoch1.json", tmp_path / "run.log"
    overrides = TINY + TINY_QM9 + ["trainer.max_epochs=1000", "trainer.early_stopping_patience=1000", f"run_dir={run}",
                                   f"marker.path={marker}", "marker.epoch=1"]
    with log.open("w") as output, started([sys.executable, "-m", "eqgeo.train", *overrides], cwd=tmp_path,
                                          env=cli_env(), stdout=output, stderr=subprocess.STDOUT) as proc:
        wait_for_file(marker, proc, log=log)  # epoch 1 has ended and its checkpoint is written
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert json.loads(marker.read_text())["epoch"] == 1 and saved["epoch"] >= 1
    assert not (run / "metrics.json").exists()  # killed before finishing
    resumed = train(_cfg(TINY + TINY_QM9 + [f"trainer.max_epochs={saved['epoch'] + 2}", f"ckpt_path={last}"], run))
    assert resumed["epochs"] == saved["epoch"] + 2
    assert torch.load(last, weights_only=True)["global_step"] > saved["global_step"]
