"""PyG's SchNet, ViSNet and DimeNet++ behind eqgeo's interfaces: symmetries, forces, state_dict, and equality with
PyG's own models on a brute-force neighbour list built here."""

import doctest

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn.models import DimeNetPlusPlus, SchNet, ViSNet
from torch_geometric.nn.models.visnet import GatedEquivariantBlock

import eqgeo.models.baselines as baselines
from eqgeo.inference.checkpoint import instantiate_model
from eqgeo.models import DimeNetPPBaseline, InteratomicPotential, PropertyModel, SchNetBaseline, ViSNetBaseline
from eqgeo.models.baselines import NeighborListDistance, NeighborListInteractionGraph, triplets
from eqgeo.testing import assert_equivariant

from ._mixin import GRAPH, NODE, EnergyModelTests, ModelTestsMixin, random_molecules

SPECIES = [1, 6, 8]
CUTOFF = 3.0
SHIFTS, SCALE = [-13.6, -1029.8, -2041.6], 0.7
MEANS, STDS = [-12.5, 6.8], [0.3, 1.3]
HYPER = {
    SchNetBaseline: {"hidden_channels": 8, "num_filters": 8, "num_interactions": 2, "num_gaussians": 12},
    ViSNetBaseline: {"hidden_channels": 8, "num_heads": 2, "num_layers": 2, "num_rbf": 8},
    DimeNetPPBaseline: {"hidden_channels": 8, "num_blocks": 2, "int_emb_size": 4, "basis_emb_size": 3,
                        "out_emb_channels": 8, "num_spherical": 3, "num_radial": 4},
}


def _model(cls, mode, dtype, perturb=0.2, **kwargs):
    """A small baseline with PyG's initial weights plus noise (PyG starts every bias at zero)."""
    if mode == "property" and not kwargs.get("dipole"):
        kwargs = {"num_targets": 2, "reduce": ["sum", "mean"], **kwargs}
    model = cls(SPECIES, mode, cutoff=CUTOFF, avg_num_neighbors=3.0, **HYPER[cls], **kwargs).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    if kwargs.get("dipole"):
        return model
    if mode == "property":
        model.set_statistics(MEANS, STDS)
    else:
        model.set_statistics(SHIFTS, SCALE)
    return model


def _molecules(dtype, n=3, spread=1.6):
    return random_molecules(SPECIES, dtype, (5, 3, 6)[:n], seed=5, spread=spread)


def _has_isolated_atom(mol) -> bool:
    d = torch.cdist(mol.pos, mol.pos) + 2 * CUTOFF * torch.eye(mol.num_nodes, dtype=mol.pos.dtype)
    return bool((d.min(dim=1).values >= CUTOFF).any())


class _BaselineTests(ModelTestsMixin):
    cls = SchNetBaseline
    mode = "energy"
    cutoff = CUTOFF
    #: ViSNet jumps at the cutoff once its s_proj biases are non-zero (see ViSNetBaseline)
    zero_s_proj_bias = False
    #: constructor arguments of a variant
    extra: dict = {}

    def make_model(self, dtype):
        model = _model(self.cls, self.mode, dtype, **self.extra)
        if self.zero_s_proj_bias:
            with torch.no_grad():
                for layer in model.net.representation_model.vis_mp_layers:
                    layer.s_proj.bias.zero_()
        return model

    def make_graphs(self, dtype):
        return _molecules(dtype)

    def with_edges(self, data):
        return data  # the baselines build their own neighbour list (and refuse data.edge_index)

    # not one graph: PyG's forward builds the neighbour list (vesin, NumPy) inside the model
    test_compile_fullgraph = None


class _EnergyTests(EnergyModelTests, _BaselineTests):
    mode = "energy"
    outputs = {"energy": (GRAPH, "0e"), "forces": (NODE, "1o")}
    statistics = ("energy_shift", "energy_scale")

    def test_training_mode_keeps_the_force_graph(self):
        """In training mode a force loss back-propagates to every interaction weight (create_graph).

        (Every atom has a neighbour here: see ``test_visnet_isolated_atom_has_nan_second_derivatives``.)
        """
        model = self.make_model(torch.float64).train()
        graphs = _molecules(torch.float64, spread=0.8)
        assert not any(_has_isolated_atom(g) for g in graphs)
        out = model(Batch.from_data_list(graphs))
        assert out["forces"].requires_grad
        out["forces"].square().sum().backward()
        layers = [(n, p) for n, p in model.named_parameters()
                  if any(k in n for k in ("interactions", "vis_mp", "interaction_blocks"))]
        assert layers and all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in layers)
        # ViSNet's first layer starts from zero vector features: its vector projections get zero gradients
        reached = [(n, p) for n, p in layers if "vis_mp" not in n or any(k in n for k in ("q_proj", "k_proj", "s_proj"))]
        missing = [n for n, p in reached if not p.grad.abs().sum() > 0]
        assert not missing, missing

    def test_no_grad_detaches_and_keeps_float64_energy(self):
        model = self.make_model(torch.float32)
        assert model.energy_shift.dtype == torch.float64 and model.energy_scale.dtype == torch.float32
        with torch.no_grad():
            out = model(self.make_graphs(torch.float32)[0])
        assert not out["forces"].requires_grad and out["forces"].abs().sum() > 0
        assert out["energy"].dtype == torch.float64 and out["forces"].dtype == torch.float32


class _PropertyTests(_BaselineTests):
    mode = "property"
    outputs = {"y": (GRAPH, "2x0e")}
    statistics = ("target_mean", "target_std")

    def check_isolated(self, model, data, out):
        y = torch.cat([model(Data(z=data.z[i : i + 1], pos=data.pos[i : i + 1]))["y"] for i in range(data.num_nodes)])
        torch.testing.assert_close(out["y"][0, 0], y[:, 0].sum())  # "sum" target
        torch.testing.assert_close(out["y"][0, 1], y[:, 1].mean())  # "mean" target


class TestSchNetEnergy(_EnergyTests):
    cls = SchNetBaseline


class TestSchNetProperty(_PropertyTests):
    cls = SchNetBaseline


def _charges(model, data):
    """``(mu, q)``: the SchNet dipole model's output and the per-atom charges its ``lin2`` gave on the way."""
    seen = []
    handle = model.net.lin2.register_forward_hook(lambda module, inputs, output: seen.append(output[:, 0]))
    try:
        out = model(data)
    finally:
        handle.remove()
    return out["mu"], seen[0]


class TestSchNetDipole(_BaselineTests):
    """SchNet's dipole mode (``dipole=True``, PyG's ``SchNet(dipole=True)``): mu from per-atom charges."""

    cls = SchNetBaseline
    mode = "property"
    extra = {"dipole": True}
    outputs = {"mu": (GRAPH, "0e")}
    statistics = ("target_mean", "target_std")  # empty: no scalar targets, none applied to mu

    def check_isolated(self, model, data, out):
        """An isolated atom's charge is the charge it has alone."""
        _, q = _charges(model, data)
        alone = torch.cat([_charges(model, Data(z=data.z[i : i + 1], pos=data.pos[i : i + 1]))[1]
                           for i in range(data.num_nodes)])
        torch.testing.assert_close(q, alone)

    def test_mu_is_the_norm_of_charges_times_positions_about_the_centre_of_mass(self):
        model = self.make_model(torch.float64)
        data = Batch.from_data_list(self.make_graphs(torch.float64))
        mu, q = _charges(model, data)
        mass = model.net.atomic_mass[data.z].to(torch.float64)[:, None]
        n = data.num_graphs
        centre = torch.zeros(n, 3, dtype=torch.float64).index_add(0, data.batch, mass * data.pos)
        centre = centre / torch.zeros(n, 1, dtype=torch.float64).index_add(0, data.batch, mass)
        dipole = torch.zeros(n, 3, dtype=torch.float64).index_add(0, data.batch, q[:, None] * (data.pos - centre[data.batch]))
        torch.testing.assert_close(mu, dipole.norm(dim=-1), atol=1e-12, rtol=1e-12)
        out = model(data)
        assert out["y"].shape == (n, 0) and mu.dtype == torch.float64
        # negative control: the charges do not sum to zero, so the same sum about the origin is another number,
        # and one that moves with the molecule
        total = torch.zeros(n, dtype=torch.float64).index_add(0, data.batch, q)
        assert total.abs().min() > 1e-3
        raw = torch.zeros(n, 3, dtype=torch.float64).index_add(0, data.batch, q[:, None] * data.pos).norm(dim=-1)
        shifted = torch.zeros(n, 3, dtype=torch.float64).index_add(0, data.batch, q[:, None] * (data.pos + 1.0)).norm(dim=-1)
        assert (raw - mu).abs().min() > 1e-3 and (raw - shifted).abs().min() > 1e-3

    def test_equivariance_check_catches_a_translation_dependent_mu(self):
        """Negative control: the symmetry check fails on mu plus a small term that moves with the molecule."""
        model = self.make_model(torch.float64)
        data = Batch.from_data_list(self.make_graphs(torch.float64))

        def f(pos):
            d = data.clone()
            d.pos = pos
            return (model(d)["mu"][:, None] + 1e-4 * pos[:, 0].sum(),)

        with pytest.raises(AssertionError, match="translation"):
            assert_equivariant(f, [data.pos], ["cartesian_points"], ["0e"], tolerance=1e-9, ntrials=2)


class TestViSNetEnergy(_EnergyTests):
    cls = ViSNetBaseline

    def test_continuous_at_cutoff(self):
        """Continuous while PyG's s_proj biases are zero (their initial value), as the mixin checks."""
        self.zero_s_proj_bias = True
        super().test_continuous_at_cutoff()

    def test_jumps_at_cutoff_once_s_proj_has_a_bias(self):
        """PyG's ViSNet: the vector message vec_j * s1 + s2 * d_ij with s = SiLU(s_proj(v_j)) tends to
        SiLU(bias) != 0 as an edge reaches the cutoff: energy and forces jump (why it is not smooth)."""
        model = self.make_model(torch.float64)
        data = self.make_graphs(torch.float64)[0]
        far = data.pos[:, 0].argmax()
        out = [model(self.extra_atom(data, data.pos[far] + torch.tensor([r, 0.0, 0.0], dtype=torch.float64)))
               for r in (CUTOFF - 1e-7, CUTOFF + 1e-7)]
        assert (out[0]["energy"] - out[1]["energy"]).abs().max() > 1e-4


class TestViSNetProperty(_PropertyTests):
    cls = ViSNetBaseline

    def test_continuous_at_cutoff(self):
        self.zero_s_proj_bias = True
        super().test_continuous_at_cutoff()


class TestViSNetEnergyLmax2Vertex(TestViSNetEnergy):
    """Edge harmonics up to l = 2, vertex features and PyG's max-min vector norm."""

    extra = {"lmax": 2, "vertex": True, "vecnorm_type": "max_min"}

    def test_continuous_at_cutoff(self):
        """The energy only, to O(d^2): so energy and forces are continuous. The forces' own derivative
        jumps at the cutoff (ViSNet's cosine envelope has a non-zero second derivative there), beyond
        what the forces check allows here."""
        self.outputs = {"energy": (GRAPH, "0e")}
        super().test_continuous_at_cutoff()


class TestDimeNetPPEnergy(_EnergyTests):
    cls = DimeNetPPBaseline


class TestDimeNetPPProperty(_PropertyTests):
    cls = DimeNetPPBaseline


def test_visnet_isolated_atom_has_nan_second_derivatives():
    """PyG's ViSNet: an atom without neighbours keeps zero vector features, and the norm of them in the
    output block (GatedEquivariantBlock) has a NaN second derivative, so training on forces with such
    an atom in the batch gives NaN gradients (its energy and forces themselves are finite)."""
    model = _model(ViSNetBaseline, "energy", torch.float64).train()
    mol = _molecules(torch.float64)[1]
    assert _has_isolated_atom(mol)
    out = model(mol)
    assert torch.isfinite(out["forces"]).all() and torch.isfinite(out["energy"]).all()
    out["forces"].square().sum().backward()
    assert any(p.grad is not None and p.grad.isnan().any() for p in model.parameters())


# ------------------------------------------------------------------ equality with PyG's models


def _brute_edges(pos, batch, cutoff):
    """All pairs ``i != j`` of a graph closer than ``cutoff``, ordered by source (eqgeo orders by centre)."""
    d = (pos[:, None] - pos[None]).norm(dim=-1)
    close = (batch[:, None] == batch[None]) & (d < cutoff) & ~torch.eye(len(pos), dtype=torch.bool)
    src, dst = torch.nonzero(close, as_tuple=True)
    return torch.stack([src, dst])


def _brute_interaction_graph(pos, batch):
    edge_index = _brute_edges(pos, batch, CUTOFF)
    return edge_index, (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)


class _BruteDistance(torch.nn.Module):
    """What PyG's ViSNet ``Distance`` returns (self-loops first here), from :func:`_brute_edges`."""

    def forward(self, pos, batch):
        loops = torch.arange(len(pos)).expand(2, -1)
        edge_index = torch.cat([loops, _brute_edges(pos, batch, CUTOFF)], dim=1)
        vec = pos[edge_index[0]] - pos[edge_index[1]]
        mask = edge_index[0] != edge_index[1]
        length = torch.zeros(len(vec), dtype=pos.dtype)
        length[mask] = vec[mask].norm(dim=-1)
        return edge_index, length, vec


def _reference(model, num_outputs):
    """PyG's own model with the wrapper's weights, its neighbours from the brute-force search above."""
    if isinstance(model, SchNetBaseline):
        h = HYPER[SchNetBaseline]
        ref = SchNet(cutoff=CUTOFF, interaction_graph=_brute_interaction_graph, **h)
        if num_outputs != 1:
            ref.lin2 = torch.nn.Linear(h["hidden_channels"] // 2, num_outputs)
    else:
        h = HYPER[ViSNetBaseline]
        ref = ViSNet(cutoff=CUTOFF, **h)
        ref.representation_model.distance = _BruteDistance()
        if num_outputs != 1:
            ref.output_model.output_network[-1] = GatedEquivariantBlock(h["hidden_channels"] // 2, num_outputs)
    ref = ref.to(torch.float64).eval()
    ref.load_state_dict(model.net.state_dict())
    if isinstance(ref, SchNet):
        return ref
    return lambda z, pos, batch: ref(z, pos, batch)[0]


def _check_energy_and_forces(model, reference, tol):
    """The wrapper's energies and forces against ``reference(z, pos, batch)``, PyG's forward with the same
    weights, scaled and shifted by the statistics ``_model`` set."""
    data = Batch.from_data_list(_molecules(torch.float64))
    pos = data.pos.clone().requires_grad_(True)
    ref = reference(data.z, pos, data.batch)[:, 0]
    shift = torch.tensor(SHIFTS, dtype=torch.float64)[torch.tensor([SPECIES.index(int(z)) for z in data.z])]
    energy = SCALE * ref + torch.zeros_like(ref).index_add(0, data.batch, shift)
    forces = -torch.autograd.grad(energy.sum(), pos)[0]
    out = model(data)
    torch.testing.assert_close(out["energy"], energy.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(out["forces"], forces, atol=tol, rtol=tol)


@pytest.mark.parametrize("cls", [SchNetBaseline, ViSNetBaseline], ids=["schnet", "visnet"])
def test_property_mode_equals_pyg_model_on_brute_force_neighbours(cls):
    model = _model(cls, "property", torch.float64)
    data = Batch.from_data_list(_molecules(torch.float64))
    ref = _reference(model, 2)(data.z, data.pos, data.batch)
    n = torch.bincount(data.batch).to(torch.float64)
    mean, std = torch.tensor(MEANS, dtype=torch.float64), torch.tensor(STDS, dtype=torch.float64)
    expected = torch.stack([std[0] * ref[:, 0] + mean[0] * n, std[1] * ref[:, 1] / n + mean[1]], dim=1)
    torch.testing.assert_close(model(data)["y"], expected, atol=1e-12, rtol=1e-12)


def test_schnet_dipole_mode_equals_pyg_dipole_model_on_brute_force_neighbours():
    model = _model(SchNetBaseline, "property", torch.float64, dipole=True)
    ref = SchNet(cutoff=CUTOFF, interaction_graph=_brute_interaction_graph, dipole=True, **HYPER[SchNetBaseline])
    ref = ref.to(torch.float64).eval()
    ref.load_state_dict(model.net.state_dict())
    data = Batch.from_data_list(_molecules(torch.float64))
    torch.testing.assert_close(model(data)["mu"], ref(data.z, data.pos, data.batch)[:, 0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls", [SchNetBaseline, ViSNetBaseline], ids=["schnet", "visnet"])
def test_energy_mode_equals_pyg_model_on_brute_force_neighbours(cls):
    model = _model(cls, "energy", torch.float64)
    _check_energy_and_forces(model, _reference(model, 1), tol=1e-12)


# ------------------------------------------------------------------ neighbour modules


def test_neighbor_modules_return_what_pyg_modules_return():
    data = Batch.from_data_list(_molecules(torch.float64))
    pos = data.pos.clone().requires_grad_(True)
    edge_index, length = NeighborListInteractionGraph(CUTOFF)(pos, data.batch)
    expected = _brute_edges(data.pos, data.batch, CUTOFF)
    assert sorted(map(tuple, edge_index.T.tolist())) == sorted(map(tuple, expected.T.tolist()))
    torch.testing.assert_close(length, (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1))

    edge_index, length, vec = NeighborListDistance(CUTOFF)(pos, data.batch)
    loops = edge_index[0] == edge_index[1]
    assert int(loops.sum()) == data.num_nodes and sorted(edge_index[0, loops].tolist()) == list(range(data.num_nodes))
    assert (length[loops] == 0).all() and (vec[loops] == 0).all() and length.dtype == torch.float64
    torch.testing.assert_close(vec, pos[edge_index[0]] - pos[edge_index[1]])
    torch.testing.assert_close(length[~loops], vec[~loops].norm(dim=-1))

    k = 2
    edge_index, _ = NeighborListInteractionGraph(CUTOFF, max_num_neighbors=k)(pos, data.batch)
    assert torch.bincount(edge_index[1], minlength=data.num_nodes).max() <= k


# ------------------------------------------------------------------ building from a config, and errors


def test_networks_are_built_from_their_config_target():
    """eqgeo-train builds every network from its model config's _target_ (instantiate_model): eqgeo's own
    and the PyG baselines alike, with the mode the task gives the baselines."""
    common = {"species": SPECIES, "avg_num_neighbors": 3.0, "cutoff": CUTOFF}
    eq = {"channels": 4, "lmax": 1, "num_layers": 1, "radial_hidden": 8}
    model, config = instantiate_model({"_target_": "eqgeo.models.PropertyModel", **common, **eq}, num_targets=1)
    assert type(model) is PropertyModel and config == {"_target_": "eqgeo.models.PropertyModel", **common, **eq,
                                                       "num_targets": 1}
    model, _ = instantiate_model({"_target_": "eqgeo.models.InteratomicPotential", **common, **eq})
    assert type(model) is InteratomicPotential
    schnet, _ = instantiate_model({"_target_": "eqgeo.models.SchNetBaseline", "mode": "property", **common,
                                   **HYPER[SchNetBaseline]}, num_targets=2, reduce="mean")
    assert type(schnet) is SchNetBaseline and schnet.mode == "property" and schnet.num_targets == 2
    visnet, _ = instantiate_model({"_target_": "eqgeo.models.ViSNetBaseline", "mode": "energy", **common,
                                   **HYPER[ViSNetBaseline]})
    assert type(visnet) is ViSNetBaseline and visnet.mode == "energy" and visnet.avg_num_neighbors == 3.0
    assert isinstance(visnet.net.representation_model.distance, NeighborListDistance)
    schnet, _ = instantiate_model({"_target_": "eqgeo.models.SchNetBaseline", "mode": "energy", "species": SPECIES})
    assert isinstance(schnet.net.interaction_graph, NeighborListInteractionGraph)
    with pytest.raises(ValueError, match="'eqgeo.models.DimeNet' is not a class that can be imported"):
        instantiate_model({"_target_": "eqgeo.models.DimeNet", "species": SPECIES})
    with pytest.raises(ValueError, match="is not a torch.nn.Module class"):
        instantiate_model({"_target_": "pathlib.Path", "species": SPECIES})
    with pytest.raises(ValueError, match="needs _target_"):
        instantiate_model({"species": SPECIES})
    with pytest.raises(ValueError, match="mode must be one of"):
        instantiate_model({"_target_": "eqgeo.models.SchNetBaseline", "mode": "forces", "species": SPECIES})
    with pytest.raises(ValueError, match="hiden_channels"):
        instantiate_model({"_target_": "eqgeo.models.SchNetBaseline", "mode": "energy", "species": SPECIES,
                           "hiden_channels": 8})
    with pytest.raises(ValueError, match=r"\['num_targets'\] are set by the task"):
        instantiate_model({"_target_": "eqgeo.models.PropertyModel", "num_targets": 2, **common}, num_targets=1)


def test_clear_errors():
    model = _model(SchNetBaseline, "energy", torch.float64)
    mol = _molecules(torch.float64, 1)[0]
    with pytest.raises(ValueError, match=r"atomic numbers \[7\] are not among the model's species \[1, 6, 8\]"):
        model(Data(z=torch.tensor([6, 7]), pos=torch.randn(2, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="builds its neighbour list .* data.edge_index would not be used"):
        model(Data(z=mol.z, pos=mol.pos, edge_index=torch.zeros(2, 0, dtype=torch.long)))
    with pytest.raises(ValueError, match="is for molecules"):
        model(Data(z=mol.z, pos=mol.pos, cell=torch.eye(3)[None] * 10))
    with pytest.raises(ValueError, match="one energy scale for all species"):
        model.set_statistics(SHIFTS, [0.7, 1.1, 1.3])
    with pytest.raises(ValueError, match="needs data.pos"):
        model(Data(z=torch.tensor([6])))
    with pytest.raises(ValueError, match="species must be distinct atomic numbers 1..99"):
        SchNetBaseline([1, 100])
    with pytest.raises(ValueError, match="num_targets and reduce are for mode='property'"):
        ViSNetBaseline(SPECIES, "energy", num_targets=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        ViSNetBaseline(SPECIES, "forces")
    with pytest.raises(ValueError, match="dipole=True is for mode='property', not mode='energy'"):
        SchNetBaseline(SPECIES, "energy", dipole=True)
    with pytest.raises(ValueError, match="predicts the dipole moment mu alone .* num_targets must be 0, got 2"):
        SchNetBaseline(SPECIES, "property", num_targets=2, dipole=True)


def test_trailing_empty_graph_gets_the_statistics_of_zero_atoms():
    model = _model(SchNetBaseline, "property", torch.float64)
    mol = _molecules(torch.float64, 1)[0]
    batch = Batch.from_data_list([mol, Data(z=torch.zeros(0, dtype=torch.long), pos=torch.zeros(0, 3, dtype=torch.float64))])
    y = model(batch)["y"]
    torch.testing.assert_close(y[0], model(mol)["y"][0])
    torch.testing.assert_close(y[1], torch.tensor([0.0, MEANS[1]], dtype=torch.float64))  # sum: 0 atoms; mean: the mean


def test_doctests():
    result = doctest.testmod(baselines, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 9


# ------------------------------------------------------------------ DimeNet++: triplets and PyG's forward


def _brute_triplets(edge_index):
    """Every path k -> j -> i (k != i) by a double loop over the edges: (i, j, k, edge kj, edge ji)."""
    src, dst = edge_index.tolist()
    out = []
    for ji, (j, i) in enumerate(zip(src, dst)):
        for kj, (k, j2) in enumerate(zip(src, dst)):
            if j2 == j and k != i:
                out.append((i, j, k, kj, ji))
    return out


def test_triplets_are_every_two_edge_path():
    data = Batch.from_data_list(_molecules(torch.float64, spread=1.2))
    edge_index = _brute_edges(data.pos, data.batch, CUTOFF)
    got = sorted(zip(*(t.tolist() for t in triplets(edge_index, data.num_nodes))))
    expected = sorted(_brute_triplets(edge_index))
    assert len(expected) > 20 and got == expected
    # an isolated node and a graph without edges
    assert all(t.numel() == 0 for t in triplets(torch.zeros(2, 0, dtype=torch.long), 4))


def _pyg_triplets(edge_index, num_nodes):
    """PyG's ``triplets`` output (col, row, idx_i, idx_j, idx_k, idx_kj, idx_ji) from the double loop."""
    t = torch.tensor(_brute_triplets(edge_index), dtype=torch.long).reshape(-1, 5).T
    return (edge_index[1], edge_index[0], *t)


def _pyg_dimenet(model, monkeypatch):
    """PyG's DimeNetPlusPlus with the wrapper's weights, its forward unchanged: its radius_graph and its
    torch_sparse triplets (neither runs here) replaced by the brute-force edges and paths above."""
    import torch_geometric.nn.models.dimenet as dimenet

    monkeypatch.setattr(dimenet, "radius_graph", lambda pos, r, batch, max_num_neighbors: _brute_edges(pos, batch, r))
    monkeypatch.setattr(dimenet, "triplets", _pyg_triplets)
    h = HYPER[DimeNetPPBaseline]
    ref = DimeNetPlusPlus(out_channels=model.num_outputs, cutoff=CUTOFF, **h).to(torch.float64).eval()
    ref.load_state_dict(model.net.state_dict())
    return ref


def test_dimenetpp_property_mode_equals_pyg_forward(monkeypatch):
    model = _model(DimeNetPPBaseline, "property", torch.float64)
    data = Batch.from_data_list(_molecules(torch.float64))
    ref = _pyg_dimenet(model, monkeypatch)(data.z, data.pos, data.batch)
    n = torch.bincount(data.batch).to(torch.float64)
    mean, std = torch.tensor(MEANS, dtype=torch.float64), torch.tensor(STDS, dtype=torch.float64)
    expected = torch.stack([std[0] * ref[:, 0] + mean[0] * n, std[1] * ref[:, 1] / n + mean[1]], dim=1)
    assert expected.std() > 1e-3
    torch.testing.assert_close(model(data)["y"], expected, atol=1e-10, rtol=1e-10)


def test_dimenetpp_energy_and_forces_equal_pyg_forward(monkeypatch):
    model = _model(DimeNetPPBaseline, "energy", torch.float64)
    _check_energy_and_forces(model, _pyg_dimenet(model, monkeypatch), tol=1e-10)


def test_dimenetpp_forces_of_a_linear_molecule_are_finite_and_along_its_axis(monkeypatch):
    """A straight triplet (CO2, |a x b| = 0 in the angle): finite forces along the axis, PyG's forward's."""
    model = _model(DimeNetPPBaseline, "energy", torch.float64)
    co2 = Data(z=torch.tensor([8, 6, 8]), pos=torch.tensor([[-1.16, 0.0, 0.0], [0.0, 0.0, 0.0], [1.3, 0.0, 0.0]],
                                                          dtype=torch.float64))
    out = model(co2)
    assert torch.isfinite(out["forces"]).all() and out["forces"][:, 0].abs().max() > 1e-6
    torch.testing.assert_close(out["forces"][:, 1:], torch.zeros(3, 2, dtype=torch.float64))
    pos = co2.pos.clone().requires_grad_(True)
    ref = _pyg_dimenet(model, monkeypatch)(co2.z, pos, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(out["forces"], -SCALE * torch.autograd.grad(ref.sum(), pos)[0])
