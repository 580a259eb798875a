"""Process the full QM9 (130,831 molecules) from the qm9pack==1.0.3 CSVs; record time and peak memory.

Usage:  python experiments/data/process_qm9.py [--root CACHE_DIR] [--out experiments/data/qm9_processing.md]

Runs the processing from scratch (force_reload=True), then reloads from the cache, and writes
the timings, the peak resident memory of this process and sanity numbers as Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from eqgeo.datasets import QM9
from eqgeo.datasets.qm9 import NUM_MOLECULES, TARGET_UNITS, TARGETS, qm9pack_folder


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _ram_gib() -> str:
    """Physical memory of this machine in GiB (rounded), or "?" where sysconf does not tell."""
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f}"
    except (ValueError, OSError, AttributeError):
        return "?"


def _source_note(folder: Path | None) -> str:
    """Where the CSVs came from, in words that name no folder of this machine."""
    if folder is None:
        return "qm9pack not found"
    return "qm9_part1/2/3.csv in the qm9pack wheel's `data/` folder (located with `importlib.util.find_spec`)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=None, help="cache folder (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("qm9_processing.md")))
    args = parser.parse_args()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="eqgeo_qm9_"))

    rss_before = peak_rss_mib()
    start = time.perf_counter()
    dataset = QM9(root, force_reload=True)
    process_s = time.perf_counter() - start
    rss_process = peak_rss_mib()
    del dataset

    start = time.perf_counter()
    dataset = QM9(root)
    load_s = time.perf_counter() - start
    assert len(dataset) == NUM_MOLECULES, len(dataset)

    y = dataset._data.y
    cache_file = Path(dataset.processed_paths[0])
    splits = dataset.split(seed=0)
    lines = [
        "# QM9: full processing from the qm9pack==1.0.3 CSVs",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {_ram_gib()} GiB RAM, Python {platform.python_version()}, torch {torch.__version__}",
        f"- source: {_source_note(qm9pack_folder())}",
        f"- molecules: {len(dataset):,} (skipped: {dataset.report.count})",
        f"- processing from scratch: **{process_s:.1f} s**",
        f"- peak resident memory of the process: **{rss_process:,.0f} MiB** (before processing: {rss_before:,.0f} MiB)",
        f"- reload from cache: {load_s:.2f} s; cache file {cache_file.stat().st_size / 2**20:.0f} MiB",
        f"- atoms: {dataset._data.z.numel():,}; standard split sizes (seed 0): "
        f"{len(splits['train']):,} / {len(splits['val']):,} / {len(splits['test']):,}",
        "",
        "| target | unit | mean | std | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for i, (name, unit) in enumerate(zip(TARGETS, TARGET_UNITS)):
        col = y[:, i]
        lines.append(f"| {name} | {unit} | {col.mean():.4f} | {col.std():.4f} | {col.min():.4f} | {col.max():.4f} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
