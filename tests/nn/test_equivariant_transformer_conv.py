import math

import pytest
import torch
from torch_geometric.utils import softmax

from eqgeo.nn.equivariant_transformer_conv import EquivariantTransformerConv
from eqgeo.o3 import Irreps
from eqgeo.testing import NodeIndex, Nodes, assert_equivariant

from ..helpers import oracle
from ._checks import compiles_without_graph_breaks, cutoff_crossing, double_backward_through_edges, round_trips
from ._reference import (
    CUTOFF,
    IN,
    VARIANCE_IRREPS,
    default_dtype,
    e3nn_linear,
    edge_messages,
    edge_vectors,
    jittered_lattice,
    mean_squares,
    output_block_means,
    per_edge_weights,
    polynomial_envelope,
    radius_edges,
    random_graph,
    variance_band_failures,
)

OUT = "4x0e+2x1o+2x2e+2x0o"


def make(dtype=torch.float64, irreps_in=IN, irreps_out=OUT, **kwargs) -> EquivariantTransformerConv:
    kwargs = {"irreps_sh": 2, "heads": 2, "key_dim": 4, "cutoff": CUTOFF, "radial_hidden": 16, **kwargs}
    return EquivariantTransformerConv(irreps_in, irreps_out, **kwargs).to(dtype)


# ----------------------------------------------------------------------------- independent reference
# As for EquivariantConv (see test_equivariant_conv.py): basis, envelope and radial MLP from their
# formulas, harmonics, tensor product and linear maps from e3nn loaded with the layer's weight values,
# the softmax written out node by node. ``mistake`` plants one known error (negative controls).
MISTAKES = {
    "harmonics_norm": "'norm' harmonics instead of 'component'",
    "l1_order": "l=1 harmonics in the order (y, z, x) instead of e3nn's (x, y, z)",
    "path_order": "the tensor product's paths (and flat weights) ordered by output irrep",
    "activation_constant": "radial MLP without the 1/sqrt(E[silu(z)^2]) of its activation",
    "logit_scale": "logits divided by key_dim instead of its square root",
    "envelope_once": "alpha without the envelope's outer factor (only inside the softmax)",
    "heads_interleaved": "head h owning the channels h, h + H, ... of each block instead of a contiguous range",
}


def edge_terms(att: EquivariantTransformerConv, x, edge_index, edge_vec, *, mistake=None, **radial):
    """Envelope, logits ``(num_edges, heads)`` and values of each edge, from independent pieces."""
    e3nn_o3 = oracle("e3nn.o3")
    targets = [ir for _, ir in e3nn_o3.Irreps(str(att.irreps_out))] + [e3nn_o3.Irrep("0e")]  # keys need 0e
    m, irreps_mid = edge_messages(e3nn_o3, att, x[edge_index[0]], edge_vec, targets, mistake=mistake, **radial)
    f = polynomial_envelope(edge_vec.norm(dim=-1), radial.get("cutoff", CUTOFF))
    H, d = att.heads, att.key_dim
    irreps_qk = f"{H * d}x0e"
    q = e3nn_linear(e3nn_o3, att.irreps_in, irreps_qk, att.query.weight)(x).view(-1, H, d)
    k = e3nn_linear(e3nn_o3, irreps_mid, irreps_qk, att.key.weight)(m).view(-1, H, d)
    scale = d if mistake == "logit_scale" else math.sqrt(d)
    logits = torch.einsum("ehd,ehd->eh", q[edge_index[1]], k) / scale
    return f, logits, e3nn_linear(e3nn_o3, irreps_mid, att.irreps_out, att.value.weight)(m)


def reference(att: EquivariantTransformerConv, x, edge_index, edge_vec, *, mistake=None, **radial):
    """The docstring's equations, node by node: (output, alpha)."""
    e3nn_o3 = oracle("e3nn.o3")
    f, logits, v = edge_terms(att, x, edge_index, edge_vec, mistake=mistake, **radial)
    H = att.heads
    alpha = torch.zeros_like(logits)
    agg = torch.zeros(x.shape[0], att.irreps_out.dim, dtype=x.dtype)
    for i in range(x.shape[0]):
        e = (edge_index[1] == i).nonzero().flatten()
        if len(e) == 0:
            continue
        weights = f[e, None] * logits[e].exp()
        outer = 1.0 if mistake == "envelope_once" else f[e, None]
        alpha[e] = outer * weights / weights.sum(dim=0)
        for sl, (mul, ir) in zip(att.irreps_out.slices(), att.irreps_out):
            if mistake == "heads_interleaved":
                vh = v[e, sl].reshape(len(e), mul // H, H, ir.dim).transpose(1, 2)
            else:
                vh = v[e, sl].reshape(len(e), H, mul // H, ir.dim)
            agg[i, sl] = (alpha[e, :, None, None] * vh).sum(dim=0).reshape(-1)
    out = e3nn_linear(e3nn_o3, att.irreps_out, att.irreps_out, att.output.weight)(agg)
    return out + e3nn_linear(e3nn_o3, att.irreps_in, att.irreps_out, att.self_connection.weight)(x), alpha


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


def test_matches_node_by_node_definition_from_independent_parts():
    att = make()
    x, pos, edge_index = random_graph(n=10)
    edge_vec = edge_vectors(pos, edge_index)
    out, (ei, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    ref_out, ref_alpha = reference(att, x, edge_index, edge_vec)
    assert ei is edge_index and alpha.shape == (edge_index.shape[1], 2)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-13, rtol=0)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    assert not any(isinstance(v, torch.Tensor) for v in vars(att).values())  # alpha is returned, not kept


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_reference_with_a_planted_mistake_differs(mistake):
    # negative control of the test above: each piece of the reference matters (tolerances 1e-12, 1e-13;
    # measured differences 0.19 to 1.8 in the output or alpha)
    att = make()
    x, pos, edge_index = random_graph(n=10)
    edge_vec = edge_vectors(pos, edge_index)
    out, (_, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    wrong_out, wrong_alpha = reference(att, x, edge_index, edge_vec, mistake=mistake)
    difference = max((out - wrong_out).abs().max(), (alpha - wrong_alpha).abs().max())
    assert difference > 1e-3, MISTAKES[mistake]


def test_far_from_the_cutoff_it_is_pyg_softmax():
    # with the envelope ~ 1 (1 - 2e-20 here) the weights are PyG's softmax over each node's incoming edges
    # Bessel functions would be ~1e-4 at r << cutoff. Built in float64: GaussianBasis computes its
    # centres in the default dtype (see test_gaussian_basis_keeps_float32_constants_after_to_float64)
    with default_dtype(torch.float64):
        att = make(cutoff=1e4, basis="gaussian")
    x, pos, edge_index = random_graph()
    edge_vec = edge_vectors(pos, edge_index)
    _, (_, alpha) = att(x, edge_index, edge_vec, return_attention_weights=True)
    _, logits, _ = edge_terms(att, x, edge_index, edge_vec, cutoff=1e4, basis="gaussian")
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
    f = polynomial_envelope(edge_vec.norm(dim=-1), CUTOFF)
    assert (f < 0.99).all()  # ~0.98: alpha = f differs from 1 and from f^2 by far more than the tolerance
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

    changes = cutoff_crossing(att, x, [torch.zeros(3, dtype=torch.float64), other], direction, CUTOFF)
    assert all(n_in == n_out + 2 and n_out == (0 if only_neighbour else 2) for n_in, n_out, _, _ in changes)
    changes = [c[2:] for c in changes]
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


@pytest.mark.slow
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
    double_backward_through_edges(att, "2x0e+1x1o")


def test_repr_and_weight_count():
    att = EquivariantTransformerConv("4x0e+2x1o", "4x0e+2x1o", irreps_sh=1, heads=2, key_dim=4)
    assert repr(att) == (
        "EquivariantTransformerConv(4x0e+2x1o -> 4x0e+2x1o | sh 1x0e+1x1o, 2 heads, cutoff=5, 5532 weights)"
    )
    # paths into 0e and 1o: 0e x 0e -> 0e, 0e x 1o -> 1o (4 weights each), 1o x 0e -> 1o, 1o x 1o -> 0e
    # (2 each; 1o x 1o -> 1e is no target): 12 per-edge weights, mid = 6x0e + 6x1o
    assert att.tp.weight_numel == 12 and att.irreps_mid.sort().irreps.simplify() == Irreps("6x0e+6x1o")
    counts = {
        "radial_mlp": 8 * 64 + 64 * 64 + 64 * 12,
        "query": 4 * 8,  # 4x0e -> (2 heads x 4)x0e
        "key": 6 * 8,  # mid 6x0e -> 8x0e
        "value": 6 * 4 + 6 * 2,  # mid -> 4x0e+2x1o
        "output": 4 * 4 + 2 * 2,  # mixes the heads
        "self_connection": 4 * 4 + 2 * 2,
    }
    for name, count in counts.items():
        assert sum(p.numel() for p in getattr(att, name).parameters()) == count, name
    assert sum(counts.values()) == sum(p.numel() for p in att.parameters()) == 5532


def attention_variance_parts(value_scale=lambda effective_degree: 1.0, draws: int = 6):
    """Mean squares per irrep of VARIANCE_IRREPS of the self-connection, the attention part and the output,
    and the attention part's expected value, over ``draws`` initialisations (``value_scale`` multiplies
    the value weights: the negative controls)."""
    pos = jittered_lattice()
    edge_index = radius_edges(pos, CUTOFF)
    edge_vec = edge_vectors(pos, edge_index)
    n = pos.shape[0]
    r = edge_vec.norm(dim=-1)
    f = polynomial_envelope(r, CUTOFF)
    f_sum = torch.zeros(n).index_add(0, edge_index[1], f)  # sum_k f_ik: the effective number of neighbours
    uniform_alpha = f**2 / f_sum[edge_index[1]]  # alpha at logits 0
    effective_degree = f_sum.mean().item()
    assert 6 < effective_degree < 12  # 8.0
    x = VARIANCE_IRREPS.randn(n, -1)
    parts = dict.fromkeys(("self", "attention", "total", "expected_attention"), 0.0)
    with torch.no_grad():
        for _ in range(draws):
            att = make(
                torch.float32, irreps_in=VARIANCE_IRREPS, irreps_out=VARIANCE_IRREPS, heads=4, key_dim=8,
                radial_hidden=64,
            )
            att.value.weight.mul_(value_scale(effective_degree))
            y, s = att(x, edge_index, edge_vec), att.self_connection(x)
            w2 = per_edge_weights(att, r).pow(2)  # from the formulas, not the layer
            values = output_block_means(w2, att.irreps_mid, VARIANCE_IRREPS)  # values' mean square per edge
            expected = (uniform_alpha[:, None] ** 2 * values).sum(dim=0) / n
            for key, value in (("self", mean_squares(s, VARIANCE_IRREPS)),
                               ("attention", mean_squares(y - s, VARIANCE_IRREPS)),
                               ("total", mean_squares(y, VARIANCE_IRREPS)), ("expected_attention", expected)):
                parts[key] = parts[key] + value / draws
    return parts


# the attention share over its "uniform attention" estimate: measured 0.99 to 1.25 (5 lattices), see below
ATTENTION_BAND = (0.8, 1.5)


def test_variance_at_init_self_connection_is_one_and_attention_share_matches_the_uniform_attention_estimate():
    """Unit-variance inputs on a jittered lattice (float32, 6 draws of the weights).

    Expected mean square per component of each output irrep, over the inputs and the initial weights:

    - self-connection: 1 (a Linear with N(0, 1) weights and 1/sqrt(fan_in) keeps unit variance).
    - attention part: sum_j alpha_ij^2 <v_ij^2>, averaged over the nodes i. The values' mean square is
      that of the per-edge weights w = MLP(B(r) f(r)) f(r) (the component-normalised tensor product and
      the Linear maps keep mean squares; see the EquivariantConv test), and values of distinct
      neighbours are uncorrelated. At init the logits are small (std ~0.12), so the attention is nearly
      uniform: alpha_ij ~ f_ij^2 / sum_k f_ik (sum_k f_ik ~ 8 here), and sum_j alpha_ij^2 ~ 0.05 on
      average: a weighted mean of many neighbours has a small fraction of their mean square. The test
      computes this estimate from the formulas: ~0.003 here (the values' mean square is ~0.015 on
      average, more on the short edges, which also get the larger weights). The measured share is 0 to
      25 % above it (seeds 0-4: ratios 0.99 to 1.25) because the logits vary most on the short edges,
      whose values are the largest (keys and values both grow with w), so the weights are a little
      uneven where it matters.
    - output: 1 + the attention share (independent zero-mean weights: no cross term).

    Bands: as for EquivariantConv, with the attention share over its estimate in ATTENTION_BAND.
    Values 2x too large, or summed without the softmax's denominator, miss it (negative controls below).
    Measured (seed 0): self-connection 1.01, 1.03, 0.99 (0e, 1o, 2e); attention 0.0038, 0.0040, 0.0039
    against expected 0.0033, 0.0034, 0.0034; output 1.02, 1.04, 1.00.
    """
    parts = attention_variance_parts()
    assert variance_band_failures(parts, "attention", ATTENTION_BAND) == [], parts
    expected = parts["expected_attention"]
    # not a degenerate comparison (measured 0.0024 to 0.0036); no upper bound (see the conv test)
    assert (expected > 0.0005).all(), expected


@pytest.mark.parametrize(
    "value_scale",
    [lambda degree: degree, lambda degree: math.sqrt(degree), lambda degree: 2.0],
    ids=["softmax_without_denominator", "convolution_normalisation_instead_of_softmax", "values_twice_too_large"],
)
def test_variance_bands_catch_a_wrong_attention_normalisation(value_scale):
    # negative controls, emulated through the value weights (the output is linear in them). At logits ~ 0,
    # - without the softmax's denominator, sum_j f_ij^2 e^a v_ij is the layer's output times
    #   sum_k f_ik e^a_ik ~ the effective degree D (~8): values x D, mean square ~D^2 (measured 74x to 90x);
    # - a convolution's sum_j f_ij v_ij / sqrt(D) instead of the softmax average: values x sqrt(D),
    #   mean square ~D (measured 9x to 11x);
    # - values 2x too large: 4x (measured 4.6x to 5.6x; even values x sqrt(2) give 2.3x to 2.8x, out of band).
    failures = variance_band_failures(attention_variance_parts(value_scale, draws=3), "attention", ATTENTION_BAND)
    assert sum(f.startswith("attention part") for f in failures) == len(VARIANCE_IRREPS), failures


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
