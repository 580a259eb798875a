"""Shared fixtures and the CI policy of the suite.

- every test starts from the same seeds; ``dtype``/``tol`` parametrise float32 and float64;
- under ``CI=true`` a skipped test is a failure (CI runs every test it claims; locally a
  missing oracle, compiler or data folder skips with the reason printed);
- tests marked ``cuda`` are deselected, with a printed note, where there is no CUDA device,
  and tests that exercise an optional backend that is not installed likewise
  (``torch_cluster``: an 8-minute source build that CI does not do).
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from .helpers import IN_CI, SHARED_DATA, TOLERANCES, shared_path

__all__ = ["SHARED_DATA", "TOLERANCES"]

# marker -> (is the prerequisite present?, what is missing)
_ENVIRONMENT_MARKERS = {
    "cuda": (torch.cuda.is_available, "no CUDA device"),
    "torch_cluster": (lambda: importlib.util.find_spec("torch_cluster") is not None, "torch_cluster is not installed"),
}
_deselected: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype) -> float:
    return TOLERANCES[dtype]


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` next to the repository (skipped locally, a failure in CI, when absent)."""
    return shared_path()


@pytest.fixture
def shared_data_env(shared_data, monkeypatch):
    """``EQGEO_SHARED_DATA`` pointing at the shared data, which the rMD17 and docking configs read."""
    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared_data))
    return shared_data


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        missing = [why for name, (present, why) in _ENVIRONMENT_MARKERS.items()
                   if item.get_closest_marker(name) and not present()]
        if missing:
            drop.append(item)
            for why in missing:
                _deselected[why] = _deselected.get(why, 0) + 1
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


def pytest_terminal_summary(terminalreporter):
    skipped = len(terminalreporter.stats.get("skipped", []))
    notes = ", ".join(f"{n} ({why})" for why, n in _deselected.items()) or "none"
    terminalreporter.write_line(f"eqgeo: {skipped} skipped; deselected for the environment: {notes}; CI={IN_CI}")
