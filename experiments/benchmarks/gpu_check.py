"""CUDA check in one run: correctness against the CPU, then speed against e3nn.

    PYTHONPATH=. python experiments/benchmarks/gpu_check.py

1. Spherical harmonics, Wigner D, tensor products (fast and reference) and Linear on CUDA
   equal their CPU results (float64) and the fast TP equals the reference TP with gradients.
2. The tensor-product workload of bench_tensor_product.py (uvu, per-edge weights, 20,000 and
   200,000 edges, float32), forward + backward: eqgeo fast, eqgeo reference and e3nn, timed
   with CUDA events (median of 20 after warm-up), and spherical harmonics on 10^6 vectors.
"""

from __future__ import annotations

import statistics
import sys

import torch

sys.path.insert(0, "experiments/benchmarks")
from bench_tensor_product import workload  # noqa: E402

from eqgeo import o3  # noqa: E402
from eqgeo.nn import Linear, TensorProduct  # noqa: E402


def cuda_time(fn, repeat=20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def correctness() -> None:
    dev = torch.device("cuda")
    x = torch.randn(1000, 3, dtype=torch.float64)
    for ls in ([0, 1, 2, 3], list(range(9))):
        err = (o3.spherical_harmonics(ls, x.to(dev), True).cpu() - o3.spherical_harmonics(ls, x, True)).abs().max().item()
        print(f"SH {ls[-1]:>2}: cuda vs cpu max err {err:.1e}")
        assert err < 1e-12
    R = o3.rand_matrix(10, dtype=torch.float64)
    irreps = o3.Irreps("2x0e+1o+2e+3o")
    err = (irreps.D_from_matrix(R.to(dev)).cpu() - irreps.D_from_matrix(R)).abs().max().item()
    print(f"Wigner D: cuda vs cpu {err:.1e}")
    assert err < 1e-12
    i1, i2, io, ins = workload(2, mul=8)
    for impl in ("fast", "reference"):
        tp = TensorProduct(i1, i2, io, ins, shared_weights=False, implementation=impl).double()
        args = [i1.randn(500, -1, dtype=torch.float64), i2.randn(500, -1, dtype=torch.float64),
                torch.randn(500, tp.weight_numel, dtype=torch.float64)]
        cpu_args = [a.clone().requires_grad_() for a in args]
        gpu_args = [a.to(dev).requires_grad_() for a in args]
        y_c, y_g = tp(*cpu_args), tp.to(dev)(*gpu_args)
        g = torch.randn_like(y_c)
        gc = torch.autograd.grad(y_c, cpu_args, g)
        gg = torch.autograd.grad(y_g, gpu_args, g.to(dev))
        errs = [(y_g.cpu() - y_c).abs().max().item()] + [(a.cpu() - b).abs().max().item() for a, b in zip(gg, gc)]
        print(f"TP {impl}: cuda vs cpu (out, d x1, d x2, d w) {', '.join(f'{e:.1e}' for e in errs)}")
        assert max(errs) < 1e-11
        tp.cpu()
    lin = Linear("8x0e+4x1o+2x2e", "4x0e+4x1o+2x2e", biases=True).double()
    xl = o3.Irreps("8x0e+4x1o+2x2e").randn(10, -1, dtype=torch.float64)
    err = (lin.to(dev)(xl.to(dev)).cpu() - lin.cpu()(xl)).abs().max().item()
    print(f"Linear: cuda vs cpu {err:.1e}")
    assert err < 1e-12


def speed() -> None:
    dev = torch.device("cuda")
    try:
        from e3nn import o3 as e3nn_o3
        import e3nn

        print(f"e3nn {e3nn.__version__}")
    except ImportError:
        e3nn_o3 = None
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("\n| lmax | edges | eqgeo fast ms | eqgeo reference ms | e3nn ms | e3nn / best eqgeo |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lmax in (1, 2, 3):
        i1, i2, io, ins = workload(lmax)
        for edges in (20_000, 200_000):
            x1 = torch.randn(edges, i1.dim, device=dev)
            x2 = torch.randn(edges, i2.dim, device=dev)
            mods = {impl: TensorProduct(i1, i2, io, ins, shared_weights=False, implementation=impl).to(dev) for impl in ("fast", "reference")}
            if e3nn_o3 is not None:
                mods["e3nn"] = e3nn_o3.TensorProduct(str(i1), str(i2), str(io), ins, shared_weights=False).to(dev)
            w = torch.randn(edges, mods["fast"].weight_numel, device=dev)
            res = {}
            for name, m in mods.items():
                def step(m=m):
                    a, b, c = (t.detach().requires_grad_(True) for t in (x1, x2, w))
                    y = m(a, b, c)
                    y.backward(torch.ones_like(y))
                try:
                    res[name] = cuda_time(step)
                except torch.OutOfMemoryError:
                    res[name] = float("nan")
                torch.cuda.empty_cache()
            best = min(res["fast"], res["reference"])
            e = res.get("e3nn", float("nan"))
            print(f"| {lmax} | {edges:,} | {res['fast']:.2f} | {res['reference']:.2f} | {e:.2f} | {e / best:.1f}x |", flush=True)
    x = torch.randn(1_000_000, 3, device=dev)
    for lmax in (2, 4):
        ls = list(range(lmax + 1))
        def ours():
            v = x.detach().requires_grad_(True)
            o3.spherical_harmonics(ls, v, True).sum().backward()
        line = f"SH lmax {lmax}, 1e6 vectors fwd+bwd: eqgeo {cuda_time(ours):.2f} ms"
        if e3nn_o3 is not None:
            def theirs():
                v = x.detach().requires_grad_(True)
                e3nn_o3.spherical_harmonics(ls, v, True).sum().backward()
            line += f", e3nn {cuda_time(theirs):.2f} ms"
        print(line)


if __name__ == "__main__":
    correctness()
    speed()
