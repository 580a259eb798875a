"""An element the model was not trained on: the error names the frame, the atom within it and the element."""

from __future__ import annotations

import re

import pytest
import torch
from torch_geometric.data import Batch, Data

from eqgeo.models import InteratomicPotential, PropertyModel, SchNetBaseline, SpeciesEmbedding

SPECIES = [1, 6, 8]
SMALL = {"channels": 4, "lmax": 1, "num_layers": 1, "cutoff": 3.0, "radial_hidden": 8, "avg_num_neighbors": 3.0}


def _molecule(z: list[int]) -> Data:
    pos = torch.arange(len(z), dtype=torch.float64)[:, None] * torch.tensor([1.1, 0.2, 0.0], dtype=torch.float64)
    return Data(z=torch.tensor(z), pos=pos)


def _batch() -> Batch:
    """Frame 0: methanol-like CH3OH, 6 atoms, all known. Frame 1: 5 atoms, F at its atoms 2 and 4."""
    return Batch.from_data_list([_molecule([6, 8, 1, 1, 1, 1]), _molecule([6, 1, 9, 1, 9])])


def _models():
    yield InteratomicPotential(SPECIES, **SMALL).double().eval()
    yield PropertyModel(SPECIES, num_targets=1, **SMALL).double().eval()
    yield SchNetBaseline(SPECIES, "energy", cutoff=3.0, hidden_channels=8, num_filters=8, num_interactions=1,
                         num_gaussians=8).double().eval()


@pytest.mark.parametrize("model", list(_models()), ids=lambda m: type(m).__name__)
def test_unknown_element_names_frame_and_atom_within_it(model):
    with pytest.raises(ValueError) as info:
        model(_batch())
    message = str(info.value)
    assert "atomic numbers [9] are not among the model's species [1, 6, 8]" in message
    assert "F not in H, C, O" in message
    assert "frame 1, atom 2 (F); frame 1, atom 4 (F)" in message
    # never the batch-wide indices 8 and 10, and never frame 0
    assert not re.search(r"atom (8|10)\b", message) and "frame 0" not in message


def test_single_graph_is_frame_0_and_out_of_range_numbers():
    embedding = SpeciesEmbedding(SPECIES, 4)
    with pytest.raises(ValueError, match=r"frame 0, atom 1 \(Z=0\); frame 0, atom 2 \(F\)"):
        embedding.types(torch.tensor([6, 0, 9]))
    with pytest.raises(ValueError, match=r"atomic numbers \[120\].*frame 2, atom 0 \(Z=120\)"):
        embedding.types(torch.tensor([6, 1, 120]), torch.tensor([0, 1, 2]))


def test_long_lists_are_cut_and_counted():
    embedding = SpeciesEmbedding(SPECIES, 4)
    z = torch.full((14,), 17)
    batch = torch.arange(14) // 7
    with pytest.raises(ValueError, match=r"frame 1, atom 2 \(Cl\); and 4 more") as info:
        embedding.types(z, batch)
    assert "frame 0, atom 6 (Cl); frame 1, atom 0 (Cl)" in str(info.value)


def test_known_species_and_allow_unknown_pass():
    embedding = SpeciesEmbedding(SPECIES, 4, allow_unknown=True)
    assert embedding.types(torch.tensor([6, 9]), torch.tensor([0, 1])).tolist() == [1, 3]
    assert SpeciesEmbedding(SPECIES, 4).types(torch.tensor([8, 1])).tolist() == [2, 0]
