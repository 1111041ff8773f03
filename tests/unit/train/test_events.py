"""The trial's event log (``events.jsonl``) on a tiny real BERT: a line per optimizer step with
the loss, each parameter group's LR and gradient norm, and tokens; a line per evaluation; a
resumed trial continues from its checkpoint's step, each step logged once."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from lorasweep.config import TrainConfig, TrialSpec, VariantSpec
from lorasweep.train.events import EventLog, loss_curve, read_events
from lorasweep.train.loop import lr_lambda
from lorasweep.train.trial import run_trial

STEPS = 8


def spec_for(model_dir, runs, **train) -> TrialSpec:
    cfg = {"steps": STEPS, "batch_size": 8, "max_length": 32, "eval_every": 2,
           "estimation_batches": 2, "checkpoint_every": 4, **train}
    return TrialSpec(sweep="s", study="st", storage="", trial_number=0, model=str(model_dir),
                     task="sentiment", task_options={"eval_limit": 8}, model_options={},
                     variant=VariantSpec("lora", rank=4, alpha=8), lr=2e-3, seed=0,
                     train=TrainConfig(**cfg), run_dir=str(runs / "lr=0.002,seed=0"))


class Crash(Exception):
    """Stands for the process dying: nothing after it runs, only the files stay."""


class Logged:
    """A reporter that keeps the event log, as the worker's does; raises Crash at ``crash``."""

    def __init__(self, run_dir, crash=None):
        self.log, self.crash = EventLog(run_dir), crash

    def on_start(self, total_steps):
        pass

    def on_step(self, step, loss):
        if step == self.crash:
            raise Crash(step)

    def report(self, step, value):
        return False

    def on_event(self, record):
        if record["event"] == "start":
            self.log.start(record["step"])
        else:
            self.log.write(record)


def test_each_step_and_evaluation_is_logged(tiny_bert_dir, tmp_path):
    spec = spec_for(tiny_bert_dir, tmp_path, max_grad_norm=1e-3)  # every step is clipped
    reporter = Logged(spec.run_dir)
    result = run_trial(spec, reporter)
    reporter.log.close()
    events = read_events(spec.run_dir)
    steps = [r for r in events if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    # the LR the optimizer used at each step: the schedule's factor at the step before it moved
    factor = lr_lambda(spec.train, STEPS)
    for r in steps:
        assert set(r["lr"]) == {"adapter", "heads"}  # a classifier trains its head too
        assert r["lr"]["adapter"] == pytest.approx(spec.lr * factor(r["step"] - 1))
        # the norm before clipping (clipped to 1e-3, it would be at most that), and per group
        groups = r["grad_norm_groups"]
        assert r["grad_norm"] > 1e-2
        assert r["grad_norm"] == pytest.approx(math.hypot(groups["adapter"], groups["heads"]),
                                               rel=1e-4)
    assert [r["tokens"] for r in steps] == sorted({r["tokens"] for r in steps})
    assert [[r["step"], r["loss"]] for r in steps if r["step"] in (1, STEPS)] == [
        result.attrs["loss_curve"][0], result.attrs["loss_curve"][-1]]
    evals = [r for r in events if r["event"] == "eval"]
    assert [(r["step"], r["validation"]) for r in evals] == [
        (h["step"], h["validation"]) for h in result.attrs["history"]]
    assert [r.get("final", False) for r in evals] == [False, False, False, True]
    assert evals[-1]["test"] == result.metrics["test_accuracy"]
    assert loss_curve(spec.run_dir) == [[r["step"], r["loss"]] for r in steps]
    assert loss_curve(spec.run_dir, points=3) == [[r["step"], r["loss"]]
                                                  for r in steps if r["step"] in (1, 5, 8)]


def test_a_resumed_trial_logs_each_step_once(tiny_bert_dir, tmp_path):
    """Killed at step 7 (after its checkpoint at 4, steps 5-7 logged): the retry drops 5-7 and
    logs them again, as the trial never stopped would have."""
    spec = spec_for(tiny_bert_dir, tmp_path)
    with pytest.raises(Crash):
        run_trial(spec, Logged(spec.run_dir, crash=7))
    before = read_events(spec.run_dir)
    assert [r["step"] for r in before if r["event"] == "step"] == list(range(1, 8))
    with open(f"{spec.run_dir}/events.jsonl", "a") as f:
        f.write('{"event": "step", "st')  # the line a killed process leaves cut short
    retry = Logged(spec.run_dir)
    result = run_trial(dataclasses.replace(spec, trial_number=1), retry)
    retry.log.close()
    assert result.attrs["resumed_from_step"] == 4
    events = read_events(spec.run_dir)
    steps = [r for r in events if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert steps[:4] == [r for r in before if r["event"] == "step"][:4]
    assert [r["step"] for r in events if r["event"] == "eval"] == [2, 4, 6, 8]

    fresh_dir = tmp_path / "fresh"
    fresh_spec = dataclasses.replace(spec, run_dir=str(fresh_dir), study="other")
    fresh = Logged(fresh_spec.run_dir)
    run_trial(fresh_spec, fresh)
    fresh.log.close()
    unstopped = [r for r in read_events(fresh_dir) if r["event"] == "step"]
    assert [(r["step"], r["loss"], r["lr"]) for r in steps] == [
        (r["step"], r["loss"], r["lr"]) for r in unstopped]


def test_non_finite_numbers_are_null_and_a_new_start_truncates(tmp_path):
    log = EventLog(tmp_path)
    log.start(0)
    log.write({"event": "step", "step": 1, "loss": math.inf})
    log.write({"event": "eval", "step": 1, "validation": 0.5})
    assert not log.write({"event": "eval", "step": 1, "validation": 0.5})  # logged once
    log.write({"event": "step", "step": 2, "loss": 1.0})
    log.start(1)
    log.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"event": "step", "step": 1, "loss": None},
                                                   {"event": "eval", "step": 1, "validation": 0.5}]
    EventLog(tmp_path).start(0)
    assert read_events(tmp_path) == []
