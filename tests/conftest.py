"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: intra-op threads only add synchronization (and stall badly on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def family_registry():
    """Restore the model-family registry (and forget cached costs) after a test that registers
    families of its own."""
    from collegial.models import registry as reg
    from collegial.models.costs import _cached
    from collegial.search import solve

    saved = dict(reg._FAMILIES)
    yield
    reg._FAMILIES.clear()
    reg._FAMILIES.update(saved)
    _cached.cache_clear()
    solve.cost_table.cache_clear()
