"""Tensor product and message-passing step: eqgeo vs e3nn, eager and compiled.

Workload (NequIP's convolution before its linear layer): a ``"uvu"`` tensor product of node
features ``32x0e+32x0o+32x1e+32x1o+...`` up to ``lmax`` with edge spherical harmonics up to
``lmax``, one instruction per (input irrep, harmonic, allowed output with l <= lmax), each
writing its own output block; per-edge weights (``shared_weights=False``); 20,000 edges,
float32, 2 threads. Timed: forward plus backward to both inputs and the weights (median of
several runs after warm-up). Each case runs in a fresh process so its peak memory (max RSS
above the process's baseline after the inputs are built) is its own.

Also timed: one message-passing step (gather node features to edges, tensor product,
scatter-sum to nodes) with eqgeo and with e3nn plus ``torch.index_add_``.

    python experiments/benchmarks/bench_tensor_product.py [--lmax 1 2 3] [--repeat 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

EDGES, NODES = 20_000, 1_000


def workload(lmax: int, mul: int = 32):
    from eqgeo.o3 import Irreps

    irreps_in = Irreps([(mul, (l, p)) for l in range(lmax + 1) for p in (1, -1)])
    irreps_sh = Irreps.spherical_harmonics(lmax)
    outs, ins = [], []
    for a, (m1, ir1) in enumerate(irreps_in):
        for b, (_, ir2) in enumerate(irreps_sh):
            for ir in ir1 * ir2:
                if ir.l <= lmax:
                    ins.append((a, b, len(outs), "uvu", True))
                    outs.append((m1, ir))
    return irreps_in, irreps_sh, Irreps(outs), ins


def build(impl: str, lmax: int):
    i1, i2, io, ins = workload(lmax)
    if impl == "e3nn":
        from e3nn import o3

        return o3.TensorProduct(str(i1), str(i2), str(io), ins, shared_weights=False)
    from eqgeo.nn import TensorProduct

    return TensorProduct(i1, i2, io, ins, shared_weights=False)


def run_case(impl: str, lmax: int, mode: str, kind: str, repeat: int) -> dict:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    tp = build(impl, lmax)
    x1 = torch.randn(EDGES if kind == "tp" else NODES, tp.irreps_in1.dim)
    x2 = torch.randn(EDGES, tp.irreps_in2.dim)
    w = torch.randn(EDGES, tp.weight_numel)
    src, dst = torch.randint(0, NODES, (2, EDGES))

    def tp_step(m, a, b, c):
        return m(a, b, c)

    def mp_step(m, a, b, c):
        msg = m(a[src], b, c)
        return torch.zeros(NODES, msg.shape[1], dtype=msg.dtype).index_add_(0, dst, msg)

    fn = tp_step if kind == "tp" else mp_step
    if mode == "compiled":
        fn = torch.compile(fn)

    def step():
        a, b, c = (t.detach().requires_grad_(True) for t in (x1, x2, w))
        y = fn(tp, a, b, c)
        y.backward(torch.ones_like(y))

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    step()  # warm-up (and compilation)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {"ms": statistics.median(times) * 1e3, "peak_mb": peak / 1024, "warmup_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        impl, lmax, mode, kind = args.case.split(",")
        print(json.dumps(run_case(impl, int(lmax), mode, kind, args.repeat)))
        return

    import e3nn

    def case(impl, lmax, mode, kind):
        repeat = args.repeat if not (impl == "e3nn" and lmax >= 3) else max(2, args.repeat // 2)
        out = subprocess.run(
            [sys.executable, __file__, "--case", f"{impl},{lmax},{mode},{kind}", "--repeat", str(repeat)],
            capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    modes = ["eager"] + ([] if args.no_compile else ["compiled"])
    print(f"# Tensor product: {EDGES:,} edges, uvu with per-edge weights, float32, 2 threads")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} cores visible; torch {torch.__version__}, "
          f"e3nn {e3nn.__version__}; compiled = torch.compile (Inductor) applied to both")
    print(f"eqgeo native kernel: {'on' if _native_on() else 'off'}; load average at start: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    for kind, title in (("tp", "tensor product, forward + backward"), ("mp", f"message-passing step ({NODES:,} nodes), forward + backward")):
        print(f"## {title}\n")
        print("| lmax | mode | eqgeo ms | e3nn ms | speed-up | eqgeo peak MB | e3nn peak MB |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for lmax in args.lmax:
            for mode in modes:
                ours, theirs = case("eqgeo", lmax, mode, kind), case("e3nn", lmax, mode, kind)
                print(f"| {lmax} | {mode} | {ours['ms']:.0f} | {theirs['ms']:.0f} | {theirs['ms'] / ours['ms']:.1f}x "
                      f"| {ours['peak_mb']:.0f} | {theirs['peak_mb']:.0f} |", flush=True)
        print()
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _native_on() -> bool:
    from eqgeo.nn import _native

    return _native.enabled()


if __name__ == "__main__":
    main()
