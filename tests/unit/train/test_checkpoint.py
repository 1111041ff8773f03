"""Checkpoints and resume on a tiny real BERT: a retried trial continues bit for bit.

A trial is stopped at a step that is not a checkpoint step (so the work after the last checkpoint
is redone); a retry of the same grid point (a new trial number and run folder) finds the
checkpoint and must end with exactly the adapter tensors and scores of a trial never stopped.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from lorasweep.config import ConfigError, TrainConfig, TrialSpec, VariantSpec
from lorasweep.train.checkpoint import DEFAULT_INTERVAL_S, Checkpoints, checkpoint_path
from lorasweep.train.trial import run_trial

STEPS, EVERY, KILL_AT = 8, 4, 7

VARIANTS = {
    "lora": {},
    "dora": {},
    # the budget falls over steps 2..6 and is frozen after: the checkpoint (4) is mid-fall
    "adalora": {"tinit": 1, "tfinal": 2},
    # merges at 3 (before the checkpoint) and 6 (redone after the resume)
    "relora": {"merge_every": 3, "rewarm_steps": 2},
    "lora-ga": {},
    "loramoe": {},
}


def spec_for(model_dir, runs, key="lora", options=None, trial=0, lr=2e-3, **train) -> TrialSpec:
    cfg = {"steps": STEPS, "batch_size": 8, "max_length": 32, "eval_every": 2,
           "estimation_batches": 2, "checkpoint_every": EVERY, **train}
    return TrialSpec(sweep="s", study=f"st-{key}", storage="", trial_number=trial,
                     model=str(model_dir), task="sentiment", task_options={"eval_limit": 8},
                     model_options={}, variant=VariantSpec(key, rank=4, alpha=8,
                                                           options=options or {}),
                     lr=lr, seed=0, train=TrainConfig(**cfg),
                     run_dir=str(runs / key / f"lr={lr:g},seed=0"))


class Crash(Exception):
    """Stands for the process dying: nothing after it runs, only the files stay."""


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_start(self, total_steps):
        pass

    def on_step(self, step, loss):
        if step == self.step:
            raise Crash(step)

    def report(self, step, value):
        return False


def adapter(result):
    return load_file(f"{result.attrs['run_dir']}/adapter/lorasweep_adapter.safetensors")


def assert_same_trial(a, b):
    wa, wb = adapter(a), adapter(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ after resume: {different[:3]}"
    timing = {"tokens_per_second"}
    assert a.value == b.value
    assert {k: v for k, v in a.metrics.items() if k not in timing} == {
        k: v for k, v in b.metrics.items() if k not in timing}
    assert a.attrs["history"] == b.attrs["history"]


@pytest.mark.parametrize("key", list(VARIANTS))
def test_resumed_trial_is_bit_identical(tiny_bert_dir, tmp_path, key):
    options = VARIANTS[key]
    whole = run_trial(spec_for(tiny_bert_dir, tmp_path / "whole", key, options))
    assert whole.attrs["resumed_from_step"] == 0 and whole.attrs["resumes"] == 0
    assert whole.attrs["checkpoint"]["saves"] == 1  # at step 4 (none at the last step)
    assert not checkpoint_path(spec_for(tiny_bert_dir, tmp_path / "whole", key)).exists()

    lost = spec_for(tiny_bert_dir, tmp_path, key, options, trial=0)
    with pytest.raises(Crash):
        run_trial(lost, CrashAt(KILL_AT))
    path = checkpoint_path(lost)
    saved = torch.load(path, weights_only=True)
    assert saved["loop"]["step"] == EVERY
    assert [h["step"] for h in saved["loop"]["history"]] == [2, 4]

    retry = spec_for(tiny_bert_dir, tmp_path, key, options, trial=1)
    assert checkpoint_path(retry) == path  # found by the retry of the same grid point
    resumed = run_trial(retry)
    assert resumed.attrs["resumed_from_step"] == EVERY and resumed.attrs["resumes"] == 1
    assert resumed.attrs["prepare"] == saved["trial"]["prepare"]  # not recomputed
    assert_same_trial(whole, resumed)
    assert not path.exists()  # deleted when the trial completed; the adapter stays


def test_a_resume_inside_the_recent_loss_window_keeps_its_sum(tiny_bert_dir, tmp_path):
    """The recent loss (the last third of the steps: 7, 8, 9 of 9) survives a crash at step 9
    after the checkpoint at 8: the resumed trial's is the uninterrupted one's, bit for bit."""
    whole = run_trial(spec_for(tiny_bert_dir, tmp_path / "whole", steps=9))
    curve = {int(step): loss for step, loss in whole.attrs["loss_curve"]}
    assert whole.metrics["recent_loss"] == pytest.approx((curve[7] + curve[8] + curve[9]) / 3)
    with pytest.raises(Crash):
        run_trial(spec_for(tiny_bert_dir, tmp_path, steps=9), CrashAt(9))
    resumed = run_trial(spec_for(tiny_bert_dir, tmp_path, trial=1, steps=9))
    assert resumed.attrs["resumed_from_step"] == 8
    assert resumed.metrics["recent_loss"] == whole.metrics["recent_loss"]


def test_resume_reports_earlier_scores_and_counts_resumes(tiny_bert_dir, tmp_path):
    class Reports(CrashAt):
        def __init__(self, step=None):
            super().__init__(step)
            self.reports, self.checkpoints = [], []

        def report(self, step, value):
            self.reports.append(step)
            return False

        def on_checkpoint(self, saved):
            self.checkpoints.append(saved)

    first = Reports(3)
    with pytest.raises(Crash):
        run_trial(spec_for(tiny_bert_dir, tmp_path, checkpoint_every=2), first)
    assert [c["step"] for c in first.checkpoints] == [2] and first.checkpoints[0]["bytes"] > 0
    second = Reports(7)
    with pytest.raises(Crash):
        run_trial(spec_for(tiny_bert_dir, tmp_path, trial=1, checkpoint_every=2), second)
    assert second.reports[:1] == [2]  # the lost trial's score, reported to the new trial first
    assert [c["step"] for c in second.checkpoints] == [4, 6]
    last = Reports()
    result = run_trial(spec_for(tiny_bert_dir, tmp_path, trial=2, checkpoint_every=2), last)
    assert result.attrs["resumed_from_step"] == 6 and result.attrs["resumes"] == 2
    assert last.reports == [2, 4, 6]
    assert result.attrs["checkpoint"]["saves"] == 0 and result.attrs["checkpoint"]["every"] == 2


def test_a_killed_save_leaves_the_previous_checkpoint(tiny_bert_dir, tmp_path):
    spec = spec_for(tiny_bert_dir, tmp_path)
    with pytest.raises(Crash):
        run_trial(spec, CrashAt(5))
    path = checkpoint_path(spec)
    good = path.read_bytes()
    # a save that dies half-way (here: the pickler meets an object it cannot write)
    checkpoints = Checkpoints.for_trial(spec)
    with pytest.raises(Exception, match="pickle|lambda"):
        checkpoints.save({"loop": {"step": 6}, "adapter": {"x": torch.zeros(1000)},
                          "broken": lambda: None})
    assert path.read_bytes() == good and not list(path.parent.glob(".*.tmp"))
    # a process killed during a save leaves its temporary file: the checkpoint is still read
    (path.parent / f".{path.name}.999.tmp").write_bytes(good[: len(good) // 2])
    assert Checkpoints.for_trial(spec).load()["loop"]["step"] == EVERY
    Checkpoints.for_trial(spec).delete()
    assert not path.exists() and not list(path.parent.glob(".*.tmp"))


def test_checkpoint_of_other_settings_or_off_is_not_used(tiny_bert_dir, tmp_path):
    spec = spec_for(tiny_bert_dir, tmp_path)
    with pytest.raises(Crash):
        run_trial(spec, CrashAt(5))
    other = dataclasses.replace(spec, trial_number=1,
                                train=dataclasses.replace(spec.train, warmup_ratio=0.2))
    assert checkpoint_path(other) == checkpoint_path(spec)
    assert Checkpoints.for_trial(other).load() is None  # same grid point, other settings
    # the bookkeeping settings are not part of it: another interval still resumes
    later = dataclasses.replace(spec, train=dataclasses.replace(spec.train, checkpoint_every=3))
    assert Checkpoints.for_trial(later).load()["loop"]["step"] == EVERY

    off = spec_for(tiny_bert_dir, tmp_path / "off", checkpoint_every=0)
    with pytest.raises(Crash):
        run_trial(off, CrashAt(5))
    assert checkpoint_path(off).parent.is_dir() and not checkpoint_path(off).exists()


def test_default_interval_is_time_based_and_validation():
    auto = Checkpoints(path=None, fingerprint="", every=None)
    assert not auto.due(50, DEFAULT_INTERVAL_S - 1) and auto.due(51, DEFAULT_INTERVAL_S)
    assert Checkpoints(path=None, fingerprint="", every=5).due(10, 0.0)
    assert not Checkpoints(path=None, fingerprint="", every=0).enabled
    for bad in (-1, 2.5, True, "ten"):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            TrainConfig(checkpoint_every=bad).validate()
    TrainConfig(checkpoint_every=0).validate()
    from_text = TrainConfig(checkpoint_every="10")  # as --set and YAML may give it
    from_text.validate()
    assert from_text.checkpoint_every == 10


@pytest.mark.parametrize("key", list(VARIANTS))
def test_rungs_of_one_point_are_the_whole_run_cut_in_pieces(tiny_bert_dir, tmp_path, key):
    """The adaptive search's rungs (a quarter, half, then all of the schedule) resume one run:
    the last one's adapter, metrics and history are the uninterrupted trial's, bit for bit."""
    options = VARIANTS[key]
    whole = run_trial(spec_for(tiny_bert_dir, tmp_path / "whole", key, options))
    reached = []
    for trial, budget in enumerate((0.25, 0.5, 1.0)):
        spec = dataclasses.replace(spec_for(tiny_bert_dir, tmp_path, key, options, trial=trial),
                                   budget=budget)
        result = run_trial(spec)
        reached.append((result.attrs["resumed_from_step"], result.metrics["steps"]))
        if budget < 1.0:  # a rung: validation only, its checkpoint kept for the next
            assert result.metrics["test_accuracy"] != result.metrics["test_accuracy"]  # NaN
            assert 0 < result.metrics["validation_loss"] < 5
            assert 0 < result.metrics["recent_loss"] < 5  # what ranks a rung's ties
            assert checkpoint_path(spec).exists()
            assert not (tmp_path / key / "lr=0.002,seed=0" / "adapter").exists()
    assert reached == [(0, 2), (2, 4), (4, 8)]
    assert_same_trial(whole, result)
    assert not checkpoint_path(spec).exists()


def test_a_rung_retried_at_its_own_last_step_does_not_repeat_it(tiny_bert_dir, tmp_path):
    """Killed after its rung's checkpoint (during the evaluation): the retry trains nothing
    and records the rung's evaluation once."""
    first = dataclasses.replace(spec_for(tiny_bert_dir, tmp_path), budget=0.5)
    a = run_trial(first)
    b = run_trial(dataclasses.replace(first, trial_number=1))
    assert b.attrs["resumed_from_step"] == 4 and b.metrics["steps"] == 4
    assert [h["step"] for h in b.attrs["history"]] == [2, 4]
    assert b.value == a.value and b.attrs["history"] == a.attrs["history"]
