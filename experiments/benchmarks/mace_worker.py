"""MACE side of ``bench_training_step.py``: one training step of ``mace-torch``, timed.

Runs under MACE's own interpreter (MACE pins ``e3nn==0.4.4``, eqgeo's environment has a newer
e3nn), so it imports nothing from eqgeo and reads its inputs from an ``.npz`` file written by
``bench_training_step.py``:

    .venvs/mace/bin/python experiments/benchmarks/mace_worker.py INPUT.npz [--serve]

(from the repository root; ``experiments/peers/setup.sh mace`` makes ``.venvs/mace``).

``INPUT.npz`` holds ``z`` (N,), ``pos`` (N, 3) Å, ``batch`` (N,), ``energy`` (G,) eV,
``forces`` (N, 3) eV/Å, ``e0_species`` / ``e0_energy`` (isolated-atom energies, eV) and a
``config`` JSON string (channels, lmax, layers, cutoff, num_radial, poly_p, correlation,
avg_num_neighbors, dtype, threads, warmup, repeat, lr, seed, reduced_cg).

The model is what ``mace_run_train --model MACE`` builds (a ``ScaleShiftMACE``): a
``RealAgnosticInteractionBlock`` first, ``RealAgnosticResidualInteractionBlock`` after it,
``MLP_irreps=16x0e``, radial MLP ``[64, 64, 64]``, SiLU gate, Bessel radial basis; hidden
irreps ``{c}x0e+{c}x1o+{c}x2e+...`` up to ``lmax`` (natural parity), ``max_ell = lmax``,
``num_interactions = layers``. As in MACE, the last interaction keeps only the scalars of the
hidden irreps.

One step: build the edge list (all pairs within the cutoff in the same molecule, as eqgeo's
model does inside its forward), energy and forces ``= -dE/dpos`` (``training=True``, so
``create_graph=True``), loss = MSE(energy) + MSE(forces), ``backward``, Adam step. Printed: a
single JSON line with the step times (ms), the peak memory (max RSS above the baseline taken
after the model and the inputs are built) and the versions. With ``--serve`` it instead waits for
``step`` / ``done`` lines on stdin and answers each with a JSON line (how the benchmark
interleaves MACE's steps with eqgeo's).

``bench_training_epoch.py`` uses the same serve loop with more commands (each answered by one
JSON line): ``threads K`` (``torch.set_num_threads``), ``train N`` / ``infer N`` (N training
steps / inference passes on the batch: ``{"ms": [...], "cpu_ms": [...], "loss": ...}``, wall and
process CPU times; an inference pass is the
energy and forces with ``training=False``, i.e. without ``create_graph``, no loss, no backward),
``epoch S E`` (training steps on batches ``S .. E-1`` of an epoch whose frames the ``.npz``
holds as ``ep_z``, ``ep_pos``, ``ep_energy``, ``ep_forces``, ``ep_ptr`` (atom offsets) and
``ep_order`` (frames in batch order, ``batch_size`` per batch)). Optional ``config`` keys: ``max_ell``
(degree of the edge harmonics, default ``lmax``), ``energy_scale`` (default: the RMS of the
batch's force components) and ``batch_size`` (frames per epoch batch).
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from _worker_protocol import energy_force_loss, epoch_batches, radius_edges, serve


def build_model(cfg: dict, e0: dict[int, float], species: list[int], scale: float):
    from mace import modules  # first: mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn 0.4.4's import needs
    from e3nn import o3

    lmax = cfg["lmax"]
    hidden = "+".join(f"{cfg['channels']}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
    return modules.ScaleShiftMACE(
        r_max=cfg["cutoff"],
        num_bessel=cfg["num_radial"],
        num_polynomial_cutoff=cfg["poly_p"],
        max_ell=cfg.get("max_ell", lmax),
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=cfg["layers"],
        num_elements=len(species),
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([e0[z] for z in species]),
        avg_num_neighbors=cfg["avg_num_neighbors"],
        atomic_numbers=species,
        correlation=cfg["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        radial_type="bessel",
        use_reduced_cg=cfg["reduced_cg"],
        atomic_inter_scale=scale,
        atomic_inter_shift=0.0,
    ), hidden


class Setup:
    """The model, optimizer, the benchmark batch and (optionally) the batches of an epoch."""

    def __init__(self, path: str) -> None:
        inputs = np.load(path)
        self.cfg = cfg = json.loads(str(inputs["config"]))
        torch.set_num_threads(cfg["threads"])
        self.dtype = dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
        torch.set_default_dtype(dtype)
        torch.manual_seed(cfg["seed"])

        species = sorted(int(s) for s in np.unique(inputs["z"]))
        e0 = {int(z): float(e) for z, e in zip(inputs["e0_species"], inputs["e0_energy"])}
        if "energy_scale" in cfg:
            scale = float(cfg["energy_scale"])
        else:
            scale = float(torch.tensor(inputs["forces"]).pow(2).mean().sqrt())  # MACE's default: RMS of the force components
        self.model, self.hidden = build_model(cfg, e0, species, scale)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.index = {s: i for i, s in enumerate(species)}
        self.num_species = len(species)
        self.bench = self.make_batch(inputs["z"], inputs["pos"], inputs["batch"], inputs["energy"], inputs["forces"])
        self.epoch = epoch_batches(inputs, cfg.get("batch_size"), self.make_batch)
        self.base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def make_batch(self, z, pos, batch, energy, forces) -> dict:
        dtype = self.dtype
        z = torch.tensor(z, dtype=torch.long)
        batch = torch.tensor(batch, dtype=torch.long)
        num_graphs = int(batch.max()) + 1
        node_attrs = torch.nn.functional.one_hot(
            torch.tensor([self.index[int(s)] for s in z]), self.num_species
        ).to(dtype)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(batch, minlength=num_graphs).cumsum(0)])
        return {
            "z": z, "batch": batch, "pos": torch.tensor(pos, dtype=dtype), "node_attrs": node_attrs, "ptr": ptr,
            "energy": torch.tensor(energy, dtype=torch.float64), "forces": torch.tensor(forces, dtype=dtype),
            "cell": torch.zeros(num_graphs, 3, 3, dtype=dtype), "num_graphs": num_graphs,
        }

    def _data(self, b: dict) -> dict:
        pos = b["pos"].clone()
        edge_index = radius_edges(pos, b["batch"], self.cfg["cutoff"])
        shifts = torch.zeros(edge_index.shape[1], 3, dtype=self.dtype)
        return {
            "positions": pos, "node_attrs": b["node_attrs"], "edge_index": edge_index, "shifts": shifts,
            "unit_shifts": shifts, "cell": b["cell"], "batch": b["batch"], "ptr": b["ptr"],
        }

    def train_step(self, b: dict) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(self._data(b), training=True, compute_force=True)
        loss = energy_force_loss(out["energy"], out["forces"], b["energy"], b["forces"], self.dtype)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def infer(self, b: dict) -> float:
        out = self.model(self._data(b), training=False, compute_force=True)
        return float(out["energy"].detach().sum()) + float(out["forces"].detach().abs().sum())

    def info(self) -> dict:
        import e3nn
        import mace

        b = self.bench
        return {
            "model": "MACE (ScaleShiftMACE)", "params": sum(p.numel() for p in self.model.parameters()),
            "hidden_irreps": self.hidden, "correlation": self.cfg["correlation"],
            "max_ell": self.cfg.get("max_ell", self.cfg["lmax"]), "layers": self.cfg["layers"],
            "num_edges": int(radius_edges(b["pos"], b["batch"], self.cfg["cutoff"]).shape[1]),
            "num_atoms": int(b["z"].numel()), "num_graphs": b["num_graphs"],
            "torch": torch.__version__, "e3nn": e3nn.__version__, "mace": getattr(mace, "__version__", "?"),
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_rss) / 1024,
        }


def setup(path: str):
    """The model, optimizer and a ``step()`` that runs one training step and returns its loss."""
    s = Setup(path)
    return (lambda: s.train_step(s.bench)), s.cfg, s.info()


def timed(step) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = step()
    return (time.perf_counter() - t0) * 1e3, loss


def main() -> None:
    warnings.filterwarnings("ignore")
    s = Setup(sys.argv[1])
    cfg = s.cfg
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if "--serve" in sys.argv:
        # Driven one command at a time by bench_training_step.py / bench_training_epoch.py, which
        # alternate these steps with eqgeo's so that both see the same load.
        def step(args):
            ms, loss = timed(lambda: s.train_step(s.bench))
            return {"ms": ms, "loss": loss}

        serve(s, extra={"step": step})
        return
    step, info = (lambda: s.train_step(s.bench)), s.info()
    losses, warm = [], 0.0
    for _ in range(cfg["warmup"]):
        ms, loss = timed(step)
        warm += ms / 1e3
        losses.append(loss)
    times = []
    for _ in range(cfg["repeat"]):
        ms, loss = timed(step)
        times.append(ms)
        losses.append(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({
        **info, "ms": statistics.median(times), "ms_all": times, "warmup_s": warm,
        "peak_mb": peak / 1024, "loss_first_last": [losses[0], losses[-1]],
    }))


if __name__ == "__main__":
    main()
