import math

import pytest
import torch
from torch_geometric.utils import softmax

from eqgeo.nn.equivariant_transformer_conv import EquivariantTransformerConv
from eqgeo.o3 import Irreps
from eqgeo.testing import NodeIndex, Nodes, assert_equivariant

from ._checks import compiles_without_graph_breaks, round_trips
from .test_equivariant_conv import edge_vectors, radius_edges, random_graph

IN, OUT = "4x0e+2x1o+2x1e+1x2e", "4x0e+2x1o+2x2e+2x0o"
CUTOFF = 3.0


def make(dtype=torch.float64, irreps_in=IN, irreps_out=OUT, **kwargs) -> EquivariantTransformerConv:
    kwargs = {"irreps_sh": 2, "heads": 2, "key_dim": 4, "cutoff": CUTOFF, "radial_hidden": 16, **kwargs}
    return EquivariantTransformerConv(irreps_in, irreps_out, **kwargs).to(dtype)


def edge_terms(att: EquivariantTransformerConv, x, edge_index, edge_vec):
    """Envelope, logits ``(num_edges, heads)`` and values of each edge, from the layer's parts."""
    enc = att.edge_encoder
    r = edge_vec.norm(dim=-1)
    f = enc.cutoff_fn(r)
    m = att.tp(x[edge_index[0]], enc.sh(edge_vec), att.radial_mlp(enc.radial_embedding(r)) * f[:, None])
    H, d = att.heads, att.key_dim
    q = att.query(x).view(-1, H, d)
    k = att.key(m).view(-1, H, d)
    logits = torch.einsum("ehd,ehd->eh", q[edge_index[1]], k) / math.sqrt(d)
    return f, logits, att.value(m)


def reference(att: EquivariantTransformerConv, x, edge_index, edge_vec):
    """The docstring's equations, node by node: (output, alpha)."""
    f, logits, v = edge_terms(att, x, edge_index, edge_vec)
    H = att.heads
    alpha = torch.zeros_like(logits)
    agg = torch.zeros(x.shape[0], att.irreps_out.dim, dtype=x.dtype)
    for i in range(x.shape[0]):
        e = (edge_index[1] == i).nonzero().flatten()
        if len(e) == 0:
            continue
        weights = f[e, None] * logits[e].exp()
        alpha[e] = f[e, None] * weights / weights.sum(dim=0)
        for sl, (mul, ir) in zip(att.irreps_out.slices(), att.irreps_out):
            vh = v[e, sl].reshape(len(e), H, mul // H, ir.dim)
            agg[i, sl] = (alpha[e, :, None, None] * vh).sum(dim=0).reshape(-1)
    return att.output(agg) + att.self_connection(x), alpha


def test_equivariance_rotation_reflection_translation_permutation(dtype):
    att = make(dtype)
    x, pos, edge_index = random_graph(dtype=dtype)

    def f(x, pos, edge_index):
        out, (ei, alpha) = att(x, edge_index, edge_vectors(pos, edge_index), return_attention_weights=True)
        return out, ei, alpha

    # the attention weights are per edge (edge order unchanged by a relabelling) and invariant
    errors = assert_equivariant(
        f, [x, pos, edge_index], [Nodes(IN), Nodes("cartesian_points"), NodeIndex()], [Nodes(OUT), NodeIndex(), None],
        ntrials=2,
    )
    assert set(errors) == {"rotation", "reflection", "translation", "permutation"}


def test_matches_node_by_node_definition():
    att = make()
    x, pos, edge_index = random_graph(n=10)
    edge_vec = edge_vectors(pos, edge_index)
    out, (ei, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    ref_out, ref_alpha = reference(att, x, edge_index, edge_vec)
    assert ei is edge_index and alpha.shape == (edge_index.shape[1], 2)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-13, rtol=0)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    assert not any(isinstance(v, torch.Tensor) for v in vars(att).values())  # alpha is returned, not kept


def test_far_from_the_cutoff_it_is_pyg_softmax():
    # with the envelope ~ 1 (1 - 2e-20 here) the weights are PyG's softmax over each node's incoming edges
    att = make(cutoff=1e4, basis="gaussian")  # Bessel functions would be ~1e-4 at r << cutoff
    x, pos, edge_index = random_graph()
    edge_vec = edge_vectors(pos, edge_index)
    _, (_, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    _, logits, _ = edge_terms(att, x, edge_index, edge_vec)
    assert logits.std() > 0.1  # the logits are not all equal: the test says something
    torch.testing.assert_close(alpha, softmax(logits, edge_index[1]), atol=1e-12, rtol=0)


def test_three_node_line_isolated_node_and_heads():
    att = make()
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0.3, 0], [10.0, 0, 0]], dtype=torch.float64)
    x = Irreps(IN).randn(4, -1, dtype=torch.float64)
    edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])
    edge_vec = edge_vectors(pos, edge_index)
    out, (_, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    torch.testing.assert_close(out[3], att.self_connection(x[3]), atol=1e-14, rtol=0)  # no neighbours
    torch.testing.assert_close(out, reference(att, x, edge_index, edge_vec)[0], atol=1e-12, rtol=0)
    # nodes 0 and 2 have one neighbour each: weight = envelope for every head
    f = att.edge_encoder.cutoff_fn(edge_vec.norm(dim=-1))
    torch.testing.assert_close(alpha[[0, 3]], f[[0, 3], None].expand(2, 2), atol=1e-14, rtol=0)
    # node 1 has two: the heads weigh them differently
    assert (alpha[1:3, 0] - alpha[1:3, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("only_neighbour", [True, False])
def test_continuous_at_the_cutoff(only_neighbour):
    # atom 2 crosses the cutoff sphere of atom 0, as its only neighbour or next to atom 1;
    # without the self-connection the changes are not lost in rounding against O(1) outputs
    att = make(self_connection=False)
    x = Irreps(IN).randn(3, -1, dtype=torch.float64)
    direction = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    direction = direction / direction.norm()
    other = torch.tensor([-1.0, 0.2, 0.1] if not only_neighbour else [-50.0, 0.0, 0.0], dtype=torch.float64)

    def run(distance):
        pos = torch.stack([torch.zeros(3, dtype=torch.float64), other, distance * direction]).requires_grad_(True)
        edge_index = radius_edges(pos.detach(), CUTOFF)
        out = att(x, edge_index, edge_vectors(pos, edge_index))
        (grad,) = torch.autograd.grad(out.square().sum(), pos)
        return edge_index.shape[1], out.detach(), grad

    changes = []
    for step in (1e-1, 1e-2, 1e-3):
        n_in, out_in, g_in = run(CUTOFF - step)
        n_out, out_out, g_out = run(CUTOFF + step)
        assert n_in == n_out + 2 and n_out == (0 if only_neighbour else 2)
        changes.append(((out_in - out_out).abs().max().item(), (g_in - g_out).abs().max().item()))
    assert changes[0][0] > 1e-12  # the edge does contribute just inside
    # values and gradients converge: at least 10x smaller per decade of the step (measured: order 3 or more)
    assert changes[2][0] < 1e-7 and changes[2][1] < 1e-3
    for before, after in zip(changes, changes[1:]):
        assert after[0] < 0.1 * before[0] and after[1] < 0.1 * before[1]


def test_edges_beyond_the_cutoff_get_zero_weight():
    att = make()
    x, pos, _ = random_graph(n=4, spread=4.0)
    edge_index = radius_edges(pos, 1e9)  # complete graph, some edges longer than the cutoff
    edge_vec = edge_vectors(pos, edge_index)
    far = edge_vec.norm(dim=-1) >= CUTOFF
    assert far.any()
    out, (_, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    assert (alpha[far] == 0).all() and torch.isfinite(alpha).all()
    near = ~far
    torch.testing.assert_close(out, att(x, edge_index[:, near], edge_vec[near]), atol=1e-12, rtol=0)
    # a node whose every edge is beyond the cutoff gets only its self-connection (no 0/0)
    lone = torch.tensor([[1], [0]])
    vec = torch.tensor([[2 * CUTOFF, 0.0, 0.0]], dtype=torch.float64).requires_grad_(True)
    y = att(x[:2], lone, vec)
    torch.testing.assert_close(y, att.self_connection(x[:2]), atol=0, rtol=0)
    (g,) = torch.autograd.grad(y.sum(), vec)
    assert torch.isfinite(g).all()


def test_batch_equals_graphs_one_by_one():
    att = make()
    graphs = [random_graph(n=n) for n in (5, 9)]
    x = torch.cat([g[0] for g in graphs])
    pos = torch.cat([g[1] + 100.0 * k for k, g in enumerate(graphs)])
    edge_index = torch.cat([graphs[0][2], graphs[1][2] + 5], dim=1)
    out = att(x, edge_index, edge_vectors(pos, edge_index))
    for (xg, pg, eg), sl in zip(graphs, (slice(0, 5), slice(5, 14))):
        torch.testing.assert_close(out[sl], att(xg, eg, edge_vectors(pg, eg)), atol=1e-12, rtol=0)


def test_compiles_without_graph_breaks_and_round_trips():
    att = make(torch.float32)
    x, pos, edge_index = random_graph(dtype=torch.float32)
    edge_vec = edge_vectors(pos, edge_index)
    # PyG's generated propagate and edge_updater, not its silent fallback
    assert type(att).propagate.__module__.endswith("_propagate")
    assert type(att).edge_updater.__module__.endswith("_edge_updater")
    round_trips(att, x, edge_index, edge_vec)

    class WithWeights(torch.nn.Module):
        """Output and attention weights as one tensor (the compile check compares one tensor)."""

        def __init__(self):
            super().__init__()
            self.att = att

        def forward(self, x, edge_index, edge_vec):
            out, (_, alpha) = self.att(x, edge_index, edge_vec, return_attention_weights=True)
            return torch.cat([out.flatten(), alpha.flatten()])

    # one compilation (the slow part of this suite) covers the whole layer and the weights
    compiles_without_graph_breaks(WithWeights(), x, edge_index, edge_vec)


def test_double_backward_through_positions():
    att = make(irreps_in="2x0e+1x1o", irreps_out="2x0e+2x1o", irreps_sh=1, radial_hidden=4, radial_layers=1, key_dim=2)
    x, pos, edge_index = random_graph(n=3, irreps="2x0e+1x1o", spread=0.8)
    assert edge_index.shape[1] == 6
    x.requires_grad_(True)
    edge_vec = edge_vectors(pos, edge_index).requires_grad_(True)

    def f(x, edge_vec):
        return att(x, edge_index, edge_vec)

    torch.autograd.gradcheck(f, (x, edge_vec))
    torch.autograd.gradgradcheck(f, (x, edge_vec))


def test_repr_and_weight_count():
    att = EquivariantTransformerConv("4x0e+2x1o", "4x0e+2x1o", irreps_sh=1, heads=2, key_dim=4)
    assert repr(att) == (
        "EquivariantTransformerConv(4x0e+2x1o -> 4x0e+2x1o | sh 1x0e+1x1o, 2 heads, cutoff=5, 5532 weights)"
    )
    n_mid0 = sum(mul for mul, ir in att.irreps_mid if str(ir) == "0e")
    assert n_mid0 == 6  # 4x0e x 0e and 2x1o x 1o
    expected = (
        8 * 64 + 64 * 64 + 64 * att.tp.weight_numel  # radial MLP
        + 4 * 8  # queries: 4x0e -> 8x0e
        + n_mid0 * 8  # keys
        + att.value.weight_numel
        + 4 * 4 + 2 * 2  # output (mixes heads)
        + 4 * 4 + 2 * 2  # self-connection
    )
    assert expected == 5532


def test_unit_variance_at_init():
    irreps = "16x0e+8x1o+4x2e"
    n = 200
    pos = torch.rand(n, 3) * 8.0  # float32: fast, and precise enough for moments
    edge_index = radius_edges(pos, 3.0)
    x = Irreps(irreps).randn(n, -1)
    outs = []
    for _ in range(4):
        att = make(torch.float32, irreps_in=irreps, irreps_out=irreps, heads=4, key_dim=8, radial_hidden=64)
        outs.append(att(x, edge_index, edge_vectors(pos, edge_index)))
    y = torch.cat(outs)
    for sl, (mul, ir) in zip(Irreps(irreps).slices(), Irreps(irreps)):
        assert 0.6 < y[:, sl].pow(2).mean().item() < 1.8, (ir, y[:, sl].pow(2).mean().item())


def test_bad_construction_names_the_irreps():
    with pytest.raises(ValueError, match=r"multiplicity must be divisible by 4; not 2x1o"):
        EquivariantTransformerConv("4x0e+2x1o", "4x0e+2x1o", 1, heads=4)
    with pytest.raises(ValueError, match=r"irreps_in 2x1o has no scalars \(0e\) to compute the queries"):
        EquivariantTransformerConv("2x1o", "2x1o", 1, heads=2)
    with pytest.raises(ValueError, match=r"asks for 3o, which no path 2x0e\+2x1o x 1x0e\+1x1o"):
        EquivariantTransformerConv("2x0e+2x1o", "2x0e+2x3o", 1, heads=2)
    with pytest.raises(ValueError, match=r"no path 2x0e x 1x1o -> 0e gives scalars for the keys"):
        EquivariantTransformerConv("2x0e", "2x1o", "1o", heads=2)
    with pytest.raises(ValueError, match="heads must be > 0"):
        EquivariantTransformerConv("2x0e", "2x0e", 1, heads=0)


def test_bad_inputs_name_the_expected_irreps():
    att = make()
    x, pos, edge_index = random_graph()
    edge_vec = edge_vectors(pos, edge_index)
    with pytest.raises(ValueError, match=r"EquivariantTransformerConv expects x of shape \(num_nodes, 21\) for irreps"):
        att(x[:, :-1], edge_index, edge_vec)
    with pytest.raises(ValueError, match="edge_sh of shape"):
        att(x, edge_index, edge_vec, edge_sh=edge_vec)


def test_zero_length_edge_has_finite_derivatives():
    att = make()
    x = Irreps(IN).randn(2, -1, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 1], [0, 0, 1]])
    edge_vec = torch.tensor([[0.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(att(x, edge_index, edge_vec).square().sum(), edge_vec, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), edge_vec)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all() and g[1].abs().max() > 0
