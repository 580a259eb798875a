"""eqgeo checkpoints: what built them, and the one place that reads and validates them.

``eqgeo-train`` writes Lightning checkpoints. Beside Lightning's own entries (``state_dict``,
``hyper_parameters``, ``loops``, ...), each one holds a **record** under :data:`RECORD_KEY`:

.. code-block:: python

    {"format": 1,
     "kind": "energy",                                   # property, energy or docking
     "task": {"_target_": "eqgeo.training.tasks.EnergyForcesTask", ...its arguments},
     "model": {"_target_": "eqgeo.models.InteratomicPotential", ...its arguments}}

The model's arguments are all it was built with, training-data statistics such as ``species`` and
``avg_num_neighbors`` included. So :func:`load_model` rebuilds the network with
``hydra.utils.instantiate`` from its ``_target_``, with no guess and no lookup by name, and loads its
weights. Every file is read with ``torch.load(..., weights_only=True)``, so no pickled code runs.

Checkpoints written before the record existed (format 0: eqgeo up to commit f8d3b6f) get one
when they are read. It is rebuilt from their hyperparameters by :func:`_record_of_format_0`, the
only place that knows how those were laid out.

This module imports nothing from :mod:`eqgeo.training` and does not import Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

__all__ = [
    "RECORD_KEY",
    "FORMAT",
    "KINDS",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "read_checkpoint",
    "load_model",
    "instantiate_model",
    "qualified_name",
    "export_checkpoint",
    "EXPORT_KEY",
]

#: The key of the record in the checkpoint dictionary.
RECORD_KEY = "eqgeo"
#: The record format this version writes.
FORMAT = 1
#: What a model predicts: graph properties, energies and forces, or docking moves and a confidence.
KINDS = ("property", "energy", "docking")
#: Weight sets of a run trained with an exponential moving average (``trainer.ema_decay``):
#: ``"ema"`` the averaged weights (the checkpoint's ``state_dict``, which validation and the test
#: metrics use), ``"raw"`` the optimiser's own (``current_model_state``).
WEIGHTS = ("ema", "raw")
#: The key under which an exported checkpoint (:func:`export_checkpoint`) says what it kept.
EXPORT_KEY = "eqgeo_export"


class CheckpointError(ValueError):
    """A file that is not a usable eqgeo checkpoint. The message names the file and what is wrong."""


def qualified_name(cls: type) -> str:
    """``module.Class``, the form ``_target_`` takes."""
    return f"{cls.__module__}.{cls.__qualname__}"


def instantiate_model(config: Mapping[str, Any], **extra: Any) -> tuple[torch.nn.Module, dict]:
    """Builds the network that ``config`` describes. ``config`` is a model config with
    ``_target_``, a class, and that class's arguments; ``extra`` adds the arguments the task
    supplies, such as ``num_targets``.

    Returns the model and its complete config, ``_target_`` included, which is the config a
    checkpoint records. The class must be an ``eqgeo.models`` network or any ``torch.nn.Module``
    whose arguments are plain values.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import get_class

    config = dict(config)
    target = config.pop("_target_", None)
    if not isinstance(target, str) or not target:
        raise ValueError(f"a model config needs _target_ (the model class), got keys {sorted(config)}")
    clash = sorted(set(config) & set(extra))
    if clash:
        raise ValueError(f"model config for {target}: {clash} are set by the task, remove them from the model config")
    try:
        cls = get_class(target)
    except (ImportError, ValueError, InstantiationException) as error:
        raise ValueError(f"model _target_ {target!r} is not a class that can be imported: {error}") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"model _target_ {target!r} is not a torch.nn.Module class")
    arguments = {**config, **extra}
    try:
        model = cls(**arguments)
    except TypeError as error:  # an argument the class does not take, or one it needs
        raise ValueError(f"model {target}: {error}") from None
    return model, {"_target_": target, **arguments}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that has been read and validated. Get one with :func:`read_checkpoint`.

    Attributes:
        path: the file.
        kind: one of :data:`KINDS`.
        task: the task's ``_target_`` and arguments (hyperparameters, training statistics).
        model: the model's ``_target_`` and every argument it was built with.
        format: the record format of the file. 0 means written before the record existed.
        contents: everything ``torch.load`` read, including Lightning's loop and optimiser state.
    """

    path: Path
    kind: str
    task: dict
    model: dict
    format: int
    contents: dict

    @property
    def resumable(self) -> bool:
        """Whether ``eqgeo-train ckpt_path=`` can go on from it. That needs the loop state."""
        return "loops" in self.contents

    @property
    def trained_with_ema(self) -> bool:
        return "current_model_state" in self.contents

    def weight_sets(self, weights: str = "ema") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(parameters, buffers)``: the model's state from where each part is taken, without the
        task's ``model.`` prefix.

        Parameters come from the chosen weight set (:data:`WEIGHTS`). Buffers come from the raw
        state: the species table, statistics and counts are constants of the training data, and
        averaging does not apply to them. ``eqgeo-train`` averages no buffers; checkpoints written
        before that have truncated integer buffers in the averaged ``state_dict``.
        """
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        kept = self.contents.get(EXPORT_KEY, {}).get("weights")
        if kept is not None and weights != kept:
            raise CheckpointError(f"checkpoint {self.path} was exported with the {kept} weights only; "
                                  f"weights={weights!r} needs the run's own checkpoint")
        averaged = self.contents["state_dict"]
        raw = self.contents.get("current_model_state", averaged)
        chosen = averaged if weights == "ema" else raw
        return _strip(chosen), _strip(raw)

    def build_model(self, weights: str = "ema", device: Union[str, torch.device] = "cpu",
                    dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
        """The trained network in evaluation mode. ``dtype=None`` keeps the dtype it was trained in."""
        try:
            model, _ = instantiate_model(self.model)
        except ValueError as error:
            raise CheckpointError(f"checkpoint {self.path}: its model cannot be built: {error}") from None
        chosen, raw = self.weight_sets(weights)
        upgrade = getattr(model, "upgrade_state_dict", None)  # weights added to the model since it was saved
        if upgrade is not None:
            upgrade(chosen)
            upgrade(raw)
        # every name of a parameter: a module shared under two names (PyG SchNet's filter network) has both
        parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        state = {}
        for name in model.state_dict():
            source = chosen if name in parameters else raw
            if name not in source:
                raise CheckpointError(f"checkpoint {self.path} lacks model.{name}: its weights do not fit the model "
                                      f"its record describes ({self.model['_target_']})")
            state[name] = source[name]
        extra = sorted(set(chosen) - set(state))
        if extra:
            raise CheckpointError(f"checkpoint {self.path} has weights {self.model['_target_']} does not know: {extra[:5]}")
        # the dtype of the trained weights (float64 statistics buffers stay float64 either way); the first parameter in
        # the model's order, not in the set's (hash) order
        trained = next((state[n].dtype for n, _ in model.named_parameters(remove_duplicate=False)
                        if state[n].is_floating_point()), torch.float32)
        model = model.to(dtype or trained)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:  # shapes that do not fit the arguments
            raise CheckpointError(f"checkpoint {self.path}: its weights do not fit the model its record describes: "
                                  f"{error}") from None
        return model.to(device).eval()


def _strip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def read_checkpoint(path: Union[str, Path], *, resumable: bool = False) -> Checkpoint:
    """Reads and validates an eqgeo checkpoint. This is the only place where eqgeo checks one.

    Args:
        path: a ``.ckpt`` file written by ``eqgeo-train`` (``<run dir>/checkpoints/best.ckpt``).
        resumable: also require the loop state that ``eqgeo-train ckpt_path=`` resumes from.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file cannot be read with ``weights_only=True`` (truncated, corrupt,
            or holding pickled objects), or it is not an eqgeo checkpoint, or it lacks what
            ``resumable`` asks for.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        wanted = ("to resume, set ckpt_path=<run dir>/checkpoints/last.ckpt" if resumable else
                  "a checkpoint eqgeo-train wrote: <run dir>/checkpoints/best.ckpt or last.ckpt")
        raise FileNotFoundError(f"checkpoint {path} does not exist ({wanted})")
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every unpickling failure means the same here
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}): it is truncated, corrupt or not an eqgeo "
            "checkpoint (eqgeo loads checkpoints with torch.load(..., weights_only=True) only)"
        ) from None
    if not isinstance(contents, dict) or "state_dict" not in contents or "hyper_parameters" not in contents:
        keys = sorted(contents)[:8] if isinstance(contents, dict) else type(contents).__name__
        raise CheckpointError(f"checkpoint {path} has no state_dict and hyper_parameters ({keys}): "
                              "not a checkpoint written by eqgeo-train")
    if resumable and "loops" not in contents:
        raise CheckpointError(f"checkpoint {path} lacks the loop state (loops): eqgeo-train cannot resume from it")
    record = contents.get(RECORD_KEY)
    if record is None:
        record = _record_of_format_0(contents["hyper_parameters"], path)
    _check_record(record, path)
    if resumable:
        _check_optimizer_fits(contents, record, path)
    return Checkpoint(path=path, kind=record["kind"], task=dict(record["task"]), model=dict(record["model"]),
                      format=int(record["format"]), contents=contents)


def _check_optimizer_fits(contents: dict, record: dict, path: Path) -> None:
    """A checkpoint saved before its model gained weights (``added_weights``) loads for inference and export (the
    weights are filled in), but its optimiser state has no entry for them: training cannot resume from it."""
    from hydra.utils import get_class

    try:
        added = getattr(get_class(record["model"]["_target_"]), "added_weights", ())
    except Exception:  # noqa: BLE001 - a model that cannot be imported fails later, with its own message
        return
    missing = [name for name in added if f"model.{name}" not in contents["state_dict"]]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} was saved before {record['model']['_target_']} had the weights {missing}: it loads for "
            "eqgeo-evaluate, eqgeo-export and the calculator (they are filled in), but its optimiser state has no entry "
            "for them, so eqgeo-train cannot resume from it; start a new run"
        )


def _check_record(record: Any, path: Path) -> None:
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint {path}: its {RECORD_KEY!r} entry is a {type(record).__name__}, not a record")
    fmt = record.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(f"checkpoint {path}: record format {fmt!r}; this eqgeo reads formats up to {FORMAT} "
                              "(a newer eqgeo wrote it: upgrade eqgeo)")
    if record.get("kind") not in KINDS:
        raise CheckpointError(f"checkpoint {path}: kind {record.get('kind')!r} is not one of {KINDS}")
    for part in ("task", "model"):
        entry = record.get(part)
        if not isinstance(entry, dict) or not isinstance(entry.get("_target_"), str):
            raise CheckpointError(f"checkpoint {path}: its record has no {part} _target_")


# The network that each ``model.name`` of a format-0 checkpoint built, by kind. The PyG baselines take the kind
# as their ``mode`` argument.
_FORMAT_0_MODELS = {
    ("eqgeo", "property"): ("eqgeo.models.PropertyModel", False),
    ("eqgeo", "energy"): ("eqgeo.models.InteratomicPotential", False),
    ("eqgeo", "docking"): ("eqgeo.models.DockingModel", False),
    ("schnet", "property"): ("eqgeo.models.SchNetBaseline", True),
    ("schnet", "energy"): ("eqgeo.models.SchNetBaseline", True),
    ("visnet", "property"): ("eqgeo.models.ViSNetBaseline", True),
    ("visnet", "energy"): ("eqgeo.models.ViSNetBaseline", True),
}
# The task of each kind in format 0, and the hyperparameter that only that task had.
_FORMAT_0_TASKS = {
    "property": ("targets", "eqgeo.training.tasks.PropertyTask"),
    "energy": ("forces_weight", "eqgeo.training.tasks.EnergyForcesTask"),
    "docking": ("refine_steps", "eqgeo.training.docking.DockingTask"),
}


def _record_of_format_0(hparams: Any, path: Path) -> dict:
    """The record of a checkpoint written before records existed (eqgeo up to f8d3b6f).

    Format 0 kept only the task's hyperparameters. A task is recognised by the one
    hyperparameter that only it had. The network is found from ``model.name`` (``eqgeo``, ``schnet``
    or ``visnet``) and the task. The model's arguments are completed as that version's task
    completed them.
    """
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise CheckpointError(f"checkpoint {path}: hyperparameters without a model: not a checkpoint written by eqgeo-train")
    kinds = [kind for kind, (key, _) in _FORMAT_0_TASKS.items() if key in hparams]
    if len(kinds) != 1:
        raise CheckpointError(f"checkpoint {path}: hyperparameters {sorted(hparams)} are not those of an eqgeo task")
    kind = kinds[0]
    config = dict(hparams["model"])
    name = config.pop("name", "eqgeo")
    if (name, kind) not in _FORMAT_0_MODELS:
        raise CheckpointError(f"checkpoint {path}: a {kind} checkpoint of model.name={name!r}, which eqgeo never built")
    target, takes_mode = _FORMAT_0_MODELS[name, kind]
    config = {"_target_": target, **config, **({"mode": kind} if takes_mode else {})}  # the task's model config
    model = dict(config)
    if kind == "property":  # what the property task added to its model config
        model.update(num_targets=len(hparams["targets"]), reduce=hparams.get("reduce", "mean"))
    task = {"_target_": _FORMAT_0_TASKS[kind][1], **hparams, "model": config}
    return {"format": 0, "kind": kind, "task": task, "model": model}


def load_model(path: Union[str, Path], weights: str = "ema", device: Union[str, torch.device] = "cpu",
               dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
    """The trained network of an eqgeo checkpoint, in evaluation mode.

    This is the same as ``read_checkpoint(path).build_model(weights, device, dtype)``.

    Example::

        model = load_model("runs/2026-01-01/12-00-00/checkpoints/best.ckpt")
        out = model(batch)  # a PyG Batch of the inputs the model was trained on
    """
    return read_checkpoint(path).build_model(weights, device, dtype)


def run_config(checkpoint: Path) -> Optional[dict]:
    """The resolved config of the run a checkpoint belongs to (``<run>/config.yaml``, two folders up), if it is there."""
    path = checkpoint.parent.parent / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def export_checkpoint(source: Union[str, Path], target: Union[str, Path], weights: str = "ema",
                      dtype: Optional[torch.dtype] = None, *, model: Optional[torch.nn.Module] = None,
                      note: Optional[dict] = None) -> Path:
    """Writes the inference part of the checkpoint ``source`` to ``target``: the model's chosen weight set
    (:data:`WEIGHTS`) with its buffers, the hyperparameters and the record, without the optimiser, loop
    and callback states (a third of an 80,000-weight potential's checkpoint or less). The result loads
    everywhere a checkpoint does (:func:`load_model`, ``EqgeoCalculator.from_checkpoint``,
    ``eqgeo-evaluate``) but cannot be resumed; ``dtype`` converts its floating-point weights (the float64
    statistics buffers stay float64).

    The run's data settings (the ``data`` part of ``<run>/config.yaml``, when it is there) travel with it,
    so that ``eqgeo-evaluate`` crops pockets and draws docking starts as the run did wherever the file is.
    ``model``: the weights to write instead of the checkpoint's own ``weights`` (e.g. after refitting a
    head; it must be the model the record describes); ``note``: what was done to them, kept in the file."""
    checkpoint = read_checkpoint(source)
    built = checkpoint.build_model(weights, dtype=dtype)  # checks that the weights fit the record's model
    if model is not None:
        mismatch = set(built.state_dict()) ^ set(model.state_dict())
        if type(model) is not type(built) or mismatch:
            raise CheckpointError(f"the model given to export is not the {checkpoint.model['_target_']} of {source}: "
                                  f"{sorted(mismatch)[:5] or type(model).__name__}")
        built = model.to(dtype) if dtype is not None else model
    model = built
    run_data = (run_config(Path(source).expanduser()) or {}).get("data")
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": checkpoint.format if checkpoint.format else FORMAT, "kind": checkpoint.kind,
              "task": checkpoint.task, "model": checkpoint.model}
    contents = {
        "state_dict": {f"model.{name}": value.detach().clone() for name, value in model.state_dict().items()},
        "hyper_parameters": checkpoint.contents["hyper_parameters"],
        RECORD_KEY: record,
        EXPORT_KEY: {"weights": weights, "source": Path(source).name,
                     **({"data": run_data} if run_data is not None else {}), **({"note": note} if note else {})},
        **{key: checkpoint.contents[key] for key in ("epoch", "global_step") if key in checkpoint.contents},
    }
    torch.save(contents, target)
    return target
