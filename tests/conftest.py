"""Shared fixtures: deterministic seeds, float32/float64 parametrisation, shared data path."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

# Tolerances per dtype for quantities of order one.
TOLERANCES = {torch.float32: 1e-5, torch.float64: 1e-10}

SHARED_DATA = Path(os.environ.get("EQGEO_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


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
    """``../shared/data`` next to the repository; tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set EQGEO_SHARED_DATA)")
    return SHARED_DATA
