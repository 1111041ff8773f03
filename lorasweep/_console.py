"""The console every command prints through: a rich ``Console`` whose prints never interleave
with the refresh of a live display it hosts.

A rich ``Live`` display (the sweep's progress bars) is redrawn by its own thread, under the
display's lock. A print from another thread (a finished trial's result line, a warning, a
library's output that the display redirects) takes that lock only while it computes how far up
to move over the last frame; it then renders the new frame and writes it outside the lock. A
refresh that lands in between draws a frame of another height (a trial bar added or removed), and
the print's cursor movement no longer matches the screen: it moves up one line more than the
frame and erases a line it did not draw (the header's wrapped tail, a result line), or one line
less and leaves a stale bar in the scrollback. :class:`DisplayConsole` holds the display's lock
for the whole print, so a print and a refresh are each written whole, one after the other.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

__all__ = ["DisplayConsole"]


class DisplayConsole(Console):
    """A ``Console`` whose ``print`` holds the lock of the live display it shows, if any."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        live = self._live_stack[0] if self._live_stack else None
        lock = getattr(live, "_lock", None)  # rich's refresh thread holds it for each redraw
        if lock is None:
            super().print(*objects, **kwargs)
            return
        with lock:
            super().print(*objects, **kwargs)
