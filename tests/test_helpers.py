"""The suite's own prerequisites policy: skip locally, fail under CI=true."""

import pytest

from .helpers import oracle, require, shared_path


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_prerequisite_skips_locally_and_fails_in_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="no_such_oracle_module"):
        oracle("no_such_oracle_module")
    with pytest.raises(expected, match="a C compiler"):
        require("a C compiler")
    with pytest.raises(expected, match="no-such-folder"):
        shared_path("no-such-folder")


def test_present_prerequisites_are_returned(monkeypatch):
    assert shared_path().is_dir()  # skipped locally (fails in CI) without ../shared/data
    monkeypatch.setenv("CI", "true")
    assert oracle("math").sqrt(4.0) == 2.0
