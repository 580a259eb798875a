import pytest
import torch

from eqgeo.nn import Linear
from eqgeo.o3 import Irreps
from eqgeo.testing import assert_equivariant

from ._checks import compiles_without_graph_breaks, round_trips
from ..helpers import oracle

IN, OUT = "16x0e+8x1o+3x0e+2x2e+2x1e", "8x0e+8x1o+4x1e+1x2e+3x0o"


def test_matches_e3nn_with_its_weights():
    e3nn_o3 = oracle("e3nn.o3")
    for biases in (False, True):
        ours, theirs = Linear(IN, OUT, biases=biases), e3nn_o3.Linear(IN, OUT, biases=biases)
        assert ours.weight_numel == theirs.weight_numel
        ours.weight.data.copy_(theirs.weight.data)
        if biases:
            theirs.bias.data.normal_()
            ours.bias.data.copy_(theirs.bias.data)
        x = Irreps(IN).randn(10, -1)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_per_sample_weights_match_e3nn():
    e3nn_o3 = oracle("e3nn.o3")
    ours = Linear(IN, OUT, shared_weights=False)
    theirs = e3nn_o3.Linear(IN, OUT, shared_weights=False, internal_weights=False)
    x, w = Irreps(IN).randn(6, -1), torch.randn(6, ours.weight_numel)
    torch.testing.assert_close(ours(x, w), theirs(x, w), atol=1e-5, rtol=1e-5)


def test_only_equal_irreps_mix_and_equivariance(dtype):
    lin = Linear(IN, OUT, biases=True).to(dtype)
    with torch.no_grad():
        lin.bias.normal_()
    assert_equivariant(lin, [Irreps(IN).randn(10, -1, dtype=dtype)], [IN], [OUT])
    M = lin.dense_matrix()
    si, so = Irreps(IN).slices(), Irreps(OUT).slices()
    for i, (_, ir_i) in enumerate(Irreps(IN)):
        for o, (_, ir_o) in enumerate(Irreps(OUT)):
            if ir_i != ir_o:
                assert (M[si[i], so[o]] == 0).all()
    y = lin(torch.zeros(1, Irreps(IN).dim, dtype=dtype))
    assert (y[0, Irreps(OUT).slices()[-1]] == 0).all()  # 3x0o gets no input and no bias


def test_unit_variance_and_repr():
    lin = Linear("64x0e+32x1o", "32x0e+16x1o")
    assert repr(lin) == "Linear(64x0e+32x1o -> 32x0e+16x1o | 2560 weights)"
    ys = []
    for _ in range(10):
        lin.reset_parameters()
        ys.append(lin(Irreps("64x0e+32x1o").randn(2000, -1)))
    y = torch.cat(ys)
    assert 0.85 < y[:, :32].pow(2).mean() < 1.15 and 0.85 < y[:, 32:].pow(2).mean() < 1.15


@pytest.mark.slow
def test_compile_double_backward_round_trips():
    lin = Linear(IN, OUT, biases=True)
    x = Irreps(IN).randn(5, -1)
    compiles_without_graph_breaks(lin, x)
    round_trips(lin, x)
    lin64 = Linear("2x0e+1o", "1x0e+2x1o").double()
    x = Irreps("2x0e+1o").randn(3, -1, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradgradcheck(lambda v: lin64(v).pow(2), (x,))


def test_bad_input():
    lin = Linear(IN, OUT)
    with pytest.raises(ValueError, match=r"irreps 16x0e.*\(dim 59\), got last dimension 60"):
        lin(torch.randn(2, 60))
    with pytest.raises(ValueError, match="shared_weights"):
        Linear(IN, OUT, internal_weights=True, shared_weights=False)
