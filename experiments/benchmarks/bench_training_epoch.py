"""Small-batch training on rMD17 ethanol: eqgeo against NequIP (and MACE), step, inference and epoch times.

    PYTHONPATH=. python experiments/benchmarks/bench_training_epoch.py \
        [--threads 1,2] [--competing 0,1] [--rounds 12] [--block 5] [--epoch-frames 950] \
        [--epoch-threads 2] [--models eqgeo,nequip,mace] \
        [--nequip-python .venvs/nequip/bin/python] [--mace-python .venvs/mace/bin/python]

Configuration (NequIP's rMD17 ethanol setting): 3 interaction layers, lmax 1, 32 channels of
every irrep with both parities (eqgeo ``parity="full"``: ``32x0e+32x0o+32x1o+32x1e``; NequIP
``parity: true``), cutoff 5 Å, 8 Bessel functions, polynomial envelope p = 6, radial MLP of 2
hidden layers of 64, batches of 5 frames (45 atoms, 360 edges: at 5 Å every pair of ethanol's
9 atoms is an edge), float32, Adam (lr 1e-3). Per-species energy shifts: the isolated-atom
energies; scale: the RMS of the training forces; avg_num_neighbors: 8 (the data's).

Data: ``../shared/data/md17/botnet_ethanol/train.xyz`` relative to the repository root (1000
rMD17 ethanol frames, eV and eV/Å, as in MACE's BOTNet split); the benchmark batch is 5 frames
drawn with ``--seed``; the epoch is the first ``--epoch-frames`` frames of a seeded permutation
(950: the rMD17 training-set size), in batches of 5.

Measured, for every model:

- training step: the graph built at the cutoff (inside the step, for every model), energy and
  forces ``= -dE/dpos`` with ``create_graph=True``, loss = MSE(energy) + MSE(forces),
  ``backward``, Adam step;
- inference pass: energy and forces (model in ``eval()``: no ``create_graph``), no loss, no
  backward;
- epoch: one training step on each batch of the epoch, summed (the data are converted to each
  library's tensors before timing, so data loading and collation are not timed; graph building
  is).

Each model runs in its own process (a "worker") that times its own steps with
``time.perf_counter`` and answers commands on stdin: eqgeo in this interpreter (``--worker
eqgeo``), NequIP in ``.venvs/nequip`` (``nequip_worker.py``), MACE in ``.venvs/mace``
(``mace_worker.py``); the peers pin e3nn versions of their own, hence their own virtual
environments, made from the repository root by

    experiments/peers/setup.sh nequip     # .venvs/nequip: torch 2.13, nequip 0.19.1, e3nn 0.6.0
    experiments/peers/setup.sh mace       # .venvs/mace:   torch 2.13, mace-torch 0.3.16, e3nn 0.4.4

All workers stay alive, warm, through the whole run and are driven in alternating blocks of
``--block`` steps (the order of the models rotates every round), so that all see the same load
on the shared cores. Settings: every combination of ``--threads`` (torch intra-op threads, also
the native kernel's) and ``--competing`` (0: none; 1: one busy-loop process,
``python -c "while True: pass"``, started before the setting's blocks and killed after). The
load average (``/proc/loadavg``) is printed before and after each setting: it counts the
benchmark's own running process (about 1) and the competing process, besides other users.

MACE is timed at its rMD17 architecture (Batatia et al. 2022: 2 interaction layers, edge
harmonics up to l = 3, correlation order 3, radial MLP [64, 64, 64], 8 Bessel, 5 Å) scaled to
32 channels with hidden irreps ``32x0e+32x1o`` (max_L 1, as the lmax of the others); the
envelope exponent is 6 as for the others (MACE's default is 5); ``--mace-layers``,
``--mace-max-ell`` and ``--mace-correlation`` change it.

Output: a Markdown table of medians, ranges (min-max) and the ratios eqgeo/NequIP and
eqgeo/MACE (of the medians; > 1: eqgeo slower), per setting and pass, and the epoch times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _worker_protocol import energy_force_loss, epoch_batches, read_extxyz, serve

from eqgeo.leaderboard import cpu_model
from bench_training_step import eqgeo_state

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data" / "md17" / "botnet_ethanol"
PEERS = {
    "nequip": {"python": REPO / ".venvs" / "nequip" / "bin" / "python", "worker": HERE / "nequip_worker.py",
               "setup": "experiments/peers/setup.sh nequip", "args": []},
    "mace": {"python": REPO / ".venvs" / "mace" / "bin" / "python", "worker": HERE / "mace_worker.py",
             "setup": "experiments/peers/setup.sh mace", "args": ["--serve"]},
}
MODELS = ("eqgeo", "nequip", "mace")


# --------------------------------------------------------------------------- data
def make_inputs(batch_size: int, epoch_frames: int, cutoff: float, seed: int) -> tuple[dict, dict, str]:
    """The ``.npz`` contents shared by all workers, a few statistics, and a description of the data."""
    train, atoms = DATA / "train.xyz", DATA / "isolated_atoms.xyz"
    if not train.is_file() or not atoms.is_file():
        raise SystemExit(
            f"rMD17 ethanol data not found: expected {train.relative_to(REPO.parent)} and "
            f"{atoms.name} next to it (the shared data folder beside the repository)"
        )
    frames = read_extxyz(train)
    e0 = {int(f["z"][0]): f["energy"] for f in read_extxyz(atoms)}
    rng = np.random.default_rng(seed)
    bench = [frames[k] for k in rng.choice(len(frames), batch_size, replace=False)]
    if epoch_frames > len(frames):
        raise SystemExit(f"--epoch-frames {epoch_frames}: the file has {len(frames)} frames")
    epoch_frames -= epoch_frames % batch_size
    order = np.random.default_rng(seed + 1).permutation(len(frames))[:epoch_frames]
    species = sorted({int(s) for f in frames for s in f["z"]})
    forces_all = np.concatenate([frames[k]["forces"] for k in order] if epoch_frames else [f["forces"] for f in bench])
    out = {
        "z": np.concatenate([f["z"] for f in bench]),
        "pos": np.concatenate([f["pos"] for f in bench]),
        "batch": np.concatenate([np.full(len(f["z"]), g, dtype=np.int64) for g, f in enumerate(bench)]),
        "energy": np.array([f["energy"] for f in bench]),
        "forces": np.concatenate([f["forces"] for f in bench]),
        "e0_species": np.array(species, dtype=np.int64),
        "e0_energy": np.array([e0[s] for s in species]),
        "ep_z": np.concatenate([f["z"] for f in frames]),
        "ep_pos": np.concatenate([f["pos"] for f in frames]),
        "ep_energy": np.array([f["energy"] for f in frames]),
        "ep_forces": np.concatenate([f["forces"] for f in frames]),
        "ep_ptr": np.concatenate([[0], np.cumsum([len(f["z"]) for f in frames])]).astype(np.int64),
        "ep_order": order.astype(np.int64),
    }
    pos, batch = out["pos"], out["batch"]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    mask = (d < cutoff) & (batch[:, None] == batch[None, :])
    np.fill_diagonal(mask, False)
    stats = {
        "num_atoms": len(out["z"]), "num_edges": int(mask.sum()), "avg_num_neighbors": float(mask.sum() / len(out["z"])),
        "energy_scale": float(np.sqrt(np.mean(forces_all**2))), "epoch_frames": epoch_frames,
    }
    source = (f"rMD17 ethanol, {DATA.relative_to(REPO.parent)}/train.xyz ({len(frames)} frames, eV, eV/Å); "
              f"benchmark batch: {batch_size} frames drawn with seed {seed}; epoch: {epoch_frames} frames "
              f"(seeded permutation), {epoch_frames // batch_size} batches of {batch_size}")
    return out, stats, source


# --------------------------------------------------------------------------- eqgeo worker (this interpreter)
class EqgeoWorker:
    """eqgeo's side, run as ``bench_training_epoch.py --worker eqgeo INPUT.npz`` (same commands as the peers)."""

    def __init__(self, path: str) -> None:
        import torch
        from torch_geometric.data import Batch, Data

        from eqgeo.models import InteratomicPotential

        inputs = np.load(path)
        self.cfg = cfg = json.loads(str(inputs["config"]))
        torch.set_num_threads(cfg.get("threads", 1))
        torch.manual_seed(cfg["seed"])
        self.dtype = dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
        species = [int(s) for s in inputs["e0_species"]]
        model = InteratomicPotential(
            species=species, channels=cfg["channels"], lmax=cfg["lmax"], num_layers=cfg["layers"],
            parity="full", cutoff=cfg["cutoff"], num_radial=cfg["num_radial"], radial_hidden=cfg["radial_hidden"],
            radial_layers=cfg["radial_layers"], avg_num_neighbors=cfg["avg_num_neighbors"],
        )
        model.set_statistics(torch.tensor(inputs["e0_energy"]), cfg["energy_scale"])
        self.model = model.to(dtype).train()
        from eqgeo.training.tasks import adam

        self.optimizer = adam(self.model.parameters(), lr=cfg["lr"])  # as eqgeo-train makes it (fused)

        def make(z, pos, batch, energy, forces):
            graphs = [
                Data(z=torch.tensor(z[batch == g]), pos=torch.tensor(pos[batch == g], dtype=dtype))
                for g in range(int(batch.max()) + 1)
            ]
            b = Batch.from_data_list(graphs)
            return {"data": b, "pos": b.pos.clone(), "energy": torch.tensor(energy, dtype=torch.float64),
                    "forces": torch.tensor(forces, dtype=dtype)}

        self.bench = make(inputs["z"], inputs["pos"], inputs["batch"], inputs["energy"], inputs["forces"])
        self.epoch = epoch_batches(inputs, cfg.get("batch_size"), make)
        import resource

        self.base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def train_step(self, b: dict) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        data = b["data"]
        data.pos = b["pos"].clone()  # a fresh leaf; the model builds the graph at the cutoff itself
        out = self.model(data)
        loss = energy_force_loss(out["energy"], out["forces"], b["energy"], b["forces"], self.dtype)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def infer(self, b: dict) -> float:
        data = b["data"]
        data.pos = b["pos"].clone()
        out = self.model(data)  # eval(): forces without create_graph
        return float(out["energy"].detach().sum()) + float(out["forces"].detach().abs().sum())

    def info(self) -> dict:
        import resource

        import torch

        return {
            "model": "eqgeo InteratomicPotential", "params": sum(p.numel() for p in self.model.parameters()),
            "hidden_irreps": " | ".join(str(g.irreps_out) for g in self.model.interactions.gates),
            "torch": torch.__version__, "eqgeo": eqgeo_state(),
            "python": platform.python_version(),
            "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_rss) / 1024,
        }


class Worker:
    """A worker process driven one command at a time."""

    def __init__(self, name: str, argv: list[str], npz: Path, env: dict, tmp: Path) -> None:
        self.name = name
        self.stderr = open(tmp / f"{name}.stderr.txt", "w+")  # noqa: SIM115 - open while the worker lives; closed in close()
        self.proc = subprocess.Popen(argv + [str(npz)] + PEERS.get(name, {}).get("args", []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=env, cwd=REPO)
        self.read()  # {"ready": true} once the model is built

    def read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.stderr.seek(0)
                hint = (f"\n(if {self.name}'s environment is broken or incomplete, remake it from the repository root "
                        f"with `{PEERS[self.name]['setup']}`)") if self.name in PEERS else ""
                raise RuntimeError(f"{self.name} worker failed (exit {self.proc.returncode}):\n"
                                   f"{self.stderr.read()[-4000:]}{hint}")
            if line.startswith("{"):  # skip what the libraries print themselves
                out = json.loads(line)
                if "error" in out:
                    raise RuntimeError(f"{self.name} worker: {out['error']}")
                return out

    def send(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict:
        info = self.send("done")
        self.proc.wait()
        self.stderr.close()
        return info


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["eqgeo"], help=argparse.SUPPRESS)
    parser.add_argument("npz", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="eqgeo,nequip,mace", help="comma-separated subset of eqgeo,nequip,mace")
    parser.add_argument("--threads", default="1,2", help="torch threads per setting, comma-separated")
    parser.add_argument("--competing", default="0,1", help="busy competing processes per setting (0 or 1), comma-separated")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of alternating blocks per setting")
    parser.add_argument("--block", type=int, default=5, help="steps (and inference passes) per model per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps and passes per model before each setting")
    parser.add_argument("--batch", type=int, default=5, help="frames per batch")
    parser.add_argument("--epoch-frames", type=int, default=950, help="frames of the epoch (0: no epoch measure)")
    parser.add_argument("--epoch-threads", default="2", help="thread counts at which the epoch is timed (quiet)")
    parser.add_argument("--epoch-chunk", type=int, default=10, help="batches per alternating block of the epoch")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--lmax", type=int, default=1)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--mace-layers", type=int, default=2)
    parser.add_argument("--mace-max-ell", type=int, default=3)
    parser.add_argument("--mace-correlation", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runtime", choices=["default", "eqgeo-cli"], default="default",
                        help="process settings of every worker: 'default' (the environment as it is) or 'eqgeo-cli' "
                             "(what eqgeo's console scripts set: OpenMP passive waiting and glibc malloc thresholds, "
                             "given to all models alike through the environment)")
    parser.add_argument("--nequip-python", type=Path, default=None,
                        help="NequIP's interpreter (default: .venvs/nequip/bin/python, made by experiments/peers/setup.sh nequip)")
    parser.add_argument("--mace-python", type=Path, default=None,
                        help="MACE's interpreter (default: .venvs/mace/bin/python, made by experiments/peers/setup.sh mace)")
    args = parser.parse_args()

    if args.worker == "eqgeo":
        sys.path.insert(0, str(REPO))
        import warnings

        warnings.filterwarnings("ignore")
        serve(EqgeoWorker(args.npz))
        return

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        parser.error(f"--models: unknown {unknown}; choose from {','.join(MODELS)}")
    threads = [int(t) for t in args.threads.split(",")]
    competing = [int(c) for c in args.competing.split(",")]
    epoch_threads = [int(t) for t in args.epoch_threads.split(",") if t.strip()] if args.epoch_frames else []
    pythons = {"eqgeo": Path(sys.executable)}
    for peer in ("nequip", "mace"):
        if peer not in models:
            continue
        given = getattr(args, f"{peer}_python")
        py = given if given is not None else PEERS[peer]["python"]
        if not py.exists():
            where = f"--{peer}-python {given}" if given is not None else f".venvs/{peer}/bin/python (under the repository root)"
            parser.error(f"{peer}'s interpreter {where} does not exist. Create its environment, from the repository "
                         f"root, with\n    {PEERS[peer]['setup']}\nor leave {peer} out with --models "
                         f"{','.join(m for m in models if m != peer)}")
        pythons[peer] = py

    inputs, data_stats, source = make_inputs(args.batch, args.epoch_frames, args.cutoff, args.seed)
    cfg = {
        "channels": args.channels, "lmax": args.lmax, "layers": args.layers, "cutoff": args.cutoff,
        "num_radial": 8, "poly_p": 6, "radial_hidden": 64, "radial_layers": 2,
        "avg_num_neighbors": data_stats["avg_num_neighbors"], "energy_scale": data_stats["energy_scale"],
        "dtype": args.dtype, "threads": max(threads + epoch_threads), "batch_size": args.batch, "lr": 1e-3,
        "seed": args.seed, "warmup": 0, "repeat": 0, "reduced_cg": False,
    }
    mace_cfg = {**cfg, "layers": args.mace_layers, "max_ell": args.mace_max_ell, "correlation": args.mace_correlation}

    print(f"# Small-batch training, rMD17 ethanol: {args.batch} frames, {data_stats['num_atoms']} atoms, "
          f"{data_stats['num_edges']} edges per batch (cutoff {args.cutoff:g} Å, avg_num_neighbors "
          f"{data_stats['avg_num_neighbors']:g}), {args.dtype}")
    print(f"data: {source}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores visible, {platform.machine()}, Python {platform.python_version()}; "
          f"load average at start: {loadavg()}")
    print(f"command: {' '.join(['python', 'experiments/benchmarks/bench_training_epoch.py'] + sys.argv[1:])}")
    print(f"runtime: {args.runtime}" + (f" ({', '.join(f'{k}={v}' for k, v in CLI_RUNTIME_ENV.items())} for every worker)"
                                        if args.runtime == "eqgeo-cli" else " (environment as it is)"))
    print(f"config: layers {args.layers}, lmax {args.lmax}, {args.channels} channels, both parities, radial MLP 2x64, "
          f"8 Bessel, p = 6, Adam lr 1e-3; MACE: {args.mace_layers} layers, hidden {args.channels}x0e+{args.channels}x1o, "
          f"max_ell {args.mace_max_ell}, correlation {args.mace_correlation}", flush=True)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        workers: dict[str, Worker] = {}
        try:
            for name in models:
                npz = tmp / f"{name}.npz"
                np.savez(npz, **inputs, config=np.array(json.dumps(mace_cfg if name == "mace" else cfg)))
                env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]))
                if args.runtime == "eqgeo-cli":
                    env.update(CLI_RUNTIME_ENV)
                if name == "eqgeo":
                    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "eqgeo"]
                    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
                else:
                    env.pop("PYTHONPATH", None)
                    argv = [str(pythons[name]), str(PEERS[name]["worker"])]
                t0 = time.perf_counter()
                workers[name] = Worker(name, argv, npz, env, tmp)
                print(f"{name}: worker ready in {time.perf_counter() - t0:.1f} s", flush=True)
            results, epochs = run_settings(workers, models, threads, competing, epoch_threads, args)
        finally:
            infos = {}
            for name, w in workers.items():
                try:
                    infos[name] = w.close()
                except Exception as exc:  # noqa: BLE001 - report, keep closing the others
                    infos[name] = {"model": name, "error": str(exc)}
                    w.proc.kill()
    report(models, infos, results, epochs, data_stats, args)


def _cli_runtime_env() -> dict:
    """eqgeo.cli.configure_process's settings as environment variables (read when a process
    starts), so every model's worker gets them alike."""
    from eqgeo.cli import MALLOC_SETTINGS, OMP_DEFAULTS

    names = {-3: "MALLOC_MMAP_THRESHOLD_", -1: "MALLOC_TRIM_THRESHOLD_", -2: "MALLOC_TOP_PAD_"}
    return {**OMP_DEFAULTS, **{names[k]: str(v) for k, v in MALLOC_SETTINGS.items()}}


CLI_RUNTIME_ENV = _cli_runtime_env()


def run_settings(workers, models, threads, competing, epoch_threads, args):
    results = []  # one entry per setting
    for busy in competing:
        for t in threads:
            proc = busy_process() if busy else None
            try:
                time.sleep(0.5 if busy else 0.0)
                for w in workers.values():
                    w.send(f"threads {t}")
                for name in models:
                    workers[name].send(f"train {args.warmup}")
                    workers[name].send(f"infer {args.warmup}")
                load_before = loadavg()
                times = {(name, kind): [] for name in models for kind in ("train", "infer")}
                cpu = {(name, kind): [] for name in models for kind in ("train", "infer")}
                t0 = time.perf_counter()
                for r in range(args.rounds):
                    order = models[r % len(models):] + models[: r % len(models)]
                    for kind in ("train", "infer"):
                        for name in order:
                            out = workers[name].send(f"{kind} {args.block}")
                            times[(name, kind)] += out["ms"]
                            cpu[(name, kind)] += out["cpu_ms"]
                wall = time.perf_counter() - t0
                load_after = loadavg()
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
            results.append({"threads": t, "busy": busy, "times": times, "cpu": cpu, "load": (load_before, load_after),
                            "wall": wall})
            line = ", ".join(f"{n} {kind} {statistics.median(v):.1f} ms" for (n, kind), v in times.items())
            print(f"setting threads={t} competing={busy}: {line} (load {load_before} -> {load_after}, {wall:.0f} s)", flush=True)
    epochs = []
    n_batches = len(range(0, args.epoch_frames - args.epoch_frames % args.batch, args.batch))
    for t in epoch_threads:
        for w in workers.values():
            w.send(f"threads {t}")
        load_before = loadavg()
        per = {name: [] for name in models}
        per_cpu = {name: [] for name in models}
        t0 = time.perf_counter()
        for k, s in enumerate(range(0, n_batches, args.epoch_chunk)):
            e = min(s + args.epoch_chunk, n_batches)
            order = models[k % len(models):] + models[: k % len(models)]
            for name in order:
                out = workers[name].send(f"epoch {s} {e}")
                per[name] += out["ms"]
                per_cpu[name] += out["cpu_ms"]
        epochs.append({"threads": t, "per": per, "cpu": per_cpu, "load": (load_before, loadavg()),
                       "wall": time.perf_counter() - t0})
        print(f"epoch threads={t}: " + ", ".join(f"{n} {sum(v) / 1e3:.2f} s" for n, v in per.items()), flush=True)
    return results, epochs


def report(models, infos, results, epochs, data_stats, args) -> None:
    print("\n## Models\n")
    print("| model | parameters | irreps after each layer | versions | peak MB |")
    print("|---|---:|---|---|---:|")
    for name in models:
        i = infos[name]
        if "error" in i:
            print(f"| {name} | - | - | {i['error'][:200]} | - |")
            continue
        versions = ", ".join(f"{k} {i[k]}" for k in ("torch", "e3nn", "nequip", "mace") if k in i)
        if name == "eqgeo":
            versions += f"; eqgeo {i['eqgeo']}"
        if name == "mace":
            versions += f"; {i['layers']} layers, max_ell {i['max_ell']}, correlation {i['correlation']}"
        irreps = i['hidden_irreps'].replace(' ', '').replace('|', ' \\| ')  # a table cell: escape the pipes
        print(f"| {i['model']} | {i['params']:,} | {irreps} | {versions} | {i['peak_mb']:.0f} |")

    print(f"\n## Step and inference times (ms): wall median [min-max] and, after /, the median CPU time of the "
          f"worker process (all its threads); {args.rounds} rounds x {args.block} per model and pass. Ratios "
          "eqgeo / peer of the wall medians (of the CPU medians in parentheses); > 1: eqgeo slower\n")
    peers = [m for m in models if m != "eqgeo"]
    ratios = peers if "eqgeo" in models else []
    print("| threads | competing | pass | load avg before -> after | " + " | ".join(models)
          + "".join(f" | eqgeo/{p}" for p in ratios) + " |")
    print("|---:|---:|---|---|" + "---:|" * (len(models) + len(ratios)))
    for r in results:
        for kind in ("train", "infer"):
            cells = []
            for name in models:
                med, lo, hi = stats(r["times"][(name, kind)])
                cells.append(f"{med:.1f} [{lo:.1f}-{hi:.1f}] / {statistics.median(r['cpu'][(name, kind)]):.1f}")
            for p in ratios:
                w = statistics.median(r["times"][("eqgeo", kind)]) / statistics.median(r["times"][(p, kind)])
                c = statistics.median(r["cpu"][("eqgeo", kind)]) / statistics.median(r["cpu"][(p, kind)])
                cells.append(f"{w:.2f} ({c:.2f})")
            label = "train step" if kind == "train" else "inference"
            print(f"| {r['threads']} | {r['busy']} | {label} | {r['load'][0]} -> {r['load'][1]} | " + " | ".join(cells) + " |")

    if epochs:
        frames = data_stats["epoch_frames"]
        print(f"\n## Epoch: {frames} frames, {frames // args.batch} training steps of {args.batch} frames "
              f"(alternating blocks of {args.epoch_chunk} batches; no competing process): wall s per epoch "
              "(median step ms) / CPU s per epoch; ratios of the wall (CPU) totals\n")
        print("| threads | load avg before -> after | " + " | ".join(models) + "".join(f" | eqgeo/{p}" for p in ratios) + " |")
        print("|---:|---|" + "---:|" * (len(models) + len(ratios)))
        for e in epochs:
            cells = [f"{sum(e['per'][m]) / 1e3:.2f} ({statistics.median(e['per'][m]):.1f}) / {sum(e['cpu'][m]) / 1e3:.2f}"
                     for m in models]
            for p in ratios:
                cells.append(f"{sum(e['per']['eqgeo']) / sum(e['per'][p]):.2f} ({sum(e['cpu']['eqgeo']) / sum(e['cpu'][p]):.2f})")
            print(f"| {e['threads']} | {e['load'][0]} -> {e['load'][1]} | " + " | ".join(cells) + " |")
    print(f"\nload average at the end: {loadavg()}")


if __name__ == "__main__":
    main()
