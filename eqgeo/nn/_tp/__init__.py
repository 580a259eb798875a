"""Tensor-product kernels: native C for "uvu"/"uuu" paths on the CPU, PyTorch for the rest.

On the CPU (float32/float64), output blocks whose every writer is a ``"uvu"`` or ``"uuu"`` path
(NequIP-style convolutions: all of them) are computed by a small C kernel,
``eqgeo/nn/_native/tp.c``, compiled with the system C compiler at first use and cached under
``$EQGEO_CACHE/native`` (see :mod:`eqgeo.nn._native`). It works sample by sample (the
spherical harmonics contracted with the Clebsch–Gordan block once per path, channels
vectorised, results written straight into e3nn's layout), so the forward reads the inputs and
writes the output once and the backward reads the output gradient once. Without a C compiler
(one warning), on other devices or dtypes, or with the environment variable ``EQGEO_NATIVE=0``,
everything takes the PyTorch path below; other modes always do, in the same call.

PyTorch path: for the pair of input irreps ``(a, b)`` of a group of paths, the outer product
``Z[(i, j), n, u, v] = x1[n, u, i] x2[n, v, j]`` is contracted with the Clebsch–Gordan blocks of
*all* paths of the pair at once (their normalisation folded in): one GEMM
``res = C^T Z`` with a constant left matrix, whatever the number of samples. The per-path
channel mixing (``uvu``, ``uvw``, ...) then acts on ``res``. Features are processed in blocks
of samples whose temporaries stay in cache, components outermost so every elementwise op runs
over contiguous channels; each output block is written once, in e3nn's layout. The backward is
written out the same way (it recomputes ``res`` instead of storing it).

The kernels are registered as ``torch.library`` custom ops, so ``torch.compile`` sees one
opaque op (no graph break) and autograd uses the hand-written backward, whose own derivative
(double backward, e.g. training on forces) is registered in the same place.

Modules: :mod:`.instructions` (paths, normalisation, the reference evaluation), :mod:`.plan`
(a configuration's plan, built once), :mod:`.native` (calls of the C kernel), :mod:`.blocks`
(forward and backward over a batch), :mod:`.ops` (the custom ops and their derivatives).
"""

from .ops import tensor_product_backward_op, tensor_product_op
from .plan import get_plan, plan_key

__all__ = ["tensor_product_op", "tensor_product_backward_op", "get_plan", "plan_key"]
