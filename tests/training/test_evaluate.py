"""eqgeo-evaluate: a checkpoint judged on other data; the run's own test split gives the run's numbers."""

import json
import shutil
import subprocess
import sys

import pytest

from eqgeo.training import train
from eqgeo.training.evaluate import evaluate, main

from .test_docking import TINY_DOCKING
from .test_train import TINY, TINY_MD17, TINY_QM9, _cfg


@pytest.fixture(scope="module")
def qm9_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("qm9_run")
    metrics = train(_cfg(TINY + TINY_QM9 + ["task.targets=[gap,homo]"], run))
    return run, metrics


def test_own_test_split_reproduces_the_runs_test_metrics(qm9_run, tmp_path):
    run, metrics = qm9_run
    result = evaluate(run / "checkpoints" / "best.ckpt", "qm9:test", tmp_path / "eval")
    assert result["task"] == "PropertyTask" and result["data"]["size"] == metrics["data"]["test"]
    for name in ("gap_mae", "homo_mae", "gap_rmse"):
        assert result["test"][name]["unit"] == metrics["test"][name]["unit"] == "meV"
        assert result["test"][name]["value"] == pytest.approx(metrics["test"][name]["value"], rel=1e-4)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result


def test_cli_on_unseen_qm9_molecules(qm9_run, tmp_path):
    run, _ = qm9_run
    out = subprocess.run(
        [sys.executable, "-m", "eqgeo.training.evaluate", str(run / "checkpoints" / "best.ckpt"), "qm9", "--limit", "40",
         "--seed", "3", "--output", str(tmp_path / "eval")], capture_output=True, text=True, check=True,
    )
    assert "PropertyTask on 40 items" in out.stdout and "gap_mae" in out.stdout
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["data"]["size"] == 40 and saved["test"]["gap_mae"]["value"] > 0


def test_clear_errors(qm9_run, tmp_path, capsys):
    run, _ = qm9_run
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main([str(ckpt), str(tmp_path / "ethanol.xyz"), "--output", str(tmp_path / "e")]) == 2
    assert "qm9" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad), "qm9"]) == 2
    assert "bad.ckpt cannot be read" in capsys.readouterr().err


def test_potential_on_an_xyz_file(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared_data))
    train(_cfg(TINY + TINY_MD17 + ["experiment=rmd17"], tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    xyz = shared_data / "md17" / "metatrain" / "ethanol_reduced_100.xyz"  # kcal/mol, another file
    with pytest.raises(ValueError, match="--energy-unit"):
        evaluate(ckpt, str(xyz), tmp_path / "eval")
    result = evaluate(ckpt, str(xyz), tmp_path / "eval", energy_unit="kcal/mol")
    assert result["task"] == "EnergyForcesTask" and result["data"]["size"] == 100
    assert result["test"]["forces_mae"]["unit"] == "meV/Å" and result["test"]["energy_per_atom_mae"]["unit"] == "meV/atom"


def test_docking_model_on_a_folder_of_complexes(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared_data))
    train(_cfg(TINY + TINY_DOCKING + [f"data.cache_dir={tmp_path / 'cache'}"], tmp_path / "run"))
    folder = tmp_path / "unseen"
    astex = shared_data / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    for name in ("2BR1_PFP", "1YV3_BIT"):  # not among the run's first 7 complexes
        shutil.copytree(astex / name, folder / name)
    (folder / "notes").mkdir()  # not a complex: reported, not silently dropped
    result = evaluate(tmp_path / "run" / "checkpoints" / "best.ckpt", str(folder), tmp_path / "eval")
    assert result["task"] == "DockingTask" and result["data"]["size"] == 2
    assert result["test"]["a_model_success"]["unit"] == "%" and result["test"]["b_model_median_rmsd"]["unit"] == "Å"
    assert any("notes" in e["source"] for e in result["skipped"])
