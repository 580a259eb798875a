import pytest
import torch
from torch_geometric.data import Batch, Data

from eqgeo.data import radius_graph
from eqgeo.models import InteratomicPotential, dataset_statistics

from ._mixin import GRAPH, NODE, EnergyModelTests, ModelTestsMixin, random_molecules

SPECIES = [1, 6, 8]


def _model(dtype, layer="conv", parity="natural", **kwargs):
    kwargs = {"channels": 4, "lmax": 2, "num_layers": 2, "cutoff": 3.0, "heads": 2, "key_dim": 4,
              "radial_hidden": 8, "avg_num_neighbors": 3.0, **kwargs}
    model = InteratomicPotential(SPECIES, parity=parity, layer=layer, **kwargs).to(dtype).eval()
    model.set_statistics(torch.tensor([-13.6, -1029.8, -2041.6]), torch.tensor([0.7, 1.1, 1.3]))
    return model


def _molecules(dtype, n=3):
    return random_molecules(SPECIES, dtype, (5, 3, 6)[:n], seed=7)


class _PotentialTests(EnergyModelTests, ModelTestsMixin):
    outputs = {"energy": (GRAPH, "0e"), "forces": (NODE, "1o"), "atomic_energy": (NODE, "0e")}
    statistics = ("energy_shift", "energy_scale")
    layer, parity = "conv", "natural"
    correlation = 1

    def make_model(self, dtype):
        return _model(dtype, self.layer, self.parity, correlation=self.correlation)

    def make_graphs(self, dtype):
        return _molecules(dtype)

    def compile_target(self, model, data):
        return model.atomic_energies, (data.z, data.pos, data.edge_index, data.batch)

    def test_forces_continuous_at_cutoff(self):
        model = self.make_model(torch.float64)
        data = self.make_graphs(torch.float64)[0]
        far = data.pos[:, 0].argmax()
        forces = []
        for r in (self.cutoff - 1e-6, self.cutoff + 1e-6):
            forces.append(model(self.extra_atom(data, data.pos[far] + torch.tensor([r, 0.0, 0.0], dtype=torch.float64)))["forces"])
        torch.testing.assert_close(forces[0], forces[1], atol=1e-9, rtol=0)

    def test_training_step_reaches_all_weights(self):
        """In training mode forces keep their graph: a force loss gives gradients to every weight but the energy
        offset per atom, which moves every energy by the same amount per atom and no force; the energy reaches it."""
        model = self.make_model(torch.float64).train()
        data = Batch.from_data_list(self.make_graphs(torch.float64))
        out = model(data)
        assert out["forces"].requires_grad
        out["forces"].square().sum().backward(retain_graph=True)
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == ["energy_bias"], missing
        model.zero_grad()
        out["energy"].sum().backward()
        # dE/db = sum over atoms of the atom's species scale
        expected = model.energy_scale[model.embedding.types(data.z, data.batch)].sum()
        torch.testing.assert_close(model.energy_bias.grad, expected.to(model.energy_bias.dtype))


class TestPotentialConv(_PotentialTests):
    pass


class TestPotentialTransformer(_PotentialTests):
    layer = "transformer"


class TestPotentialFullParity(_PotentialTests):
    parity = "full"
    test_compile_fullgraph = None  # compiled in the default variant of this model


class TestPotentialManyBody(_PotentialTests):
    """Each layer followed by a degree-3 many-body product with per-species weights (eqgeo.nn.ManyBodyProduct)."""

    correlation = 3


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_compiled_forces(training):
    """Forces through ``torch.autograd.grad`` compile as one graph with ``trace_autograd_ops``;
    with ``create_graph=True`` the force loss back-propagates through the compiled graph."""
    model = _model(torch.float64)
    data = Batch.from_data_list(_molecules(torch.float64))
    edge_index = radius_graph(data.pos, 3.0, data.batch)

    def forces(pos):
        energy = model.atomic_energies(data.z, pos, edge_index, data.batch).sum()
        return -torch.autograd.grad(energy, pos, create_graph=training)[0]

    pos = data.pos.clone().requires_grad_(True)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(forces, fullgraph=True, backend="aot_eager")
        got = compiled(pos)
    expected = forces(pos)
    torch.testing.assert_close(got, expected)
    assert got.requires_grad == training
    if training:  # every weight but the energy offset, which no force depends on
        weights = [p for n, p in model.named_parameters() if n != "energy_bias"]
        grads = [torch.autograd.grad(f.square().sum(), weights) for f in (got, expected)]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)
    torch._dynamo.reset()


def test_no_grad_inference_detaches_outputs():
    model = _model(torch.float64)
    with torch.no_grad():
        out = model(_molecules(torch.float64, 1)[0])
    assert not out["forces"].requires_grad and not out["energy"].requires_grad
    assert out["forces"].abs().sum() > 0


def test_energy_shift_stays_float64_in_a_float32_model():
    model = _model(torch.float32)
    model.set_statistics(torch.tensor([-13.6123456789, -1029.8123456789, -2041.6123456789], dtype=torch.float64), 1.0)
    model = model.to(torch.float32)
    assert model.energy_shift.dtype == torch.float64 and model.energy_scale.dtype == torch.float32
    assert model.energy_shift[0].item() == -13.6123456789
    out = model(_molecules(torch.float32, 1)[0])
    assert out["energy"].dtype == torch.float64 and out["forces"].dtype == torch.float32


def test_unknown_species_names_the_atomic_number():
    model = _model(torch.float64)
    with pytest.raises(ValueError, match=r"atomic numbers \[7\] are not among the model's species \[1, 6, 8\]"):
        model(Data(z=torch.tensor([6, 7]), pos=torch.randn(2, 3, dtype=torch.float64)))


def test_missing_fields_and_bad_shapes_raise():
    model = _model(torch.float64)
    with pytest.raises(ValueError, match="needs data.pos"):
        model(Data(z=torch.tensor([6])))
    with pytest.raises(ValueError, match=r"pos of shape \(N, 3\)"):
        model(Data(z=torch.tensor([6, 1]), pos=torch.zeros(2, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="needs data with a periodic cell"):
        model(_molecules(torch.float64, 1)[0], compute_stress=True)
    with pytest.raises(ValueError, match="parity must be one of"):
        _model(torch.float64, parity="odd")
    with pytest.raises(ValueError, match="layer must be one of"):
        _model(torch.float64, layer="mlp")


def _crystal(dtype):
    cell = torch.tensor([[3.2, 0.0, 0.0], [0.4, 3.0, 0.0], [0.2, 0.3, 3.4]], dtype=dtype)
    frac = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.45, 0.55], [0.25, 0.7, 0.2]], dtype=dtype)
    return Data(z=torch.tensor([8, 1, 6]), pos=frac @ cell, cell=cell[None], pbc=torch.tensor([[True, True, True]]))


def test_stress_is_strain_derivative_over_volume():
    """Stress equals finite differences of the energy under a symmetric strain, divided by the volume."""
    model = _model(torch.float64)
    data = _crystal(torch.float64)
    out = model(data)
    assert out["stress"].shape == (1, 3, 3) and out["forces"].shape == (3, 3)
    torch.testing.assert_close(out["stress"], out["stress"].transpose(1, 2))
    volume = torch.linalg.det(data.cell[0]).abs()
    h = 1e-5
    fd = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                eps = torch.zeros(3, 3, dtype=torch.float64)
                eps[a, b] += sign * h / 2
                eps[b, a] += sign * h / 2
                d = data.clone()
                d.pos = data.pos + data.pos @ eps
                d.cell = data.cell + data.cell @ eps
                energies.append(model(d, compute_forces=False)["energy"].sum())
            fd[a, b] = (energies[0] - energies[1]) / (2 * h) / volume
    torch.testing.assert_close(out["stress"][0], fd, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(out["virial"][0], -fd * volume, atol=1e-7, rtol=1e-6)


def test_periodic_forces_and_stress_rotate_with_the_crystal():
    model = _model(torch.float64)
    data = _crystal(torch.float64)
    out = model(data)
    from eqgeo.o3 import rand_matrix

    R = rand_matrix(dtype=torch.float64)
    rotated = data.clone()
    rotated.pos, rotated.cell = data.pos @ R.T, data.cell @ R.T
    moved = model(rotated)
    torch.testing.assert_close(moved["energy"], out["energy"])
    torch.testing.assert_close(moved["forces"], out["forces"] @ R.T)
    torch.testing.assert_close(moved["stress"][0], R @ out["stress"][0] @ R.T)


def test_periodic_images_count():
    """A one-atom cell smaller than the cutoff sees its own images: forces vanish by symmetry, energy is finite."""
    model = _model(torch.float64)
    data = Data(z=torch.tensor([6]), pos=torch.zeros(1, 3, dtype=torch.float64),
                cell=(2.0 * torch.eye(3, dtype=torch.float64))[None], pbc=torch.tensor([[True, True, True]]))
    out = model(data)
    isolated = model(Data(z=torch.tensor([6]), pos=torch.zeros(1, 3, dtype=torch.float64)))
    assert out["forces"].abs().max() < 1e-12
    assert not torch.allclose(out["energy"], isolated["energy"])


def test_from_data_statistics():
    graphs = _molecules(torch.float64)
    true_shift = {1: -0.5, 6: -37.8, 8: -75.0}
    for g in graphs:
        g.energy = torch.tensor([sum(true_shift[int(z)] for z in g.z)], dtype=torch.float64)
        g.forces = torch.randn(g.num_nodes, 3, dtype=torch.float64)
    stats = dataset_statistics(graphs, cutoff=3.0)
    assert stats["species"] == [1, 6, 8]
    edges = sum(radius_graph(g.pos, 3.0).shape[1] for g in graphs)
    assert stats["avg_num_neighbors"] == pytest.approx(edges / sum(g.num_nodes for g in graphs))
    model = InteratomicPotential.from_data(graphs, channels=4, lmax=1, num_layers=1, cutoff=3.0)
    assert model.interactions.convs[0].avg_num_neighbors == pytest.approx(stats["avg_num_neighbors"])
    forces = torch.cat([g.forces for g in graphs])
    assert model.energy_scale[0].item() == pytest.approx(forces.square().mean().sqrt().item(), rel=1e-6)
    counts = torch.tensor([[float((g.z == z).sum()) for z in (1, 6, 8)] for g in graphs], dtype=torch.float64)
    energies = torch.cat([g.energy for g in graphs])
    torch.testing.assert_close(counts @ model.energy_shift, energies)
    with pytest.raises(ValueError, match="graph 1 has atomic number 8, not in species"):
        dataset_statistics(graphs, cutoff=3.0, species=[1, 6])


def test_positions_are_cast_to_the_model_dtype():
    """A float32 model takes float64 positions (as ASE gives them) and a float64 model float32 ones."""
    data64 = _molecules(torch.float64, 1)[0]
    data32 = Data(z=data64.z, pos=data64.pos.float())
    model32 = _model(torch.float32)
    out = model32(data64)
    assert out["forces"].dtype == torch.float32
    torch.testing.assert_close(out["forces"], model32(data32)["forces"])
    model64 = _model(torch.float32).double()
    assert model64(data32)["forces"].dtype == torch.float64


def test_state_dict_restores_statistics_and_species_of_from_data():
    """A model built with default arguments that loads the state_dict of a from_data model gives its outputs."""
    graphs = _molecules(torch.float64)
    for g in graphs:
        g.energy = torch.tensor([-10.0 * g.num_nodes], dtype=torch.float64) + torch.randn(1, dtype=torch.float64)
    kwargs = {"channels": 4, "lmax": 1, "num_layers": 2, "cutoff": 3.0}
    trained = InteratomicPotential.from_data(graphs, species=[8, 6, 1], **kwargs).double()
    assert trained.interactions.convs[0].avg_num_neighbors != 10.0
    fresh = InteratomicPotential([1, 6, 8], **kwargs).double()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.embedding.species == [8, 6, 1]
    assert fresh.interactions.convs[0].avg_num_neighbors == trained.interactions.convs[0].avg_num_neighbors
    batch = Batch.from_data_list(graphs)
    torch.testing.assert_close(fresh(batch)["energy"], trained(batch)["energy"])


def test_inference_mode_and_eval_with_grad():
    model = _model(torch.float64)
    data = _molecules(torch.float64, 1)[0]
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="not torch.inference_mode"):
            model(data)
        assert model(data, compute_forces=False)["energy"].shape == (1,)
    out = model(data)  # eval mode, grad enabled: the energy keeps its graph for the caller
    out["energy"].sum().backward()
    assert model.readout[0].weight.grad is not None


def test_from_data_needs_energies():
    with pytest.raises(ValueError, match="needs graphs with data.energy"):
        InteratomicPotential.from_data(_molecules(torch.float64), channels=4, lmax=1, num_layers=1)


def test_energy_shift_from_isolated_atoms_or_well_posed_without_them():
    """Isolated-atom energies set the shifts (E0 + the mean interaction energy per atom); without them, one
    composition in every frame gives the same mean per atom for every species, not a minimum-norm fit."""
    graphs = _molecules(torch.float64)[:1] * 4  # one composition: per-species energies are not determined
    e0 = {1: -13.6, 6: -1025.3, 8: -2035.6}
    for k, g in enumerate(graphs):
        g = graphs[k] = g.clone()
        g.energy = torch.tensor([sum(e0[int(z)] for z in g.z) - 3.0 * g.num_nodes + 0.1 * k], dtype=torch.float64)
    stats = dataset_statistics(graphs, cutoff=3.0, species=SPECIES, atomic_energies=e0)
    mean_interaction = -3.0 + 0.1 * 1.5 / graphs[0].num_nodes
    assert stats["energy_reference"] == "isolated atoms"
    torch.testing.assert_close(stats["energy_shift"], torch.tensor([e0[z] for z in (1, 6, 8)], dtype=torch.float64)
                               + mean_interaction)
    plain = dataset_statistics(graphs, cutoff=3.0, species=SPECIES)
    per_atom = torch.cat([g.energy for g in graphs]).sum() / (4 * graphs[0].num_nodes)
    assert plain["energy_reference"] == "mean per atom"
    torch.testing.assert_close(plain["energy_shift"], per_atom.expand(3))
    # negative control: the minimum-norm least-squares fit that was used before is far from it
    counts = torch.tensor([[float((g.z == z).sum()) for z in (1, 6, 8)] for g in graphs], dtype=torch.float64)
    lstsq = torch.linalg.lstsq(counts, torch.cat([g.energy for g in graphs])[:, None], driver="gelsd").solution[:, 0]
    assert (lstsq - plain["energy_shift"]).abs().max() > 100.0
    with pytest.raises(ValueError, match=r"no isolated-atom energy for atomic numbers \[8\]"):
        dataset_statistics(graphs, cutoff=3.0, species=SPECIES, atomic_energies={1: -13.6, 6: -1025.3})


def test_many_body_weights_are_per_species_and_correlation_one_keeps_the_old_state_dict():
    """correlation=1 registers no product (checkpoints of earlier versions load); correlation=3 has one
    weight row per species in every layer, and changing one species' row changes only its atoms' energies."""
    plain = _model(torch.float64)
    assert not any(".products." in k for k in plain.state_dict())
    model = _model(torch.float64, correlation=3)
    product = model.interactions.products[0]
    assert product.degree_weight.shape[0] == len(SPECIES) and len(model.interactions.products) == 2
    data = Batch.from_data_list(_molecules(torch.float64))
    before = model(data, compute_forces=False)["atomic_energy"]
    with torch.no_grad():
        model.interactions.products[1].product_weights[0][SPECIES.index(8)].mul_(3.0)  # oxygen's, last layer
    after = model(data, compute_forces=False)["atomic_energy"]
    oxygen = data.z == 8
    assert oxygen.any() and (~oxygen).any()
    torch.testing.assert_close(after[~oxygen], before[~oxygen])  # the last layer's product acts per atom
    assert (after[oxygen] - before[oxygen]).abs().max() > 1e-6


def test_energy_bias_moves_energies_not_forces_and_old_state_dicts_load():
    """energy_bias adds scale_Z * b to every atom's energy and nothing to the forces (a readout weight, the negative
    control, moves both); a state dict saved before it existed loads with b = 0, the function it was saved with."""
    model = _model(torch.float64)
    data = Batch.from_data_list(_molecules(torch.float64))
    before = model(data)
    with torch.no_grad():
        model.energy_bias.fill_(0.25)
    after = model(data)
    scale = model.energy_scale[model.embedding.types(data.z, data.batch)]
    torch.testing.assert_close(after["atomic_energy"] - before["atomic_energy"], 0.25 * scale)
    torch.testing.assert_close(after["forces"], before["forces"], atol=1e-12, rtol=0)
    with torch.no_grad():
        model.readout[0].weight.mul_(1.5)
    moved = model(data)
    assert (moved["forces"] - after["forces"]).abs().max() > 1e-6
    old = {k: v for k, v in model.state_dict().items() if k != "energy_bias"}
    fresh = _model(torch.float64)
    with torch.no_grad():
        fresh.energy_bias.fill_(1.0)
    fresh.load_state_dict(old)  # strict: the missing key is filled in
    assert fresh.energy_bias.item() == 0.0
    torch.testing.assert_close(fresh(data)["energy"], moved["energy"] - 0.25 * torch.zeros_like(moved["energy"]).index_add(0, data.batch, scale))
    # the added weight comes in the dtype of the saved model (negative control: float32)
    for dtype in (torch.float64, torch.float32):
        state = {k: v for k, v in _model(dtype).state_dict().items() if k != "energy_bias"}
        InteratomicPotential.upgrade_state_dict(state)
        assert state["energy_bias"].dtype == dtype
