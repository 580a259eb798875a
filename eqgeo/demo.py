"""``eqgeo-demo``: a quick tour that checks eqgeo's maths on a real molecule.

Builds spherical-harmonic edge features of an ethanol molecule, rotates and reflects the
molecule, and prints how far the features are from transforming exactly as ``D(R)`` says
(float64; should be ~1e-15), plus the e3nn-compatible irreps algebra.
"""

from __future__ import annotations

import argparse
import time

import torch

from . import o3
from .testing import equivariance_error

# Ethanol (C2H5OH), Angstrom: a small real molecule so the demo needs no files.
_ETHANOL = [
    ("C", -0.0488, 0.5565, 0.0000),
    ("C", -1.2652, -0.3414, 0.0000),
    ("O", 1.1455, -0.2142, 0.0000),
    ("H", -0.0839, 1.1963, 0.8878),
    ("H", -0.0839, 1.1963, -0.8878),
    ("H", -2.1837, 0.2501, 0.0000),
    ("H", -1.2560, -0.9829, 0.8854),
    ("H", -1.2560, -0.9829, -0.8854),
    ("H", 1.9191, 0.3535, 0.0000),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eqgeo-demo", description=__doc__)
    parser.add_argument("--lmax", type=int, default=4, help="largest degree of the edge harmonics")
    parser.add_argument("--cutoff", type=float, default=2.0, help="edge cutoff in Angstrom")
    args = parser.parse_args(argv)

    pos = torch.tensor([p[1:] for p in _ETHANOL], dtype=torch.float64)
    n = len(pos)
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = (src != dst) & ((pos[src] - pos[dst]).norm(dim=-1) < args.cutoff)
    edge_index = torch.stack([src[keep], dst[keep]])
    irreps_sh = o3.Irreps.spherical_harmonics(args.lmax)

    def edge_features(p):
        return o3.spherical_harmonics(irreps_sh, p[edge_index[0]] - p[edge_index[1]], normalize=True)

    t0 = time.perf_counter()
    errors = equivariance_error(edge_features, [pos], ["cartesian_points"], [irreps_sh], ntrials=5)
    elapsed = time.perf_counter() - t0
    print(f"ethanol: {n} atoms, {edge_index.shape[1]} edges within {args.cutoff} A")
    print(f"edge features: {irreps_sh} (dim {irreps_sh.dim})")
    for name, err in errors.items():
        print(f"  max |Y(g x) - D(g) Y(x)| under {name:<11s}: {err:.2e}")
    tp = [str(ir) for ir in o3.Irrep("1o") * o3.Irrep("2e")]
    print(f"1o x 2e = {' + '.join(tp)};  Irreps('16x0e+8x1o+4x2e').dim = {o3.Irreps('16x0e+8x1o+4x2e').dim}")
    ok = all(e < 1e-10 for e in errors.values())
    print(f"{'OK' if ok else 'FAILED'}: equivariance holds to float64 precision ({elapsed * 1e3:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
