"""Task groups (glue, ic) expand into one study per member task and report their average;
a task's own default budget, grid and model fill what a sweep does not set."""

from __future__ import annotations

import optuna
import pytest

from lorasweep.config import SweepSpec
from lorasweep.launch.run import check_spec
from lorasweep.report.collect import summarise
from lorasweep.sweep.spec import build_spec, sweep_tasks, train_for
from lorasweep.sweep.study import sync_sweep, trial_template
from lorasweep.tasks import base as task_base
from lorasweep.tasks.sentiment import Sentiment


class _GlueA(Sentiment):
    key = "glue-aa"
    default_search = "grid"  # a GLUE stand-in: GLUE's search and variants, not the embedded default's
    default_variants = ("lora",)
    default_train = {"epochs": 2, "batch_size": 16, "max_length": 128}
    default_lrs = (1e-4, 1e-3)


class _GlueB(Sentiment):
    key = "glue-bb"
    default_search = "grid"
    default_variants = ("lora",)


@pytest.fixture
def two_member_group(monkeypatch):
    for key in [k for k in task_base._REGISTRY if k.startswith("glue-")]:
        monkeypatch.delitem(task_base._REGISTRY, key)  # only the two stand-ins form the group
    monkeypatch.setitem(task_base._REGISTRY, "glue-aa", _GlueA)
    monkeypatch.setitem(task_base._REGISTRY, "glue-bb", _GlueB)


def test_group_expands_to_its_members(two_member_group):
    spec = check_spec(build_spec({"task": "glue", "variants": ["lora"]}))
    assert sweep_tasks(spec) == ["glue-aa", "glue-bb"]
    storage = optuna.storages.InMemoryStorage()
    syncs = sync_sweep(spec, storage)
    assert len(syncs) == 2 and {s.enqueued for s in syncs} == {2}
    names = optuna.get_all_study_names(storage)
    assert sorted(n.split("|")[1] for n in names) == ["glue-aa", "glue-bb"]
    attrs = optuna.load_study(study_name=names[0], storage=storage).user_attrs
    assert attrs["task_group"] == "glue"


def test_task_defaults_fill_what_the_sweep_does_not_set(two_member_group):
    spec = build_spec({"task": "glue-aa"})
    assert spec.lrs == [1e-4, 1e-3]
    train = train_for(spec, spec.task)
    assert (train.epochs, train.steps, train.batch_size) == (2, None, 16)
    given = build_spec({"task": "glue-aa", "lrs": [5e-4], "train": {"steps": 7}})
    assert given.lrs == [5e-4] and train_for(given, "glue-aa").steps == 7 and train_for(given, "glue-aa").batch_size == 16
    assert train_for(build_spec({}), "sentiment") == train_for(SweepSpec(), "sentiment")  # the embedded default


def _row(task, lr, score, variant="lora"):
    return {"sweep": "s", "task": task, "task_group": "glue", "model": "m", "variant": variant,
            "variant_tag": f"{variant}-r8-a16", "state": "complete", "lr": lr, "score": score,
            "select_score": score, "selection": "validation",
            "metric": "accuracy", "diverged": False}


def test_group_average_is_the_mean_over_member_tasks():
    rows = [_row("glue-aa", 1e-4, 0.6), _row("glue-aa", 1e-3, 0.8),
            _row("glue-bb", 1e-4, 0.4), _row("glue-bb", 1e-3, 0.5), _row("glue-bb", 1e-2, 0.9)]
    summaries = {s.task: s for s in summarise(rows)}
    avg = summaries["glue (avg of 2)"]
    assert sorted(avg.cells) == [1e-4, 1e-3]  # 1e-2 is missing for glue-aa: not averaged
    assert avg.cells[1e-3].mean == pytest.approx(0.65) and avg.best_lr == 1e-3
    assert summaries["glue-bb"].best_lr == 1e-2  # members keep their own tables


def test_group_average_waits_for_every_task():
    rows = [_row("glue-aa", 1e-4, 0.6), _row("glue-bb", 1e-4, 0.4, variant="dora")]
    assert not [s for s in summarise(rows) if s.task.startswith("glue (avg")]


def test_each_task_of_a_group_gets_its_own_budget(two_member_group):
    spec = check_spec(build_spec({"task": "glue", "train": {"batch_size": 8}}))
    a, b = train_for(spec, "glue-aa"), train_for(spec, "glue-bb")
    assert (a.epochs, a.batch_size, a.max_length) == (2, 8, 128)  # glue-aa's budget, batch given
    assert (b.steps, b.batch_size, b.max_length) == (80, 8, 64)  # glue-bb's (sentiment's) budget
    storage = optuna.storages.InMemoryStorage()
    sync_sweep(spec, storage)
    stored = {n.split("|")[1]: trial_template(optuna.load_study(study_name=n, storage=storage)
                                              .user_attrs)["train"]
              for n in optuna.get_all_study_names(storage)}
    assert stored["glue-aa"]["epochs"] == 2 and stored["glue-bb"]["steps"] == 80


def test_spec_round_trips_through_its_dict(two_member_group):
    spec = build_spec({"task": "glue", "train": {"batch_size": 8}, "lrs": [1e-4]})
    again = build_spec(spec.to_dict())
    assert again == spec
    assert train_for(again, "glue-bb") == train_for(spec, "glue-bb")
