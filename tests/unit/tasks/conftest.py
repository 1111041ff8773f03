"""Task tests: tiny real models, one torch thread (other test runs share the CPUs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP vision tower with an image processor (see helpers.make_tiny_clip)."""
    from helpers import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
