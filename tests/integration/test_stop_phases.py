"""One Ctrl-C or one SIGTERM stops a real ``lorasweep run`` in any phase, within seconds.

The whole CLI runs on the local launcher (one worker process) against a real SQLite store, on
the tiny BERT. The test waits until the store shows the trial in the phase under test (the
progress the launcher's display reads), then stops the run: Ctrl-C as a terminal sends it (SIGINT
to the process group) during LoRA-GA's gradient estimation (100,000 estimation batches: it would
run for minutes), SIGTERM to the launcher alone (``kill PID``, ``timeout``) during an evaluation
(batches of one example over the 1,500 validation and test snippets). The run exits within a
generous bound with the code for its signal, prints no traceback, and leaves no trial RUNNING:
the stopped one failed with the reason, its grid point queued again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[2]


def _trials(store: str) -> list:
    trials = []
    for name in optuna.get_all_study_names(store):
        trials += optuna.load_study(study_name=name, storage=store).get_trials()
    return trials


def _wait_for_phase(store: str, phase: str, proc: subprocess.Popen) -> dict:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            running = [t for t in _trials(store) if t.state == TrialState.RUNNING]
        except Exception:  # the store or its study is not there yet
            continue
        for trial in running:
            progress = trial.user_attrs.get("progress") or {}
            if progress.get("phase") == phase:
                return progress
    os.killpg(proc.pid, signal.SIGKILL)  # its workers too: they hold the output pipe
    out = proc.communicate()[0]
    pytest.fail(f"no trial showed {phase!r} before the deadline:\n{out[-3000:]}")


def _as_from_a_terminal() -> None:
    """SIGINT's default action, as a command typed in a terminal has (a test started in the
    background inherits an ignored SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("phase", "flags", "sig", "group"), [
    ("estimating", ["--variant", "lora-ga", "--set", "train.estimation_batches=100000"],
     signal.SIGINT, True),
    ("evaluating", ["--variant", "lora", "--batch-size", "1"], signal.SIGTERM, False),
])
def test_one_signal_stops_any_phase(tiny_bert_dir, tmp_path, phase, flags, sig, group):
    store = f"sqlite:///{tmp_path / 's.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LORASWEEP_PROGRESS_INTERVAL"] = "0.5"
    cmd = [sys.executable, "-m", "lorasweep", "run", "--model", str(tiny_bert_dir), *flags,
           "--lrs", "1e-3,1e-2", "--steps", "1", "--launcher", "local", "--workers", "1",
           "--storage", store]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_as_from_a_terminal)
    shown = _wait_for_phase(store, phase, proc)
    assert shown["of"] and shown["of"] > 1  # its own count: N estimation batches, N examples
    if group:
        os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C: the whole process group
    else:
        os.kill(proc.pid, sig)
    try:
        out = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 60 s after {sig.name}:\n{proc.communicate()[0][-3000:]}")
    assert proc.returncode == 128 + sig, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "stopped by" in out, out[-3000:]

    trials = _trials(store)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1, [(t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert failed[0].user_attrs["fail_reason"].startswith("stopped by SIGTERM")
    assert failed[0].user_attrs["progress"]["phase"] == phase  # stopped in that phase
    waiting = [t.user_attrs["grid_point"] for t in trials if t.state == TrialState.WAITING]
    assert failed[0].user_attrs["grid_point"] in waiting  # queued again: a rerun retries it
