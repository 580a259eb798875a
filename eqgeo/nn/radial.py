"""Radial functions of edge lengths: bases, a smooth cutoff envelope and an MLP to per-edge weights.

Everything here is a function of interatomic distances only, so it is invariant under E(3);
the outputs are scalars (``0e``) that weight equivariant messages (NequIP, MACE).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from ..o3 import Irreps
from .checks import check_features
from .gate import Normalize2Mom

__all__ = ["BesselBasis", "GaussianBasis", "PolynomialCutoff", "RadialMLP", "RadialEmbedding"]

# Below this |a|, sin(a)/a is evaluated by its Taylor series (error < a^6/5040 ~ 1e-22).
_SINC_TAYLOR = 1e-3


def _sin_over(a: torch.Tensor) -> torch.Tensor:
    """``sin(a) / a`` with value 1 at 0 and finite derivatives of every order everywhere."""
    small = a.abs() < _SINC_TAYLOR
    safe = torch.where(small, torch.ones_like(a), a)
    a2 = a * a
    return torch.where(small, 1.0 - a2 / 6.0 + a2 * a2 / 120.0, torch.sin(safe) / safe)


def _check_positive(name: str, what: str, value) -> None:
    if not value > 0:
        raise ValueError(f"{name}: {what} must be > 0, got {value}")


class BesselBasis(torch.nn.Module):
    r"""Radial Bessel basis (DimeNet, https://arxiv.org/abs/2003.03123; NequIP).

    .. math::

        e_n(r) = \sqrt{\frac{2}{c}}\, \frac{\sin(\omega_n r / c)}{r}, \qquad \omega_n = n\pi,
        \quad n = 1, \dots, N,

    the spherical Bessel functions of order 0 that vanish at the cutoff :math:`c`; they are
    orthonormal, :math:`\int_0^c e_n(r) e_m(r) r^2 dr = \delta_{nm}`, and finite at
    :math:`r = 0`, where :math:`e_n(0) = \sqrt{2/c}\, \omega_n / c` (with finite derivatives of
    every order). With ``trainable=True`` the frequencies are learned (NequIP). They are stored
    in units of :math:`\pi`, as ``frequencies`` :math:`= \omega_n / \pi` (initially
    :math:`1, \dots, N`, exact in any dtype).

    Args:
        num_basis: number of functions :math:`N` (default ``8``).
        cutoff: :math:`c` (default ``5.0``).
        trainable: learn the frequencies (default ``False``).

    Shapes:
        - input: distances ``(...)``
        - output: ``(..., num_basis)``, irreps ``num_basis x 0e``

    Example:
        >>> import torch
        >>> b = BesselBasis(num_basis=4, cutoff=2.0)
        >>> b
        BesselBasis(r -> 4x0e | cutoff=2, 0 weights)
        >>> b(torch.tensor([0.0, 1.0])).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_basis: int = 8, cutoff: float = 5.0, trainable: bool = False) -> None:
        super().__init__()
        _check_positive("BesselBasis", "num_basis", num_basis)
        _check_positive("BesselBasis", "cutoff", cutoff)
        self.num_basis = int(num_basis)
        self.cutoff = float(cutoff)
        self.trainable = bool(trainable)
        self.irreps_out = Irreps([(self.num_basis, "0e")])
        frequencies = torch.empty(self.num_basis)
        if trainable:
            self.frequencies = torch.nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Frequencies to :math:`n\\pi` (``frequencies`` to ``1, ..., num_basis``)."""
        with torch.no_grad():
            self.frequencies.copy_(torch.arange(1, self.num_basis + 1, dtype=self.frequencies.dtype))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Basis values at distances ``r`` (``(...)``) as ``(..., num_basis)``."""
        w = self.frequencies * (math.pi / self.cutoff)
        return (math.sqrt(2.0 / self.cutoff) * w) * _sin_over(r[..., None] * w)

    def __repr__(self) -> str:
        n = self.num_basis if self.trainable else 0
        return f"{type(self).__name__}(r -> {self.irreps_out} | cutoff={self.cutoff:g}, {n} weights)"


class GaussianBasis(torch.nn.Module):
    r"""Gaussians on evenly spaced centres (SchNet, https://arxiv.org/abs/1706.08566; PyG's ``GaussianSmearing``).

    .. math::

        e_k(r) = \exp\left(-\frac{(r - \mu_k)^2}{2\sigma^2}\right), \qquad
        \mu_k = \mathrm{start} + k\,\frac{\mathrm{stop} - \mathrm{start}}{N - 1},

    with :math:`\sigma` the spacing of the centres unless given.

    Args:
        start: first centre (default ``0.0``).
        stop: last centre, usually the cutoff (default ``5.0``).
        num_basis: number of Gaussians :math:`N` (default ``8``).
        width: :math:`\sigma` (default: the spacing; required when ``num_basis == 1``).
        trainable: learn the centres and widths (default ``False``).

    Shapes:
        - input: distances ``(...)``
        - output: ``(..., num_basis)``, irreps ``num_basis x 0e``

    Example:
        >>> import torch
        >>> g = GaussianBasis(0.0, 4.0, num_basis=5)
        >>> g(torch.tensor([1.0]))
        tensor([[0.6065, 1.0000, 0.6065, 0.1353, 0.0111]])
    """

    def __init__(
        self,
        start: float = 0.0,
        stop: float = 5.0,
        num_basis: int = 8,
        width: Optional[float] = None,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("GaussianBasis", "num_basis", num_basis)
        if not stop > start:
            raise ValueError(f"GaussianBasis: stop must be > start, got start={start}, stop={stop}")
        if width is None:
            if num_basis < 2:
                raise ValueError("GaussianBasis: give width when num_basis == 1 (there is no spacing)")
            width = (stop - start) / (num_basis - 1)
        _check_positive("GaussianBasis", "width", width)
        self.start, self.stop, self.width = float(start), float(stop), float(width)
        self.num_basis = int(num_basis)
        self.trainable = bool(trainable)
        self.irreps_out = Irreps([(self.num_basis, "0e")])
        centers, widths = torch.empty(self.num_basis), torch.empty(self.num_basis)
        if trainable:
            self.centers, self.widths = torch.nn.Parameter(centers), torch.nn.Parameter(widths)
        else:
            self.register_buffer("centers", centers)
            self.register_buffer("widths", widths)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Centres evenly spaced on ``[start, stop]``, widths to ``width``."""
        with torch.no_grad():
            self.centers.copy_(torch.linspace(self.start, self.stop, self.num_basis, dtype=torch.float64))
            self.widths.fill_(self.width)

    def _apply(self, fn, recurse=True):
        # Fixed centres and widths are constants of (start, stop, width): after a dtype change
        # (module.double()) they are recomputed in the new dtype instead of keeping the rounding
        # of the old one (float32 centres moved to float64 are 1e-8 off).
        module = super()._apply(fn, recurse)
        if not self.trainable:
            self.reset_parameters()
        return module

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Basis values at distances ``r`` (``(...)``) as ``(..., num_basis)``."""
        return torch.exp(-0.5 * ((r[..., None] - self.centers) / self.widths).pow(2))

    def __repr__(self) -> str:
        n = 2 * self.num_basis if self.trainable else 0
        return (
            f"{type(self).__name__}(r -> {self.irreps_out} | [{self.start:g}, {self.stop:g}], "
            f"width={self.width:g}, {n} weights)"
        )


class PolynomialCutoff(torch.nn.Module):
    r"""Smooth polynomial cutoff envelope (NequIP, https://arxiv.org/abs/2101.03164; DimeNet).

    .. math::

        f(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \frac{p(p+1)}{2} x^{p+2}
        \quad (x = r / c < 1), \qquad f(x) = 0 \quad (x \ge 1).

    :math:`f(0) = 1`, and :math:`f`, :math:`f'` and :math:`f''` vanish at the cutoff, so
    energies and forces stay smooth as atoms cross it.

    Args:
        cutoff: :math:`c`.
        p: the exponent :math:`p > 0` (default ``6``).

    Shapes:
        - input: distances ``(...)``
        - output: ``(...)``

    Example:
        >>> import torch
        >>> PolynomialCutoff(5.0)(torch.tensor([0.0, 5.0, 6.0]))
        tensor([1., 0., 0.])
    """

    def __init__(self, cutoff: float, p: float = 6) -> None:
        super().__init__()
        _check_positive("PolynomialCutoff", "cutoff", cutoff)
        _check_positive("PolynomialCutoff", "p", p)
        self.cutoff = float(cutoff)
        self.p = float(p)
        self._coefficients = (
            -(self.p + 1.0) * (self.p + 2.0) / 2.0,
            self.p * (self.p + 2.0),
            -self.p * (self.p + 1.0) / 2.0,
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Envelope values at distances ``r``, same shape."""
        x = r / self.cutoff
        inside = x < 1.0
        # Evaluate the polynomial at min(x, 1) only, so large distances cannot overflow it
        # (an inf in the unused branch of the where would turn gradients into NaN).
        xc = torch.clamp(x, max=1.0)
        a, b, c = self._coefficients
        poly = 1.0 + xc.pow(self.p) * (a + xc * (b + c * xc))
        return torch.where(inside, poly, torch.zeros_like(poly))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(r -> 0e | cutoff={self.cutoff:g}, p={self.p:g}, 0 weights)"


class RadialMLP(torch.nn.Module):
    r"""MLP from radial basis features to per-edge weights, normalised like e3nn's ``FullyConnectedNet``.

    .. math::

        h_0 = x, \qquad h_{k+1} = \tilde\phi\left(\frac{h_k W_k}{\sqrt{d_k}}\right), \qquad
        y = \frac{h_K W_K}{\sqrt{d_K}},

    with weights :math:`W_k \sim \mathcal N(0, 1)` of shape :math:`d_k \times d_{k+1}`, no
    biases, and the activation :math:`\tilde\phi` normalised to unit second moment
    (:class:`~eqgeo.nn.gate.Normalize2Mom`). A unit second moment propagates layer by layer, so
    inputs of unit variance give outputs of unit mean square at initialisation.

    Args:
        num_basis: input dimension (number of basis functions).
        hidden: hidden layer sizes (default ``(64, 64)``).
        num_out: output dimension (keyword only, required).
        act: activation :math:`\phi` (default ``torch.nn.functional.silu``); ``None`` makes
            the MLP linear.

    Shapes:
        - input: ``(..., num_basis)``, irreps ``num_basis x 0e``
        - output: ``(..., num_out)``, irreps ``num_out x 0e``

    Example:
        >>> import torch
        >>> mlp = RadialMLP(8, [16], num_out=4)
        >>> mlp
        RadialMLP(8x0e -> 16 -> 4x0e | silu, 192 weights)
        >>> mlp(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        num_basis: int,
        hidden: Sequence[int] = (64, 64),
        *,
        num_out: int,
        act: Optional[Callable[[torch.Tensor], torch.Tensor]] = torch.nn.functional.silu,
    ) -> None:
        super().__init__()
        sizes = [int(num_basis), *[int(h) for h in hidden], int(num_out)]
        if any(s <= 0 for s in sizes):
            raise ValueError(f"RadialMLP: layer sizes must be > 0, got {sizes}")
        self.hs = sizes
        self.irreps_in = Irreps([(sizes[0], "0e")])
        self.irreps_out = Irreps([(sizes[-1], "0e")])
        self.act = None if act is None else Normalize2Mom(act)
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(torch.empty(a, b)) for a, b in zip(sizes, sizes[1:])])
        self._scales = [1.0 / math.sqrt(a) for a in sizes[:-1]]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights from a standard normal distribution."""
        for w in self.weights:
            torch.nn.init.normal_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map basis features ``(..., num_basis)`` to ``(..., num_out)``."""
        check_features("RadialMLP", self.irreps_in, self.hs[0], x)
        n = len(self._scales)
        for i, (w, s) in enumerate(zip(self.weights, self._scales)):
            x = x @ (w * s)
            if i < n - 1 and self.act is not None:
                x = self.act(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f" -> {h}" for h in self.hs[1:-1])
        name = "linear" if self.act is None else repr(self.act).split("*")[0]
        n = sum(w.numel() for w in self.weights)
        return f"{type(self).__name__}({self.irreps_in}{inner} -> {self.irreps_out} | {name}, {n} weights)"


_BASES = ("bessel", "gaussian")


class RadialEmbedding(torch.nn.Module):
    r"""Radial basis times a smooth cutoff envelope: the usual edge-length embedding of NequIP and MACE.

    .. math::

        e_n(r) = B_n(r)\, f_{\mathrm{cut}}(r),

    with :math:`B` a :class:`BesselBasis` (``basis="bessel"``) or a :class:`GaussianBasis` on
    ``[0, cutoff]`` (``basis="gaussian"``) and :math:`f_{\mathrm{cut}}` a
    :class:`PolynomialCutoff`, so every feature goes smoothly to zero at the cutoff.

    Args:
        num_basis: number of basis functions (default ``8``).
        cutoff: the cutoff radius (default ``5.0``).
        basis: ``"bessel"`` (default) or ``"gaussian"``.
        p: exponent of the polynomial cutoff (default ``6``).
        trainable: learn the basis' frequencies or centres and widths (default ``False``).

    Shapes:
        - input: distances ``(...)``
        - output: ``(..., num_basis)``, irreps ``num_basis x 0e``

    Example:
        >>> import torch
        >>> emb = RadialEmbedding(8, cutoff=4.0)
        >>> emb
        RadialEmbedding(r -> 8x0e | bessel, cutoff=4, p=6, 0 weights)
        >>> emb(torch.tensor([4.0, 5.0])).abs().max().item()
        0.0
    """

    def __init__(
        self, num_basis: int = 8, cutoff: float = 5.0, basis: str = "bessel", p: float = 6, trainable: bool = False
    ) -> None:
        super().__init__()
        if basis == "bessel":
            self.basis = BesselBasis(num_basis, cutoff, trainable=trainable)
        elif basis == "gaussian":
            self.basis = GaussianBasis(0.0, cutoff, num_basis, trainable=trainable)
        else:
            raise ValueError(f"RadialEmbedding: basis must be one of {_BASES}, got {basis!r}")
        self.basis_name = basis
        self.cutoff_fn = PolynomialCutoff(cutoff, p)
        self.irreps_out = self.basis.irreps_out

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Embed distances ``r`` (``(...)``) as ``(..., num_basis)``."""
        return self.embed(r)[0]

    def embed(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The embedding ``(..., num_basis)`` and the envelope :math:`f_{\mathrm{cut}}(r)` ``(...)``
        it contains, computed once (layers that also weight by the envelope take both)."""
        envelope = self.cutoff_fn(r)
        return self.basis(r) * envelope[..., None], envelope

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}(r -> {self.irreps_out} | {self.basis_name}, cutoff={self.cutoff_fn.cutoff:g}, "
            f"p={self.cutoff_fn.p:g}, {n} weights)"
        )
