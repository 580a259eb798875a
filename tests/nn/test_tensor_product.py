import pytest
import torch

from eqgeo.nn import FullyConnectedTensorProduct, TensorProduct
from eqgeo.nn._tp import get_plan
from eqgeo.o3 import Irreps
from eqgeo.testing import assert_equivariant

from ._checks import compiles_without_graph_breaks, round_trips
from ..helpers import oracle


def nequip_like(irreps_in1, irreps_sh, mode="uvu", lmax=2, weight=True):
    """One instruction per (input irrep, harmonic, allowed output), each with its own block."""
    irreps_in1, irreps_sh = Irreps(irreps_in1), Irreps(irreps_sh)
    outs, ins = [], []
    for a, (m1, ir1) in enumerate(irreps_in1):
        for b, (m2, ir2) in enumerate(irreps_sh):
            if mode in ("uuu", "uuw") and m1 != m2:
                continue
            for ir in ir1 * ir2:
                if ir.l <= lmax:
                    mul = {"uvu": m1, "uvv": m2, "uuu": m1, "uvw": 3, "uuw": 2}[mode]
                    ins.append((a, b, len(outs), mode, weight or mode in ("uvw", "uuw")))
                    outs.append((mul, ir))
    return irreps_in1, irreps_sh, Irreps(outs), ins


CASES = {
    "uvu_sh": ("4x0e+3x1o+2x2e+2x0o", "0e+1o+2e", "uvu"),
    "uvu_multi": ("2x0e+2x1o", "3x0e+2x1e", "uvu"),
    "uvu_noweight": ("2x0e+2x1o", "0e+1o", "uvu"),
    "uvv": ("2x0e+1o", "3x0e+2x1o+2x2e", "uvv"),
    "uvw": ("4x0e+3x1o+2x2e", "0e+1o+2x1e", "uvw"),
    "uuu": ("3x0e+3x1o+3x2e", "3x0e+3x1o+3x2o", "uuu"),
    "uuw": ("3x0e+3x1o", "3x0e+3x1o", "uuw"),
}


def make(case, shared, implementation="fast"):
    i1, i2, mode = CASES[case]
    a, b, o, ins = nequip_like(i1, i2, mode, weight=case != "uvu_noweight")
    return TensorProduct(a, b, o, ins, shared_weights=shared, implementation=implementation)


def inputs(tp, batch=7, dtype=torch.float64):
    x1 = tp.irreps_in1.randn(batch, -1, dtype=dtype)
    x2 = tp.irreps_in2.randn(batch, -1, dtype=dtype)
    w = None if tp.shared_weights or tp.weight_numel == 0 else torch.randn(batch, tp.weight_numel, dtype=dtype)
    return x1, x2, w


def call(tp, x1, x2, w):
    return tp(x1, x2) if w is None else tp(x1, x2, w)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shared", [True, False])
def test_fast_equals_reference(case, shared):
    fast, ref = make(case, shared), make(case, shared, "reference")
    ref.load_state_dict(fast.state_dict())
    x1, x2, w = inputs(fast, batch=3000)  # several cache blocks
    for t in (x1, x2) + ((w,) if w is not None else ()):
        t.requires_grad_(True)
    y_f, y_r = call(fast, x1, x2, w), call(ref, x1, x2, w)
    assert (y_f - y_r).abs().max() < 1e-12
    g = torch.randn_like(y_f)
    params = [t for t in (x1, x2, w, fast.weight) if t is not None]
    params_r = [t for t in (x1, x2, w, ref.weight) if t is not None]
    for a, b in zip(torch.autograd.grad(y_f, params, g), torch.autograd.grad(y_r, params_r, g)):
        assert (a - b).abs().max() < 1e-11


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shared", [True, False])
def test_matches_e3nn(case, shared):
    e3nn_o3 = oracle("e3nn.o3")
    ours = make(case, shared)
    theirs = e3nn_o3.TensorProduct(
        str(ours.irreps_in1), str(ours.irreps_in2), str(ours.irreps_out),
        [(i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight) for i in ours.instructions],
        shared_weights=shared,
    )
    assert theirs.weight_numel == ours.weight_numel
    if ours.weight is not None:
        ours.weight.data.copy_(theirs.weight.data)  # e3nn's flat weights load directly
    x1, x2, w = inputs(ours, batch=50, dtype=torch.float32)
    torch.testing.assert_close(call(ours, x1, x2, w), call(theirs, x1, x2, w), atol=1e-5, rtol=1e-5)


def test_fully_connected_matches_e3nn():
    e3nn_o3 = oracle("e3nn.o3")
    args = ("3x0e+2x1o+1x2e", "2x0e+1x1o+1x2e", "4x0e+3x1o+2x1e+2x2e")
    ours, theirs = FullyConnectedTensorProduct(*args), e3nn_o3.FullyConnectedTensorProduct(*args)
    assert [(i.i_in1, i.i_in2, i.i_out) for i in ours.instructions] == [(i.i_in1, i.i_in2, i.i_out) for i in theirs.instructions]
    ours.load_state_dict({"weight": theirs.weight.detach().clone()})
    x1, x2 = Irreps(args[0]).randn(20, -1), Irreps(args[1]).randn(20, -1)
    torch.testing.assert_close(ours(x1, x2), theirs(x1, x2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["uvu_sh", "uvw", "uuu", "uvv"])
@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_equivariance(case, implementation, dtype):
    tp = make(case, shared=False, implementation=implementation)
    x1, x2, w = inputs(tp, batch=10, dtype=dtype)
    specs = [tp.irreps_in1, tp.irreps_in2, None]
    assert_equivariant(tp, [x1, x2, w], specs, [tp.irreps_out])


def test_unit_variance_at_init():
    torch.manual_seed(1)
    for tp in (make("uvu_sh", shared=False), make("uvw", shared=True),
               FullyConnectedTensorProduct("8x0e+8x1o+8x2e", "0e+1o+2e", "8x0e+8x1o+8x2e")):
        x1, x2, w = inputs(tp, batch=20000, dtype=torch.float32)
        if tp.weight is not None:  # average over several draws of the internal weights
            ys = []
            for k in range(50):  # many draws: a block may have only 3 output channels
                tp.reset_parameters()
                ys.append(tp(x1[400 * k : 400 * (k + 1)], x2[400 * k : 400 * (k + 1)]))
            y = torch.cat(ys)
        else:
            y = call(tp, x1, x2, w)
        for sl, (mul, ir) in zip(tp.irreps_out.slices(), tp.irreps_out):
            second_moment = y[:, sl].pow(2).mean().item()
            assert 0.8 < second_moment < 1.25, (tp, ir, second_moment)


def test_broadcasting_and_shapes():
    tp = make("uvu_sh", shared=False)
    x1 = tp.irreps_in1.randn(4, 1, -1)
    x2 = tp.irreps_in2.randn(1, 5, -1)
    w = torch.randn(4, 5, tp.weight_numel)
    y = tp(x1, x2, w)
    assert y.shape == (4, 5, tp.irreps_out.dim)
    torch.testing.assert_close(y[2, 3], tp(x1[2, 0], x2[0, 3], w[2, 3]))


@pytest.mark.slow
def test_compile_fullgraph_and_round_trips():
    tp = make("uvu_sh", shared=False)
    x1, x2, w = inputs(tp, batch=16, dtype=torch.float32)
    compiles_without_graph_breaks(tp, x1, x2, w)
    compiles_without_graph_breaks(make("uvu_sh", shared=False, implementation="reference"), x1, x2, w)
    tp_shared = make("uvw", shared=True)
    x1, x2, _ = inputs(tp_shared, batch=16, dtype=torch.float32)
    compiles_without_graph_breaks(tp_shared, x1, x2)
    round_trips(tp_shared, x1, x2)


@pytest.mark.parametrize("mode", ["uvu", "uvw", "uuw"])
def test_double_backward(mode):
    # small irreps: gradgradcheck differentiates numerically with respect to every input
    i2 = "2x0e+1x1o" if mode == "uuw" else "0e+1o"
    a, b, o, ins = nequip_like("2x0e+1x1o", i2, mode, lmax=1)
    tp = TensorProduct(a, b, o, ins, shared_weights=False)
    x1, x2, w = inputs(tp, batch=2)
    args = [t.requires_grad_(True) for t in (x1, x2, w)]
    torch.autograd.gradcheck(tp, args)
    torch.autograd.gradgradcheck(tp, args)


def test_repr_and_reset():
    tp = TensorProduct("8x0e+8x1o", "0e+1o", "8x1o", [(0, 1, 0, "uvu", True), (1, 0, 0, "uvu", True)])
    assert repr(tp) == "TensorProduct(8x0e+8x1o x 1x0e+1x1o -> 8x1o | 2 paths | 16 weights)"
    before = tp.weight.detach().clone()
    tp.reset_parameters()
    assert not torch.equal(before, tp.weight)
    assert tp.state_dict().keys() == {"weight"}  # 3j blocks are constants, not saved


def test_bad_input():
    tp = make("uvu_sh", shared=False)
    x1, x2, w = inputs(tp, batch=2)
    with pytest.raises(ValueError, match=r"x1 of irreps 4x0e\+3x1o\+2x2e\+2x0o \(dim 25\), got last dimension 24"):
        tp(x1[:, :-1], x2, w)
    with pytest.raises(ValueError, match="x2 of irreps"):
        tp(x1, x2[:, :-1], w)
    with pytest.raises(ValueError, match="weights"):
        tp(x1, x2, w[:, :-1])
    with pytest.raises(ValueError, match="no Clebsch-Gordan path"):
        TensorProduct("1o", "1o", "1o", [(0, 0, 0, "uvw", True)])  # 1o x 1o has no 1o
    with pytest.raises(ValueError, match="no Clebsch-Gordan path"):
        FullyConnectedTensorProduct("0e", "0e", "1o")
    with pytest.raises(ValueError, match="mode"):
        TensorProduct("0e", "0e", "0e", [(0, 0, 0, "uvx", True)])
    with pytest.raises(ValueError, match="out of range"):
        TensorProduct("0e", "0e", "0e", [(0, 1, 0, "uvw", True)])
    with pytest.raises(ValueError, match="mul_out == mul_in1"):
        TensorProduct("2x0e", "0e", "3x0e", [(0, 0, 0, "uvu", True)])


def test_plan_is_shared_between_identical_modules():
    a, b = make("uvw", shared=True), make("uvw", shared=True)
    assert a._key == b._key and get_plan(a._key) is get_plan(b._key)


def test_plan_built_while_tracing_holds_real_constants():
    # A compiler may reach the kernel first under fake tensors; the cached tables must stay real.
    from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

    from eqgeo.nn._tp import plan_key
    from eqgeo.nn._tp.instructions import build_instructions

    a, b, o, ins = nequip_like("3x0e+1x1o", "0e+1o", "uvu", lmax=1)
    # a configuration no module built yet (path weight 0.5), so the plan is made under fake mode
    key = plan_key(a, b, o, build_instructions(a, b, o, [i[:4] + (True, 0.5) for i in ins]), False)
    with FakeTensorMode():
        plan = get_plan(key)
    assert not is_fake(plan.groups[0].ct64)


def test_paths_summed_into_one_output_block():
    args = ("2x0e+2x1o", "0e+1o", "2x1o+2x0e", [(0, 1, 0, "uvu", True), (1, 0, 0, "uvu", True), (1, 1, 1, "uvu", False)])
    fast, ref = TensorProduct(*args, shared_weights=False), TensorProduct(*args, shared_weights=False, implementation="reference")
    x1, x2, w = inputs(fast, batch=100)
    w.requires_grad_(True)
    y_f, y_r = fast(x1, x2, w), ref(x1, x2, w)
    assert (y_f - y_r).abs().max() < 1e-12
    g = torch.randn_like(y_f)
    (a,), (b,) = torch.autograd.grad(y_f, [w], g), torch.autograd.grad(y_r, [w], g)
    assert (a - b).abs().max() < 1e-12
