"""Spherical harmonics: eqgeo vs e3nn, same process, same inputs.

Times forward and forward+backward of ``spherical_harmonics(range(lmax+1), x, normalize=True)``
for 10^6 random vectors (float32) at lmax 1..4; median of repeated runs after a warm-up.
Prints a Markdown table with the speed-up (e3nn time / eqgeo time).

    python experiments/benchmarks/bench_spherical_harmonics.py [--n 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from eqgeo import o3


def _time(fns: dict, repeat: int) -> dict:
    """Median ms of each function; the functions alternate so they see the same machine state."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import e3nn
    from e3nn import o3 as e3nn_o3

    x = torch.randn(args.n, 3)
    print(f"# Spherical harmonics, {args.n:,} vectors, float32, normalize=True, integral normalisation")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}, e3nn {e3nn.__version__}\n")
    print("| lmax | eqgeo fwd ms | e3nn fwd ms | speed-up | eqgeo fwd+bwd ms | e3nn fwd+bwd ms | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for lmax in range(1, 5):
        ls = list(range(lmax + 1))
        impls = {
            "eqgeo": lambda v: o3.spherical_harmonics(ls, v, normalize=True),
            "e3nn": lambda v: e3nn_o3.spherical_harmonics(ls, v, normalize=True),
        }
        err = (impls["eqgeo"](x) - impls["e3nn"](x)).abs().max().item()
        assert err < 1e-5, f"eqgeo and e3nn disagree by {err} at lmax {lmax}"
        def forward(f):
            def run():
                with torch.no_grad():
                    f(x)
            return run

        def step(f):
            def run():
                v = x.detach().requires_grad_(True)
                f(v).sum().backward()
            return run

        fwd = _time({name: forward(f) for name, f in impls.items()}, args.repeat)
        both = _time({name: step(f) for name, f in impls.items()}, args.repeat)
        print(
            f"| {lmax} | {fwd['eqgeo']:.1f} | {fwd['e3nn']:.1f} | {fwd['e3nn'] / fwd['eqgeo']:.2f}x "
            f"| {both['eqgeo']:.1f} | {both['e3nn']:.1f} | {both['e3nn'] / both['eqgeo']:.2f}x |"
        )


if __name__ == "__main__":
    main()
