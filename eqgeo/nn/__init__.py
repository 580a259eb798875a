"""Equivariant building blocks as ``torch.nn.Module``s (e3nn-compatible numbers and layouts)."""

from .dropout import IrrepsDropout
from .edges import EdgeEncoder, edge_lengths
from .equivariant_conv import EquivariantConv
from .equivariant_transformer_conv import EquivariantTransformerConv
from .gate import Gate, Normalize2Mom
from .layer_norm import EquivariantLayerNorm
from .linear import Linear
from .many_body import ManyBodyProduct
from .norm_activation import NormActivation
from .radial import BesselBasis, GaussianBasis, PolynomialCutoff, RadialEmbedding, RadialMLP
from .tensor_product import FullyConnectedTensorProduct, TensorProduct

__all__ = [
    "EquivariantConv",
    "EquivariantTransformerConv",
    "Linear",
    "ManyBodyProduct",
    "TensorProduct",
    "FullyConnectedTensorProduct",
    "Gate",
    "Normalize2Mom",
    "NormActivation",
    "EquivariantLayerNorm",
    "IrrepsDropout",
    "BesselBasis",
    "GaussianBasis",
    "PolynomialCutoff",
    "RadialMLP",
    "RadialEmbedding",
    "EdgeEncoder",
    "edge_lengths",
]
