"""``eqgeo-leaderboard``: finished runs as Markdown tables, beside the published numbers.

    eqgeo-leaderboard runs/                          # every metrics.json under runs/ (runs and sweeps)
    eqgeo-leaderboard runs/ --output LEADERBOARD.md
    eqgeo-leaderboard runs/ --strict                 # stop at a malformed metrics.json

One row per ``metrics.json`` (written by ``eqgeo-train`` into each run folder, and into each job
folder of a ``--multirun`` sweep). Rows are grouped by dataset and target(s); under each group
come the published test MAEs of reference models for that dataset and target (:data:`ANCHORS`,
read from ``eqgeo/data/published.csv``) with their training-set sizes, so that a run on 800
molecules is not read as one on 110,000. A published number that could not be checked against a
copy of its table is marked ``†``, with the reason below the table.

Tasks this module does not know (anything with a ``test`` section of ``{"value", "unit"}``
entries, e.g. a docking task reporting success rates and RMSDs) are rendered with their own
metric names and units. A malformed ``metrics.json`` is listed under "Skipped" with the reason
(``--strict``: an error naming the file); an empty folder is an error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .inference.names import is_mean_predictor


__all__ = ["Anchor", "ANCHORS", "LeaderboardError", "PublishedDataError", "cpu_model", "leaderboard", "load_published", "main"]


class LeaderboardError(ValueError):
    """Nothing to render (no folder, no ``metrics.json``, or a malformed one under ``strict``)."""


# ----------------------------------------------------------------------------- published anchors
#: The published numbers, shipped in the wheel (``eqgeo/data/published.csv``, relative to the package).
PUBLISHED_CSV = ("data", "published.csv")

#: Columns of the data file; ``val_size`` and ``note`` may be empty.
PUBLISHED_COLUMNS = ("model", "dataset", "target", "value", "unit", "train_size", "val_size", "source", "checked", "note")
_OPTIONAL = ("val_size", "note")

#: Units a published number may be in: those eqgeo reports the compared metrics in (QM9: mu in D,
#: alpha in a0^3, energies in meV; rMD17: total energy in meV, force components in meV/Å).
PUBLISHED_UNITS = frozenset({"D", "a0^3", "meV", "meV/Å"})


class PublishedDataError(ValueError):
    """A malformed published-numbers file; the message starts with ``FILE:LINE:``."""


@dataclass(frozen=True)
class Anchor:
    """One published test MAE (a row of ``eqgeo/data/published.csv``).

    Args:
        model: model name as published.
        dataset: group key of :func:`leaderboard` (``"QM9"``, ``"rMD17 ethanol"``).
        target: what is predicted, as eqgeo names it (``"gap"``, ``"forces"``); the published number is
            the test MAE, compared with the ``metrics.json`` entry ``{target}_mae``.
        value, unit: the published number, in the unit eqgeo reports that metric in.
        train_size, val_size: structures the model was fitted on / validated on (``None``: not
            stated in the cited source).
        source: paper, venue and year, table.
        checked: ``"checked"`` (the number was found in a reachable copy of the table, or of a
            transcription of it) or ``"unchecked: <why>"``.
        note: where it was found, and any disagreement between copies.
    """

    model: str
    dataset: str
    target: str
    value: float
    unit: str
    train_size: int
    val_size: Optional[int]
    source: str
    checked: str = "checked"
    note: str = ""

    @property
    def metric(self) -> str:
        """The ``metrics.json`` name the number compares with (``"gap_mae"``)."""
        return f"{self.target}_mae"

    @property
    def is_checked(self) -> bool:
        return self.checked == "checked"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what :mod:`platform` knows), for the machine line of results."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _published_path() -> Path:
    return Path(__file__).resolve().parent.joinpath(*PUBLISHED_CSV)


def load_published(path=None) -> tuple[Anchor, ...]:
    """The published numbers of ``path`` (default: the copy shipped in the package).

    Raises:
        PublishedDataError: a missing or unknown column, a row with too many or too few fields, an
            empty required field, a value that is not a positive number, a size that is not a
            positive integer, an unknown unit, a ``checked`` field other than ``checked`` or
            ``unchecked: <why>``, or a repeated (model, dataset, target); the message names the file
            and the line.
    """
    path = Path(path) if path is not None else _published_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PublishedDataError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in PUBLISHED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in PUBLISHED_COLUMNS]
    if missing or unknown:
        raise PublishedDataError(f"{path}:1: header must be {','.join(PUBLISHED_COLUMNS)}"
                                 + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    anchors, seen = [], {}
    for row in reader:
        line = reader.line_num
        try:
            anchor = _anchor(row)
        except ValueError as error:
            raise PublishedDataError(f"{path}:{line}: {error}") from None
        key = (anchor.model, anchor.dataset, anchor.target)
        if key in seen:
            raise PublishedDataError(f"{path}:{line}: {key} repeats line {seen[key]}")
        seen[key] = line
        anchors.append(anchor)
    if not anchors:
        raise PublishedDataError(f"{path}: no rows under the header")
    return tuple(anchors)


def _anchor(row: dict) -> Anchor:
    if None in row:
        raise ValueError(f"more fields than the {len(PUBLISHED_COLUMNS)} columns of the header")
    if any(v is None for v in row.values()):
        raise ValueError(f"fewer fields than the {len(PUBLISHED_COLUMNS)} columns of the header")
    row = {k: v.strip() for k, v in row.items()}
    empty = [c for c in PUBLISHED_COLUMNS if c not in _OPTIONAL and not row[c]]
    if empty:
        raise ValueError(f"empty field(s) {empty}")
    try:
        value = float(row["value"])
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"'value' must be a positive number, got {row['value']!r}")
    if row["unit"] not in PUBLISHED_UNITS:
        raise ValueError(f"unknown unit {row['unit']!r} (known: {', '.join(sorted(PUBLISHED_UNITS))})")
    sizes = {}
    for column in ("train_size", "val_size"):
        if column == "val_size" and not row[column]:
            sizes[column] = None
            continue
        if not row[column].isdigit() or int(row[column]) == 0:
            raise ValueError(f"{column!r} must be a positive integer, got {row[column]!r}")
        sizes[column] = int(row[column])
    checked = row["checked"]
    if checked != "checked" and not (checked.startswith("unchecked: ") and checked[len("unchecked: "):].strip()):
        raise ValueError(f"'checked' must be 'checked' or 'unchecked: <why>', got {checked!r}")
    return Anchor(row["model"], row["dataset"], row["target"], value, row["unit"], sizes["train_size"],
                  sizes["val_size"], row["source"], checked, row["note"])


#: Every published number the leaderboard shows (``eqgeo/data/published.csv``: sources, and where
#: each number was checked).
ANCHORS: tuple[Anchor, ...] = load_published()

# metrics.json names whose anchors are another metric's (atomization energy: same MAE as U0)
_ANCHOR_ALIASES = {"U0_atom_mae": "U0_mae"}
_DATASET_ORDER = ("QM9", "rMD17")


# ----------------------------------------------------------------------------- reading runs
class _Malformed(ValueError):
    pass


@dataclass
class _Run:
    path: str  # run folder relative to the leaderboard root
    task: str
    dataset: str
    source: str
    sizes: dict
    model: str
    parameters: object
    epochs: object
    wall_time_s: object
    metrics: dict = field(default_factory=dict)  # name -> (value, unit), MAE first

    @property
    def targets(self) -> tuple[str, ...]:
        """What the run predicts: the targets of its MAE/RMSE metrics (``gap_mae`` -> ``gap``), else
        its task name (a task whose metrics are, e.g., success rates and RMSDs)."""
        bases = [_split_metric(name)[0] for name in self.metrics if _split_metric(name)[1]]
        bases = [b for b in bases if not is_mean_predictor(b)]  # a reference's errors, not a target
        return tuple(dict.fromkeys(bases)) or (self.task,)


def _split_metric(name: str) -> tuple[str, str]:
    """``"gap_mae"`` -> ``("gap", "MAE")``; names without an ``_mae``/``_rmse`` suffix -> ``(name, "")``."""
    for suffix in ("_mae", "_rmse"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix[1:].upper()
    return name, ""


def _metric_order(name: str) -> int:
    return {"MAE": 0, "RMSE": 1}.get(_split_metric(name)[1], 2)


def _test_metrics(test) -> dict:
    if not isinstance(test, dict):
        raise _Malformed(f"'test' must be an object of metrics, got {type(test).__name__}")
    metrics = {}
    for name, entry in test.items():
        value, unit = (entry.get("value"), entry.get("unit", "")) if isinstance(entry, dict) else (entry, "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(unit, str):
            shown = json.dumps(entry)[:80]
            raise _Malformed(f'test metric {name!r} must be {{"value": number, "unit": string}}, got {shown}')
        metrics[name] = (float(value), unit)
    return {k: metrics[k] for k in _ordered(metrics)}


def _dataset(data: dict) -> tuple[str, str]:
    """Group name and data column of a run, from what its data module wrote into ``metrics.json``:
    ``data.dataset`` (``"QM9"``, ``"rMD17 ethanol"``: the data config's ``dataset``) and
    ``data.source``/``data.origin`` (``"MD17DataModule: botnet_ethanol/train.xyz"``). A run written
    before ``data.dataset`` existed is grouped under its source, without published numbers."""
    source = str(data.get("source", "unknown data"))
    origin = data.get("origin")
    shown = f"{source}: {origin}" if origin else source
    return str(data.get("dataset") or source), shown


def _read_run(path: Path, root: Path) -> _Run:
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise _Malformed(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _Malformed(f"cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(metrics, dict):
        raise _Malformed(f"expected a JSON object, got {type(metrics).__name__}")
    if "test" not in metrics:
        raise _Malformed("no 'test' section (eqgeo-train writes it when the run's test finished)")
    data = metrics.get("data", {})
    model = metrics.get("model", {})
    for key, value in (("data", data), ("model", model)):
        if not isinstance(value, dict):
            raise _Malformed(f"'{key}' must be an object, got {type(value).__name__}")
    dataset, shown_source = _dataset(data)
    rel = path.parent.relative_to(root).as_posix()
    return _Run(
        path=rel if rel != "." else "(root)",
        task=str(metrics.get("task", "?")),
        dataset=dataset,
        source=shown_source,
        sizes={k: data.get(k) for k in ("train", "val", "test")},
        model=str(model.get("class", "?")),
        parameters=model.get("parameters"),
        epochs=metrics.get("epochs"),
        wall_time_s=metrics.get("wall_time_s"),
        metrics=_test_metrics(metrics["test"]),
    )


# ----------------------------------------------------------------------------- formatting
def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _row(cells) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: list[str], right: list[bool], rows: list[list]) -> list[str]:
    rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
    return [_row(header), rule] + [_row(r) for r in rows]


def _number(value) -> str:
    """Four significant digits (``312.4``, ``0.04217``); thousands separated from 10,000 up."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else ("?" if value is None else str(value))


def _duration(seconds) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "?" if seconds is None else str(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _metric_header(name: str, unit: str) -> str:
    base, kind = _split_metric(name)
    label = f"{base} {kind}" if kind else name
    return f"{label} ({unit})" if unit else label


def _sizes(sizes: dict) -> str:
    return " / ".join(_count(sizes.get(k)) for k in ("train", "val", "test"))


def _anchors_for(dataset: str, metric: str) -> list[Anchor]:
    metric = _ANCHOR_ALIASES.get(metric, metric)
    return [a for a in ANCHORS if a.dataset == dataset and a.metric == metric]


def _ordered(names) -> list[str]:
    """MAE columns first, then RMSE, then other metrics; targets in order of first appearance."""
    names = list(names)
    bases = list(dict.fromkeys(_split_metric(n)[0] for n in names))
    return sorted(names, key=lambda n: (_metric_order(n), bases.index(_split_metric(n)[0]), names.index(n)))


def _runs_table(runs: list[_Run]) -> list[str]:
    """One row per run; metric columns are the union of the runs' metrics, rows best MAE first."""
    units: dict[str, str] = {}  # column -> unit of its first run
    for run in runs:
        for name, (_, unit) in run.metrics.items():
            units.setdefault(name, unit)
    columns = _ordered(units)
    primary = next((c for c in columns if _metric_order(c) == 0), None)

    def rank(run: _Run):
        value = run.metrics.get(primary, (math.inf,))[0] if primary else math.inf
        return (value if math.isfinite(value) else math.inf, run.path)

    header = ["run", "task", "data", "train / val / test", "model", "parameters", "epochs", "wall time"]
    header += [_metric_header(c, units[c]) for c in columns]
    rows = []
    for run in sorted(runs, key=rank):
        cells = [f"`{run.path}`", run.task, run.source, _sizes(run.sizes), run.model, _count(run.parameters),
                 _count(run.epochs), _duration(run.wall_time_s)]
        for c in columns:
            value, unit = run.metrics.get(c, (None, units[c]))
            cells.append(_number(value) if unit == units[c] else f"{_number(value)} {unit}")
        rows.append(cells)
    return _table(header, [False] * 3 + [True, False, True, True, True] + [True] * len(columns), rows)


#: Marks a published number whose ``checked`` field is ``unchecked: <why>``.
_UNCHECKED_MARK = "†"


def _anchor_table(dataset: str, runs: list[_Run]) -> list[str]:
    """Published MAEs for the runs' MAE columns, with training sets; ``[]`` when there are none."""
    columns = [c for c in _ordered(dict.fromkeys(n for r in runs for n in r.metrics)) if _anchors_for(dataset, c)]
    found: dict[str, dict[str, Anchor]] = {}  # model -> column -> anchor
    for c in columns:
        for anchor in _anchors_for(dataset, c):
            found.setdefault(anchor.model, {})[c] = anchor
    if not found:
        return []
    rows, unchecked = [], {}  # unchecked: (model, why) -> targets
    for model, anchors in found.items():
        a = next(iter(anchors.values()))
        train = f"{a.train_size:,}" + (f" (+{a.val_size:,} val)" if a.val_size else "")
        cells = []
        for c in columns:
            anchor = anchors.get(c)
            if anchor is None:
                cells.append("—")
            elif anchor.is_checked:
                cells.append(_number(anchor.value))
            else:
                cells.append(f"{_number(anchor.value)} {_UNCHECKED_MARK}")
                unchecked.setdefault((model, anchor.checked), []).append(anchor.target)
        rows.append([model] + cells + [train, a.source])
    header = ["published model"] + [_metric_header(c, _anchors_for(dataset, c)[0].unit) for c in columns]
    lines = [f"Published test MAEs ({dataset}), with the training sets they used:", ""]
    lines += _table(header + ["training set", "source"], [False] + [True] * len(columns) + [True, False], rows)
    if unchecked:
        lines.append("")
        for (model, why), targets in unchecked.items():
            reason = why[len("unchecked: "):].strip()
            lines.append(f"- {_UNCHECKED_MARK} {model} ({', '.join(targets)}), not checked: {reason}"
                         + ("" if reason.endswith(".") else "."))
    smallest = min(a.train_size for anchors in found.values() for a in anchors.values())
    trained = [r.sizes["train"] for r in runs if isinstance(r.sizes.get("train"), int)]
    if trained and max(trained) * 2 <= smallest:
        lines += ["", f"> The runs above trained on at most {max(trained):,} examples, the published models on "
                      f"{smallest:,} or more: compare the numbers with that in mind."]
    return lines


def _group_lines(dataset: str, targets: tuple[str, ...], runs: list[_Run]) -> list[str]:
    title = f"{dataset} · {', '.join(targets)}"
    lines = [f"## {title}", ""] + _runs_table(runs) + [""]
    anchors = _anchor_table(dataset, runs)
    return lines + (anchors or [f"No published numbers in eqgeo's anchor table for {title}."]) + [""]


def _render(root: Path, runs: list[_Run], skipped: list[tuple[str, str]]) -> str:
    groups: dict[tuple, list[_Run]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.targets), []).append(run)

    def order(key):
        dataset = key[0]
        rank = next((i for i, d in enumerate(_DATASET_ORDER) if dataset.split(" ")[0] == d), len(_DATASET_ORDER))
        return rank, key

    lines = ["# eqgeo leaderboard", "",
             f"{len(runs)} run{'s' * (len(runs) != 1)} under `{root}`, grouped by dataset and target(s); "
             "test metrics of each run (MAE first), then the published numbers for the same dataset and "
             "target (sources, and where each number was checked: `eqgeo/data/published.csv`; "
             f"{_UNCHECKED_MARK}: not checked).", ""]
    for key in sorted(groups, key=order):
        lines += _group_lines(key[0], key[1], groups[key])
    if skipped:
        lines += ["## Skipped", "", "These `metrics.json` files could not be read as runs:", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in skipped]
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry points
def _collect(runs_dir, strict: bool) -> tuple[str, list[tuple[str, str]]]:
    root = Path(runs_dir)
    if not root.is_dir():
        raise LeaderboardError(f"{root} is not a directory (give the folder eqgeo-train writes runs into, e.g. runs/)")
    files = sorted(p for p in root.rglob("metrics.json") if p.is_file())
    if not files:
        raise LeaderboardError(
            f"no metrics.json under {root}: eqgeo-train writes one into each finished run folder "
            "(runs/<date>/<time>/metrics.json, runs/multirun/<date>/<time>/<job>/metrics.json)"
        )
    runs, skipped = [], []
    for path in files:
        try:
            runs.append(_read_run(path, root))
        except _Malformed as error:
            if strict:
                raise LeaderboardError(f"{path}: {error}") from None
            skipped.append((path.relative_to(root).as_posix(), str(error)))
    if not runs:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped)
        raise LeaderboardError(f"no readable metrics.json under {root} ({reasons})")
    return _render(root, runs, skipped), skipped


def leaderboard(runs_dir, *, strict: bool = False) -> str:
    """Markdown leaderboard of every ``metrics.json`` under ``runs_dir`` (searched recursively).

    Args:
        runs_dir: a run folder, a ``runs/`` folder or a ``--multirun`` sweep folder.
        strict: raise on a malformed ``metrics.json`` instead of listing it under "Skipped".

    Raises:
        LeaderboardError: ``runs_dir`` is not a folder, holds no ``metrics.json``, holds only
            malformed ones, or (``strict``) holds a malformed one; the message names the file.
    """
    return _collect(runs_dir, strict)[0]


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point ``eqgeo-leaderboard RUNS_DIR [--output FILE] [--strict]``."""
    parser = argparse.ArgumentParser(
        prog="eqgeo-leaderboard",
        description="Markdown table of every eqgeo-train run (metrics.json) under RUNS_DIR, grouped by dataset "
        "and target, with published reference numbers and their training-set sizes.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder searched recursively for metrics.json")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the Markdown to FILE instead of stdout")
    parser.add_argument("--strict", action="store_true", help="fail on a malformed metrics.json instead of listing it")
    args = parser.parse_args(argv)
    try:
        text, skipped = _collect(args.runs_dir, args.strict)
    except LeaderboardError as error:
        print(f"eqgeo-leaderboard: error: {error}", file=sys.stderr)
        return 2
    for path, reason in skipped:
        print(f"eqgeo-leaderboard: skipped {Path(args.runs_dir) / path}: {reason}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
        print(f"eqgeo-leaderboard: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
