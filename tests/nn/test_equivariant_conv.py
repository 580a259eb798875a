import math

import pytest
import torch

from eqgeo.nn.equivariant_conv import EquivariantConv
from eqgeo.nn.radial import RadialEmbedding
from eqgeo.o3 import Irreps, SphericalHarmonics
from eqgeo.testing import NodeIndex, Nodes, assert_equivariant

from ._checks import compiles_without_graph_breaks, round_trips

IN, OUT = "4x0e+2x1o+2x1e+1x2e", "3x0e+2x1o+2x2e+1x0o"  # 0o only through 1e x 1o: parity is tested
CUTOFF = 3.0


# ----------------------------------------------------------------------------- graph helpers
def radius_edges(pos: torch.Tensor, cutoff: float, batch: torch.Tensor | None = None) -> torch.Tensor:
    """All ordered pairs closer than ``cutoff`` (no self loops): ``[0]`` = neighbour j, ``[1]`` = centre i."""
    n = pos.shape[0]
    mask = (torch.cdist(pos, pos) < cutoff) & ~torch.eye(n, dtype=torch.bool)
    if batch is not None:
        mask &= batch[:, None] == batch[None, :]
    dst, src = mask.nonzero().T
    return torch.stack([src, dst])


def random_graph(n: int = 8, irreps=IN, dtype=torch.float64, spread: float = 1.5, cutoff: float = CUTOFF):
    pos = torch.randn(n, 3, dtype=dtype) * spread
    return Irreps(irreps).randn(n, -1, dtype=dtype), pos, radius_edges(pos, cutoff)


def edge_vectors(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    return pos[edge_index[0]] - pos[edge_index[1]]


def on_positions(layer):
    """``(x, pos, edge_index) -> layer(x, edge_index, edge_vec)``: lets the checks move positions."""
    return lambda x, pos, edge_index: layer(x, edge_index, edge_vectors(pos, edge_index))


def make(dtype=torch.float64, irreps_in=IN, irreps_out=OUT, **kwargs) -> EquivariantConv:
    kwargs = {"irreps_sh": 2, "cutoff": CUTOFF, "radial_hidden": 16, "avg_num_neighbors": 3.0, **kwargs}
    return EquivariantConv(irreps_in, irreps_out, **kwargs).to(dtype)


def reference(conv: EquivariantConv, x, edge_index, edge_vec):
    """The definition written out edge by edge, from the layer's own parts."""
    out = torch.zeros(x.shape[0], conv.irreps_mid.dim, dtype=x.dtype)
    for e in range(edge_index.shape[1]):
        j, i = edge_index[:, e].tolist()
        v = edge_vec[e]
        r = v.norm()
        w = conv.radial_mlp(conv.edge_encoder.radial_embedding(r)) * conv.edge_encoder.cutoff_fn(r)
        out[i] += conv.tp(x[j], conv.edge_encoder.sh(v), w)
    out = conv.linear(out / math.sqrt(conv.avg_num_neighbors))
    return out + conv.self_connection(x)


# ----------------------------------------------------------------------------- tests
def test_equivariance_rotation_reflection_translation_permutation(dtype):
    conv = make(dtype)
    x, pos, edge_index = random_graph(dtype=dtype)
    assert edge_index.shape[1] > 10
    errors = assert_equivariant(
        on_positions(conv), [x, pos, edge_index], [Nodes(IN), Nodes("cartesian_points"), NodeIndex()], [Nodes(OUT)],
        ntrials=2,
    )
    assert set(errors) == {"rotation", "reflection", "translation", "permutation"}


def test_matches_edge_by_edge_definition():
    conv = make()
    x, pos, edge_index = random_graph(n=10)
    edge_vec = edge_vectors(pos, edge_index)
    expected = reference(conv, x, edge_index, edge_vec)
    torch.testing.assert_close(conv(x, edge_index, edge_vec), expected, atol=1e-12, rtol=0)


def test_three_node_line_and_isolated_node():
    # 0 - 1 - 2 on a line (spacing 1, within the cutoff; 0 and 2 at distance 2 also are),
    # node 3 far away: it has no neighbours and gets only the self-connection.
    conv = make()
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [10.0, 0, 0]], dtype=torch.float64)
    x = Irreps(IN).randn(4, -1, dtype=torch.float64)
    edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])  # nearest neighbours only
    out = conv(x, edge_index, edge_vectors(pos, edge_index))
    torch.testing.assert_close(out[3], conv.self_connection(x[3]), atol=1e-14, rtol=0)
    torch.testing.assert_close(out, reference(conv, x, edge_index, edge_vectors(pos, edge_index)), atol=1e-12, rtol=0)
    # messages flow from edge_index[0] (neighbour j) to edge_index[1] (centre i): with the single
    # edge 1 -> 0, changing x[1] changes node 0 through the message, node 1 through its
    # self-connection only, and nothing else.
    one = edge_index[:, :1]
    base = conv(x, one, edge_vectors(pos, one))
    x2 = x.clone()
    x2[1] += 1.0
    moved = conv(x2, one, edge_vectors(pos, one))
    assert (moved[0] - base[0]).abs().max() > 1e-3
    torch.testing.assert_close(moved[2:], base[2:], atol=0, rtol=0)
    torch.testing.assert_close(moved[1] - base[1], conv.self_connection(x2[1] - x[1]), atol=1e-12, rtol=0)


def test_continuous_at_the_cutoff():
    # atom 2 crosses the cutoff sphere of atom 1: the output (and its gradient) change -> 0 with the step
    conv = make(avg_num_neighbors=1.0, self_connection=False)  # changes not lost in rounding against O(1)
    x = Irreps(IN).randn(3, -1, dtype=torch.float64)
    direction = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    direction = direction / direction.norm()

    def run(distance):
        pos = torch.stack([torch.tensor([-1.0, 0.2, 0.1], dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                           distance * direction]).requires_grad_(True)
        edge_index = radius_edges(pos.detach(), CUTOFF)
        out = conv(x, edge_index, edge_vectors(pos, edge_index))
        (grad,) = torch.autograd.grad(out.square().sum(), pos)
        return edge_index.shape[1], out.detach(), grad

    changes = []
    for step in (1e-1, 1e-2, 1e-3):
        n_in, out_in, g_in = run(CUTOFF - step)
        n_out, out_out, g_out = run(CUTOFF + step)
        assert n_in == n_out + 2  # the pair (1, 2) is an edge inside only
        changes.append(((out_in - out_out).abs().max().item(), (g_in - g_out).abs().max().item()))
    assert changes[0][0] > 1e-9  # the edge does contribute just inside
    # values and gradients converge: at least 10x smaller per decade of the step (measured: order 6)
    assert changes[2][0] < 1e-8 and changes[2][1] < 1e-5
    for before, after in zip(changes, changes[1:]):
        assert after[0] < 0.1 * before[0] and after[1] < 0.1 * before[1]
    # an edge at or beyond the envelope's cutoff (longer neighbour lists) contributes exactly nothing
    pos = torch.stack([torch.zeros(3, dtype=torch.float64), 1.2 * CUTOFF * direction])
    edge_index = torch.tensor([[1], [0]])
    assert (conv(x[:2], edge_index, edge_vectors(pos, edge_index)) == 0).all()


def test_batch_equals_graphs_one_by_one():
    conv = make()
    graphs = [random_graph(n=n) for n in (5, 9)]
    x = torch.cat([g[0] for g in graphs])
    pos = torch.cat([g[1] + 100.0 * k for k, g in enumerate(graphs)])
    edge_index = torch.cat([graphs[0][2], graphs[1][2] + 5], dim=1)
    out = conv(x, edge_index, edge_vectors(pos, edge_index))
    for (xg, pg, eg), sl in zip(graphs, (slice(0, 5), slice(5, 14))):
        torch.testing.assert_close(out[sl], conv(xg, eg, edge_vectors(pg, eg)), atol=1e-12, rtol=0)


def test_precomputed_edge_features_give_the_same_output():
    conv = make()
    x, pos, edge_index = random_graph()
    edge_vec = edge_vectors(pos, edge_index)
    edge_sh = SphericalHarmonics(2, normalize=True, normalization="component")(edge_vec)
    edge_radial = RadialEmbedding(8, CUTOFF).to(torch.float64)(edge_vec.norm(dim=-1))
    out = conv(x, edge_index, edge_vec)
    torch.testing.assert_close(conv(x, edge_index, edge_vec, edge_sh=edge_sh, edge_radial=edge_radial), out,
                               atol=1e-13, rtol=0)
    torch.testing.assert_close(conv(x, edge_index, edge_vec, edge_sh, edge_radial), out, atol=1e-13, rtol=0)


def test_compiles_without_graph_breaks_and_round_trips():
    conv = make(torch.float32)
    x, pos, edge_index = random_graph(dtype=torch.float32)
    edge_vec = edge_vectors(pos, edge_index)
    assert type(conv).propagate.__module__.endswith("_propagate")  # PyG's generated propagate, not the fallback
    compiles_without_graph_breaks(conv, x, edge_index, edge_vec)
    round_trips(conv, x, edge_index, edge_vec)


def test_double_backward_through_positions():
    # forces are -dE/dpos; training on them differentiates once more
    conv = make(irreps_in="2x0e+1x1o", irreps_out="1x0e+1x1o", irreps_sh=1, radial_hidden=4, radial_layers=1)
    x, pos, edge_index = random_graph(n=3, irreps="2x0e+1x1o", spread=0.8)
    assert edge_index.shape[1] == 6
    x.requires_grad_(True)
    edge_vec = edge_vectors(pos, edge_index).requires_grad_(True)

    def f(x, edge_vec):
        return conv(x, edge_index, edge_vec)

    torch.autograd.gradcheck(f, (x, edge_vec))
    torch.autograd.gradgradcheck(f, (x, edge_vec))


def test_repr_and_weight_count():
    conv = EquivariantConv("4x0e+2x1o", "4x0e+2x1o", irreps_sh=2, avg_num_neighbors=2.0)
    assert repr(conv) == "EquivariantConv(4x0e+2x1o -> 4x0e+2x1o | sh 1x0e+1x1o+1x2e, cutoff=5, 5564 weights)"
    # radial MLP 8 -> 64 -> 64 -> 16 path weights; Linear mid -> out; Linear self-connection
    assert 8 * 64 + 64 * 64 + 64 * conv.tp.weight_numel + conv.linear.weight_numel + 4 * 4 + 2 * 2 == 5564
    assert conv.irreps_in == Irreps("4x0e+2x1o") and conv.irreps_out == Irreps("4x0e+2x1o")
    assert repr(EquivariantConv("0e", "0e", "0e+1o", self_connection=False, avg_num_neighbors=1)).endswith(
        "4673 weights)"  # MLP 8*64 + 64*64 + 64*1, Linear 1x0e -> 1x0e: 1
    )


def test_unit_variance_at_init():
    # unit-variance inputs on a random graph, avg_num_neighbors = its true mean degree
    irreps = "16x0e+8x1o+4x2e"
    n = 200
    pos = torch.rand(n, 3) * 8.0  # float32: fast, and precise enough for moments
    edge_index = radius_edges(pos, 3.0)
    degree = edge_index.shape[1] / n
    assert 5 < degree < 30
    x = Irreps(irreps).randn(n, -1)
    outs, convs = [], []
    for _ in range(4):  # several draws of the weights: a 2e block has only 4 channels
        conv = make(torch.float32, irreps_in=irreps, irreps_out=irreps, cutoff=3.0, radial_hidden=64, avg_num_neighbors=degree)
        y = conv(x, edge_index, edge_vectors(pos, edge_index))
        outs.append(y)
        convs.append(y - conv.self_connection(x))
    y, c = torch.cat(outs), torch.cat(convs)
    for sl, (mul, ir) in zip(Irreps(irreps).slices(), Irreps(irreps)):
        assert 0.6 < y[:, sl].pow(2).mean().item() < 1.8, (ir, y[:, sl].pow(2).mean().item())
        # the convolution alone: measured ~0.06, because the radial embedding's features have a
        # mean square ~0.07 (Bessel basis times envelope), not 1 as the radial MLP assumes
        assert 0.01 < c[:, sl].pow(2).mean().item() < 1.8, (ir, c[:, sl].pow(2).mean().item())


def test_bad_construction_names_the_irreps():
    no_path = r"irreps_out 1x0e\+1x3o asks for 3o, which no path 1x0e\+1x1o x 1x0e\+1x1o produces"
    with pytest.raises(ValueError, match=no_path):
        EquivariantConv("0e+1o", "0e+3o", 1, avg_num_neighbors=1)
    EquivariantConv("0e+1o", "0e+3o", 2, avg_num_neighbors=1)  # 1o x 2e -> 3o
    with pytest.raises(ValueError, match="irreps_sh must be spherical-harmonic irreps.*got 1x0e\\+1x1e"):
        EquivariantConv("0e", "0e", "0e+1e", avg_num_neighbors=1)
    with pytest.raises(ValueError, match="irreps_sh must be"):
        EquivariantConv("0e", "0e", "2x0e", avg_num_neighbors=1)
    with pytest.raises(ValueError, match="lmax must be >= 0"):
        EquivariantConv("0e", "0e", -1, avg_num_neighbors=1)
    with pytest.raises(ValueError, match="avg_num_neighbors must be > 0, got 0"):
        EquivariantConv("0e", "0e", 1, avg_num_neighbors=0)
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        EquivariantConv("0e", "0e", 1, cutoff=-1.0, avg_num_neighbors=1)
    with pytest.raises(ValueError, match="must be non-empty"):
        EquivariantConv("", "0e", 1, avg_num_neighbors=1)
    with pytest.raises(TypeError, match="avg_num_neighbors"):
        EquivariantConv("0e", "0e", 1)  # required: a constant of the training data, never guessed


def test_bad_inputs_name_the_expected_irreps():
    conv = make()
    x, pos, edge_index = random_graph()
    edge_vec = edge_vectors(pos, edge_index)
    with pytest.raises(ValueError, match=r"x of shape \(num_nodes, 21\) for irreps_in 4x0e\+2x1o\+2x1e\+1x2e, got \(8, 20"):
        conv(x[:, :-1], edge_index, edge_vec)
    with pytest.raises(ValueError, match="edge_vec of shape"):
        conv(x, edge_index, edge_vec[:-1])
    with pytest.raises(ValueError, match=r"edge_sh of shape .* for irreps_sh 1x0e\+1x1o\+1x2e"):
        conv(x, edge_index, edge_vec, edge_sh=edge_vec)
    with pytest.raises(ValueError, match=r"edge_radial of shape"):
        conv(x, edge_index, edge_vec, edge_radial=edge_vec)
    with pytest.raises(ValueError, match="edge_index of shape"):
        conv(x, edge_index.T, edge_vec)


def test_zero_length_edge_has_finite_derivatives():
    # a self loop (zero edge vector) must not turn forces or their derivatives into NaN
    conv = make()
    x = Irreps(IN).randn(2, -1, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 1], [0, 0, 1]])
    edge_vec = torch.tensor([[0.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(conv(x, edge_index, edge_vec).square().sum(), edge_vec, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), edge_vec)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all() and g[1].abs().max() > 0
