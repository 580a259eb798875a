"""``eqgeo-evaluate``: judge a trained checkpoint on data it never saw; writes ``metrics.json``.

    eqgeo-evaluate runs/.../checkpoints/best.ckpt ../shared/data/md17/botnet_ethanol/test_MD.xyz --energy-unit eV
    eqgeo-evaluate runs/.../checkpoints/best.ckpt md17:test             # the run's own energy/forces test split
    eqgeo-evaluate runs/.../checkpoints/best.ckpt qm9 --limit 5000      # wheel molecules the run never saw
    eqgeo-evaluate runs/.../checkpoints/best.ckpt qm9:test              # the run's own QM9 test split
    eqgeo-evaluate runs/.../checkpoints/best.ckpt path/to/complexes/    # docking, both tracks
    eqgeo-evaluate runs/.../checkpoints/best.ckpt docking:test          # the run's own docking test split

What the checkpoint's model predicts is read from its record (:mod:`eqgeo.inference.checkpoint`,
loaded with ``weights_only=True``): a property model takes QM9 (``qm9``, ``qm9:test`` or a folder
of QM9 files), a potential takes an extended-XYZ or ``.npz`` file of energies and forces (or ``md17:test``), a docking
model takes a folder of complex folders. Metrics are those of ``eqgeo-train``'s test stage, in the
same units (:mod:`eqgeo.inference.metrics`). Molecules or frames with an element the model was not
trained on are left out and listed under ``skipped`` (an error if that leaves nothing).

Evaluating on a data file or folder imports nothing from :mod:`eqgeo.training` (nor Lightning);
``qm9:test``, ``md17:test`` and ``docking:test`` rebuild the run's data module, which does (from the run's
``config.yaml``, or from the data settings an exported checkpoint carries).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch_geometric.loader import DataLoader

from .checkpoint import Checkpoint, read_checkpoint
from .metrics import ENERGY_UNITS, energy_errors, property_errors, property_prediction, regression_metrics

__all__ = ["evaluate", "main"]

_SHOWN_SKIPS = 20  # skipped inputs printed by eqgeo-evaluate (metrics.json lists them all)


def _elements(numbers) -> str:
    from ase.data import chemical_symbols

    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


def _untrained(dataset, species) -> list[tuple[int, tuple[int, ...]]]:
    """``(index, atomic numbers)`` of each item of ``dataset`` with elements outside ``species``."""
    from ..data import keys as K

    known = {int(z) for z in species}
    found = []
    for i, g in enumerate(dataset):
        missing = tuple(sorted(set(g[K.ATOMIC_NUMBER].tolist()) - known))
        if missing:
            found.append((i, missing))
    return found


def _keep_known(dataset, untrained, what: str, source: str, species):
    """``dataset`` without the items of ``untrained``; an error if that leaves nothing to evaluate."""
    if len(untrained) == len(dataset):
        elements = sorted({z for _, zs in untrained for z in zs})
        raise ValueError(f"{source}: every one of its {len(dataset)} {what} has elements the model was not trained on "
                         f"({_elements(elements)}; its species: {_elements(sorted(species))}): nothing to evaluate")
    if not untrained:
        return dataset
    skip = {i for i, _ in untrained}
    return dataset.index_select([i for i in range(len(dataset)) if i not in skip])


def _known_elements(dataset, species, source: str):
    """The molecules made of elements the model was trained on, and a report of the others (never dropped
    silently: a model cannot predict for an element it has no embedding of)."""
    untrained = _untrained(dataset, species)
    counts: dict[tuple[int, ...], int] = {}
    for _, missing in untrained:
        counts[missing] = counts.get(missing, 0) + 1
    known = sorted(int(z) for z in species)
    report = [{"source": source, "record": None, "reason": f"{n} molecules with elements {list(z)} the model was not trained on "
               f"(its species: {known})"} for z, n in sorted(counts.items())]
    return _keep_known(dataset, untrained, "molecules", source, species), report


def _known_frames(dataset, species, source: str):
    """The frames of an energy file made of elements the model was trained on, and one report entry per
    other frame (its index in the file and the elements), as for QM9 molecules above."""
    from ..data import keys as K

    untrained = _untrained(dataset, species)
    trained = _elements(sorted(int(z) for z in species))
    report = [{"source": source, "record": str(i),
               "reason": f"frame {i} ({dataset[i][K.NAME]}) has {_elements(z)}, not trained on (the model's species: {trained})"}
              for i, z in untrained]
    return _keep_known(dataset, untrained, "frames", source, species), report


def _run_config(checkpoint: Path) -> Optional[dict]:
    """The resolved config of the run a checkpoint belongs to (``<run>/config.yaml``), if it is there; for an
    exported checkpoint (``eqgeo-export``) away from its run, the data settings it carries (``{"data": ...}``)."""
    from .checkpoint import EXPORT_KEY, run_config

    config = run_config(checkpoint)
    if config is None:
        exported = torch.load(checkpoint, map_location="cpu", weights_only=True).get(EXPORT_KEY, {})
        return {"data": exported["data"]} if "data" in exported else None
    return config


def _qm9(data: str, checkpoint: Path, limit: Optional[int], seed: int):
    """QM9 molecules the run never saw (``qm9``), the run's own test split (``qm9:test``), or a folder."""
    from ..datasets import QM9

    config = _run_config(checkpoint)
    run_data = (config or {}).get("data", {})
    if data == "qm9:test":
        if config is None:
            raise FileNotFoundError(f"qm9:test needs the run's config.yaml next to {checkpoint.parent} to rebuild its split")
        from ..training.datamodules import QM9DataModule  # the run's own split: its data module rebuilds it

        dm = QM9DataModule(**{k: v for k, v in run_data.items() if k != "_target_"})
        dm.setup("test")
        return dm.splits["test"], "the run's QM9 test split"
    if data != "qm9":  # another QM9 folder: its molecules are the user's choice
        dataset = QM9(source=data, subset=limit, subset_seed=seed)
        return dataset, f"QM9 files under {data}{f', {limit} molecules drawn with seed {seed}' if limit else ''}"
    if config is None:
        raise FileNotFoundError(
            f"'qm9' evaluates on molecules the run never saw, which needs the run's config.yaml next to "
            f"{checkpoint.parent}; use qm9:test, or a QM9 folder of your own"
        )
    if run_data.get("source") is not None:  # the run trained on QM9 files of its own, not the wheel's molecules
        dataset = QM9(subset=limit, subset_seed=seed)
        return dataset, f"QM9 (qm9pack wheel{f', {limit} molecules drawn with seed {seed}' if limit else ''})"
    if run_data.get("subset") is None:
        raise ValueError("the run drew its splits from every QM9 molecule, so none is unseen: use qm9:test")
    # The run's molecules are the first `subset` of a permutation seeded by its seed; the rest never took part.
    full = QM9()
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(int(run_data["seed"])))
    unseen = perm[int(run_data["subset"]):]
    if limit is not None:
        unseen = unseen[torch.randperm(len(unseen), generator=torch.Generator().manual_seed(seed))[:limit]]
    return full.index_select(unseen.sort().values), (
        f"QM9 (qm9pack wheel): {len(unseen)} molecules outside the run's {run_data['subset']} (train, val and test)"
    )


def _docking_settings(checkpoint: Path, seed: Optional[int]) -> dict:
    """Pocket crop, tracks and seed of the run (its config.yaml), else the defaults."""
    from ..inference.docking import TRACK_A, TRACK_B

    run_data = (_run_config(checkpoint) or {}).get("data", {})
    return {
        "pocket_radius": float(run_data.get("pocket_radius", 10.0)),
        "pocket_shape": run_data.get("pocket_shape", "ligand"),
        "track_a": {**TRACK_A, **run_data.get("track_a", {})},
        "track_b": {**TRACK_B, **run_data.get("track_b", {})},
        "seed": int(run_data.get("seed", 0)) if seed is None else seed,
        "from_run_config": bool(run_data),
    }


@dataclass
class _Options:
    """What ``eqgeo-evaluate`` was asked, beside the checkpoint and the data."""

    energy_unit: Optional[str]
    limit: Optional[int]
    batch_size: int
    seed: Optional[int]
    device: torch.device


@dataclass
class _Evaluation:
    """What one kind of model gave on the data: metrics, a description of the data, its size and what
    was left out."""

    metrics: dict
    described: str
    size: int
    skipped: list


def _md17_test_split(checkpoint: Path):
    """The run's own energy-and-forces test split (``md17:test``), rebuilt by its data module from its config."""
    from ..training.datamodules import MD17DataModule  # the run's own split: its data module rebuilds it

    run_data = (_run_config(checkpoint) or {}).get("data")
    if run_data is None:
        raise FileNotFoundError(f"md17:test needs the run's config.yaml next to {checkpoint.parent} (or a checkpoint "
                                "eqgeo-export wrote, which carries the run's data settings)")
    dm = MD17DataModule(**{k: v for k, v in run_data.items() if k != "_target_"})
    dm.setup("test")
    return dm.splits["test"], f"the run's own test split ({dm.dataset}, {len(dm.splits['test'])} frames)"


def _evaluate_potential(checkpoint: Checkpoint, model, data: str, options: _Options) -> _Evaluation:
    """A potential on an extended-XYZ or ``.npz`` file of energies and forces, or the run's own test split
    (``md17:test``)."""
    from ..datasets import MD17

    if data == "md17:test":
        dataset, described = _md17_test_split(checkpoint.path)
    else:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"a potential is evaluated on an extended-XYZ or .npz file of energies and forces, "
                                    f"or md17:test (the run's own test split); {data} is not a file")
        if options.energy_unit is None and path.suffix != ".npz":
            raise ValueError(f"{path.name}: an XYZ file does not state its energy unit; pass --energy-unit (eV, kcal/mol, ...)")
        dataset = MD17(path, energy_unit=options.energy_unit)
        described = f"{path} (energy unit {options.energy_unit or 'kcal/mol'})"
    dataset, skipped = _known_frames(dataset, checkpoint.model["species"], data)
    metrics = regression_metrics(lambda batch: energy_errors(model(batch), batch),
                                 DataLoader(dataset, batch_size=options.batch_size), ENERGY_UNITS, options.device)
    return _Evaluation(metrics, described, len(dataset), skipped)


def _evaluate_property(checkpoint: Checkpoint, model, data: str, options: _Options) -> _Evaluation:
    """A property model on QM9 molecules: ``qm9`` (never seen by the run), ``qm9:test`` or a folder."""
    if not (data.startswith("qm9") or Path(data).exists()):
        raise FileNotFoundError(f"a property model is evaluated on 'qm9', 'qm9:test' or a folder of QM9 files; got {data}")
    dataset, described = _qm9(data, checkpoint.path, options.limit, 0 if options.seed is None else options.seed)
    dataset, skipped = _known_elements(dataset, checkpoint.model["species"], data)
    task = checkpoint.task
    targets, names = list(task["targets"]), list(task["target_names"])
    columns = [names.index(t) for t in targets]
    units = {t: task["target_units"][c] for t, c in zip(targets, columns)}
    dipole = bool(task.get("dipole", False))  # mu from the dipole head (task.dipole)

    def errors(batch):
        return property_errors(property_prediction(model(batch), targets, dipole), batch, columns, targets)

    with torch.no_grad():
        metrics = regression_metrics(errors, DataLoader(dataset, batch_size=options.batch_size), units, options.device)
    return _Evaluation(metrics, described, len(dataset), skipped)


def _evaluate_docking(checkpoint: Checkpoint, model, data: str, options: _Options) -> _Evaluation:
    """A docking model on both tracks, on a folder of complex folders or the run's own test split (``docking:test``)."""
    from .docking import benchmark_starts, evaluate_docking, metric_unit

    settings = _docking_settings(checkpoint.path, options.seed)
    if data == "docking:test":
        complexes, starts, skipped = _docking_test_split(checkpoint.path)
    else:
        from ..datasets.docking import load_docking_complexes

        if not Path(data).is_dir():
            raise FileNotFoundError(f"a docking checkpoint is evaluated on a folder of complex folders (or docking:test); "
                                    f"{data} is not a folder")
        complexes, report = load_docking_complexes(data, skip_invalid=True, pocket_radius=settings["pocket_radius"],
                                                   pocket_shape=settings["pocket_shape"])
        skipped = [e.to_dict() for e in report.errors]
        starts = benchmark_starts(complexes, settings["track_a"], settings["track_b"], settings["seed"])
    values = evaluate_docking(model, complexes, starts, steps=checkpoint.task["refine_steps"],
                              step_size=checkpoint.task["step_size"])
    metrics = {k: {"value": v, "unit": metric_unit(k)} for k, v in values.items()}
    return _Evaluation(metrics, f"complexes under {data} ({settings})", len(complexes), skipped)


def _docking_test_split(checkpoint: Path):
    """The run's own docking test split, its starts and what its data module left out (from its config.yaml)."""
    from ..training.docking import DockingDataModule  # the run's own split: its data module rebuilds it

    run_data = (_run_config(checkpoint) or {}).get("data")
    if run_data is None:
        raise FileNotFoundError(f"docking:test needs the run's config.yaml next to {checkpoint.parent}")
    dm = DockingDataModule(**{k: v for k, v in run_data.items() if k != "_target_"})
    dm.setup("test")
    return dm.complexes["test"], dm.starts, [e.to_dict() for e in dm.report.errors]


#: How each kind of model (the checkpoint record's ``kind``) is evaluated.
_EVALUATORS: dict[str, Callable[..., _Evaluation]] = {
    "property": _evaluate_property,
    "energy": _evaluate_potential,
    "docking": _evaluate_docking,
}


def evaluate(
    checkpoint: str | Path,
    data: str,
    output: str | Path,
    *,
    energy_unit: Optional[str] = None,
    limit: Optional[int] = None,
    batch_size: int = 16,
    seed: Optional[int] = None,
    device: str = "cpu",
) -> dict:
    """Evaluate ``checkpoint`` on ``data`` and write ``output/metrics.json``; returns its contents."""
    start = time.time()
    recorded = read_checkpoint(checkpoint)
    model = recorded.build_model(device=device)
    options = _Options(energy_unit, limit, batch_size, seed, torch.device(device))
    done = _EVALUATORS[recorded.kind](recorded, model, data, options)
    result = {
        "checkpoint": str(recorded.path.resolve()),
        "task": recorded.task["_target_"].rsplit(".", 1)[-1],
        "model": {"class": recorded.model["_target_"], "parameters": sum(p.numel() for p in model.parameters())},
        "data": {"path": data, "description": done.described, "size": done.size},
        "wall_time_s": round(time.time() - start, 1),
        "test": dict(sorted(done.metrics.items())),
        "skipped": done.skipped,
    }
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point ``eqgeo-evaluate``."""
    parser = argparse.ArgumentParser(prog="eqgeo-evaluate", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s CHECKPOINT DATA [options]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by eqgeo-train (checkpoints/best.ckpt)")
    parser.add_argument("data", metavar="DATA",
                        help="qm9 | qm9:test | QM9 folder | .xyz/.npz file | folder of complex folders | docking:test")
    parser.add_argument("--output", default=None, help="folder for metrics.json (default: eval-<data name>)")
    parser.add_argument("--energy-unit", default=None, help="energy unit of an XYZ file (eV, kcal/mol, ...)")
    parser.add_argument("--limit", type=int, default=None, help="QM9: evaluate this many molecules (seeded draw)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None,
                        help="QM9 draw (default 0); docking starts (default: the run's seed)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():  # eqgeo-evaluate's own usage, not the hint of eqgeo-train (ckpt_path=)
        parser.print_usage(sys.stderr)
        print(f"eqgeo-evaluate: error: CHECKPOINT {args.checkpoint} does not exist; give a checkpoint eqgeo-train wrote "
              "(<run dir>/checkpoints/best.ckpt)", file=sys.stderr)
        return 2
    name = Path(args.data.rstrip("/")).stem.replace(":", "-") or "data"
    output = Path(args.output) if args.output else Path(f"eval-{name}")
    try:
        result = evaluate(args.checkpoint, args.data, output, energy_unit=args.energy_unit, limit=args.limit,
                          batch_size=args.batch_size, seed=args.seed, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"eqgeo-evaluate: error: {error}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{k} {v['value']:.4g} {v['unit']}" for k, v in result["test"].items()
                      if k.endswith(("_mae", "_success", "median_rmsd")))
    print(f"{result['task']} on {result['data']['size']} items of {result['data']['description']}: {shown}")
    if result["skipped"]:
        print(f"skipped ({len(result['skipped'])}, listed in metrics.json):")
        for entry in result["skipped"][:_SHOWN_SKIPS]:
            print(f"  {entry['source']}{'' if entry['record'] is None else ' [' + entry['record'] + ']'}: {entry['reason']}")
        if len(result["skipped"]) > _SHOWN_SKIPS:
            print(f"  ... and {len(result['skipped']) - _SHOWN_SKIPS} more")
    print(f"metrics: {(output / 'metrics.json').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
