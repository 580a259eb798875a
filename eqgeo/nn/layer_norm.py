"""Equivariant layer normalisation of irreps features (Equiformer, https://arxiv.org/abs/2206.11990)."""

from __future__ import annotations

import torch

from ..o3 import Irreps
from .checks import check_features

__all__ = ["EquivariantLayerNorm"]

_NORMALIZATIONS = ("component", "norm")


class EquivariantLayerNorm(torch.nn.Module):
    r"""Equivariant layer norm (Liao & Smidt, Equiformer, https://arxiv.org/abs/2206.11990).

    Each entry ``mul x ir`` of the irreps is normalised on its own, per sample, over its
    ``mul`` channels. Even scalars (``0e``) are centred and scaled like a standard layer norm;
    other irreps are not centred (that would break equivariance), only divided by the root mean
    square of their copies' norms:

    .. math::

        y_u = w_u \frac{x_u - \mu}{\sqrt{\frac{1}{m}\sum_{v} N(x_v - \mu) + \epsilon}} + b_u,
        \qquad N(x) = \frac{\|x\|^2}{2l+1} \text{ (component) or } \|x\|^2 \text{ (norm)},

    with :math:`\mu` the mean over the :math:`m` channels and :math:`b_u` for ``0e`` only
    (:math:`\mu = 0`, :math:`b_u = 0` otherwise); :math:`w_u` is one weight per irrep copy.
    ``"component"`` gives unit mean square components, ``"norm"`` unit mean square norms per
    copy. Equivariant: ``y(D(R) x) = D(R) y(x)`` for rotations and reflections.

    Args:
        irreps: irreps of the features (input and output).
        eps: added to the mean square before the square root (default ``1e-5``).
        affine: learn the weights :math:`w` (init 1) and biases :math:`b` (init 0) (default ``True``).
        normalization: ``"component"`` (default) or ``"norm"``.

    Shapes:
        - input: ``(..., irreps.dim)``
        - output: ``(..., irreps.dim)``

    Example:
        >>> import torch
        >>> ln = EquivariantLayerNorm("8x0e+4x1o")
        >>> ln
        EquivariantLayerNorm(8x0e+4x1o -> 8x0e+4x1o | component, 20 weights)
        >>> y = ln(3 * torch.randn(1000, 20) + 1)
        >>> bool(abs(y.pow(2).mean() - 1) < 1e-3)
        True
    """

    def __init__(self, irreps, eps: float = 1e-5, affine: bool = True, normalization: str = "component") -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps)
        self.irreps_out = self.irreps_in
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"EquivariantLayerNorm: normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        if not eps >= 0:
            raise ValueError(f"EquivariantLayerNorm: eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.normalization = normalization
        num_scalars = self.irreps_in.count("0e")
        if affine:
            self.weight = torch.nn.Parameter(torch.empty(self.irreps_in.num_irreps))
            self.bias = torch.nn.Parameter(torch.empty(num_scalars))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

        self._dim_in = self.irreps_in.dim
        # (start, mul, dim, is 0e, first copy index, first bias index) of each non-empty entry.
        self._entries = []
        start = copy = bias = 0
        for mul, ir in self.irreps_in:
            if mul > 0:
                self._entries.append((start, mul, ir.dim, ir.is_scalar(), copy, bias))
            start += mul * ir.dim
            copy += mul
            bias += mul if ir.is_scalar() else 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights to one, biases to zero."""
        if self.affine:
            torch.nn.init.ones_(self.weight)
            torch.nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise features ``x`` of shape ``(..., irreps.dim)``."""
        check_features("EquivariantLayerNorm", self.irreps_in, self._dim_in, x)
        batch = x.shape[:-1]
        out = []
        for start, mul, d, is_scalar, c0, b0 in self._entries:
            field = x[..., start : start + mul * d].reshape(*batch, mul, d)
            if is_scalar:
                field = field - field.mean(dim=-2, keepdim=True)
            sq = field.pow(2).sum(-1) if self.normalization == "norm" else field.pow(2).mean(-1)  # (..., mul)
            inv = (sq.mean(dim=-1, keepdim=True) + self.eps).rsqrt()  # (..., 1)
            if self.weight is not None:
                inv = inv * self.weight[c0 : c0 + mul]
            field = field * inv[..., None]
            if is_scalar and self.bias is not None:
                field = field + self.bias[b0 : b0 + mul, None]
            out.append(field.reshape(*batch, mul * d))
        if not out:
            return x
        return torch.cat(out, dim=-1) if len(out) > 1 else out[0]

    def __repr__(self) -> str:
        n = 0 if self.weight is None else self.weight.numel() + self.bias.numel()
        return f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out} | {self.normalization}, {n} weights)"
