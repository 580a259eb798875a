"""The plan of one tensor product: its paths grouped by input pair with their Clebsch–Gordan
blocks (for the PyTorch path), the tables of the native kernel, the work per sample. Built once
per configuration (:func:`get_plan`, keyed by the JSON text of :func:`plan_key`, which is also the
string argument of the custom ops)."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily

from ...o3 import Irreps, wigner_3j
from .instructions import Instruction, weight_offsets

__all__ = ["Plan", "get_plan", "plan_key", "NATIVE_MODES"]

_BLOCK_BYTES = 1 << 21  # budget for the largest per-block temporary
#: Connection modes the native kernel computes.
NATIVE_MODES = ("uvu", "uuu")


def _native_mode(mode: str) -> int:
    return NATIVE_MODES.index(mode)  # the kernel's MODE_UVU = 0, MODE_UUU = 1


@dataclass
class Member:
    index: int
    k0: int
    dout: int
    mode: str
    has_weight: bool
    offset: int | None
    shape: tuple
    i_out: int


@dataclass
class Group:
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
        native_mode = [i.connection_mode in NATIVE_MODES for i in self.instructions]
        block_native = [
            all(native_mode[k] for k, i in enumerate(self.instructions) if i.i_out == o) for o in range(len(self.irreps_out))
        ]
        self.native_index = [k for k, i in enumerate(self.instructions) if block_native[i.i_out]]
        native = set(self.native_index)
        # each path's Clebsch-Gordan block times its path weight (d1, d2, dout), float64, made once
        # for the PyTorch groups and the native tables
        self.path_cg = [
            wigner_3j(self.irreps_in1[i.i_in1].ir.l, self.irreps_in2[i.i_in2].ir.l, self.irreps_out[i.i_out].ir.l,
                      dtype=torch.float64) * i.path_weight
            for i in self.instructions
        ]
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

    def _make_groups(self, indices) -> list[Group]:
        """The paths ``indices`` grouped by input pair, each group with its stacked 3j blocks."""
        groups: dict[tuple, Group] = {}
        blocks: dict[tuple, list] = {}
        for idx in indices:
            ins, off = self.instructions[idx], self._offsets[idx]
            (m1, ir1), (m2, ir2), (_, iro) = self.irreps_in1[ins.i_in1], self.irreps_in2[ins.i_in2], self.irreps_out[ins.i_out]
            diag = ins.connection_mode in ("uuu", "uuw")
            gk = (ins.i_in1, ins.i_in2, diag)
            if gk not in groups:
                groups[gk] = Group(ins.i_in1, ins.i_in2, diag, ir1.dim, ir2.dim, m1, m2, torch.empty(0))
                blocks[gk] = []
            g = groups[gk]
            C = self.path_cg[idx]
            k0 = sum(b.shape[0] for b in blocks[gk])
            blocks[gk].append(C.reshape(ir1.dim * ir2.dim, iro.dim).T)
            g.members.append(Member(idx, k0, iro.dim, ins.connection_mode, ins.has_weight, off, ins.path_shape, ins.i_out))
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
            C = self.path_cg[k]  # (d1, d2, dout)
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

    def ct(self, g: Group, dtype, device) -> torch.Tensor:
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


