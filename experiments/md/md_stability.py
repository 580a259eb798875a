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
  (``--speed-steps``) and the same threads, run in MACE's venv (``experiments/md/mace_md_speed.py``).

Usage (from the repository root)::

    python experiments/md/md_stability.py experiments/results/checkpoints/3bpa.ckpt \\
        --structure ../shared/data/md17/botnet_3bpa/train_300K.xyz --temperatures 600 1200 --ps 10 \\
        --mace-model runs/budget_3bpa/mace/mace_3bpa.model --output experiments/md/results/md_stability_3bpa.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.data import covalent_radii
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nve_drift import (  # noqa: E402  the sibling NVE script's helpers
    _DTYPES,
    REPO,
    _display,
    _maxwell_boltzmann,
    drift_summary,
    machine,
    run_nve,
)

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
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float64")
    parser.add_argument("--mace-model", type=Path, default=None, help="a MACE .model file: time MACE's calculator too")
    parser.add_argument("--speed-steps", type=int, default=400, help="NVT steps timed for the speed comparison")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.structure.is_file():
        parser.error(f"structure file {args.structure} does not exist")
    if args.mace_model is not None and not MACE_PYTHON.exists():
        parser.error(f"--mace-model needs MACE's venv ({_display(MACE_PYTHON)}): run experiments/peers/setup.sh mace")
    return args


class BondWatch:
    """The covalent bonds of the starting frame, followed along a trajectory (module docstring)."""

    def __init__(self, atoms, break_factor: float) -> None:
        radii = covalent_radii[atoms.numbers]
        self.reference = radii[:, None] + radii[None, :]
        d = atoms.get_all_distances()
        self.bonded = np.triu(d < 1.2 * self.reference, k=1)
        self.others = np.triu(~(d < 1.2 * self.reference), k=1)
        self.break_factor = break_factor
        self.max_stretch = float((d / self.reference)[self.bonded].max())
        self.first_broken_ps = self.first_new_ps = None

    def check(self, atoms, time_ps: float) -> None:
        ratio = atoms.get_all_distances() / self.reference
        self.max_stretch = max(self.max_stretch, float(ratio[self.bonded].max()))
        if self.first_broken_ps is None and (ratio[self.bonded] > self.break_factor).any():
            self.first_broken_ps = time_ps
        if self.first_new_ps is None and (ratio[self.others] < 1.0).any():
            self.first_new_ps = time_ps

    def summary(self, atoms) -> dict:
        ratio = atoms.get_all_distances() / self.reference
        return {"bonds": int(self.bonded.sum()), "bonds_kept_at_end": int((ratio[self.bonded] <= self.break_factor).sum()),
                "max_stretch": self.max_stretch, "first_broken_ps": self.first_broken_ps,
                "first_new_bond_ps": self.first_new_ps}


def langevin(atoms, args, temperature: float) -> Langevin:
    """Langevin dynamics of ``atoms`` (which carry their calculator) at ``temperature`` from seeded
    Maxwell-Boltzmann velocities without centre-of-mass motion or rotation; the first force call is made
    here, outside any timing."""
    _maxwell_boltzmann(atoms, temperature_K=temperature, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.get_forces()
    return Langevin(atoms, timestep=args.dt * units.fs, temperature_K=temperature, friction=args.friction / units.fs,
                    rng=np.random.default_rng(args.seed + 1))


def run_nvt(atoms, args, temperature: float) -> dict:
    """Langevin NVT from Maxwell-Boltzmann velocities; bonds followed, temperatures and wall time recorded."""
    dyn = langevin(atoms, args, temperature)
    watch = BondWatch(atoms, args.break_factor)
    steps = int(round(args.ps * 1000.0 / args.dt))
    temperatures = []

    def observe():
        t_ps = dyn.nsteps * args.dt * 1e-3
        watch.check(atoms, t_ps)
        temperatures.append(atoms.get_temperature())

    dyn.attach(observe, interval=args.check_every)
    start = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - start
    return {**watch.summary(atoms), "steps": steps, "steps_per_s": steps / wall,
            "temperature_mean_k": float(np.mean(temperatures[len(temperatures) // 2:]))}


def mace_speed(args, structure_frame: Path) -> dict:
    """Steps per second of MACE's calculator, NVT on the same frame, in MACE's venv."""
    command = [str(MACE_PYTHON), str(Path(__file__).resolve().parent / "mace_md_speed.py"), str(args.mace_model),
               str(structure_frame), "--steps", str(args.speed_steps), "--dt", str(args.dt),
               "--temperature", str(args.temperatures[0]), "--threads", str(torch.get_num_threads())]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def eqgeo_speed(calc, atoms, args) -> float:
    """Steps per second of the eqgeo calculator over ``--speed-steps`` NVT steps (as :func:`mace_speed`)."""
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = langevin(atoms, args, args.temperatures[0])
    start = time.perf_counter()
    dyn.run(args.speed_steps)
    return args.speed_steps / (time.perf_counter() - start)


def report(args, calc, atoms, results: dict, speed: dict) -> str:
    lines = ["# MD stability (Langevin NVT, then NVE; eqgeo potential through EqgeoCalculator)", "", "Command:", "",
             "```bash", shlex.join(["python", "experiments/md/md_stability.py"] + [_display(a) for a in args.argv]), "```",
             "", f"Model: `{calc.model!r}` from `{_display(args.checkpoint)}` ({args.dtype}). Start: frame {args.frame} of "
             f"`{_display(args.structure)}` ({atoms.get_chemical_formula()}, {len(atoms)} atoms). Machine: {machine()}.",
             f"NVT: {args.ps:g} ps at dt {args.dt:g} fs, friction {args.friction:g}/fs; bonds checked every "
             f"{args.check_every} steps (broken beyond {args.break_factor:g} x the sum of covalent radii). "
             f"NVE: {args.nve_ps:g} ps after it.", "",
             "| T (K) | mean T, 2nd half (K) | bonds kept at end | max bond stretch | first broken bond | first new bond "
             "| NVE drift (meV/atom/ps) | NVE max \\|dE\\| (meV/atom) | NVT steps/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for temperature, r in results.items():
        broken = "none" if r["first_broken_ps"] is None else f"{r['first_broken_ps']:.2f} ps"
        new = "none" if r["first_new_bond_ps"] is None else f"{r['first_new_bond_ps']:.2f} ps"
        lines.append(f"| {temperature:g} | {r['temperature_mean_k']:.0f} | {r['bonds_kept_at_end']} / {r['bonds']} | "
                     f"{r['max_stretch']:.2f} | {broken} | {new} | {r['nve']['slope_mev_atom_ps']:+.3g} | "
                     f"{r['nve']['max_abs_dev_mev_atom']:.3g} | {r['steps_per_s']:.0f} |")
    lines += ["", f"Speed, {args.speed_steps} NVT steps on the starting frame, {torch.get_num_threads()} threads: "
              f"eqgeo {speed['eqgeo']:.0f} steps/s ({args.dtype})"]
    if "mace" in speed:
        m = speed["mace"]
        lines[-1] += (f", MACE {m['steps_per_s']:.0f} steps/s ({m['dtype']}, `{_display(args.mace_model)}`, "
                      f"MACE {m['version']}): eqgeo / MACE = {speed['eqgeo'] / m['steps_per_s']:.2f}x.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    calc = EqgeoCalculator.from_checkpoint(args.checkpoint, dtype=_DTYPES[args.dtype])
    start = read(args.structure, index=args.frame)
    results = {}
    for temperature in args.temperatures:
        atoms = start.copy()
        atoms.calc = calc
        nvt = run_nvt(atoms, args, temperature)
        nve = run_nve(atoms, int(round(args.nve_ps * 1000.0 / args.dt)), args.dt, temperature, args.seed)
        results[temperature] = {**nvt, "nve": drift_summary(nve, len(atoms))}
    speed = {"eqgeo": eqgeo_speed(calc, start, args)}
    if args.mace_model is not None:
        frame = (args.output.parent if args.output else Path(".")) / "md_stability_start.xyz"
        start.write(frame)
        try:
            speed["mace"] = mace_speed(args, frame)
        finally:
            frame.unlink()
    text = report(args, calc, start, results, speed)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return {"results": results, "speed": speed}


if __name__ == "__main__":
    main()
