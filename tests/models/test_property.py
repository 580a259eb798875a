import doctest

import pytest
import torch
from torch_geometric.data import Batch, Data

from eqgeo.models import DEBYE_PER_E_ANGSTROM, PropertyModel

from ._mixin import GRAPH, NODE, ModelTestsMixin, random_molecules

SPECIES = [1, 6, 7, 8]


def _model(dtype, layer="conv", parity="natural", **kwargs):
    kwargs = {"num_targets": 2, "reduce": ["sum", "mean"], "dipole": True, "num_vectors": 2, "channels": 4, "lmax": 2,
              "num_layers": 2, "cutoff": 3.0, "heads": 2, "key_dim": 4, "radial_hidden": 8, "avg_num_neighbors": 3.0,
              **kwargs}
    model = PropertyModel(SPECIES, parity=parity, layer=layer, **kwargs).to(dtype).eval()
    if model.num_targets == 2:
        model.set_statistics(torch.tensor([-12.5, 6.8]), torch.tensor([0.3, 1.3]))
    return model


def _molecules(dtype, n=3):
    return random_molecules(SPECIES, dtype, (4, 6, 3)[:n], seed=3)


class _PropertyTests(ModelTestsMixin):
    outputs = {
        "y": (GRAPH, "2x0e"),
        "dipole": (GRAPH, "1o"),
        "mu": (GRAPH, "0e"),
        "charges": (NODE, "0e"),
        "vectors": (NODE, "2x1o"),
    }
    statistics = ("target_mean", "target_std")
    layer, parity = "conv", "natural"
    correlation = 1

    def make_model(self, dtype):
        return _model(dtype, self.layer, self.parity, correlation=self.correlation)

    def make_graphs(self, dtype):
        return _molecules(dtype)

    def compile_target(self, model, data):
        def fn(z, pos, edge_index, batch):
            out = model.predict(z, pos, edge_index, batch, 3)
            return tuple(out[k] for k in sorted(out))

        return fn, (data.z, data.pos, data.edge_index, data.batch)

    def check_isolated(self, model, data, out):
        alone = [model(Data(z=data.z[i : i + 1], pos=data.pos[i : i + 1])) for i in range(data.num_nodes)]
        # "sum" target: the sum of the atoms alone; "mean": their mean
        y = torch.cat([a["y"] for a in alone])
        torch.testing.assert_close(out["y"][0, 0], y[:, 0].sum())
        torch.testing.assert_close(out["y"][0, 1], y[:, 1].mean())


class TestPropertyConv(_PropertyTests):
    pass


class TestPropertyTransformer(_PropertyTests):
    layer = "transformer"
    test_compile_fullgraph = None  # compiled in the default variant of this model


class TestPropertyFullParity(_PropertyTests):
    parity = "full"
    test_compile_fullgraph = None  # compiled in the default variant of this model


class TestPropertyManyBody(_PropertyTests):
    """Each layer followed by a degree-3 many-body product with per-species weights (eqgeo.nn.ManyBodyProduct)."""

    correlation = 3


def test_dipole_is_charges_times_positions_plus_atomic_dipoles():
    """dipole = sum_i q_i (r_i - centroid) + mu_i, charges summing to the total charge, in debye."""
    model = _model(torch.float64)
    data = _molecules(torch.float64, 1)[0]
    out = model(data)
    assert out["charges"].sum().abs() < 1e-12
    h = model.interactions(model.embedding(data.z), *_edges(model, data))
    atomic = model.atomic_dipoles(h).sum(0)
    expected = (out["charges"][:, None] * (data.pos - data.pos.mean(0))).sum(0) + atomic
    torch.testing.assert_close(out["dipole"][0], expected * DEBYE_PER_E_ANGSTROM)
    torch.testing.assert_close(out["mu"][0], out["dipole"][0].norm())
    # neutral: the dipole does not depend on the origin, and moving the molecule moves nothing
    shifted = data.clone()
    shifted.pos = data.pos + torch.tensor([10.0, -3.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(model(shifted)["dipole"], out["dipole"])
    # a charged molecule: charges add up to its total charge
    charged = data.clone()
    charged.charge = torch.tensor([1.0], dtype=torch.float64)
    assert model(charged)["charges"].sum().item() == pytest.approx(1.0)


def _edges(model, data):
    from eqgeo.data import radius_graph

    edge_index = radius_graph(data.pos, model.cutoff)
    return edge_index, data.pos[edge_index[0]] - data.pos[edge_index[1]]


def test_targets_are_denormalised_per_atom_for_sums_and_per_graph_for_means():
    model = _model(torch.float64)
    data = Batch.from_data_list(_molecules(torch.float64))
    base = model(data)["y"]
    model.set_statistics(torch.tensor([-12.5 + 1.0, 6.8 + 2.0]), torch.tensor([0.3, 1.3]))
    moved = model(data)["y"]
    counts = torch.bincount(data.batch).to(torch.float64)
    torch.testing.assert_close(moved[:, 0] - base[:, 0], counts)  # +1 per atom
    torch.testing.assert_close(moved[:, 1] - base[:, 1], torch.full((3,), 2.0, dtype=torch.float64))


def test_fit_statistics():
    model = _model(torch.float64)
    y = torch.tensor([[-40.0, 1.0], [-80.0, 3.0], [-20.0, 2.0]], dtype=torch.float64)
    n = torch.tensor([4, 8, 2])
    model.fit_statistics(y, n)
    torch.testing.assert_close(model.target_mean, torch.tensor([-10.0, 2.0], dtype=torch.float64))
    # per-atom values of the sum target are all -10 (std 0 -> 1); the mean target has std 1
    torch.testing.assert_close(model.target_std, torch.tensor([1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="must be > 0"):
        model.set_statistics([0.0, 0.0], [1.0, 0.0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="needs something to predict"):
        PropertyModel(SPECIES, num_targets=0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        PropertyModel(SPECIES, num_targets=2, reduce=["sum"])
    with pytest.raises(ValueError, match="no 1o for the vector readouts"):
        PropertyModel(SPECIES, dipole=True, lmax=0, channels=4, num_layers=1)


def test_docstring_example():
    import eqgeo.models.property as module

    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_charge_must_be_one_per_graph():
    model = _model(torch.float64)
    data = _molecules(torch.float64, 1)[0]
    data.charge = torch.zeros(data.num_nodes, dtype=torch.float64)  # per atom: wrong
    with pytest.raises(ValueError, match=r"one total charge per graph \(1\)"):
        model(data)


def test_empty_graph_in_a_batch():
    """An empty graph gets zero for a "sum" target and the mean for a "mean" target; others are unaffected."""
    model = _model(torch.float64)
    a, b = _molecules(torch.float64, 2)
    empty = Data(z=torch.zeros(0, dtype=torch.long), pos=torch.zeros(0, 3, dtype=torch.float64))
    out = model(Batch.from_data_list([a, empty, b]))
    assert out["y"][1, 0].item() == 0.0 and out["y"][1, 1].item() == pytest.approx(6.8)
    torch.testing.assert_close(out["y"][[0, 2]], model(Batch.from_data_list([a, b]))["y"])
