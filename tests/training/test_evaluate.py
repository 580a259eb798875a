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
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    left_out = sum(int(e["reason"].split()[0]) for e in saved["skipped"])  # elements the tiny run never saw (F)
    assert f"PropertyTask on {40 - left_out} items" in out.stdout and "gap_mae" in out.stdout
    assert saved["data"]["size"] == 40 - left_out > 0 and saved["test"]["gap_mae"]["value"] > 0


def test_qm9_molecules_are_outside_the_runs_draw(qm9_run):
    """'qm9' never hands back a molecule of the run's train, validation or test split."""
    from eqgeo.data import keys as K
    from eqgeo.training import QM9DataModule
    from eqgeo.training.evaluate import _qm9

    run, _ = qm9_run
    dm = QM9DataModule(subset=60, num_train=30, num_val=10, num_test=10, batch_size=10)  # TINY_QM9
    dm.setup("fit")
    seen = {g[K.NAME] for split in dm.splits.values() for g in split}
    draw = QM9DataModule(subset=60, num_train=30, num_val=10, num_test=20)  # every molecule of the run's draw
    draw.setup("fit")
    every = {g[K.NAME] for split in draw.splits.values() for g in split}
    dataset, described = _qm9("qm9", run / "checkpoints" / "best.ckpt", limit=3000, seed=0)
    names = {g[K.NAME] for g in dataset}
    assert len(names) == 3000 and len(every) == 60 and seen <= every
    assert not names & every and "outside the run's 60" in described
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
