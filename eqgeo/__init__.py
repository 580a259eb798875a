"""eqgeo: E(3)-equivariant graph neural network layers for PyTorch Geometric."""

from . import o3

__version__ = "0.1.0"

__all__ = ["o3", "__version__"]
