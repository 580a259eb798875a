"""The tensor product's forward and backward over a batch: the native kernel for its paths
where it applies, PyTorch block maths for the rest (see :mod:`eqgeo.nn._tp`)."""

from __future__ import annotations

import math

import torch

from .. import _native
from . import native
from .plan import Group, Member, Plan

__all__ = ["forward_blocks", "backward_blocks"]


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


def _weights(w: torch.Tensor, m: Member, shared: bool, n: int) -> torch.Tensor:
    size = math.prod(m.shape)
    if shared:
        return w[0, m.offset : m.offset + size].reshape(m.shape)
    return w[:, m.offset : m.offset + size].reshape(n, *m.shape)


def _flat(g: Group) -> bool:
    """Whether the group's ``res`` has one channel index (``uu*`` modes, or ``V == 1``)."""
    return g.diag or g.V == 1


def _outer(g: Group, X1: torch.Tensor, X2: torch.Tensor) -> torch.Tensor:
    if _flat(g):
        Z = X1[:, None] * X2[None]  # (d1, d2, n, U); X2 is (d2, n, U) or (d2, n, 1)
    else:
        Z = X1[:, None, :, :, None] * X2[None, :, :, None, :]  # (d1, d2, n, U, V)
    return Z.reshape(g.d1 * g.d2, -1)


def _member_forward(m: Member, r: torch.Tensor, W, shared: bool) -> torch.Tensor:
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


def _member_backward(m: Member, r: torch.Tensor, W, go: torch.Tensor, shared: bool):
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


def _res_view(g: Group, res: torch.Tensor, m: Member, n: int) -> torch.Tensor:
    r = res[m.k0 : m.k0 + m.dout]
    return r.reshape(m.dout, n, g.U) if _flat(g) else r.reshape(m.dout, n, g.U, g.V)


def forward_blocks(plan: Plan, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    B = x1.shape[0]
    dtype, device = x1.dtype, x1.device
    if native.use_native(plan, x1, x2, w):
        # writes the blocks of "uvu"/"uuu" paths and zeroes the blocks no path writes
        out = native.fresh((B, plan.irreps_out.dim), x1, _native.library())
        native.native_forward(plan, x1, x2, w, out)
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
    if native.use_native(plan, x1, x2, w, grad):
        # The kernel writes all of gx1 and gx2 and the weight gradient of its paths (per-sample
        # weights written, shared ones added); the other paths add to gx1/gx2 and write theirs.
        lib = _native.library()
        gx1, gx2 = native.fresh(x1.shape, x1, lib), native.fresh(x2.shape, x2, lib)
        if plan.shared:
            gw = torch.zeros(w.shape[0], plan.weight_numel, dtype=dtype, device=device)
        else:
            gw = native.fresh((w.shape[0], plan.weight_numel), w, lib)
        native.native_backward(plan, grad, x1, x2, w, gx1, gx2, gw)
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

