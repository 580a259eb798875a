"""The top-level package: subpackages reachable after a plain ``import eqgeo``, imported lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import eqgeo

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("training", "demo", "train", "cli", "leaderboard")  # Lightning and Hydra, or commands

_CHECK = """
import json, sys
import eqgeo
before = sorted(m for m in ("eqgeo.nn", "eqgeo.training", "lightning", "hydra") if m in sys.modules)
irreps = eqgeo.o3.Irreps("2x0e+1o")
conv = eqgeo.nn.EquivariantConv
after = sorted(m for m in ("eqgeo.nn", "eqgeo.training", "lightning", "hydra") if m in sys.modules)
print(json.dumps({"before": before, "after": after, "dim": irreps.dim, "conv": conv.__name__,
                  "dir": "nn" in dir(eqgeo) and "training" in dir(eqgeo)}))
"""


def _fresh(code: str) -> dict:
    """The JSON that ``code`` prints last, run in a fresh interpreter in the repository root."""
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_subpackages_after_plain_import_and_lazy():
    """A fresh interpreter: only ``import eqgeo``, then attribute access (no ``import eqgeo.nn``)."""
    result = _fresh(_CHECK)
    assert result["dim"] == 5 and result["conv"] == "EquivariantConv" and result["dir"]
    # nothing heavy is imported by `import eqgeo`; eqgeo.nn is imported on first access only
    assert result["before"] == []
    assert result["after"] == ["eqgeo.nn"]


@pytest.mark.parametrize("name", ["o3", "nn", "data", "datasets", "models", "testing", "calculators"])
def test_every_subpackage_is_an_attribute(name):
    module = getattr(eqgeo, name)
    assert module.__name__ == f"eqgeo.{name}"
    assert name in eqgeo.__all__ and name in dir(eqgeo)


def test_heavy_subpackages_are_listed_by_dir_but_not_star_imported():
    # listed without importing them here (they pull in Lightning and Hydra)
    for name in HEAVY:
        assert name in dir(eqgeo) and name not in eqgeo.__all__
    assert set(eqgeo.__all__) == {"__version__", *eqgeo._LAZY_SUBMODULES} - set(HEAVY)
    assert set(eqgeo.__all__) <= set(dir(eqgeo))


_STAR = """
import json, sys
from eqgeo import *
print(json.dumps({"heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "hydra", "pytorch_lightning")
                                  or m == "eqgeo.training"),
                  "bound": sorted(n for n in ("o3", "nn", "data", "datasets", "models", "testing", "calculators",
                                              "training", "demo", "train") if n in globals()),
                  "file": sys.modules["eqgeo"].__file__}))
"""


def test_star_import_stays_light():
    """``from eqgeo import *`` in a fresh interpreter binds the light subpackages and imports no Lightning or Hydra."""
    result = _fresh(_STAR)
    assert Path(result["file"]).resolve() == ROOT / "eqgeo" / "__init__.py"
    assert result["heavy"] == []
    assert result["bound"] == ["calculators", "data", "datasets", "models", "nn", "o3", "testing"]


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match=r"module 'eqgeo' has no attribute 'nope'; its subpackages are \[.*'nn'"):
        _ = eqgeo.nope
    assert not hasattr(eqgeo, "nope")
    assert eqgeo.__version__
