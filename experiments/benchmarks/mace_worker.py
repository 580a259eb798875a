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


def radius_edges(pos: torch.Tensor, batch: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``(2, E)`` edges ``[sender, receiver]``: all ordered pairs of distinct atoms of the same graph within ``cutoff``."""
    with torch.no_grad():
        d = torch.cdist(pos, pos)
        mask = (d < cutoff) & (batch[:, None] == batch[None, :])
        mask.fill_diagonal_(False)
        return mask.nonzero().t().contiguous()


def build_model(cfg: dict, e0: dict[int, float], species: list[int], scale: float):
    from mace import modules  # first: mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn 0.4.4's import needs
    from e3nn import o3

    lmax = cfg["lmax"]
    hidden = "+".join(f"{cfg['channels']}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
    return modules.ScaleShiftMACE(
        r_max=cfg["cutoff"],
        num_bessel=cfg["num_radial"],
        num_polynomial_cutoff=cfg["poly_p"],
        max_ell=lmax,
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


def setup(path: str):
    """The model, optimizer and a ``step()`` that runs one training step and returns its loss."""
    inputs = np.load(path)
    cfg = json.loads(str(inputs["config"]))
    torch.set_num_threads(cfg["threads"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
    torch.set_default_dtype(dtype)
    torch.manual_seed(cfg["seed"])

    species = sorted(int(s) for s in np.unique(inputs["z"]))
    e0 = {int(z): float(e) for z, e in zip(inputs["e0_species"], inputs["e0_energy"])}
    forces_ref = torch.tensor(inputs["forces"], dtype=dtype)
    scale = float(forces_ref.pow(2).mean().sqrt())  # MACE's default scale: RMS of the force components
    model, hidden = build_model(cfg, e0, species, scale)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])

    z = torch.tensor(inputs["z"], dtype=torch.long)
    batch = torch.tensor(inputs["batch"], dtype=torch.long)
    pos0 = torch.tensor(inputs["pos"], dtype=dtype)
    num_graphs = int(batch.max()) + 1
    index = {s: i for i, s in enumerate(species)}
    node_attrs = torch.nn.functional.one_hot(torch.tensor([index[int(s)] for s in z]), len(species)).to(dtype)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(batch, minlength=num_graphs).cumsum(0)])
    energy_ref = torch.tensor(inputs["energy"], dtype=torch.float64)
    cell = torch.zeros(num_graphs, 3, 3, dtype=dtype)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        pos = pos0.clone()
        edge_index = radius_edges(pos, batch, cfg["cutoff"])
        shifts = torch.zeros(edge_index.shape[1], 3, dtype=dtype)
        data = {
            "positions": pos, "node_attrs": node_attrs, "edge_index": edge_index, "shifts": shifts,
            "unit_shifts": shifts, "cell": cell, "batch": batch, "ptr": ptr,
        }
        out = model(data, training=True, compute_force=True)
        e_loss = (out["energy"].to(torch.float64) - energy_ref).pow(2).mean()
        f_loss = (out["forces"] - forces_ref).pow(2).mean()
        loss = e_loss.to(dtype) + f_loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    import e3nn
    import mace

    info = {
        "model": "MACE (ScaleShiftMACE)", "params": sum(p.numel() for p in model.parameters()),
        "hidden_irreps": hidden, "correlation": cfg["correlation"],
        "num_edges": int(radius_edges(pos0, batch, cfg["cutoff"]).shape[1]),
        "num_atoms": int(z.numel()), "num_graphs": num_graphs,
        "torch": torch.__version__, "e3nn": e3nn.__version__, "mace": getattr(mace, "__version__", "?"),
        "python": platform.python_version(), "threads": torch.get_num_threads(),
    }
    return step, cfg, info


def timed(step) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = step()
    return (time.perf_counter() - t0) * 1e3, loss


def main() -> None:
    warnings.filterwarnings("ignore")
    step, cfg, info = setup(sys.argv[1])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if "--serve" in sys.argv:
        # Driven one step at a time by bench_training_step.py, which alternates these steps
        # with eqgeo's so that both see the same load: "step" -> {"ms", "loss"}, "done" -> summary.
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if line.strip() == "step":
                ms, loss = timed(step)
                print(json.dumps({"ms": ms, "loss": loss}), flush=True)
            elif line.strip() == "done":
                break
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({**info, "peak_mb": peak / 1024}), flush=True)
        return
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
