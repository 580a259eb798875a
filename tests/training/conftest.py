"""Fixtures of the eqgeo-train tests (settings and helpers shared as code live in ``_helpers.py``)."""

import pytest


@pytest.fixture
def shared_data_env(shared_data, monkeypatch):
    """``EQGEO_SHARED_DATA`` pointing at the shared data, which the rMD17 and docking configs read."""
    monkeypatch.setenv("EQGEO_SHARED_DATA", str(shared_data))
    return shared_data
