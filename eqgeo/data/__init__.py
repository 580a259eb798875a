"""Chemistry files to PyG graphs: the data schema, converters and neighbour lists."""

from . import keys, units
from .errors import InvalidInputError, SkipReport
from .neighbors import BACKENDS, RadiusGraph, available_backends, edge_vectors, radius_graph, resolve_backend

__all__ = [
    "keys",
    "units",
    "InvalidInputError",
    "SkipReport",
    "BACKENDS",
    "RadiusGraph",
    "available_backends",
    "edge_vectors",
    "radius_graph",
    "resolve_backend",
]
