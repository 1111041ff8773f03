"""Variant tests run tiny models: one intra-op thread is faster for them, and keeps them fast
when other processes share the CPUs (thread pools of tiny ops otherwise spin and stall)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
