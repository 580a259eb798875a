"""Equivariant linear layer: mixes channels of equal irreps only (Schur's lemma), e3nn-compatible."""

from __future__ import annotations

import math

import torch

from ..o3 import Irreps
from .buffers import keep_float64
from .checks import check_features

__all__ = ["Linear"]


class Linear(torch.nn.Module):
    r"""Equivariant linear map between irreps features.

    .. math::

        y^{(o)}_{w} = \sum_{(i, o):\ \mathrm{ir}_i = \mathrm{ir}_o} \frac{1}{\sqrt{n_o}} \sum_u W^{(i,o)}_{uw}\, x^{(i)}_u
        \;+\; b^{(o)}_w \ [\mathrm{ir}_o = 0e]

    where :math:`n_o` is the number of input channels feeding output ``o``; by Schur's lemma
    only equal irreps mix, and each component of an irrep copy is scaled alike. Same weight
    layout, normalisation and initialisation as e3nn's ``o3.Linear`` (weights loaded from e3nn
    give the same outputs).

    Args:
        irreps_in, irreps_out: input and output irreps.
        biases: add a learnable bias to the ``0e`` outputs (initialised to zero).
        internal_weights: keep the weights as a parameter (default ``True`` when shared).
        shared_weights: ``False`` takes one weight row per sample in ``forward(x, weight)``.

    Shapes:
        ``x``: ``(..., irreps_in.dim)``; ``weight`` (external): ``(weight_numel,)`` or
        ``(..., weight_numel)``; output ``(..., irreps_out.dim)``.

    Example:
        >>> Linear("16x0e+8x1o", "8x0e+8x1o")
        Linear(16x0e+8x1o -> 8x0e+8x1o | 192 weights)
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        biases: bool = False,
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        if shared_weights is None:
            shared_weights = True
        if internal_weights is None:
            internal_weights = shared_weights
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True needs shared_weights=True")
        self.shared_weights = shared_weights
        self.internal_weights = internal_weights
        self.instructions = [
            (i, o)
            for i, (_, ir_i) in enumerate(self.irreps_in)
            for o, (_, ir_o) in enumerate(self.irreps_out)
            if ir_i == ir_o
        ]
        fan_in = {o: sum(self.irreps_in[i].mul for i, oo in self.instructions if oo == o) for o in range(len(self.irreps_out))}
        self.path_weights = [1 / math.sqrt(fan_in[o]) if fan_in[o] > 0 else 1.0 for _, o in self.instructions]
        self.weight_numel = sum(self.irreps_in[i].mul * self.irreps_out[o].mul for i, o in self.instructions)
        s_in, s_out = self.irreps_in.slices(), self.irreps_out.slices()
        self._paths = [
            (s_in[i], s_out[o], self.irreps_in[i].mul, self.irreps_out[o].mul, self.irreps_in[i].ir.dim, alpha)
            for (i, o), alpha in zip(self.instructions, self.path_weights)
        ]
        self._out_blocks = [(mul, ir.dim) for mul, ir in self.irreps_out]
        self.bias_slices = [s for s, (_, ir) in zip(self.irreps_out.slices(), self.irreps_out) if ir.is_scalar()] if biases else []
        self.bias_numel = sum(s.stop - s.start for s in self.bias_slices)
        self.weight = torch.nn.Parameter(torch.empty(self.weight_numel)) if internal_weights else None
        self.bias = torch.nn.Parameter(torch.empty(self.bias_numel)) if self.bias_numel else None
        index = [k for sl in self.bias_slices for k in range(sl.start, sl.stop)]
        self.register_buffer("bias_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self._register_matrix_tables()
        self.reset_parameters()

    def _register_matrix_tables(self) -> None:
        """Index tables of the dense matrix: entry ``dst[k]`` of the flattened ``(dim_in, dim_out)``
        matrix is ``weight[src[k]] * scale[k]`` (``W_uw`` times the path weight on the diagonal of
        each ``kron(W, I_d)`` block); every other entry is zero. Built once, so the matrix is one
        gather and one ``index_add`` per call. ``scale`` stays float64 (cast per call)."""
        src, dst, scale = [], [], []
        dim_out = self.irreps_out.dim
        off = 0
        for si, so, mi, mo, d, alpha in self._paths:
            u = torch.arange(mi).view(mi, 1, 1)
            w = torch.arange(mo).view(1, mo, 1)
            i = torch.arange(d).view(1, 1, d)
            src.append((off + u * mo + w).expand(mi, mo, d).reshape(-1))
            dst.append(((si.start + u * d + i) * dim_out + so.start + w * d + i).reshape(-1))
            scale.append(torch.full((mi * mo * d,), alpha, dtype=torch.float64))
            off += mi * mo
        cat = lambda parts, dtype: torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)  # noqa: E731
        self.register_buffer("_matrix_src", cat(src, torch.long), persistent=False)
        self.register_buffer("_matrix_dst", cat(dst, torch.long), persistent=False)
        self.register_buffer("_matrix_scale", cat(scale, torch.float64), persistent=False)
        # Work of one row: the dense product wastes dim_in * dim_out - nonzeros multiply-adds, the
        # block product (one product per path) costs a few small kernels more (see _use_blocks).
        self._dense_waste = self.irreps_in.dim * dim_out - self._matrix_dst.numel()

    def _apply(self, fn, recurse=True):
        return keep_float64(self, ["_matrix_scale"], lambda: super(Linear, self)._apply(fn, recurse))

    def reset_parameters(self) -> None:
        """Standard-normal weights (the normalisation is in the paths), zero biases."""
        with torch.no_grad():
            if self.weight is not None:
                self.weight.normal_()
            if self.bias is not None:
                self.bias.zero_()

    def __repr__(self) -> str:
        extra = f" + {self.bias_numel} biases" if self.bias_numel else ""
        return f"Linear({self.irreps_in} -> {self.irreps_out} | {self.weight_numel} weights{extra})"

    def _blocks(self, weight: torch.Tensor):
        """``(in slice, out slice, mul_in, d, W)`` per instruction; ``W`` ``(..., mul_in, mul_out)``
        with the path weight folded in. Reads only plain Python metadata (compile-friendly)."""
        off = 0
        for si, so, mi, mo, d, alpha in self._paths:
            yield si, so, mi, d, weight[..., off : off + mi * mo].reshape(*weight.shape[:-1], mi, mo) * alpha
            off += mi * mo

    def dense_matrix(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(irreps_in.dim, irreps_out.dim)`` matrix of the map (shared weights)."""
        weight = self.weight if weight is None else weight
        values = weight[self._matrix_src] * self._matrix_scale.to(weight.dtype)
        M = weight.new_zeros(self.irreps_in.dim * self.irreps_out.dim).index_add(0, self._matrix_dst, values)
        return M.view(self.irreps_in.dim, self.irreps_out.dim)

    #: Above this many wasted multiply-adds per call (rows x zeros of the dense matrix), a product
    #: per path beats one dense product (measured on 2-core x86 CPUs, forward + double backward:
    #: equal at about 6e6; the block form is 2x faster at 2,000 rows of 576 -> 256 features).
    BLOCK_PRODUCT_WASTE = 2_000_000

    def _use_blocks(self, x: torch.Tensor) -> bool:
        rows = x.numel() // max(x.shape[-1], 1)
        return rows * self._dense_waste > self.BLOCK_PRODUCT_WASTE

    def _block_product(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x @ dense_matrix(weight)`` without the zeros: one product per path in a
        component-major view of its block (``(rows * d, mul_in) @ (mul_in, mul_out)``)."""
        lead = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1])
        outs: dict[int, torch.Tensor] = {}
        for si, so, mi, d, W in self._blocks(weight):
            xi = rows[:, si]
            if d == 1:
                r = xi @ W
            else:
                r = (xi.reshape(-1, mi, d).transpose(1, 2) @ W).transpose(1, 2).reshape(-1, W.shape[-1] * d)
            outs[so.start] = r if so.start not in outs else outs[so.start] + r
        parts = []
        start = 0
        for mul, d in self._out_blocks:
            b = outs.get(start)
            parts.append(b if b is not None else rows.new_zeros(rows.shape[0], mul * d))
            start += mul * d
        y = torch.cat(parts, dim=-1) if parts else rows.new_zeros(rows.shape[0], 0)
        return y.reshape(*lead, self.irreps_out.dim)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        check_features("Linear", self.irreps_in, self.irreps_in.dim, x)
        if weight is None:
            if self.weight is None:
                raise ValueError(f"Linear has no internal weights: pass weight= ({self.weight_numel} numbers)")
            weight = self.weight
        if weight.shape[-1] != self.weight_numel:
            raise ValueError(f"Linear expects {self.weight_numel} weights, got last dimension {weight.shape[-1]}")
        if self.shared_weights:
            if weight.dim() != 1:
                raise ValueError(f"shared weights must have shape ({self.weight_numel},), got {tuple(weight.shape)}")
            weight = weight.to(x.dtype)
            y = self._block_product(x, weight) if self._use_blocks(x) else x @ self.dense_matrix(weight)
        else:
            y = self._per_sample(x, weight.to(x.dtype))
        if self.bias is not None:
            y = y.index_add(-1, self.bias_index, self.bias.to(y.dtype).expand(*y.shape[:-1], self.bias_numel))
        return y

    def _per_sample(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(x.shape[:-1], weight.shape[:-1])
        blocks = {}
        for si, so, mi, d, W in self._blocks(weight):
            xi = x[..., si].reshape(*x.shape[:-1], mi, d)
            r = torch.einsum("...ui,...uw->...wi", xi, W)
            blocks[so.start] = r if so.start not in blocks else blocks[so.start] + r
        parts = []
        start = 0
        for mul, d in self._out_blocks:
            b = blocks.get(start)
            parts.append((b.expand(*batch, mul, d) if b is not None else x.new_zeros(*batch, mul, d)).reshape(*batch, mul * d))
            start += mul * d
        return torch.cat(parts, dim=-1) if parts else x.new_zeros(*batch, 0)
