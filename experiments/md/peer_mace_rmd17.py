"""MACE on rMD17 ethanol or 3BPA with its own training CLI, for the equal-budget comparison beside eqgeo.

    python experiments/md/peer_mace_rmd17.py --epochs 60 --out runs/peers_rmd17/mace [--threads 2] [--dataset 3bpa]

MACE 0.3.16 runs in its own virtual environment (``experiments/peers/setup.sh mace`` makes
``.venvs/mace``): ``mace_run_train`` trains on ``train.xyz`` of the BOTNet rMD17 ethanol split
(5 % of its 1000 frames, 50, for validation, as eqgeo's 950 / 50: the frames MACE's ``--valid_fraction=0.05``
draws, written out by :func:`peer_data`), ``mace_eval_configs`` predicts
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

``--dataset 3bpa``: the same recipe on eqgeo's 3BPA split (``conf/data/3bpa.yaml``: of the 500 frames of
``train_300K.xyz``, 50 test frames held out with the seed, 400 train and 50 validation from the rest), the
frames written verbatim to ``<out>/data/`` by :func:`peer_data` (``eqgeo.datasets.held_out_split``), and
the E0s of ``iso_atoms.xyz``.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    """The shared MD17-style data folder (``EQGEO_SHARED_DATA``, default ``../shared/data``, its ``md17``)."""
    return (Path(os.environ.get("EQGEO_SHARED_DATA", REPO.parent / "shared" / "data")) / "md17").resolve()


@dataclasses.dataclass(frozen=True)
class PeerData:
    """The frames a peer trains, validates and tests on (extended XYZ files), and what its metrics.json says."""

    name: str  # the leaderboard's dataset name, as eqgeo's data config names it
    train: Path
    val: Path
    test: Path
    isolated_atoms: Path
    record: dict  # metrics.json "data"


def _frames(path: Path) -> list[list[str]]:
    """The frames of an extended XYZ file, each as its own lines (count, comment, atoms), verbatim."""
    lines = path.read_text().splitlines(keepends=True)
    frames, i = [], 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i])
        frames.append(lines[i:i + n + 2])
        i += n + 2
    return frames


def _write_frames(frames: list[list[str]], parts: dict[str, list[int]], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.xyz" for name in parts}
    for name, part in parts.items():
        paths[name].write_text("".join(line for i in part for line in frames[i]))
    return paths


def peer_data(dataset: str, out: Path, seed: int) -> PeerData:
    """The split of ``dataset`` written to ``out`` (the frames verbatim; the test file of rMD17 is used in place).

    ``rmd17_ethanol``: 50 validation frames of ``train.xyz`` as MACE's ``--valid_fraction=0.05`` draws them for
    ``seed`` (MACE's ``random_train_valid_split``), the other 950 train, and all 1000 of ``test_MD.xyz``.
    ``3bpa``: eqgeo's split of ``train_300K.xyz`` (``eqgeo.datasets.held_out_split``, as
    ``experiment=3bpa`` with the same seed draws it): 400 train, 50 validation, 50 test.
    """
    root = _data_dir()
    if dataset == "rmd17_ethanol":
        data = root / "botnet_ethanol"
        frames = _frames(data / "train.xyz")
        indices = list(range(len(frames)))
        np.random.default_rng(seed).shuffle(indices)
        n_train = min(len(frames) - int(0.05 * len(frames)), len(frames) - 1)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"valid_indices_{seed}.txt").write_text("".join(f"{i}\n" for i in indices[n_train:]))
        paths = _write_frames(frames, {"train": sorted(indices[:n_train]), "val": indices[n_train:]}, out)
        test = data / "test_MD.xyz"
        record = {"train": n_train, "val": len(frames) - n_train, "test": len(_frames(test)),
                  "dataset": "rMD17 ethanol", "source": "BOTNet split", "origin": "botnet_ethanol/train.xyz"}
        return PeerData("rMD17 ethanol", paths["train"], paths["val"], test, data / "isolated_atoms.xyz", record)
    if dataset == "3bpa":
        from eqgeo.datasets import held_out_split

        data = root / "botnet_3bpa"
        frames = _frames(data / "train_300K.xyz")
        split = held_out_split(len(frames), 400, 50, 50, seed)
        paths = _write_frames(frames, {k: v.tolist() for k, v in split.items()}, out)
        record = {"train": 400, "val": 50, "test": 50, "dataset": "3BPA 300 K", "source": "BOTNet 3BPA",
                  "origin": "botnet_3bpa/train_300K.xyz", "split": "eqgeo.datasets.held_out_split(500, 400, 50, 50, seed)",
                  "seed": seed}
        return PeerData("3BPA 300 K", paths["train"], paths["val"], paths["test"], data / "iso_atoms.xyz", record)
    raise ValueError(f"unknown dataset {dataset!r}: one of {DATASETS}")


DATASETS = ("rmd17_ethanol", "3bpa")


def mace_command(args, data: PeerData, out: Path) -> list[str]:
    """The ``mace_run_train`` command of the recipe (module docstring)."""
    from ase.io import read

    from eqgeo.datasets import read_isolated_atoms

    # the energies eqgeo's recipe uses, of the elements of the training frames (MACE's table is theirs)
    elements = {int(z) for atoms in read(data.train, ":") for z in atoms.numbers}
    e0s = {z: e for z, e in read_isolated_atoms(data.isolated_atoms, "eV").items() if z in elements}
    return [
        str(MACE_BIN / "mace_run_train"), "--name=mace_rmd17", f"--seed={args.seed}", "--device=cpu",
        "--default_dtype=float32", f"--train_file={data.train}", f"--valid_file={data.val}",
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
    parser.add_argument("--dataset", choices=DATASETS, default="rmd17_ethanol",
                        help="rMD17 ethanol (BOTNet split) or 3BPA (eqgeo's split of train_300K.xyz); default rmd17_ethanol")
    return parser


def main(argv=None) -> int:
    parser = peer_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # mace_run_train runs inside it
    if not (MACE_BIN / "mace_run_train").exists():
        parser.error(f"{MACE_BIN / 'mace_run_train'} is missing: run experiments/peers/setup.sh mace")
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "metrics.json").exists():
        parser.error(f"{args.out} already holds a run (metrics.json)")
    try:
        data = peer_data(args.dataset, args.out / "data", args.seed)
    except FileNotFoundError as err:
        parser.error(f"{err.filename} is missing: set EQGEO_SHARED_DATA to the shared data folder")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.time()
    with open(args.out / "train.log", "w") as log:
        subprocess.run(mace_command(args, data, args.out), check=True, env=env, stdout=log, stderr=subprocess.STDOUT,
                       cwd=args.out)
    wall = time.time() - start
    # the model after the second stage (MACE writes it when --swa ran), else the stage-one one
    model = next(m for m in (args.out / "mace_rmd17_stagetwo.model", args.out / "mace_rmd17.model") if m.exists())
    predicted = args.out / "test_predictions.xyz"
    subprocess.run([str(MACE_BIN / "mace_eval_configs"), f"--configs={data.test}", f"--model={model}",
                    f"--output={predicted}", "--device=cpu", "--default_dtype=float32"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    # MACE saves its whole module (pickled): counted in MACE's own environment, the file MACE itself wrote
    count = subprocess.run([str(MACE_BIN / "python"), "-c", "import sys, torch; m = torch.load(sys.argv[1], "
                            "weights_only=False, map_location='cpu'); print(sum(p.numel() for p in m.parameters()))",
                            str(model)], check=True, capture_output=True, text=True, env=env)
    metrics = {
        "task": "MACE (mace_run_train)",
        "data": data.record,
        "model": {"class": f"MACE 0.3.16, {args.channels}x0e+{args.channels}x1o, 2 layers",
                  "parameters": int(count.stdout.split()[-1])},
        "epochs": args.epochs,
        "wall_time_s": round(wall, 1),
        "threads": args.threads,
        "test": _errors(predicted, data.test),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics["test"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
