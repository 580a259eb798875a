"""The architecture arguments shared by eqgeo's networks, defined once.

:class:`~eqgeo.models.InteratomicPotential`, :class:`~eqgeo.models.PropertyModel` and
:class:`~eqgeo.models.DockingModel` are the same trunk (a species embedding and an
:class:`~eqgeo.models.InteractionStack`) under different readouts. The arguments of that trunk,
their defaults and their meaning are the fields of :class:`Architecture`; each model takes them
as keyword arguments (``InteratomicPotential(species, channels=16, lmax=1)``, the keys of
``conf/model/*.yaml``), with the defaults of its :attr:`default_architecture`, and an argument that
is not a field raises a ``TypeError`` naming it, as a misspelt keyword of any Python function does.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..o3 import Irreps
from ._common import InteractionStack, hidden_irreps

__all__ = ["Architecture"]


@dataclass(frozen=True)
class Architecture:
    r"""The architecture of an eqgeo network's trunk: hidden irreps, interaction layers, radial MLPs, readout.

    Args:
        channels: multiplicity of every hidden irrep (default ``32``).
        lmax: maximum degree of the hidden irreps and edge harmonics (default ``2``).
        num_layers: number of interaction layers (default ``3``).
        parity: ``"natural"`` (``0e+1o+2e+...``) or ``"full"`` (both parities at every ``l``),
            see :func:`~eqgeo.models.hidden_irreps` (default ``"natural"``).
        layer: ``"conv"`` (:class:`~eqgeo.nn.EquivariantConv`) or ``"transformer"``
            (:class:`~eqgeo.nn.EquivariantTransformerConv`) (default ``"conv"``).
        cutoff: neighbour cutoff (Å) (default ``5.0``).
        num_radial: size of the radial basis (default ``8``).
        radial_hidden: width of the radial MLPs' hidden layers (default ``64``).
        radial_layers: number of hidden layers of the radial MLPs (default ``2``).
        avg_num_neighbors: mean number of neighbours in the training data, a constant of the
            model (see :class:`~eqgeo.nn.EquivariantConv`) (default ``10.0``).
        heads: attention heads (``layer="transformer"``) (default ``4``).
        key_dim: attention key size (``layer="transformer"``) (default ``8``).
        readout_hidden: width of the invariant readouts (default ``16``).
        max_num_neighbors: nearest neighbours kept per atom when the model builds the graph
            (``None``: all within the cutoff) (default ``None``).
        correlation: body order of each layer's update: ``1`` (default), the gated convolution
            alone (two-body messages, NequIP); ``nu > 1`` adds a
            :class:`~eqgeo.nn.ManyBodyProduct` of degree ``nu`` with per-species weights after
            each layer's gate (products of up to ``nu`` of an atom's gated features, which sum
            its neighbours' messages: MACE's body order).

    Each model keeps its own defaults (:class:`~eqgeo.models.DockingModel`: 16 channels, 4
    layers, ``parity="full"``, 20 neighbours); :meth:`from_arguments` applies a model's keyword
    arguments to them.

    Example:
        >>> Architecture(channels=8, lmax=1).hidden_irreps()
        8x0e+8x1o
        >>> Architecture.from_arguments("InteratomicPotential", {"chanels": 8})
        Traceback (most recent call last):
        ...
        TypeError: InteratomicPotential() got an unexpected keyword argument 'chanels' (did you mean 'channels'?); ...
    """

    channels: int = 32
    lmax: int = 2
    num_layers: int = 3
    parity: str = "natural"
    layer: str = "conv"
    cutoff: float = 5.0
    num_radial: int = 8
    radial_hidden: int = 64
    radial_layers: int = 2
    avg_num_neighbors: float = 10.0
    heads: int = 4
    key_dim: int = 8
    readout_hidden: int = 16
    max_num_neighbors: Optional[int] = None
    correlation: int = 1

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The argument names, in the order of the fields."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_arguments(
        cls, model: str, arguments: Mapping[str, Any], defaults: Optional[Architecture] = None
    ) -> Architecture:
        """``defaults`` (``Architecture()`` when ``None``) with the keyword ``arguments`` of ``model``'s constructor.

        Raises:
            TypeError: an argument that is not a field, named with the closest field and the
                list of fields (``model`` names the constructor in the message).
        """
        names = cls.names()
        for name in arguments:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(
                    f"{model}() got an unexpected keyword argument {name!r}{hint}; its architecture arguments are "
                    f"{', '.join(names)} (eqgeo.models.Architecture)"
                )
        return dataclasses.replace(cls() if defaults is None else defaults, **arguments)

    def hidden_irreps(self) -> Irreps:
        """``channels`` copies of every irrep up to ``lmax`` with this ``parity``."""
        return hidden_irreps(self.channels, self.lmax, self.parity)

    def interaction_stack(self, irreps_in, num_types: int = 1) -> InteractionStack:
        """The :class:`~eqgeo.models.InteractionStack` of this architecture on node features ``irreps_in``
        (``num_types``: the species types whose weights :attr:`correlation` > 1 keeps apart)."""
        return InteractionStack(
            irreps_in, self.hidden_irreps(), self.lmax, self.num_layers, layer=self.layer, cutoff=self.cutoff,
            num_radial=self.num_radial, radial_hidden=self.radial_hidden, radial_layers=self.radial_layers,
            avg_num_neighbors=self.avg_num_neighbors, heads=self.heads, key_dim=self.key_dim,
            correlation=self.correlation, num_types=num_types,
        )
