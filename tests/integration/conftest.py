"""Fixtures shared by integration test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train and generate several times faster on one thread when other jobs share the cores; modules
    opt in with `pytestmark = pytest.mark.usefixtures("one_thread")` (or by naming the fixture)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
