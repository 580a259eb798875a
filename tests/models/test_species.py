"""An element the model was not trained on: the error names the graph of the batch (and its name when
the batch has names), the atom within that graph and the element."""

from __future__ import annotations

import re

import pytest
import torch
from torch_geometric.data import Batch, Data

from eqgeo.models import InteratomicPotential, PropertyModel, SchNetBaseline, SpeciesEmbedding, UnknownSpeciesError

SPECIES = [1, 6, 8]
SMALL = {"channels": 4, "lmax": 1, "num_layers": 1, "cutoff": 3.0, "radial_hidden": 8, "avg_num_neighbors": 3.0}


def _molecule(z: list[int], name: str | None = None) -> Data:
    pos = torch.arange(len(z), dtype=torch.float64)[:, None] * torch.tensor([1.1, 0.2, 0.0], dtype=torch.float64)
    data = Data(z=torch.tensor(z), pos=pos)
    if name is not None:
        data.name = name
    return data


def _batch(names=(None, None)) -> Batch:
    """Graph 0: methanol-like CH3OH, 6 atoms, all known. Graph 1: 5 atoms, F at its atoms 2 and 4."""
    return Batch.from_data_list([_molecule([6, 8, 1, 1, 1, 1], names[0]), _molecule([6, 1, 9, 1, 9], names[1])])


def _models():
    yield InteratomicPotential(SPECIES, **SMALL).double().eval()
    yield PropertyModel(SPECIES, num_targets=1, **SMALL).double().eval()
    yield SchNetBaseline(SPECIES, "energy", cutoff=3.0, hidden_channels=8, num_filters=8, num_interactions=1,
                         num_gaussians=8).double().eval()


@pytest.mark.parametrize("model", list(_models()), ids=lambda m: type(m).__name__)
def test_unknown_element_names_graph_and_atom_within_it(model):
    with pytest.raises(UnknownSpeciesError) as info:
        model(_batch())
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "atomic numbers [9] are not among the model's species [1, 6, 8]" in message
    assert "F not in H, C, O" in message
    assert "graph 1 of the batch, atom 2 (F); graph 1 of the batch, atom 4 (F)" in message
    assert "(graph: its index in the batch; atom: its index within that graph)" in message
    # never the batch-wide indices 8 and 10, never graph 0, and not called a frame (of a file)
    assert not re.search(r"atom (8|10)\b", message) and "graph 0" not in message and "frame" not in message
    assert info.value.atoms == [(1, 2, "F"), (1, 4, "F")]


@pytest.mark.parametrize("model", list(_models()), ids=lambda m: type(m).__name__)
def test_unknown_element_names_the_graph_by_its_name(model):
    """Graphs read from files carry their name (file and frame, e.g. 'mols:row 7'): the error gives it."""
    with pytest.raises(UnknownSpeciesError) as info:
        model(_batch(("mols:row 3", "mols:row 7")))
    message = str(info.value)
    assert "graph 1 of the batch (name 'mols:row 7'), atom 2 (F); graph 1 of the batch (name 'mols:row 7'), atom 4 (F)" in message
    assert "mols:row 3" not in message
    # one Data (not batched): its name is graph 0's
    with pytest.raises(UnknownSpeciesError, match=r"graph 0 of the batch \(name 'fluoro:2'\), atom 2 \(F\)"):
        model(_molecule([6, 1, 9, 1], "fluoro:2"))


def test_single_graph_is_graph_0_and_out_of_range_numbers():
    embedding = SpeciesEmbedding(SPECIES, 4)
    with pytest.raises(ValueError, match=r"graph 0 of the batch, atom 1 \(Z=0\); graph 0 of the batch, atom 2 \(F\)"):
        embedding.types(torch.tensor([6, 0, 9]))
    with pytest.raises(ValueError, match=r"atomic numbers \[120\].*graph 2 of the batch, atom 0 \(Z=120\)"):
        embedding.types(torch.tensor([6, 1, 120]), torch.tensor([0, 1, 2]))


def test_long_lists_are_cut_and_counted():
    embedding = SpeciesEmbedding(SPECIES, 4)
    z = torch.full((14,), 17)
    batch = torch.arange(14) // 7
    with pytest.raises(ValueError, match=r"graph 1 of the batch, atom 2 \(Cl\); and 4 more") as info:
        embedding.types(z, batch)
    assert "graph 0 of the batch, atom 6 (Cl); graph 1 of the batch, atom 0 (Cl)" in str(info.value)
    assert info.value.more == 4 and len(info.value.atoms) == 10


def test_known_species_and_allow_unknown_pass():
    embedding = SpeciesEmbedding(SPECIES, 4, allow_unknown=True)
    assert embedding.types(torch.tensor([6, 9]), torch.tensor([0, 1])).tolist() == [1, 3]
    assert SpeciesEmbedding(SPECIES, 4).types(torch.tensor([8, 1])).tolist() == [2, 0]
