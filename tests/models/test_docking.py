import doctest

import pytest
import torch
from torch_geometric.data import Batch, Data

from eqgeo.data import keys as K
from eqgeo.models import DockingModel

from ._mixin import EDGE, GRAPH, ModelTestsMixin, random_molecule


def _model(dtype, layer="conv", parity="full", **kwargs):
    kwargs = {"channels": 4, "lmax": 2, "num_layers": 2, "cutoff": 3.0, "heads": 2, "key_dim": 4, "radial_hidden": 8,
              "avg_num_neighbors": 3.0, **kwargs}
    model = DockingModel(parity=parity, layer=layer, **kwargs).to(dtype).eval()
    model.set_statistics(2.0, 0.5, 0.7)
    return model


def _complex(dtype, n_lig, n_pocket, bonds, generator) -> Data:
    lig = random_molecule([6, 7, 8], n_lig, dtype, generator=generator)
    pocket = random_molecule([6, 7, 8, 16, 30], n_pocket, dtype, generator=generator)  # 30: Zn, an "other" type
    pocket.pos = pocket.pos + torch.tensor([1.5, 0.0, 0.0], dtype=dtype)
    return Data(
        z=torch.cat([lig.z, pocket.z]),
        pos=torch.cat([lig.pos, pocket.pos]),
        node_type=torch.cat([torch.full((n_lig,), K.NODE_LIGAND), torch.full((n_pocket,), K.NODE_PROTEIN)]),
        rotatable_bond_index=torch.tensor(bonds, dtype=torch.long).reshape(2, -1),
    )


def _complexes(dtype):
    g = torch.Generator().manual_seed(11)
    return [_complex(dtype, 5, 4, [[0, 2], [1, 3]], g), _complex(dtype, 3, 5, [[1], [2]], g), _complex(dtype, 4, 3, [[], []], g)]


class _DockingTests(ModelTestsMixin):
    outputs = {
        "translation": (GRAPH, "1o"),
        "rotation": (GRAPH, "1e"),
        "torsion": (EDGE, "0o"),
        "confidence": (GRAPH, "0e"),
    }
    index_keys = (K.ROTATABLE_BOND_INDEX,)
    statistics = ("translation_scale", "rotation_scale", "torsion_scale")
    layer, parity = "conv", "full"
    correlation = 1
    # at initialisation the torsions (0o, from products of 1o and 1e features) are ~1e-3 while the
    # features they come from are ~1: float32 rounding of those features sets
    # their error, not their own size (3e-7 at most seen, natural parity)
    equivariance_atol = {torch.float32: 2e-6}

    def make_model(self, dtype):
        return _model(dtype, self.layer, self.parity, correlation=self.correlation)

    def make_graphs(self, dtype):
        return _complexes(dtype)

    def compile_target(self, model, data):
        def fn(z, pos, node_type, edge_index, batch, bonds):
            out = model.predict(z, pos, node_type, edge_index, batch, 3, bonds)
            return tuple(out[k] for k in sorted(out))

        return fn, (data.z, data.pos, data.node_type, data.edge_index, data.batch, data.rotatable_bond_index)

    def extra_atom(self, data, pos):
        out = data.clone()
        out.z = torch.cat([data.z, torch.tensor([16])])
        out.pos = torch.cat([data.pos, pos[None]])
        out.node_type = torch.cat([data.node_type, torch.tensor([K.NODE_PROTEIN])])
        return out


class TestDockingConv(_DockingTests):
    pass


class TestDockingTransformer(_DockingTests):
    layer = "transformer"
    test_compile_fullgraph = None  # compiled in the default variant of this model


class TestDockingNaturalParity(_DockingTests):
    parity = "natural"
    test_compile_fullgraph = None  # compiled in the default variant of this model


class TestDockingManyBody(_DockingTests):
    """Each layer followed by a degree-3 many-body product with per-species weights (eqgeo.nn.ManyBodyProduct)."""

    correlation = 3


def test_torsion_does_not_depend_on_the_bond_direction():
    model = _model(torch.float64)
    data = _complexes(torch.float64)[0]
    flipped = data.clone()
    flipped.rotatable_bond_index = data.rotatable_bond_index.flip(0)
    torch.testing.assert_close(model(flipped)["torsion"], model(data)["torsion"])
    assert model(data)["torsion"].abs().min() > 0


def test_only_ligand_atoms_move_the_ligand():
    """Outputs are means over ligand atoms: the number of pocket atoms far away changes nothing."""
    model = _model(torch.float64)
    data = _complexes(torch.float64)[0]
    far = data.clone()
    far.z = torch.cat([data.z, torch.tensor([6])])
    far.pos = torch.cat([data.pos, torch.tensor([[50.0, 0.0, 0.0]], dtype=torch.float64)])
    far.node_type = torch.cat([data.node_type, torch.tensor([K.NODE_PROTEIN])])
    a, b = model(data), model(far)
    for key in ("translation", "rotation", "torsion", "confidence"):
        torch.testing.assert_close(a[key], b[key])


def test_scales_are_the_units():
    model = _model(torch.float64)
    data = Batch.from_data_list(_complexes(torch.float64))
    base = model(data)
    model.set_statistics(4.0, 1.0, 1.4)
    doubled = model(data)
    for key in ("translation", "rotation", "torsion"):
        torch.testing.assert_close(doubled[key], 2 * base[key])
    with pytest.raises(ValueError, match="translation_scale must be > 0"):
        model.set_statistics(0.0, 1.0, 1.0)


def test_bad_inputs_raise():
    model = _model(torch.float64)
    data = _complexes(torch.float64)[0]
    no_type = Data(z=data.z, pos=data.pos)
    with pytest.raises(ValueError, match="needs data.node_type"):
        model(no_type)
    protein_bond = data.clone()
    protein_bond.rotatable_bond_index = torch.tensor([[0], [7]])
    with pytest.raises(ValueError, match="bonds with a protein atom"):
        model(protein_bond)


def test_docstring_example():
    import eqgeo.models.docking as module

    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_node_type_must_be_ligand_or_protein():
    model = _model(torch.float64)
    data = _complexes(torch.float64)[0]
    data.node_type = data.node_type.clone()
    data.node_type[0] = 2
    with pytest.raises(ValueError, match=r"node_type must be 0 \(ligand\) or 1 \(protein\)"):
        model(data)


def test_many_body_weights_are_per_species_and_kind():
    """correlation=3: a ligand carbon and a protein carbon use different product weight rows. The outputs read
    the ligand atoms only, so scaling the protein carbons' row of the last layer changes nothing, and the
    ligand carbons' row changes them (the control)."""
    model = _model(torch.float64, correlation=3)
    data = Batch.from_data_list(_complexes(torch.float64))
    emb = model.embedding
    carbon = emb.species.index(6)
    rows = {kind: carbon + emb.num_types * kind for kind in (K.NODE_LIGAND, K.NODE_PROTEIN)}
    assert rows[K.NODE_LIGAND] != rows[K.NODE_PROTEIN]
    last = model.interactions.products[-1]
    assert last.degree_weight.shape[0] == emb.num_types * emb.num_kinds
    before = model(data)
    changed = {}
    for kind, row in rows.items():
        with torch.no_grad():
            saved = last.product_weights[0][row].clone()
            last.product_weights[0][row].mul_(3.0)
            out = model(data)
            last.product_weights[0][row].copy_(saved)
        changed[kind] = max((out[k] - before[k]).abs().max().item() for k in ("translation", "rotation", "confidence"))
    assert changed[K.NODE_PROTEIN] < 1e-12 < 1e-6 < changed[K.NODE_LIGAND]
