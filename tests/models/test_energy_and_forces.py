"""The one energy-and-forces path (:func:`eqgeo.models.energy_and_forces`) and the one species
lookup (:func:`eqgeo.models.species_types`) of InteratomicPotential and the PyG baselines, on
energies whose derivatives are known in closed form."""

from __future__ import annotations

import doctest
import inspect

import pytest
import torch

from eqgeo.models import SpeciesEmbedding, UnknownSpeciesError, energy_and_forces, species_types


def _points(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of 5 atoms in 2 graphs (3 and 2 atoms), float64, and the batch vector."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 3, generator=g, dtype=torch.float64), torch.tensor([0, 0, 0, 1, 1])


def _square_norms(batch, weight=None):
    """``E_g = w sum_i |x_i|^2`` over each graph's atoms, the strain applied as ``x + x @ strain``."""

    def energy_of(pos, strain):
        x = pos if strain is None else pos + torch.einsum("ni,nij->nj", pos, strain[batch])
        e = x.square().sum(-1) * (1.0 if weight is None else weight)
        return {"energy": torch.zeros(2, dtype=x.dtype).index_add(0, batch, e)}

    return energy_of


def test_doctests():
    module = inspect.getmodule(energy_and_forces)  # the examples of its module, by the public name
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_forces_virial_and_stress_in_closed_form():
    """``F_i = -2 x_i``; ``dE/d(strain) = 2 sum_i x_i x_i^T``: virial its negative, stress it over the volume."""
    pos, batch = _points()
    volume = torch.tensor([2.0, 5.0], dtype=torch.float64)
    out = energy_and_forces(_square_norms(batch), pos, training=False, volume=volume)
    assert list(out) == ["energy", "forces", "virial", "stress"]
    energy = torch.zeros(2, dtype=torch.float64).index_add(0, batch, pos.square().sum(-1))
    torch.testing.assert_close(out["energy"], energy)
    torch.testing.assert_close(out["forces"], -2 * pos)
    outer = torch.zeros(2, 3, 3, dtype=torch.float64).index_add(0, batch, 2 * pos[:, :, None] * pos[:, None, :])
    torch.testing.assert_close(out["virial"], -outer)
    torch.testing.assert_close(out["stress"], outer / volume[:, None, None])
    assert not out["forces"].requires_grad and out["energy"].requires_grad  # evaluation: the energy keeps its graph


def test_training_keeps_the_graph_of_the_derivatives():
    """``training=True``: a loss on forces and stress back-propagates to the weights (double backward)."""
    pos, batch = _points()
    weight = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    out = energy_and_forces(_square_norms(batch, weight), pos, training=True, volume=torch.ones(2, dtype=torch.float64))
    assert out["forces"].requires_grad and out["stress"].requires_grad
    (grad,) = torch.autograd.grad(out["forces"].square().sum() + out["stress"].sum(), [weight])
    # forces -2 w x: d/dw sum 4 w^2 |x|^2 = 8 w sum |x|^2; stress 2 w sum x x^T: d/dw sum_ab = 2 sum (sum_a x_a)^2
    expected = 8 * weight.detach() * pos.square().sum() + 2 * pos.sum(-1).square().sum()
    torch.testing.assert_close(grad, expected)


def test_no_grad_detaches_and_inference_mode_refuses():
    pos, batch = _points()
    with torch.no_grad():
        out = energy_and_forces(_square_norms(batch), pos, training=True, volume=torch.ones(2, dtype=torch.float64))
    assert not any(v.requires_grad for v in out.values())
    torch.testing.assert_close(out["forces"], -2 * pos)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"^forces are derivatives .* not torch.inference_mode\(\)"):
            energy_and_forces(_square_norms(batch), pos, training=False)
        with pytest.raises(RuntimeError, match=r"^forces and stress are derivatives"):
            energy_and_forces(_square_norms(batch), pos, training=False, compute_forces=False, volume=torch.ones(2))
        out = energy_and_forces(_square_norms(batch), pos, training=False, compute_forces=False)
    assert list(out) == ["energy"]


def test_unused_positions_have_zero_forces_and_a_caller_s_positions_are_kept():
    pos, batch = _points()
    constant = torch.ones(2, dtype=pos.dtype, requires_grad=True)
    out = energy_and_forces(lambda p, s: {"energy": constant}, pos, training=False)
    assert torch.equal(out["forces"], torch.zeros_like(pos))
    # positions that already require grad are differentiated as given: the caller can differentiate the forces
    mine = pos.clone().requires_grad_(True)
    out = energy_and_forces(_square_norms(batch), mine, training=True)
    (hessian_sum,) = torch.autograd.grad(out["forces"].sum(), [mine])
    torch.testing.assert_close(hessian_sum, torch.full_like(pos, -2.0))


def test_species_types_checks_and_looks_up():
    embedding = SpeciesEmbedding([1, 6, 8], 4)
    z = torch.tensor([8, 1, 6, 1])
    assert species_types(z, embedding.type_of, embedding.atomic_numbers).tolist() == [2, 0, 1, 0]
    assert torch.equal(embedding.types(z), species_types(z, embedding.type_of, embedding.atomic_numbers))
    with pytest.raises(UnknownSpeciesError, match=r"graph 1 of the batch, atom 0 \(F\)"):
        species_types(torch.tensor([1, 9]), embedding.type_of, embedding.atomic_numbers, torch.tensor([0, 1]))
    assert species_types(torch.zeros(0, dtype=torch.long), embedding.type_of, embedding.atomic_numbers).numel() == 0


@pytest.mark.slow
def test_species_lookup_compiles_without_graph_break():
    """The check reads tensors back to Python, so compiled graphs skip it, and the species must not be
    read before it: a ``.tolist()`` outside the check splits a model's graph (DockingModel's compile
    test)."""
    embedding = SpeciesEmbedding([1, 6, 8], 4, num_kinds=2)
    z, kind = torch.tensor([8, 1, 6, 1]), torch.tensor([0, 1, 1, 0])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(embedding)(z, kind)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(embedding, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(z, kind), embedding(z, kind))
    torch._dynamo.reset()
