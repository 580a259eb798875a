"""Checks every equivariant module must pass; shared by the tests of eqgeo.nn."""

from __future__ import annotations

import copy
import io

import torch


def compiles_without_graph_breaks(module: torch.nn.Module, *args) -> None:
    """``torch.compile(fullgraph=True)`` (aot_eager backend) gives the eager outputs and gradients."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module)(*args)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    leaves = [a.detach().requires_grad_(a.is_floating_point()) for a in args]
    y_c = compiled(*leaves)
    y_e = module(*leaves)
    torch.testing.assert_close(y_c, y_e)
    floats = [a for a in leaves if a.requires_grad]
    g_c = torch.autograd.grad(y_c.square().sum(), floats)
    g_e = torch.autograd.grad(y_e.square().sum(), floats)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b)
    torch._dynamo.reset()


def round_trips(module: torch.nn.Module, *args) -> None:
    """deepcopy and a state_dict saved and loaded with ``weights_only=True`` give equal outputs."""
    y = module(*args)
    torch.testing.assert_close(copy.deepcopy(module)(*args), y)
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    fresh = copy.deepcopy(module)
    if hasattr(fresh, "reset_parameters"):
        fresh.reset_parameters()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh(*args), y)


def cutoff_crossing(layer: torch.nn.Module, x: torch.Tensor, fixed: list[torch.Tensor], direction: torch.Tensor,
                    cutoff: float) -> list[tuple[int, int, float, float]]:
    """A last atom moved across the cutoff sphere about the origin along ``direction``, just inside and just
    outside, at steps 1e-1, 1e-2 and 1e-3: per step ``(edges inside, edges outside, largest change of the
    output, largest change of the gradient of sum(output^2) by the positions)``. ``fixed`` are the other
    atoms' positions (an atom at the origin among them). Edges within ``cutoff``."""
    from ._reference import edge_vectors, radius_edges

    def run(distance):
        pos = torch.stack([*fixed, distance * direction]).requires_grad_(True)
        edge_index = radius_edges(pos.detach(), cutoff)
        out = layer(x, edge_index, edge_vectors(pos, edge_index))
        (grad,) = torch.autograd.grad(out.square().sum(), pos)
        return edge_index.shape[1], out.detach(), grad

    changes = []
    for step in (1e-1, 1e-2, 1e-3):
        n_in, out_in, g_in = run(cutoff - step)
        n_out, out_out, g_out = run(cutoff + step)
        changes.append((n_in, n_out, (out_in - out_out).abs().max().item(), (g_in - g_out).abs().max().item()))
    return changes


def double_backward_through_edges(layer: torch.nn.Module, irreps_in: str) -> None:
    """gradcheck and gradgradcheck of the layer's output by its features and edge vectors on a 3-atom graph
    (forces are derivatives by positions; training on them differentiates once more)."""
    from ._reference import edge_vectors, random_graph

    x, pos, edge_index = random_graph(n=3, irreps=irreps_in, spread=0.8)
    assert edge_index.shape[1] == 6
    x.requires_grad_(True)
    edge_vec = edge_vectors(pos, edge_index).requires_grad_(True)

    def f(x, edge_vec):
        return layer(x, edge_index, edge_vec)

    torch.autograd.gradcheck(f, (x, edge_vec))
    torch.autograd.gradgradcheck(f, (x, edge_vec))
