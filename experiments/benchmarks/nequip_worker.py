"""NequIP side of ``bench_training_epoch.py``: training steps and inference passes of ``nequip``, timed.

Runs under NequIP's own interpreter (``.venvs/nequip``, made from the repository root by
``experiments/peers/setup.sh nequip``: torch 2.13, nequip 0.19.1, e3nn 0.6.0), imports nothing
from eqgeo and reads its inputs from an ``.npz`` file written by ``bench_training_epoch.py``:

    .venvs/nequip/bin/python experiments/benchmarks/nequip_worker.py INPUT.npz

``INPUT.npz`` holds the benchmark batch (``z`` (N,), ``pos`` (N, 3) Å, ``batch`` (N,),
``energy`` (G,) eV, ``forces`` (N, 3) eV/Å), the isolated-atom energies (``e0_species``,
``e0_energy``), the frames of the epoch (``ep_z``, ``ep_pos``, ``ep_energy``, ``ep_forces``,
``ep_ptr`` (F + 1,) atom offsets, ``ep_order``: the frames in the order they are batched) and a
``config`` JSON string (channels, lmax, layers, cutoff, num_radial, poly_p, radial_hidden,
radial_layers, avg_num_neighbors, energy_scale, dtype, batch_size, lr, seed).

The model is NequIP's own ``nequip.model.NequIPGNNModel`` (the builder that NequIP's config
files name as ``_target_``), built in Python with the ``@model_builder`` machinery
(``set_global_state()`` first, as NequIP's trainer does): ``num_layers = layers``,
``l_max = lmax``, ``parity = True`` (both parities), ``num_features = channels``,
``radial_mlp_depth = radial_layers``, ``radial_mlp_width = radial_hidden``,
``num_bessels = num_radial``, ``polynomial_cutoff_p = poly_p``, ``r_max = cutoff``,
per-type energy shifts = isolated-atom energies, per-type scales = ``energy_scale`` (the RMS of
the force components), ``model_dtype = dtype``, eager mode (NequIP's default
``compile_mode``). As in NequIP, the data (positions, targets) stay float64; the model casts
what it computes from them to its dtype.

One training step: the edge list (all ordered pairs of distinct atoms of the same frame within
the cutoff, ``edge_index[0]`` the centre as NequIP expects; built inside the step, as the other
models build theirs), ``model.train()`` forward (forces ``= -dE/dpos`` with ``create_graph``,
NequIP's ``ForceStressOutput``), loss = MSE(energy) + MSE(forces), ``backward``, Adam step.
One inference pass: the same in ``eval()`` mode (no ``create_graph``), no loss, no backward.

The worker serves commands on stdin, one per line, answering each with one JSON line:
``threads K`` (``torch.set_num_threads``), ``train N`` / ``infer N`` (N steps / passes on the
benchmark batch: ``{"ms": [...], "cpu_ms": [...], "loss": ...}``, wall and process CPU times),
``epoch S E`` (training steps on batches ``S .. E-1`` of the epoch, same answer), ``done`` (a
summary: parameters, irreps, versions, peak memory).
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import warnings

import numpy as np
import torch

from _worker_protocol import energy_force_loss, epoch_batches, radius_edges, serve

SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O"}


def build_model(cfg: dict, species: list[int], e0: dict[int, float]):
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    set_global_state()  # NequIP refuses to build a model before this (its trainer calls it)
    type_names = [SYMBOL[z] for z in species]
    return NequIPGNNModel(
        seed=cfg["seed"],
        model_dtype=cfg["dtype"],
        type_names=type_names,
        r_max=cfg["cutoff"],
        num_layers=cfg["layers"],
        l_max=cfg["lmax"],
        parity=True,
        num_features=cfg["channels"],
        radial_mlp_depth=cfg["radial_layers"],
        radial_mlp_width=cfg["radial_hidden"],
        num_bessels=cfg["num_radial"],
        polynomial_cutoff_p=cfg["poly_p"],
        avg_num_neighbors=cfg["avg_num_neighbors"],
        per_type_energy_scales={t: cfg["energy_scale"] for t in type_names},
        per_type_energy_shifts={SYMBOL[z]: e0[z] for z in species},
    )


class Worker:
    def __init__(self, path: str) -> None:
        inputs = np.load(path)
        self.cfg = cfg = json.loads(str(inputs["config"]))
        torch.set_num_threads(cfg.get("threads", 1))
        torch.manual_seed(cfg["seed"])
        self.species = sorted(int(s) for s in inputs["e0_species"])
        e0 = {int(z): float(e) for z, e in zip(inputs["e0_species"], inputs["e0_energy"])}
        self.model = build_model(cfg, self.species, e0)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.type_of = {z: i for i, z in enumerate(self.species)}
        self.bench = self._batch(inputs["z"], inputs["pos"], inputs["batch"], inputs["energy"], inputs["forces"])
        self.epoch = epoch_batches(inputs, cfg.get("batch_size"), self._batch)
        self.base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def _batch(self, z, pos, batch, energy, forces) -> dict:
        batch = torch.tensor(batch, dtype=torch.long)
        num_graphs = int(batch.max()) + 1
        return {
            "atom_types": torch.tensor([self.type_of[int(s)] for s in z], dtype=torch.long),
            "pos": torch.tensor(pos, dtype=torch.float64),  # NequIP's data are float64
            "batch": batch,
            "num_atoms": torch.bincount(batch, minlength=num_graphs),
            "energy": torch.tensor(energy, dtype=torch.float64),
            "forces": torch.tensor(forces, dtype=torch.float64),
        }

    def _data(self, b: dict) -> dict:
        pos = b["pos"].clone()
        return {
            "pos": pos, "atom_types": b["atom_types"], "batch": b["batch"], "num_atoms": b["num_atoms"],
            "edge_index": radius_edges(pos, b["batch"], self.cfg["cutoff"]),
        }

    def train_step(self, b: dict) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(self._data(b))
        loss = energy_force_loss(out["total_energy"].reshape(-1), out["forces"], b["energy"], b["forces"], torch.float64)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def infer(self, b: dict) -> float:
        out = self.model(self._data(b))
        return float(out["total_energy"].detach().sum()) + float(out["forces"].detach().abs().sum())

    def info(self) -> dict:
        import e3nn
        import nequip

        m = self.model
        layers = [mod for name, mod in m.named_modules() if name.endswith("_convnet")]
        return {
            "model": "NequIP (NequIPGNNModel)", "params": sum(p.numel() for p in m.parameters()),
            "hidden_irreps": " | ".join(str(layer.irreps_out["node_features"]) for layer in layers),
            "num_edges": int(self._data(self.bench)["edge_index"].shape[1]),
            "torch": torch.__version__, "e3nn": e3nn.__version__,
            "nequip": getattr(nequip, "__version__", "?"), "python": platform.python_version(),
            "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_rss) / 1024,
        }


def main() -> None:
    warnings.filterwarnings("ignore")
    serve(Worker(sys.argv[1]))


if __name__ == "__main__":
    main()
