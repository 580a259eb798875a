"""Checkpoints: the record of what built them, the one loader, checkpoints of the previous version, and
evaluation without the training package."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eqgeo.inference.checkpoint import (
    FORMAT,
    RECORD_KEY,
    CheckpointError,
    instantiate_model,
    load_model,
    read_checkpoint,
)
import eqgeo
from eqgeo.inference.evaluate import evaluate

from ..helpers import shared_path

OLD = Path(__file__).parent / "checkpoints_f8d3b6f"  # written by eqgeo at f8d3b6f, before the record existed
EXPECTED = json.loads((OLD / "expected.json").read_text())
PACKAGE_ROOT = Path(eqgeo.__file__).resolve().parents[1]
ASTEX = ("complexes", "posebusters_paper_data", "astex_diverse_set")


def _old(name: str) -> Path:
    return OLD / name / "checkpoints" / "best.ckpt"


@pytest.fixture
def old_runs(tmp_path, monkeypatch):
    """The old runs copied where their config's relative data paths (../shared/data/...) resolve."""
    shared = shared_path()
    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared))
    work = tmp_path / "work"
    shutil.copytree(OLD, work / "runs")
    (tmp_path / "shared").symlink_to(shared.parent)
    monkeypatch.chdir(work)
    return work / "runs"


@pytest.mark.parametrize("name, kind, target", [
    ("property", "property", "eqgeo.models.PropertyModel"),
    ("energy", "energy", "eqgeo.models.InteratomicPotential"),
    ("schnet", "energy", "eqgeo.models.SchNetBaseline"),
    ("docking", "docking", "eqgeo.models.DockingModel"),
])
def test_old_checkpoints_get_a_record(name, kind, target):
    checkpoint = read_checkpoint(_old(name))
    assert checkpoint.format == 0 and checkpoint.kind == kind and checkpoint.model["_target_"] == target
    assert checkpoint.task["model"]["_target_"] == target and "name" not in checkpoint.model
    model = checkpoint.build_model()
    assert type(model).__name__ == target.rsplit(".", 1)[1] and not model.training
    # every weight of the file is in the model, and the buffers come from the raw (non-averaged) state
    state = model.state_dict()
    raw = checkpoint.contents["current_model_state"]
    assert all(torch.equal(state[k[6:]], v) for k, v in raw.items() if k[6:] in dict(model.named_buffers()))
    saved = {k[6:] for k in checkpoint.contents["state_dict"] if k.startswith("model.")}
    assert saved <= set(state)
    # weights added since (InteratomicPotential.energy_bias) come with the value that keeps the saved function
    added = set(state) - saved
    assert added == ({"energy_bias"} if target.endswith("InteratomicPotential") else set()), added
    assert all(state[k].abs().max() == 0 for k in added)


def test_checkpoints_saved_before_added_weights_load_but_do_not_resume(tmp_path):
    """The old potential lacks energy_bias: its optimiser state has no entry for it, so resuming is refused with the
    reason, while reading it for inference works; the old property model (no added weights) still resumes."""
    with pytest.raises(CheckpointError, match=r"before eqgeo.models.InteratomicPotential had the weights "
                                              r"\['energy_bias'\].*cannot resume from it"):
        read_checkpoint(_old("energy"), resumable=True)
    read_checkpoint(_old("energy")).build_model()
    read_checkpoint(_old("property"), resumable=True)
    # a float64 potential saved before: the added weight comes in float64, and so does the model
    from eqgeo.models import InteratomicPotential

    old = read_checkpoint(_old("energy"))
    contents = dict(old.contents)
    contents["state_dict"] = {k: (v.double() if v.is_floating_point() else v) for k, v in old.contents["state_dict"].items()}
    contents.pop("current_model_state", None)
    path = tmp_path / "float64.ckpt"
    torch.save(contents, path)
    model = read_checkpoint(path).build_model()
    assert isinstance(model, InteratomicPotential)
    assert model.energy_bias.dtype == torch.float64 and model.readout[0].weight.dtype == torch.float64


@pytest.mark.parametrize("case, name, data, options", [
    ("energy", "energy", "xyz", {"energy_unit": "kcal/mol"}),
    ("schnet", "schnet", "xyz", {"energy_unit": "kcal/mol"}),
    ("property_test", "property", "qm9:test", {}),
    ("property_unseen", "property", "qm9", {"limit": 50}),
    ("docking", "docking", "folder", {}),
    ("docking_test", "docking", "docking:test", {}),
])
def test_old_checkpoints_give_the_metrics_they_gave(old_runs, tmp_path, case, name, data, options):
    """The metrics eqgeo-evaluate of f8d3b6f gave for these checkpoints (expected.json), from the new loader."""
    if data == "xyz":
        data = str(shared_path("md17", "metatrain", "ethanol_reduced_100.xyz"))
    elif data == "folder":
        folder = tmp_path / "unseen"
        for complex_name in ("2BR1_PFP", "1YV3_BIT"):
            shutil.copytree(shared_path(*ASTEX, complex_name), folder / complex_name)
        data = str(folder)
    result = evaluate(old_runs / name / "checkpoints" / "best.ckpt", data, tmp_path / "eval", **options)
    expected = EXPECTED[case]
    assert result["task"] == expected["task"] and result["data"]["size"] == expected["size"]
    assert len(result["skipped"]) == expected["skipped"]
    got = {k: v["value"] for k, v in result["test"].items()}
    assert set(got) == set(expected["test"])
    for key, value in expected["test"].items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_new_checkpoints_record_what_built_them(tmp_path):
    from eqgeo.training import train

    from ..training._helpers import TINY, TINY_QM9, cfg

    metrics = train(cfg(TINY + TINY_QM9 + ["task.targets=[gap,homo]"], tmp_path))
    path = tmp_path / "checkpoints" / "best.ckpt"
    raw = torch.load(path, weights_only=True)
    record = raw[RECORD_KEY]
    assert record["format"] == FORMAT and record["kind"] == "property"
    assert record["task"]["_target_"] == "eqgeo.training.tasks.PropertyTask"
    assert record["model"]["_target_"] == "eqgeo.models.PropertyModel"
    assert record["model"]["num_targets"] == 2 and record["model"]["channels"] == 4
    assert record["task"]["targets"] == ["gap", "homo"] and "kind" not in record["task"] and "network" not in record["task"]
    checkpoint = read_checkpoint(path, resumable=True)
    assert checkpoint.format == FORMAT and checkpoint.resumable
    # the model is exactly the one the task built: same weights as the task's, same arguments
    model = load_model(path)
    again, config = instantiate_model(record["model"])
    assert config == record["model"] and sum(p.numel() for p in again.parameters()) == metrics["model"]["parameters"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw["state_dict"][f"model.{k}"]), k
    # and it gives the run's test numbers on the run's test split
    result = evaluate(path, "qm9:test", tmp_path / "eval")
    for name in ("gap_mae", "homo_mae"):
        assert result["test"][name]["value"] == pytest.approx(metrics["test"][name]["value"], rel=1e-6)


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.ckpt does not exist \(to resume, set ckpt_path="):
        read_checkpoint(tmp_path / "nowhere.ckpt", resumable=True)
    contents = torch.load(_old("energy"), weights_only=True)
    cases = {
        "newer": ({**contents, RECORD_KEY: {"format": FORMAT + 1}}, "record format 2; this eqgeo reads formats up to 1"),
        "kind": ({**contents, RECORD_KEY: {"format": 1, "kind": "forces", "task": {}, "model": {}}},
                 "kind 'forces' is not one of"),
        "target": ({**contents, RECORD_KEY: {"format": 1, "kind": "energy", "task": {"_target_": "x"}, "model": {}}},
                   "its record has no model _target_"),
        "task": ({**contents, "hyper_parameters": {"model": {"name": "eqgeo"}, "lr": 1.0}},
                 "are not those of an eqgeo task"),
        "name": ({**contents, "hyper_parameters": {**contents["hyper_parameters"],
                                                   "model": {**contents["hyper_parameters"]["model"], "name": "dimenet"}}},
                 "model.name='dimenet', which eqgeo never built"),
        "loops": ({k: v for k, v in contents.items() if k != "loops"}, "lacks the loop state"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"{name}.ckpt"
        torch.save(bad, path)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(path, resumable=True).build_model()
    # a record whose weights do not fit its model
    shapes = {**contents, "hyper_parameters": {**contents["hyper_parameters"],
                                               "model": {**contents["hyper_parameters"]["model"], "channels": 8}}}
    torch.save(shapes, tmp_path / "shapes.ckpt")
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_model(tmp_path / "shapes.ckpt")
    # negative control: the unchanged file loads
    torch.save(contents, tmp_path / "fine.ckpt")
    assert type(load_model(tmp_path / "fine.ckpt")).__name__ == "InteratomicPotential"


_NO_TRAINING = """
import sys
from eqgeo.inference.evaluate import evaluate
options = dict(a.split("=") for a in sys.argv[4:])
result = evaluate(sys.argv[1], sys.argv[2], sys.argv[3], **{k: int(v) if v.isdigit() else v for k, v in options.items()})
loaded = sorted(m for m in sys.modules if m.startswith(("eqgeo.training", "lightning", "pytorch_lightning")))
print("LOADED", loaded, result["data"]["size"])
"""


@pytest.mark.parametrize("name, data, options, needs_training", [
    ("energy", "xyz", ["energy_unit=kcal/mol"], False),
    ("property", "qm9", ["limit=20"], False),
    ("docking", "folder", [], False),
    # negative control: the run's own split is rebuilt by its training data module, and the probe sees it
    ("property", "qm9:test", [], True),
])
def test_evaluating_on_data_imports_nothing_from_training(old_runs, tmp_path, name, data, options, needs_training):
    if data == "xyz":
        data = str(shared_path("md17", "metatrain", "ethanol_reduced_100.xyz"))
    elif data == "folder":
        data = str(tmp_path / "one")
        shutil.copytree(shared_path(*ASTEX, "2BR1_PFP"), Path(data) / "2BR1_PFP")
    out = subprocess.run([sys.executable, "-c", _NO_TRAINING, str(old_runs / name / "checkpoints" / "best.ckpt"), data,
                          str(tmp_path / "eval"), *options], capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})  # the eqgeo under test
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("LOADED"))
    if needs_training:
        assert "'eqgeo.training'" in line and "'lightning'" in line, line
    else:
        assert line.startswith("LOADED [] "), line


def test_exported_docking_checkpoint_carries_its_run_data_settings_and_given_weights(tmp_path):
    """Away from its run folder, an exported checkpoint still gives eqgeo-evaluate the run's pocket and starts
    (negative control: the run's checkpoint copied alone has none); ``model=`` writes refitted weights, and a
    model of another kind is refused by name."""
    from eqgeo.inference.checkpoint import export_checkpoint
    from eqgeo.inference.evaluate import _docking_settings

    source = _old("docking")
    run_data = __import__("yaml").safe_load((OLD / "docking" / "config.yaml").read_text())["data"]
    alone = tmp_path / "alone" / "best.ckpt"
    alone.parent.mkdir()
    shutil.copy(source, alone)
    assert _docking_settings(alone, None)["from_run_config"] is False
    model = load_model(source)
    with torch.no_grad():
        for p in model.confidence_head.parameters():
            p.add_(1.0)
    exported = export_checkpoint(source, tmp_path / "away" / "docking.ckpt", model=model, note={"refit": "confidence_head"})
    settings = _docking_settings(exported, None)
    assert settings["from_run_config"] is True
    assert (settings["pocket_radius"], settings["pocket_shape"], settings["seed"]) == (
        float(run_data["pocket_radius"]), run_data.get("pocket_shape", "ligand"), int(run_data["seed"]))
    reloaded = load_model(exported)
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
    # negative control: the refitted head is not the run's own
    assert not torch.equal(next(reloaded.confidence_head.parameters()), next(load_model(source).confidence_head.parameters()))
    with pytest.raises(CheckpointError, match="not the eqgeo.models.DockingModel"):
        export_checkpoint(source, tmp_path / "bad.ckpt", model=load_model(_old("energy")))


def test_exported_checkpoints_hold_the_chosen_weights_and_load_everywhere(tmp_path, capsys):
    """eqgeo-export keeps one weight set, the hyperparameters and the record: the same model and energies as the
    run's checkpoint, a third of its size; the other weight set and resuming are refused by name."""
    from ase.build import molecule

    from eqgeo.calculators import EqgeoCalculator
    from eqgeo.cli import export
    from eqgeo.inference.checkpoint import export_checkpoint

    source = _old("energy")
    ema = export_checkpoint(source, tmp_path / "ema.ckpt")
    raw = export_checkpoint(source, tmp_path / "raw.ckpt", weights="raw")
    assert ema.stat().st_size < source.stat().st_size / 2
    for path, weights in ((ema, "ema"), (raw, "raw")):
        exported, original = load_model(path, weights=weights), load_model(source, weights=weights)
        for name, value in original.state_dict().items():
            assert torch.equal(exported.state_dict()[name], value), (weights, name)
    # negative control: the two weight sets differ, so the comparison above can tell them apart
    assert any(not torch.equal(a, b) for a, b in zip(load_model(ema).parameters(),
                                                     load_model(raw, weights="raw").parameters()))
    with pytest.raises(CheckpointError, match="exported with the ema weights only"):
        load_model(ema, weights="raw")
    with pytest.raises(CheckpointError, match="lacks the loop state"):
        read_checkpoint(ema, resumable=True)
    atoms = molecule("CH3CH2OH")
    energies = []
    for path in (source, ema):
        atoms.calc = EqgeoCalculator.from_checkpoint(path)
        energies.append((atoms.get_potential_energy(), atoms.get_forces()))
    assert energies[0][0] == pytest.approx(energies[1][0], abs=1e-9)
    assert torch.allclose(torch.as_tensor(energies[0][1]), torch.as_tensor(energies[1][1]), atol=1e-9)
    assert export([str(source), str(tmp_path / "cli.ckpt"), "--dtype", "float64"]) == 0
    assert next(load_model(tmp_path / "cli.ckpt").parameters()).dtype == torch.float64
    assert "MB (ema weights, not resumable)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        export([str(tmp_path / "missing.ckpt"), str(tmp_path / "x.ckpt")])
    assert stop.value.code == 2 and "missing.ckpt does not exist" in capsys.readouterr().err
