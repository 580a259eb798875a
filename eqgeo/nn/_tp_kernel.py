"""Fast tensor-product kernel: native C for "uvu"/"uuu" paths on the CPU, PyTorch for the rest.

On the CPU (float32/float64), output blocks whose every writer is a ``"uvu"`` or ``"uuu"`` path
(NequIP-style convolutions: all of them) are computed by a small C kernel,
``eqgeo/nn/_native/tp.c``, compiled with the system C compiler at first use and cached under
``$EQGEO_CACHE/native`` (see :mod:`eqgeo.nn._native`). It works sample by sample (the
spherical harmonics contracted with the Clebsch–Gordan block once per path, channels
vectorised, results written straight into e3nn's layout), so the forward reads the inputs and
writes the output once and the backward reads the output gradient once. Without a C compiler
(one warning), on other devices or dtypes, or with the environment variable ``EQGEO_NATIVE=0``,
everything takes the PyTorch path below; other modes always do, in the same call.

PyTorch path: for the pair of input irreps ``(a, b)`` of a group of paths, the outer product
``Z[(i, j), n, u, v] = x1[n, u, i] x2[n, v, j]`` is contracted with the Clebsch–Gordan blocks of
*all* paths of the pair at once (their normalisation folded in): one GEMM
``res = C^T Z`` with a constant left matrix, whatever the number of samples. The per-path
channel mixing (``uvu``, ``uvw``, ...) then acts on ``res``. Features are processed in blocks
of samples whose temporaries stay in cache, components outermost so every elementwise op runs
over contiguous channels; each output block is written once, in e3nn's layout. The backward is
written out the same way (it recomputes ``res`` instead of storing it).

The kernels are registered as ``torch.library`` custom ops, so ``torch.compile`` sees one
opaque op (no graph break) and autograd uses the hand-written backward, whose own derivative (double backward, e.g.
training on forces) is registered in ``_tp_double_backward``.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily

from ..o3 import Irreps, wigner_3j
from . import _native
from ._tp_plan import Instruction, weight_offsets

_BLOCK_BYTES = 1 << 21  # budget for the largest per-block temporary
_NATIVE_MODES = ("uvu", "uuu")
_NATIVE_DTYPES = {torch.float32: "eqgeo_tp_{}_f32", torch.float64: "eqgeo_tp_{}_f64"}


def _native_mode(mode: str) -> int:
    return _NATIVE_MODES.index(mode)  # the kernel's MODE_UVU = 0, MODE_UUU = 1


@dataclass
class _Member:
    index: int
    k0: int
    dout: int
    mode: str
    has_weight: bool
    offset: int | None
    shape: tuple
    i_out: int


@dataclass
class _Group:
    i1: int
    i2: int
    diag: bool  # "uuu"/"uuw": x1 and x2 share the channel index
    d1: int
    d2: int
    U: int
    V: int
    ct64: torch.Tensor  # (K, d1 d2), normalisation folded in
    members: list = field(default_factory=list)


class Plan:
    """Everything the kernels need about one tensor product, built once per configuration."""

    def __init__(self, key: str) -> None:
        cfg = json.loads(key)
        self.key = key
        self.irreps_in1 = Irreps(cfg["in1"])
        self.irreps_in2 = Irreps(cfg["in2"])
        self.irreps_out = Irreps(cfg["out"])
        self.shared = cfg["shared"]
        self.instructions = [Instruction(*i[:6], tuple(i[6])) for i in cfg["ins"]]
        self.weight_numel = sum(math.prod(i.path_shape) for i in self.instructions if i.has_weight)
        self._offsets = weight_offsets(self.instructions)
        # Output blocks whose every writer is a "uvu"/"uuu" path are computed by the native CPU
        # kernel when it is available; the others by the PyTorch code below ("rest" groups).
        native_mode = [i.connection_mode in _NATIVE_MODES for i in self.instructions]
        block_native = [
            all(native_mode[k] for k, i in enumerate(self.instructions) if i.i_out == o) for o in range(len(self.irreps_out))
        ]
        self.native_index = [k for k, i in enumerate(self.instructions) if block_native[i.i_out]]
        native = set(self.native_index)
        self.groups = self._make_groups(range(len(self.instructions)))
        self.rest_groups = self._make_groups(k for k in range(len(self.instructions)) if k not in native)
        self.s1, self.s2, self.so = self.irreps_in1.slices(), self.irreps_in2.slices(), self.irreps_out.slices()
        per_sample = [g.d1 * g.d2 * g.U * (1 if g.diag else g.V) for g in self.groups]
        per_sample += [sum(m.dout for m in g.members) * g.U * (1 if g.diag else g.V) for g in self.groups]
        self._per_sample = max(per_sample, default=1)
        self.native_work = sum(self._path_work(self.instructions[k]) for k in self.native_index)
        writers = [sum(1 for i in self.instructions if i.i_out == o) for o in range(len(self.irreps_out))]
        self.sole_writer = [writers[i.i_out] == 1 for i in self.instructions]
        self._ct_cache: dict = {}

    def _path_work(self, ins: Instruction) -> int:
        """Multiply-adds of one sample of a native path: the 3j contraction of x2 (once per ``v``,
        or per channel for "uuu") and the channel product."""
        (m1, ir1), (m2, ir2), (_, iro) = self.irreps_in1[ins.i_in1], self.irreps_in2[ins.i_in2], self.irreps_out[ins.i_out]
        contractions = m1 if ins.connection_mode == "uuu" else m2
        pairs = m1 if ins.connection_mode == "uuu" else m1 * m2
        return contractions * ir1.dim * ir2.dim * iro.dim + pairs * ir1.dim * iro.dim

    def _make_groups(self, indices) -> list[_Group]:
        """The paths ``indices`` grouped by input pair, each group with its stacked 3j blocks."""
        groups: dict[tuple, _Group] = {}
        blocks: dict[tuple, list] = {}
        for idx in indices:
            ins, off = self.instructions[idx], self._offsets[idx]
            (m1, ir1), (m2, ir2), (_, iro) = self.irreps_in1[ins.i_in1], self.irreps_in2[ins.i_in2], self.irreps_out[ins.i_out]
            diag = ins.connection_mode in ("uuu", "uuw")
            gk = (ins.i_in1, ins.i_in2, diag)
            if gk not in groups:
                groups[gk] = _Group(ins.i_in1, ins.i_in2, diag, ir1.dim, ir2.dim, m1, m2, torch.empty(0))
                blocks[gk] = []
            g = groups[gk]
            C = wigner_3j(ir1.l, ir2.l, iro.l, dtype=torch.float64) * ins.path_weight
            k0 = sum(b.shape[0] for b in blocks[gk])
            blocks[gk].append(C.reshape(ir1.dim * ir2.dim, iro.dim).T)
            g.members.append(_Member(idx, k0, iro.dim, ins.connection_mode, ins.has_weight, off, ins.path_shape, ins.i_out))
        for gk, g in groups.items():
            g.ct64 = torch.cat(blocks[gk], dim=0).contiguous()
        return list(groups.values())

    def native_tables(self, dtype) -> tuple:
        """Tables of the native kernel for ``dtype`` (CPU): path fields, 3j blocks, zero ranges."""
        return self._cached(("native", dtype), lambda: self._make_native_tables(dtype))

    def _make_native_tables(self, dtype) -> tuple:
        # "uvu" paths first (the kernel's channel-major part), then "uuu"; the first path into
        # an output block (in that order) writes it, the others add to it.
        order = sorted(self.native_index, key=lambda k: self.instructions[k].connection_mode != "uvu")
        meta, cgs, seen, coff = [], [], set(), 0
        maxu = maxudo = maxa = 1
        for k in order:
            ins = self.instructions[k]
            (m1, ir1), (m2, ir2), (_, iro) = self.irreps_in1[ins.i_in1], self.irreps_in2[ins.i_in2], self.irreps_out[ins.i_out]
            C = wigner_3j(ir1.l, ir2.l, iro.l, dtype=torch.float64) * ins.path_weight  # (d1, d2, dout)
            cgs.append(C.permute(1, 0, 2).reshape(-1))  # stored (d2, d1, dout)
            woff = self._offsets[k] if ins.has_weight else -1
            meta.append([
                _native_mode(ins.connection_mode), self.s1[ins.i_in1].start, self.s2[ins.i_in2].start,
                self.so[ins.i_out].start, m1, m2, ir1.dim, ir2.dim, iro.dim, woff, coff, int(ins.i_out not in seen),
            ])
            seen.add(ins.i_out)
            coff += C.numel()
            maxu, maxudo, maxa = max(maxu, m1), max(maxudo, m1 * iro.dim), max(maxa, ir1.dim * iro.dim)
        written = {i.i_out for i in self.instructions}
        zeros = [[sl.start, sl.stop - sl.start] for o, sl in enumerate(self.so) if o not in written]
        blocks1 = [[sl.start, mul, ir.dim] for sl, (mul, ir) in zip(self.s1, self.irreps_in1)]
        nuvu = sum(1 for k in order if self.instructions[k].connection_mode == "uvu")
        ints = lambda rows: torch.tensor(rows, dtype=torch.int64).reshape(-1)  # noqa: E731
        cg = (torch.cat(cgs) if cgs else torch.zeros(1, dtype=torch.float64)).to(dtype).contiguous()
        sizes = (len(order), nuvu, len(zeros), len(blocks1), maxu, maxudo, maxa)
        return ints(meta), cg, ints(zeros), ints(blocks1), sizes

    def _cached(self, key, make):
        """Constant tensors cached per dtype/device; never a fake tensor made while tracing."""
        t = self._ct_cache.get(key)
        if t is None:
            t = make()
            first = t[0] if isinstance(t, (list, tuple)) else t
            if not isinstance(first, torch.Tensor) or not is_fake(first):
                self._ct_cache[key] = t
        return t

    def block_size(self, itemsize: int, device: torch.device, batch: int) -> int:
        """Samples per block: cache-sized on the CPU, the whole batch on accelerators."""
        if device.type != "cpu":
            return max(batch, 1)
        return int(min(4096, max(8, _BLOCK_BYTES // (self._per_sample * itemsize))))

    def ct(self, g: _Group, dtype, device) -> torch.Tensor:
        return self._cached((id(g), dtype, device), lambda: g.ct64.to(dtype=dtype, device=device))


@functools.lru_cache(maxsize=None)
def get_plan(key: str) -> Plan:
    # Constants are real tensors even when the first call happens while a compiler traces.
    with unset_fake_temporarily():
        return Plan(key)


def plan_key(irreps_in1, irreps_in2, irreps_out, instructions, shared: bool) -> str:
    return json.dumps(
        {
            "in1": str(irreps_in1),
            "in2": str(irreps_in2),
            "out": str(irreps_out),
            "shared": bool(shared),
            "ins": [[i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight, i.path_weight, list(i.path_shape)] for i in instructions],
        }
    )


# ----------------------------------------------------------------------------- block math
def _to_cm(x: torch.Tensor, sl: slice, mul: int, d: int) -> torch.Tensor:
    """``(n, mul*d)`` slice in e3nn layout -> component-major ``(d, n, mul)``."""
    n = x.shape[0]
    return x[:, sl].reshape(n, mul, d).permute(2, 0, 1).contiguous()


def _from_cm(a: torch.Tensor, dest: torch.Tensor, accumulate: bool = False) -> None:
    """Write (or add) component-major ``a`` ``(d, n, mul)`` into ``dest`` ``(n, mul*d)`` (e3nn layout)."""
    d, n, mul = a.shape
    if accumulate:
        dest.view(n, mul, d).add_(a.permute(1, 2, 0))
    else:
        dest.view(n, mul, d).copy_(a.permute(1, 2, 0))


def _weights(w: torch.Tensor, m: _Member, shared: bool, n: int) -> torch.Tensor:
    size = math.prod(m.shape)
    if shared:
        return w[0, m.offset : m.offset + size].reshape(m.shape)
    return w[:, m.offset : m.offset + size].reshape(n, *m.shape)


def _flat(g: _Group) -> bool:
    """Whether the group's ``res`` has one channel index (``uu*`` modes, or ``V == 1``)."""
    return g.diag or g.V == 1


def _outer(g: _Group, X1: torch.Tensor, X2: torch.Tensor) -> torch.Tensor:
    if _flat(g):
        Z = X1[:, None] * X2[None]  # (d1, d2, n, U); X2 is (d2, n, U) or (d2, n, 1)
    else:
        Z = X1[:, None, :, :, None] * X2[None, :, :, None, :]  # (d1, d2, n, U, V)
    return Z.reshape(g.d1 * g.d2, -1)


def _member_forward(m: _Member, r: torch.Tensor, W, shared: bool) -> torch.Tensor:
    """Contribution ``(dout, n, mul_out)`` of one path from its slice ``r`` of ``res``.

    ``r`` is ``(dout, n, U, V)``, or ``(dout, n, U)`` for ``uu*`` modes and when ``V == 1``.
    """
    dout, n = r.shape[0], r.shape[1]
    flat = r.dim() == 3
    if m.mode == "uuu" or (m.mode == "uvu" and flat):
        if not m.has_weight:
            return r
        return r * (W if m.mode == "uuu" else W.reshape(W.shape[:-1]))
    if m.mode == "uvu":
        return (r * W).sum(-1) if m.has_weight else r.sum(-1)
    if m.mode == "uvv":
        if flat:
            return (r * W.reshape(W.shape[:-1])).sum(-1, keepdim=True) if m.has_weight else r.sum(-1, keepdim=True)
        return (r * W).sum(-2) if m.has_weight else r.sum(-2)
    # uvw / uuw: mix the channel index into the output channels
    x = r.reshape(dout, n, -1)
    if shared:
        return (x.reshape(dout * n, -1) @ W.reshape(x.shape[-1], -1)).reshape(dout, n, -1)
    return torch.einsum("knx,nxw->knw", x, W.reshape(n, x.shape[-1], -1))


def _member_backward(m: _Member, r: torch.Tensor, W, go: torch.Tensor, shared: bool):
    """Gradients ``(d res, d W)`` of one path given ``go`` ``(dout, n, mul_out)``."""
    dout, n = go.shape[0], go.shape[1]
    flat = r.dim() == 3
    gW = None
    if m.mode == "uuu" or (m.mode == "uvu" and flat):
        Wf = None if not m.has_weight else (W if m.mode == "uuu" else W.reshape(W.shape[:-1]))
        gr = go * Wf if m.has_weight else go
        if m.has_weight:
            gW = (go * r).sum(0)
    elif m.mode == "uvu":
        ge = go[..., None]
        gr = ge * W if m.has_weight else ge.expand_as(r)
        if m.has_weight:
            gW = (ge * r).sum(0)
    elif m.mode == "uvv" and flat:
        Wf = W.reshape(W.shape[:-1]) if m.has_weight else None
        gr = go * Wf if m.has_weight else go.expand_as(r)
        if m.has_weight:
            gW = (go * r).sum(0)
    elif m.mode == "uvv":
        ge = go[:, :, None, :]
        gr = ge * W if m.has_weight else ge.expand_as(r)
        if m.has_weight:
            gW = (ge * r).sum(0)
    else:
        x = r.reshape(dout, n, -1)
        X = x.shape[-1]
        if shared:
            gr = (go.reshape(dout * n, -1) @ W.reshape(X, -1).T).reshape(r.shape)
            return gr, (x.reshape(dout * n, X).T @ go.reshape(dout * n, -1)).reshape(m.shape)
        Wm = W.reshape(n, X, -1)
        gr = torch.einsum("knw,nxw->knx", go, Wm).reshape(r.shape)
        return gr, torch.einsum("knx,knw->nxw", x, go).reshape(n, *m.shape)
    if gW is not None:
        gW = gW.sum(0).reshape(m.shape) if shared else gW.reshape(n, *m.shape)
    return gr, gW


def _res_view(g: _Group, res: torch.Tensor, m: _Member, n: int) -> torch.Tensor:
    r = res[m.k0 : m.k0 + m.dout]
    return r.reshape(m.dout, n, g.U) if _flat(g) else r.reshape(m.dout, n, g.U, g.V)


def _use_native(plan: Plan, x: torch.Tensor, *others: torch.Tensor) -> bool:
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


def _fresh(shape, like: torch.Tensor, lib) -> torch.Tensor:
    """An uninitialised result; large ones get a transparent-huge-page hint before first touch."""
    t = torch.empty(shape, dtype=like.dtype, device=like.device)
    nbytes = t.numel() * t.element_size()
    if nbytes >= _HUGE_BYTES:
        lib.eqgeo_advise_hugepages(t.data_ptr(), nbytes)
    return t


def _native_forward(plan: Plan, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
    meta, cg, zeros, blocks1, sizes = plan.native_tables(x1.dtype)
    hdr = _native_header(plan, x1.shape[0], sizes)
    fn = getattr(_native.library(), _NATIVE_DTYPES[x1.dtype].format("forward"))
    rc = fn(ctypes.addressof(hdr), _ptr(meta), _ptr(blocks1), _ptr(zeros), _ptr(cg), _ptr(x1), _ptr(x2), _ptr(w),
            _ptr(out), native_threads(plan, x1.shape[0]))
    if rc != 0:
        raise MemoryError("eqgeo native tensor product: out of memory for its scratch buffers")


def _native_backward(plan, grad, x1, x2, w, gx1, gx2, gw) -> None:
    meta, cg, _, blocks1, sizes = plan.native_tables(x1.dtype)
    hdr = _native_header(plan, x1.shape[0], sizes)
    fn = getattr(_native.library(), _NATIVE_DTYPES[x1.dtype].format("backward"))
    rc = fn(ctypes.addressof(hdr), _ptr(meta), _ptr(blocks1), _ptr(cg), _ptr(grad), _ptr(x1), _ptr(x2), _ptr(w),
            _ptr(gx1), _ptr(gx2), _ptr(gw), native_threads(plan, x1.shape[0]))
    if rc != 0:
        raise MemoryError("eqgeo native tensor product: out of memory for its scratch buffers")


def forward_blocks(plan: Plan, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    B = x1.shape[0]
    dtype, device = x1.dtype, x1.device
    if _use_native(plan, x1, x2, w):
        # writes the blocks of "uvu"/"uuu" paths and zeroes the blocks no path writes
        out = _fresh((B, plan.irreps_out.dim), x1, _native.library())
        _native_forward(plan, x1, x2, w, out)
        groups = plan.rest_groups
    else:
        out = torch.empty(B, plan.irreps_out.dim, dtype=dtype, device=device)
        groups = plan.groups
        written = {m.i_out for g in groups for m in g.members}
        for i in range(len(plan.irreps_out)):
            if i not in written:
                out[:, plan.so[i]] = 0
    if not groups:
        return out
    c = plan.block_size(x1.element_size(), x1.device, B)
    for s in range(0, B, c):
        e = min(s + c, B)
        n = e - s
        xa, xb = x1[s:e], x2[s:e]
        wb = w if plan.shared else w[s:e]
        X1s, X2s, acc = {}, {}, {}
        for g in groups:
            if g.i1 not in X1s:
                X1s[g.i1] = _to_cm(xa, plan.s1[g.i1], g.U, g.d1)
            if g.i2 not in X2s:
                X2s[g.i2] = _to_cm(xb, plan.s2[g.i2], g.V, g.d2)
            res = plan.ct(g, dtype, device) @ _outer(g, X1s[g.i1], X2s[g.i2])
            for m in g.members:
                W = _weights(wb, m, plan.shared, n) if m.has_weight else None
                r = _res_view(g, res, m, n)
                if plan.sole_writer[m.index] and m.has_weight and r.dim() == 3 and m.mode in ("uvu", "uuu"):
                    # the only path into its output block: weight it while writing it out
                    Wf = W if m.mode == "uuu" else W.reshape(W.shape[:-1])
                    mul, ir = plan.irreps_out[m.i_out]
                    torch.mul(r.permute(1, 2, 0), Wf.unsqueeze(-1), out=out[s:e, plan.so[m.i_out]].view(n, mul, ir.dim))
                    continue
                contrib = _member_forward(m, r, W, plan.shared)
                acc[m.i_out] = contrib if m.i_out not in acc else acc[m.i_out] + contrib
        for i, a in acc.items():
            _from_cm(a, out[s:e, plan.so[i]])
    return out


def backward_blocks(plan: Plan, grad: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor):
    B = x1.shape[0]
    dtype, device = x1.dtype, x1.device
    if _use_native(plan, x1, x2, w, grad):
        # The kernel writes all of gx1 and gx2 and the weight gradient of its paths (per-sample
        # weights written, shared ones added); the other paths add to gx1/gx2 and write theirs.
        lib = _native.library()
        gx1, gx2 = _fresh(x1.shape, x1, lib), _fresh(x2.shape, x2, lib)
        if plan.shared:
            gw = torch.zeros(w.shape[0], plan.weight_numel, dtype=dtype, device=device)
        else:
            gw = _fresh((w.shape[0], plan.weight_numel), w, lib)
        _native_backward(plan, grad, x1, x2, w, gx1, gx2, gw)
        groups, accumulate = plan.rest_groups, True
    else:
        gx1 = torch.zeros_like(x1)  # entries of irreps that no path uses stay zero
        gx2 = torch.zeros_like(x2)
        gw = torch.zeros(1 if plan.shared else B, plan.weight_numel, dtype=dtype, device=device)
        groups, accumulate = plan.groups, False
    if not groups:
        return gx1, gx2, gw
    c = plan.block_size(x1.element_size(), x1.device, B)
    for s in range(0, B, c):
        e = min(s + c, B)
        n = e - s
        xa, xb, gb = x1[s:e], x2[s:e], grad[s:e]
        wb = w if plan.shared else w[s:e]
        X1s, X2s, G1, G2, GO = {}, {}, {}, {}, {}
        for g in groups:
            if g.i1 not in X1s:
                X1s[g.i1] = _to_cm(xa, plan.s1[g.i1], g.U, g.d1)
            if g.i2 not in X2s:
                X2s[g.i2] = _to_cm(xb, plan.s2[g.i2], g.V, g.d2)
            X1, X2 = X1s[g.i1], X2s[g.i2]
            ct = plan.ct(g, dtype, device)
            res = ct @ _outer(g, X1, X2)
            gres = torch.empty_like(res)
            for m in g.members:
                if m.i_out not in GO:
                    mul, ir = plan.irreps_out[m.i_out]
                    GO[m.i_out] = _to_cm(gb, plan.so[m.i_out], mul, ir.dim)
                W = _weights(wb, m, plan.shared, n) if m.has_weight else None
                r = _res_view(g, res, m, n)
                if m.has_weight and r.dim() == 3 and m.mode in ("uvu", "uuu"):
                    go = GO[m.i_out]
                    Wf = W if m.mode == "uuu" else W.reshape(W.shape[:-1])
                    torch.mul(go, Wf, out=gres[m.k0 : m.k0 + m.dout].view(r.shape))
                    gW = (go * r).sum(0)
                    gW = gW.sum(0).reshape(m.shape) if plan.shared else gW.reshape(n, *m.shape)
                else:
                    gr, gW = _member_backward(m, r, W, GO[m.i_out], plan.shared)
                    gres[m.k0 : m.k0 + m.dout] = gr.reshape(m.dout, -1)
                if gW is not None:
                    size = math.prod(m.shape)
                    if plan.shared:
                        gw[0, m.offset : m.offset + size] += gW.reshape(-1)
                    else:
                        gw[s:e, m.offset : m.offset + size] = gW.reshape(n, size)
            gZ = ct.T @ gres
            if g.diag:
                gZ = gZ.reshape(g.d1, g.d2, n, g.U)
                g1, g2 = (gZ * X2[None]).sum(1), (gZ * X1[:, None]).sum(0)
            elif g.V == 1:
                gZ = gZ.reshape(g.d1, g.d2, n, g.U)
                g1, g2 = (gZ * X2[None]).sum(1), (gZ * X1[:, None]).sum((0, 3))[..., None]
            else:
                gZ = gZ.reshape(g.d1, g.d2, n, g.U, g.V)
                g1, g2 = torch.einsum("ijnuv,jnv->inu", gZ, X2), torch.einsum("ijnuv,inu->jnv", gZ, X1)
            G1[g.i1] = g1 if g.i1 not in G1 else G1[g.i1].add_(g1)
            G2[g.i2] = g2 if g.i2 not in G2 else G2[g.i2].add_(g2)
        for i, G in G1.items():
            _from_cm(G, gx1[s:e, plan.s1[i]], accumulate)
        for i, G in G2.items():
            _from_cm(G, gx2[s:e, plan.s2[i]], accumulate)
    return gx1, gx2, gw


# ----------------------------------------------------------------------------- custom ops
@torch.library.custom_op("eqgeo::tensor_product", mutates_args=())
def tensor_product_op(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    """``(B, dim1), (B, dim2), (B or 1, numel) -> (B, dim_out)``; ``key`` names the plan."""
    return forward_blocks(get_plan(key), x1.contiguous(), x2.contiguous(), weight.contiguous())


@tensor_product_op.register_fake
def _(x1, x2, weight, key):
    return x1.new_empty(x1.shape[0], Irreps(json.loads(key)["out"]).dim)


@torch.library.custom_op("eqgeo::tensor_product_backward", mutates_args=())
def tensor_product_backward_op(
    grad: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, key: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return backward_blocks(get_plan(key), grad.contiguous(), x1.contiguous(), x2.contiguous(), weight.contiguous())


@tensor_product_backward_op.register_fake
def _(grad, x1, x2, weight, key):
    return torch.empty_like(x1), torch.empty_like(x2), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x1, x2, weight, key = inputs
    ctx.save_for_backward(x1, x2, weight)
    ctx.key = key


def _backward(ctx, grad):
    # The backward op is itself differentiable (eqgeo.nn._tp_double_backward registers its
    # exact derivative), so double backward (training on forces) also runs the fast kernels,
    # eagerly and inside compiled graphs.
    x1, x2, weight = ctx.saved_tensors
    gx1, gx2, gw = tensor_product_backward_op(grad, x1, x2, weight, ctx.key)
    return gx1, gx2, gw, None


tensor_product_op.register_autograd(_backward, setup_context=_setup_context)
