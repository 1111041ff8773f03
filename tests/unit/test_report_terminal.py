"""The report's terminal output names what its tables leave out: failed (with the reason),
pruned and unfinished trials, and how many diverged."""

from __future__ import annotations

import io

from rich.console import Console

from lorasweep.report.terminal import render_left_out


def _row(state, lr, **extra):
    return {"state": state, "lr": lr, "seed": 0, "variant_tag": "dora-r8-a16", "task": "sentiment",
            "diverged": False, "fail_reason": None, **extra}


def _render(rows) -> str:
    out = io.StringIO()
    render_left_out(rows, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_failed_pruned_and_unfinished_trials_are_named():
    rows = [_row("complete", 1e-3), _row("complete", 1e-1, diverged=True),
            _row("fail", 1e-2, fail_reason="RuntimeError: out of [memory]\nTraceback (most recent)"),
            _row("pruned", 1e-5), _row("running", 3e-3)]
    text = _render(rows)
    assert "1 trial diverged" in text
    assert "not in the tables: 1 failed trial, 1 pruned trial, 1 unfinished trial" in text
    assert "failed     dora-r8-a16 lr=1e-2 seed=0 (sentiment): RuntimeError: out of [memory]" in text
    assert "pruned     dora-r8-a16 lr=1e-5 seed=0" in text
    assert "unfinished dora-r8-a16 lr=3e-3 seed=0" in text
    assert "Traceback" not in text


def test_nothing_left_out_prints_nothing():
    assert _render([_row("complete", 1e-3)]) == ""


def test_many_failures_are_counted_not_all_listed():
    text = _render([_row("fail", 10.0 ** -k, fail_reason="boom") for k in range(1, 15)])
    assert "14 failed trials" in text and text.count(": boom") == 10
    assert "... and 4 more failed" in text
