"""Irreducible representations of O(3) as immutable values.

An :class:`Irrep` is a pair ``(l, p)``: the degree ``l >= 0`` (dimension ``2l + 1``) and the
parity ``p = +1`` (``"e"``, even) or ``p = -1`` (``"o"``, odd). An :class:`Irreps` is an ordered
sequence of ``(mul, ir)`` pairs; a feature vector of type ``Irreps("16x0e+8x1o")`` stores the
16 scalars first, then the 8 vectors, each irrep block laid out as ``mul x (2l + 1)`` (e3nn's
layout), so ``Irreps(str(x)) == x`` and features interoperate with e3nn.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, NamedTuple, Sequence, Union

import torch

from ._rotation import angles_to_matrix, axis_angle_to_matrix
from ._wigner import wigner_D_from_matrix

__all__ = ["Irrep", "Irreps", "MulIr"]

_IRREP_RE = re.compile(r"^(\d+)([eo])$")
_MUL_RE = re.compile(r"^(\d+)x(.*)$")


class Irrep(tuple):
    """An irreducible representation of O(3): degree ``l`` and parity ``p``.

    Args:
        l: the degree, an ``int >= 0``, or a string such as ``"1o"``, or an ``Irrep``.
        p: the parity, ``+1`` or ``-1`` (omit when ``l`` is a string).

    Example:
        >>> Irrep("1o")
        1o
        >>> Irrep(2, 1).dim
        5
        >>> list(Irrep("1o") * Irrep("1o"))
        [0e, 1e, 2e]
    """

    def __new__(cls, l: Union[int, str, "Irrep", tuple], p: int | None = None) -> "Irrep":
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                token = l.strip()
                match = _IRREP_RE.match(token)
                if match is None:
                    raise ValueError(
                        f"invalid irrep {l!r}: expected '<l><e|o>' with an integer l >= 0, "
                        "e.g. '0e', '1o', '2e'"
                    )
                l, p = int(match.group(1)), 1 if match.group(2) == "e" else -1
            elif isinstance(l, tuple) and len(l) == 2:
                l, p = l
            else:
                raise ValueError(f"cannot make an Irrep from {l!r}")
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise ValueError(f"invalid irrep degree l={l!r}: must be an int >= 0")
        if p not in (1, -1):
            raise ValueError(f"invalid irrep parity p={p!r}: must be +1 or -1")
        return super().__new__(cls, (int(l), int(p)))

    def __getnewargs__(self):
        return (self.l, self.p)

    @property
    def l(self) -> int:  # noqa: E743
        """The degree ``l``."""
        return self[0]

    @property
    def p(self) -> int:
        """The parity, ``+1`` (even) or ``-1`` (odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """``2l + 1``."""
        return 2 * self.l + 1

    def is_scalar(self) -> bool:
        """True for ``0e``."""
        return self.l == 0 and self.p == 1

    def __repr__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    def __mul__(self, other):
        """``ir1 * ir2``: the irreps in the tensor product, ``|l1 - l2| .. l1 + l2``, parity ``p1 p2``.

        ``ir * n`` with an integer ``n`` gives ``Irreps([(n, ir)])``.
        """
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        other = Irrep(other)
        p = self.p * other.p
        return iter([Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1)])

    def __rmul__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        return NotImplemented

    def __add__(self, other):
        return Irreps(self) + Irreps(other)

    def __radd__(self, other):
        return Irreps(other) + Irreps(self)

    @classmethod
    def iterator(cls, lmax: int | None = None) -> Iterator["Irrep"]:
        """All irreps ``0e, 0o, 1o, 1e, 2e, 2o, ...`` up to ``lmax`` (forever when ``None``)."""
        l = 0
        while lmax is None or l <= lmax:
            yield Irrep(l, (-1) ** l)
            yield Irrep(l, -((-1) ** l))
            l += 1

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """Representation matrix of the O(3) element ``R`` (``(..., 3, 3)``, det = +-1).

        An improper ``R`` (det = -1) is ``-I`` times the rotation ``-R``: its matrix is
        ``p * D^l(-R)``.
        """
        det = torch.linalg.det(R)
        sign = torch.sign(det)
        D = wigner_D_from_matrix(self.l, R * sign[..., None, None])
        if self.p == -1:
            D = D * sign[..., None, None]
        return D

    def D_from_angles(
        self,
        alpha: torch.Tensor,
        beta: torch.Tensor,
        gamma: torch.Tensor,
        k: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Matrix of ``Ry(alpha) Rx(beta) Ry(gamma)`` composed with parity ``k`` times (e3nn)."""
        alpha, beta, gamma = torch.broadcast_tensors(
            torch.as_tensor(alpha), torch.as_tensor(beta), torch.as_tensor(gamma)
        )
        D = wigner_D_from_matrix(self.l, angles_to_matrix(alpha, beta, gamma))
        if k is not None:
            k = torch.as_tensor(k, dtype=D.dtype, device=D.device)
            D = D * (float(self.p) ** k)[..., None, None]
        return D

    def D_from_axis_angle(self, axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """Matrix of the rotation by ``angle`` about ``axis``."""
        return wigner_D_from_matrix(self.l, axis_angle_to_matrix(axis, angle))


class MulIr(NamedTuple):
    """A multiplicity and an irrep, as one entry of :class:`Irreps`."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    def __repr__(self) -> str:
        return f"{self.mul}x{self.ir}"


class _SortResult(NamedTuple):
    irreps: "Irreps"
    p: tuple
    inv: tuple


def _parse_term(term: str, text: str) -> MulIr:
    token = term.strip()
    if not token:
        raise ValueError(f"invalid irreps {text!r}: empty term (a stray '+')")
    match = _MUL_RE.match(token)
    if match is not None:
        mul, ir_text = int(match.group(1)), match.group(2)
    elif re.match(r"^\d+[eo]$", token):
        mul, ir_text = 1, token
    else:
        raise ValueError(
            f"invalid irreps {text!r}: cannot parse term {token!r} "
            "(expected '<mul>x<l><e|o>' or '<l><e|o>', e.g. '16x0e' or '1o')"
        )
    if not _IRREP_RE.match(ir_text):
        raise ValueError(
            f"invalid irreps {text!r}: bad irrep {ir_text!r} in term {token!r} "
            "(expected '<l><e|o>' with an integer l >= 0)"
        )
    return MulIr(mul, Irrep(ir_text))


class Irreps(tuple):
    """A direct sum of irreps with multiplicities, e.g. ``Irreps("16x0e + 8x1o + 4x2e")``.

    Accepts a string (spaces optional, ``"1o"`` means ``"1x1o"``, ``""`` is empty), an
    :class:`Irrep`, another ``Irreps``, or a sequence of ``(mul, ir)`` pairs / irreps.

    Example:
        >>> x = Irreps("16x0e + 8x1o")
        >>> x.dim, x.num_irreps, x.lmax
        (40, 24, 1)
        >>> Irreps(str(x)) == x
        True
        >>> (x + "2e").simplify()
        16x0e+8x1o+1x2e
    """

    def __new__(cls, irreps=None) -> "Irreps":
        if isinstance(irreps, Irreps):
            return irreps
        entries: list[MulIr] = []
        if irreps is None:
            pass
        elif isinstance(irreps, Irrep):
            entries.append(MulIr(1, irreps))
        elif isinstance(irreps, str):
            if irreps.strip():
                entries = [_parse_term(t, irreps) for t in irreps.split("+")]
        elif isinstance(irreps, Iterable):
            for item in irreps:
                entries.append(_entry(item))
        else:
            raise ValueError(f"cannot make Irreps from {irreps!r}")
        return super().__new__(cls, entries)

    def __getnewargs__(self):
        return (str(self),)

    # ------------------------------------------------------------------ basic properties
    @property
    def dim(self) -> int:
        """Total dimension ``sum(mul * (2l + 1))``."""
        return sum(m.mul * m.ir.dim for m in self)

    @property
    def num_irreps(self) -> int:
        """Total multiplicity ``sum(mul)``."""
        return sum(m.mul for m in self)

    @property
    def ls(self) -> list[int]:
        """The degree of every copy, e.g. ``[0, 0, 1]`` for ``2x0e+1x1o``."""
        return [m.ir.l for m in self for _ in range(m.mul)]

    @property
    def lmax(self) -> int:
        """The largest degree; raises ``ValueError`` for empty irreps."""
        if len(self) == 0:
            raise ValueError("lmax of empty Irreps is undefined")
        return max(m.ir.l for m in self)

    def slices(self) -> list[slice]:
        """The slice of the feature vector that each entry occupies."""
        out, start = [], 0
        for m in self:
            out.append(slice(start, start + m.dim))
            start += m.dim
        return out

    def count(self, ir) -> int:  # type: ignore[override]
        """Total multiplicity of ``ir``."""
        ir = Irrep(ir)
        return sum(m.mul for m in self if m.ir == ir)

    def __contains__(self, ir) -> bool:  # type: ignore[override]
        try:
            ir = Irrep(ir)
        except ValueError:
            return False
        return any(m.ir == ir for m in self)

    def __repr__(self) -> str:
        return "+".join(repr(m) for m in self)

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        try:
            other = Irreps(other)
        except ValueError:
            return False
        return tuple.__eq__(self, other)

    def __ne__(self, other) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return tuple.__hash__(self)

    # ------------------------------------------------------------------ algebra
    def __add__(self, other) -> "Irreps":
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other) -> "Irreps":
        return Irreps(other) + self

    def __mul__(self, other) -> "Irreps":
        if isinstance(other, Irreps):
            raise TypeError("use o3.FullTensorProduct for the product of two Irreps")
        if not isinstance(other, int) or isinstance(other, bool):
            return NotImplemented
        return Irreps(tuple(self) * other)

    __rmul__ = __mul__

    def __getitem__(self, i):
        out = tuple.__getitem__(self, i)
        return Irreps(out) if isinstance(i, slice) else out

    def simplify(self) -> "Irreps":
        """Merge consecutive equal irreps and drop zero multiplicities (order kept)."""
        out: list[MulIr] = []
        for mul, ir in self:
            if mul == 0:
                continue
            if out and out[-1].ir == ir:
                out[-1] = MulIr(out[-1].mul + mul, ir)
            else:
                out.append(MulIr(mul, ir))
        return Irreps(out)

    def remove_zero_multiplicities(self) -> "Irreps":
        return Irreps([m for m in self if m.mul > 0])

    def sort(self) -> _SortResult:
        """Stable sort by ``(l, p)`` as e3nn does; returns ``(irreps, p, inv)``.

        ``p`` maps old positions to new ones and ``inv`` new positions to old ones.
        """
        order = sorted(range(len(self)), key=lambda i: (self[i].ir, i))
        inv = tuple(order)
        p = [0] * len(self)
        for new, old in enumerate(order):
            p[old] = new
        return _SortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def regroup(self) -> "Irreps":
        """``sort().irreps.simplify()``."""
        return self.sort().irreps.simplify()

    def filter(self, keep=None, *, drop=None, lmax: int | None = None) -> "Irreps":
        """Keep only some irreps (``keep``), remove some (``drop``), or cap the degree."""
        keep_set = None if keep is None else {m.ir for m in Irreps(keep)} if not callable(keep) else keep
        drop_set = set() if drop is None else {m.ir for m in Irreps(drop)}
        out = []
        for m in self:
            if keep_set is not None and (keep_set(m) if callable(keep_set) else m.ir not in keep_set):
                continue
            if m.ir in drop_set or (lmax is not None and m.ir.l > lmax):
                continue
            out.append(m)
        return Irreps(out)

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> "Irreps":
        """``1x0e + 1x1o + 1x2e + ...`` up to ``lmax`` (``p=-1``: parity ``(-1)^l``)."""
        return Irreps([(1, Irrep(l, p**l)) for l in range(lmax + 1)])

    # ------------------------------------------------------------------ tensors
    def randn(
        self,
        *size: int,
        normalization: str = "component",
        requires_grad: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Random features; ``-1`` in ``size`` marks the feature dimension (e3nn).

        ``normalization="component"``: unit-variance components; ``"norm"``: every irrep copy
        has unit norm.
        """
        if size.count(-1) != 1:
            raise ValueError(f"randn size {size} must contain exactly one -1 (the feature dimension)")
        di = size.index(-1)
        lsize, rsize = size[:di], size[di + 1 :]
        if normalization == "component":
            x = torch.randn(*lsize, self.dim, *rsize, dtype=dtype, device=device)
        elif normalization == "norm":
            parts = []
            for mul, ir in self:
                r = torch.randn(*lsize, mul, ir.dim, *rsize, dtype=dtype, device=device)
                r = r / r.norm(dim=di + 1, keepdim=True)
                parts.append(r.reshape(*lsize, mul * ir.dim, *rsize))
            x = (
                torch.cat(parts, dim=di)
                if parts
                else torch.zeros(*lsize, 0, *rsize, dtype=dtype, device=device)
            )
        else:
            raise ValueError(f"normalization must be 'component' or 'norm', got {normalization!r}")
        return x.requires_grad_(requires_grad)

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """Block-diagonal representation matrix ``(..., dim, dim)`` of ``R`` (det = +-1)."""
        det = torch.linalg.det(R)
        sign = torch.sign(det)
        proper = R * sign[..., None, None]
        cache: dict[int, torch.Tensor] = {}
        blocks = []
        for mul, ir in self:
            if ir.l not in cache:
                cache[ir.l] = wigner_D_from_matrix(ir.l, proper)
            D = cache[ir.l]
            if ir.p == -1:
                D = D * sign[..., None, None]
            blocks.extend([D] * mul)
        return _block_diag(blocks, R.shape[:-2], R.dtype, R.device)

    def D_from_angles(self, alpha, beta, gamma, k=None) -> torch.Tensor:
        """Block-diagonal matrix of ``Ry(alpha) Rx(beta) Ry(gamma)`` times parity ``k`` times."""
        alpha, beta, gamma = torch.broadcast_tensors(
            torch.as_tensor(alpha), torch.as_tensor(beta), torch.as_tensor(gamma)
        )
        R = angles_to_matrix(alpha, beta, gamma)
        if k is not None:
            k = torch.as_tensor(k, dtype=R.dtype, device=R.device)
            R = R * ((-1.0) ** k)[..., None, None]
        return self.D_from_matrix(R)

    def D_from_axis_angle(self, axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """Block-diagonal matrix of the rotation by ``angle`` about ``axis``."""
        return self.D_from_matrix(axis_angle_to_matrix(axis, angle))


def _entry(item) -> MulIr:
    if isinstance(item, MulIr):
        return MulIr(int(item.mul), Irrep(item.ir))
    if isinstance(item, (str, Irrep)):
        return MulIr(1, Irrep(item))
    if isinstance(item, Sequence) and len(item) == 2:
        mul, ir = item
        if isinstance(mul, bool) or not isinstance(mul, int) or mul < 0:
            raise ValueError(f"invalid multiplicity {mul!r} in {item!r}: must be an int >= 0")
        return MulIr(mul, Irrep(ir))
    raise ValueError(f"cannot read {item!r} as (mul, irrep)")


def _block_diag(blocks: list[torch.Tensor], batch_shape, dtype, device) -> torch.Tensor:
    n = sum(b.shape[-1] for b in blocks)
    out = torch.zeros(*batch_shape, n, n, dtype=dtype, device=device)
    i = 0
    for b in blocks:
        d = b.shape[-1]
        out[..., i : i + d, i : i + d] = b
        i += d
    return out
