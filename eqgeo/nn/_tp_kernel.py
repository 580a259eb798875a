"""Fast tensor-product kernel: cache-blocked, component-major, one GEMM per input pair.

For the pair of input irreps ``(a, b)`` of a group of paths, the outer product
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

import functools
import json
import math
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily

from ..o3 import Irreps, wigner_3j
from ._tp_plan import Instruction, weight_offsets

_BLOCK_BYTES = 1 << 21  # budget for the largest per-block temporary


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
        offsets = weight_offsets(self.instructions)
        groups: dict[tuple, _Group] = {}
        blocks: dict[tuple, list] = {}
        for idx, (ins, off) in enumerate(zip(self.instructions, offsets)):
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
        self.groups = list(groups.values())
        self.s1, self.s2, self.so = self.irreps_in1.slices(), self.irreps_in2.slices(), self.irreps_out.slices()
        per_sample = [g.d1 * g.d2 * g.U * (1 if g.diag else g.V) for g in self.groups]
        per_sample += [sum(m.dout for m in g.members) * g.U * (1 if g.diag else g.V) for g in self.groups]
        self._per_sample = max(per_sample, default=1)
        writers = [sum(1 for i in self.instructions if i.i_out == o) for o in range(len(self.irreps_out))]
        self.sole_writer = [writers[i.i_out] == 1 for i in self.instructions]
        self._ct_cache: dict = {}

    def _cached(self, key, make):
        """Constant tensors cached per dtype/device; never a fake tensor made while tracing."""
        t = self._ct_cache.get(key)
        if t is None:
            t = make()
            first = t[0] if isinstance(t, list) else t
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


def _from_cm(a: torch.Tensor, dest: torch.Tensor) -> None:
    """Write component-major ``a`` ``(d, n, mul)`` into ``dest`` ``(n, mul*d)`` (e3nn layout)."""
    d, n, mul = a.shape
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


def forward_blocks(plan: Plan, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    B = x1.shape[0]
    dtype, device = x1.dtype, x1.device
    out = torch.empty(B, plan.irreps_out.dim, dtype=dtype, device=device)
    unused = [i for i in range(len(plan.irreps_out)) if not any(m.i_out == i for g in plan.groups for m in g.members)]
    for i in unused:
        out[:, plan.so[i]] = 0
    c = plan.block_size(x1.element_size(), x1.device, B)
    for s in range(0, B, c):
        e = min(s + c, B)
        n = e - s
        xa, xb = x1[s:e], x2[s:e]
        wb = w if plan.shared else w[s:e]
        X1s, X2s, acc = {}, {}, {}
        for g in plan.groups:
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
    gx1 = torch.zeros_like(x1)  # entries of irreps that no path uses stay zero
    gx2 = torch.zeros_like(x2)
    gw = torch.zeros(1 if plan.shared else B, plan.weight_numel, dtype=dtype, device=device)
    c = plan.block_size(x1.element_size(), x1.device, B)
    for s in range(0, B, c):
        e = min(s + c, B)
        n = e - s
        xa, xb, gb = x1[s:e], x2[s:e], grad[s:e]
        wb = w if plan.shared else w[s:e]
        X1s, X2s, G1, G2, GO = {}, {}, {}, {}, {}
        for g in plan.groups:
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
            _from_cm(G, gx1[s:e, plan.s1[i]])
        for i, G in G2.items():
            _from_cm(G, gx2[s:e, plan.s2[i]])
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
