"""Neighbour lists: radius graphs with periodic cells, batches, and several backends.

Conventions (fixed for the whole project, see :mod:`eqgeo.data.keys`):

* ``edge_index[0]`` is the neighbour ``j`` (source), ``edge_index[1]`` the centre ``i``
  (target): PyG's ``source_to_target`` flow, as :func:`torch_geometric.nn.radius_graph`.
* ``shifts[e]`` is the integer cell vector of the neighbour's image, and
  ``edge_vec = pos[j] + shifts @ cell - pos[i]`` with the cell of the edge's graph.
* An edge exists when ``0 < |edge_vec| < r``: an atom's own periodic images within the cutoff
  are edges, an edge of length zero (an atom with itself, or two coincident atoms) never is.
* Edges come sorted by centre, then neighbour, then shift, whatever the backend.

Backends (``backend=``):

* ``"vesin"`` – the `vesin <https://github.com/Luthaf/vesin>`_ cell-list library (a
  dependency; CPU, periodic and non-periodic). Default.
* ``"torch_cluster"`` – ``torch_cluster.radius_graph``, used only when importable; no periodic
  cells. Default for CUDA tensors of non-periodic graphs when installed.
* ``"brute"`` – an exact reference in chunks of rows (memory ``chunk x N``, never ``N x N``),
  O(N^2) time.

Asking for an unavailable backend raises; nothing falls back silently. The backend that
``backend=None`` picks is given by :func:`resolve_backend` and logged at DEBUG level.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from . import keys as K

__all__ = [
    "BACKENDS",
    "available_backends",
    "resolve_backend",
    "radius_graph",
    "periodic_radius_graph",
    "edge_vectors",
    "RadiusGraph",
]

log = logging.getLogger(__name__)

BACKENDS = ("vesin", "torch_cluster", "brute")

# Rows per chunk of the brute-force backend: memory is _BRUTE_CHUNK x N distances.
_BRUTE_CHUNK = 1024


def _torch_cluster_available() -> bool:
    return importlib.util.find_spec("torch_cluster") is not None


def _vesin_available() -> bool:
    return importlib.util.find_spec("vesin") is not None


def available_backends() -> tuple[str, ...]:
    """Backends that can run in this environment, in :data:`BACKENDS` order."""
    found = {"vesin": _vesin_available(), "torch_cluster": _torch_cluster_available(), "brute": True}
    return tuple(b for b in BACKENDS if found[b])


def resolve_backend(backend: str | None = None, *, periodic: bool = False, device: torch.device | str = "cpu") -> str:
    """The backend that :func:`radius_graph` / :func:`periodic_radius_graph` run for these arguments.

    ``None`` picks ``"torch_cluster"`` for non-periodic graphs on a CUDA device when it is
    installed, and ``"vesin"`` otherwise.

    Raises:
        ValueError: the backend is unknown, not installed, or cannot do periodic cells.
    """
    if backend is None:
        cuda = torch.device(device).type == "cuda"
        backend = "torch_cluster" if cuda and not periodic and _torch_cluster_available() else "vesin"
    if backend not in BACKENDS:
        raise ValueError(f"unknown neighbour-list backend {backend!r}; expected one of {BACKENDS}")
    if backend not in available_backends():
        raise ValueError(
            f"neighbour-list backend {backend!r} is not installed here; available: {available_backends()}"
        )
    if periodic and backend == "torch_cluster":
        raise ValueError("backend 'torch_cluster' does not support periodic cells; use 'vesin' or 'brute'")
    return backend


# ------------------------------------------------------------------------------------------
# input normalisation
# ------------------------------------------------------------------------------------------


def _graph_pointer(batch: Tensor | None, num_nodes: int) -> Tensor:
    """``ptr`` with graph ``g`` owning nodes ``ptr[g]:ptr[g + 1]``; ``batch`` must be sorted."""
    if batch is None:
        return torch.tensor([0, num_nodes])
    batch = batch.detach().cpu().long()
    if batch.numel() != num_nodes:
        raise ValueError(f"batch has {batch.numel()} entries but pos has {num_nodes} rows")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (non-decreasing), as PyG's Batch produces it")
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    counts = torch.bincount(batch, minlength=num_graphs)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])


def _graph_cells(cell: Tensor | None, pbc, num_graphs: int) -> tuple[Tensor, Tensor]:
    """Cells ``(G, 3, 3)`` float64 and pbc ``(G, 3)`` bool, one per graph."""
    if cell is None:
        if pbc is not None and bool(torch.as_tensor(pbc).any()):
            raise ValueError("pbc was given without a cell")
        return torch.zeros(num_graphs, 3, 3, dtype=torch.float64), torch.zeros(num_graphs, 3, dtype=torch.bool)
    cell = cell.detach().cpu().to(torch.float64)
    if cell.shape == (3, 3):
        cell = cell.unsqueeze(0)
    if cell.dim() != 3 or cell.shape[1:] != (3, 3):
        raise ValueError(f"cell must have shape (3, 3) or (num_graphs, 3, 3), got {tuple(cell.shape)}")
    if cell.shape[0] == 1 and num_graphs > 1:
        cell = cell.expand(num_graphs, 3, 3)
    if cell.shape[0] != num_graphs:
        raise ValueError(f"cell has {cell.shape[0]} matrices for {num_graphs} graphs")
    if pbc is None:
        pbc = torch.ones(num_graphs, 3, dtype=torch.bool)
    else:
        pbc = torch.as_tensor(pbc, dtype=torch.bool).cpu()
        if pbc.numel() == 1:
            pbc = pbc.reshape(1, 1).expand(num_graphs, 3)
        elif pbc.numel() == 3:
            pbc = pbc.reshape(1, 3).expand(num_graphs, 3)
        elif pbc.numel() == 3 * num_graphs:
            pbc = pbc.reshape(num_graphs, 3)
        else:
            raise ValueError(f"pbc must be a bool, (3,) or (num_graphs, 3), got shape {tuple(pbc.shape)}")
    for g in range(num_graphs):
        if bool(pbc[g].any()) and abs(float(torch.linalg.det(cell[g]))) < 1e-12:
            raise ValueError(f"graph {g} is periodic but its cell is singular:\n{cell[g]}")
    return cell, pbc


# ------------------------------------------------------------------------------------------
# backends: each returns numpy (src, dst, shifts, dist) for one graph with local node numbers
# ------------------------------------------------------------------------------------------


def _pairs_vesin(pos: Tensor, r: float, cell: Tensor, pbc: Tensor):
    import vesin

    points = pos.detach().cpu().to(torch.float64).numpy()
    box = cell.numpy() if bool(pbc.any()) else torch.zeros(3, 3, dtype=torch.float64).numpy()
    nl = vesin.NeighborList(cutoff=float(r), full_list=True)
    i, j, s, d = nl.compute(points, box, pbc.tolist(), quantities="ijSd", copy=True)
    # vesin's pair vector is x_j - x_i + S @ box: j is our source, i our centre.
    return j.astype(np.int64), i.astype(np.int64), s.astype(np.int64).reshape(-1, 3), d


def _pairs_torch_cluster(pos: Tensor, r: float, cell: Tensor, pbc: Tensor):
    import torch_cluster

    n = pos.shape[0]
    ei = torch_cluster.radius_graph(pos.detach(), r=float(r), loop=False, max_num_neighbors=max(n, 1), flow="source_to_target")
    ei = ei.cpu()
    d = (pos.detach().cpu().double()[ei[0]] - pos.detach().cpu().double()[ei[1]]).norm(dim=-1)
    return ei[0].numpy(), ei[1].numpy(), np.zeros((ei.shape[1], 3), dtype=np.int64), d.numpy()


def _shift_range(cell: Tensor, pbc: Tensor, r: float) -> list[int]:
    """Number of images needed along each cell vector: ceil(r / plane spacing)."""
    out = []
    volume = abs(float(torch.linalg.det(cell))) if bool(pbc.any()) else 0.0
    for k in range(3):
        if not bool(pbc[k]):
            out.append(0)
            continue
        a, b = cell[(k + 1) % 3], cell[(k + 2) % 3]
        height = volume / float(torch.linalg.cross(a, b).norm())
        out.append(math.ceil(r / height))
    return out


def _pairs_brute(pos: Tensor, r: float, cell: Tensor, pbc: Tensor):
    x = pos.detach().cpu().to(torch.float64)
    n = x.shape[0]
    ranges = [range(-m, m + 1) for m in _shift_range(cell, pbc, r)]
    out_src, out_dst, out_shift, out_d = [], [], [], []
    for shift in itertools.product(*ranges):
        s = torch.tensor(shift, dtype=torch.float64)
        image = x + s @ cell
        for start in range(0, n, _BRUTE_CHUNK):
            centres = x[start : start + _BRUTE_CHUNK]
            # (chunk, n): rows centres i, columns sources j; exact differences, not the |a|^2 - 2ab + |b|^2 trick
            d = torch.cdist(centres, image, compute_mode="donot_use_mm_for_euclid_dist")
            dst, src = torch.nonzero((d < r) & (d > 0), as_tuple=True)
            out_src.append(src)
            out_dst.append(dst + start)
            out_shift.append(torch.tensor(shift, dtype=torch.long).expand(src.numel(), 3))
            out_d.append(d[dst, src])
    if not out_src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64), np.zeros(0)
    return torch.cat(out_src).numpy(), torch.cat(out_dst).numpy(), torch.cat(out_shift).numpy(), torch.cat(out_d).numpy()


_PAIR_FUNCTIONS = {"vesin": _pairs_vesin, "torch_cluster": _pairs_torch_cluster, "brute": _pairs_brute}


# ------------------------------------------------------------------------------------------
# post-processing common to every backend
# ------------------------------------------------------------------------------------------


def _sort_order(src: np.ndarray, dst: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Order by centre, then source, then shift."""
    if shifts.size and shifts.any():
        return np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], src, dst))
    return np.argsort(dst * (int(src.max(initial=0)) + 1) + src, kind="stable")


def _nearest_mask(dst: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` nearest sources of every centre; edges must be sorted by centre already,
    so ties in distance keep the lower source (then shift) first."""
    order = np.lexsort((dist, dst))  # stable: ties keep the sorted (source, shift) order
    dst_sorted = dst[order]
    first = np.searchsorted(dst_sorted, dst_sorted, side="left")
    rank = np.arange(order.size) - first
    keep = np.zeros(order.size, dtype=bool)
    keep[order[rank < k]] = True
    return keep


def _graph_pairs(pos: Tensor, r: float, cell: Tensor, pbc: Tensor, backend: str, max_num_neighbors: int | None):
    src, dst, shifts, dist = (np.asarray(a) for a in _PAIR_FUNCTIONS[backend](pos, r, cell, pbc))
    keep = (dist > 0) & (dist < r)
    if not keep.all():
        src, dst, shifts, dist = src[keep], dst[keep], shifts[keep], dist[keep]
    periodic = bool(shifts.any())
    order = _sort_order(src, dst, shifts)
    src, dst = src[order], dst[order]
    shifts = shifts[order] if periodic else np.zeros((src.size, 3), dtype=np.int64)
    if max_num_neighbors is not None:
        dist = dist[order]
        keep = _nearest_mask(dst, dist, max_num_neighbors)
        src, dst, shifts = src[keep], dst[keep], shifts[keep]
    return torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(shifts)


def _side_by_side(pos: Tensor, ptr: Tensor, r: float) -> Tensor:
    """Float64 positions with each graph translated along x so that graphs are > r apart.

    A translation leaves the distances within a graph unchanged (up to float64 rounding of
    the offsets, ~1e-13 Å), and puts every pair from two graphs further apart than ``r``.
    """
    x = pos.detach().cpu().to(torch.float64)
    counts = ptr[1:] - ptr[:-1]
    batch = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    num_graphs = counts.numel()
    lo = torch.full((num_graphs, 3), float("inf"), dtype=torch.float64).scatter_reduce(0, batch[:, None].expand(-1, 3), x, "amin")
    hi = torch.full((num_graphs, 3), -float("inf"), dtype=torch.float64).scatter_reduce(0, batch[:, None].expand(-1, 3), x, "amax")
    width = torch.where(counts > 0, hi[:, 0] - lo[:, 0], torch.zeros(())) + r + 1.0
    start = torch.cat([torch.zeros(1, dtype=torch.float64), width.cumsum(0)[:-1]])
    shifted = x - lo[batch]
    shifted[:, 0] += start[batch]
    return shifted


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    cell: None = None,
    pbc: None = None,
    max_num_neighbors: int | None = None,
    backend: str | None = None,
) -> Tensor:
    """Edges between atoms closer than ``r``, without periodic images: ``edge_index`` only.

    Periodic cells are :func:`periodic_radius_graph`'s, which also returns the shifts of the
    images; ``cell`` and ``pbc`` keep their places in the signature only so that passing them
    here raises a ``TypeError`` that says so, instead of returning a value of another type.

    Args:
        pos: atom positions.
        r: cutoff radius (Å); an edge needs ``0 < |edge_vec| < r``.
        batch: graph of each atom (sorted, as PyG's ``Batch.batch``); ``None`` for one graph.
        cell, pbc: not accepted (``None``): use :func:`periodic_radius_graph`.
        max_num_neighbors: keep at most this many neighbours per centre, the **nearest** ones
            (ties broken by lower source index); ``None`` keeps all. Unlike PyG's default of 32,
            nothing is dropped unless asked.
        backend: ``"vesin"``, ``"torch_cluster"``, ``"brute"`` or ``None`` (see
            :func:`resolve_backend`).

    Returns:
        ``edge_index`` ``(2, E)`` with rows ``[source j, centre i]``.

    Shapes:
        pos ``(N, 3)``; batch ``(N,)``.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
        >>> radius_graph(pos, r=1.5)
        tensor([[1, 0],
                [0, 1]])
    """
    if cell is not None or (pbc is not None and bool(torch.as_tensor(pbc).any())):
        raise TypeError(
            "radius_graph builds non-periodic graphs and returns edge_index only; for a periodic cell call "
            "periodic_radius_graph(pos, r, cell, pbc, batch, ...), which returns (edge_index, shifts)"
        )
    edge_index, _ = _radius_graph("radius_graph", pos, r, batch, None, None, max_num_neighbors, backend)
    return edge_index


def periodic_radius_graph(
    pos: Tensor,
    r: float,
    cell: Tensor,
    pbc: Tensor | bool | None = None,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Edges between atoms and the periodic images of atoms closer than ``r``: ``(edge_index, shifts)``.

    The image of source ``j`` is ``pos[j] + shifts[e] @ cell`` (the cell of the edge's graph), so
    an atom's own images within the cutoff are edges (:func:`edge_vectors` gives the vectors).
    Directions that are not periodic (``pbc`` false) have no images there; with none periodic the
    edges are :func:`radius_graph`'s and the shifts zero.

    Args:
        pos: atom positions.
        r: cutoff radius (Å); an edge needs ``0 < |edge_vec| < r``.
        cell: lattice vectors as rows, one matrix for all graphs or one per graph.
        pbc: periodicity along each cell vector: a bool, ``(3,)`` or ``(num_graphs, 3)``;
            ``None`` means periodic in all directions.
        batch: graph of each atom (sorted, as PyG's ``Batch.batch``); ``None`` for one graph.
        max_num_neighbors: keep at most this many neighbours per centre, the nearest ones
            (ties broken by lower source index, then shift); ``None`` keeps all.
        backend: ``"vesin"``, ``"brute"`` or ``None`` (``"torch_cluster"`` has no periodic
            cells; see :func:`resolve_backend`).

    Returns:
        ``edge_index`` ``(2, E)`` with rows ``[source j, centre i]`` and ``shifts`` ``(E, 3)``
        (long), the integer cell vector of each source's image.

    Shapes:
        pos ``(N, 3)``; cell ``(3, 3)`` or ``(num_graphs, 3, 3)``; batch ``(N,)``.

    Example:
        >>> pos = torch.tensor([[0.5, 0.5, 0.5]])
        >>> edge_index, shifts = periodic_radius_graph(pos, 1.5, cell=torch.eye(3), pbc=[True, False, False])
        >>> edge_index, shifts
        (tensor([[0, 0],
                [0, 0]]), tensor([[-1,  0,  0],
                [ 1,  0,  0]]))
    """
    if cell is None:
        raise ValueError("periodic_radius_graph needs a cell; for graphs without one use radius_graph")
    return _radius_graph("periodic_radius_graph", pos, r, batch, cell, pbc, max_num_neighbors, backend)


def _radius_graph(
    caller: str,
    pos: Tensor,
    r: float,
    batch: Tensor | None,
    cell: Tensor | None,
    pbc,
    max_num_neighbors: int | None,
    backend: str | None,
) -> tuple[Tensor, Tensor]:
    """``(edge_index, shifts)`` of :func:`radius_graph` (``cell`` None) and :func:`periodic_radius_graph`."""
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (N, 3), got {tuple(pos.shape)}")
    if not r > 0:
        raise ValueError(f"cutoff r must be positive, got {r}")
    if max_num_neighbors is not None and max_num_neighbors < 0:
        raise ValueError(f"max_num_neighbors must be >= 0 or None, got {max_num_neighbors}")
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("pos contains NaN or infinite coordinates")
    ptr = _graph_pointer(batch, pos.shape[0])
    cells, pbcs = _graph_cells(cell, pbc, ptr.numel() - 1)
    backend = resolve_backend(backend, periodic=bool(pbcs.any()), device=pos.device)
    log.debug("%s: backend %r, %d graphs, r=%g", caller, backend, ptr.numel() - 1, r)

    if backend == "vesin" and ptr.numel() > 2 and not bool(pbcs.any()):
        # one vesin call for the whole batch: graphs side by side, further apart than r
        src, dst, shifts = _graph_pairs(_side_by_side(pos, ptr, r), r, cells[0], pbcs[0], backend, max_num_neighbors)
        return torch.stack([src, dst]).to(pos.device), shifts.to(pos.device)

    parts_src, parts_dst, parts_shift = [], [], []
    for g in range(ptr.numel() - 1):
        lo, hi = int(ptr[g]), int(ptr[g + 1])
        if hi - lo == 0:
            continue
        src, dst, shifts = _graph_pairs(pos[lo:hi], r, cells[g], pbcs[g], backend, max_num_neighbors)
        parts_src.append(src + lo)
        parts_dst.append(dst + lo)
        parts_shift.append(shifts)
    if parts_src:
        edge_index = torch.stack([torch.cat(parts_src), torch.cat(parts_dst)])
        shifts = torch.cat(parts_shift)
    else:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
        shifts = torch.zeros(0, 3, dtype=torch.long)
    return edge_index.to(pos.device), shifts.to(pos.device)


def edge_vectors(
    pos: Tensor,
    edge_index: Tensor,
    shifts: Tensor | None = None,
    cell: Tensor | None = None,
    batch: Tensor | None = None,
) -> Tensor:
    """Edge vectors ``pos[j] + shifts @ cell - pos[i]``, differentiable in ``pos`` and ``cell``.

    Args:
        pos: atom positions.
        edge_index: ``[source j, centre i]``.
        shifts: integer cell shifts of the sources, or ``None`` for non-periodic graphs.
        cell: one cell ``(3, 3)`` / ``(1, 3, 3)`` or one per graph ``(num_graphs, 3, 3)``.
        batch: graph of each atom; needed when there is more than one cell.

    Shapes:
        pos ``(N, 3)``; edge_index ``(2, E)``; shifts ``(E, 3)``; output ``(E, 3)``.

    Example:
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        >>> edge_vectors(pos, torch.tensor([[1], [0]]))
        tensor([[1., 0., 0.]])
    """
    src, dst = edge_index[0], edge_index[1]
    vec = pos[src] - pos[dst]
    if shifts is None:
        return vec
    if cell is None:
        raise ValueError("shifts were given without a cell")
    cell = cell.to(pos.dtype)
    if cell.dim() == 2:
        cell = cell.unsqueeze(0)
    if cell.shape[0] == 1:
        return vec + shifts.to(pos.dtype) @ cell[0]
    if batch is None:
        raise ValueError(f"{cell.shape[0]} cells were given without a batch vector")
    edge_cell = cell[batch[dst]]
    return vec + torch.einsum("ek,ekl->el", shifts.to(pos.dtype), edge_cell)


class RadiusGraph(BaseTransform):
    """Transform that sets ``edge_index`` (and ``shifts`` for graphs with a cell).

    Reads :data:`~eqgeo.data.keys.POSITION`, and :data:`~eqgeo.data.keys.CELL` /
    :data:`~eqgeo.data.keys.PBC` / ``batch`` when present; see :func:`radius_graph` and
    :func:`periodic_radius_graph` (for data with a cell). The
    backend is resolved at construction and shown in the repr: ``backend=None`` resolves to
    ``"vesin"``.

    Args:
        r: cutoff radius, Å.
        max_num_neighbors: nearest neighbours kept per centre (``None``: all).
        backend: ``"vesin"``, ``"torch_cluster"``, ``"brute"`` or ``None``.

    Example:
        >>> RadiusGraph(5.0)
        RadiusGraph(r=5.0, backend='vesin', max_num_neighbors=None)
    """

    def __init__(self, r: float, max_num_neighbors: int | None = None, backend: str | None = None):
        self.r = float(r)
        self.max_num_neighbors = max_num_neighbors
        self.backend = resolve_backend(backend)

    def forward(self, data: Data) -> Data:
        cell = getattr(data, K.CELL, None)
        batch = getattr(data, K.BATCH, None)
        pos = data[K.POSITION]
        if cell is None:
            data[K.EDGE_INDEX] = radius_graph(
                pos, self.r, batch, max_num_neighbors=self.max_num_neighbors, backend=self.backend
            )
            return data
        pbc = getattr(data, K.PBC, None)
        edge_index, shifts = periodic_radius_graph(
            pos, self.r, cell, pbc, batch, max_num_neighbors=self.max_num_neighbors, backend=self.backend
        )
        data[K.EDGE_INDEX], data[K.SHIFTS] = edge_index, shifts
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(r={self.r}, backend={self.backend!r}, max_num_neighbors={self.max_num_neighbors})"
