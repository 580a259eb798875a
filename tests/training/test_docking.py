"""Docking training: training poses, the data module's split, and runs of the task (its test stage is the
inference module's evaluation, tested in ``tests/inference/test_docking.py``)."""

import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from eqgeo.data import keys as K
from eqgeo.data.poses import move_pose, symmetric_rmsd
from eqgeo.inference.docking import SUCCESS_RMSD, evaluate_docking
from eqgeo.training import train
from eqgeo.training.docking import DockingDataModule, fit_confidence, refined_examples, sample_training_pose

from ..helpers import toy_docking_complex
from ._helpers import DDP, TINY, TINY_DOCKING, cfg as _cfg, run_cli


def test_training_pose_targets_undo_the_moves():
    c = toy_docking_complex()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        data = sample_training_pose(c, g, dtype=torch.float64)
        L = c.ligand_z.numel()
        pose = data[K.POSITION][:L]
        back = move_pose(pose, c.bonds, c.moving, data[K.TARGET_TRANSLATION][0], data[K.TARGET_ROTATION][0],
                         data[K.TARGET_TORSION])
        torch.testing.assert_close(back, c.crystal, atol=1e-9, rtol=0)  # matched == crystal here
        rmsd = symmetric_rmsd(pose, c.references)
        assert float(data[K.POSE_RMSD]) == pytest.approx(float(rmsd), abs=1e-12)
        assert bool(data[K.CONFIDENCE_TARGET]) == bool(rmsd < SUCCESS_RMSD)
        assert data[K.NODE_TYPE][:L].eq(K.NODE_LIGAND).all() and data[K.NODE_TYPE][L:].eq(K.NODE_PROTEIN).all()


@pytest.mark.slow
def test_docking_experiment_smoke_run(tmp_path, shared_data_env):
    cfg = _cfg(TINY + TINY_DOCKING + [f"data.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    metrics = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["task"] == "DockingTask" and saved["data"]["train"] == 4 and saved["data"]["test"] == 2
    for track in "ab":
        for method in ("start", "centroid", "model"):
            assert saved["test"][f"{track}_{method}_success"]["unit"] == "%"
            assert saved["test"][f"{track}_{method}_median_rmsd"]["unit"] == "Å"
    assert metrics["test"]["a_start_median_rmsd"]["value"] > 1.0 and metrics["test"]["b_complexes"]["value"] == 2
    for figure in ("parity.png", "learning_curves.png"):
        assert (tmp_path / "run" / figure).read_bytes()[:4] == b"\x89PNG"
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["statistics"]["translation_scale"] > 0
    _assert_test_metrics_are_evaluate_docking(tmp_path / "run", cfg.data)


def _assert_test_metrics_are_evaluate_docking(run_dir: Path, data_cfg) -> None:
    """The run's reported test metrics are evaluate_docking's, of its tested (best) weights on its whole test split
    (up to float32 round-off in another process: RMSDs to 1e-4 Å)."""
    from eqgeo.inference.checkpoint import read_checkpoint

    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    dm = DockingDataModule(**{k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k != "_target_"})
    dm.setup("test")
    expected = evaluate_docking(checkpoint.build_model(), dm.complexes["test"], dm.starts,
                                steps=checkpoint.task["refine_steps"], step_size=checkpoint.task["step_size"])
    assert sorted(saved) == sorted(expected)
    assert {name: saved[name]["value"] for name in expected} == pytest.approx(expected, rel=1e-5, abs=1e-4)


@pytest.mark.slow
def test_docking_test_metrics_under_ddp_are_those_of_the_whole_split(tmp_path, shared_data_env):
    """Under DDP every process refines every test complex, not a shard of them: two processes, two test complexes,
    and the reported metrics are those of both (a shard each would report b_complexes 1)."""
    overrides = TINY + TINY_DOCKING + DDP + [f"data.cache_dir={tmp_path / 'cache'}"]
    out = run_cli([sys.executable, "-m", "eqgeo.training.train", *overrides, f"run_dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out.stderr  # it ran in two processes
    _assert_test_metrics_are_evaluate_docking(tmp_path / "run", _cfg(overrides).data)


def test_duplicates_are_excluded_from_extra_training_folders_only(tmp_path, shared_data):
    complexes = shared_data / "complexes"
    dm = DockingDataModule(root=str(complexes / "posebusters_paper_data" / "astex_diverse_set"), num_complexes=8,
                           extra_roots=[str(complexes / "posebusters")], num_val=1, num_test=2,
                           cache_dir=str(tmp_path), poses_per_complex=1)
    dm.setup("fit")
    names = [c.name for split in dm.complexes.values() for c in split]
    assert "1IA1_TQ3" in names and len(names) == 8  # the Astex entry itself stays
    excluded = {e.source.rsplit("/", 1)[-1] for e in dm.report.errors if "excluded" in e.reason}
    assert excluded == {"1ia1", "1of6", "1s3v", "1uou"}  # their posebusters copies never train
    assert dm.sizes() == {"train": 5, "val": 1, "test": 2}


def test_extra_copies_of_held_out_complexes_never_train(tmp_path, shared_data):
    """An extra training folder holding a validation/test complex (same PDB entry) is left out and reported."""
    import shutil

    astex = shared_data / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    kwargs = dict(root=str(astex), num_complexes=6, num_val=1, num_test=2, cache_dir=str(tmp_path / "cache"))
    first = DockingDataModule(**kwargs)
    first.setup("fit")
    held_out = first.complexes["test"][0].name
    extra = tmp_path / "extra"
    shutil.copytree(astex / held_out, extra / held_out)
    shutil.copytree(astex / "2BR1_PFP", extra / "2BR1_PFP")  # not in the first 6: may train
    dm = DockingDataModule(**kwargs, extra_roots=[str(extra)])
    dm.setup("fit")
    train_names = [c.name for c in dm.complexes["train"]]
    assert "2BR1_PFP" in train_names and train_names.count(held_out) == 0
    assert any(held_out in e.source and "held-out" in e.reason for e in dm.report.errors)


def test_test_root_is_the_whole_test_split_and_its_entries_never_train(tmp_path, shared_data):
    """data.test_root: every complex there is a test complex; a root complex of the same PDB entry is left out
    and reported (negative control: without test_root it trains); num_test must then be 0."""
    import shutil

    astex = shared_data / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    names = sorted(p.name for p in astex.iterdir() if p.is_dir())[:6]
    root, test_root = tmp_path / "train", tmp_path / "test"
    for name in names[:5]:
        shutil.copytree(astex / name, root / name)
    for name in (names[4], names[5]):  # names[4] is in both folders
        shutil.copytree(astex / name, test_root / name)
    kwargs = dict(root=str(root), num_val=1, cache_dir=str(tmp_path / "cache"), poses_per_complex=1)
    dm = DockingDataModule(**kwargs, num_test=0, test_root=str(test_root))
    dm.setup("fit")
    assert [c.name for c in dm.complexes["test"]] == [names[4], names[5]]
    trained = [c.name for split in ("train", "val") for c in dm.complexes[split]]
    assert sorted(trained) == names[:4]
    assert any(names[4] in e.source and "held-out" in e.reason for e in dm.report.errors)
    assert len(dm.starts["b"]) == 2
    control = DockingDataModule(**kwargs, num_test=1)
    control.setup("fit")
    assert sorted(c.name for split in control.complexes.values() for c in split) == names[:5]
    with pytest.raises(ValueError, match="num_test=0"):
        DockingDataModule(**kwargs, num_test=2, test_root=str(test_root))


@pytest.mark.slow
def test_docking_run_lists_skipped_inputs(tmp_path, shared_data, monkeypatch):
    """An unreadable complex is left out of the run and named in metrics.json."""
    import shutil

    astex = shared_data / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    root = tmp_path / "complexes"
    for folder in sorted(p for p in astex.iterdir() if p.is_dir())[:7]:
        shutil.copytree(folder, root / folder.name)
    broken = sorted(root.iterdir())[0]
    (broken / f"{broken.name}_ligand.sdf").write_text("not a molecule\n")
    cfg = _cfg(TINY + TINY_DOCKING + [f"data.root={root}", "data.num_complexes=null", "data.num_test=1",
                                      f"data.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    metrics = train(cfg)
    assert metrics["data"]["train"] + metrics["data"]["val"] + metrics["data"]["test"] == 6
    assert [e["source"] for e in metrics["skipped"] if broken.name in e["source"]]


def test_refined_examples_are_the_head_inputs_at_the_refined_poses():
    """Per complex: the confidence head's inputs at the ligand atoms of each refined pose (the head applied to
    them gives refine's confidence) and the RMSDs of the poses refine returns."""
    from eqgeo.inference.docking import refine, track_a_starts, track_b_starts
    from eqgeo.models import DockingModel

    torch.manual_seed(0)
    model = DockingModel(channels=4, lmax=1, num_layers=2, parity="full").eval()
    c = toy_docking_complex()
    starts = {"a": [track_a_starts(c, 3, 1, translation=2.0, rotation=1.0, torsion=3.0)],
              "b": [track_b_starts(c, 2, 2, offset=2.0)]}
    ((features, rmsd),) = refined_examples(model, [c], starts, steps=3)
    final, confidence = refine(model, c, torch.cat([starts["a"][0], starts["b"][0]]), 3)
    assert features.shape[:2] == (5, c.ligand_z.numel())
    assert torch.allclose(rmsd, symmetric_rmsd(final, c.references))
    with torch.no_grad():
        head = model.confidence_head(features).mean(1).squeeze(-1).double()
    assert torch.allclose(head, confidence, atol=1e-4)
    assert not torch.allclose(head, confidence.flip(0), atol=1e-4)  # the poses are told apart, in order


def test_fit_confidence_learns_to_rank_from_the_head_inputs_and_leaves_the_rest():
    """Refined poses whose success shows in one scalar channel: the refitted head ranks the success first on
    validation complexes where the untrained head ranks at chance; no other weight moves."""
    from eqgeo.models import DockingModel

    torch.manual_seed(0)
    model = DockingModel(channels=4, lmax=1, num_layers=1, parity="full").eval()
    width = model.interactions.irreps_out.dim
    g = torch.Generator().manual_seed(1)
    # channel 0 is a 0e scalar (the hidden irreps start with 0e); the success is marked along it in the
    # direction the untrained head scores lower, so that it ranks the success last before the fit
    with torch.no_grad():
        probe = torch.zeros(2, width)
        probe[1, 0] = 1.0
        against = -float(torch.sign(torch.diff(model.confidence_head(probe).squeeze(-1))))

    def examples(n):
        out = []
        for _ in range(n):
            features = torch.randn(6, 5, width, generator=g) * 0.3
            good = int(torch.randint(0, 6, (), generator=g))
            features[good, :, 0] += 2.0 * against
            rmsd = torch.full((6,), 5.0, dtype=torch.float64)
            rmsd[good] = 1.0
            out.append((features, rmsd))
        return out

    train, val = examples(40), examples(30)
    trunk = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("confidence_head")}
    report = fit_confidence(model, train, val, epochs=200, lr=1e-2)
    assert report["before"]["top1_success"] < 20.0  # chance is 1 in 6
    assert report["after"]["top1_success"] >= 90.0 and report["after"]["bce"] < report["before"]["bce"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trunk.items())
    with pytest.raises(ValueError, match="validation"):
        fit_confidence(model, train, [])
