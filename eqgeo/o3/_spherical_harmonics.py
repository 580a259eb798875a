"""Real spherical harmonics in e3nn's basis, for any degree.

The basis is defined by the recursion

.. math::

    Y^{l+1}_c(x) = a_l \\sum_{a,b} C^{(l,1,l+1)}_{abc}\\, Y^l_a(x)\\, x_b ,
    \\qquad Y^0 = 1,\\; Y^1 \\propto (x, y, z),

with the 3j symbols :math:`C` of :func:`eqgeo.o3.wigner_3j` and a positive constant
:math:`a_l` fixing the normalisation. This is e3nn's basis (``y`` is the polar axis) continued
to every ``l``; each step is a bounded linear map, so the recursion is numerically stable at
any degree, and ``Y(R x) = D(R) Y(x)`` holds by construction.

Evaluation. On the CPU in eager mode a custom autograd function runs the recursion on blocks
of a few thousand points in a components-by-points layout that stays in cache (one small
matmul per degree), and writes each block of the output once; its backward runs the same
recursion in reverse. That avoids both autograd's chain of broadcasts and repeated passes over
the large output, which dominate the cost here. Under ``torch.compile``, on other devices and
for double backward (training on forces) the same recursion runs as plain differentiable ops.
float32 inputs with ``lmax > 4`` are evaluated in float64 and rounded once, so that they stay
as accurate as e3nn's float32 harmonics.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import numpy as np
import torch

from ._irreps import Irrep, Irreps
from ._wigner import _wigner_3j_np

__all__ = ["spherical_harmonics", "SphericalHarmonics"]

_NORMALIZATIONS = ("integral", "component", "norm")
# Degrees above this are computed in float64 for float32/float16 inputs.
_LOW_PRECISION_LMAX = 4


def _scale(l: int, normalization: str) -> float:
    """Value of ``|Y^l(x)|`` for a unit vector ``x`` under each normalisation."""
    if normalization == "norm":
        return 1.0
    if normalization == "component":
        return math.sqrt(2 * l + 1)
    return math.sqrt(2 * l + 1) / math.sqrt(4 * math.pi)


@functools.lru_cache(maxsize=None)
def _step_np(l: int, normalization: str) -> np.ndarray:
    """``S`` of shape ``(2l+3, 3(2l+1))`` with ``Y^{l+1} = S @ vec(Y^l (x) x)``.

    ``vec`` flattens ``(a, b)`` with ``b`` (the Cartesian index) fastest.
    """
    C = _wigner_3j_np(l, 1, l + 1)
    # |(u (x) x) . C| is the same for every unit x with u = Y^l(x)/|Y^l(x)| (invariance):
    # evaluate it at the pole y = 1, where the norm-normalised Y^l is e_{m=0}.
    a = 1.0 / np.linalg.norm(C[l, 1, :])
    ratio = _scale(l + 1, normalization) / _scale(l, normalization)
    return np.ascontiguousarray((C * (a * ratio)).reshape(-1, 2 * l + 3).T)


def _parse_ls(ls) -> list[int]:
    if isinstance(ls, (str, Irreps)):
        irreps = Irreps(ls)
        for mul, ir in irreps:
            if mul != 1 or ir.p != (-1) ** ir.l:
                raise ValueError(
                    f"spherical harmonics irreps must be 1x0e+1x1o+1x2e+... (parity (-1)^l, mul 1), got {irreps}"
                )
        ls = [ir.l for _, ir in irreps]
    elif isinstance(ls, Irrep):
        ls = [ls.l]
    elif isinstance(ls, int) and not isinstance(ls, bool):
        ls = [ls]
    ls = list(ls)
    if not ls or any(isinstance(l, bool) or not isinstance(l, int) or l < 0 for l in ls):
        raise ValueError(f"ls must be a non-empty list of ints >= 0, got {ls!r}")
    return ls


def _compute_dtype(dtype: torch.dtype, lmax: int) -> torch.dtype:
    return torch.float64 if dtype != torch.float64 and lmax > _LOW_PRECISION_LMAX else dtype


def _selection(ls: Sequence[int]) -> np.ndarray:
    """``(D_all, D_out)`` 0/1 matrix picking the degrees ``ls`` out of ``0..max(ls)``."""
    lmax = max(ls)
    S = np.zeros(((lmax + 1) ** 2, sum(2 * l + 1 for l in ls)))
    col = 0
    for l in ls:
        S[l * l : (l + 1) ** 2, col : col + 2 * l + 1] = np.eye(2 * l + 1)
        col += 2 * l + 1
    return S


# ----------------------------------------------------------------------------- plain path
def _safe_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` with value 0 and gradient 0 at ``x = 0`` (no NaN, no 1/eps blow-up)."""
    sq = (x * x).sum(dim=-1, keepdim=True)
    nonzero = sq > 0
    inv = torch.where(nonzero, sq, torch.ones_like(sq)).rsqrt()
    return torch.where(nonzero, x * inv, torch.zeros_like(x))


def _plain(x: torch.Tensor, ls: Sequence[int], steps: Sequence[torch.Tensor], s0: float, s1: float) -> torch.Tensor:
    """Differentiable recursion, points-by-components layout (compile, GPU, double backward)."""
    blocks = [torch.full_like(x[..., :1], s0), x * s1]
    for l in range(1, max(ls)):
        outer = (blocks[-1][..., :, None] * x[..., None, :]).flatten(-2)
        blocks.append(outer @ steps[l - 1].T)
    parts = [blocks[l] for l in ls]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


# ----------------------------------------------------------------------------- CPU fast path
def _chunk_size(width: int, itemsize: int) -> int:
    return int(min(65536, max(2048, (1 << 21) // (width * itemsize))))


def _soa_block(xs: torch.Tensor, normalize: bool, steps, s0: float, s1: float, buf: torch.Tensor):
    """Harmonics of the points ``xs`` (``(n, 3)``) into ``buf`` (``(D_all, n)``); returns ``(u, inv)``."""
    n = xs.shape[0]
    u = torch.empty(3, n, dtype=buf.dtype)
    for i in range(3):
        u[i].copy_(xs[:, i])
    inv = None
    if normalize:
        r2 = (u * u).sum(0)
        nz = r2 > 0
        inv = torch.where(nz, r2, torch.ones_like(r2)).rsqrt_().mul_(nz)
        u.mul_(inv)
    buf[0].fill_(s0)
    if buf.shape[0] > 1:
        torch.mul(u, s1, out=buf[1:4])
    for l in range(1, len(steps) + 1):
        y = buf[l * l : (l + 1) ** 2]
        outer = (y[:, None, :] * u[None, :, :]).view(-1, n)
        torch.mm(steps[l - 1], outer, out=buf[(l + 1) ** 2 : (l + 2) ** 2])
    return u, inv


def _fast_forward(x2, normalize, steps, sel, s0, s1):
    n_all, d_all = x2.shape[0], sel.shape[0]
    out = torch.empty(n_all, sel.shape[1], dtype=sel.dtype)
    c = _chunk_size(d_all, sel.element_size())
    buf = torch.empty(d_all, c, dtype=sel.dtype)
    for s in range(0, n_all, c):
        e = min(s + c, n_all)
        b = buf[:, : e - s]
        _soa_block(x2[s:e], normalize, steps, s0, s1, b)
        torch.mm(b.T, sel, out=out[s:e])  # transpose + select in one BLAS call
    return out


def _fast_backward(x2, grad2, normalize, steps, sel, s0, s1):
    n_all, d_all = x2.shape[0], sel.shape[0]
    dx = torch.empty(n_all, 3, dtype=sel.dtype)
    c = _chunk_size(d_all, sel.element_size())
    buf = torch.empty(d_all, c, dtype=sel.dtype)
    gbuf = torch.empty(d_all, c, dtype=sel.dtype)
    eye3 = torch.eye(3, dtype=sel.dtype)
    lmax = len(steps) + 1
    for s in range(0, n_all, c):
        e = min(s + c, n_all)
        n = e - s
        b, g = buf[:, :n], gbuf[:, :n]
        u, inv = _soa_block(x2[s:e], normalize, steps, s0, s1, b)
        torch.mm(sel, grad2[s:e].T, out=g)  # dL/dY for all degrees, components-by-points
        du = torch.zeros(3, n, dtype=sel.dtype)
        for l in range(lmax - 1, 0, -1):
            d_outer = (steps[l - 1].T @ g[(l + 1) ** 2 : (l + 2) ** 2]).view(2 * l + 1, 3, n)
            g[l * l : (l + 1) ** 2] += (d_outer * u[None]).sum(1)
            du += (d_outer * b[l * l : (l + 1) ** 2, None, :]).sum(0)
        if d_all > 1:
            du += g[1:4] * s1
        if normalize:
            du = (du - u * (u * du).sum(0)).mul_(inv)
        torch.mm(du.T, eye3, out=dx[s:e])
    return dx


class _SphericalHarmonicsCPU(torch.autograd.Function):
    """Cache-blocked CPU evaluation; backward is the reverse recursion, or autograd of the
    plain path when a graph of the gradient is requested (double backward)."""

    @staticmethod
    def forward(x2, ls, normalize, steps, sel, s0, s1):
        return _fast_forward(x2, normalize, steps, sel, s0, s1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x2, ls, normalize, steps, sel, s0, s1 = inputs
        ctx.save_for_backward(x2, sel, *steps)
        ctx.ls, ctx.normalize, ctx.s0, ctx.s1 = ls, normalize, s0, s1

    @staticmethod
    def backward(ctx, grad):
        x2, sel, *steps = ctx.saved_tensors
        if torch.is_grad_enabled():
            with torch.enable_grad():
                xs = _safe_normalize(x2) if ctx.normalize else x2
                y = _plain(xs, ctx.ls, steps, ctx.s0, ctx.s1)
                if y.requires_grad:  # False when only l = 0 is asked for
                    (dx,) = torch.autograd.grad(y, x2, grad, create_graph=True)
                else:
                    dx = torch.zeros_like(x2)
        else:
            dx = _fast_backward(x2, grad, ctx.normalize, steps, sel, ctx.s0, ctx.s1)
        return dx, None, None, None, None, None, None


def _evaluate(x: torch.Tensor, ls: Sequence[int], normalize: bool, steps, sel, s0: float, s1: float) -> torch.Tensor:
    """Harmonics of ``x`` with tables already in the compute dtype and on ``x``'s device."""
    dtype = steps[0].dtype if steps else sel.dtype
    xc = x if x.dtype == dtype else x.to(dtype)
    if max(ls) <= 1 and not (torch.is_grad_enabled() and xc.requires_grad):
        # Degrees 0 and 1 without autograd: a few vectorised ops beat any blocking.
        u = xc * (s1 / torch.linalg.vector_norm(xc, dim=-1, keepdim=True).clamp_min(torch.finfo(xc.dtype).tiny)) if normalize else xc * s1
        blocks = {0: torch.full_like(xc[..., :1], s0), 1: u}
        y = torch.cat([blocks[l] for l in ls], dim=-1) if len(ls) > 1 else blocks[ls[0]]
    elif xc.device.type == "cpu" and not torch.compiler.is_compiling():
        shape = xc.shape[:-1]
        y = _SphericalHarmonicsCPU.apply(xc.reshape(-1, 3), tuple(ls), normalize, list(steps), sel, s0, s1)
        y = y.reshape(*shape, y.shape[-1])
    else:
        y = _plain(_safe_normalize(xc) if normalize else xc, ls, steps, s0, s1)
    return y if y.dtype == x.dtype else y.to(x.dtype)


_TABLES: dict = {}


@torch.compiler.disable
def _build_tables(key):
    ls, normalization, dtype, device = key
    cd = _compute_dtype(dtype, max(ls))
    steps = [torch.tensor(_step_np(l, normalization), dtype=cd, device=device) for l in range(1, max(ls))]
    sel = torch.tensor(_selection(ls), dtype=cd, device=device)
    _TABLES[key] = (steps, sel)


def _tables(ls: tuple[int, ...], normalization: str, dtype: torch.dtype, device: torch.device):
    """Tables of the functional form, cached per (ls, normalization, dtype, device).

    They are built outside any compiled graph; under ``torch.compile`` a configuration seen
    for the first time costs one graph break (the module form has none).
    """
    key = (ls, normalization, dtype, device)
    if key not in _TABLES:
        _build_tables(key)
    return _TABLES[key]


def spherical_harmonics(
    ls: Union[int, Sequence[int], str, Irreps],
    x: torch.Tensor,
    normalize: bool,
    normalization: str = "integral",
) -> torch.Tensor:
    """Real spherical harmonics of ``x`` (``(..., 3)``), equal to e3nn's ``o3.spherical_harmonics``.

    Args:
        ls: a degree, a list of degrees, or irreps ``"0e+1o+2e"`` (parity must be ``(-1)^l``).
        x: points ``(..., 3)``.
        normalize: project ``x`` on the unit sphere first. A zero vector gives ``Y^0`` and
            zeros for ``l >= 1``, with finite (zero) gradients. Without it the harmonics are
            homogeneous polynomials: ``Y^l(x) = |x|^l Y^l(x/|x|)``.
        normalization: ``"integral"`` (e3nn's default: each ``Y^l_m`` has unit integral of its
            square over the sphere), ``"component"`` (``|Y^l(x)|^2 = 2l+1`` on unit vectors) or
            ``"norm"`` (``|Y^l(x)| = 1``).

    Returns:
        ``(..., sum(2l+1))``, the degrees in the order given.

    Equivariant: ``Y^l(R x) = D^l(R) Y^l(x)`` and ``Y^l(-x) = (-1)^l Y^l(x)``.

    Example:
        >>> x = torch.tensor([[0.0, 2.0, 0.0]])
        >>> spherical_harmonics([0, 1], x, normalize=True, normalization="component")
        tensor([[1.0000, 0.0000, 1.7321, 0.0000]])
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if x.shape[-1] != 3:
        raise ValueError(f"spherical_harmonics expects points of shape (..., 3), got {tuple(x.shape)}")
    ls = tuple(_parse_ls(ls))
    steps, sel = _tables(ls, normalization, x.dtype, x.device)
    return _evaluate(x, ls, normalize, steps, sel, _scale(0, normalization), _scale(1, normalization))


class SphericalHarmonics(torch.nn.Module):
    """Module form of :func:`spherical_harmonics`, with its tables as buffers.

    Use it inside models: it moves with ``.to(device)`` and compiles with ``fullgraph=True``.
    The tables are kept in float64 and cast to the compute dtype on the fly.

    Args:
        irreps_out: degrees, irreps ``"1x0e+1x1o+..."``, or an int ``lmax`` meaning ``0..lmax``.
        normalize: project inputs on the unit sphere.
        normalization: ``"integral"``, ``"component"`` or ``"norm"``.

    Shapes:
        input ``(..., 3)``; output ``(..., irreps_out.dim)``.
    """

    def __init__(self, irreps_out, normalize: bool = True, normalization: str = "integral") -> None:
        super().__init__()
        if isinstance(irreps_out, int) and not isinstance(irreps_out, bool):
            irreps_out = list(range(irreps_out + 1))
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        self.ls = tuple(_parse_ls(irreps_out))
        self.irreps_in = Irreps("1x1o")
        self.irreps_out = Irreps([(1, (l, (-1) ** l)) for l in self.ls])
        self.normalize = normalize
        self.normalization = normalization
        for l in range(1, max(self.ls)):
            self.register_buffer(f"step_{l}", torch.tensor(_step_np(l, normalization), dtype=torch.float64), persistent=False)
        self.register_buffer("selection", torch.tensor(_selection(self.ls), dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 3:
            raise ValueError(f"SphericalHarmonics expects points of shape (..., 3), got {tuple(x.shape)}")
        cd = _compute_dtype(x.dtype, max(self.ls))
        steps = [getattr(self, f"step_{l}").to(cd) for l in range(1, max(self.ls))]
        s = self.normalization
        return _evaluate(x, self.ls, self.normalize, steps, self.selection.to(cd), _scale(0, s), _scale(1, s))

    def extra_repr(self) -> str:
        return f"1x1o -> {self.irreps_out} | normalize={self.normalize}, normalization={self.normalization!r}"
