"""Norm-based nonlinearity: each irrep copy scaled by a function of its norm (e3nn's ``NormActivation``)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..o3 import Irreps
from .checks import check_features

__all__ = ["NormActivation"]


class NormActivation(torch.nn.Module):
    r"""Norm activation (Tensor Field Networks, https://arxiv.org/abs/1802.08219; e3nn's ``NormActivation``).

    Every irrep copy :math:`x_u` (of any degree, scalars included) is multiplied by a scalar
    function of its norm:

    .. math::

        y_u = \frac{f(\|x_u\| + b_u)}{\|x_u\|_\epsilon}\, x_u \quad \text{(normalize=True)},
        \qquad y_u = f(\|x_u\| + b_u)\, x_u \quad \text{(normalize=False)},

    with :math:`\|x_u\|_\epsilon = \max(\|x_u\|, \epsilon)` and a learnable bias :math:`b_u`
    (zero, and absent, unless ``bias=True``). With ``normalize=True`` the output copy has norm
    :math:`f(\|x_u\| + b_u)` (for :math:`\|x_u\| \ge \epsilon`). Equivariant: norms are
    invariant, so ``y(D(R) x) = D(R) y(x)`` for rotations and reflections. Safe at
    :math:`x_u = 0`: values and gradients (first and second) are finite there. The activation
    is used as given, not normalised (e3nn's semantics).

    Args:
        irreps_in: irreps of the features (output irreps are the same).
        scalar_nonlinearity: elementwise function :math:`f`, e.g. ``torch.sigmoid``.
        normalize: divide by the norm before scaling (default ``True``).
        epsilon: norms below ``epsilon`` are clamped up to it when normalising (default
            ``1e-8`` when ``normalize``; must be ``None`` when ``normalize=False``).
        bias: learn one bias per irrep copy, added to the norm (default ``False``).

    Shapes:
        - input: ``(..., irreps_in.dim)``
        - output: ``(..., irreps_in.dim)``

    Example:
        >>> import torch
        >>> n = NormActivation("2x1e", torch.sigmoid)
        >>> n
        NormActivation(2x1e -> 2x1e | sigmoid, normalize, 0 weights)
        >>> n(torch.ones(1, 6)).reshape(2, 3).norm(dim=-1)
        tensor([0.8497, 0.8497])
    """

    def __init__(
        self,
        irreps_in,
        scalar_nonlinearity: Callable[[torch.Tensor], torch.Tensor],
        normalize: bool = True,
        epsilon: Optional[float] = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = self.irreps_in
        if not callable(scalar_nonlinearity):
            raise ValueError(f"NormActivation: scalar_nonlinearity must be callable, got {scalar_nonlinearity!r}")
        if normalize and epsilon is None:
            epsilon = 1e-8
        if epsilon is not None:
            if not normalize:
                raise ValueError("NormActivation: epsilon only applies with normalize=True; got normalize=False")
            if not epsilon > 0:
                raise ValueError(f"NormActivation: epsilon must be strictly positive, got {epsilon}")
        self.scalar_nonlinearity = scalar_nonlinearity
        self.normalize = bool(normalize)
        self.epsilon = epsilon
        self._eps_squared = 0.0 if epsilon is None else float(epsilon) ** 2
        if bias:
            self.biases = torch.nn.Parameter(torch.empty(self.irreps_in.num_irreps))
        else:
            self.register_parameter("biases", None)

        self._dim_in = self.irreps_in.dim
        # (start, mul, dim) of each non-empty entry; copies are numbered in order.
        self._entries = []
        start = 0
        for mul, ir in self.irreps_in:
            if mul > 0:
                self._entries.append((start, mul, ir.dim))
            start += mul * ir.dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Biases to zero."""
        if self.biases is not None:
            torch.nn.init.zeros_(self.biases)

    def _norms_squared(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., num_irreps)`` squared norm of each copy."""
        batch = x.shape[:-1]
        parts = [
            x[..., s : s + mul * d].reshape(*batch, mul, d).pow(2).sum(-1) for s, mul, d in self._entries
        ]
        return torch.cat(parts, dim=-1) if parts else x.new_zeros(*batch, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each irrep copy of ``x`` (``(..., irreps_in.dim)``) by a function of its norm."""
        check_features("NormActivation", self.irreps_in, self._dim_in, x)
        if not self._entries:
            return x
        sq = self._norms_squared(x)
        if self.normalize:
            norms = sq.clamp(min=self._eps_squared).sqrt()
        else:
            # sqrt with a zero (not NaN) gradient at 0: the other branch never sees 0.
            nonzero = sq > 0
            norms = torch.where(nonzero, torch.where(nonzero, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
        arg = norms if self.biases is None else norms + self.biases
        scale = self.scalar_nonlinearity(arg)
        if self.normalize:
            scale = scale / norms
        batch = x.shape[:-1]
        out, k = [], 0
        for s, mul, d in self._entries:
            y = x[..., s : s + mul * d].reshape(*batch, mul, d) * scale[..., k : k + mul, None]
            out.append(y.reshape(*batch, mul * d))
            k += mul
        return torch.cat(out, dim=-1) if len(out) > 1 else out[0]

    def __repr__(self) -> str:
        f = self.scalar_nonlinearity
        name = repr(f) if isinstance(f, torch.nn.Module) else getattr(f, "__name__", repr(f))
        mode = "normalize" if self.normalize else "unnormalized"
        n = 0 if self.biases is None else self.biases.numel()
        return f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out} | {name}, {mode}, {n} weights)"
