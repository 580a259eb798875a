"""Steps per second of MACE's ASE calculator in Langevin NVT: run with MACE's interpreter (.venvs/mace) by
experiments/md/md_stability.py, beside the eqgeo calculator's speed on the same frame and steps.

    .venvs/mace/bin/python experiments/md/mace_md_speed.py MODEL STRUCTURE [--steps 400] [--dt 0.5]
        [--temperature 600] [--threads 2] [--dtype float64]

Prints one JSON line: steps_per_s, steps, dtype, threads, version.
"""

import argparse
import json
import time

import numpy as np
import torch
from ase import units
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("structure")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--dt", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import mace
    from mace.calculators import MACECalculator

    atoms = read(args.structure)
    atoms.calc = MACECalculator(model_paths=args.model, device="cpu", default_dtype=args.dtype)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    atoms.get_forces()  # warm-up outside the timing
    dyn = Langevin(atoms, timestep=args.dt * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs,
                   rng=np.random.default_rng(1))
    start = time.perf_counter()
    dyn.run(args.steps)
    wall = time.perf_counter() - start
    print(json.dumps({"steps_per_s": args.steps / wall, "steps": args.steps, "dtype": args.dtype,
                      "threads": args.threads, "version": getattr(mace, "__version__", "?")}))


if __name__ == "__main__":
    main()
