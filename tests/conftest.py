"""Shared fixtures: the digits data set and one batch of it; one torch thread for a module of tiny models; the
thread count put back after a command that sets its own."""
from __future__ import annotations

import pytest
import torch

from bench.data import BatchStream, load_dataset, resolve_data_root


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", resolve_data_root(None))


@pytest.fixture(scope="session")
def digits_batch(digits):
    return BatchStream(digits, 32, seed=0).batch(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and on a shared CPU two threads can be 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def threads():
    """Commands run in the test process set torch's thread count (--threads): put it back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
