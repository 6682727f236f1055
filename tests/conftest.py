"""Shared fixtures: the digits data set and one batch of it."""
from __future__ import annotations

import pytest

from bench.data import BatchStream, load_dataset, resolve_data_root


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", resolve_data_root(None))


@pytest.fixture(scope="session")
def digits_batch(digits):
    return BatchStream(digits, 32, seed=0).batch(0)
