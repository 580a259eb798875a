"""The MD protocols of ``nve_drift.py`` and ``md_stability.py``, with any ASE calculator.

This module needs only NumPy and ASE, so MACE's venv (``.venvs/mace``, which has no eqgeo) runs the
same protocol through ``mace_md.py`` as eqgeo's calculator does in ``md_stability.py``: the same
seeded velocities, thermostat, bond criteria and drift fit for both potentials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import units
from ase.data import covalent_radii
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta as _maxwell_boltzmann
except ImportError:  # older ASE: the same distribution under its former name
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _maxwell_boltzmann


def _bonded(atoms, factor: float = 1.2) -> np.ndarray:
    """Upper-triangle mask of the atom pairs closer than ``factor`` times the sum of their covalent radii."""
    r = covalent_radii[atoms.numbers]
    return np.triu(atoms.get_all_distances() < factor * (r[:, None] + r[None, :]), k=1)


def bonded_pairs(atoms, factor: float = 1.2) -> int:
    """Atom pairs closer than ``factor`` times the sum of their covalent radii (a molecule staying intact)."""
    return int(_bonded(atoms, factor).sum())


def thermalize(atoms, temperature: float, seed: int) -> None:
    """Seeded Maxwell-Boltzmann velocities at ``temperature`` without centre-of-mass motion or rotation."""
    _maxwell_boltzmann(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)


def run_nve(atoms, steps: int, dt_fs: float, temperature: float, seed: int) -> dict:
    """Velocity-Verlet NVE from Maxwell-Boltzmann velocities; energies per step and timing.

    ``atoms`` must carry its calculator. Returns times (ps), potential / kinetic / total energy
    (eV), temperature (K) at steps ``0..steps`` and the wall time per step (s).
    """
    thermalize(atoms, temperature, seed)
    atoms.get_forces()  # warm-up outside the timing (first call compiles the native kernel)
    record = {"epot": [], "ekin": [], "temperature": []}

    def observe():
        record["epot"].append(atoms.get_potential_energy())
        record["ekin"].append(atoms.get_kinetic_energy())
        record["temperature"].append(atoms.get_temperature())

    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    dyn.attach(observe, interval=1)
    start = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - start
    out = {k: np.asarray(v, dtype=np.float64) for k, v in record.items()}
    out["etot"] = out["epot"] + out["ekin"]
    out["time_ps"] = np.arange(len(out["etot"])) * dt_fs * 1e-3
    out["wall_per_step_s"] = wall / steps
    return out


def drift_summary(traj: dict, num_atoms: int) -> dict:
    """Drift slope (meV/atom/ps, linear fit), max |E_tot - E_tot(0)| (meV/atom) and fluctuation scales."""
    e = traj["etot"] / num_atoms * 1e3  # meV/atom
    slope = float(np.polyfit(traj["time_ps"], e, 1)[0])
    return {
        "slope_mev_atom_ps": slope,
        "max_abs_dev_mev_atom": float(np.max(np.abs(e - e[0]))),
        "std_etot_mev_atom": float(np.std(e)),
        "std_ekin_mev_atom": float(np.std(traj["ekin"] / num_atoms * 1e3)),
        "temperature_mean_k": float(np.mean(traj["temperature"])),
        "temperature_std_k": float(np.std(traj["temperature"])),
        "finite": bool(np.all(np.isfinite(e))),
    }


@dataclass(frozen=True)
class StabilityProtocol:
    """Langevin NVT at each temperature, then NVE (``md_stability.py``'s module docstring)."""

    temperatures: tuple = (600.0, 1200.0)
    ps: float = 10.0
    nve_ps: float = 2.0
    dt: float = 0.5  # fs
    friction: float = 0.01  # 1/fs
    check_every: int = 20
    break_factor: float = 1.5
    seed: int = 0
    stop_at_break: bool = False  # end the NVT run at the first broken bond and skip its NVE

    def describe(self) -> str:
        return (f"NVT: {self.ps:g} ps at dt {self.dt:g} fs, friction {self.friction:g}/fs; bonds checked every "
                f"{self.check_every} steps (broken beyond {self.break_factor:g} x the sum of covalent radii). "
                f"NVE: {self.nve_ps:g} ps after it" + (", unless a bond broke: NVT stops at the first broken bond."
                                                        if self.stop_at_break else "."))


class BondWatch:
    """The covalent bonds of the starting frame, followed along a trajectory: a bond is broken beyond
    ``break_factor`` times the sum of covalent radii; a new bond is a pair not bonded at the start that
    comes closer than the sum."""

    def __init__(self, atoms, break_factor: float) -> None:
        radii = covalent_radii[atoms.numbers]
        self.reference = radii[:, None] + radii[None, :]
        self.bonded = _bonded(atoms)
        self.others = np.triu(~self.bonded, k=1)
        self.break_factor = break_factor
        self.max_stretch = float((atoms.get_all_distances() / self.reference)[self.bonded].max())
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


def langevin(atoms, protocol: StabilityProtocol, temperature: float) -> Langevin:
    """Langevin dynamics of ``atoms`` (which carry their calculator) at ``temperature`` from seeded
    velocities; the first force call is made here, outside any timing."""
    thermalize(atoms, temperature, protocol.seed)
    atoms.get_forces()
    return Langevin(atoms, timestep=protocol.dt * units.fs, temperature_K=temperature,
                    friction=protocol.friction / units.fs, rng=np.random.default_rng(protocol.seed + 1))


def run_nvt(atoms, protocol: StabilityProtocol, temperature: float) -> dict:
    """Langevin NVT; bonds followed, temperatures and wall time recorded."""
    dyn = langevin(atoms, protocol, temperature)
    watch = BondWatch(atoms, protocol.break_factor)
    steps = int(round(protocol.ps * 1000.0 / protocol.dt))
    temperatures = []

    def observe():
        watch.check(atoms, dyn.nsteps * protocol.dt * 1e-3)
        temperatures.append(atoms.get_temperature())

    dyn.attach(observe, interval=protocol.check_every)
    start = time.perf_counter()
    for _ in dyn.irun(steps):
        if protocol.stop_at_break and watch.first_broken_ps is not None:
            break
    wall = time.perf_counter() - start
    return {**watch.summary(atoms), "steps": dyn.nsteps, "steps_per_s": dyn.nsteps / wall,
            "stopped_at_break": dyn.nsteps < steps,
            "temperature_mean_k": float(np.mean(temperatures[len(temperatures) // 2:]))}


def run_stability(start, calc, protocol: StabilityProtocol) -> dict:
    """The protocol from the frame ``start`` with ``calc``: ``{temperature: NVT summary + "nve": drift}``."""
    results = {}
    for temperature in protocol.temperatures:
        atoms = start.copy()
        atoms.calc = calc
        nvt = run_nvt(atoms, protocol, temperature)
        if nvt["stopped_at_break"]:  # a molecule in pieces: no NVE to judge
            results[float(temperature)] = {**nvt, "nve": None}
            continue
        nve = run_nve(atoms, int(round(protocol.nve_ps * 1000.0 / protocol.dt)), protocol.dt, temperature, protocol.seed)
        results[float(temperature)] = {**nvt, "nve": drift_summary(nve, len(atoms))}
    return results


def speed(start, calc, protocol: StabilityProtocol, steps: int) -> float:
    """Langevin NVT steps per second at the first temperature, over ``steps`` steps from ``start``."""
    atoms = start.copy()
    atoms.calc = calc
    dyn = langevin(atoms, protocol, protocol.temperatures[0])
    began = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - began)


def stability_table(rows: dict) -> list[str]:
    """Markdown rows, one per potential and temperature: ``rows`` maps a potential's name to
    :func:`run_stability`'s result."""
    lines = ["| potential | T (K) | mean T, 2nd half (K) | bonds kept at end | max bond stretch | first broken bond "
             "| first new bond | NVE drift (meV/atom/ps) | NVE max \\|dE\\| (meV/atom) | NVT steps/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, results in rows.items():
        for temperature, r in results.items():
            broken = "none" if r["first_broken_ps"] is None else f"{r['first_broken_ps']:.2f} ps"
            new = "none" if r["first_new_bond_ps"] is None else f"{r['first_new_bond_ps']:.2f} ps"
            nve = r["nve"]
            drift = "stopped at the break" if nve is None else f"{nve['slope_mev_atom_ps']:+.3g}"
            deviation = "-" if nve is None else f"{nve['max_abs_dev_mev_atom']:.3g}"
            lines.append(f"| {name} | {float(temperature):g} | {r['temperature_mean_k']:.0f} | {r['bonds_kept_at_end']} / "
                         f"{r['bonds']} | {r['max_stretch']:.2f} | {broken} | {new} | {drift} | {deviation} | "
                         f"{r['steps_per_s']:.0f} |")
    return lines
