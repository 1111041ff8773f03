"""The study stores its trials' TrialSpec template through TrialSpec's own to_dict/from_dict: a
worker's spec is the template plus the trial's fields, keys are checked, and a store written by
the previous layout (the template's fields as attributes of their own) still runs and resumes."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest

from lorasweep import __version__
from lorasweep.config import ConfigError, SweepSpec, TrainConfig, TrialSpec, VariantSpec
from lorasweep.sweep.spec import sweep_tasks, train_for
from lorasweep.sweep.store import STORE_VERSION, STORE_VERSION_ATTR, open_storage
from lorasweep.sweep.study import (
    TEMPLATE_ATTR,
    grid_point,
    study_name,
    study_run_root,
    sync_sweep,
)
from lorasweep.sweep.worker import run_worker

SHARED = dict(sweep="s", model="embedded:minilm", task="sentiment",
              task_options={"eval_limit": 10}, model_options={"dtype": "fp32"},
              variant=VariantSpec("loraplus", rank=4, alpha=8, target_modules=["query"],
                                  options={"ratio": 8.0}),
              train=TrainConfig(steps=7, batch_size=4))
OWN = dict(study="s|sentiment|embedded:minilm|loraplus-r4-a8-ratio8", storage="sqlite:///x.db",
           trial_number=3, lr=3e-4, seed=2, run_dir="runs/lr=3e-4,seed=2", budget=0.25)


def test_template_plus_a_trials_fields_is_the_spec():
    spec = TrialSpec(**SHARED, **OWN)
    template = json.loads(json.dumps(TrialSpec.template(**SHARED)))  # stored as JSON
    assert set(template) == {f.name for f in dataclasses.fields(TrialSpec)} - set(OWN)
    assert template == {k: v for k, v in spec.to_dict().items() if k not in OWN}
    assert TrialSpec.from_dict(template, **OWN) == spec
    assert TrialSpec.from_dict(spec.to_dict(), lr=1e-2) == dataclasses.replace(spec, lr=1e-2)


def test_keys_are_checked_never_guessed():
    data = TrialSpec(**SHARED, **OWN).to_dict()
    with pytest.raises(ConfigError, match="unknown key 'optimizer'.*newer lorasweep"):
        TrialSpec.from_dict({**data, "optimizer": "adamw"})
    with pytest.raises(ConfigError, match="trial spec train has the unknown key 'warmup_steps'"):
        TrialSpec.from_dict({**data, "train": {**data["train"], "warmup_steps": 10}})
    with pytest.raises(ConfigError, match="trial spec variant must be a mapping"):
        TrialSpec.from_dict({**data, "variant": "lora"})
    with pytest.raises(ConfigError, match="lacks lr, seed"):
        TrialSpec.from_dict({k: v for k, v in data.items() if k not in ("lr", "seed")})


def test_fields_added_later_read_as_their_defaults():
    data = TrialSpec(**SHARED, **OWN).to_dict()
    del data["model_options"], data["budget"], data["train"]["checkpoint_every"]
    spec = TrialSpec.from_dict(data)
    assert spec.model_options == {} and spec.budget == 1.0
    assert spec.train.checkpoint_every is None and spec.train.steps == 7


# ------------------------------------------------------------ a store of the previous layout


def _v1_store(tmp_path, spec: SweepSpec, with_model_options: bool) -> str:
    """A study as store version 1 wrote it: the template's fields as separate attributes
    (``variant_spec``, ``train``, ``task_options``; ``model_options`` once it existed)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    variant, task = spec.variants[0], sweep_tasks(spec)[0]
    study = optuna.create_study(study_name=study_name(spec, variant), storage=open_storage(url),
                                direction="maximize")
    attrs = {"sweep": spec.name, "task": task, "task_group": None, "model": spec.model,
             "variant": variant.key, "variant_tag": variant.tag,
             "variant_spec": dataclasses.asdict(variant),
             "train": dataclasses.asdict(train_for(spec, task)), "task_options": spec.task_options,
             "runs_dir": spec.runs_dir, "pruner": spec.pruner, "search": "grid",
             "search_options": {}, "worst_score": 0.5, "lrs": spec.lrs, "seeds": spec.seeds,
             STORE_VERSION_ATTR: 1, "lorasweep_version": __version__, "max_retries": 2,
             "run_root": study_run_root(spec.runs_dir, spec.name, task, spec.model, variant.tag)}
    if with_model_options:
        attrs["model_options"] = spec.model_options
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    lr = spec.lrs[0]
    study.enqueue_trial({"lr": lr, "seed": 0}, user_attrs={"grid_point": grid_point(lr, 0),
                                                           "attempt": 0, "retry": 0})
    return url


class _Recorder:
    """A trial function that records the spec each trial was given."""

    def __init__(self):
        self.specs: list[TrialSpec] = []

    def __call__(self, spec, reporter=None):
        from types import SimpleNamespace

        self.specs.append(spec)
        return SimpleNamespace(value=0.5, pruned=False, metrics={}, attrs={})


@pytest.mark.parametrize("with_model_options", [True, False])
def test_a_store_of_the_previous_layout_runs_and_resumes(tmp_path, with_model_options):
    spec = SweepSpec(name="old", variants=[VariantSpec("lora", rank=4, alpha=8)],
                     lrs=[1e-3, 1e-2], seeds=[0], train=TrainConfig(steps=5),
                     task_options={"eval_limit": 16}, runs_dir=str(tmp_path / "runs"))
    if with_model_options:
        spec.model_options = {"dtype": "fp32"}
    url = _v1_store(tmp_path, spec, with_model_options)
    name = study_name(spec, spec.variants[0])
    record = _Recorder()
    run_worker(url, [name], trial_fn=record)  # the old study's waiting point
    (old,) = record.specs
    assert (old.sweep, old.task, old.model, old.variant) == ("old", "sentiment", spec.model,
                                                            spec.variants[0])
    assert old.train == spec.train and old.task_options == {"eval_limit": 16}
    assert old.model_options == spec.model_options and (old.lr, old.seed) == (1e-3, 0)

    from lorasweep.report import collect_rows
    from lorasweep.sweep.objective import objective_of

    # a store that predates the recorded direction reads as maximize, its worst score kept
    rows = collect_rows(url)
    assert {r["direction"] for r in rows} == {"maximize"} and rows[0]["worst_score"] == 0.5
    old_attrs = optuna.load_study(study_name=name, storage=open_storage(url)).user_attrs
    assert "direction" not in old_attrs and objective_of(old_attrs).direction == "maximize"

    changed = dataclasses.replace(spec, train=TrainConfig(steps=6), storage=url)
    with pytest.raises(ConfigError, match=r"already ran with train.steps=5 \(now 6\)"):
        sync_sweep(changed, open_storage(url), url)  # the old layout's budget is read too

    sync_sweep(dataclasses.replace(spec, storage=url), open_storage(url), url)  # a new run
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    assert study.user_attrs[STORE_VERSION_ATTR] == STORE_VERSION
    # the old layout recorded no objective: its trial read as maximize with the task's own
    # diverged score; the new run records the study's (the same value), and nothing else moves
    assert (old.direction, old.diverged_score) == ("maximize", None)
    assert study.user_attrs["direction"] == "maximize" and study.user_attrs["worst_score"] == 0.0
    old = dataclasses.replace(old, diverged_score=0.0)
    assert TrialSpec.from_dict(study.user_attrs[TEMPLATE_ATTR], **{
        f: getattr(old, f) for f in TrialSpec.TRIAL_FIELDS}) == old
    run_worker(url, [name], trial_fn=record)
    (new,) = record.specs[1:]
    assert (new.lr, new.seed) == (1e-2, 0)
    assert dataclasses.replace(new, lr=old.lr, trial_number=old.trial_number,
                               run_dir=old.run_dir) == old
