"""MACE on rMD17 ethanol with its own training CLI, for the equal-budget comparison beside eqgeo.

    python experiments/md/peer_mace_rmd17.py --epochs 60 --out runs/peers_rmd17/mace [--threads 2]

MACE 0.3.16 runs in its own virtual environment (``experiments/peers/setup.sh mace`` makes
``.venvs/mace``): ``mace_run_train`` trains on ``train.xyz`` of the BOTNet rMD17 ethanol split
(5 % of its 1000 frames, 50, for validation, as eqgeo's 950 / 50), ``mace_eval_configs`` predicts
all 1000 frames of ``test_MD.xyz``, and this script writes the run's ``metrics.json`` in
eqgeo-train's format (test MAE and RMSE of energies, energies per atom and forces, in meV and
meV/Å; epochs; wall time of the training), so that ``eqgeo-leaderboard`` tables it beside eqgeo's
runs.

The recipe is MACE's rMD17 one (Batatia et al. 2022: 2 interaction layers, correlation 3, edge
harmonics up to l = 3, r = 5 Å, batch 5, lr 0.01 with AMSGrad, energy/forces weights 1/1000, a
second stage from 3/4 of the epochs with weights 1000/100, EMA 0.99), scaled to eqgeo's size:
``--channels 32`` and hidden irreps ``32x0e+32x1o`` instead of 256 channels; isolated-atom
energies (E0s) from ``isolated_atoms.xyz`` and MACE's scale and shift of the interaction energy
(``ScaleShiftMACE``: the mean interaction energy per atom and the RMS force), as eqgeo's recipe
uses them; plain ``MACE`` has no shift and was still 3.8 eV/atom off after an epoch. float32,
like eqgeo's runs. Only the budget (``--epochs``) and the threads (``--threads``) change between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MACE_BIN = REPO / ".venvs" / "mace" / "bin"


def _data_dir() -> Path:
    return (Path(os.environ.get("EQGEO_SHARED_DATA", REPO.parent / "shared" / "data")) / "md17" / "botnet_ethanol").resolve()


def mace_command(args, data: Path, out: Path) -> list[str]:
    """The ``mace_run_train`` command of the recipe (module docstring)."""
    from eqgeo.datasets import read_isolated_atoms

    from ase.io import read

    # the energies eqgeo's recipe uses, of the elements of the training frames (MACE's table is theirs)
    elements = {int(z) for z in read(data / "train.xyz", 0).numbers}
    e0s = {z: e for z, e in read_isolated_atoms(data / "isolated_atoms.xyz", "eV").items() if z in elements}
    return [
        str(MACE_BIN / "mace_run_train"), "--name=mace_rmd17", f"--seed={args.seed}", "--device=cpu",
        "--default_dtype=float32", f"--train_file={data / 'train.xyz'}", "--valid_fraction=0.05",
        f"--E0s={e0s}", "--energy_key=energy", "--forces_key=forces", "--model=ScaleShiftMACE",
        "--num_interactions=2", f"--num_channels={args.channels}", f"--hidden_irreps={args.channels}x0e+{args.channels}x1o",
        "--max_ell=3", "--correlation=3", "--r_max=5.0", "--batch_size=5", "--valid_batch_size=5", "--lr=0.01",
        "--amsgrad", "--energy_weight=1.0", "--forces_weight=1000.0", "--swa", f"--start_swa={max(1, args.epochs * 3 // 4)}",
        "--swa_energy_weight=1000.0", "--swa_forces_weight=100.0", "--ema", "--ema_decay=0.99",
        f"--max_num_epochs={args.epochs}", f"--patience={10 * args.epochs}", "--eval_interval=1",
        f"--model_dir={out}", f"--log_dir={out / 'logs'}", f"--checkpoints_dir={out / 'checkpoints'}",
        f"--results_dir={out / 'results'}",
    ]


def _errors(predicted: Path, reference: Path, energy_of=lambda atoms: atoms.info["MACE_energy"],
            forces_of=lambda atoms: atoms.arrays["MACE_forces"], same_frame=None) -> dict[str, dict]:
    """Test MAE/RMSE (meV, meV/atom, meV/Å, as ``eqgeo.inference.metrics``) of a peer's predictions, the
    frames of the xyz file ``predicted`` read by ``energy_of`` and ``forces_of`` (default: the keys that
    ``mace_eval_configs`` writes), against the reference file; ``same_frame(p, r)``, when given, checks that
    each predicted frame is the reference frame at its place."""
    from ase.io import read

    pred, ref = read(predicted, ":"), read(reference, ":")
    if len(pred) != len(ref):
        raise ValueError(f"{predicted}: {len(pred)} frames predicted for the {len(ref)} of {reference}")
    for k, (p, r) in enumerate(zip(pred, ref)):
        if same_frame is not None and not same_frame(p, r):
            raise ValueError(f"{predicted}: frame {k} is not frame {k} of {reference}")
    de = np.array([energy_of(p) - r.get_potential_energy() for p, r in zip(pred, ref)])
    n = np.array([len(r) for r in ref])
    df = np.concatenate([(forces_of(p) - r.get_forces()).ravel() for p, r in zip(pred, ref)])
    out = {}
    for name, err, unit in (("energy", de, "meV"), ("energy_per_atom", de / n, "meV/atom"), ("forces", df, "meV/Å")):
        out[f"{name}_mae"] = {"value": float(np.abs(err).mean() * 1000.0), "unit": unit}
        out[f"{name}_rmse"] = {"value": float(np.sqrt((err**2).mean()) * 1000.0), "unit": unit}
    return out


def peer_parser(description: str) -> argparse.ArgumentParser:
    """The command line every peer driver takes (this one and ``peer_nequip_rmd17.py``): only the budget
    (``--epochs``) and the threads change between runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="run folder (created; must not hold a run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    parser = peer_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # mace_run_train runs inside it
    if not (MACE_BIN / "mace_run_train").exists():
        parser.error(f"{MACE_BIN / 'mace_run_train'} is missing: run experiments/peers/setup.sh mace")
    data = _data_dir()
    if not (data / "train.xyz").is_file():
        parser.error(f"{data / 'train.xyz'} is missing: set EQGEO_SHARED_DATA to the shared data folder")
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "metrics.json").exists():
        parser.error(f"{args.out} already holds a run (metrics.json)")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.time()
    with open(args.out / "train.log", "w") as log:
        subprocess.run(mace_command(args, data, args.out), check=True, env=env, stdout=log, stderr=subprocess.STDOUT,
                       cwd=args.out)
    wall = time.time() - start
    # the model after the second stage (MACE writes it when --swa ran), else the stage-one one
    model = next(m for m in (args.out / "mace_rmd17_stagetwo.model", args.out / "mace_rmd17.model") if m.exists())
    predicted = args.out / "test_predictions.xyz"
    subprocess.run([str(MACE_BIN / "mace_eval_configs"), f"--configs={data / 'test_MD.xyz'}", f"--model={model}",
                    f"--output={predicted}", "--device=cpu", "--default_dtype=float32"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    # MACE saves its whole module (pickled): counted in MACE's own environment, the file MACE itself wrote
    count = subprocess.run([str(MACE_BIN / "python"), "-c", "import sys, torch; m = torch.load(sys.argv[1], "
                            "weights_only=False, map_location='cpu'); print(sum(p.numel() for p in m.parameters()))",
                            str(model)], check=True, capture_output=True, text=True, env=env)
    metrics = {
        "task": "MACE (mace_run_train)",
        "data": {"train": 950, "val": 50, "test": 1000, "dataset": "rMD17 ethanol", "source": "BOTNet split",
                 "origin": "botnet_ethanol/train.xyz"},
        "model": {"class": f"MACE 0.3.16, {args.channels}x0e+{args.channels}x1o, 2 layers",
                  "parameters": int(count.stdout.split()[-1])},
        "epochs": args.epochs,
        "wall_time_s": round(wall, 1),
        "threads": args.threads,
        "test": _errors(predicted, data / "test_MD.xyz"),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics["test"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
