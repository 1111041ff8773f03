"""Progress: an ETA from finished trials, labelled result lines, failure reasons, and the display
of trials that run in other processes, read from a real store."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.launch.poll import StoreWatcher
from lorasweep.launch.progress import SweepProgress, estimate_eta, result_line
from lorasweep.sweep.outcome import PROGRESS_ATTR, TrialOutcome, one_line
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import sync_sweep


def test_eta_from_finished_durations():
    assert estimate_eta([], 5, []) is None  # nothing finished yet: unknown, not zero
    assert estimate_eta([10.0, 20.0], 4, []) == pytest.approx(60.0)
    assert estimate_eta([10.0, 20.0], 4, [], workers=2) == pytest.approx(30.0)
    # time already spent by running trials counts, but never more than a mean trial each
    assert estimate_eta([10.0], 3, [4.0]) == pytest.approx(26.0)
    assert estimate_eta([10.0], 1, [50.0]) == 0.0


def test_result_lines_label_validation_and_test_and_show_the_reason():
    ok = result_line("lora-r8-a16 lr=1e-3 seed=0",
                     TrialOutcome("completed", 0.786, 0.781, "accuracy", None, 12.4))
    assert "completed" in ok and "val accuracy 0.7860" in ok and "test 0.7810" in ok
    assert ok.endswith("12s")
    failed = result_line("lora-r8-a16 lr=1e-2 seed=0",
                         TrialOutcome("failed", reason="RuntimeError: CUDA out of memory"))
    assert "failed" in failed and "RuntimeError: CUDA out of memory" in failed
    assert one_line("ValueError: bad\n  more detail\n") == "ValueError: bad"
    assert len(one_line("x" * 500)) == 160


@pytest.fixture
def store(tmp_path):
    url = f"journal:{tmp_path / 'studies.journal'}"
    spec = SweepSpec(name="p", variants=[VariantSpec("lora")], lrs=[1e-4, 1e-3, 1e-2],
                     runs_dir=str(tmp_path / "runs"))
    (sync,) = sync_sweep(spec, open_storage(url))
    return url, sync.study


def _ask(study):
    trial = study.ask()
    trial.suggest_float("lr", 1e-12, 1e3, log=True)
    trial.suggest_int("seed", 0, 2**31 - 1)
    return trial


def test_store_snapshot_shows_steps_results_and_reasons(store):
    import optuna

    url, name = store
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    done_before = _ask(study)
    study.tell(done_before, 0.5)  # finished before the launch: never shown again
    watcher = StoreWatcher(url, [name])
    running, ok = _ask(study), _ask(study)
    running.set_user_attr(PROGRESS_ATTR, {"step": 3, "total": 10, "loss": 0.25})
    for key, value in {"metric": "accuracy", "test_accuracy": 0.7}.items():
        ok.set_user_attr(key, value)
    study.tell(ok, 0.75)
    snap = watcher.poll()
    assert [v.key[1] for v in snap.running] == [running.number]
    assert (snap.running[0].step, snap.running[0].total) == (3, 10)
    assert snap.running[0].label == "lora-r8-a16 lr=1e-3 seed=0"  # grid order
    (fin,) = snap.finished
    assert fin.outcome.state == "completed" and fin.outcome.validation == 0.75
    assert fin.outcome.test == 0.7 and snap.done == 1

    running.set_user_attr("fail_reason", "RuntimeError: boom\nTraceback ...")
    study.tell(running, state=optuna.trial.TrialState.FAIL)
    out = io.StringIO()
    display = SweepProgress(2, Console(file=out, width=200, color_system=None))
    with display:
        display.store_update(snap)
        assert display.bars and display.eta() is not None
        display.store_update(watcher.poll())
        display.store_update(watcher.poll())  # a line is printed once
    text = out.getvalue()
    assert text.count("val accuracy 0.7500  test 0.7000") == 1
    assert text.count("failed    RuntimeError: boom") == 1 and "Traceback" not in text
    assert "lr=1e-3 seed=0" in text and "lr=1e-2 seed=0" in text
    assert not display.bars and display.progress.tasks[display.sweep].completed == 2


def test_in_process_events_draw_a_step_bar_and_time_it(store):
    out = io.StringIO()
    display = SweepProgress(1, Console(file=out, width=200, color_system=None))

    class Spec:  # the fields of a TrialSpec the display reads
        study, trial_number, lr, seed, budget = "s", 0, 3e-3, 1, 1.0
        variant = VariantSpec("dora")

    with display:
        display.trial_started(Spec, 10)
        display.trial_step(4, 0.5)
        bar = display.progress.tasks[-1]
        assert (bar.completed, bar.total) == (4, 10)
        time.sleep(0.05)
        display.trial_finished(Spec, "diverged", 0.5,
                               TrialOutcome("diverged", 0.5, 0.5, "accuracy", None, None))
    assert "dora-r8-a16 lr=3e-3 seed=1" in out.getvalue() and "diverged" in out.getvalue()
    assert display.durations and display.durations[0] >= 0.05
    assert display.eta() == 0.0
