"""The live display as a user sees it: each run is recorded in a pseudo-terminal of 80 x 24 and
its bytes replayed through a terminal emulator (pyte), whose scrollback and screen are then what
the user would read.

The display is redrawn by rich's refresh thread while the main thread prints result lines; a
print that a redraw split used to move the cursor over a frame of another height, erasing a line
it did not draw (the header's wrapped tail, a result line) or leaving a stale bar behind. Both
runs set the interpreter's thread switch interval to a microsecond, so that a redraw lands inside
a print as often as it can (with the default 5 ms it happened once or twice a run).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

from helpers import REPO, require

COLUMNS, ROWS = 80, 24
BUSY = "import sys; sys.setswitchinterval(1e-6)\n"


def record(cwd: Path, code: str, timeout: float = 300, **env: str) -> bytes:
    """Run ``python -c CODE`` with stdin, stdout and stderr on a new pseudo-terminal; its bytes."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    environ.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TERM="xterm-256color", **env)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=environ, stdin=follower,
                            stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    data = bytearray()
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"no output for {timeout} s:\n{bytes(data[-2000:])!r}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower side closed: the process ended
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(leader)
        proc.wait(timeout=60)
    assert proc.returncode == 0, bytes(data[-3000:]).decode(errors="replace")
    return bytes(data)


def replay(data: bytes) -> list[str]:
    """The lines a user reads after the run: the emulator's scrollback, then its screen."""
    pyte = require("pyte")
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=100_000)
    pyte.ByteStream(screen).feed(data)
    lines = ["".join(line[x].data for x in range(COLUMNS)).rstrip()
             for line in screen.history.top]
    lines += [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_result_lines_printed_while_the_display_redraws_erase_nothing(tmp_path):
    require("pyte")
    trials = 600
    code = BUSY + textwrap.dedent(f"""
        import time
        from lorasweep.cli._app import err_console
        from lorasweep.launch.progress import SweepProgress
        from lorasweep.sweep.outcome import TrialOutcome
        err_console.print("sweep stress: " + "header words " * 10 + "END", soft_wrap=True,
                          highlight=False)
        with SweepProgress({trials}, err_console, workers=2) as display:
            for i in range({trials}):
                display._running(i, f"lora lr={{i}}", "training", 0, 10)
                time.sleep(0.003)
                display._finished(i, f"lora lr={{i}}", TrialOutcome("completed", 0.5, seconds=1))
        err_console.print("finished")
    """)
    lines = replay(record(tmp_path, code))
    header = " ".join(lines[:2])
    assert header.startswith("sweep stress:") and header.endswith("END"), lines[:3]
    results = [int(m.group(1)) for line in lines
               if (m := re.match(r"  lora lr=(\d+) +completed", line))]
    assert results == list(range(trials)), (
        f"{trials - len(results)} result lines missing or repeated")
    bars = [line for line in lines if line.startswith("sweep ") and "━" in line]
    assert bars == [bars[-1]] and f"{trials}/{trials}" in bars[-1], bars[:5]
    assert lines[-1] == "finished"


def test_the_default_sweep_recorded_in_a_terminal_keeps_every_line(tmp_path):
    require("pyte")
    code = BUSY + "from lorasweep.cli import main\nsys.argv = ['lorasweep', 'run']\nmain()\n"
    lines = replay(record(tmp_path, code, LORASWEEP_SMOKE_TEST="1"))
    first = next(i for i, line in enumerate(lines) if line.startswith("  "))
    header = "".join(lines[:first])  # wrapped at 80 columns, mid-word
    assert header.startswith("sweep default: sentiment on embedded:minilm;"), lines[:first]
    assert header.endswith("x 1 seed"), lines[:first]
    results = [line for line in lines if re.match(r"  \S+ lr=\S+ seed=0 .*completed", line)]
    assert len(results) == 27 and len(set(results)) == 27, "\n".join(lines)
    bars = [line for line in lines if line.startswith("sweep ") and "━" in line]
    assert len(bars) == 1 and "27/27" in bars[0], bars
    assert any(line.startswith("done: 27 completed") for line in lines)
    assert lines[-1].startswith("next: lorasweep report")
