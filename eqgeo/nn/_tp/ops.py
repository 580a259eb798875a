"""The ``torch.library`` custom ops ``eqgeo::tensor_product`` and ``eqgeo::tensor_product_backward``
with their derivatives.

The forward op's derivative is the backward op. The backward op's derivative (double backward,
e.g. training on forces) follows from multilinearity. The tensor product ``y = TP(x1, x2, w)`` is linear in each of ``x1``, ``x2``, ``w``. Its backward
op maps ``(g, x1, x2, w)`` to the gradients ``(g1, g2, gw)`` of ``<g, TP(x1, x2, w)>``. For
cotangents ``(c1, c2, cw)`` of those gradients,

.. math::

    \\phi = \\langle c_1, g_1\\rangle + \\langle c_2, g_2\\rangle + \\langle c_w, g_w\\rangle
         = \\langle g,\\; TP(c_1, x_2, w) + TP(x_1, c_2, w) + TP(x_1, x_2, c_w) \\rangle

(each term is a directional derivative of a multilinear map), so

- ``dphi/dg = TP(c1, x2, w) + TP(x1, c2, w) + TP(x1, x2, cw)``: three forward ops;
- ``dphi/dx1``, ``dphi/dx2``, ``dphi/dw``: the backward op at ``(g, c1, x2, w)``,
  ``(g, x1, c2, w)`` and ``(g, x1, x2, cw)``, each read for the arguments it does not replace.

Everything runs through the same custom ops, which are themselves differentiable through this
rule, so gradients of any order are exact, in eager mode and inside ``torch.compile`` graphs
(training on forces: the force is a first derivative, its loss gradient a second one).
"""

from __future__ import annotations

import json

import torch

from ...o3 import Irreps
from .blocks import backward_blocks, forward_blocks
from .plan import get_plan

__all__ = ["tensor_product_op", "tensor_product_backward_op"]


@torch.library.custom_op("eqgeo::tensor_product", mutates_args=())
def tensor_product_op(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    """``(B, dim1), (B, dim2), (B or 1, numel) -> (B, dim_out)``; ``key`` names the plan."""
    return forward_blocks(get_plan(key), x1.contiguous(), x2.contiguous(), weight.contiguous())


@tensor_product_op.register_fake
def _(x1, x2, weight, key):
    return x1.new_empty(x1.shape[0], Irreps(json.loads(key)["out"]).dim)


@torch.library.custom_op("eqgeo::tensor_product_backward", mutates_args=())
def tensor_product_backward_op(
    grad: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, key: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return backward_blocks(get_plan(key), grad.contiguous(), x1.contiguous(), x2.contiguous(), weight.contiguous())


@tensor_product_backward_op.register_fake
def _(grad, x1, x2, weight, key):
    return torch.empty_like(x1), torch.empty_like(x2), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x1, x2, weight, key = inputs
    ctx.save_for_backward(x1, x2, weight)
    ctx.key = key


def _backward(ctx, grad):
    # The backward op is itself differentiable (registered below: its
    # exact derivative), so double backward (training on forces) also runs the fast kernels,
    # eagerly and inside compiled graphs.
    x1, x2, weight = ctx.saved_tensors
    gx1, gx2, gw = tensor_product_backward_op(grad, x1, x2, weight, ctx.key)
    return gx1, gx2, gw, None


tensor_product_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------ the backward op's derivative
def _setup_double(ctx, inputs, output):
    grad, x1, x2, weight, key = inputs
    ctx.save_for_backward(grad, x1, x2, weight)
    ctx.key = key


def _backward_of_backward(ctx, c1, c2, cw):
    grad, x1, x2, weight = ctx.saved_tensors
    key = ctx.key
    d_grad = d_x1 = d_x2 = d_w = None
    terms = []
    if c1 is not None:
        terms.append(tensor_product_op(c1, x2, weight, key))
        _, a2, aw = tensor_product_backward_op(grad, c1, x2, weight, key)
        d_x2, d_w = a2, aw
    if c2 is not None:
        terms.append(tensor_product_op(x1, c2, weight, key))
        b1, _, bw = tensor_product_backward_op(grad, x1, c2, weight, key)
        d_x1 = b1
        d_w = bw if d_w is None else d_w + bw
    if cw is not None:
        terms.append(tensor_product_op(x1, x2, cw, key))
        e1, e2, _ = tensor_product_backward_op(grad, x1, x2, cw, key)
        d_x1 = e1 if d_x1 is None else d_x1 + e1
        d_x2 = e2 if d_x2 is None else d_x2 + e2
    if terms:
        d_grad = terms[0]
        for t in terms[1:]:
            d_grad = d_grad + t
    return d_grad, d_x1, d_x2, d_w, None


tensor_product_backward_op.register_autograd(_backward_of_backward, setup_context=_setup_double)
