"""NequIP on rMD17 ethanol or 3BPA with its own training CLI, for the equal-budget comparison beside eqgeo.

    python experiments/md/peer_nequip_rmd17.py --epochs 60 --out runs/peers_rmd17/nequip [--threads 2] [--dataset 3bpa]

NequIP 0.19.1 runs in its own virtual environment (``experiments/peers/setup.sh nequip`` makes
``.venvs/nequip``; nothing of it is imported here, nor by eqgeo): ``nequip-train`` (NequIP's
Hydra/Lightning framework) trains on ``train.xyz`` of the BOTNet rMD17 ethanol split and, in the
same run (``run: [train, test]``), predicts all 1000 frames of ``test_MD.xyz`` with the best
checkpoint (lowest validation ``weighted_sum``, with its EMA weights, as NequIP tests after
training) through NequIP's ``TestTimeXYZFileWriter``. This script then writes the run's
``metrics.json`` in eqgeo-train's format (test MAE and RMSE of energies, energies per atom and
forces over all components, in meV and meV/Å; parameters; epochs; wall time of ``nequip-train``,
its test included, as eqgeo-train's includes its test), so that ``eqgeo-leaderboard`` tables it
beside eqgeo's and MACE's runs.

Split: the 50 validation frames are those MACE's ``--valid_fraction=0.05`` draws with the same
``--seed`` (``peer_mace_rmd17.peer_data``; MACE writes them to ``*_valid_indices_<seed>.txt``), the other
950 train: the same frames as the MACE run. They are copied verbatim into ``<out>/data/``. With
``--dataset 3bpa``, eqgeo's 3BPA split (400 / 50 / 50 of ``train_300K.xyz``, as the MACE run) and the
isolated-atom energies of ``iso_atoms.xyz``.

Model: the one ``experiments/benchmarks/nequip_worker.py`` times, ``nequip.model.NequIPGNNModel``
with 3 layers, ``l_max`` 1, ``--channels`` (32) features of both parities, r_max 5 Å, 8 Bessel
functions, polynomial envelope p = 6, radial MLP of 2 layers of 64, float32 (``model_dtype`` is a
required setting of NequIP models, no default; its data stay float64), eager mode (NequIP's
default ``compile_mode``; ``compile`` is its GPU advice), no ZBL pair term (the tutorial adds one;
eqgeo's and MACE's models have none), ``avg_num_neighbors`` from NequIP's training-set statistics.
Per-type energy shifts: the isolated-atom energies of ``isolated_atoms.xyz`` (the tutorial's advice
for ``per_type_energy_shifts``, and the E0s of eqgeo's and MACE's runs); per-type energy scales:
NequIP's ``per_type_forces_rms`` training statistic (the tutorial's; the worker uses one forces RMS
for all types); neither trainable (NequIP's default).

Recipe: NequIP's tutorial config (``configs/tutorial.yaml``): ``EMALightningModule`` with EMA decay
0.999; loss ``EnergyForceLoss`` with per-atom energy MSE and force MSE, weights 1 and 1; Adam,
lr 0.01; batches of 5 (validation and test: 10); ``ReduceLROnPlateau`` (factor 0.6, patience 5,
threshold 0.2, min_lr 1e-6) on the validation ``weighted_sum`` (energy MAE + force MAE, weights
1 and 1), every epoch. Left out of it: ``EarlyStopping`` (every run trains its ``--epochs``, as
the MACE run), the wandb logger (a CSV logger instead), training-set metrics (monitoring only),
and data-loader workers (0 instead of 5: two cores). Only the budget (``--epochs``) and the
threads (``--threads``: ``OMP_NUM_THREADS``, which sets torch's threads) change between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# the sibling MACE script's helpers (this folder is sys.path[0] when the script is run)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_mace_rmd17 import REPO, PeerData, peer_data, peer_parser
from peer_mace_rmd17 import _errors as mace_errors

NEQUIP_BIN = REPO / ".venvs" / "nequip" / "bin"
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O"}
MONITOR = "val0_epoch/weighted_sum"


def nequip_config(args, data: PeerData, out: Path) -> dict:
    """The ``nequip-train`` config of the recipe (module docstring)."""
    from ase.io import read

    from eqgeo.datasets import read_isolated_atoms

    # ethanol H, C, O (type order as nequip_worker.py), 3BPA H, C, N, O
    species = sorted({int(z) for atoms in read(data.train, ":") for z in atoms.numbers})
    names = [SYMBOLS[z] for z in species]
    e0 = read_isolated_atoms(data.isolated_atoms, "eV")
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": 5, "num_workers": 0, "shuffle": True}
    eval_loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": 10, "num_workers": 0}
    metrics = {"_target_": "nequip.train.EnergyForceMetrics", "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0}}
    return {
        "run": ["train", "test"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": args.seed,
            "train_file_path": str(data.train),
            "val_file_path": str(data.val),
            "test_file_path": str(data.test),
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": names,
                 "chemical_species_to_atom_type_map": {n: n for n in names}},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": 5.0},
            ],
            "train_dataloader": loader,
            "val_dataloader": eval_loader,
            "test_dataloader": eval_loader,
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": names,
                              "dataloader_kwargs": {"batch_size": 10}},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": args.epochs,
            "check_val_every_n_epoch": 1,
            "log_every_n_steps": 50,
            "enable_progress_bar": False,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(out), "name": "logs"},
            "callbacks": [
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": MONITOR, "dirpath": str(out),
                 "filename": "best", "save_last": True},
                {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor", "logging_interval": "epoch"},
                {"_target_": "nequip.train.callbacks.TestTimeXYZFileWriter", "out_file": str(out / "test"),
                 "output_fields_from_original_dataset": ["total_energy", "forces"], "chemical_symbols": names},
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": 0.999,
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                     "coeffs": {"total_energy": 1.0, "forces": 1.0}},
            "val_metrics": metrics,
            "test_metrics": metrics,
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "factor": 0.6, "patience": 5,
                              "threshold": 0.2, "min_lr": 1e-6},
                "monitor": MONITOR, "interval": "epoch", "frequency": 1,
            },
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": args.seed,
                "model_dtype": "float32",
                "type_names": names,
                "r_max": 5.0,
                "num_bessels": 8,
                "bessel_trainable": False,
                "polynomial_cutoff_p": 6,
                "num_layers": 3,
                "l_max": 1,
                "parity": True,
                "num_features": args.channels,
                "radial_mlp_depth": 2,
                "radial_mlp_width": 64,
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_scales": "${training_data_stats:per_type_forces_rms}",
                "per_type_energy_shifts": {SYMBOLS[z]: e0[z] for z in species},
                "per_type_energy_scales_trainable": False,
                "per_type_energy_shifts_trainable": False,
            },
        },
        "global_options": {"allow_tf32": False},
    }


def _same_frame(predicted, reference) -> bool:
    """NequIP's test loader keeps the file's order: each predicted frame must be the reference frame at its place."""
    return bool(np.allclose(predicted.positions, reference.positions, atol=1e-6)
                and abs(predicted.info["original_dataset_energy"] - reference.get_potential_energy()) < 1e-6)


def _errors(predicted: Path, reference: Path) -> dict[str, dict]:
    """Test MAE/RMSE of NequIP's test predictions (its writer stores them as the frames' energy and forces)."""
    return mace_errors(predicted, reference, energy_of=lambda atoms: atoms.get_potential_energy(),
                       forces_of=lambda atoms: atoms.get_forces(), same_frame=_same_frame)


# run in NequIP's interpreter: the tested model (best.ckpt, EMA weights) rebuilt by NequIP's own loader
_COUNT = """
import json, sys, warnings, torch, nequip
warnings.filterwarnings("ignore")
from nequip.utils.global_state import set_global_state
from nequip.model import ModelFromCheckpoint
set_global_state()
model = ModelFromCheckpoint(sys.argv[1])
last = torch.load(sys.argv[2], map_location="cpu", weights_only=False)
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "version": nequip.__version__,
                  "epochs": int(last["epoch"])}))
"""


def main(argv=None) -> int:
    parser = peer_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # nequip-train runs inside it
    if not (NEQUIP_BIN / "nequip-train").exists():
        parser.error(f"{NEQUIP_BIN / 'nequip-train'} is missing: run experiments/peers/setup.sh nequip")
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "metrics.json").exists():
        parser.error(f"{args.out} already holds a run (metrics.json)")
    # the test writer appends and the checkpoints would be renamed (best-v1.ckpt): start from a clean folder
    stale = [p.name for p in (args.out / "best.ckpt", args.out / "last.ckpt", args.out / "test_dataset0.xyz") if p.exists()]
    if stale:
        parser.error(f"{args.out} holds files of an earlier NequIP run ({', '.join(stale)}): remove them or pick another --out")
    import yaml

    class Dumper(yaml.SafeDumper):  # every value written out, no YAML anchors for the shared lists and dicts
        def ignore_aliases(self, data):
            return True

    try:
        data = peer_data(args.dataset, args.out / "data", args.seed)
    except FileNotFoundError as err:
        parser.error(f"{err.filename} is missing: set EQGEO_SHARED_DATA to the shared data folder")
    config = nequip_config(args, data, args.out)
    (args.out / "config.yaml").write_text(yaml.dump(config, Dumper=Dumper, sort_keys=False, allow_unicode=True))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.time()
    with open(args.out / "nequip-train.out", "w") as log:
        subprocess.run([str(NEQUIP_BIN / "nequip-train"), "-cp", str(args.out), "-cn", "config",
                        f"hydra.run.dir={args.out}"], check=True, env=env, stdout=log, stderr=subprocess.STDOUT,
                       cwd=args.out)
    wall = time.time() - start
    count = subprocess.run([str(NEQUIP_BIN / "python"), "-c", _COUNT, str(args.out / "best.ckpt"),
                            str(args.out / "last.ckpt")], check=True, capture_output=True, text=True, env=env)
    info = json.loads(count.stdout.strip().splitlines()[-1])
    metrics = {
        "task": "NequIP (nequip-train)",
        "data": data.record,
        "model": {"class": f"NequIP {info['version']}, {args.channels} features, l_max 1, both parities, 3 layers",
                  "parameters": int(info["parameters"])},
        "epochs": args.epochs,
        "wall_time_s": round(wall, 1),
        "threads": args.threads,
        "test": _errors(args.out / "test_dataset0.xyz", data.test),
    }
    if info["epochs"] + 1 != args.epochs:  # Lightning's epoch counter in the last checkpoint is 0-based
        print(f"warning: last.ckpt is from epoch {info['epochs'] + 1}, not {args.epochs}", file=sys.stderr)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics["test"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
