"""FixedPocketForward: a DockingModel's whole-graph outputs for many poses in one pocket, from the pocket's
part computed once and, per pose, only what the pose changes."""

import math

import pytest
import torch
from torch_geometric.data import Batch

from eqgeo.models import DockingModel
from eqgeo.models.docking import FixedPocketForward
from eqgeo.inference.docking import pose_forward, pose_graph, track_a_starts, track_b_starts

from ..helpers import shared_path

KEYS = ("translation", "rotation", "torsion", "confidence")


@pytest.fixture(scope="module")
def astex(tmp_path_factory):
    """A small real complex: 1JD0_AZM of the Astex set (13 ligand atoms, 2 rotatable bonds), 8 Å pocket."""
    from eqgeo.datasets.docking import load_docking_complexes

    root = shared_path() / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
    complexes, _ = load_docking_complexes(root, ids=["1JD0_AZM"], pocket_radius=8.0,
                                          cache_dir=tmp_path_factory.mktemp("docking-cache"))
    return complexes[0]


def _model(num_layers, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    kwargs = {"channels": 4, "lmax": 1, "radial_hidden": 8, "avg_num_neighbors": 19.0, **kwargs}
    model = DockingModel(num_layers=num_layers, **kwargs).to(dtype).eval()
    model.set_statistics(1.7, 0.6, 1.8)
    return model


def _poses(c):
    """Both tracks' starts (up to ~5 Å from the crystal pose), the crystal pose, and one far from the pocket."""
    a = track_a_starts(c, 4, 0, translation=2.0, rotation=1.0, torsion=math.pi)
    b = track_b_starts(c, 4, 0, offset=2.0)
    return torch.cat([a, b, c.crystal[None], c.crystal[None] + torch.tensor([40.0, 0.0, 0.0], dtype=torch.float64)])


def _whole_graph(model, c, poses):
    dtype = model.translation_scale.dtype
    with torch.no_grad():
        return model(Batch.from_data_list([pose_graph(c, p, dtype) for p in poses]))


def _largest_difference(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in KEYS)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("parity", ["full", "natural"])
def test_equals_the_whole_graph_on_a_real_complex(astex, num_layers, parity):
    model = _model(num_layers, parity=parity)
    poses = _poses(astex)
    forward = FixedPocketForward(model, astex.ligand_z, astex.pocket_z, astex.pocket_pos, astex.bonds)
    out, ref = forward(poses), _whole_graph(model, astex, poses)
    for key in KEYS:
        assert out[key].shape == ref[key].shape
        torch.testing.assert_close(out[key], ref[key], atol=1e-10, rtol=0)
    # not a vacuous check: the pocket changes the outputs of the poses inside it
    alone = _whole_graph(model, astex.__class__(**{**astex.to_dict(), "pocket_z": astex.pocket_z[:0],
                                                   "pocket_pos": astex.pocket_pos[:0]}), poses)
    assert (alone["translation"][:-1] - ref["translation"][:-1]).abs().max() > 1e-4
    torch.testing.assert_close(alone["translation"][-1], ref["translation"][-1], atol=1e-12, rtol=0)  # the far pose


def test_float32_equals_the_whole_graph_to_round_off(astex):
    model = _model(3, torch.float32, channels=16)
    poses = _poses(astex)
    out = FixedPocketForward(model, astex.ligand_z, astex.pocket_z, astex.pocket_pos, astex.bonds)(poses)
    ref = _whole_graph(model, astex, poses)
    assert _largest_difference(out, ref) < 2e-5


@pytest.mark.parametrize("num_layers", [2, 3, 4])
def test_negative_controls_one_hop_short_or_a_stale_message_change_the_outputs(astex, num_layers):
    """The pruning is tight: evaluating each layer one level short, or taking the pocket's own messages
    from atoms whose features the ligand already changed, gives other outputs."""

    class OneHopShort(FixedPocketForward):
        def reach(self, t):
            return max(super().reach(t) - 1, 0)

    class StaleMessages(FixedPocketForward):
        def changed(self, t):
            return super().changed(t) - 1

    model = _model(num_layers)
    poses = _poses(astex)
    ref = _whole_graph(model, astex, poses)
    args = (model, astex.ligand_z, astex.pocket_z, astex.pocket_pos, astex.bonds)
    assert _largest_difference(FixedPocketForward(*args)(poses), ref) < 1e-10
    assert _largest_difference(OneHopShort(*args)(poses), ref) > 1e-5
    if num_layers >= 3:  # with 2 layers no pocket atom's output after a layer that changed it is read
        assert _largest_difference(StaleMessages(*args)(poses), ref) > 1e-5


def test_one_pose_and_a_ligand_without_rotatable_bonds(astex):
    model = _model(3)
    c = astex.__class__(**{**astex.to_dict(), "bonds": astex.bonds[:, :0], "moving": astex.moving[:0]})
    forward = FixedPocketForward(model, c.ligand_z, c.pocket_z, c.pocket_pos, c.bonds)
    out, ref = forward(c.crystal[None]), _whole_graph(model, c, c.crystal[None])
    assert out["torsion"].shape == (0,)
    for key in KEYS:
        torch.testing.assert_close(out[key], ref[key], atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="poses must have shape"):
        forward(c.crystal)


def test_models_it_cannot_split_use_the_whole_graph(astex):
    """Attention layers (a softmax over each node's edges) and a neighbour cap are not split:
    pose_forward falls back to model(batch)."""
    poses = _poses(astex)[:3]
    for model in (_model(2, layer="transformer", heads=2, key_dim=4), _model(2, max_num_neighbors=8)):
        assert not FixedPocketForward.supports(model)
        with pytest.raises(ValueError, match="needs EquivariantConv layers"):
            FixedPocketForward(model, astex.ligand_z, astex.pocket_z, astex.pocket_pos, astex.bonds)
        out, ref = pose_forward(model, astex)(poses), _whole_graph(model, astex, poses)
        for key in KEYS:
            torch.testing.assert_close(out[key], ref[key], atol=0, rtol=0)
    assert isinstance(pose_forward(_model(2), astex), FixedPocketForward)


def test_the_interaction_stack_in_parts_is_its_forward():
    """The per-layer parts FixedPocketForward uses reproduce InteractionStack.forward (a guard against
    EquivariantConv.forward changing without them)."""
    from eqgeo.data.neighbors import radius_graph

    model = _model(3, channels=8)
    stack = model.interactions
    assert stack.splittable()
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(30, 3, dtype=torch.float64, generator=g) * 2.5
    z = torch.randint(0, 2, (30,), generator=g) * 2 + 6
    x0 = model.embedding(z, torch.randint(0, 2, (30,), generator=g))
    src, dst = radius_graph(pos, model.cutoff)
    vec = pos[src] - pos[dst]
    with torch.no_grad():
        ref = stack(x0, torch.stack([src, dst]), vec)
        radial, envelope = stack.edge_radial(vec)
        sh, x = stack.sh(vec), x0
        for t in range(len(stack.convs)):
            m = stack.layer_messages(t, x[src], sh, stack.layer_edge_weight(t, radial, envelope))
            x = stack.layer_update(t, x, m.new_zeros(len(x), m.shape[1]).index_add_(0, dst, m))
    torch.testing.assert_close(x, ref, atol=1e-12, rtol=0)
    assert ref.abs().max() > 0.1
