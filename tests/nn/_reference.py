"""Independent references for the layer tests: graphs, the radial basis, envelope and MLP written
from their formulas, e3nn (the oracle) for harmonics, tensor products and linear maps, and the
moments the variance tests compare against. Nothing here calls the layers' own parts."""

import contextlib
import math

import torch
import torch.nn.functional as F

from eqgeo.o3 import Irreps

IN = "4x0e+2x1o+2x1e+1x2e"  # node irreps of the layer tests
CUTOFF = 3.0


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


def bessel_basis(r: torch.Tensor, num: int, cutoff: float, prefactor: bool = True) -> torch.Tensor:
    """``sqrt(2/c) sin(n pi r / c) / r``, n = 1..num (DimeNet, NequIP); ``r > 0``."""
    n = torch.arange(1, num + 1, dtype=r.dtype)
    scale = math.sqrt(2.0 / cutoff) if prefactor else 1.0
    return scale * torch.sin(n * math.pi * r[:, None] / cutoff) / r[:, None]


def gaussian_basis(r: torch.Tensor, num: int, cutoff: float) -> torch.Tensor:
    """``exp(-(r - mu_k)^2 / (2 s^2))``, centres ``mu_k`` evenly spaced on [0, c], ``s`` their spacing."""
    mu = torch.linspace(0.0, cutoff, num, dtype=r.dtype)
    s = cutoff / (num - 1)
    return torch.exp(-0.5 * ((r[:, None] - mu) / s) ** 2)


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: float = 6.0) -> torch.Tensor:
    """NequIP's ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r/c < 1``; 0 beyond."""
    x = (r / cutoff).clamp(max=1.0)
    poly = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return torch.where(r < cutoff, poly, torch.zeros_like(poly))


def silu_second_moment() -> float:
    """``E[silu(z)^2]``, ``z ~ N(0, 1)``: the trapezoid rule on [-14, 14] (spectrally accurate for this
    smooth, fast-decaying integrand; independent of eqgeo's quadrature and of e3nn's sampling)."""
    z = torch.linspace(-14.0, 14.0, 28001, dtype=torch.float64)
    return torch.trapezoid(F.silu(z) ** 2 * torch.exp(-0.5 * z**2), z).item() / math.sqrt(2 * math.pi)


def radial_mlp(weights, h: torch.Tensor, activation_constant: bool = True) -> torch.Tensor:
    """e3nn's ``FullyConnectedNet`` maths with the given matrices: ``h <- phi(h W / sqrt(fan_in))``, no
    biases, ``phi = silu / sqrt(E[silu(z)^2])``, no activation after the last layer."""
    c = silu_second_moment() ** -0.5 if activation_constant else 1.0
    for k, w in enumerate(weights):
        h = h @ w.detach().to(h.dtype) / math.sqrt(w.shape[0])
        if k < len(weights) - 1:
            h = c * F.silu(h)
    return h


def per_edge_weights(layer, r: torch.Tensor, *, num_radial=8, cutoff=CUTOFF, basis="bessel", p=6.0, mistake=None):
    """``MLP(basis(r) f(r)) f(r)``: the tensor product's weights of each edge."""
    env_p = 5.0 if mistake == "envelope_p" else p
    f = polynomial_envelope(r, cutoff, env_p)
    if basis == "bessel":
        b = bessel_basis(r, num_radial, cutoff, prefactor=mistake != "bessel_prefactor")
    else:
        b = gaussian_basis(r, num_radial, cutoff)
    return radial_mlp(layer.radial_mlp.weights, b * f[:, None], mistake != "activation_constant") * f[:, None]


def nequip_paths(e3nn_o3, irreps_in, irreps_sh, targets, mistake=None):
    """One ``uvu`` path (own output block) per input irrep, harmonic and product irrep among ``targets``."""
    irreps_in, irreps_sh = e3nn_o3.Irreps(str(irreps_in)), e3nn_o3.Irreps(str(irreps_sh))
    paths = [
        (i, j, mul, ir_out)
        for i, (mul, ir_in) in enumerate(irreps_in)
        for j, (_, ir_sh) in enumerate(irreps_sh)
        for ir_out in ir_in * ir_sh
        if str(ir_out) in {str(t) for t in targets}
    ]
    if mistake == "path_order":
        paths.sort(key=lambda path: (path[3].l, path[3].p))
    instructions = [(i, j, k, "uvu", True) for k, (i, j, _, _) in enumerate(paths)]
    return e3nn_o3.Irreps([(mul, ir) for _, _, mul, ir in paths]), instructions


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """e3nn computes its Clebsch-Gordan tables in the default dtype: build its modules in the test's
    dtype (tables converted from float32 afterwards are only 1e-7 accurate)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def edge_messages(e3nn_o3, layer, x_j, edge_vec, targets, *, mistake=None, **radial):
    """``x_j (x)_w Y(r_ij)`` per edge with e3nn's tensor product and harmonics: ``(messages, irreps_mid)``."""
    irreps_sh = e3nn_o3.Irreps(str(layer.irreps_sh))
    normalization = "norm" if mistake == "harmonics_norm" else "component"
    sh = e3nn_o3.spherical_harmonics(irreps_sh, edge_vec, normalize=True, normalization=normalization)
    if mistake == "l1_order":
        l1 = irreps_sh.slices()[[ir.l for _, ir in irreps_sh].index(1)]
        sh = torch.cat([sh[:, : l1.start], sh[:, l1][:, [1, 2, 0]], sh[:, l1.stop :]], dim=1)
    irreps_mid, instructions = nequip_paths(e3nn_o3, layer.irreps_in, irreps_sh, targets, mistake)
    with default_dtype(x_j.dtype):
        tp = e3nn_o3.TensorProduct(
            str(layer.irreps_in), irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
    w = per_edge_weights(layer, edge_vec.norm(dim=-1), mistake=mistake, **radial)
    return tp(x_j, sh, w), irreps_mid


def e3nn_linear(e3nn_o3, irreps_in, irreps_out, weight: torch.Tensor):
    """e3nn's ``o3.Linear`` loaded with a flat weight vector (eqgeo's layout is e3nn's)."""
    with default_dtype(weight.dtype):
        lin = e3nn_o3.Linear(str(irreps_in), str(irreps_out))
    assert lin.weight_numel == weight.numel()
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


VARIANCE_IRREPS = Irreps("16x0e+8x1o+8x2e")  # >= 8 channels per irrep: the weight draws' noise stays small


def jittered_lattice(side: int = 6, spacing: float = 1.5, jitter: float = 0.5) -> torch.Tensor:
    """A cubic lattice moved by up to +-jitter/2 per coordinate: atoms no closer than ~1, as in matter.

    (Uniformly random points put some pairs at r ~ 0.01, where the Bessel features are ~6: those few
    edges then dominate every moment and make the numbers erratic from seed to seed.)
    """
    g = torch.arange(side, dtype=torch.float32) * spacing
    return torch.cartesian_prod(g, g, g) + (torch.rand(side**3, 3) - 0.5) * jitter


def output_block_means(per_edge: torch.Tensor, irreps_mid, irreps_out) -> torch.Tensor:
    """``(num_edges, len(irreps_out))``: per edge, the mean of ``per_edge``'s columns (one per channel of
    ``irreps_mid``) over the mid blocks of each output irrep, the channel-weighted mean a ``Linear``
    mid -> out with unit-normal weights and ``1/sqrt(fan_in)`` takes at initialisation."""
    out_irs = [str(ir) for _, ir in irreps_out]
    total = per_edge.new_zeros(per_edge.shape[0], len(out_irs))
    fan_in = per_edge.new_zeros(len(out_irs))
    start = 0
    for mul, ir in irreps_mid:
        if str(ir) in out_irs:
            o = out_irs.index(str(ir))
            total[:, o] += per_edge[:, start : start + mul].sum(dim=1)
            fan_in[o] += mul
        start += mul
    return total / fan_in


def mean_squares(y: torch.Tensor, irreps) -> torch.Tensor:
    return torch.stack([y[:, sl].pow(2).mean() for sl in irreps.slices()])


def variance_band_failures(parts, share: str = "conv", share_band=(0.8, 1.25)) -> list[str]:
    """The bands of the variance tests that ``parts`` misses (empty: all met), per irrep.

    Bands: self-connection 1 within [0.7, 1.35] (3.4 standard deviations of 4 draws of 8x8 weights);
    the share over its expected value within ``share_band`` (for the convolution measured 0.91 to 1.04
    over 6 lattices); total over 1 + expected share within [0.7, 1.35].
    """
    failures = []
    for o, (_, ir) in enumerate(VARIANCE_IRREPS):
        s, c, t, e = (float(parts[k][o]) for k in ("self", share, "total", f"expected_{share}"))
        if not 0.7 < s < 1.35:
            failures.append(f"self-connection {ir}: mean square {s:.3f}, expected 1")
        if not share_band[0] < c / e < share_band[1]:
            failures.append(f"{share} part {ir}: mean square {c:.4g}, expected {e:.4g} (ratio {c / e:.3g})")
        if not 0.7 < t / (1 + e) < 1.35:
            failures.append(f"output {ir}: mean square {t:.3f}, expected {1 + e:.3f}")
    return failures
