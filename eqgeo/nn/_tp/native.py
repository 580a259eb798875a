"""Calls of the native C kernel (``eqgeo/nn/_native/tp.c``) for the native paths of a plan:
whether it applies, how many threads a call gets, and the ctypes calls themselves."""

from __future__ import annotations

import ctypes

import torch

from .. import _native
from .plan import Plan

__all__ = ["use_native", "native_threads", "fresh", "native_forward", "native_backward", "NATIVE_WORK_PER_THREAD"]

_NATIVE_DTYPES = {torch.float32: "eqgeo_tp_{}_f32", torch.float64: "eqgeo_tp_{}_f64"}


def use_native(plan: Plan, x: torch.Tensor, *others: torch.Tensor) -> bool:
    # the kernel reads every array with x's dtype: all must match (and be on the CPU)
    return (
        bool(plan.native_index)
        and x.device.type == "cpu"
        and x.dtype in _NATIVE_DTYPES
        and all(t.dtype == x.dtype and t.device == x.device for t in others)
        and _native.enabled()
    )


#: Multiply-adds (``Plan.native_work`` x samples) below which one more thread of the native kernel
#: does not pay: waking a pooled worker and waiting for it costs 10-50 us, and on a busy machine
#: much more; 250,000 multiply-adds are about 60 us of forward work on one x86 core (the backward
#: does about 2.5x as much per unit). Measured in experiments/benchmarks/results/profile_small_batch.md.
NATIVE_WORK_PER_THREAD = 250_000


def native_threads(plan: Plan, batch: int) -> int:
    """Threads for one native call: torch's intra-op thread count, but only as many as the work
    keeps busy (1 for the small batches of a training step)."""
    return max(1, min(torch.get_num_threads(), plan.native_work * batch // NATIVE_WORK_PER_THREAD))


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None and t.numel() > 0 else None


def _native_header(plan: Plan, B: int, sizes: tuple) -> ctypes.Array:
    npaths, nuvu, nzero, nb1, maxu, maxudo, maxa = sizes
    vals = [B, npaths, nuvu, plan.irreps_in1.dim, plan.irreps_in2.dim, plan.irreps_out.dim,
            0 if plan.shared else plan.weight_numel, plan.weight_numel, nzero, nb1, maxu, maxudo, maxa]
    return (ctypes.c_int64 * len(vals))(*vals)


_HUGE_BYTES = 8 << 20


def fresh(shape, like: torch.Tensor, lib) -> torch.Tensor:
    """An uninitialised result; large ones get a transparent-huge-page hint before first touch."""
    t = torch.empty(shape, dtype=like.dtype, device=like.device)
    nbytes = t.numel() * t.element_size()
    if nbytes >= _HUGE_BYTES:
        lib.eqgeo_advise_hugepages(t.data_ptr(), nbytes)
    return t


def native_forward(plan: Plan, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
    meta, cg, zeros, blocks1, sizes = plan.native_tables(x1.dtype)
    hdr = _native_header(plan, x1.shape[0], sizes)
    fn = getattr(_native.library(), _NATIVE_DTYPES[x1.dtype].format("forward"))
    rc = fn(ctypes.addressof(hdr), _ptr(meta), _ptr(blocks1), _ptr(zeros), _ptr(cg), _ptr(x1), _ptr(x2), _ptr(w),
            _ptr(out), native_threads(plan, x1.shape[0]))
    if rc != 0:
        raise MemoryError("eqgeo native tensor product: out of memory for its scratch buffers")


def native_backward(plan, grad, x1, x2, w, gx1, gx2, gw) -> None:
    meta, cg, _, blocks1, sizes = plan.native_tables(x1.dtype)
    hdr = _native_header(plan, x1.shape[0], sizes)
    fn = getattr(_native.library(), _NATIVE_DTYPES[x1.dtype].format("backward"))
    rc = fn(ctypes.addressof(hdr), _ptr(meta), _ptr(blocks1), _ptr(cg), _ptr(grad), _ptr(x1), _ptr(x2), _ptr(w),
            _ptr(gx1), _ptr(gx2), _ptr(gw), native_threads(plan, x1.shape[0]))
    if rc != 0:
        raise MemoryError("eqgeo native tensor product: out of memory for its scratch buffers")
