"""Tensor products of irreps decomposed by Clebsch–Gordan coefficients, e3nn-compatible.

Same constructor arguments, instruction format, normalisation, feature layout and flat weight
layout as e3nn 0.6's ``o3.TensorProduct`` / ``o3.FullyConnectedTensorProduct``: weights taken
from an e3nn module load directly and give the same outputs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..o3 import Irreps
from ._tp import get_plan, plan_key, tensor_product_op
from ._tp.instructions import build_instructions, cg_blocks, reference_tensor_product

__all__ = ["TensorProduct", "FullyConnectedTensorProduct"]

_IMPLEMENTATIONS = ("fast", "reference")


class TensorProduct(torch.nn.Module):
    r"""Equivariant bilinear map of two irreps features, path by path.

    .. math::

        z^{(k)}_{w} = \alpha_k \sum_{u,v} W^{(k)}_{uvw}\, C^{l_1 l_2 l_o}_{ijm}\, x_{u i}\, y_{v j}

    for each instruction ``k = (i_in1, i_in2, i_out, mode, has_weight[, path_weight])``;
    ``mode`` says how channels connect: ``"uvw"`` (fully connected), ``"uvu"`` (output channel =
    channel of ``x``; NequIP's convolution with per-edge weights), ``"uvv"``, ``"uuw"`` and
    ``"uuu"`` (element-wise). :math:`\alpha_k` is e3nn's normalisation
    (``irrep_normalization="component"``, ``path_normalization="element"`` by default), so
    outputs have unit variance for unit-variance inputs and weights.

    Args:
        irreps_in1, irreps_in2, irreps_out: irreps of the two inputs and the output.
        instructions: list of ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.
        in1_var, in2_var, out_var: variances per irrep entry (e3nn's arguments).
        irrep_normalization: ``"component"``, ``"norm"`` or ``"none"``.
        path_normalization: ``"element"``, ``"path"`` or ``"none"``.
        internal_weights: keep the weights as a parameter (default: when weights are shared).
        shared_weights: one set of weights for all samples (default ``True``); ``False`` takes
            one weight row per sample, e.g. per-edge weights from a radial MLP.
        implementation: ``"fast"`` (cache-blocked kernel, default) or ``"reference"`` (loop over
            paths with dense Clebsch–Gordan blocks; the definition the fast one is tested against).

    Shapes:
        ``x1``: ``(..., irreps_in1.dim)``, ``x2``: ``(..., irreps_in2.dim)`` (leading dims
        broadcast), ``weight``: ``(weight_numel,)`` when shared, ``(..., weight_numel)`` otherwise;
        output ``(..., irreps_out.dim)``.

    Equivariant: ``f(D1 x, D2 y) = D_out f(x, y)`` for every rotation and reflection.

    Example:
        >>> tp = TensorProduct("8x0e+8x1o", "0e+1o", "8x1o", [(0, 1, 0, "uvu", True), (1, 0, 0, "uvu", True)])
        >>> tp
        TensorProduct(8x0e+8x1o x 1x0e+1x1o -> 8x1o | 2 paths | 16 weights)
        >>> tp(torch.randn(5, 32), torch.randn(5, 4)).shape
        torch.Size([5, 24])
    """

    def __init__(
        self,
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions: Sequence[tuple],
        in1_var: Sequence[float] | None = None,
        in2_var: Sequence[float] | None = None,
        out_var: Sequence[float] | None = None,
        irrep_normalization: str = "component",
        path_normalization: str = "element",
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
        implementation: str = "fast",
    ) -> None:
        super().__init__()
        self.irreps_in1 = Irreps(irreps_in1)
        self.irreps_in2 = Irreps(irreps_in2)
        self.irreps_out = Irreps(irreps_out)
        self.instructions = build_instructions(
            self.irreps_in1, self.irreps_in2, self.irreps_out, instructions,
            irrep_normalization, path_normalization, in1_var, in2_var, out_var,
        )
        if shared_weights is None:
            shared_weights = True
        if internal_weights is None:
            internal_weights = shared_weights and any(i.has_weight for i in self.instructions)
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True needs shared_weights=True")
        if implementation not in _IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}")
        self.shared_weights = shared_weights
        self.internal_weights = internal_weights
        self.implementation = implementation
        self.weight_numel = sum(math.prod(i.path_shape) for i in self.instructions if i.has_weight)
        self._key = plan_key(self.irreps_in1, self.irreps_in2, self.irreps_out, self.instructions, shared_weights)
        get_plan(self._key)  # build the fast kernel's tables now, outside any compiled region
        # 3j blocks as buffers: used by the reference path and under torch.compile.
        for k, C in enumerate(cg_blocks(self.irreps_in1, self.irreps_in2, self.irreps_out, self.instructions)):
            self.register_buffer(f"cg_{k}", C, persistent=False)
        if internal_weights and self.weight_numel > 0:
            self.weight = torch.nn.Parameter(torch.empty(self.weight_numel))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Standard-normal weights (e3nn's initialisation; the normalisation is in the paths)."""
        if self.weight is not None:
            with torch.no_grad():
                self.weight.normal_()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
            f"{len(self.instructions)} paths | {self.weight_numel} weights)"
        )

    def _check(self, x: torch.Tensor, irreps: Irreps, name: str) -> None:
        if x.shape[-1] != irreps.dim:
            raise ValueError(
                f"{type(self).__name__} expects {name} of irreps {irreps} (dim {irreps.dim}), "
                f"got last dimension {x.shape[-1]}"
            )

    def _weight(self, weight: torch.Tensor | None, batch: tuple, dtype, device) -> torch.Tensor:
        if self.weight_numel == 0:
            if weight is not None and weight.shape[-1] != 0:
                raise ValueError(f"{type(self).__name__} has no weighted paths, got weights of shape {tuple(weight.shape)}")
            return torch.zeros(1, 0, dtype=dtype, device=device)
        if weight is None:
            if self.weight is None:
                raise ValueError(f"{type(self).__name__} has no internal weights: pass weight= ({self.weight_numel} per sample)")
            return self.weight.reshape(1, -1)
        if weight.shape[-1] != self.weight_numel:
            raise ValueError(f"{type(self).__name__} expects {self.weight_numel} weights, got last dimension {weight.shape[-1]}")
        if self.shared_weights:
            if weight.dim() != 1:
                raise ValueError(f"shared weights must have shape ({self.weight_numel},), got {tuple(weight.shape)}")
            return weight.reshape(1, -1)
        return weight.expand(*batch, self.weight_numel).reshape(-1, self.weight_numel)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x1, self.irreps_in1, "x1")
        self._check(x2, self.irreps_in2, "x2")
        if x1.dtype != x2.dtype or x1.device != x2.device:
            raise ValueError(
                f"{type(self).__name__} ({self.irreps_in1} x {self.irreps_in2}) needs x1 and x2 of one dtype and "
                f"device, got {x1.dtype} on {x1.device} and {x2.dtype} on {x2.device}"
            )
        if weight is not None and weight.device != x1.device:
            raise ValueError(f"{type(self).__name__}: weights on {weight.device}, features on {x1.device}")
        batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        if not self.shared_weights and weight is not None:
            batch = torch.broadcast_shapes(batch, weight.shape[:-1])
        a = x1.expand(*batch, x1.shape[-1]).reshape(-1, x1.shape[-1])
        b = x2.expand(*batch, x2.shape[-1]).reshape(-1, x2.shape[-1])
        w = self._weight(weight, batch, a.dtype, a.device).to(a.dtype)
        if self.implementation == "fast":
            # One opaque custom op, also under torch.compile (no graph break).
            out = tensor_product_op(a, b, w, self._key)
        else:
            cgs = [getattr(self, f"cg_{k}") for k in range(len(self.instructions))]
            out = reference_tensor_product(
                a, b, w, self.irreps_in1, self.irreps_in2, self.irreps_out, self.instructions, self.shared_weights, cgs
            )
        return out.reshape(*batch, self.irreps_out.dim)


class FullyConnectedTensorProduct(TensorProduct):
    """Every allowed path ``irreps_in1[i] x irreps_in2[j] -> irreps_out[k]`` in ``"uvw"`` mode.

    Example:
        >>> FullyConnectedTensorProduct("2x0e+1o", "1o", "0e+1e")
        FullyConnectedTensorProduct(2x0e+1x1o x 1x1o -> 1x0e+1x1e | 2 paths | 2 weights)
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, **kwargs) -> None:
        irreps_in1, irreps_in2, irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
        instructions = [
            (i1, i2, io, "uvw", True)
            for i1, (_, ir1) in enumerate(irreps_in1)
            for i2, (_, ir2) in enumerate(irreps_in2)
            for io, (_, iro) in enumerate(irreps_out)
            if iro in list(ir1 * ir2)
        ]
        if not instructions:
            raise ValueError(f"no Clebsch-Gordan path from {irreps_in1} x {irreps_in2} to {irreps_out}")
        super().__init__(irreps_in1, irreps_in2, irreps_out, instructions, **kwargs)
