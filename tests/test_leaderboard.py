"""eqgeo-leaderboard: real runs rendered with the published anchors, unknown tasks, clear errors; the
published numbers' data file (eqgeo/data/published.csv) and its loader."""

import csv
import dataclasses
import json
import math
import re
import shutil

import pytest

import eqgeo.leaderboard as board
from eqgeo.datasets.qm9 import TARGET_UNITS, TARGETS
from eqgeo.leaderboard import (ANCHORS, PUBLISHED_COLUMNS, PUBLISHED_UNITS, LeaderboardError, PublishedDataError,
                               leaderboard, load_published, main)
from eqgeo.training import EnergyForcesTask, train
from eqgeo.training.tasks import display_unit

from .training._helpers import TINY, TINY_QM9, cfg as _cfg, run_cli


def _rows(text: str, run: str) -> list[list[str]]:
    """Cells of the table rows of ``run`` (its path in backticks)."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith(f"| `{run}` |")]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Two tiny real runs: one plain (gap), one nested like a --multirun job (gap and homo)."""
    root = tmp_path_factory.mktemp("runs")
    gap = train(_cfg(TINY + TINY_QM9, root / "plain"))
    both = train(_cfg(TINY + TINY_QM9 + ["task.targets=[gap,homo]"], root / "sweep" / "0"))
    return root, {"plain": gap, "sweep/0": both}


@pytest.mark.slow
def test_console_script_renders_real_runs_with_anchors(real_runs, tmp_path):
    root, metrics = real_runs
    script = shutil.which("eqgeo-leaderboard")
    assert script, "console script eqgeo-leaderboard missing: pip install -e . (pyproject [project.scripts])"
    out = tmp_path / "board.md"
    done = run_cli([script, root, "--output", out], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = out.read_text()

    for run, saved in metrics.items():
        rows = _rows(text, run)
        assert len(rows) == 1, f"one row per run, got {rows}"
        cells = rows[0]
        assert saved["data"]["dataset"] == "QM9" and saved["data"]["origin"] == "qm9pack wheel"
        assert cells[1] == "PropertyTask" and cells[2] == "QM9DataModule: qm9pack wheel" and cells[3] == "30 / 10 / 10"
        assert cells[4] == "PropertyModel" and cells[5] == f"{saved['model']['parameters']:,}" and cells[6] == "1"
        for name, entry in saved["test"].items():
            assert entry["unit"] == "meV"
            assert f"{entry['value']:.4g}" in cells, (name, cells)
    # the two runs land in two groups, each with its own columns and anchors
    gap_group = text.split("## QM9 · gap\n")[1].split("\n## ")[0]
    both_group = text.split("## QM9 · gap, homo\n")[1].split("\n## ")[0]
    assert "gap MAE (meV)" in gap_group and "homo MAE (meV)" not in gap_group
    assert "gap MAE (meV)" in both_group and "homo MAE (meV)" in both_group
    # published gap MAEs with their training-set sizes and sources
    expected = {"SchNet": "63", "DimeNet++": "32.6", "PaiNN": "45.7", "TorchMD-Net ET": "36.1", "Equiformer": "30"}
    for model, value in expected.items():
        line = next(l for l in gap_group.splitlines() if l.startswith(f"| {model} |"))
        assert f"| {value} |" in line and "110,000" in line and ("Table" in line or "table" in line), line
    assert "trained on at most 30 examples" in gap_group  # the small-budget warning


def _write_metrics(run_dir, test, task="DockingTask", source="DockingDataModule", **extra):
    run_dir.mkdir(parents=True)
    metrics = {"task": task, "data": {"train": 20, "val": 5, "test": 4, "source": source},
               "model": {"class": "DockingModel", "parameters": 1234}, "epochs": 2, "wall_time_s": 75.0, "test": test}
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, **extra}))


def test_unknown_task_renders_generically(tmp_path):
    # metric names as a docking task writes them: success rates (%) and median RMSDs (Å), no MAE
    _write_metrics(tmp_path / "docking" / "0", {"a_model_median_rmsd": {"value": 3.217, "unit": "Å"},
                                                "a_model_success": {"value": 25.0, "unit": "%"}})
    # another unknown task that does report an MAE: it comes first, and names the group
    _write_metrics(tmp_path / "other", {"rmsd_median": {"value": 1.5, "unit": "Å"}, "rmsd_mae": {"value": 2.5, "unit": "Å"}},
                   task="PocketTask", source="PocketDataModule")
    text = leaderboard(tmp_path)
    assert "## DockingDataModule · DockingTask" in text and "## PocketDataModule · rmsd" in text
    docking = text.split("## DockingDataModule · DockingTask\n")[1].split("\n## ")[0]
    assert "| run | task | data | train / val / test | model | parameters | epochs | wall time | " \
           "a_model_median_rmsd (Å) | a_model_success (%) |" in docking
    (cells,) = _rows(text, "docking/0")
    assert cells[1:] == ["DockingTask", "DockingDataModule", "20 / 5 / 4", "DockingModel", "1,234", "2", "1 min 15 s",
                         "3.217", "25"]
    pocket = text.split("## PocketDataModule · rmsd\n")[1].split("\n## ")[0]
    assert "| rmsd MAE (Å) | rmsd_median (Å) |" in pocket and _rows(text, "other")[0][8:] == ["2.5", "1.5"]
    assert "No published numbers in eqgeo's anchor table for DockingDataModule · DockingTask." in docking


def test_rmd17_group_gets_the_rmd17_anchors(tmp_path):
    _rmd17_run(tmp_path)
    text = leaderboard(tmp_path)
    assert "## rMD17 ethanol · energy, forces" in text
    assert _rows(text, "md")[0][2] == "MD17DataModule: botnet_ethanol/train.xyz"
    mace = next(l for l in text.splitlines() if l.startswith("| MACE |"))
    assert mace.startswith("| MACE | 0.4 | 2.1 | 950 (+50 val) |")
    assert "trained on at most" not in text  # same budget as the anchors: no warning


def test_group_is_the_dataset_the_run_names_not_its_files(tmp_path):
    """The group comes from ``data.dataset`` alone: a run that names no dataset (written before it existed)
    is grouped under its source, without published numbers, whatever its files are called."""
    _rmd17_run(tmp_path)
    metrics = json.loads((tmp_path / "md" / "metrics.json").read_text())
    del metrics["data"]["dataset"]
    (tmp_path / "md" / "metrics.json").write_text(json.dumps(metrics))
    text = leaderboard(tmp_path)
    assert "## MD17DataModule · energy, forces" in text and "rMD17" not in text.split("## MD17DataModule")[1]
    assert not any(line.startswith("| MACE |") for line in text.splitlines())


def test_malformed_metrics_are_listed_or_refused(tmp_path, capsys):
    good, bad, worse = tmp_path / "good", tmp_path / "bad", tmp_path / "worse"
    for d in (good, bad, worse):
        d.mkdir()
    (good / "metrics.json").write_text(json.dumps({"task": "PropertyTask", "test": {"gap_mae": {"value": 1.0, "unit": "meV"}}}))
    (bad / "metrics.json").write_text('{"test": {"gap_mae": ')
    (worse / "metrics.json").write_text(json.dumps({"test": {"gap_mae": {"value": "n/a", "unit": "meV"}}}))

    text = leaderboard(tmp_path)  # listed, not dropped
    skipped = text.split("## Skipped")[1]
    assert "`bad/metrics.json`: not valid JSON" in skipped and "`worse/metrics.json`: test metric 'gap_mae'" in skipped
    with pytest.raises(LeaderboardError, match=r"bad/metrics.json: not valid JSON"):
        leaderboard(tmp_path, strict=True)

    assert main([str(tmp_path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad / 'metrics.json'}: not valid JSON" in err
    assert main([str(tmp_path)]) == 0
    assert f"skipped {worse / 'metrics.json'}" in capsys.readouterr().err


def test_only_malformed_files_is_an_error(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "PropertyTask"}))
    with pytest.raises(LeaderboardError, match=r"no readable metrics.json .*no 'test' section"):
        leaderboard(tmp_path)


def test_empty_or_missing_folder_is_an_error(tmp_path, capsys):
    with pytest.raises(LeaderboardError, match="no metrics.json under"):
        leaderboard(tmp_path)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a directory" in capsys.readouterr().err


def test_anchors_are_in_the_units_eqgeo_reports():
    """Every anchor compares with a metric eqgeo reports, in that metric's displayed unit."""
    assert {a.model for a in ANCHORS} == {"SchNet", "DimeNet++", "PaiNN", "TorchMD-Net ET", "Equiformer",
                                         "NequIP", "Allegro", "MACE"}
    for anchor in ANCHORS:
        assert anchor.metric.endswith("_mae") and anchor.value > 0 and math.isfinite(anchor.value)
        target = anchor.target
        if anchor.dataset == "QM9":
            unit = display_unit(TARGET_UNITS[TARGETS.index(target)])[0]
            assert anchor.train_size == 110_000
        else:
            unit = display_unit(EnergyForcesTask.units[target])[0]
            assert anchor.dataset == "rMD17 ethanol" and anchor.train_size == 950
        assert anchor.unit == unit, anchor
    gap = {a.model: a.value for a in ANCHORS if a.metric == "gap_mae"}
    assert gap == {"SchNet": 63, "DimeNet++": 32.6, "PaiNN": 45.7, "TorchMD-Net ET": 36.1, "Equiformer": 30}


# ----------------------------------------------------------------------------- the data file
def _published_rows() -> list[dict]:
    with board._published_path().open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_published_data_file_loads_with_every_field():
    """The shipped file loads, and every row has every required field, a known unit and a checked status."""
    assert board._published_path().name == "published.csv" and board._published_path().parent.name == "data"
    rows = _published_rows()
    assert len(rows) == len(ANCHORS) == len(load_published()) > 0
    for row in rows:
        assert tuple(row) == PUBLISHED_COLUMNS
        assert all(row[c].strip() for c in PUBLISHED_COLUMNS if c not in ("val_size", "note")), row
        assert row["unit"] in PUBLISHED_UNITS, row
        assert row["checked"] == "checked" or (row["checked"].startswith("unchecked: ") and len(row["checked"]) > 15), row
    for anchor in ANCHORS:
        # a checked number says where it was found; an unchecked one says why not
        assert anchor.is_checked == (anchor.checked == "checked")
        assert anchor.note or not anchor.is_checked, anchor
    assert {a.model for a in ANCHORS if not a.is_checked} == {"Allegro"}


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "published.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = "SchNet,QM9,gap,63,meV,110000,,\"Schütt et al. 2018, J. Chem. Phys.\",checked,found somewhere"


@pytest.mark.parametrize(("bad", "message"), [
    ("SchNet,QM9,homo,n/a,meV,110000,,paper,checked,", r"'value' must be a positive number, got 'n/a'"),
    ("SchNet,QM9,homo,-41,meV,110000,,paper,checked,", r"'value' must be a positive number"),
    ("SchNet,QM9,homo,41,eV,110000,,paper,checked,", r"unknown unit 'eV'"),
    ("SchNet,QM9,homo,41,meV,110k,,paper,checked,", r"'train_size' must be a positive integer, got '110k'"),
    ("SchNet,QM9,homo,41,meV,110000,,,checked,", r"empty field\(s\) \['source'\]"),
    ("SchNet,QM9,homo,41,meV,110000,,paper,yes,", r"'checked' must be 'checked' or 'unchecked: <why>', got 'yes'"),
    ("SchNet,QM9,homo,41,meV,110000,,paper,unchecked: ,", r"'checked' must be"),
    ("SchNet,QM9,homo,41,meV,110000,,paper,checked", r"fewer fields than the 10 columns"),
    ("SchNet,QM9,homo,41,meV,110000,,paper,checked,note,extra", r"more fields than the 10 columns"),
    ("SchNet,QM9,gap,63,meV,110000,,paper,checked,", r"\('SchNet', 'QM9', 'gap'\) repeats line 2"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad, message):
    """Negative controls: a malformed row (the third line of the file) is an error naming the file and that line."""
    assert len(load_published(_write(tmp_path, [",".join(PUBLISHED_COLUMNS), GOOD]))) == 1  # the good row alone loads
    path = _write(tmp_path, [",".join(PUBLISHED_COLUMNS), GOOD, bad])
    with pytest.raises(PublishedDataError, match=f"^{re.escape(str(path))}:3: {message}"):
        load_published(path)


def test_malformed_header_or_empty_file(tmp_path):
    with pytest.raises(PublishedDataError, match=r":1: header must be model,dataset,.*missing \['checked'\]"):
        load_published(_write(tmp_path, ["model,dataset,target,value,unit,train_size,val_size,source,note"]))
    with pytest.raises(PublishedDataError, match=r": no rows under the header"):
        load_published(_write(tmp_path, [",".join(PUBLISHED_COLUMNS)]))
    with pytest.raises(PublishedDataError, match=r"nowhere.csv: cannot be read"):
        load_published(tmp_path / "nowhere.csv")


def _rmd17_run(tmp_path):
    run = tmp_path / "md"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "task": "EnergyForcesTask", "data": {"train": 950, "val": 50, "test": 1000, "dataset": "rMD17 ethanol",
                                             "source": "MD17DataModule", "origin": "botnet_ethanol/train.xyz"},
        "model": {"class": "InteratomicPotential", "parameters": 10}, "epochs": 5, "wall_time_s": 1.0,
        "test": {"energy_mae": {"value": 9.0, "unit": "meV"}, "forces_mae": {"value": 30.0, "unit": "meV/Å"}},
    }))


def test_leaderboard_marks_unchecked_anchors(tmp_path, monkeypatch):
    """An unchecked number carries the mark and its reason is printed under the table; checked ones carry none."""
    _rmd17_run(tmp_path)
    text = leaderboard(tmp_path)
    allegro = next(l for l in text.splitlines() if l.startswith("| Allegro |"))
    assert allegro.startswith("| Allegro | 0.4 † | 2.1 † | 950 (+50 val) |"), allegro
    reason = next(a.checked for a in ANCHORS if a.model == "Allegro")[len("unchecked: "):]
    assert f"- † Allegro (energy, forces), not checked: {reason}" in text
    for model in ("NequIP", "MACE"):
        line = next(l for l in text.splitlines() if l.startswith(f"| {model} |"))
        assert "†" not in line, line
    assert "`eqgeo/data/published.csv`" in text

    # the mark follows the data: MACE's forces unchecked, everything else checked
    anchors = tuple(dataclasses.replace(a, checked="checked") if a.model == "Allegro" else
                    dataclasses.replace(a, checked="unchecked: test reason") if (a.model, a.target) == ("MACE", "forces")
                    else a for a in ANCHORS)
    monkeypatch.setattr(board, "ANCHORS", anchors)
    text = leaderboard(tmp_path)
    assert next(l for l in text.splitlines() if l.startswith("| MACE |")).startswith("| MACE | 0.4 | 2.1 † |")
    assert "- † MACE (forces), not checked: test reason." in text and "Allegro (" not in text
