"""The test helpers of tests/training themselves: what makes a missing console script a skip or a failure."""

import pytest

from ._helpers import console_script


@pytest.mark.parametrize("ci", [None, "false", "true"])
def test_a_missing_console_script_skips_but_fails_under_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no console script anywhere
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(outcome, match="the eqgeo-train console script is not on PATH"):
        console_script("eqgeo-train")


def test_a_console_script_on_path_is_found(tmp_path, monkeypatch):
    script = tmp_path / "eqgeo-train"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert console_script("eqgeo-train") == str(script)
