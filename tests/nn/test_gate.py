import copy
import doctest
import io
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from eqgeo.nn.gate import Gate, Normalize2Mom, activation_parity, second_moment
from eqgeo.o3 import Irreps
from eqgeo.testing import assert_equivariant
from ..helpers import oracle

# (irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated, expected irreps_out)
CONFIGS = {
    "plain": ("8x0e", [F.silu], "4x0e", [torch.sigmoid], "4x1o", "8x0e+4x1o"),
    "parity": (
        "4x0e+2x0o",
        [torch.relu, torch.abs],
        "3x0e+2x0o",
        [torch.sigmoid, torch.tanh],
        "2x1o+2x1o+1x2e",
        "4x0e+2x0e+3x1o+1x1e+1x2o",
    ),
    "odd": ("3x0o", [torch.tanh], "2x0o+3x0e", [torch.tanh, F.silu], "2x1e+1x2o+2x3o", "3x0o+2x1o+1x2o+2x3o"),
    "gates_only": ("", [], "2x0e+2x0o", [torch.sigmoid, torch.tanh], "2x1o+2x1e", "2x1o+2x1o"),
    "scalars_only": ("2x0e+3x0o", [F.gelu, torch.tanh], "", [], "", "2x0e+3x0o"),
}


def make(name):
    s, a_s, g, a_g, gated, _ = CONFIGS[name]
    return Gate(s, a_s, g, a_g, gated)


# ----------------------------------------------------------------------------- activations
def test_second_moment_closed_forms():
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    assert second_moment(torch.relu) == pytest.approx(0.5, abs=1e-13)
    assert second_moment(torch.abs) == pytest.approx(1.0, abs=1e-13)
    assert second_moment(lambda x: x**2) == pytest.approx(3.0, abs=1e-12)
    assert second_moment(lambda x: torch.exp(x)) == pytest.approx(math.e**2, rel=1e-12)
    # kinks at +-1: E[clamp(z, -1, 1)^2] = 1 - 2 phi(1)
    assert second_moment(F.hardtanh) == pytest.approx(1 - 2 * phi1, abs=1e-13)


def test_normalize2mom_is_deterministic_and_normalised():
    a, b = Normalize2Mom(F.silu), Normalize2Mom(F.silu)
    assert a.cst == b.cst
    assert second_moment(a) == pytest.approx(1.0, abs=1e-12)
    assert Normalize2Mom(torch.relu).cst == pytest.approx(math.sqrt(2), abs=1e-12)
    with pytest.raises(ValueError, match="second moment"):
        Normalize2Mom(torch.zeros_like)


def test_normalize2mom_accepts_modules_with_float32_parameters():
    act = torch.nn.PReLU(init=0.25)
    n = Normalize2Mom(act)
    assert n.cst == pytest.approx((0.5 + 0.5 * 0.25**2) ** -0.5, rel=1e-6)
    assert activation_parity(act) == 0


@pytest.mark.parametrize(
    "f, parity", [(torch.tanh, -1), (torch.abs, 1), (torch.cos, 1), (torch.sigmoid, 0), (F.silu, 0), (torch.sin, -1)]
)
def test_activation_parity(f, parity):
    assert activation_parity(f) == parity


# ----------------------------------------------------------------------------- construction
def test_repr_and_irreps():
    g = make("plain")
    assert repr(g) == "Gate(8x0e+4x0e+4x1o -> 8x0e+4x1o)"
    assert g.irreps_in == Irreps("8x0e+4x0e+4x1o") and g.irreps_out == Irreps("8x0e+4x1o")
    assert "\n" not in repr(make("parity"))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_irreps_out_parity_rules(name):
    assert make(name).irreps_out == Irreps(CONFIGS[name][-1])


def test_single_callable_applies_to_every_entry():
    g = Gate("2x0e+1x0o", torch.tanh, "1x0e+1x0o", torch.tanh, "1x1o+1x2e")
    assert g.irreps_out == Irreps("2x0e+1x0o+1x1o+1x2o")


def test_odd_scalar_with_neither_even_nor_odd_activation_is_refused():
    with pytest.raises(ValueError, match=r"2x0o.*sigmoid.*neither even nor odd"):
        Gate("4x0e+2x0o", [torch.relu, torch.sigmoid], "", [], "")
    with pytest.raises(ValueError, match=r"irreps_gates 3x0o.*silu"):
        Gate("", [], "3x0o", [F.silu], "3x1o")


def test_construction_errors_name_the_irreps():
    with pytest.raises(ValueError, match=r"irreps_gated = 4x1o has 4 copies but irreps_gates = 3x0e has 3"):
        Gate("8x0e", F.silu, "3x0e", torch.sigmoid, "4x1o")
    with pytest.raises(ValueError, match=r"irreps_scalars must be scalars.*8x0e\+1x1o"):
        Gate("8x0e+1x1o", [F.silu, None], "", [], "")
    with pytest.raises(ValueError, match=r"irreps_gates must be scalars.*2x1e"):
        Gate("", [], "2x1e", [None], "2x1o")
    with pytest.raises(ValueError, match=r"irreps_scalars has 2 entries \(8x0e\+2x0o\) but 1 activations"):
        Gate("8x0e+2x0o", [F.silu], "", [], "")


def test_bad_feature_dimension():
    g = make("plain")
    message = r"Gate expects features of irreps 8x0e\+4x0e\+4x1o \(dim 24\), got last dimension 23"
    with pytest.raises(ValueError, match=message):
        g(torch.randn(5, 23))


# ----------------------------------------------------------------------------- values
def test_values_match_the_definition(dtype):
    g = Gate("3x0e+2x0o", [F.silu, torch.abs], "1x0e+2x0o", [torch.sigmoid, torch.tanh], "1x1o+2x2e").to(dtype)
    x = g.irreps_in.randn(6, -1, dtype=dtype)
    c = {f: second_moment(f) ** -0.5 for f in (F.silu, torch.abs, torch.sigmoid, torch.tanh)}
    s, gates, v, t = x[:, :5], x[:, 5:8], x[:, 8:11], x[:, 11:21].reshape(6, 2, 5)
    expected = torch.cat(
        [
            c[F.silu] * F.silu(s[:, :3]),
            c[torch.abs] * s[:, 3:].abs(),
            c[torch.sigmoid] * torch.sigmoid(gates[:, :1]) * v,
            (c[torch.tanh] * torch.tanh(gates[:, 1:, None]) * t).reshape(6, 10),
        ],
        dim=-1,
    )
    torch.testing.assert_close(g(x), expected)


def test_merged_runs_and_gathered_gates_match_the_definition():
    # adjacent entries with the same activation are one call, entries with mul 0 are skipped, and all
    # gated copies are multiplied at once by their gates
    g = Gate("2x0e+3x0e+0x0e+1x0o", [F.silu, F.silu, F.silu, torch.tanh], "2x0e+1x0e", [torch.sigmoid, torch.sigmoid],
             "0x1o+2x1o+1x2e").double()
    assert [r[:2] for r in g._scalar_runs] == [(0, 5), (5, 6)] and [r[:2] for r in g._gate_runs] == [(6, 9)]
    x = g.irreps_in.randn(7, -1, dtype=torch.float64)
    c = {f: second_moment(f) ** -0.5 for f in (F.silu, torch.sigmoid, torch.tanh)}
    gates = c[torch.sigmoid] * torch.sigmoid(x[:, 6:9])
    expected = torch.cat([c[F.silu] * F.silu(x[:, :5]), c[torch.tanh] * torch.tanh(x[:, 5:6]),
                          (x[:, 9:15].reshape(7, 2, 3) * gates[:, :2, None]).reshape(7, 6), x[:, 15:20] * gates[:, 2:]], -1)
    torch.testing.assert_close(g(x), expected, atol=1e-14, rtol=0)
    # negative control: gates applied to the wrong copies
    swapped = expected.clone()
    swapped[:, 6:12] = (x[:, 9:15].reshape(7, 2, 3) * gates[:, [1, 0], None]).reshape(7, 6)
    assert (g(x) - swapped).abs().max() > 1e-3


def test_leading_dimensions_and_empty_batch():
    g = make("parity")
    x = g.irreps_in.randn(2, 3, -1)
    torch.testing.assert_close(g(x), g(x.reshape(6, -1)).reshape(2, 3, -1), rtol=0, atol=0)
    assert g(x[:0, 0]).shape == (0, g.irreps_out.dim)


# ----------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("name", list(CONFIGS))
def test_equivariance(name, dtype, tol):
    g = make(name).to(dtype)
    x = g.irreps_in.randn(10, -1, dtype=dtype)
    assert_equivariant(g, [x], [g.irreps_in], [g.irreps_out], tolerance=tol, ntrials=3)


def test_wrong_parity_bookkeeping_would_be_caught():
    # negative control: the same function declared with the parities e3nn would not give fails.
    g = Gate("2x0o", [torch.abs], "1x0o", [torch.tanh], "1x1o")
    x = g.irreps_in.randn(10, -1, dtype=torch.float64)
    assert_equivariant(g, [x], [g.irreps_in], [g.irreps_out])
    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(g, [x], [g.irreps_in], ["2x0o+1x1o"])


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("name", ["plain", "parity", "odd"])
def test_unit_second_moment_at_init(name):
    g = make(name)
    y = g(torch.randn(100_000, g.irreps_in.dim))
    for sl, (mul, ir) in zip(g.irreps_out.slices(), g.irreps_out):
        m2 = y[:, sl].pow(2).mean().item()
        assert 0.9 < m2 < 1.1, f"{mul}x{ir}: second moment {m2}"


# ----------------------------------------------------------------------------- autograd, compile, copies
def test_double_backward():
    g = Gate("2x0e+1x0o", [F.silu, torch.tanh], "1x0e+1x0o", [torch.sigmoid, torch.tanh], "1x1o+1x2e").double()
    x = g.irreps_in.randn(3, -1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (x,))
    assert torch.autograd.gradgradcheck(g, (x,))


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    g = make("parity")
    x = g.irreps_in.randn(7, -1)
    compiled = torch.compile(g, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), g(x))
    explanation = torch._dynamo.explain(g)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_deepcopy_pickle_and_state_dict_round_trip():
    g = make("parity")
    x = g.irreps_in.randn(4, -1)
    for other in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        assert repr(other) == repr(g)
        torch.testing.assert_close(other(x), g(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(g.state_dict(), buffer)
    buffer.seek(0)
    fresh = make("parity")
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x), g(x), rtol=0, atol=0)


def test_module_activation_parameters_are_registered():
    act = torch.nn.PReLU(init=0.1)
    g = Gate("3x0e", [act], "", [], "")
    assert [n for n, _ in g.named_parameters()] == ["act_scalars.0.f.weight"]


# ----------------------------------------------------------------------------- e3nn oracle
def _e3nn_layout(gate: Gate, x: torch.Tensor) -> torch.Tensor:
    """Our concatenated input reordered to e3nn's sorted ``irreps_in`` layout."""
    slices = gate.irreps_in.slices()
    return torch.cat([x[..., slices[i]] for i in gate.irreps_in.sort().inv], dim=-1)


def _use_our_constants(e3nn_act, ours):
    for a, b in zip(e3nn_act.acts, ours):
        if isinstance(b, Normalize2Mom):
            assert a.cst == pytest.approx(b.cst, rel=5e-3)  # e3nn: Monte Carlo on 10^6 samples
            a.cst, a._is_id = b.cst, False


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_e3nn(name):
    e3nn_nn = oracle("e3nn.nn")
    s, a_s, gts, a_g, gated, _ = CONFIGS[name]
    ours = Gate(s, a_s, gts, a_g, gated).double()
    theirs = e3nn_nn.Gate(s, a_s, gts, a_g, gated).double()
    assert str(theirs.irreps_out) == str(ours.irreps_out)
    assert str(theirs.irreps_in) == str(ours.irreps_in.sort().irreps.simplify())
    _use_our_constants(theirs.act_scalars, ours.act_scalars)
    _use_our_constants(theirs.act_gates, ours.act_gates)
    x = ours.irreps_in.randn(20, -1, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(_e3nn_layout(ours, x)), rtol=1e-12, atol=1e-12)


def test_docstring_examples():
    import eqgeo.nn.gate as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
