"""Many-body features of one atom: symmetric products of its features up to a correlation order (MACE's idea)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..o3 import Irreps
from .checks import check_features
from .linear import Linear
from .tensor_product import TensorProduct

__all__ = ["ManyBodyProduct"]


class ManyBodyProduct(torch.nn.Module):
    r"""Equivariant polynomial of an atom's features up to degree ``correlation``, per species.

    .. math::

        A^{(1)}_{i} = x_i, \qquad
        A^{(\nu)}_{i} = A^{(\nu-1)}_i \otimes_{W^{(\nu)}_{Z_i}} x_i, \qquad
        y_i = \mathrm{Linear}\Big(\sum_{\nu=1}^{\nu_{\max}} w^{(\nu)}_{Z_i} A^{(\nu)}_{i}\Big),

    where :math:`\otimes_W` is a channel-wise (``"uuu"``) Clebsch–Gordan tensor product with one
    weight per channel and path and :math:`w^{(\nu)}` a weight per channel and irrep of degree
    :math:`\nu`'s share of the output, all chosen by the atom's species :math:`Z_i`. The
    :math:`w^{(\nu)}` let each degree's share be learned on its own: the coefficient of degree
    :math:`\nu` is :math:`w^{(\nu)} W^{(\nu)} \cdots W^{(2)}`, so a degree can be switched off
    without its products feeding the next. When ``x`` sums an atom's neighbours' messages,
    :math:`A^{(\nu)}` has :math:`(\nu+1)`-body terms, products of :math:`\nu` messages, as MACE's
    symmetric contraction (Batatia et al. 2022); here the products are iterated through the
    irreps of ``x`` (MACE couples through every intermediate degree), and in eqgeo's networks
    ``x`` is a layer's gated output (its neighbour sum after the self-connection and the gate's
    nonlinearity, where MACE multiplies the linear neighbour sum). Every step is
    O(3)-equivariant; species weights are invariant.

    Args:
        irreps: the features' irreps; every irrep appears once, all with the same multiplicity
            (e.g. ``32x0e+32x1o+32x2e``), as channel-wise products need.
        correlation: the highest degree :math:`\nu_{\max}` (``1``: a per-species linear map).
        num_types: the number of species (rows of the weight tables).
        irreps_out: the output irreps (default ``irreps``).

    Shapes:
        ``x``: ``(N, irreps.dim)``; ``types``: ``(N,)`` integer species indices in
        ``[0, num_types)`` (may be omitted when ``num_types == 1``); output ``(N, irreps_out.dim)``.

    Example:
        >>> product = ManyBodyProduct("8x0e+8x1o", correlation=3, num_types=2)
        >>> product
        ManyBodyProduct(8x0e+8x1o -> 8x0e+8x1o | correlation 3, 2 types, 352 weights)
        >>> product(torch.randn(5, 32), torch.tensor([0, 1, 1, 0, 1])).shape
        torch.Size([5, 32])
    """

    def __init__(self, irreps, correlation: int = 3, num_types: int = 1, irreps_out=None) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps)
        self.irreps_out = Irreps(irreps_out) if irreps_out is not None else self.irreps_in
        muls = {mul for mul, _ in self.irreps_in}
        irs = [ir for _, ir in self.irreps_in]
        if len(muls) != 1 or len(set(irs)) != len(irs):
            raise ValueError(
                f"ManyBodyProduct needs irreps whose irreps appear once, all with one multiplicity "
                f"(e.g. 8x0e+8x1o), got {self.irreps_in}"
            )
        if not isinstance(correlation, int) or correlation < 1:
            raise ValueError(f"correlation must be an integer >= 1, got {correlation!r}")
        if not isinstance(num_types, int) or num_types < 1:
            raise ValueError(f"num_types must be an integer >= 1, got {num_types!r}")
        self.correlation, self.num_types = correlation, num_types
        self.channels = muls.pop()
        instructions = [
            (i, j, o, "uuu", True)
            for i, a in enumerate(irs)
            for j, b in enumerate(irs)
            for o, c in enumerate(irs)
            if c in list(a * b)
        ]
        if correlation > 1 and not instructions:
            raise ValueError(f"ManyBodyProduct: no Clebsch-Gordan path {self.irreps_in} x {self.irreps_in} -> itself")
        self.products = torch.nn.ModuleList(
            TensorProduct(self.irreps_in, self.irreps_in, self.irreps_in, instructions,
                          shared_weights=False, internal_weights=False)
            for _ in range(correlation - 1)
        )
        # weight tables, row = species: each degree's share of the output (per channel and irrep), the products' paths
        self.degree_weight = torch.nn.Parameter(torch.empty(num_types, correlation, len(irs) * self.channels))
        self.product_weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(num_types, tp.weight_numel)) for tp in self.products
        )
        # the degree weights' index of every feature entry (block b, channel u, component m -> b*c + u)
        index = [b * self.channels + u for b, (mul, ir) in enumerate(self.irreps_in) for u in range(mul) for _ in range(ir.dim)]
        self.register_buffer("_channel_of", torch.tensor(index, dtype=torch.long), persistent=False)
        self.linear = Linear(self.irreps_in, self.irreps_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit degree weights; product weights normal with standard deviation ``1/sqrt(paths)``
        (the paths already carry e3nn's normalisation; the extra factor starts the higher degrees
        small beside the linear term, as MACE's ``1/num_params``, so that a deep stack of cubic
        updates does not amplify its features at initialisation)."""
        with torch.no_grad():
            self.degree_weight.fill_(1.0)
            for tp, w in zip(self.products, self.product_weights):
                w.normal_(std=len(tp.instructions) ** -0.5)
        self.linear.reset_parameters()

    @property
    def weight_numel(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out} | correlation {self.correlation}, "
            f"{self.num_types} types, {self.weight_numel} weights)"
        )

    def forward(self, x: Tensor, types: Optional[Tensor] = None) -> Tensor:
        check_features(type(self).__name__, self.irreps_in, self.irreps_in.dim, x)
        if types is None:
            if self.num_types != 1:
                raise ValueError(f"{type(self).__name__} has {self.num_types} species types: pass types (N,)")
            types = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        elif types.shape != x.shape[:1]:
            raise ValueError(
                f"{type(self).__name__}: types must have shape ({x.shape[0]},), one per row of x, got {tuple(types.shape)}"
            )
        degree = self.degree_weight.to(x.dtype)[types][:, :, self._channel_of]  # (N, correlation, dim)
        out = x * degree[:, 0]
        a = x
        for nu, (tp, weight) in enumerate(zip(self.products, self.product_weights), start=1):
            a = tp(a, x, weight.to(x.dtype)[types])
            out = out + a * degree[:, nu]
        return self.linear(out)
