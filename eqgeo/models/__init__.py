"""Full networks on PyG ``Data``/``Batch`` graphs: interatomic potential, property model, docking network.

All three take a ``Data``/``Batch`` with ``z`` and ``pos`` (and ``batch``; ``edge_index`` is
built at the model's cutoff when absent) and return a dict of outputs in physical units; the
normalisation statistics they need are buffers of their ``state_dict``.

PyG's SchNet, ViSNet and DimeNet++ run as baselines behind the same interfaces (:mod:`eqgeo.models.baselines`);
``eqgeo-train`` builds each from its config's ``_target_``.
"""

from ._common import (
    LAYERS,
    PARITIES,
    InteractionStack,
    SpeciesEmbedding,
    UnknownSpeciesError,
    energy_and_forces,
    hidden_irreps,
    species_types,
)
from .architecture import Architecture
from .baselines import MODES, DimeNetPPBaseline, SchNetBaseline, ViSNetBaseline
from .docking import DOCKING_SPECIES, DockingModel
from .potential import InteratomicPotential
from .property import DEBYE_PER_E_ANGSTROM, PropertyModel
from .statistics import dataset_statistics

__all__ = [
    "InteratomicPotential",
    "PropertyModel",
    "DockingModel",
    "SchNetBaseline",
    "ViSNetBaseline",
    "DimeNetPPBaseline",
    "Architecture",
    "MODES",
    "InteractionStack",
    "SpeciesEmbedding",
    "UnknownSpeciesError",
    "species_types",
    "energy_and_forces",
    "dataset_statistics",
    "hidden_irreps",
    "LAYERS",
    "PARITIES",
    "DOCKING_SPECIES",
    "DEBYE_PER_E_ANGSTROM",
]
