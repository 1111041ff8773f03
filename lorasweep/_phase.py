"""What a trial is doing now, and how far it is: the phases a progress display names.

A trial goes through ``initialising`` (loading the data and the model, applying the variant),
``estimating`` (the batches of a data-driven init's estimation pass), ``training`` (optimizer
steps), ``evaluating`` (examples scored) and ``generating`` (prompts decoded). The code of each
phase calls :func:`report` with its count so far; whoever listens (the worker's reporter, which
writes it where displays read it) is installed with :func:`listening`. Without a listener a
report does nothing, so tasks and the loop report whether or not anyone shows it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["PHASES", "listening", "report"]

PHASES = ("initialising", "estimating", "training", "evaluating", "generating")

_listeners: list[Callable[[str, int, int | None], None]] = []


def report(phase: str, done: int, total: int | None = None) -> None:
    """``done`` of ``total`` units of ``phase`` are finished (total None: not known)."""
    if _listeners:
        _listeners[-1](phase, done, total)


@contextlib.contextmanager
def listening(listener: Callable[[str, int, int | None], None]) -> Iterator[None]:
    """While inside, :func:`report` calls ``listener(phase, done, total)``."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
