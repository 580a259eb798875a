"""eqgeo-evaluate: a checkpoint judged on other data; the run's own test split gives the run's numbers."""

import json
import shutil
import sys

import pytest
import torch

from eqgeo.data import keys as K
from eqgeo.training import train
from eqgeo.inference.checkpoint import read_checkpoint
from eqgeo.inference.evaluate import _qm9, evaluate, main

from ..helpers import shared_path
from ..training._helpers import TINY, TINY_DOCKING, TINY_MD17, TINY_QM9, cfg as _cfg, run_cli


@pytest.fixture(scope="module")
def qm9_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("qm9_run")
    metrics = train(_cfg(TINY + TINY_QM9 + ["task.targets=[gap,homo]"], run))
    return run, metrics


@pytest.fixture
def ethanol():
    """100 ethanol frames in kcal/mol, not the rMD17 run's files (skipped locally, a failure in CI, when absent)."""
    return shared_path("md17", "metatrain", "ethanol_reduced_100.xyz")


@pytest.fixture(scope="module")
def md17_checkpoint(tmp_path_factory):
    """best.ckpt of a tiny rMD17 ethanol run (species H, C, O)."""
    shared = shared_path()  # skipped locally, a failure in CI, when absent
    run = tmp_path_factory.mktemp("md17_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EQGEO_SHARED_DATA", str(shared))
        train(_cfg(TINY + TINY_MD17 + ["experiment=rmd17"], run))
    return run / "checkpoints" / "best.ckpt"


def _ethanol(source, path, frames, fluorinated=()):
    """The ``frames`` of the ethanol file ``source`` (indices), with one H made F in those of ``fluorinated``."""
    lines, blocks = source.read_text().splitlines(), []
    while lines:
        n = int(lines[0])
        blocks.append(lines[: n + 2])
        lines = lines[n + 2:]
    out = []
    for frame in frames:
        block = list(blocks[frame])
        if frame in fluorinated:
            h = next(i for i in range(2, len(block)) if block[i].split()[0] == "H")
            block[h] = "F" + block[h][1:]
        out += block
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.slow
def test_own_test_split_reproduces_the_runs_test_metrics(qm9_run, tmp_path):
    run, metrics = qm9_run
    result = evaluate(run / "checkpoints" / "best.ckpt", "qm9:test", tmp_path / "eval")
    assert result["task"] == "PropertyTask" and result["data"]["size"] == metrics["data"]["test"]
    for name in ("gap_mae", "homo_mae", "gap_rmse"):
        assert result["test"][name]["unit"] == metrics["test"][name]["unit"] == "meV"
        assert result["test"][name]["value"] == pytest.approx(metrics["test"][name]["value"], rel=1e-4)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result


def test_mu_from_the_dipole_head_trains_and_evaluates_like_the_run(tmp_path):
    """task.dipole=true: mu is the norm of the model's dipole vector (charges + atomic dipoles), gap a scalar
    readout; the checkpoint evaluates on the run's test split to the run's numbers. Negative control: the
    same prediction read as a scalar readout (dipole off) is another number."""
    from eqgeo.inference.checkpoint import load_model
    from eqgeo.inference.metrics import property_prediction

    metrics = train(_cfg(TINY + TINY_QM9 + ["task.targets=[gap,mu]", "task.dipole=true"], tmp_path / "run"))
    assert metrics["test"]["mu_mae"]["unit"] == "D" and metrics["test"]["mu_mean_predictor_mae"]["unit"] == "D"
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    state = torch.load(best, weights_only=True)["state_dict"]
    assert state["model.target_std"].shape == (1,) and "model.atomic_dipoles.weight" in state  # gap's scalar; mu's head
    result = evaluate(best, "qm9:test", tmp_path / "eval")
    for name in ("gap_mae", "mu_mae", "mu_rmse"):
        assert result["test"][name]["value"] == pytest.approx(metrics["test"][name]["value"], rel=1e-4)
    model = load_model(best)
    dm = _qm9("qm9:test", best, None, 0)[0]
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(list(dm[:4]))
    with torch.no_grad():
        out = model(batch)
        pred = property_prediction(out, ["gap", "mu"], dipole=True)
    assert torch.equal(pred[:, 1], out["mu"].double()) and torch.equal(pred[:, 0], out["y"][:, 0])
    assert not torch.allclose(property_prediction({"y": torch.cat([out["y"], out["y"]], 1)}, ["gap", "mu"], False)[:, 1],
                              out["mu"].double())
    with pytest.raises(ValueError, match="task.dipole=true predicts 'mu' from the dipole head; task.targets"):
        train(_cfg(TINY + TINY_QM9 + ["task.targets=[gap]", "task.dipole=true"], tmp_path / "no_mu"))
    with pytest.raises(ValueError, match="task.dipole=true needs a model with a dipole head .*ViSNetBaseline.*'dipole'"
                                         ".*task.dipole=false"):
        train(_cfg(["model=visnet", "trainer.max_epochs=1"] + TINY_QM9 + ["task.targets=[mu]", "task.dipole=true"],
                   tmp_path / "visnet"))
    # SchNet predicts mu from its charges (PyG's dipole mode), alone: with a second target it says what to do
    schnet = ["model=schnet", "model.hidden_channels=16", "model.num_filters=16", "model.num_interactions=2",
              "trainer.max_epochs=1"] + TINY_QM9
    with pytest.raises(ValueError, match="SchNetBaseline: with dipole=True .* num_targets must be 0, got 1"):
        train(_cfg(schnet + ["task.targets=[gap,mu]", "task.dipole=true"], tmp_path / "schnet_two"))
    metrics = train(_cfg(schnet + ["task.targets=[mu]", "task.dipole=true"], tmp_path / "schnet"))
    assert metrics["model"]["class"] == "SchNetBaseline" and metrics["test"]["mu_mae"]["unit"] == "D"
    assert 0 < metrics["test"]["mu_mae"]["value"] < 10 * metrics["test"]["mu_mean_predictor_mae"]["value"]
    best = tmp_path / "schnet" / "checkpoints" / "best.ckpt"
    state = torch.load(best, weights_only=True)["state_dict"]
    assert state["model.target_std"].shape == (0,) and "model.net.atomic_mass" in state
    assert load_model(best).dipole
    result = evaluate(best, "qm9:test", tmp_path / "schnet_eval")
    assert result["test"]["mu_mae"]["value"] == pytest.approx(metrics["test"]["mu_mae"]["value"], rel=1e-4)


@pytest.mark.slow
def test_cli_on_unseen_qm9_molecules(qm9_run, tmp_path):
    run, _ = qm9_run
    checkpoint = run / "checkpoints" / "best.ckpt"
    # the pinned draw (40 molecules, seed 3) has exactly one molecule with an element the tiny run never saw (F)
    species = set(torch.load(checkpoint, weights_only=True)["hyper_parameters"]["model"]["species"])
    draw, _ = _qm9("qm9", checkpoint, limit=40, seed=3)
    untrained = [sorted(set(g[K.ATOMIC_NUMBER].tolist()) - species) for g in draw]
    assert len(draw) == 40 and [z for z in untrained if z] == [[9]]

    out = run_cli([sys.executable, "-m", "eqgeo.inference.evaluate", checkpoint, "qm9", "--limit", "40",
                   "--seed", "3", "--output", tmp_path / "eval"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "PropertyTask on 39 items" in out.stdout and "gap_mae" in out.stdout
    assert saved["data"]["size"] == 39 and saved["test"]["gap_mae"]["value"] > 0
    [entry] = saved["skipped"]
    assert entry["source"] == "qm9" and entry["reason"].startswith("1 molecules with elements [9] the model was not trained")
    assert f"skipped (1, listed in metrics.json):\n  qm9: {entry['reason']}\n" in out.stdout


@pytest.mark.slow
def test_qm9_molecules_are_outside_the_runs_draw(qm9_run):
    """'qm9' never hands back a molecule of the run's train, validation or test split."""
    from eqgeo.data import keys as K
    from eqgeo.training import QM9DataModule

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


def test_missing_checkpoint_names_eqgeo_evaluates_own_usage(tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"
    assert main([str(missing), "data"]) == 2
    err = capsys.readouterr().err
    assert "usage: eqgeo-evaluate CHECKPOINT DATA" in err and f"CHECKPOINT {missing} does not exist" in err
    assert "ckpt_path" not in err  # eqgeo-train's option, no use here
    with pytest.raises(FileNotFoundError, match=r"missing.ckpt does not exist \(a checkpoint eqgeo-train wrote") as error:
        read_checkpoint(missing)
    assert "ckpt_path" not in str(error.value)


@pytest.mark.slow
def test_clear_errors(qm9_run, tmp_path, capsys):
    run, _ = qm9_run
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main([str(ckpt), str(tmp_path / "ethanol.xyz"), "--output", str(tmp_path / "e")]) == 2
    assert "qm9" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad), "qm9"]) == 2
    assert "bad.ckpt cannot be read" in capsys.readouterr().err


@pytest.mark.slow
def test_md17_test_reproduces_a_held_out_split_run_also_when_exported(tmp_path, monkeypatch):
    """md17:test rebuilds the run's held-out test frames (3BPA-style: one file, num_test frames held out) and gives
    the run's test metrics, from its best.ckpt and from an exported copy away from the run folder."""
    from eqgeo.inference.checkpoint import export_checkpoint

    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared_path()))
    run = tmp_path / "run"
    metrics = train(_cfg(TINY + ["experiment=3bpa", "data.num_train=10", "data.num_val=5", "data.num_test=6"], run))
    exported = export_checkpoint(run / "checkpoints" / "best.ckpt", tmp_path / "shipped" / "3bpa.ckpt")
    for checkpoint in (run / "checkpoints" / "best.ckpt", exported):
        result = evaluate(checkpoint, "md17:test", tmp_path / "eval")
        assert result["data"]["size"] == metrics["data"]["test"] == 6
        for name in ("energy_mae", "forces_mae", "forces_rmse"):
            assert result["test"][name]["value"] == pytest.approx(metrics["test"][name]["value"], rel=1e-5), name
    alone = tmp_path / "alone.ckpt"  # negative control: the run's checkpoint away from its config
    shutil.copy(run / "checkpoints" / "best.ckpt", alone)
    with pytest.raises(FileNotFoundError, match="md17:test needs the run's config.yaml"):
        evaluate(alone, "md17:test", tmp_path / "eval")


@pytest.mark.slow
def test_potential_on_an_xyz_file(md17_checkpoint, ethanol, tmp_path):
    with pytest.raises(ValueError, match="--energy-unit"):
        evaluate(md17_checkpoint, str(ethanol), tmp_path / "eval")
    result = evaluate(md17_checkpoint, str(ethanol), tmp_path / "eval", energy_unit="kcal/mol")
    assert result["task"] == "EnergyForcesTask" and result["data"]["size"] == 100 and result["skipped"] == []
    assert result["test"]["forces_mae"]["unit"] == "meV/Å" and result["test"]["energy_per_atom_mae"]["unit"] == "meV/atom"


@pytest.mark.slow
def test_frames_with_untrained_elements_are_listed_and_the_rest_evaluated(md17_checkpoint, ethanol, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("EQGEO_CACHE", str(tmp_path / "cache"))
    mixed = _ethanol(ethanol, tmp_path / "mixed.xyz", range(6), fluorinated={1, 4})
    assert main([str(md17_checkpoint), str(mixed), "--energy-unit", "kcal/mol", "--output", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["data"]["size"] == 4 and "EnergyForcesTask on 4 items" in out
    assert [(e["source"], e["record"]) for e in saved["skipped"]] == [(str(mixed), "1"), (str(mixed), "4")]
    for entry in saved["skipped"]:
        assert f"frame {entry['record']} (mixed:{entry['record']}) has F (Z=9), not trained on" in entry["reason"]
        assert "H (Z=1), C (Z=6), O (Z=8)" in entry["reason"]
        assert f"[{entry['record']}]: {entry['reason']}" in out
    # the four kept frames give what they give alone
    alone = _ethanol(ethanol, tmp_path / "alone.xyz", [0, 2, 3, 5])
    clean = evaluate(md17_checkpoint, str(alone), tmp_path / "eval-alone", energy_unit="kcal/mol")
    assert clean["data"]["size"] == 4 and clean["skipped"] == []
    for name, entry in clean["test"].items():
        assert saved["test"][name]["value"] == pytest.approx(entry["value"], rel=1e-6), name

    every = _ethanol(ethanol, tmp_path / "every.xyz", range(3), fluorinated={0, 1, 2})
    with pytest.raises(ValueError, match=r"every one of its 3 frames has elements the model was not trained on "
                                         r"\(F \(Z=9\); its species: H \(Z=1\), C \(Z=6\), O \(Z=8\)\)"):
        evaluate(md17_checkpoint, str(every), tmp_path / "eval-every", energy_unit="kcal/mol")
    assert main([str(md17_checkpoint), str(every), "--energy-unit", "kcal/mol", "--output", str(tmp_path / "e")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


@pytest.mark.slow
def test_docking_model_on_a_folder_of_complexes(tmp_path, shared_data_env):
    shared_data = shared_data_env
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
