"""EqgeoCalculator: equals the model, forces and stress are derivatives of its energy, checkpoints, NVE."""

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from torch_geometric.data import Data

from eqgeo.calculators import EqgeoCalculator
from eqgeo.models import InteratomicPotential
from eqgeo.training import EnergyForcesTask

from .helpers import REPO, SHARED_DATA, shared_path
from .training._helpers import TINY, TINY_MD17, TINY_QM9, cfg

try:
    from ase.calculators.fd import calculate_numerical_stress
except ImportError:  # ASE < 3.24: the same finite differences as a Calculator method
    def calculate_numerical_stress(atoms, eps):
        return atoms.calc.calculate_numerical_stress(atoms, d=eps)

try:
    from ase.md.velocitydistribution import thermalize_momenta as maxwell_boltzmann
except ImportError:  # ASE < 3.29
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as maxwell_boltzmann

SPECIES = [1, 6, 8]
MD17 = SHARED_DATA / "md17" / "botnet_ethanol"
# the shared tiny settings of the training tests, two epochs here (the EMA must differ from the raw weights)
TINY_MD17_RUN = ["experiment=rmd17", *TINY, "trainer.max_epochs=2", *TINY_MD17, f"data.train_file={MD17 / 'train.xyz'}",
                 f"data.test_file={MD17 / 'test_MD.xyz'}", f"data.isolated_atoms={MD17 / 'isolated_atoms.xyz'}"]


def _model(dtype=torch.float64, cutoff=3.0) -> InteratomicPotential:
    model = InteratomicPotential(SPECIES, channels=8, lmax=2, num_layers=2, cutoff=cutoff, radial_hidden=16,
                                 avg_num_neighbors=6.0)
    model.set_statistics(torch.tensor([-13.6, -1029.8, -2041.6]), 1.0)
    return model.to(dtype).eval()


def _ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def _periodic() -> Atoms:
    """Four atoms in a small triclinic cell: the cutoff (3 Å) reaches the atoms' own images along a."""
    cell = [[2.6, 0.0, 0.0], [0.4, 3.1, 0.0], [0.3, -0.5, 3.4]]
    frac = [[0.0, 0.0, 0.0], [0.45, 0.1, 0.3], [0.2, 0.55, 0.6], [0.7, 0.6, 0.85]]
    return Atoms("COHH", cell=cell, scaled_positions=frac, pbc=True)


def _train(overrides, run_dir: Path) -> dict:
    from eqgeo.training import train

    return train(cfg(overrides, run_dir))


@pytest.fixture(scope="module")
def md17_run(tmp_path_factory) -> Path:
    """A real two-epoch eqgeo-train run (EnergyForcesTask, EMA decay 0.9) on 10 rMD17 frames."""
    shared_path("md17", "botnet_ethanol")
    run_dir = tmp_path_factory.mktemp("rmd17_run")
    _train(TINY_MD17_RUN, run_dir)
    return run_dir


# ---------------------------------------------------------------------------------- the model's values
@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_energy_and_forces_equal_the_model(dtype, tol, periodic):
    model = _model(dtype)
    atoms = _periodic() if periodic else _ethanol()
    atoms.calc = EqgeoCalculator(model)
    data = Data(z=torch.as_tensor(atoms.numbers), pos=torch.as_tensor(atoms.positions, dtype=dtype))
    if periodic:
        data.cell = torch.as_tensor(atoms.cell.array, dtype=dtype)[None]
        data.pbc = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        out = model(data)
    assert atoms.get_potential_energy() == pytest.approx(out["energy"].item(), rel=0, abs=1e-9)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].numpy(), rtol=0, atol=10 * tol)
    np.testing.assert_allclose(atoms.get_potential_energies(), out["atomic_energy"].numpy(), rtol=0, atol=1e-9)
    assert atoms.get_forces().dtype == np.float64 and np.abs(atoms.get_forces()).max() > 0.01


def test_forces_are_minus_gradient_of_the_calculator_energy():
    """Central finite differences of the energy ASE sees (float64) give the calculator's forces."""
    atoms = _ethanol()
    atoms.calc = EqgeoCalculator(_model())
    forces = atoms.get_forces()
    h = 1e-5
    fd = np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.calc = atoms.calc
                displaced.positions[i, k] += sign * h
                energies.append(displaced.get_potential_energy())
            fd[i, k] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(forces).max() > 0.1  # not a trivially zero field
    np.testing.assert_allclose(forces, fd, rtol=0, atol=1e-6)


def test_stress_equals_ase_numerical_stress():
    atoms = _periodic()
    atoms.calc = EqgeoCalculator(_model())
    stress, full = atoms.get_stress(), atoms.get_stress(voigt=False)
    assert stress.shape == (6,) and np.abs(stress[3:]).max() > 1e-3  # shear components are exercised
    np.testing.assert_allclose(full, full.T, atol=1e-12)
    assert stress[3] == full[1, 2] and stress[4] == full[0, 2] and stress[5] == full[0, 1]  # ASE's Voigt order
    numerical = calculate_numerical_stress(atoms, eps=1e-5)  # (1/V) dE/dstrain, ASE's sign
    np.testing.assert_allclose(stress, numerical, rtol=0, atol=1e-7)


@pytest.mark.parametrize("pbc", [False, [True, True, False]], ids=["molecule", "slab"])
def test_stress_needs_three_periodic_directions(pbc):
    atoms = _periodic()
    atoms.pbc = pbc
    atoms.calc = EqgeoCalculator(_model())
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        atoms.get_stress()


def test_unknown_element_names_it_and_the_trained_species():
    atoms = molecule("CH3Cl")
    atoms.calc = EqgeoCalculator(_model())
    with pytest.raises(ValueError, match=r"Cl \(Z=17\), which the model was not trained on; its species are "
                                         r"H \(Z=1\), C \(Z=6\), O \(Z=8\)"):
        atoms.get_potential_energy()


def test_docstring_example_and_repr():
    import eqgeo.calculators

    result = doctest.testmod(eqgeo.calculators, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    calc = EqgeoCalculator(_model(torch.float32), dtype=torch.float64)
    assert repr(calc).startswith("EqgeoCalculator(InteratomicPotential(species=[1, 6, 8], ")
    assert repr(calc).endswith(", device=cpu, dtype=torch.float64)")


def test_needs_an_interatomic_potential():
    from eqgeo.models import PropertyModel

    with pytest.raises(TypeError, match="InteratomicPotential, got PropertyModel"):
        EqgeoCalculator(PropertyModel(SPECIES, num_targets=1, channels=4, lmax=1, num_layers=1))


# ---------------------------------------------------------------------------------- molecular dynamics
class _FlippedForces(EqgeoCalculator):
    """A broken calculator (forces of the wrong sign): the negative control of the NVE test."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        if "forces" in self.results:
            self.results["forces"] = -self.results["forces"]


def _nve(calc: EqgeoCalculator, dt_fs: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Total and kinetic energy per atom (eV) at every step of a float64 velocity-Verlet run of ethanol."""
    atoms = _ethanol()
    atoms.calc = calc
    maxwell_boltzmann(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    total, kinetic = [], []
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    dyn.attach(lambda: (total.append(atoms.get_total_energy()), kinetic.append(atoms.get_kinetic_energy())))
    dyn.run(steps)
    return np.array(total) / len(atoms), np.array(kinetic) / len(atoms)


@pytest.mark.parametrize("calc_class", [EqgeoCalculator, _FlippedForces], ids=["forces", "flipped_forces"])
def test_nve_conserves_total_energy(calc_class):
    """12.5 fs of velocity Verlet in float64 (50 steps of 0.25 fs): the total energy stays within
    1 meV/atom while kinetic and potential energy exchange far more, and its deviation is the
    integrator's, shrinking as dt^2 (100 steps of 0.125 fs: 4x smaller). Forces of the wrong sign
    (the negative control) break both."""
    calc = calc_class(_model(cutoff=4.0))
    total, kinetic = _nve(calc, 0.25, 50)
    deviation = np.abs(total - total[0]).max()
    if calc_class is _FlippedForces:
        assert deviation > 1e-2
        return
    assert deviation < 1e-3
    assert np.ptp(kinetic) > 100 * deviation  # energy flows between kinetic and potential
    half_step, _ = _nve(calc, 0.125, 100)
    assert 3.0 < deviation / np.abs(half_step - half_step[0]).max() < 5.0  # second order in dt


# ---------------------------------------------------------------------------------- checkpoints
@pytest.mark.slow  # trains a model
def test_from_checkpoint_round_trip(md17_run):
    ckpt = md17_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    calc = EqgeoCalculator.from_checkpoint(ckpt)
    model = calc.model
    assert model.embedding.species == SPECIES and model.energy_scale.dtype == torch.float64
    assert calc.source["weights"] == "ema" and calc.source["epoch"] == checkpoint["epoch"]
    hp = checkpoint["hyper_parameters"]
    assert model.cutoff == hp["model"]["cutoff"] and model.embedding.embedding.embedding_dim == hp["model"]["channels"]
    # the same numbers as Lightning's own loader (the EMA weights of the state_dict), and as the raw weights
    lightning_model = EnergyForcesTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).model
    raw_task = EnergyForcesTask(**hp)
    raw_task.load_state_dict(checkpoint["current_model_state"])
    atoms = molecule("CH3CH2OH")
    for weights, reference in (("ema", lightning_model), ("raw", raw_task.model)):
        atoms.calc = EqgeoCalculator.from_checkpoint(ckpt, weights=weights, dtype=torch.float32)
        with torch.no_grad():
            out = reference.eval()(atoms.calc.graph(atoms))
        assert atoms.get_potential_energy() == pytest.approx(out["energy"].item(), abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), out["forces"].numpy(), rtol=0, atol=1e-5)
    ema, raw = (EqgeoCalculator.from_checkpoint(ckpt, weights=w) for w in ("ema", "raw"))
    assert abs(ema.get_potential_energy(atoms) - raw.get_potential_energy(atoms)) > 1e-6  # the choice matters
    # float64 evaluation of the float32-trained weights agrees to float32 precision
    atoms.calc = calc
    f32 = EqgeoCalculator.from_checkpoint(ckpt, dtype=torch.float32).get_forces(atoms)
    np.testing.assert_allclose(atoms.get_forces(), f32, rtol=0, atol=1e-4)


@pytest.mark.slow  # trains a model
def test_checkpoint_metrics_are_reproduced(md17_run):
    """metrics.json's test force MAE is the MAE of the checkpoint's EMA weights (what validation chose) on
    the test frames, not of the raw ones."""
    from ase.io import read

    metrics = json.loads((md17_run / "metrics.json").read_text())
    frames = read(MD17 / "test_MD.xyz", index=f":{metrics['data']['test']}")
    maes = []
    for weights in ("ema", "raw"):
        calc = EqgeoCalculator.from_checkpoint(metrics["best_checkpoint"], weights=weights, dtype=torch.float32)
        errors = [np.abs(calc.get_forces(f.copy()) - f.get_forces()) for f in frames]
        maes.append(1000 * np.concatenate(errors).mean())
    reported = metrics["test"]["forces_mae"]["value"]
    assert abs(maes[0] - reported) < 1e-4 * reported, (maes, reported)
    assert abs(maes[1] - reported) > 1e-3 * reported  # the raw weights give another number


@pytest.mark.slow  # trains a model
def test_checkpoint_errors(tmp_path, md17_run):
    with pytest.raises(FileNotFoundError, match="checkpoint .*nowhere.ckpt does not exist"):
        EqgeoCalculator.from_checkpoint(tmp_path / "nowhere.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.ckpt cannot be read .*truncated, corrupt"):
        EqgeoCalculator.from_checkpoint(corrupt)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((md17_run / "checkpoints" / "best.ckpt").read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.ckpt cannot be read"):
        EqgeoCalculator.from_checkpoint(truncated)
    bare = tmp_path / "bare.pt"
    torch.save(_model().state_dict(), bare)
    with pytest.raises(ValueError, match="not a checkpoint written by eqgeo-train"):
        EqgeoCalculator.from_checkpoint(bare)
    with pytest.raises(ValueError, match="weights must be one of"):
        EqgeoCalculator.from_checkpoint(md17_run / "checkpoints" / "best.ckpt", weights="best")


@pytest.mark.slow  # trains a model
def test_property_task_checkpoint_is_refused(tmp_path):
    _train([*TINY, *TINY_QM9, "task.targets=[gap]"], tmp_path)
    with pytest.raises(ValueError, match=r"PropertyTask checkpoint \(targets \['gap'\]\).*energies and forces"):
        EqgeoCalculator.from_checkpoint(tmp_path / "checkpoints" / "best.ckpt")


@pytest.mark.slow  # trains a model
def test_nve_drift_script(md17_run, tmp_path):
    """experiments/md/nve_drift.py runs end to end on a checkpoint and writes its Markdown report."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nve_drift", REPO / "experiments" / "md" / "nve_drift.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "drift.md"
    result = script.main([str(md17_run / "checkpoints" / "best.ckpt"), "--structure", str(MD17 / "test_MD.xyz"),
                          "--steps", "10", "--dt", "0.25", "--output", str(out)])
    text = out.read_text()
    assert text == result["report"] and "meV/atom/ps" in text and "| precision | float64 |" in text
    assert result["finite"] and result["wall_per_step_s"] > 0 and result["bonds"][0] == result["bonds"][1] > 0
    # velocity Verlet at 0.25 fs: the total energy wanders far less than the kinetic energy moves
    # (an integrator or force of the wrong sign makes them comparable)
    assert result["std_ekin_mev_atom"] > 0
    assert result["max_abs_dev_mev_atom"] < 0.1 * result["std_ekin_mev_atom"], result
    assert "test force MAE in the run's metrics.json" in text


def _script(name: str):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / "md" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_md_protocol_bond_watch_sees_a_broken_and_a_new_bond_and_nothing_else():
    """experiments/md/md_protocol.py's bond criteria, shared by eqgeo's and MACE's MD runs: an O-H bond
    stretched to 1.6 times the sum of covalent radii is broken, one stretched to 1.4 is not (control); two
    H atoms of ethanol pushed within the sum of their radii form a new bond, the untouched molecule none."""
    from ase.data import covalent_radii

    protocol = _script("md_protocol")
    atoms = molecule("CH3CH2OH")
    watch = protocol.BondWatch(atoms, break_factor=1.5)
    watch.check(atoms, 0.1)
    assert watch.first_broken_ps is None and watch.first_new_ps is None
    assert watch.summary(atoms)["bonds_kept_at_end"] == watch.summary(atoms)["bonds"] == 8  # C-C, C-O, O-H, 5 C-H
    o = atoms.get_chemical_symbols().index("O")
    h = min((i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"), key=lambda i: atoms.get_distance(o, i))
    bond = covalent_radii[8] + covalent_radii[1]
    for factor, broken in ((1.4, None), (1.6, 0.2)):
        stretched = atoms.copy()
        stretched.set_distance(o, h, factor * bond, fix=0)
        watch = protocol.BondWatch(atoms, break_factor=1.5)
        watch.check(stretched, 0.2)
        assert watch.first_broken_ps == broken and watch.max_stretch == pytest.approx(factor)
        assert watch.summary(stretched)["bonds_kept_at_end"] == 8 - (broken is not None)
    hs = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"]
    far = max(((i, j) for i in hs for j in hs if i < j), key=lambda p: atoms.get_distance(*p))
    pushed = atoms.copy()
    pushed.set_distance(*far, 0.9 * 2 * covalent_radii[1], fix=0.5)
    watch = protocol.BondWatch(atoms, break_factor=1.5)
    watch.check(pushed, 0.3)
    assert watch.first_new_ps == 0.3


@pytest.mark.slow  # trains a model
def test_md_stability_script(md17_run, tmp_path):
    """experiments/md/md_stability.py runs the NVT + NVE protocol end to end with a checkpoint and writes one
    table row per temperature; MACE's rows need its venv, and asking for them without a model is an error."""
    script = _script("md_stability")
    out = tmp_path / "stability.md"
    argv = [str(md17_run / "checkpoints" / "best.ckpt"), "--structure", str(MD17 / "test_MD.xyz"), "--temperatures",
            "300", "600", "--ps", "0.01", "--nve-ps", "0.005", "--check-every", "5", "--speed-steps", "5"]
    result = script.main(argv + ["--output", str(out)])
    text = out.read_text()
    assert list(result["results"]) == ["eqgeo"] and list(result["results"]["eqgeo"]) == [300.0, 600.0]
    rows = [line for line in text.splitlines() if line.startswith("| eqgeo |")]
    assert len(rows) == 2 and rows[0].startswith("| eqgeo | 300 |") and "| 8 / 8 |" in rows[0], text
    assert result["results"]["eqgeo"][300.0]["steps"] == 20 and result["speed"]["eqgeo"] > 0
    assert "MACE" not in text
    with pytest.raises(SystemExit):
        script.main(argv + ["--potentials", "mace"])


def test_md_protocol_stops_at_the_first_broken_bond_only_when_asked():
    """``stop_at_break``: a Lennard-Jones calculator with a 3 Å sigma blows ethanol apart within a few hundred
    steps; the NVT run then ends at the check that saw the broken bond and its NVE is skipped. Control: without
    the option the same run takes every step and ends with an NVE."""
    from ase.calculators.lj import LennardJones

    protocol = _script("md_protocol")
    atoms = molecule("CH3CH2OH")
    calc = LennardJones(sigma=3.0, epsilon=0.1, rc=10.0)
    stopping = protocol.StabilityProtocol(temperatures=(300.0,), ps=1.0, nve_ps=0.01, check_every=5, stop_at_break=True)
    row = protocol.run_stability(atoms, calc, stopping)[300.0]
    assert row["stopped_at_break"] and row["nve"] is None and row["first_broken_ps"] is not None
    assert row["steps"] < 2000 and row["steps"] % 5 == 0 and row["first_broken_ps"] == pytest.approx(row["steps"] * 0.5e-3)
    assert "stopped at the break" in protocol.stability_table({"LJ": {300.0: row}})[-1]
    full = protocol.run_stability(atoms, calc, protocol.StabilityProtocol(temperatures=(300.0,), ps=0.2, nve_ps=0.01,
                                                                          check_every=5))[300.0]
    assert not full["stopped_at_break"] and full["steps"] == 400 and full["nve"] is not None
    assert full["first_broken_ps"] is not None  # it broke too, and ran on
