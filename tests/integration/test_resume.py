"""A sweep stopped mid-trial resumes where it stopped, on the inline and the local launcher.

The sweep runs in its own process against a real SQLite store. Once its trial has written a
checkpoint, the process group is asked to stop: SIGTERM on the inline launcher; Ctrl-C (SIGINT)
on the local launcher, whose parent then terminates its worker process (the worker ignores
SIGINT). The stopped trial is failed with the reason, its grid point re-enqueued at once, and the
next run resumes it from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch.run import run_sweep
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import grid_point, study_name

REPO = Path(__file__).resolve().parents[2]
#: Long enough that the trial is still training when the stop arrives (the signal reaches the
#: local launcher's worker only after the parent's next poll); each step is milliseconds here.
STEPS = 400

_SWEEP = """
import sys
from lorasweep.config import SweepSpec
from lorasweep.launch.run import run_sweep
run_sweep(SweepSpec.from_dict({spec!r}))
"""


def _spec(model: Path, tmp_path: Path, launcher: str) -> SweepSpec:
    return SweepSpec(
        name="resume", model=str(model), task="sentiment", launcher=launcher,
        variants=[VariantSpec("lora", rank=4, alpha=8)], lrs=[1e-3], seeds=[0],
        train=TrainConfig(steps=STEPS, batch_size=8, max_length=32, checkpoint_every=5),
        task_options={"eval_limit": 8}, storage=f"sqlite:///{tmp_path / 's.db'}",
        runs_dir=str(tmp_path / "runs"),
    )


def _study(spec: SweepSpec):
    storage = open_storage(spec.storage, create=False)
    return optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)


def _wait_for_checkpoint(spec: SweepSpec, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            running = _study(spec).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the store or study is not there yet
            continue
        if running and "checkpoint" in running[0].user_attrs:
            return
    proc.kill()
    pytest.fail("no checkpoint before the deadline: " + proc.stderr.read().decode()[-2000:])


def _workers_in_group(pgid: int) -> list[int]:
    """The local launcher's worker processes still alive in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _as_from_a_terminal() -> None:
    """In the child: SIGINT's default action, as a command typed in a terminal has. A test run
    started in the background (``cmd &`` in a script) ignores SIGINT, and an ignored signal is
    inherited: the sweep would then never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("launcher", "sig", "group"), [("inline", signal.SIGTERM, True),
                                                        ("local", signal.SIGINT, True),
                                                        ("local", signal.SIGTERM, False)])
def test_stopped_sweep_resumes_its_trial(tiny_bert_dir, tmp_path, launcher, sig, group):
    """``group``: the signal goes to the process group, as a terminal's Ctrl-C does; else to the
    launcher alone, as ``kill PID`` does, and it stops its workers."""
    spec = _spec(tiny_bert_dir, tmp_path, launcher)
    data = {**spec.to_dict(), "variants": [{"key": "lora", "rank": 4, "alpha": 8}]}
    open_storage(spec.storage)  # the store's tables exist before two processes open it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"),
                                                                       os.environ.get("PYTHONPATH")]))}
    # the real trial, each step >= 20 ms: the signal lands mid-trial however fast the machine
    # (unpaced, a cached tiny model finished all its steps between the checkpoint and the signal)
    env.update(LORASWEEP_TRIAL_FUNCTION="helpers:paced_trial", LORASWEEP_TEST_STEP_S="0.02")
    proc = subprocess.Popen([sys.executable, "-c", _SWEEP.format(spec=data)], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_as_from_a_terminal)
    _wait_for_checkpoint(spec, proc)
    if group:
        os.killpg(proc.pid, sig)  # as a terminal does: the whole process group (workers too)
    else:
        os.kill(proc.pid, sig)
    assert proc.wait(timeout=120) != 0
    assert not _workers_in_group(proc.pid)  # no worker runs on without its launcher

    trials = _study(spec).get_trials()
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1, [(t.state, t.user_attrs.get("fail_reason")) for t in trials]
    reason = stopped[0].user_attrs["fail_reason"]
    assert reason.startswith("stopped by SIGTERM: checkpoint saved at step ")
    saved_at = int(reason.rsplit(" ", 1)[1])
    assert saved_at >= 5
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["grid_point"] == grid_point(1e-3, 0)
    assert waiting[0].user_attrs["retry"] == 1

    outcome = run_sweep(dataclasses.replace(spec, launcher="inline"))
    assert outcome.summary.completed == 1 and outcome.skipped == 0
    done = [t for t in _study(spec).get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 1
    assert done[0].user_attrs["resumed_from_step"] == saved_at
    assert done[0].user_attrs["resumes"] == 1 and done[0].user_attrs["steps"] == STEPS
    assert not list((tmp_path / "runs").rglob("*.pt"))  # the checkpoint went with completion

    # the trial's event log continues from the checkpoint: each step once, each with its LR and
    # gradient norm; the final evaluation is also the trial's last intermediate value
    from lorasweep.train.events import read_events

    events = read_events(done[0].user_attrs["run_dir"])
    steps = [r for r in events if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(r["lr"]["adapter"] > 0 and r["grad_norm"] > 0 for r in steps)
    assert steps[-1]["tokens"] > steps[0]["tokens"] > 0
    final = [r for r in events if r["event"] == "eval"]
    assert len(final) == 1 and final[0]["final"] and final[0]["step"] == STEPS
    assert done[0].intermediate_values == {STEPS: final[0]["validation"]}
