"""NVE energy drift of an eqgeo potential: ASE velocity Verlet from a trained checkpoint.

A potential whose forces are the exact gradient of its energy, evaluated in float64, conserves
the total energy of a velocity-Verlet trajectory up to the integrator's bounded O(dt^2)
fluctuation; a systematic drift points at inconsistent forces (wrong sign or scale, a missing
term), a non-smooth energy (atoms crossing the cutoff) or a time step too long for the fastest
vibration (C-H, O-H stretches: about 10 fs periods, so 0.5 fs is a safe step).

Usage (from the repository root)::

    python experiments/md/nve_drift.py runs/<date>/<time>/checkpoints/best.ckpt --steps 4000 \\
        --output experiments/md/results/nve_drift.md

The run: the first frame of ``--structure`` (default: rMD17 ethanol ``test_MD.xyz`` under
``$EQGEO_SHARED_DATA`` or ``../shared/data``), Maxwell-Boltzmann velocities at ``--temperature``
(seeded), centre-of-mass momentum and angular momentum removed (temperature kept), then
``--steps`` velocity-Verlet steps of ``--dt`` fs (:class:`ase.md.verlet.VelocityVerlet`),
recording potential, kinetic and total energy at every step. Reported: the slope of a linear
fit of the total energy per atom against time (meV/atom/ps), the largest
``|E_tot(t) - E_tot(0)|`` (meV/atom), the mean temperature and the wall time per step; printed
as Markdown and, with ``--output``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from eqgeo.leaderboard import cpu_model
from eqgeo.calculators import CHECKPOINT_WEIGHTS, EqgeoCalculator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from md_protocol import bonded_pairs, drift_summary, run_nve  # noqa: E402  the protocol, shared with MACE's venv


REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("EQGEO_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_STRUCTURE = SHARED_DATA / "md17" / "botnet_ethanol" / "test_MD.xyz"
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="eqgeo-train checkpoint (EnergyForcesTask), e.g. best.ckpt")
    parser.add_argument("--structure", type=Path, default=DEFAULT_STRUCTURE, help="starting structure (any ASE format)")
    parser.add_argument("--frame", type=int, default=0, help="frame of --structure to start from (default: 0)")
    parser.add_argument("--steps", type=int, default=4000, help="velocity-Verlet steps (default: 4000)")
    parser.add_argument("--dt", type=float, default=0.5, help="time step in fs (default: 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0, help="initial temperature in K (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities (default: 0)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float64", help="evaluation dtype (default: float64)")
    parser.add_argument("--weights", choices=CHECKPOINT_WEIGHTS, default="ema",
                        help="EMA-averaged or raw weights of the checkpoint (default: ema)")
    parser.add_argument("--test-file", type=Path, default=None,
                        help="also report the force MAE of the weights used on this file's frames (extended XYZ, eV/Å)")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.steps < 2 or args.dt <= 0:
        parser.error(f"need --steps >= 2 and --dt > 0, got {args.steps} and {args.dt}")
    if not args.structure.is_file():
        parser.error(f"structure file {args.structure} does not exist (set --structure or EQGEO_SHARED_DATA)")
    return args


def force_mae(calc: EqgeoCalculator, path: Path) -> tuple[float, int]:
    """Mean absolute force error (meV/Å) of ``calc`` on the frames of ``path`` and their number."""
    errors = []
    frames = read(path, index=":")
    for frame in frames:
        reference = frame.get_forces()  # the file's forces (eV/Å)
        atoms = frame.copy()
        atoms.calc = calc
        errors.append(np.abs(atoms.get_forces() - reference).ravel())
    return float(np.concatenate(errors).mean() * 1e3), len(frames)


def _run_metrics(checkpoint: Path) -> dict:
    """``metrics.json`` of the eqgeo-train run the checkpoint belongs to, if it is next to it."""
    path = checkpoint.resolve().parent.parent / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def machine() -> str:
    cpu = cpu_model()
    gpu = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def report(args, calc, atoms, traj: dict, summary: dict, mae, metrics: dict) -> str:
    n = len(atoms)
    lines = [
        "# NVE energy drift (ASE velocity Verlet, eqgeo potential)",
        "",
        "Command:",
        "",
        "```bash",
        shlex.join(["python", "experiments/md/nve_drift.py"] + _shown_arguments(args.argv)),
        "```",
        "",
        "| setting | value |",
        "|---|---|",
        f"| model | `{calc.model!r}` |",
        f"| checkpoint | `{_display(calc.source.get('checkpoint', args.checkpoint))}` (epoch {calc.source.get('epoch')}, "
        f"step {calc.source.get('global_step')}), weights: {calc.source.get('weights')} |",
        f"| structure | frame {args.frame} of `{_display(args.structure)}`, {n} atoms ({atoms.get_chemical_formula()}) |",
        f"| integrator | velocity Verlet, dt = {args.dt:g} fs, {args.steps} steps ({args.steps * args.dt / 1000:g} ps) |",
        f"| start | Maxwell-Boltzmann {args.temperature:g} K (seed {args.seed}; the draw for {n} atoms: "
        f"{traj['temperature'][0]:.0f} K), Stationary, ZeroRotation |",
        f"| precision | {args.dtype} |",
        f"| machine | {machine()} |",
        "",
        "| result | value |",
        "|---|---|",
        f"| total-energy drift, linear fit | {summary['slope_mev_atom_ps']:+.4g} meV/atom/ps |",
        f"| max \\|E_tot - E_tot(0)\\| | {summary['max_abs_dev_mev_atom']:.4g} meV/atom |",
        f"| std of E_tot / std of E_kin | {summary['std_etot_mev_atom']:.3g} / {summary['std_ekin_mev_atom']:.3g} meV/atom |",
        f"| temperature (ASE, 3N degrees of freedom) | {summary['temperature_mean_k']:.1f} ± "
        f"{summary['temperature_std_k']:.1f} K |",
        f"| bonded pairs at start / end | {traj['bonds'][0]} / {traj['bonds'][1]} |",
        f"| wall time per step | {traj['wall_per_step_s'] * 1e3:.2f} ms |",
    ]
    if mae is not None:
        lines.append(f"| test force MAE of these weights | {mae[0]:.1f} meV/Å ({mae[1]} frames of `{_display(args.test_file)}`) |")
    if metrics.get("test", {}).get("forces_mae"):
        f = metrics["test"]["forces_mae"]
        lines.append(f"| test force MAE in the run's metrics.json | {f['value']:.1f} {f['unit']} "
                     f"({metrics.get('data', {}).get('test', '?')} frames, {metrics.get('epochs', '?')} epochs) |")
    e = traj["etot"] / n * 1e3
    marks = np.unique(np.linspace(0, len(e) - 1, 6).round().astype(int))
    lines += ["", "Total energy per atom relative to t = 0:", "", "| t (ps) | E_tot - E_tot(0) (meV/atom) | T (K) |",
              "|---:|---:|---:|"]
    lines += [f"| {traj['time_ps'][i]:.3f} | {e[i] - e[0]:+.4f} | {traj['temperature'][i]:.0f} |" for i in marks]
    if args.note:
        lines += [""] + [f"- {note}" for note in args.note]
    return "\n".join(lines) + "\n"


def _shown_arguments(argv) -> list[str]:
    """The command-line arguments as shown in the report: paths shortened, ``--note`` texts left out
    (they follow the tables)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif arg.startswith("--") and "=" in arg and not arg.startswith("--note="):
            option, _, value = arg.partition("=")
            shown.append(f"{option}={_display(value)}")
        elif not arg.startswith("--note="):
            shown.append(_display(arg))
    return shown


def _display(value) -> str:
    """A path as the report shows it, naming nothing of this machine: relative to the repository
    (``./...``) or to its parent (``../shared/...``); a path elsewhere (a temporary run folder, a
    home folder) as a placeholder, ``<run dir>/checkpoints/NAME`` for a checkpoint of an eqgeo-train
    run and ``<outside the repository>/NAME`` otherwise."""
    text = str(value)
    for root, shown in ((REPO, "."), (REPO.parent, "..")):
        text = text.replace(str(root) + os.sep, shown + os.sep)
    if os.path.isabs(text):
        path = Path(text)
        if path.parent.name == "checkpoints":
            return f"<run dir>/checkpoints/{path.name}"
        return f"<outside the repository>/{path.name}"
    return text


def main(argv=None) -> dict:
    args = parse_args(argv)
    calc = EqgeoCalculator.from_checkpoint(args.checkpoint, dtype=_DTYPES[args.dtype], weights=args.weights)
    atoms = read(args.structure, index=args.frame)
    atoms.calc = calc
    bonds_start = bonded_pairs(atoms)
    traj = run_nve(atoms, args.steps, args.dt, args.temperature, args.seed)
    traj["bonds"] = (bonds_start, bonded_pairs(atoms))
    summary = drift_summary(traj, len(atoms))
    mae = force_mae(calc, args.test_file) if args.test_file is not None else None
    text = report(args, calc, atoms, traj, summary, mae, _run_metrics(args.checkpoint))
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return {**summary, "wall_per_step_s": traj["wall_per_step_s"], "bonds": traj["bonds"], "report": text}


if __name__ == "__main__":
    main()
