"""Variant tests run tiny models: one intra-op thread is faster for them, and keeps them fast
when other processes share the CPUs (thread pools of tiny ops otherwise spin and stall)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
