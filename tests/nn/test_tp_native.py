"""The native CPU kernel of the tensor product equals the reference path, and its fallback works."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from eqgeo.nn import TensorProduct
from eqgeo.nn import _native
from eqgeo.nn._tp import native as kernel
from eqgeo.nn._tp import get_plan
from eqgeo.o3 import Irreps

from .test_tensor_product import nequip_like
from ..helpers import require


@pytest.fixture(scope="module")
def native_lib():
    lib = _native.library()
    if lib is None:
        require("the native tensor-product kernel is unavailable here (no C compiler, or its build failed: "
                "see eqgeo.nn._native for the compiler output)")
    return lib


def _mixed():
    """uvu and uvw paths into one block (computed by PyTorch), uvu/uuu blocks (native), and an
    input irrep and an output irrep that no path touches."""
    i1, i2 = "3x0e+3x1o+2x2e+1x1e", "3x0e+1x1o"
    out = "3x0e+3x1o+2x1e+3x1o+2x2o+4x0o"
    ins = [
        (0, 0, 0, "uuu", True), (1, 1, 0, "uvu", True),  # native, two writers of block 0
        (0, 1, 1, "uvu", True), (1, 0, 1, "uuu", False),  # native, uvu then uuu
        (1, 1, 2, "uvw", True),  # PyTorch: uvw only
        (1, 0, 3, "uvu", True), (0, 1, 3, "uvw", True),  # PyTorch: a mixed block
        (2, 1, 4, "uvu", False),  # native, no weights
    ]  # input 3 (1x1e) and output 5 (4x0o) unused
    return i1, i2, out, ins


CASES = {
    # odd multiplicities, spherical harmonics (V = 1), an unused output block
    "uvu_sh": lambda: nequip_like("3x0e+5x1o+1x2e+2x0o", "0e+1o+2e", "uvu"),
    "uvu_l4": lambda: nequip_like("3x3o+1x4e", "0e+1o+4e", "uvu", lmax=4),
    "uvu_multi_v": lambda: nequip_like("2x0e+3x1o+1x2e", "3x0e+2x1e+1x2o", "uvu"),
    "uvu_noweight": lambda: nequip_like("2x0e+3x1o", "0e+1o", "uvu", weight=False),
    "uuu": lambda: nequip_like("3x0e+3x1o+3x2e", "3x0e+3x1o+3x2o", "uuu"),
    "mixed": _mixed,
}


def _unused_output(case):
    i1, i2, out, ins = CASES[case]()
    if case == "uvu_sh":  # append an output block no path writes
        out = Irreps(out) + Irreps("2x1e")
    return i1, i2, out, ins


def _modules(case, shared):
    i1, i2, out, ins = _unused_output(case)
    fast = TensorProduct(i1, i2, out, ins, shared_weights=shared)
    ref = TensorProduct(i1, i2, out, ins, shared_weights=shared, implementation="reference")
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _run(tp, x1, x2, w, g):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x1, x2) + ((w,) if w is not None else ())]
    y = tp(*leaves)
    params = leaves + ([tp.weight] if tp.weight is not None else [])
    return y, torch.autograd.grad(y, params, g)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [0, 1, 517])
def test_native_equals_reference(native_lib, monkeypatch, case, shared, dtype, batch):
    torch.manual_seed(0)
    fast, ref = _modules(case, shared)
    fast.to(dtype), ref.to(dtype)
    calls = []
    real_forward, real_backward = kernel.native_forward, kernel.native_backward
    monkeypatch.setattr(kernel, "native_forward", lambda *a: calls.append("f") or real_forward(*a))
    monkeypatch.setattr(kernel, "native_backward", lambda *a: calls.append("b") or real_backward(*a))
    x1 = fast.irreps_in1.randn(batch, -1, dtype=dtype)
    x2 = fast.irreps_in2.randn(batch, -1, dtype=dtype)
    w = None if shared or fast.weight_numel == 0 else torch.randn(batch, fast.weight_numel, dtype=dtype)
    g = torch.randn(batch, fast.irreps_out.dim, dtype=dtype)
    y_f, grads_f = _run(fast, x1, x2, w, g)
    y_r, grads_r = _run(ref, x1, x2, w, g)
    assert calls == ["f", "b"], "the native kernel was not used"
    tol = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(y_f, y_r, **tol)
    assert len(grads_f) == len(grads_r)
    for a, b in zip(grads_f, grads_r):
        torch.testing.assert_close(a, b, **tol)


def test_several_threads(native_lib):
    # large enough for every thread to take several chunks of samples
    fast, ref = _modules("uvu_sh", shared=True)
    x1, x2 = fast.irreps_in1.randn(3000, -1, dtype=torch.float64), fast.irreps_in2.randn(3000, -1, dtype=torch.float64)
    g = torch.randn(3000, fast.irreps_out.dim, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        y_f, grads_f = _run(fast.double(), x1, x2, None, g)
    finally:
        torch.set_num_threads(before)
    y_r, grads_r = _run(ref.double(), x1, x2, None, g)
    torch.testing.assert_close(y_f, y_r, atol=1e-12, rtol=1e-12)
    for a, b in zip(grads_f, grads_r):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-12)


def test_threads_follow_the_work_and_torch(native_lib, monkeypatch):
    fast, _ = _modules("uvu_sh", shared=True)
    plan = get_plan(fast._key)
    per_thread = kernel.NATIVE_WORK_PER_THREAD
    small = max(1, per_thread // plan.native_work - 1)  # less work than one extra thread needs
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert kernel.native_threads(plan, small) == 1
    assert kernel.native_threads(plan, 10 * small + 10) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert kernel.native_threads(plan, 10 * small + 10) == 1  # never more than torch's intra-op threads


def _forced_threads(monkeypatch, n):
    monkeypatch.setattr(kernel, "native_threads", lambda plan, batch: n)


def test_pool_from_concurrent_callers_and_a_forked_child(native_lib, monkeypatch):
    """Calls from two Python threads at once (one of them runs on its caller) and from a child
    forked while the pool exists (its workers are gone there) give the reference results."""
    import concurrent.futures

    _forced_threads(monkeypatch, 2)
    fast, ref = _modules("uvu_sh", shared=False)
    fast.double(), ref.double()
    n = 2000
    x1, x2 = fast.irreps_in1.randn(n, -1, dtype=torch.float64), fast.irreps_in2.randn(n, -1, dtype=torch.float64)
    w = torch.randn(n, fast.weight_numel, dtype=torch.float64)
    expected = ref(x1, x2, w)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: fast(x1, x2, w), range(8)))
    for y in results:
        torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)
    assert native_lib.eqgeo_pool_threads() >= 1
    # a child forked while the pool exists: its workers are gone there, the kernel must not wait
    # for them. torch's own OpenMP threads hang in a forked child, so the child uses one torch
    # thread, as PyTorch's DataLoader workers do (the native kernel is still told to use 2).
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            torch.set_num_threads(1)
            err = float((fast(x1, x2, w) - expected).abs().max())
            os.write(write, repr(err).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 300
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the native kernel hung in a forked child")
        time.sleep(0.05)
    answer = os.read(read, 100).decode()
    os.close(read)
    assert answer and float(answer) <= 1e-12, f"forked child: {answer or 'no result'}"


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("EQGEO_NATIVE", "0")

    def fail(*args):
        raise AssertionError("native kernel used although EQGEO_NATIVE=0")

    monkeypatch.setattr(kernel, "native_forward", fail)
    monkeypatch.setattr(kernel, "native_backward", fail)
    fast, ref = _modules("mixed", shared=False)
    x1, x2 = fast.irreps_in1.randn(40, -1, dtype=torch.float64), fast.irreps_in2.randn(40, -1, dtype=torch.float64)
    w, g = torch.randn(40, fast.weight_numel, dtype=torch.float64), torch.randn(40, fast.irreps_out.dim, dtype=torch.float64)
    y_f, grads_f = _run(fast.double(), x1, x2, w, g)
    y_r, grads_r = _run(ref.double(), x1, x2, w, g)
    torch.testing.assert_close(y_f, y_r, atol=1e-12, rtol=1e-12)
    for a, b in zip(grads_f, grads_r):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_fallback_without_compiler(monkeypatch):
    # a fresh loader state that finds no compiler: one warning, then the PyTorch path
    monkeypatch.delenv("EQGEO_NATIVE", raising=False)
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_failed", False)
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    fast, ref = _modules("uvu_sh", shared=False)
    x1, x2 = fast.irreps_in1.randn(10, -1), fast.irreps_in2.randn(10, -1)
    w = torch.randn(10, fast.weight_numel)
    with pytest.warns(RuntimeWarning, match="native tensor-product kernel unavailable"):
        y = fast(x1, x2, w)
    assert not _native.enabled()
    torch.testing.assert_close(y, ref(x1, x2, w))
    torch.testing.assert_close(fast(x1, x2, w), y)  # no second warning needed, same result


def test_compile_failure_falls_back(monkeypatch, tmp_path):
    monkeypatch.delenv("EQGEO_NATIVE", raising=False)
    monkeypatch.setenv("EQGEO_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_failed", False)
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(_native, "_SOURCE", bad)
    with pytest.warns(RuntimeWarning, match="failed"):
        assert _native.library() is None
    assert not list((tmp_path / "native").glob("*.so"))  # no half-written library left behind


def test_library_cached_by_content(native_lib, monkeypatch):
    # the loaded library sits in the cache under a content hash
    path = Path(native_lib._name)
    assert path.parent == _native.cache_dir() and path.name.startswith("tp_") and path.suffix == ".so", path
    # asking again for the same source and flags finds it without running the compiler
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: calls.append(cmd) or real_run(cmd, *a, **k))
    cc = _native._compiler()
    found = _native._compile(cc, _native._lib_flags, _native._SOURCE.read_bytes())
    assert found == path, (path, found)
    assert all("-o" not in cmd for cmd in calls), calls
