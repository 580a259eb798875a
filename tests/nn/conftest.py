"""Fixtures of the layer tests."""

import pytest

from ..helpers import reset_dynamo

# compile checks leave dynamo caches behind: every layer test starts and ends with a clean state
_reset_dynamo = pytest.fixture(autouse=True)(reset_dynamo)
