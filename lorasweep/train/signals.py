"""Stop requests: SIGTERM and SIGUSR2 become "checkpoint at the next step, then stop".

A scheduler asks a process to stop with a signal (``kill``, ``scancel``, a preemption, a time
limit; SLURM's ``--signal`` and submitit use SIGUSR2). Acting inside the handler would save a
half-done optimizer step, so the handler only records the request; the training loop looks at
it after every optimizer step, saves a checkpoint there and raises :class:`TrialStopped`. Whoever
installed the handlers (the worker loop, or the training loop when run on its own) records the
stopped trial and then :meth:`StopRequests.forward` hands the signal to the handler that was
there before: the default one ends the process as the signal would have; submitit's requeues the
job. Handlers can only be installed from the main thread; elsewhere nothing is installed.

A phase with no optimizer step to finish (loading, the gradient estimation of a data-driven init,
an evaluation, generation) may last minutes: inside :func:`interruptible` a stop request raises
:class:`TrialStopped` at once (within the current tensor operation), so a signal stops any phase
within seconds; the trial keeps the checkpoint it saved last (none: its retry starts over).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopRequests", "TrialStopped", "active", "interruptible", "requested"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
_active: list[StopRequests] = []


class TrialStopped(KeyboardInterrupt):
    """The process was asked to stop; the trial's state was saved at ``step`` (if checkpointing
    is on). A KeyboardInterrupt, so code that catches ``Exception`` lets it through."""

    def __init__(self, signum: int, step: int, saved: bool):
        self.signum, self.step, self.saved = signum, step, saved
        name = signal.Signals(signum).name
        what = f"checkpoint saved at step {step}" if saved else f"no checkpoint (step {step})"
        super().__init__(f"stopped by {name}: {what}")


class StopRequests:
    """Context manager: while inside, STOP_SIGNALS are recorded in ``signum`` (the first one)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        #: Inside :func:`interruptible`: the last saved step, and whether a checkpoint holds it.
        self._phase: tuple[int, bool] | None = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if self._phase is not None:  # no step to finish: stop now
            step, saved = self._phase
            self._phase = None  # raised once; the stop is still recorded for forward()
            raise TrialStopped(signum, step, saved)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _active.remove(self)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def forward(self) -> None:
        """Give a recorded signal to the handler that was installed before (call after exit)."""
        signum, self.signum = self.signum, None
        if signum is None:
            return
        handler = signal.getsignal(signum)
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)


@contextlib.contextmanager
def interruptible(step: int = 0, saved: bool = False) -> Iterator[None]:
    """While inside, a stop request (one that came before included) raises TrialStopped at
    once; ``step``/``saved``: what the trial has saved so far. Without StopRequests: nothing."""
    stops = active()
    if stops is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if stops.signum is not None:
        raise TrialStopped(stops.signum, step, saved)
    outer, stops._phase = stops._phase, (step, saved)
    try:
        yield
    finally:
        stops._phase = outer if stops._phase is not None else None


def active() -> StopRequests | None:
    """The innermost installed StopRequests (None outside any)."""
    return _active[-1] if _active else None


def requested() -> int | None:
    """The signal that asked this process to stop, if any arrived."""
    for stops in _active:
        if stops.signum is not None:
            return stops.signum
    return None
