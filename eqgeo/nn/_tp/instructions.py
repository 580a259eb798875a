"""Instructions of a tensor product, their normalisation (e3nn's) and the reference evaluation.

The reference evaluation is a plain loop over paths with dense Clebsch–Gordan blocks, kept as
the definition that the fast kernel is tested against, and used for double backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ...o3 import Irreps, wigner_3j

MODES = ("uvw", "uvu", "uvv", "uuw", "uuu")


@dataclass(frozen=True)
class Instruction:
    """One path ``irreps_in1[i_in1] x irreps_in2[i_in2] -> irreps_out[i_out]``.

    ``path_weight`` is the final multiplier of the path (e3nn's normalisation times the user's
    path weight); ``path_shape`` is the shape of its weights.
    """

    i_in1: int
    i_in2: int
    i_out: int
    connection_mode: str
    has_weight: bool
    path_weight: float
    path_shape: tuple


def _path_shape(mode: str, mul1: int, mul2: int, mul_out: int) -> tuple:
    return {
        "uvw": (mul1, mul2, mul_out),
        "uvu": (mul1, mul2),
        "uvv": (mul1, mul2),
        "uuw": (mul1, mul_out),
        "uuu": (mul1,),
    }[mode]


def _num_elements(mode: str, mul1: int, mul2: int) -> int:
    return {"uvw": mul1 * mul2, "uvu": mul2, "uvv": mul1, "uuw": mul1, "uuu": 1}[mode]


def build_instructions(
    irreps_in1: Irreps,
    irreps_in2: Irreps,
    irreps_out: Irreps,
    instructions: Sequence[tuple],
    irrep_normalization: str = "component",
    path_normalization: str = "element",
    in1_var: Sequence[float] | None = None,
    in2_var: Sequence[float] | None = None,
    out_var: Sequence[float] | None = None,
) -> list[Instruction]:
    """Validate user instructions ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``
    and attach e3nn's normalisation coefficients."""
    if irrep_normalization not in ("component", "norm", "none"):
        raise ValueError(f"irrep_normalization must be 'component', 'norm' or 'none', got {irrep_normalization!r}")
    if path_normalization not in ("element", "path", "none"):
        raise ValueError(f"path_normalization must be 'element', 'path' or 'none', got {path_normalization!r}")
    in1_var = [1.0] * len(irreps_in1) if in1_var is None else list(in1_var)
    in2_var = [1.0] * len(irreps_in2) if in2_var is None else list(in2_var)
    out_var = [1.0] * len(irreps_out) if out_var is None else list(out_var)
    for name, var, irreps in (("in1_var", in1_var, irreps_in1), ("in2_var", in2_var, irreps_in2), ("out_var", out_var, irreps_out)):
        if len(var) != len(irreps):
            raise ValueError(f"{name} has {len(var)} entries but the irreps {irreps} have {len(irreps)}")

    parsed = []
    for k, ins in enumerate(instructions):
        if len(ins) not in (5, 6):
            raise ValueError(f"instruction {k} {ins!r}: expected (i_in1, i_in2, i_out, mode, has_weight[, path_weight])")
        i1, i2, io, mode, has_weight = ins[:5]
        path_weight = float(ins[5]) if len(ins) == 6 else 1.0
        for i, irreps, name in ((i1, irreps_in1, "irreps_in1"), (i2, irreps_in2, "irreps_in2"), (io, irreps_out, "irreps_out")):
            if not 0 <= i < len(irreps):
                raise ValueError(f"instruction {k} {ins!r}: index {i} out of range for {name} = {irreps}")
        if mode not in MODES:
            raise ValueError(f"instruction {k} {ins!r}: connection mode {mode!r} is not one of {MODES}")
        (m1, ir1), (m2, ir2), (mo, iro) = irreps_in1[i1], irreps_in2[i2], irreps_out[io]
        if iro not in list(ir1 * ir2):
            raise ValueError(
                f"instruction {k} {ins!r}: {ir1} x {ir2} has no Clebsch-Gordan path to {iro} "
                f"(allowed: {', '.join(str(i) for i in ir1 * ir2)})"
            )
        need = {"uvw": None, "uvu": (mo, m1, "mul_out == mul_in1"), "uvv": (mo, m2, "mul_out == mul_in2"),
                "uuw": (m1, m2, "mul_in1 == mul_in2"), "uuu": (m1, m2, "mul_in1 == mul_in2")}[mode]
        if need is not None and need[0] != need[1]:
            raise ValueError(f"instruction {k} {ins!r}: mode {mode!r} needs {need[2]} ({irreps_in1[i1]}, {irreps_in2[i2]} -> {irreps_out[io]})")
        if mode == "uuu" and mo != m1:
            raise ValueError(f"instruction {k} {ins!r}: mode 'uuu' needs mul_out == mul_in1")
        if mode in ("uvw", "uuw") and not has_weight:
            raise ValueError(f"instruction {k} {ins!r}: mode {mode!r} needs has_weight=True (it mixes channels)")
        parsed.append((i1, i2, io, mode, bool(has_weight), path_weight))

    out = []
    for i1, i2, io, mode, has_weight, path_weight in parsed:
        (m1, ir1), (m2, ir2), (mo, iro) = irreps_in1[i1], irreps_in2[i2], irreps_out[io]
        alpha = {"component": iro.dim, "norm": ir1.dim * ir2.dim, "none": 1}[irrep_normalization]
        if path_normalization == "element":
            x = sum(in1_var[a] * in2_var[b] * _num_elements(md, irreps_in1[a].mul, irreps_in2[b].mul)
                    for a, b, o, md, _, _ in parsed if o == io)
        elif path_normalization == "path":
            x = in1_var[i1] * in2_var[i2] * _num_elements(mode, m1, m2)
            x *= sum(1 for p in parsed if p[2] == io)
        else:
            x = 1
        if x > 0:
            alpha /= x
        alpha *= out_var[io] * path_weight
        out.append(Instruction(i1, i2, io, mode, has_weight, math.sqrt(alpha), _path_shape(mode, m1, m2, mo)))
    return out


def weight_offsets(instructions: Sequence[Instruction]) -> list[int | None]:
    """Start of each instruction's weights in the flat weight vector (e3nn's order)."""
    offsets, off = [], 0
    for ins in instructions:
        if ins.has_weight:
            offsets.append(off)
            off += math.prod(ins.path_shape)
        else:
            offsets.append(None)
    return offsets


_EINSUM = {
    ("uvw", True): "zuvw,zui,zvj,ijk->zwk",
    ("uvv", True): "zuv,zui,zvj,ijk->zvk",
    ("uvv", False): "zui,zvj,ijk->zvk",
    ("uuw", True): "zuw,zui,zuj,ijk->zwk",
    ("uuu", True): "zu,zui,zuj,ijk->zuk",
    ("uuu", False): "zui,zuj,ijk->zuk",
}


def cg_blocks(irreps_in1, irreps_in2, irreps_out, instructions, dtype=torch.float64, device=None) -> list[torch.Tensor]:
    """The 3j block ``(d1, d2, d_out)`` of each instruction."""
    return [
        wigner_3j(irreps_in1[i.i_in1].ir.l, irreps_in2[i.i_in2].ir.l, irreps_out[i.i_out].ir.l, dtype=dtype, device=device)
        for i in instructions
    ]


def _uvu(w: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``out[z,u,k] = sum_v w[z,u,v] sum_ij C[i,j,k] a[z,u,i] b[z,v,j]`` as broadcasts and sums.

    ``b`` is contracted with ``C`` first (no channel index involved), then the rest is
    element-wise with reductions, which ``torch.compile`` fuses into one loop per path.
    """
    B, V, d2 = b.shape
    d1, dout = C.shape[0], C.shape[2]
    M = (b.reshape(B * V, d2) @ C.permute(1, 0, 2).reshape(d2, d1 * dout)).reshape(B, 1, V, d1, dout)
    t = (a[:, :, None, :, None] * M).sum(3)  # (B, U, V, dout)
    if w is None:
        return t.sum(2)
    return (w[..., None] * t).sum(2)


def reference_tensor_product(
    x1: torch.Tensor,
    x2: torch.Tensor,
    weight: torch.Tensor | None,
    irreps_in1: Irreps,
    irreps_in2: Irreps,
    irreps_out: Irreps,
    instructions: Sequence[Instruction],
    shared_weights: bool,
    cgs: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Tensor product by a loop over paths (``x1, x2``: ``(B, dim)``; weight ``(B or 1, numel)``).

    ``cgs``: the Clebsch–Gordan block of each instruction (computed when not given; modules
    pass their buffers, which keeps this function traceable by ``torch.compile``).
    """
    B = x1.shape[0]
    offsets = weight_offsets(instructions)
    blocks: list[torch.Tensor | None] = [None] * len(irreps_out)
    s1, s2 = irreps_in1.slices(), irreps_in2.slices()
    if cgs is None:
        cgs = cg_blocks(irreps_in1, irreps_in2, irreps_out, instructions, x1.dtype, x1.device)
    for ins, off, C in zip(instructions, offsets, cgs):
        (m1, ir1), (m2, ir2) = irreps_in1[ins.i_in1], irreps_in2[ins.i_in2]
        a = x1[:, s1[ins.i_in1]].reshape(B, m1, ir1.dim)
        b = x2[:, s2[ins.i_in2]].reshape(B, m2, ir2.dim)
        C = C.to(x1.dtype)
        w = None
        if ins.has_weight:
            n = math.prod(ins.path_shape)
            w = weight[:, off : off + n].reshape(weight.shape[0], *ins.path_shape)
            if shared_weights:
                w = w.expand(B, *ins.path_shape)
        if ins.connection_mode == "uvu":
            r = _uvu(w, a, b, C)
        elif w is not None:
            r = torch.einsum(_EINSUM[(ins.connection_mode, True)], w, a, b, C)
        else:
            r = torch.einsum(_EINSUM[(ins.connection_mode, False)], a, b, C)
        r = ins.path_weight * r
        blocks[ins.i_out] = r if blocks[ins.i_out] is None else blocks[ins.i_out] + r
    parts = [
        (blk.reshape(B, mul * ir.dim) if blk is not None else x1.new_zeros(B, mul * ir.dim))
        for blk, (mul, ir) in zip(blocks, irreps_out)
    ]
    return torch.cat(parts, dim=-1) if parts else x1.new_zeros(B, 0)
