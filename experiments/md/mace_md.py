"""MACE's ASE calculator through the protocols of ``md_protocol.py``: run with MACE's interpreter
(``.venvs/mace``, which has no eqgeo) by ``experiments/md/md_stability.py``, beside eqgeo's calculator on
the same frame, steps, seeds and threads.

    .venvs/mace/bin/python experiments/md/mace_md.py MODEL STRUCTURE [--speed-steps 400] [--dt 0.5]
        [--temperatures 600 1200] [--threads 1] [--dtype float64] [--stability [--ps 10] [--nve-ps 2] ...]

Prints one JSON line: steps_per_s (Langevin NVT at the first temperature), dtype, threads, version and,
with ``--stability``, results (``md_protocol.run_stability``'s, one entry per temperature).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_protocol import StabilityProtocol, run_stability, speed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("structure")
    parser.add_argument("--speed-steps", type=int, default=400)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[600.0, 1200.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--stability", action="store_true", help="run the NVT + NVE stability protocol too")
    defaults = StabilityProtocol()
    for name in ("ps", "nve_ps", "dt", "friction", "break_factor"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--check-every", type=int, default=defaults.check_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--stop-at-break", action="store_true", help="end NVT at the first broken bond, skip its NVE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import mace
    from mace.calculators import MACECalculator

    protocol = StabilityProtocol(tuple(args.temperatures), args.ps, args.nve_ps, args.dt, args.friction,
                                 args.check_every, args.break_factor, args.seed, args.stop_at_break)
    start = read(args.structure)
    calc = MACECalculator(model_paths=args.model, device="cpu", default_dtype=args.dtype)
    out = {"steps_per_s": speed(start, calc, protocol, args.speed_steps), "steps": args.speed_steps,
           "dtype": args.dtype, "threads": args.threads, "version": getattr(mace, "__version__", "?")}
    if args.stability:
        out["results"] = {str(t): r for t, r in run_stability(start, calc, protocol).items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
