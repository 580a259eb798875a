"""Dropout of whole irrep copies, which keeps features equivariant."""

from __future__ import annotations

import torch

from ..o3 import Irreps
from .checks import check_features

__all__ = ["IrrepsDropout"]


class IrrepsDropout(torch.nn.Module):
    r"""Dropout that zeroes whole irrep copies (e3nn's ``Dropout``).

    In training, each copy :math:`x_u` (all its :math:`2l+1` components together) of each
    sample is kept with probability :math:`1 - p`:

    .. math::

        y_u = \frac{\xi_u}{1 - p}\, x_u, \qquad \xi_u \sim \mathrm{Bernoulli}(1 - p),

    so :math:`\mathbb{E}[y] = x`; in eval mode :math:`y = x`. Masking a whole copy by a scalar
    keeps the map equivariant for any fixed mask: ``y(D(R) x) = D(R) y(x)``, where dropping
    components one by one would not be. ``p = 1`` drops everything (output zero).

    Args:
        irreps: irreps of the features (input and output).
        p: probability of dropping a copy, in ``[0, 1]`` (default ``0.5``).

    Shapes:
        - input: ``(..., irreps.dim)``
        - output: ``(..., irreps.dim)``

    Example:
        >>> import torch
        >>> d = IrrepsDropout("4x0e+2x1o", p=0.25)
        >>> d
        IrrepsDropout(4x0e+2x1o -> 4x0e+2x1o | p=0.25, 0 weights)
        >>> x = torch.randn(3, 10)
        >>> y = d(x)  # training mode: each copy is zero or x / (1 - p)
        >>> bool(((y == 0) | torch.isclose(y, x / 0.75)).all())
        True
        >>> torch.equal(d.eval()(x), x)
        True
    """

    def __init__(self, irreps, p: float = 0.5) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps)
        self.irreps_out = self.irreps_in
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"IrrepsDropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self._dim_in = self.irreps_in.dim
        self._num_copies = self.irreps_in.num_irreps
        # Copy index of each feature component, to spread a (..., num_irreps) mask over (..., dim).
        index = [u for u, l in enumerate(self.irreps_in.ls) for _ in range(2 * l + 1)]
        self.register_buffer("_copy_of_component", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop irrep copies of ``x`` (``(..., irreps.dim)``) in training; identity in eval."""
        check_features("IrrepsDropout", self.irreps_in, self._dim_in, x)
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.rand(*x.shape[:-1], self._num_copies, dtype=x.dtype, device=x.device) >= self.p
        mask = keep.to(x.dtype) / (1.0 - self.p)
        return x * mask[..., self._copy_of_component]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out} | p={self.p:g}, 0 weights)"
