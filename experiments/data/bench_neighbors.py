"""Neighbour-list time per backend: a 10,000-atom protein and a batch of 128 QM9 molecules.

Usage:  python experiments/data/bench_neighbors.py [--shared ../shared/data] [--repeats 5]

The protein is the first 10,000 heavy atoms of PDB 1OF6 (an 8-chain octamer, 20,834 atoms) in
the shared PoseBusters/Astex files; the molecules are the first 128 of the shared qm9pack CSV
prefix (with hydrogens). Times are the median of ``--repeats`` calls of
``eqgeo.data.radius_graph`` (edge sorting and filtering included), after one warm-up call.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch_geometric.data import Batch

from eqgeo.data import available_backends, radius_graph, read_pdb
from eqgeo.datasets import QM9

DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def median_time(fn, repeats: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def protein_positions(shared: Path) -> torch.Tensor:
    protein = read_pdb(shared / "complexes/posebusters_paper_data/astex_diverse_set/1OF6_DTY/1OF6_DTY_protein.pdb")
    return protein.pos[:10_000]


def qm9_batch(shared: Path) -> Batch:
    dataset = QM9(Path(tempfile.mkdtemp(prefix="eqgeo_bench_")), source=shared / "qm9/qm9pack")
    return Batch.from_data_list([dataset[i] for i in range(128)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    cases = []
    pos = protein_positions(args.shared)
    for r in (5.0, 10.0):
        cases.append((f"protein 10,000 atoms, r={r:g} A", pos, None, r))
    batch = qm9_batch(args.shared)
    cases.append((f"QM9 batch of 128 ({batch.num_nodes} atoms), r=5 A", batch.pos, batch.batch, 5.0))

    print(f"# neighbour lists: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"torch {torch.get_num_threads()} threads")
    if importlib.util.find_spec("torch_cluster") is None:
        print("# torch_cluster: not installed here, not timed")
    print(f"{'case':<42} {'backend':<14} {'edges':>10} {'median time':>12}")
    for name, p, b, r in cases:
        for backend in available_backends():
            seconds, edges = median_time(lambda: radius_graph(p, r, b, backend=backend), args.repeats)
            print(f"{name:<42} {backend:<14} {edges.shape[1]:>10,} {seconds * 1e3:>9.1f} ms")


if __name__ == "__main__":
    main()
