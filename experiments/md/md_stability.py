"""MD stability of an eqgeo potential: Langevin NVT at high temperatures, then NVE, through ``EqgeoCalculator``.

For each ``--temperatures`` value: ``--ps`` picoseconds of Langevin dynamics (ASE, friction ``--friction``
per fs) from frame ``--frame`` of ``--structure``, Maxwell-Boltzmann velocities at that temperature, then
``--nve-ps`` of velocity-Verlet NVE from the last NVT positions (velocities drawn again at that
temperature, as ``experiments/md/nve_drift.py`` does). Reported per temperature:

- **bonds**: the covalent bonds of the starting frame (pairs closer than 1.2 times the sum of their
  covalent radii) are followed every ``--check-every`` steps; a bond counts as *broken* once it is longer
  than ``--break-factor`` (default 1.5) times the sum of the radii, and a *new* bond is a pair not
  bonded at the start that comes closer than 1.0 times it. The first time of either, the largest bond
  stretch seen and the bonds at the end are reported: a potential that is stable at that temperature
  keeps every bond and forms none (3BPA, C12H12N2O, has no reaction at 1200 K on 10 ps);
- **NVE energy drift** after the NVT run (meV/atom/ps, linear fit; max |E_tot - E_tot(0)|);
- **speed**: NVT steps per second of the eqgeo calculator (float64 or ``--dtype``), and, with
  ``--mace-model``, of MACE's own ASE calculator on the same frame, the same number of steps
  (``--speed-steps``) and the same threads, run in MACE's venv (``experiments/md/mace_md.py``).

``--potentials mace`` (or ``eqgeo mace``) runs the same protocol (``md_protocol.py``: seeds, thermostat,
bond criteria, drift fit) with MACE's calculator too, so a broken bond can be told apart from a hard test.

Usage (from the repository root)::

    python experiments/md/md_stability.py experiments/results/checkpoints/3bpa.ckpt \\
        --structure ../shared/data/md17/botnet_3bpa/train_300K.xyz --temperatures 600 1200 --ps 10 \\
        --mace-model runs/epochs30_3bpa/mace/mace_rmd17_stagetwo.model --output experiments/md/results/md_stability_3bpa.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_protocol import StabilityProtocol, run_stability, speed, stability_table  # noqa: E402  shared with MACE's venv
from nve_drift import _DTYPES, REPO, _display, machine  # noqa: E402  the sibling NVE script's helpers

from eqgeo.calculators import EqgeoCalculator  # noqa: E402

MACE_PYTHON = REPO / ".venvs" / "mace" / "bin" / "python"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an eqgeo energy-and-forces checkpoint (best.ckpt or exported)")
    parser.add_argument("--structure", type=Path, required=True, help="starting structure (any ASE format)")
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[600.0, 1200.0], help="K")
    parser.add_argument("--ps", type=float, default=10.0, help="Langevin NVT picoseconds per temperature")
    parser.add_argument("--nve-ps", type=float, default=2.0, help="NVE picoseconds after each NVT run")
    parser.add_argument("--dt", type=float, default=0.5, help="time step, fs")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--check-every", type=int, default=20, help="steps between bond checks")
    parser.add_argument("--break-factor", type=float, default=1.5,
                        help="a bond is broken beyond this times the sum of covalent radii")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-at-break", action="store_true",
                        help="end each NVT run at its first broken bond and skip its NVE (a molecule in pieces makes "
                             "MACE's neighbour search slow down as its atoms spread)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float64")
    parser.add_argument("--mace-model", type=Path, default=None, help="a MACE .model file: time MACE's calculator too")
    parser.add_argument("--potentials", nargs="+", choices=("eqgeo", "mace"), default=["eqgeo"],
                        help="the potentials that run the protocol (mace needs --mace-model); eqgeo's speed is "
                             "always measured")
    parser.add_argument("--speed-steps", type=int, default=400, help="NVT steps timed for the speed comparison")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.structure.is_file():
        parser.error(f"structure file {args.structure} does not exist")
    if args.mace_model is not None and not MACE_PYTHON.exists():
        parser.error(f"--mace-model needs MACE's venv ({_display(MACE_PYTHON)}): run experiments/peers/setup.sh mace")
    if "mace" in args.potentials and args.mace_model is None:
        parser.error("--potentials mace needs --mace-model (a MACE .model file)")
    return args


def protocol(args) -> StabilityProtocol:
    return StabilityProtocol(tuple(args.temperatures), args.ps, args.nve_ps, args.dt, args.friction, args.check_every,
                             args.break_factor, args.seed, args.stop_at_break)


def run_mace(args, structure_frame: Path, stability: bool) -> dict:
    """MACE's ASE calculator in MACE's venv (``mace_md.py``) on the same frame and threads: its NVT speed
    and, with ``stability``, the same protocol as eqgeo's."""
    p = protocol(args)
    command = [str(MACE_PYTHON), str(Path(__file__).resolve().parent / "mace_md.py"), str(args.mace_model),
               str(structure_frame), "--speed-steps", str(args.speed_steps), "--dt", str(p.dt),
               "--temperatures", *map(str, p.temperatures), "--threads", str(torch.get_num_threads()),
               "--ps", str(p.ps), "--nve-ps", str(p.nve_ps), "--friction", str(p.friction),
               "--check-every", str(p.check_every), "--break-factor", str(p.break_factor), "--seed", str(p.seed),
               "--dtype", args.dtype]
    command += (["--stability"] if stability else []) + (["--stop-at-break"] if p.stop_at_break else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(args, calc, atoms, results: dict, speeds: dict, mace_version) -> str:
    potentials = " and ".join(["eqgeo potential through EqgeoCalculator"] * ("eqgeo" in args.potentials)
                              + ["MACE's calculator"] * ("mace" in args.potentials))
    lines = [f"# MD stability (Langevin NVT, then NVE; {potentials})", "", "Command:", "",
             "```bash", shlex.join(["python", "experiments/md/md_stability.py"] + [_display(a) for a in args.argv]), "```",
             "", f"Model: `{calc.model!r}` from `{_display(args.checkpoint)}` ({args.dtype})."]
    if args.mace_model is not None:
        lines[-1] += f" MACE: `{_display(args.mace_model)}` (MACE {mace_version}, {args.dtype})."
    lines += [f"Start: frame {args.frame} of `{_display(args.structure)}` ({atoms.get_chemical_formula()}, "
              f"{len(atoms)} atoms). Machine: {machine()}.", protocol(args).describe(), ""]
    lines += stability_table(results)
    lines += ["", f"Speed, {args.speed_steps} NVT steps on the starting frame, {torch.get_num_threads()} threads: "
              f"eqgeo {speeds['eqgeo']:.0f} steps/s ({args.dtype})"]
    if "mace" in speeds:
        lines[-1] += (f", MACE {speeds['mace']:.0f} steps/s: eqgeo / MACE = {speeds['eqgeo'] / speeds['mace']:.2f}x.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    calc = EqgeoCalculator.from_checkpoint(args.checkpoint, dtype=_DTYPES[args.dtype])
    start = read(args.structure, index=args.frame)
    results = {}
    if "eqgeo" in args.potentials:
        results["eqgeo"] = run_stability(start, calc, protocol(args))
    speeds = {"eqgeo": speed(start, calc, protocol(args), args.speed_steps)}
    mace = None
    if args.mace_model is not None:
        frame = (args.output.parent if args.output else Path(".")) / "md_stability_start.xyz"
        start.write(frame)
        try:
            mace = run_mace(args, frame, stability="mace" in args.potentials)
        finally:
            frame.unlink()
        speeds["mace"] = mace["steps_per_s"]
        if "mace" in args.potentials:
            results["MACE"] = {float(t): r for t, r in mace["results"].items()}
    text = report(args, calc, start, results, speeds, None if mace is None else mace["version"])
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return {"results": results, "speed": speeds}


if __name__ == "__main__":
    main()
