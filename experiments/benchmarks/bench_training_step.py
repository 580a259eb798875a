"""One training step (energy and forces) of eqgeo's InteratomicPotential against MACE, side by side.

    PYTHONPATH=. python experiments/benchmarks/bench_training_step.py \
        [--channels 32] [--lmax 2] [--layers 3] [--batch 32] [--repeat 10] [--dtype float32] \
        [--correlation 3] [--mace-python .venvs/mace/bin/python]

Workload: a batch of ``--batch`` ethanol molecules (9 atoms: C2H6O) taken, seeded, from the
rMD17 ethanol frames in ``../shared/data/md17/botnet_ethanol/train.xyz`` (relative to the repo
root; energies in eV, forces in eV/Å, isolated-atom energies from ``isolated_atoms.xyz``). When
that folder is absent the molecules are randomly perturbed RDKit ethanol geometries with random
targets, and the output says so.

One step, the same for both models: build the graph (all pairs within the cutoff, 5 Å, which for
ethanol is every pair: 72 edges per molecule), energies and forces ``= -dE/dpos`` through
autograd with ``create_graph=True``, loss = MSE(energy) + MSE(forces), ``loss.backward()``,
``torch.optim.Adam`` step. Timed: median (and range) of ``--repeat`` steps after ``--warmup``
steps, 2 threads. Peak memory: max RSS above the process's baseline taken after the model and
inputs are built.

eqgeo runs in this process. MACE (``mace-torch``, which pins ``e3nn==0.4.4``) runs in its own
virtual environment: this script writes the same positions, species and targets to a temporary
``.npz`` and runs ``mace_worker.py`` with that environment's interpreter, which prints its
timings as one JSON line. That environment is ``.venvs/mace`` under the repository root, made
(torch 2.13.0, mace-torch 0.3.16, e3nn 0.4.4) by

    experiments/peers/setup.sh mace

or another interpreter given with ``--mace-python``. Without it, only eqgeo runs and the output
says why.

Both models get the same channels, lmax (hidden irreps ``c x 0e + c x 1o + c x 2e ...`` in natural
parity and edge harmonics up to lmax), number of interaction layers, cutoff, 8 Bessel functions,
polynomial envelope p = 6, avg_num_neighbors (the batch's mean, 8 for ethanol) and per-species
isolated-atom energy shifts. What differs is the architecture itself (see the printed notes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _worker_protocol import energy_force_loss, read_extxyz

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "md17" / "botnet_ethanol"
WORKER = Path(__file__).resolve().parent / "mace_worker.py"
MACE_PYTHON = REPO / ".venvs" / "mace" / "bin" / "python"  # made by experiments/peers/setup.sh mace
MACE_SETUP = "experiments/peers/setup.sh mace"


# --------------------------------------------------------------------------- inputs
def ethanol_batch(batch_size: int, seed: int = 0) -> tuple[dict, str]:
    """Concatenated ``z, pos, batch, energy, forces`` of ``batch_size`` ethanol frames, plus E0s, and a description."""
    rng = np.random.default_rng(seed)
    if (DATA / "train.xyz").is_file():
        frames = read_extxyz(DATA / "train.xyz")
        picks = rng.choice(len(frames), batch_size, replace=False)
        frames = [frames[k] for k in picks]
        e0 = {int(f["z"][0]): f["energy"] for f in read_extxyz(DATA / "isolated_atoms.xyz")}
        source = f"rMD17 ethanol, {batch_size} frames drawn (seed {seed}) from {DATA.relative_to(REPO.parent)}/train.xyz (eV, eV/Å)"
    else:
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
        AllChem.EmbedMolecule(mol, randomSeed=seed)
        AllChem.MMFFOptimizeMolecule(mol)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        ref = mol.GetConformer().GetPositions()
        frames = [
            {"z": z, "pos": ref + rng.normal(0, 0.05, ref.shape), "energy": float(rng.normal(-4209.0, 0.5)),
             "forces": rng.normal(0, 1.0, ref.shape)}
            for _ in range(batch_size)
        ]
        e0 = {1: -13.57, 6: -1025.28, 8: -2035.57}
        source = (f"FALLBACK (no {DATA}): {batch_size} RDKit ethanol geometries perturbed by 0.05 Å Gaussian noise, "
                  "random energy/force targets")
    out = {
        "z": np.concatenate([f["z"] for f in frames]),
        "pos": np.concatenate([f["pos"] for f in frames]),
        "batch": np.concatenate([np.full(len(f["z"]), g, dtype=np.int64) for g, f in enumerate(frames)]),
        "energy": np.array([f["energy"] for f in frames]),
        "forces": np.concatenate([f["forces"] for f in frames]),
    }
    species = sorted(set(out["z"].tolist()))
    out["e0_species"] = np.array(species, dtype=np.int64)
    out["e0_energy"] = np.array([e0[s] for s in species])
    return out, source


def avg_neighbors(inputs: dict, cutoff: float) -> tuple[float, int]:
    pos, batch = torch.tensor(inputs["pos"]), torch.tensor(inputs["batch"])
    d = torch.cdist(pos, pos)
    mask = (d < cutoff) & (batch[:, None] == batch[None, :])
    mask.fill_diagonal_(False)
    edges = int(mask.sum())
    return edges / pos.shape[0], edges


# --------------------------------------------------------------------------- eqgeo
def setup_eqgeo(inputs: dict, cfg: dict):
    """eqgeo's model, optimizer and a ``step()`` that runs one training step and returns its loss."""
    from torch_geometric.data import Batch, Data

    from eqgeo.models import InteratomicPotential

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
    species = [int(s) for s in inputs["e0_species"]]
    model = InteratomicPotential(
        species=species, channels=cfg["channels"], lmax=cfg["lmax"], num_layers=cfg["layers"],
        cutoff=cfg["cutoff"], num_radial=cfg["num_radial"], avg_num_neighbors=cfg["avg_num_neighbors"],
    )
    forces_ref = torch.tensor(inputs["forces"], dtype=dtype)
    model.set_statistics(torch.tensor(inputs["e0_energy"]), float(forces_ref.pow(2).mean().sqrt()))
    model = model.to(dtype).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])

    graphs = []
    for g in range(int(inputs["batch"].max()) + 1):
        sel = inputs["batch"] == g
        graphs.append(Data(z=torch.tensor(inputs["z"][sel]), pos=torch.tensor(inputs["pos"][sel], dtype=dtype)))
    batch = Batch.from_data_list(graphs)
    pos0 = batch.pos.clone()
    energy_ref = torch.tensor(inputs["energy"], dtype=torch.float64)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        batch.pos = pos0.clone()  # fresh leaf; the model builds the graph at the cutoff itself
        out = model(batch)
        loss = energy_force_loss(out["energy"], out["forces"], energy_ref, forces_ref, dtype)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    import e3nn  # only for the version line; eqgeo does not use it

    info = {
        "model": "eqgeo InteratomicPotential", "params": sum(p.numel() for p in model.parameters()),
        "hidden_irreps": str(model.interactions.irreps_hidden), "irreps_out": str(model.interactions.irreps_out),
        "torch": torch.__version__, "e3nn": e3nn.__version__, "threads": torch.get_num_threads(),
    }
    return step, info


def timed(step) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = step()
    return (time.perf_counter() - t0) * 1e3, loss


# --------------------------------------------------------------------------- MACE
class MaceWorker:
    """``mace_worker.py --serve`` under MACE's interpreter, driven one training step at a time."""

    def __init__(self, inputs: dict, cfg: dict, python: str) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        path = Path(self.tmp.name) / "inputs.npz"
        np.savez(path, **inputs, config=np.array(json.dumps(cfg)))
        env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]))
        env.pop("PYTHONPATH", None)
        self.stderr = open(Path(self.tmp.name) / "stderr.txt", "w+")
        self.proc = subprocess.Popen(
            [python, str(WORKER), str(path), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, env=env,
        )
        self._read()  # {"ready": true} once the model is built

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.stderr.seek(0)
                raise RuntimeError(f"MACE worker failed ({self.proc.returncode}):\n{self.stderr.read()[-4000:]}")
            if line.startswith("{"):  # skip what MACE itself prints (e.g. about cuequivariance)
                return json.loads(line)

    def _send(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def step(self) -> tuple[float, float]:
        out = self._send("step")
        return out["ms"], out["loss"]

    def close(self) -> dict:
        info = self._send("done")
        self.proc.wait()
        self.stderr.close()
        self.tmp.cleanup()
        return info


# --------------------------------------------------------------------------- main
def eqgeo_state() -> str:
    """Where eqgeo is imported from, its commit, uncommitted changes, and the native TP kernel's state."""
    import eqgeo

    root = Path(eqgeo.__file__).resolve().parents[1]

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit and Path(git("rev-parse", "--show-toplevel")).resolve() == root:
        dirty = git("status", "--porcelain", "--", "eqgeo")
        where = f"commit {commit}{' + uncommitted changes in eqgeo/' if dirty else ''}"
    else:
        where = "not a git checkout"
    try:
        from eqgeo.nn import _native

        native = "on" if _native.enabled() else "off"
    except ImportError:
        native = "absent"
    return f"{where}; native TP kernel: {native}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--lmax", type=int, default=2)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--correlation", type=int, default=3, help="MACE's correlation order (body order - 1)")
    parser.add_argument("--mace-reduced-cg", action="store_true", help="MACE's use_reduced_cg (mace_run_train default: off)")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mace-python", type=Path, default=None,
                        help=f"interpreter of MACE's environment (default: .venvs/mace/bin/python under the "
                             f"repository root, made by `{MACE_SETUP}`)")
    parser.add_argument("--skip", choices=["eqgeo", "mace"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mace_python is not None and args.skip != "mace" and not args.mace_python.exists():
        parser.error(f"--mace-python {args.mace_python} does not exist (the default environment is made by "
                     f"`{MACE_SETUP}`, run from the repository root)")

    inputs, source = ethanol_batch(args.batch, args.seed)
    avg_nn, num_edges = avg_neighbors(inputs, args.cutoff)
    cfg = {
        "channels": args.channels, "lmax": args.lmax, "layers": args.layers, "cutoff": args.cutoff,
        "num_radial": 8, "poly_p": 6, "correlation": args.correlation, "avg_num_neighbors": avg_nn,
        "dtype": args.dtype, "threads": args.threads, "warmup": args.warmup, "repeat": args.repeat,
        "lr": 1e-3, "seed": args.seed, "reduced_cg": args.mace_reduced_cg,
    }
    print(f"# One training step (energy + forces): {args.batch} ethanol molecules, {len(inputs['z'])} atoms, "
          f"{num_edges} edges (cutoff {args.cutoff:g} Å, avg_num_neighbors {avg_nn:g}), {args.dtype}, {args.threads} threads")
    print(f"data: {source}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores visible, Python {platform.python_version()}")
    print(f"eqgeo: {eqgeo_state()}")
    print(f"step: graph at the cutoff, E and F = -dE/dpos (create_graph), loss = MSE(E) + MSE(F), backward, Adam; "
          f"median of {args.repeat} steps after {args.warmup} warm-up steps, eqgeo and MACE steps alternating\n", flush=True)

    mace_python = args.mace_python if args.mace_python is not None else MACE_PYTHON
    mace_note = None
    run_mace_too = args.skip != "mace" and mace_python.exists()
    if args.skip != "mace" and not mace_python.exists():
        mace_note = (f"MACE not run: its environment .venvs/mace (under the repository root) does not exist. "
                     f"Create it with\n"
                     f"    {MACE_SETUP}\n"
                     "from the repository root, or pass --mace-python.")
    # Steps alternate between eqgeo and MACE (and which goes first), so that both see the same
    # load on shared cores; each model's peak memory is its own process's.
    runners = []
    if args.skip != "eqgeo":
        step, info = setup_eqgeo(inputs, cfg)
        runners.append((info, lambda step=step: timed(step)))
    if run_mace_too:
        worker = MaceWorker(inputs, cfg, str(mace_python))
        runners.append((None, worker.step))  # times itself in its process
    else:
        worker = None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm = [0.0] * len(runners)
    times: list[list[float]] = [[] for _ in runners]
    losses: list[list[float]] = [[] for _ in runners]
    for i in range(args.warmup + args.repeat):
        order = range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))
        for j in order:
            ms, loss = runners[j][1]()
            losses[j].append(loss)
            if i < args.warmup:
                warm[j] += ms / 1e3
            else:
                times[j].append(ms)
    eqgeo_peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    results = []
    for j, (info, _) in enumerate(runners):
        if info is None:
            info = worker.close()
        else:
            info = {**info, "peak_mb": eqgeo_peak}
        results.append({**info, "ms": statistics.median(times[j]), "ms_all": times[j], "warmup_s": warm[j],
                        "loss_first_last": [losses[j][0], losses[j][-1]]})

    print("| model | channels | lmax | layers | hidden irreps | parameters | ms/step median | ms/step min-max | peak MB |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {args.channels} | {args.lmax} | {args.layers} | {r['hidden_irreps'].replace(' ', '')} "
              f"| {r['params']:,} | {r['ms']:.0f} | {min(r['ms_all']):.0f}-{max(r['ms_all']):.0f} | {r['peak_mb']:.0f} |")
    if len(results) == 2:
        ours, mace = results
        print(f"\nMACE / eqgeo time per step: {mace['ms'] / ours['ms']:.2f}x "
              f"(>1: eqgeo faster); peak memory MACE / eqgeo: {mace['peak_mb'] / max(ours['peak_mb'], 1e-9):.2f}x")
        ratios = sorted(m / o for o, m in zip(ours["ms_all"], mace["ms_all"]))
        q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]  # noqa: E731
        print(f"MACE / eqgeo of back-to-back step pairs: median {statistics.median(ratios):.2f}x, "
              f"quartiles {q(0.25):.2f}-{q(0.75):.2f}x, range {ratios[0]:.2f}-{ratios[-1]:.2f}x; "
              f"of the fastest steps: {min(mace['ms_all']) / min(ours['ms_all']):.2f}x")
    print()
    for r in results:
        extra = f", mace-torch {r['mace']}, correlation {r['correlation']}" if "mace" in r else ""
        print(f"{r['model']}: torch {r['torch']}, e3nn {r['e3nn']}{extra}; warm-up {r['warmup_s']:.1f} s; "
              f"loss first/last {r['loss_first_last'][0]:.3g}/{r['loss_first_last'][1]:.3g}; "
              f"steps ms: {' '.join(f'{t:.0f}' for t in r['ms_all'])}"
)
    if mace_note:
        print(mace_note)


if __name__ == "__main__":
    main()
