"""Architecture: the arguments shared by the three eqgeo networks, their defaults, and the error for a misspelt one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from eqgeo.models import Architecture, DockingModel, InteratomicPotential, PropertyModel

SPECIES = [1, 6, 8]
SMALL = {"channels": 4, "lmax": 1, "num_layers": 1, "radial_hidden": 8}
CONF = Path(__file__).resolve().parents[2] / "eqgeo" / "conf" / "model"


def _build(cls, **kwargs):
    return cls(**kwargs) if cls is DockingModel else cls(SPECIES, **kwargs)


@pytest.mark.parametrize("cls", [InteratomicPotential, PropertyModel, DockingModel])
def test_unknown_keyword_raises_type_error_naming_it_and_the_closest(cls):
    with pytest.raises(TypeError, match=rf"^{cls.__name__}\(\) got an unexpected keyword argument 'chanels' \(did you mean 'channels'\?\)"):
        _build(cls, chanels=4)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'nonsense'; its architecture arguments are channels, lmax"):
        _build(cls, nonsense=1, **SMALL)


@pytest.mark.parametrize("cls", [InteratomicPotential, PropertyModel, DockingModel])
def test_keywords_reach_the_trunk_and_defaults_are_the_models(cls):
    model = _build(cls, cutoff=3.5, avg_num_neighbors=7.0, **SMALL)
    assert model.architecture == dataclasses.replace(cls.default_architecture, cutoff=3.5, avg_num_neighbors=7.0, **SMALL)
    assert model.cutoff == 3.5 and len(model.interactions.convs) == 1
    assert all(conv.avg_num_neighbors == 7.0 for conv in model.interactions.convs)
    assert str(model.interactions.irreps_hidden) == str(model.architecture.hidden_irreps())


def test_default_architectures():
    assert InteratomicPotential.default_architecture == Architecture() == PropertyModel.default_architecture
    assert DockingModel.default_architecture == Architecture(channels=16, num_layers=4, parity="full", avg_num_neighbors=20.0)
    model = DockingModel()
    assert model.architecture == DockingModel.default_architecture
    assert model.interactions.irreps_hidden == Architecture(channels=16, parity="full").hidden_irreps()


@pytest.mark.parametrize("name", ["conv", "transformer"])
def test_hydra_model_configs_are_architecture_arguments(name):
    """The keys of conf/model/{conv,transformer}.yaml (``model.channels=32`` ...) are Architecture fields."""
    keys = set()
    for part in (["conv"] if name == "conv" else ["conv", name]):
        keys |= set(OmegaConf.load(CONF / f"{part}.yaml").keys())
    keys -= {"_target_", "defaults"}
    assert keys and keys <= set(Architecture.names())


def test_same_seed_same_weights():
    torch.manual_seed(0)
    a = InteratomicPotential(SPECIES, **SMALL).state_dict()
    torch.manual_seed(0)
    b = InteratomicPotential(SPECIES, **SMALL).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
