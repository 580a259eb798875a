"""Training with Lightning, driven by Hydra (``eqgeo-train``): data modules, tasks, :func:`train`.

Integrations stay here, at the edge: the networks in :mod:`eqgeo.models` are plain modules.
"""

from .datamodules import MD17DataModule, QM9DataModule
from .docking import DockingDataModule, DockingTask
from .tasks import EnergyForcesTask, PropertyTask
from .train import train

__all__ = ["QM9DataModule", "MD17DataModule", "DockingDataModule", "PropertyTask", "EnergyForcesTask", "DockingTask", "train"]
