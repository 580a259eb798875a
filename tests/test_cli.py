"""The console scripts: one module, runtime settings made before torch loads."""

import json
import os
import subprocess
import sys
import tomllib

import pytest

from .helpers import REPO

_PROBE = """
import json, os, sys
import eqgeo, eqgeo.cli
before = "torch" in sys.modules
done = eqgeo.cli.configure_process()
import torch
print(json.dumps({"torch_before": before, "done": sorted(done), "policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _probe(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "EQGEO_MALLOC")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_console_script_is_in_eqgeo_cli():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"eqgeo-train", "eqgeo-evaluate", "eqgeo-export", "eqgeo-dock", "eqgeo-leaderboard", "eqgeo-demo"}
    for target in scripts.values():
        module, func = target.split(":")
        assert module == "eqgeo.cli", target
        import eqgeo.cli

        assert callable(getattr(eqgeo.cli, func))


@pytest.mark.skipif(sys.platform != "linux", reason="mallopt is glibc's")
def test_configure_process_before_torch_and_respects_the_user():
    result = _probe({})
    assert result == {"torch_before": False, "done": ["OMP_WAIT_POLICY", "malloc"], "policy": "PASSIVE"}
    # the user's own choice is kept; malloc tuning can be turned off
    result = _probe({"OMP_WAIT_POLICY": "ACTIVE", "EQGEO_MALLOC": "0"})
    assert result == {"torch_before": False, "done": [], "policy": "ACTIVE"}


def test_no_policy_once_torch_is_loaded():
    # negative control: OpenMP reads the variable when torch loads, so setting it later would only mislead
    code = ("import os, sys, torch, eqgeo.cli; os.environ.pop('OMP_WAIT_POLICY', None); "
            "print('OMP_WAIT_POLICY' in eqgeo.cli.configure_process())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
