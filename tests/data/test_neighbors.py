"""radius_graph / periodic_radius_graph / edge_vectors / RadiusGraph: conventions on hand-made cases, backends vs brute force."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list
from torch_geometric.data import Batch, Data

from eqgeo.data import (
    RadiusGraph,
    available_backends,
    edge_vectors,
    keys,
    periodic_radius_graph,
    radius_graph,
    resolve_backend,
)
from eqgeo.data import neighbors as nb

HAS_TORCH_CLUSTER = importlib.util.find_spec("torch_cluster") is not None
FAST_BACKENDS = [b for b in available_backends() if b != "brute"]


def as_set(edge_index, shifts=None):
    if shifts is None:
        return {tuple(e) for e in edge_index.t().tolist()}
    return {tuple(e) + tuple(s) for e, s in zip(edge_index.t().tolist(), shifts.tolist())}


def random_cell(generator, scale=1.0):
    """A triclinic cell with rows of length ~scale, far from singular."""
    cell = torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(3, 3, generator=generator, dtype=torch.float64)
    return scale * cell


# --- conventions on hand-made cases --------------------------------------------------------------------


def test_source_is_neighbour_target_is_centre(dtype):
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]], dtype=dtype)
    edge_index = radius_graph(pos, r=1.5)
    assert edge_index.tolist() == [[1, 0], [0, 1]]
    vec = edge_vectors(pos, edge_index)
    # edge (source 1 -> centre 0) points from the centre to the neighbour
    torch.testing.assert_close(vec, torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=dtype))


def test_cutoff_is_strict_and_zero_length_edges_are_dropped():
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    for backend in available_backends():
        assert radius_graph(pos, r=1.5, backend=backend).shape == (2, 0), backend


def test_own_periodic_images_are_edges(dtype):
    # one atom in a unit cube, r=1.5: 6 face images at 1 and 12 edge images at sqrt(2) (corners at 1.73 excluded)
    pos = torch.tensor([[0.2, 0.3, 0.4]], dtype=dtype)
    cell = torch.eye(3, dtype=dtype)
    for backend in ["vesin", "brute"]:
        edge_index, shifts = periodic_radius_graph(pos, 1.5, cell, backend=backend)
        assert edge_index.shape == (2, 18)
        assert (edge_index == 0).all()
        assert (shifts.abs().sum(1) > 0).all()
        lengths = edge_vectors(pos, edge_index, shifts, cell).norm(dim=-1)
        assert sorted(set(np.round(lengths.double().numpy(), 5))) == [1.0, 1.41421]


def test_shift_sign_convention():
    # two atoms near opposite faces of a 10 A box: the close image of 1 seen from 0 is at shift -1 along x
    pos = torch.tensor([[0.5, 0.0, 0.0], [9.5, 0.0, 0.0]], dtype=torch.float64)
    cell = 10.0 * torch.eye(3, dtype=torch.float64)
    edge_index, shifts = periodic_radius_graph(pos, 2.0, cell)
    assert edge_index.tolist() == [[1, 0], [0, 1]]
    assert shifts.tolist() == [[-1, 0, 0], [1, 0, 0]]
    torch.testing.assert_close(edge_vectors(pos, edge_index, shifts, cell), torch.tensor([[-1.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64))


def test_cell_without_periodicity_returns_zero_shifts():
    pos = torch.tensor([[0.5, 0.0, 0.0], [9.5, 0.0, 0.0], [1.0, 0.0, 0.0]])
    edge_index, shifts = periodic_radius_graph(pos, 2.0, 10.0 * torch.eye(3), pbc=False)
    assert as_set(edge_index) == {(2, 0), (0, 2)}
    assert (shifts == 0).all()


def test_batch_keeps_graphs_apart():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    batch = torch.tensor([0, 0, 1])
    assert as_set(radius_graph(pos, 2.0, batch)) == {(0, 1), (1, 0)}


def test_max_num_neighbors_keeps_the_nearest():
    generator = torch.Generator().manual_seed(1)
    pos = torch.rand(200, 3, generator=generator) * 4
    full = radius_graph(pos, 1.5)
    for backend in available_backends():
        kept = radius_graph(pos, 1.5, max_num_neighbors=5, backend=backend)
        assert torch.bincount(kept[1], minlength=200).max() <= 5
        d_full = edge_vectors(pos, full).norm(dim=-1)
        d_kept = edge_vectors(pos, kept).norm(dim=-1)
        for centre in range(0, 200, 17):
            expected = torch.sort(d_full[full[1] == centre]).values[:5]
            torch.testing.assert_close(torch.sort(d_kept[kept[1] == centre]).values, expected)


# --- backends against brute force and ASE ------------------------------------------------------------


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_brute_force_non_periodic(backend, dtype):
    generator = torch.Generator().manual_seed(2)
    pos = (torch.rand(300, 3, generator=generator, dtype=torch.float64) * 8).to(dtype)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([100, 150, 50]))
    expected = radius_graph(pos, 2.0, batch, backend="brute")
    got = radius_graph(pos, 2.0, batch, backend=backend)
    assert torch.equal(got, expected)
    assert got.shape[1] > 500
    nearest = radius_graph(pos, 2.0, batch, max_num_neighbors=3, backend=backend)
    assert torch.equal(nearest, radius_graph(pos, 2.0, batch, max_num_neighbors=3, backend="brute"))


@pytest.mark.parametrize("scale", [0.7, 1.5, 3.0, 6.0])
def test_vesin_matches_brute_force_triclinic_cells(scale):
    """Cells smaller than the cutoff, smaller than twice the cutoff, and larger."""
    generator = torch.Generator().manual_seed(3)
    r = 2.5
    for _ in range(3):
        cell = random_cell(generator, scale)
        pos = torch.rand(6, 3, generator=generator, dtype=torch.float64) @ cell
        expected = as_set(*periodic_radius_graph(pos, r, cell, backend="brute"))
        got_index, got_shifts = periodic_radius_graph(pos, r, cell, backend="vesin")
        assert as_set(got_index, got_shifts) == expected
        lengths = edge_vectors(pos, got_index, got_shifts, cell).norm(dim=-1)
        assert bool(((lengths > 0) & (lengths < r)).all())


def test_brute_force_matches_ase_neighbor_list():
    """An independent oracle: ASE's neighbour list uses the same (i, j, S) convention."""
    from ase import Atoms

    generator = torch.Generator().manual_seed(4)
    cell = random_cell(generator, 2.0)
    pos = torch.rand(5, 3, generator=generator, dtype=torch.float64) @ cell
    atoms = Atoms("H5", positions=pos.numpy(), cell=cell.numpy(), pbc=[True, True, False])
    i, j, S = neighbor_list("ijS", atoms, 3.0)
    expected = {(int(b), int(a)) + tuple(int(v) for v in s) for a, b, s in zip(i, j, S)}
    got = periodic_radius_graph(pos, 3.0, cell, torch.tensor([True, True, False]), backend="brute")
    assert as_set(*got) == expected
    assert (got[1][:, 2] == 0).all()


def test_batched_cells_and_pbc():
    generator = torch.Generator().manual_seed(5)
    cells = torch.stack([random_cell(generator, s) for s in (1.2, 2.0, 4.0)])
    pbc = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    counts = torch.tensor([3, 4, 5])
    batch = torch.repeat_interleave(torch.arange(3), counts)
    pos = torch.cat([torch.rand(int(n), 3, generator=generator, dtype=torch.float64) @ c for n, c in zip(counts, cells)])
    got = periodic_radius_graph(pos, 2.2, cells, pbc, batch, backend="vesin")
    expected = periodic_radius_graph(pos, 2.2, cells, pbc, batch, backend="brute")
    assert as_set(*got) == as_set(*expected)
    vec = edge_vectors(pos, got[0], got[1], cells, batch)
    assert bool((vec.norm(dim=-1) < 2.2).all())
    # the batched result equals graph-by-graph results with each graph's own cell
    ptr = [0, 3, 7, 12]
    for g in range(3):
        single = periodic_radius_graph(pos[ptr[g] : ptr[g + 1]], 2.2, cells[g], pbc[g])
        mask = batch[got[0][1]] == g
        assert as_set(got[0][:, mask] - ptr[g], got[1][mask]) == as_set(*single)


@pytest.mark.torch_cluster
def test_torch_cluster_matches_brute_force():
    pos = torch.rand(400, 3) * 6
    assert torch.equal(radius_graph(pos, 1.7, backend="torch_cluster"), radius_graph(pos, 1.7, backend="brute"))


def test_brute_force_works_in_row_chunks(monkeypatch):
    """The reference never builds an N x N matrix: at most _BRUTE_CHUNK rows at a time."""
    shapes = []
    real_cdist = torch.cdist

    def spy(a, b, *args, **kwargs):
        shapes.append(a.shape[0])
        return real_cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(nb, "_BRUTE_CHUNK", 256)
    monkeypatch.setattr(nb.torch, "cdist", spy)
    pos = torch.rand(1000, 3) * 20
    expected = radius_graph(pos, 3.0, backend="vesin")
    assert torch.equal(radius_graph(pos, 3.0, backend="brute"), expected)
    assert max(shapes) == 256


# --- edge_vectors, transform, errors ---------------------------------------------------------------------


def test_edge_vectors_differentiable_in_pos_and_cell():
    generator = torch.Generator().manual_seed(6)
    cells = torch.stack([random_cell(generator, 2.0) for _ in range(2)]).requires_grad_()
    pos = torch.rand(6, 3, generator=generator, dtype=torch.float64).requires_grad_()
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    edge_index, shifts = periodic_radius_graph(pos, 2.5, cells, batch=batch)
    assert torch.autograd.gradcheck(lambda p, c: edge_vectors(p, edge_index, shifts, c, batch), (pos, cells))


def test_radius_graph_transform_on_data_and_batch():
    transform = RadiusGraph(2.0)
    assert repr(transform) == "RadiusGraph(r=2.0, backend='vesin', max_num_neighbors=None)"
    pos = torch.rand(10, 3) * 3
    data = transform(Data(pos=pos))
    assert torch.equal(data[keys.EDGE_INDEX], radius_graph(pos, 2.0))
    assert keys.SHIFTS not in data
    periodic = Data(pos=pos, cell=(3.0 * torch.eye(3)).unsqueeze(0), pbc=torch.tensor([[True, True, True]]))
    batch = Batch.from_data_list([periodic, periodic.clone()])
    out = transform(batch)
    assert out[keys.SHIFTS].shape == (out[keys.EDGE_INDEX].shape[1], 3)
    assert out[keys.EDGE_INDEX].shape[1] == 2 * transform(periodic.clone())[keys.EDGE_INDEX].shape[1]


def test_backend_choice_is_explicit():
    assert resolve_backend(None) == "vesin"
    with pytest.raises(ValueError, match="unknown neighbour-list backend"):
        radius_graph(torch.zeros(2, 3), 1.0, backend="kdtree")
    if not HAS_TORCH_CLUSTER:
        with pytest.raises(ValueError, match="not installed"):
            radius_graph(torch.zeros(2, 3), 1.0, backend="torch_cluster")
    else:
        with pytest.raises(ValueError, match="periodic"):
            periodic_radius_graph(torch.zeros(2, 3), 1.0, torch.eye(3), backend="torch_cluster")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pos=torch.tensor([[0.0, float("nan"), 0.0]])), "NaN"),
        (dict(pos=torch.zeros(3, 2)), "shape"),
        (dict(pos=torch.zeros(3, 3), batch=torch.tensor([1, 0, 0])), "sorted"),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        radius_graph(r=1.0, **kwargs)
    with pytest.raises(ValueError, match=match):
        periodic_radius_graph(r=1.0, cell=torch.eye(3), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cell=torch.zeros(3, 3)), "singular"),
        (dict(cell=torch.eye(3).expand(2, 3, 3)), "2 matrices for 1 graphs"),
        (dict(cell=None), "needs a cell; for graphs without one use radius_graph"),
    ],
)
def test_bad_periodic_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        periodic_radius_graph(torch.zeros(3, 3), 1.0, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(cell=torch.eye(3)), dict(pbc=True), dict(cell=torch.eye(3), pbc=False)])
def test_radius_graph_refuses_a_cell_and_names_periodic_radius_graph(kwargs):
    """One return type: radius_graph never returns shifts, so a cell is an error that names the function that takes one."""
    with pytest.raises(TypeError, match=r"periodic_radius_graph\(pos, r, cell, pbc, batch, \.\.\.\), which returns \(edge_index, shifts\)"):
        radius_graph(torch.zeros(3, 3), 1.0, **kwargs)
    # no periodic direction and no cell: an ordinary graph, a Tensor
    assert isinstance(radius_graph(torch.rand(4, 3), 1.0, pbc=False), torch.Tensor)


def _images_brute(pos: torch.Tensor, r: float, cell: torch.Tensor, pbc: list[bool]) -> set:
    """Every (source j, centre i, shift) with 0 < |pos[j] + shift @ cell - pos[i]| < r, by loops over pairs and images.

    Images up to ``ceil(r / plane spacing)`` cells away along each periodic direction: no image
    further away can be within ``r`` of an atom inside the cell.
    """
    volume = abs(float(torch.linalg.det(cell)))
    reach = []
    for k in range(3):
        height = volume / float(torch.linalg.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]).norm())
        reach.append(int(np.ceil(r / height)) if pbc[k] else 0)
    ranges = [range(-m, m + 1) for m in reach]
    found = set()
    for shift in np.ndindex(*(len(x) for x in ranges)):
        s = tuple(ranges[k][shift[k]] for k in range(3))
        offset = torch.tensor(s, dtype=torch.float64) @ cell
        for i in range(pos.shape[0]):
            for j in range(pos.shape[0]):
                d = float((pos[j] + offset - pos[i]).norm())
                if 0 < d < r:
                    found.add((j, i) + s)
    return found


def _minimum_image(pos: torch.Tensor, r: float, cell: torch.Tensor) -> set:
    """A wrong neighbour list (the minimum-image convention): one image per pair, the nearest by fractional rounding."""
    inv = torch.linalg.inv(cell)
    found = set()
    for i in range(pos.shape[0]):
        for j in range(pos.shape[0]):
            frac = (pos[j] - pos[i]) @ inv
            s = -torch.round(frac)
            d = float(((frac + s) @ cell).norm())
            if 0 < d < r:
                found.add((j, i) + tuple(int(v) for v in s.tolist()))
    return found


@pytest.mark.parametrize("pbc", [[True, True, True], [True, False, True]])
@pytest.mark.parametrize("scale", [0.8, 1.6, 4.0])
def test_periodic_radius_graph_matches_loops_over_images(scale, pbc):
    """Cells smaller than the cutoff (an atom sees several images of each atom), about the cutoff, and larger."""
    generator = torch.Generator().manual_seed(11)
    r = 2.0
    cell = random_cell(generator, scale)
    pos = torch.rand(5, 3, generator=generator, dtype=torch.float64) @ cell
    expected = _images_brute(pos, r, cell, pbc)
    for backend in ["vesin", "brute"]:
        edge_index, shifts = periodic_radius_graph(pos, r, cell, torch.tensor(pbc), backend=backend)
        assert as_set(edge_index, shifts) == expected, backend
        assert shifts.dtype == torch.long and edge_index.shape[1] == len(expected)


def test_periodic_comparison_catches_a_minimum_image_list_negative_control():
    """The comparison above can fail: the minimum-image convention misses images in a cell smaller than 2 r."""
    generator = torch.Generator().manual_seed(11)
    r = 2.0
    cell = random_cell(generator, 1.6)
    pos = torch.rand(5, 3, generator=generator, dtype=torch.float64) @ cell
    wrong = _minimum_image(pos, r, cell)
    got = as_set(*periodic_radius_graph(pos, r, cell))
    assert wrong != got and wrong < got  # a strict subset: every minimum image is found, others are missing
    assert got == _images_brute(pos, r, cell, [True, True, True])


def test_large_protein_sized_input_runs():
    """10,000 atoms at protein density (~0.1 / A^3): fine for the default backend."""
    generator = torch.Generator().manual_seed(7)
    pos = torch.rand(10_000, 3, generator=generator) * 46.4
    edge_index = radius_graph(pos, 5.0)
    assert edge_index.shape[1] > 0
    assert bool((edge_vectors(pos, edge_index).norm(dim=-1) < 5.0).all())


@pytest.mark.cuda
def test_cuda_tensors_stay_on_their_device():
    generator = torch.Generator().manual_seed(8)
    cells = torch.stack([random_cell(generator, 2.0) for _ in range(2)])
    pos = torch.rand(8, 3, generator=generator, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    expected = periodic_radius_graph(pos, 2.5, cells, batch=batch)
    got = periodic_radius_graph(pos.cuda(), 2.5, cells.cuda(), batch=batch.cuda(), backend="vesin")
    assert got[0].is_cuda and got[1].is_cuda
    assert torch.equal(got[0].cpu(), expected[0]) and torch.equal(got[1].cpu(), expected[1])
    vec = edge_vectors(pos.cuda().requires_grad_(), got[0], got[1], cells.cuda(), batch.cuda())
    vec.square().sum().backward()
    data = RadiusGraph(2.5)(Batch.from_data_list([Data(pos=pos[:4]), Data(pos=pos[4:])]).to("cuda"))
    assert data[keys.EDGE_INDEX].is_cuda
