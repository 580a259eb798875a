"""Gated nonlinearity of irreps features (Weiler et al., 2018, https://arxiv.org/abs/1807.02547).

Also holds the scalar-activation machinery shared by eqgeo's nonlinear blocks: activations
normalised to unit second moment (:class:`Normalize2Mom`, e3nn's ``normalize2mom`` computed by
quadrature instead of Monte Carlo) and the parity of a scalar function (:func:`activation_parity`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..o3 import Irrep, Irreps
from .checks import check_features

__all__ = ["Gate", "Normalize2Mom", "second_moment", "activation_parity"]

Activation = Optional[Callable[[torch.Tensor], torch.Tensor]]

# Composite Gauss-Legendre rule for integrals against the standard normal density:
# panels of width 1/8 on [-12, 12] with 8 nodes each. Kinks at multiples of 1/8 (relu at 0,
# hardtanh at +-1, relu6 at 6...) fall on panel edges, so piecewise-smooth activations are
# integrated to ~1e-14; the mass of N(0, 1) beyond |z| = 12 is ~1e-33.
_QUAD_HALF_WIDTH = 12.0
_QUAD_PANELS = 192
_QUAD_ORDER = 8


@functools.lru_cache(maxsize=None)
def _normal_quadrature() -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``z`` and weights ``w`` with ``sum(w g(z)) ~ E[g(Z)]`` for ``Z ~ N(0, 1)``."""
    t, wt = np.polynomial.legendre.leggauss(_QUAD_ORDER)
    edges = np.linspace(-_QUAD_HALF_WIDTH, _QUAD_HALF_WIDTH, _QUAD_PANELS + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    z = (mid[:, None] + half[:, None] * t[None, :]).ravel()
    w = (half[:, None] * wt[None, :]).ravel() * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return z, w


def _eval_dtype(f: Callable) -> torch.dtype:
    """float64, or the dtype of ``f``'s parameters when ``f`` is a module that has some."""
    if isinstance(f, torch.nn.Module):
        for p in f.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float64


def second_moment(f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    r"""Second moment of an elementwise function of a standard normal variable.

    .. math::

        \mathbb{E}\left[f(z)^2\right] = \int_{-\infty}^{\infty} f(z)^2
        \frac{e^{-z^2/2}}{\sqrt{2\pi}} \, dz,

    computed by a fixed composite Gauss-Legendre quadrature on :math:`[-12, 12]` (deterministic,
    accurate to ~1e-12 for piecewise-smooth activations with kinks at multiples of 1/8).

    Args:
        f: an elementwise function of a tensor (e.g. ``torch.tanh``, a ``torch.nn.SiLU()``).

    Example:
        >>> round(second_moment(torch.relu), 12)
        0.5
    """
    z_np, w_np = _normal_quadrature()
    dtype = _eval_dtype(f)
    with torch.no_grad():
        fz = f(torch.as_tensor(z_np, dtype=dtype)).to(torch.float64)
    return float((fz.pow(2) * torch.as_tensor(w_np)).sum())


def activation_parity(f: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """``1`` if ``f`` is even, ``-1`` if odd, ``0`` if neither (checked on a grid of ``[-10, 10]``).

    Example:
        >>> activation_parity(torch.tanh), activation_parity(torch.abs), activation_parity(torch.sigmoid)
        (-1, 1, 0)
    """
    dtype = _eval_dtype(f)
    x = torch.linspace(0.0, 10.0, 257, dtype=dtype)
    with torch.no_grad():
        a, b = f(x).to(torch.float64), f(-x).to(torch.float64)
    tol = (1e-12 if dtype == torch.float64 else 1e-5) * max(1.0, a.abs().max().item(), b.abs().max().item())
    if (a - b).abs().max().item() <= tol:
        return 1
    if (a + b).abs().max().item() <= tol:
        return -1
    return 0


def _act_name(f: Callable) -> str:
    if isinstance(f, torch.nn.Module):
        return repr(f)
    return getattr(f, "__name__", repr(f))


class Normalize2Mom(torch.nn.Module):
    r"""An elementwise activation rescaled to unit second moment under a standard normal input.

    .. math::

        \tilde f(x) = \frac{f(x)}{\sqrt{\mathbb{E}_{z \sim \mathcal N(0,1)}[f(z)^2]}},

    so :math:`\mathbb{E}[\tilde f(z)^2] = 1` (e3nn's ``normalize2mom``; the constant comes from
    :func:`second_moment`'s quadrature, so it is reproducible and exact to ~1e-12, where e3nn
    samples 10^6 normal numbers).

    Args:
        f: the activation, an elementwise callable.

    Shapes:
        any shape to the same shape.

    Raises:
        ValueError: when :math:`f` vanishes (or is not finite) on the real line.
    """

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        if not callable(f):
            raise ValueError(f"Normalize2Mom needs a callable activation, got {f!r}")
        m2 = second_moment(f)
        if not (math.isfinite(m2) and m2 > 0):
            raise ValueError(f"cannot normalise activation {_act_name(f)}: its second moment under N(0, 1) is {m2}")
        self.f = f
        self.cst = m2**-0.5
        self.parity = activation_parity(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x) * self.cst

    def extra_repr(self) -> str:
        return f"{_act_name(self.f)}, cst={self.cst:.6g}"

    def __repr__(self) -> str:
        return f"{_act_name(self.f)}*{self.cst:.4g}"


def _as_act_list(acts, irreps: Irreps, what: str) -> list[Activation]:
    if acts is None or callable(acts):
        return [acts] * len(irreps)
    acts = list(acts)
    if len(acts) != len(irreps):
        raise ValueError(
            f"Gate: {what} has {len(irreps)} entries ({irreps}) but {len(acts)} activations were given "
            "(give one per entry, or a single callable for all)"
        )
    for a in acts:
        if a is not None and not callable(a):
            raise ValueError(f"Gate: {what} activation {a!r} is not callable")
    return acts


def _scalar_acts(irreps: Irreps, acts: list[Activation], what: str) -> tuple[torch.nn.ModuleList, Irreps]:
    """Normalised activations (Identity for ``None``) and the irreps of their outputs."""
    modules, out = [], []
    for (mul, ir), act in zip(irreps, acts):
        if act is None:
            modules.append(torch.nn.Identity())
            out.append((mul, ir))
            continue
        act = Normalize2Mom(act)
        if ir.p == 1:
            p_out = 1
        elif act.parity != 0:
            p_out = act.parity
        else:
            raise ValueError(
                f"Gate: {what} {irreps} has odd scalars {mul}x{ir}, but the activation {_act_name(act.f)} is "
                "neither even nor odd, so its output would have no parity; use an odd (e.g. tanh) or even "
                "(e.g. abs) activation for them"
            )
        modules.append(act)
        out.append((mul, Irrep(0, p_out)))
    return torch.nn.ModuleList(modules), Irreps(out)


def _same_activation(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    if isinstance(a, torch.nn.Identity) and isinstance(b, torch.nn.Identity):
        return True
    return isinstance(a, Normalize2Mom) and isinstance(b, Normalize2Mom) and a.f is b.f and a.cst == b.cst


def _runs(slices: list[tuple[int, int]], acts: torch.nn.ModuleList) -> list[tuple[int, int, int]]:
    """``(start, stop, activation index)`` of the maximal runs of adjacent slices with the same activation."""
    runs: list[tuple[int, int, int]] = []
    for i, (a, b) in enumerate(slices):
        if b == a:
            continue
        if runs and runs[-1][1] == a and _same_activation(acts[runs[-1][2]], acts[i]):
            runs[-1] = (runs[-1][0], b, runs[-1][2])
        else:
            runs.append((a, b, i))
    return runs


class Gate(torch.nn.Module):
    r"""Gated nonlinearity (Weiler et al., 2018, https://arxiv.org/abs/1807.02547), e3nn's ``Gate``.

    The input is the concatenation ``scalars + gates + gated``; the output is

    .. math::

        \Big(\bigoplus_i \phi_i(x_i)\Big) \oplus \Big(\bigoplus_j \psi(g_j)\, y_j\Big),

    where the :math:`x_i` are the scalars with activations :math:`\phi_i`, each gate scalar
    :math:`g_j` (activation :math:`\psi`) multiplies one copy :math:`y_j` of the gated irreps,
    in order. Activations are normalised to unit second moment (:class:`Normalize2Mom`), so
    standard normal inputs give outputs of unit mean square. Equivariant: ``Gate(D_in(R) x) =
    D_out(R) Gate(x)`` for rotations and reflections.

    Parity: an activation on even scalars (``0e``) gives ``0e``; on odd scalars (``0o``) an odd
    activation gives ``0o``, an even one ``0e``, and any other is refused. A gate's output parity
    multiplies the parity of the copy it gates (``0o`` gate times ``1o`` gives ``1e``).

    Unlike e3nn, which sorts and merges ``scalars + gates + gated`` into its ``irreps_in``, the
    input here is the plain concatenation in the order given (the same layout whenever that
    concatenation is already sorted, e.g. ``0e`` scalars and gates followed by gated irreps in
    increasing ``l``). ``irreps_out`` is e3nn's.

    Args:
        irreps_scalars: scalars passed through ``act_scalars`` (``l = 0`` only).
        act_scalars: one activation per entry of ``irreps_scalars`` (``None`` for identity), or
            one callable for all.
        irreps_gates: gate scalars (``l = 0`` only), one per copy of ``irreps_gated``.
        act_gates: one activation per entry of ``irreps_gates``, or one callable for all.
        irreps_gated: the irreps multiplied by the gates.

    Shapes:
        - input: ``(..., irreps_in.dim)`` with ``irreps_in = irreps_scalars + irreps_gates +
          irreps_gated``
        - output: ``(..., irreps_out.dim)``

    Example:
        >>> import torch
        >>> g = Gate("8x0e", [torch.nn.functional.silu], "4x0e", [torch.sigmoid], "4x1o")
        >>> g
        Gate(8x0e+4x0e+4x1o -> 8x0e+4x1o)
        >>> g(torch.randn(10, 24)).shape
        torch.Size([10, 20])
    """

    def __init__(
        self,
        irreps_scalars,
        act_scalars: Union[Activation, Sequence[Activation]],
        irreps_gates,
        act_gates: Union[Activation, Sequence[Activation]],
        irreps_gated,
    ) -> None:
        super().__init__()
        irreps_scalars, irreps_gates, irreps_gated = Irreps(irreps_scalars), Irreps(irreps_gates), Irreps(irreps_gated)
        for name, irreps in (("irreps_scalars", irreps_scalars), ("irreps_gates", irreps_gates)):
            if any(ir.l != 0 for _, ir in irreps):
                raise ValueError(f"Gate: {name} must be scalars (l = 0), got {name} = {irreps}")
        if irreps_gates.num_irreps != irreps_gated.num_irreps:
            raise ValueError(
                f"Gate: irreps_gated = {irreps_gated} has {irreps_gated.num_irreps} copies but irreps_gates = "
                f"{irreps_gates} has {irreps_gates.num_irreps} gate scalars; they must be equal (one gate per copy)"
            )
        self.irreps_scalars, self.irreps_gates, self.irreps_gated = irreps_scalars, irreps_gates, irreps_gated
        self.irreps_in = irreps_scalars + irreps_gates + irreps_gated

        self.act_scalars, scalars_out = _scalar_acts(
            irreps_scalars, _as_act_list(act_scalars, irreps_scalars, "irreps_scalars"), "irreps_scalars"
        )
        self.act_gates, gates_out = _scalar_acts(
            irreps_gates, _as_act_list(act_gates, irreps_gates, "irreps_gates"), "irreps_gates"
        )
        gated_out = _elementwise_chunks(irreps_gated.simplify(), gates_out.simplify())
        self.irreps_out = scalars_out + gated_out

        # Plain ints for forward: slices of the input, and (offset, mul, dim) of each gated entry.
        self._dim_in = self.irreps_in.dim
        s0 = 0
        self._scalar_slices = []
        for mul, _ in irreps_scalars:
            self._scalar_slices.append((s0, s0 + mul))
            s0 += mul
        self._gate_slices = []
        for mul, _ in irreps_gates:
            self._gate_slices.append((s0, s0 + mul))
            s0 += mul
        self._gated = []
        k = 0
        gate_index = []
        self._gated_range = (s0, s0 + irreps_gated.dim)
        for mul, ir in irreps_gated:
            if mul > 0:
                self._gated.append((s0, k, mul, ir.dim))
                gate_index += [k + u for u in range(mul) for _ in range(ir.dim)]
            s0 += mul * ir.dim
            k += mul
        # Forward in few operations: consecutive slices with the same activation are one call, and
        # all gated features are multiplied at once by their gates gathered to feature width.
        self._scalar_runs = _runs(self._scalar_slices, self.act_scalars)
        self._gate_runs = _runs(self._gate_slices, self.act_gates)
        self.register_buffer("_gate_index", torch.tensor(gate_index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gate to features ``x`` of shape ``(..., irreps_in.dim)``."""
        check_features("Gate", self.irreps_in, self._dim_in, x)
        out = [self.act_scalars[i](x[..., a:b]) for a, b, i in self._scalar_runs]
        if self._gated:
            gates = [self.act_gates[i](x[..., a:b]) for a, b, i in self._gate_runs]
            gates = torch.cat(gates, dim=-1) if len(gates) > 1 else gates[0]
            g0, g1 = self._gated_range
            out.append(x[..., g0:g1] * gates.index_select(-1, self._gate_index))
        if not out:
            return x.new_zeros(*x.shape[:-1], 0)
        return torch.cat(out, dim=-1) if len(out) > 1 else out[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out})"


def _elementwise_chunks(gated: Irreps, gates: Irreps) -> Irreps:
    """Irreps of ``gated * gates`` copy by copy, split at the entry boundaries of both (e3nn's)."""
    out = []
    a = [[m, ir] for m, ir in gated if m > 0]
    b = [[m, ir] for m, ir in gates if m > 0]
    i = j = 0
    while i < len(a) and j < len(b):
        m = min(a[i][0], b[j][0])
        out.append((m, Irrep(a[i][1].l, a[i][1].p * b[j][1].p)))
        a[i][0] -= m
        b[j][0] -= m
        i += a[i][0] == 0
        j += b[j][0] == 0
    return Irreps(out)
