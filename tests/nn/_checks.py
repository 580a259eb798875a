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
