"""Refit a docking model's confidence on its own refined poses (as DiffDock trains its confidence model), then export.

    python experiments/docking/fit_confidence.py RUN_DIR/checkpoints/best.ckpt OUT.ckpt
        [--starts-a 4] [--starts-b 16] [--epochs 300] [--seed 1000]

The model's refinement is kept; only ``confidence_head`` (the ligand-mean scalar readout that ranks
poses in track b) is refitted, by ``eqgeo.training.docking.fit_confidence``, on the poses that
``refine`` makes from track-(a)- and track-(b)-style starts of the run's *training* complexes (drawn with
``--seed``, never the benchmark's starts), labelled by whether they are within 2 Å of the crystal.
The head kept is the one with the best top-1 success on the run's *validation* complexes (refined the
same way); before and after are printed and stored in the output's export note. The output is an
``eqgeo-export`` checkpoint (EMA weights, the run's data settings), ready for ``eqgeo-evaluate`` and the
docking command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eqgeo.inference.checkpoint import export_checkpoint, read_checkpoint, run_config
from eqgeo.inference.docking import benchmark_starts
from eqgeo.training.docking import DockingDataModule, fit_confidence, refined_examples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a docking run's checkpoint (its config.yaml two folders up)")
    parser.add_argument("output", type=Path)
    parser.add_argument("--starts-a", type=int, default=4, help="track-(a)-style starts per complex")
    parser.add_argument("--starts-b", type=int, default=16, help="track-(b)-style starts per complex")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1000, help="the starts' seed (not the benchmark's)")
    args = parser.parse_args(argv)
    config = run_config(args.checkpoint.resolve())
    if config is None or "data" not in config:
        parser.error(f"{args.checkpoint}: its run's config.yaml (two folders up) is missing: the data settings and split come from it")
    run_data = config["data"]
    checkpoint = read_checkpoint(args.checkpoint)
    if checkpoint.kind != "docking":
        parser.error(f"{args.checkpoint} is a {checkpoint.kind} checkpoint, not a docking one")
    model = checkpoint.build_model("ema")
    dm = DockingDataModule(**{k: v for k, v in run_data.items() if k != "_target_"})
    dm.setup("fit")
    tracks = ({**dm.track_a, "starts": args.starts_a}, {**dm.track_b, "starts": args.starts_b})
    task = checkpoint.task
    start = time.perf_counter()
    examples = {}
    for split in ("train", "val"):
        complexes = dm.complexes[split]
        starts = benchmark_starts(complexes, *tracks, args.seed)
        examples[split] = refined_examples(model, complexes, starts, steps=task["refine_steps"], step_size=task["step_size"])
        print(f"{split}: {len(complexes)} complexes refined ({time.perf_counter() - start:.0f} s)", flush=True)
    report = fit_confidence(model, examples["train"], examples["val"], epochs=args.epochs, lr=args.lr, seed=args.seed)
    report.update({"starts_a": args.starts_a, "starts_b": args.starts_b, "seed": args.seed, "epochs": args.epochs,
                   "seconds": round(time.perf_counter() - start, 1)})
    export_checkpoint(args.checkpoint, args.output, model=model, note={"confidence_refit": report})
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
