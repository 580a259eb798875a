"""Docking inference: benchmark starts, equivariant refinement, baselines and metrics, and that none of it
needs the training package."""

import json
import math
import subprocess
import sys

import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from eqgeo.data.poses import move_pose, remove_hydrogens, rotatable_bonds, symmetric_rmsd, symmetry_references
from eqgeo.datasets.docking import DockingComplex
from eqgeo.inference.docking import (
    TRACK_A,
    TRACK_B,
    benchmark_starts,
    complex_rmsds,
    docking_metrics,
    evaluate_docking,
    metric_names,
    metric_unit,
    pose_graph,
    refine,
    track_a_starts,
    track_b_starts,
)
from eqgeo.models import DockingModel
from eqgeo.o3 import rand_matrix

from ..helpers import REPO, toy_docking_complex


def _transformed(c: DockingComplex, Q: torch.Tensor, shift: torch.Tensor) -> DockingComplex:
    f = lambda x: x @ Q.T + shift  # noqa: E731
    d = c.to_dict()
    for key in ("crystal", "start", "matched", "references", "pocket_pos", "pocket_centre"):
        d[key] = f(d[key])
    return DockingComplex(**d)


def _tiny_model(num_layers: int = 2) -> DockingModel:
    model = DockingModel(channels=4, lmax=1, num_layers=num_layers, radial_hidden=8, avg_num_neighbors=10.0).double()
    model.set_statistics(1.0, 0.5, 0.5)
    return model.eval()


_IMPORT = """
import json, sys
import eqgeo.inference.docking
print(json.dumps(sorted(m for m in sys.modules if m == "eqgeo.training" or m.startswith("eqgeo.training.")
                        or m.split(".")[0] in ("lightning", "pytorch_lightning", "hydra"))))
"""


def test_inference_imports_no_training_and_no_lightning():
    """A clean interpreter: importing the docking inference brings in neither eqgeo.training nor Lightning (nor Hydra)."""
    done = subprocess.run([sys.executable, "-c", _IMPORT], check=False, capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_benchmark_starts_are_seeded_and_placed_as_specified():
    c = toy_docking_complex()
    a1 = track_a_starts(c, 8, 3, translation=2.0, rotation=1.0, torsion=math.pi)
    a2 = track_a_starts(c, 8, 3, translation=2.0, rotation=1.0, torsion=math.pi)
    assert torch.equal(a1, a2) and not torch.equal(a1, track_a_starts(c, 8, 4, translation=2.0, rotation=1.0, torsion=math.pi))
    b = track_b_starts(c, 16, 0, offset=2.0)
    offsets = (b.mean(1) - c.pocket_centre).norm(dim=1)
    assert offsets.max() <= 2.0 + 1e-9 and offsets.std() > 0.1  # spread within the ball
    # the conformer is moved rigidly: its internal distances are the start conformer's
    torch.testing.assert_close(torch.cdist(b[5], b[5]), torch.cdist(c.start, c.start), atol=1e-9, rtol=0)


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_refinement_is_e3_equivariant(reflect):
    c = toy_docking_complex()
    torch.manual_seed(0)
    model = _tiny_model()
    starts = track_a_starts(c, 3, 0, translation=2.0, rotation=1.0, torsion=math.pi)
    Q = rand_matrix(dtype=torch.float64)
    if reflect:
        Q = -Q
    shift = torch.randn(3, dtype=torch.float64) * 5
    final, confidence = refine(model, c, starts, steps=3, step_size=0.5)
    final_t, confidence_t = refine(model, _transformed(c, Q, shift), starts @ Q.T + shift, steps=3, step_size=0.5)
    assert (final - starts).abs().max() > 1e-3  # the model moved the ligand
    torch.testing.assert_close(final_t, final @ Q.T + shift, atol=1e-8, rtol=0)
    torch.testing.assert_close(confidence_t, confidence, atol=1e-9, rtol=0)


def test_baselines_are_what_they_say():
    c = toy_docking_complex()
    starts = {"a": [track_a_starts(c, 4, 0, translation=2.0, rotation=1.0, torsion=math.pi)],
              "b": [track_b_starts(c, 3, 0, offset=2.0)]}
    metrics = evaluate_docking(None, [c], starts)
    a_rmsd = symmetric_rmsd(starts["a"][0], c.references)
    centred = starts["a"][0] - starts["a"][0].mean(1, keepdim=True) + c.pocket_centre
    assert metrics["a_centroid_median_rmsd"] == pytest.approx(float(symmetric_rmsd(centred, c.references).quantile(0.5)))
    assert metrics["a_start_success"] == pytest.approx(100.0 * float((a_rmsd < 2).double().mean()))
    assert "a_model_success" not in metrics and metrics["b_floor_median_rmsd"] == 0.0
    assert metrics["a_start_median_rmsd"] == pytest.approx(float(a_rmsd.sort().values[1:3].mean()))  # 4 values: mean of the middle two


def test_metric_names_are_every_metric_with_a_model_and_its_unit():
    """metric_names (which the training task's units come from) lists exactly what evaluate_docking reports."""
    c = toy_docking_complex()
    starts = {"a": [track_a_starts(c, 2, 0, translation=2.0, rotation=1.0, torsion=math.pi)],
              "b": [track_b_starts(c, 2, 0, offset=2.0)]}
    metrics = evaluate_docking(_tiny_model(1), [c], starts, steps=1)
    assert sorted(metrics) == sorted(metric_names())
    units = {name: metric_unit(name) for name in metric_names()}
    assert units["a_model_success"] == "%" and units["b_model_median_rmsd"] == "Å" and units["b_complexes"] == "complexes"


def test_metrics_gather_complexes_and_leave_track_b_to_those_with_a_start_conformer():
    """docking_metrics over complex_rmsds complex by complex, as the training task's test steps gather them, is
    evaluate_docking; a complex without a start conformer has no track (b) rows (its crystal geometry would flatter)."""
    c = toy_docking_complex()
    crystal_only = DockingComplex(**{**c.to_dict(), "name": "toy2", "has_start_conf": False})
    complexes = [c, crystal_only]
    starts = benchmark_starts(complexes, {**TRACK_A, "starts": 3}, {**TRACK_B, "starts": 2}, seed=0)
    per_complex = [complex_rmsds(None, x, {"a": starts["a"][k], "b": starts["b"][k]}) for k, x in enumerate(complexes)]
    assert "b_start" in per_complex[0] and not any(key.startswith("b_") for key in per_complex[1])
    assert len(per_complex[1]["a_start"]) == 3 and len(per_complex[0]["b_start"]) == 1  # track (b) unranked: the first start
    metrics = docking_metrics(per_complex)
    assert metrics == evaluate_docking(None, complexes, starts) and metrics["b_complexes"] == 1.0
    rmsds = torch.cat([symmetric_rmsd(starts["a"][k], x.references) for k, x in enumerate(complexes)])
    assert metrics["a_start_median_rmsd"] == pytest.approx(float(rmsds.quantile(0.5)))


def test_refinement_starts_are_far_enough_on_the_whole_astex_set(shared_data):
    """Track (a) as configured: over all Astex complexes the median start RMSD is at least 3 Å (doing
    nothing fails), and moving the centroid alone does not solve it."""
    root = shared_data / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    complexes = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        crystal = remove_hydrogens(Chem.MolFromMolFile(str(folder / f"{folder.name}_ligand.sdf")))
        copies = list(Chem.SDMolSupplier(str(folder / f"{folder.name}_ligands.sdf")))
        pos = torch.tensor(crystal.GetConformer().GetPositions(), dtype=torch.float64)
        bonds, moving = rotatable_bonds(crystal)
        empty = torch.zeros(0, 3, dtype=torch.float64)
        complexes.append(DockingComplex(folder.name, torch.zeros(len(pos), dtype=torch.long), pos, pos, pos, 0.0, bonds,
                                        moving, symmetry_references(crystal, copies), torch.zeros(0, dtype=torch.long),
                                        empty, pos.mean(0), True))
    assert len(complexes) >= 60
    metrics = evaluate_docking(None, complexes, benchmark_starts(complexes, TRACK_A, TRACK_B, seed=0))
    assert metrics["a_start_median_rmsd"] >= 3.0 and metrics["a_start_success"] < 15.0
    assert metrics["a_centroid_success"] < 80.0


def _refine_whole_graph(model, c, starts, steps, step_size):
    """refine's definition: every step the whole complex graphs through model(batch), each start moved by itself."""
    poses = starts.clone()
    for step in range(steps + 1):
        with torch.no_grad():
            out = model(Batch.from_data_list([pose_graph(c, p, torch.float64) for p in poses]))
        if step == steps:
            return poses, out["confidence"]
        alpha = 1.0 if step == steps - 1 else step_size
        tor = out["torsion"].reshape(len(poses), -1)
        poses = torch.stack([move_pose(p, c.bonds, c.moving, alpha * out["translation"][s], alpha * out["rotation"][s],
                                       alpha * tor[s]) for s, p in enumerate(poses)])


def test_moving_a_batch_of_poses_is_moving_each():
    c = toy_docking_complex()
    g = torch.Generator().manual_seed(2)
    poses = track_a_starts(c, 5, 1, translation=2.0, rotation=1.0, torsion=math.pi)
    t, w = torch.randn(5, 3, dtype=torch.float64, generator=g), torch.randn(5, 3, dtype=torch.float64, generator=g)
    d = torch.randn(5, c.bonds.shape[1], dtype=torch.float64, generator=g)
    w[2] = 0.0  # no rotation
    each = torch.stack([move_pose(p, c.bonds, c.moving, t[s], w[s], d[s]) for s, p in enumerate(poses)])
    torch.testing.assert_close(move_pose(poses, c.bonds, c.moving, t, w, d), each, atol=1e-12, rtol=0)


def test_refinement_equals_the_whole_graph_definition_on_a_real_complex(tmp_path, shared_data):
    """refine (the pocket's part once, only what a pose changes, all starts moved at once) gives the poses,
    confidences and metrics of the whole-graph loop, on an Astex complex."""
    from eqgeo.datasets.docking import load_docking_complexes

    root = shared_data / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    complexes, _ = load_docking_complexes(root, ids=["1JD0_AZM", "1HQ2_PH2"], pocket_radius=8.0, cache_dir=tmp_path)
    torch.manual_seed(0)
    model = DockingModel(channels=4, lmax=1, num_layers=3, radial_hidden=8, avg_num_neighbors=19.0).double().eval()
    model.set_statistics(1.7, 0.6, 1.8)
    starts = benchmark_starts(complexes, {**TRACK_A, "starts": 2}, {**TRACK_B, "starts": 3}, seed=0)
    for k, c in enumerate(complexes):
        for track in "ab":
            poses, confidence = refine(model, c, starts[track][k], steps=3, step_size=0.5)
            ref_poses, ref_confidence = _refine_whole_graph(model, c, starts[track][k], 3, 0.5)
            assert (ref_poses - starts[track][k]).abs().max() > 0.1  # the model moved the ligand
            torch.testing.assert_close(poses, ref_poses, atol=1e-9, rtol=0)
            torch.testing.assert_close(confidence, ref_confidence, atol=1e-9, rtol=0)
    metrics = evaluate_docking(model, complexes, starts, steps=3, step_size=0.5)
    a = torch.cat([symmetric_rmsd(_refine_whole_graph(model, c, starts["a"][k], 3, 0.5)[0], c.references)
                   for k, c in enumerate(complexes)])
    assert metrics["a_model_median_rmsd"] == pytest.approx(float(a.quantile(0.5)), abs=1e-9)
    assert metrics["a_model_success"] == 100.0 * float((a < 2.0).double().mean())
