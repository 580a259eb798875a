"""The top-level package: subpackages reachable after a plain ``import eqgeo``, imported lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import eqgeo

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


def test_subpackages_after_plain_import_and_lazy():
    """A fresh interpreter: only ``import eqgeo``, then attribute access (no ``import eqgeo.nn``)."""
    done = subprocess.run([sys.executable, "-c", _CHECK], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dim"] == 5 and result["conv"] == "EquivariantConv" and result["dir"]
    # nothing heavy is imported by `import eqgeo`; eqgeo.nn is imported on first access only
    assert result["before"] == []
    assert result["after"] == ["eqgeo.nn"]


@pytest.mark.parametrize("name", ["o3", "nn", "data", "datasets", "models", "testing", "calculators"])
def test_every_subpackage_is_an_attribute(name):
    module = getattr(eqgeo, name)
    assert module.__name__ == f"eqgeo.{name}"
    assert name in eqgeo.__all__ and name in dir(eqgeo)


def test_training_is_listed():
    # listed without importing it here (it pulls in Lightning and Hydra)
    assert "training" in eqgeo.__all__ and "training" in dir(eqgeo)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match=r"module 'eqgeo' has no attribute 'nope'; its subpackages are \[.*'nn'"):
        _ = eqgeo.nope
    assert not hasattr(eqgeo, "nope")
    assert eqgeo.__version__
