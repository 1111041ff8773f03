"""Loading from the Hugging Face Hub: every way it fails becomes one line that says the fix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .base import HubDataError

__all__ = ["hub_errors"]


@contextlib.contextmanager
def hub_errors(task: str, source: str, hint: str) -> Iterator[None]:
    """Turn any failure inside the block (offline, hub down, nothing cached) into a HubDataError:
    ``TASK: cannot load SOURCE from the Hugging Face Hub (first line of the reason); HINT``."""
    try:
        yield
    except Exception as err:  # offline, hub down, no cache: all end here with the fix
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise HubDataError(f"{task}: cannot load {source} from the Hugging Face Hub ({reason}); "
                        f"{hint}") from None
