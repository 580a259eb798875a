import math

import pytest
import torch

from eqgeo.nn import ManyBodyProduct
from eqgeo.o3 import Irreps
from eqgeo.testing import Nodes, assert_equivariant

from ..helpers import oracle
from ._checks import compiles_without_graph_breaks, round_trips
from ._reference import default_dtype, e3nn_linear

IRREPS = "4x0e+4x1o+4x2e+4x1e"  # 1e only through 1o x 1o, 1o x 2e, ...: parity and odd couplings are exercised


def make(dtype=torch.float64, irreps=IRREPS, correlation=3, num_types=3) -> ManyBodyProduct:
    torch.manual_seed(0)
    return ManyBodyProduct(irreps, correlation=correlation, num_types=num_types).to(dtype)


def features(n, irreps=IRREPS, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, Irreps(irreps).dim, generator=g, dtype=dtype)
    types = torch.randint(0, 3, (n,), generator=g)
    return x, types


def test_equivariance_rotation_reflection_permutation(dtype):
    product = make(dtype)
    x, types = features(7, dtype=dtype)
    errors = assert_equivariant(product, [x, types], [Nodes(IRREPS), Nodes(None)], [Nodes(IRREPS)], ntrials=2)
    assert set(errors) == {"rotation", "reflection", "permutation"}


def test_equivariance_check_catches_a_product_in_the_wrong_basis():
    """Negative control: the same product applied to features whose l=1 entries are read in the
    order (y, z, x) (a basis the Clebsch-Gordan coefficients are not written in) is not equivariant."""
    product = make()
    x, types = features(7)
    perm = torch.arange(Irreps(IRREPS).dim)
    for s, (mul, ir) in zip(Irreps(IRREPS).slices(), Irreps(IRREPS)):
        if ir.l == 1:
            block = perm[s].reshape(mul, 3)[:, [1, 2, 0]].reshape(-1)
            perm[s] = block
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(lambda x, t: product(x[:, perm], t), [x, types], [Nodes(IRREPS), Nodes(None)], [Nodes(IRREPS)])


def test_scalar_features_give_the_polynomial_of_the_definition():
    """On scalars (0e x 0e -> 0e, Clebsch-Gordan 1, one path per output) the recursion is a polynomial per
    channel: y = Linear(v1 x + v2 W2 x^2 + v3 W3 W2 x^3), weights of the atom's species."""
    product = make(irreps="5x0e", num_types=2)
    with torch.no_grad():
        product.degree_weight.normal_()  # not the initial ones: each degree's weight is checked
    x = torch.randn(6, 5, dtype=torch.float64)
    types = torch.tensor([0, 1, 1, 0, 1, 0])
    v1, v2, v3 = product.degree_weight[types].unbind(1)
    w2, w3 = (w[types] for w in product.product_weights)
    inner = v1 * x + v2 * w2 * x**2 + v3 * w3 * w2 * x**3
    expected = inner @ product.linear.weight.reshape(5, 5) / math.sqrt(5)
    torch.testing.assert_close(product(x, types), expected)
    # control: the weights of the other species give another output
    other = product(x, 1 - types)
    assert (other - expected).abs().max() > 1e-2 * expected.abs().max()


def test_matches_e3nn_tensor_products_and_linear():
    """The recursion written with e3nn 0.6's TensorProduct and Linear loaded with the module's weights."""
    e3nn_o3 = oracle("e3nn.o3")
    product = make()
    with torch.no_grad():
        product.degree_weight.normal_()
    x, types = features(9)
    irs = [ir for _, ir in Irreps(IRREPS)]
    instructions = [(i, j, o, "uuu", True) for i, a in enumerate(irs) for j, b in enumerate(irs)
                    for o, c in enumerate(irs) if c in list(a * b)]
    with default_dtype(torch.float64):
        tp = e3nn_o3.TensorProduct(IRREPS, IRREPS, IRREPS, instructions, shared_weights=False, internal_weights=False)
    index = torch.tensor([b * 4 + u for b, (mul, ir) in enumerate(Irreps(IRREPS)) for u in range(mul) for _ in range(ir.dim)])
    degree = product.degree_weight[types]
    out = x * degree[:, 0, index]
    a = x
    for nu, w in enumerate(product.product_weights, start=1):
        a = tp(a, x, w[types])
        out = out + a * degree[:, nu, index]
    expected = e3nn_linear(e3nn_o3, IRREPS, IRREPS, product.linear.weight)(out)
    torch.testing.assert_close(product(x, types), expected)


def test_body_order_is_the_correlation():
    """y(s x) is a polynomial of degree `correlation` in s: its finite differences of that order are
    constant and of the next order vanish (control: the order below does not vanish)."""
    for correlation in (1, 2, 3):
        product = make(correlation=correlation)
        x, types = features(5)
        ys = torch.stack([product(s * x, types) for s in torch.arange(correlation + 2, dtype=torch.float64)])
        diffs = [ys]
        for _ in range(correlation + 1):
            diffs.append(diffs[-1][1:] - diffs[-1][:-1])
        scale = ys.abs().max()
        assert diffs[correlation + 1].abs().max() < 1e-9 * scale
        assert diffs[correlation].abs().max() > 1e-3 * scale


def test_each_atom_uses_only_its_own_features_and_species():
    product = make()
    x, types = features(6)
    y = product(x, types)
    x2, types2 = x.clone(), types.clone()
    x2[3:] = torch.randn_like(x2[3:])
    types2[3:] = (types2[3:] + 1) % 3
    y2 = product(x2, types2)
    torch.testing.assert_close(y2[:3], y[:3])
    assert (y2[3:] - y[3:]).abs().max() > 1e-2


def test_compiles_without_graph_breaks_and_round_trips():
    product = make(torch.float32)
    x, types = features(6, dtype=torch.float32)
    compiles_without_graph_breaks(product, x, types)
    round_trips(product, x, types)


def test_double_backward():
    product = make(irreps="2x0e+2x1o", num_types=2)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    types = torch.tensor([0, 1, 0])
    torch.autograd.gradcheck(lambda x: product(x, types), (x,))
    torch.autograd.gradgradcheck(lambda x: product(x, types), (x,))


def test_repr_and_weight_count():
    product = ManyBodyProduct("8x0e+8x1o", correlation=3, num_types=2)
    # degree weights 2 types x 3 degrees x 16; paths 0e0e->0e, 0e1o->1o, 1o0e->1o, 1o1o->0e: 4 x 8 per type and
    # degree above 1 (2 x 2 x 32); the Linear: 8 x 8 per irrep (128)
    assert product.weight_numel == 96 + 128 + 128
    assert repr(product) == "ManyBodyProduct(8x0e+8x1o -> 8x0e+8x1o | correlation 3, 2 types, 352 weights)"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(irreps="8x0e+4x1o"), "one multiplicity"),
        (dict(irreps="8x0e+8x0e"), "appear once"),
        (dict(irreps="8x0e", correlation=0), "correlation must be an integer >= 1"),
        (dict(irreps="8x0e", num_types=0), "num_types must be an integer >= 1"),
    ],
)
def test_bad_construction_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ManyBodyProduct(**kwargs)


def test_bad_inputs_are_named():
    product = make()
    x, types = features(4)
    with pytest.raises(ValueError, match=r"expects features of irreps 4x0e\+4x1o\+4x2e\+4x1e \(dim 48\)"):
        product(x[:, :10], types)
    with pytest.raises(ValueError, match="pass types"):
        product(x)
    with pytest.raises(ValueError, match=r"types must have shape \(4,\)"):
        product(x, types[:3])
