"""Equivariance checks for functions and modules, used by every test of eqgeo.

A function is checked against random **proper rotations, improper rotations (reflections),
translations** of position inputs and **node permutations** of graph inputs. Each argument and
output is described by a spec:

- an irreps (``"8x0e+4x1o"`` or :class:`~eqgeo.o3.Irreps`): features in the last dimension,
  transformed by the block-diagonal ``D(R)``;
- ``"cartesian_points"``: positions ``(..., 3)``, rotated and translated;
- ``None``: left unchanged (invariant inputs such as atomic numbers or cutoffs);
- :class:`Nodes` ``(spec)``: the same, and dimension 0 indexes graph nodes, so it is permuted;
- :class:`NodeIndex` ``()``: an integer tensor of node indices (``edge_index``, ``batch`` is
  ``Nodes(None)``), relabelled under a permutation.

Errors are computed in float64 (the transformation matrices are float64 whatever the dtype of
the function), and each kind of transformation is reported separately, so a failure says what
broke.

Example:
    >>> import torch
    >>> from eqgeo.testing import assert_equivariant
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> errors = assert_equivariant(lambda v: v.norm(dim=-1, keepdim=True), [x], ["1o"], ["0e"])
    >>> sorted(errors)
    ['reflection', 'rotation']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .o3 import Irreps, rand_matrix

__all__ = ["Nodes", "NodeIndex", "equivariance_error", "assert_equivariant", "DEFAULT_TOLERANCE"]

#: Default tolerances of :func:`assert_equivariant`, per dtype of the outputs.
DEFAULT_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}

_POINTS = "cartesian_points"


@dataclass(frozen=True)
class Nodes:
    """Marks an argument or output whose dimension 0 indexes the nodes of a graph."""

    spec: Any = None


@dataclass(frozen=True)
class NodeIndex:
    """Marks an integer tensor whose entries are node indices (e.g. ``edge_index``)."""


def _parse(spec):
    """``(kind, irreps, is_node)`` with kind in {'features', 'points', 'none', 'index'}."""
    is_node = isinstance(spec, Nodes)
    if is_node:
        spec = spec.spec
    if isinstance(spec, NodeIndex):
        return "index", None, False
    if spec is None:
        return "none", None, is_node
    if isinstance(spec, str) and spec == _POINTS:
        return "points", None, is_node
    return "features", Irreps(spec), is_node


def _as_list(x) -> list:
    """Specs or outputs as a list; an Irreps (itself a tuple) is one spec."""
    return list(x) if isinstance(x, (list, tuple)) and not isinstance(x, Irreps) else [x]


@dataclass
class _Transform:
    R: torch.Tensor | None = None  # (3, 3) float64, det +-1
    t: torch.Tensor | None = None  # (3,) float64
    perm: torch.Tensor | None = None  # new node i is old node perm[i]
    inv: torch.Tensor | None = None


def _apply(t: _Transform, value, spec):
    if not isinstance(value, torch.Tensor):
        return value
    kind, irreps, is_node = _parse(spec)
    if kind == "index":
        return t.inv[value] if t.perm is not None else value
    if kind == "features" and t.R is not None:
        if value.shape[-1] != irreps.dim:
            raise ValueError(f"a tensor of shape {tuple(value.shape)} does not match irreps {irreps} (dim {irreps.dim})")
        D = irreps.D_from_matrix(t.R)
        value = (value.to(torch.float64) @ D.T).to(value.dtype)
    elif kind == "points":
        if value.shape[-1] != 3:
            raise ValueError(f"cartesian_points must have shape (..., 3), got {tuple(value.shape)}")
        v = value.to(torch.float64)
        if t.R is not None:
            v = v @ t.R.T
        if t.t is not None:
            v = v + t.t
        value = v.to(value.dtype)
    if is_node and t.perm is not None:
        value = value[t.perm.to(value.device)]
    return value


def _num_nodes(args, specs) -> int | None:
    n = None
    for a, s in zip(args, specs):
        if isinstance(a, torch.Tensor) and _parse(s)[2]:
            if n is not None and a.shape[0] != n:
                raise ValueError(f"node-indexed arguments disagree on the number of nodes ({n} vs {a.shape[0]})")
            n = a.shape[0]
    return n


def _output_errors(
    func: Callable,
    args_in: Sequence,
    irreps_in: Sequence | None,
    irreps_out: Sequence | Any,
    *,
    ntrials: int,
    do_parity: bool,
    do_translation: bool,
    do_permutation: bool,
    generator: torch.Generator | None,
) -> tuple[list, dict[str, list[float]]]:
    """The outputs of ``func(*args_in)`` and, per transformation, the error of each output."""
    args_in = list(args_in)
    specs_in = [None] * len(args_in) if irreps_in is None else _as_list(irreps_in)
    if len(specs_in) != len(args_in):
        raise ValueError(f"{len(args_in)} arguments but {len(specs_in)} irreps_in specs")
    kinds_in = [_parse(s) for s in specs_in]
    n_nodes = _num_nodes(args_in, specs_in)
    has_points = any(k == "points" for k, _, _ in kinds_in)

    outs = _as_list(func(*args_in))
    specs_out = _as_list(irreps_out)
    if len(specs_out) != len(outs):
        raise ValueError(f"func returned {len(outs)} outputs but {len(specs_out)} irreps_out specs were given")

    errors: dict[str, list[float]] = {}
    for _ in range(ntrials):
        R = rand_matrix(dtype=torch.float64, generator=generator)
        trials = {"rotation": _Transform(R=R)}
        if do_parity:
            trials["reflection"] = _Transform(R=-R)
        if do_translation and has_points:
            trials["translation"] = _Transform(t=torch.randn(3, dtype=torch.float64, generator=generator))
        if do_permutation and n_nodes is not None:
            perm = torch.randperm(n_nodes, generator=generator)
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(n_nodes)
            trials["permutation"] = _Transform(perm=perm, inv=inv)
        for name, t in trials.items():
            moved_in = [_apply(t, a, s) for a, s in zip(args_in, specs_in)]
            out_of_moved = _as_list(func(*moved_in))
            moved_out = [_apply(t, o, s) for o, s in zip(outs, specs_out)]
            per_output = errors.setdefault(name, [0.0] * len(outs))
            for k, (a, b) in enumerate(zip(out_of_moved, moved_out)):
                if isinstance(a, torch.Tensor):
                    if a.shape != b.shape:
                        raise ValueError(f"output {k} changed shape under {name}: {tuple(a.shape)} vs {tuple(b.shape)}")
                    if a.numel():
                        err = (a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max().item()
                        per_output[k] = max(per_output[k], err)
    return outs, errors


def equivariance_error(
    func: Callable,
    args_in: Sequence,
    irreps_in: Sequence | None = None,
    irreps_out: Sequence | Any = None,
    *,
    ntrials: int = 1,
    do_parity: bool = True,
    do_translation: bool = True,
    do_permutation: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Largest deviation from equivariance under each kind of transformation.

    Args:
        func: the function; called as ``func(*args_in)``; returns a tensor or a tuple.
        args_in: its arguments.
        irreps_in: one spec per argument (see the module docstring); ``None`` means all
            arguments are left unchanged.
        irreps_out: one spec per output (or a single spec for a single output).
        ntrials: independent random draws; the maximum error is reported.
        do_parity: also test improper rotations ``-R`` (det = -1).
        do_translation: also translate ``"cartesian_points"`` arguments (when there are any).
        do_permutation: also permute nodes (when an argument is :class:`Nodes`).
        generator: random generator for the transformations.

    Returns:
        ``{"rotation": e, "reflection": e, "translation": e, "permutation": e}`` (the keys
        that apply), each the max over outputs and trials of ``max |f(g x) - g f(x)|`` in float64
        (absolute: :func:`assert_equivariant` judges each output against its own size).
    """
    _, errors = _output_errors(
        func, args_in, irreps_in, irreps_out, ntrials=ntrials, do_parity=do_parity,
        do_translation=do_translation, do_permutation=do_permutation, generator=generator,
    )
    return {name: max(per_output, default=0.0) for name, per_output in errors.items()}


def assert_equivariant(
    func: Callable,
    args_in: Sequence | None = None,
    irreps_in: Sequence | None = None,
    irreps_out: Sequence | Any = None,
    tolerance: float | None = None,
    *,
    atol: float = 0.0,
    ntrials: int = 1,
    do_parity: bool = True,
    do_translation: bool = True,
    do_permutation: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Assert that ``func`` is equivariant; returns the errors of :func:`equivariance_error`.

    When ``args_in`` is ``None``, random inputs are drawn from ``irreps_in`` (features of a
    batch of 5, points of shape ``(5, 3)``; float64).

    Each output is judged on its own scale: its error may be at most ``tolerance`` times its own
    largest magnitude (``max |f(x)|`` of that output; 1 for an output that is all zeros), plus
    ``atol``. An energy of thousands of eV therefore never hides an error in the forces beside it.
    The tolerance defaults to :data:`DEFAULT_TOLERANCE` for the dtype of each output. ``atol``
    (default 0) is for outputs much smaller than the quantities they are computed from, whose
    rounding error is set by those quantities rather than by the output itself.

    Raises:
        AssertionError: naming each output and transformation whose error exceeds its tolerance.
    """
    if args_in is None:
        if irreps_in is None:
            raise ValueError("give args_in, or irreps_in to draw random inputs from")
        args_in = [_random_input(s) for s in _as_list(irreps_in)]
    outs, errors = _output_errors(
        func, args_in, irreps_in, irreps_out, ntrials=ntrials, do_parity=do_parity,
        do_translation=do_translation, do_permutation=do_permutation, generator=generator,
    )
    bad = []
    for k, out in enumerate(outs):
        if not (isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel()):
            continue
        scale = out.detach().abs().max().item() or 1.0
        tol = DEFAULT_TOLERANCE.get(out.dtype, 1e-5) if tolerance is None else tolerance
        for name, per_output in errors.items():
            if not per_output[k] <= tol * scale + atol:
                bad.append(f"output {k} under {name}: {per_output[k]:.3g} > {tol:.1g} x its scale {scale:.3g}"
                           + (f" + atol {atol:.1g}" if atol else ""))
    if bad:
        raise AssertionError("not equivariant: " + "; ".join(bad))
    return {name: max(per_output, default=0.0) for name, per_output in errors.items()}


def _random_input(spec) -> torch.Tensor:
    kind, irreps, _ = _parse(spec)
    if kind == "points":
        return torch.randn(5, 3, dtype=torch.float64)
    if kind == "features":
        return irreps.randn(5, -1, dtype=torch.float64)
    raise ValueError(f"cannot draw a random input for spec {spec!r}; pass args_in")
