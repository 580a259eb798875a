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


def _kron_matrix(lin: Linear, weight: torch.Tensor) -> torch.Tensor:
    """The map's matrix written from its definition: kron(W / sqrt(fan_in), I_d) per path."""
    M = weight.new_zeros(lin.irreps_in.dim, lin.irreps_out.dim)
    si, so = lin.irreps_in.slices(), lin.irreps_out.slices()
    fan_in = {o: sum(lin.irreps_in[i].mul for i, oo in lin.instructions if oo == o) for _, o in lin.instructions}
    off = 0
    for i, o in lin.instructions:
        (mi, ir), mo = lin.irreps_in[i], lin.irreps_out[o].mul
        W = weight[off : off + mi * mo].view(mi, mo) / fan_in[o] ** 0.5
        M[si[i], so[o]] += torch.kron(W, torch.eye(ir.dim, dtype=weight.dtype))
        off += mi * mo
    return M


@pytest.mark.parametrize("rows", [3, 4000])  # below and above the block-product threshold
def test_dense_and_block_products_match_e3nn_and_the_definition(rows):
    e3nn_o3 = oracle("e3nn.o3")
    ours, theirs = Linear(IN, OUT).double(), e3nn_o3.Linear(IN, OUT).double()
    ours.weight.data.copy_(theirs.weight.data)
    x = Irreps(IN).randn(rows, -1, dtype=torch.float64)
    assert ours._use_blocks(x) == (rows == 4000)
    M = _kron_matrix(ours, ours.weight.detach())
    torch.testing.assert_close(ours.dense_matrix(), M, atol=1e-15, rtol=0)
    torch.testing.assert_close(ours(x), x @ M, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours._block_product(x[:5], ours.weight), x[:5] @ M, atol=1e-12, rtol=1e-12)
    # negative control: the definition without the path normalisation is far off
    bad = _kron_matrix(ours, ours.weight.detach()) * Irreps(IN)[0].mul ** 0.5
    assert (ours(x) - x @ bad).abs().max() > 0.1


def test_path_scales_stay_float64_through_dtype_changes():
    lin = Linear("3x0e+2x1o", "2x0e+1x1o").float().double()
    assert lin._matrix_scale.dtype == torch.float64
    torch.testing.assert_close(lin.dense_matrix(), _kron_matrix(lin, lin.weight.detach()), atol=1e-14, rtol=0)  # float32 scales: ~1e-8


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
