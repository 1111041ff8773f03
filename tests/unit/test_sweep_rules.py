"""Rules that keep a sweep's answer whole: readable tags from resolved options, one run folder per
study and grid point, no pruning unless chosen, and the divergence rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from lorasweep.config import ConfigError, SweepSpec, TrainConfig, TrialSpec, VariantSpec
from lorasweep.launch.run import check_spec, run_sweep
from lorasweep.sweep.spec import apply_overrides, build_spec, resolve_variant
from lorasweep.sweep.study import grid_point, make_pruner, study_run_root, sync_sweep
from lorasweep.tasks import base as task_base
from lorasweep.tasks.sentiment import Sentiment
from lorasweep.train.loop import diverged_loss

# ------------------------------------------------------------------------------------- tags


def _tag(variants: list, *sets: str) -> list[str]:
    data = apply_overrides({"variants": variants}, list(sets))
    return [v.tag for v in check_spec(build_spec(data)).variants]


def test_tag_names_the_options_that_differ_from_the_defaults():
    assert _tag(["loraplus"], "variant.ratio=8") == ["loraplus-r8-a16-ratio8"]
    assert _tag(["lora"]) == ["lora-r8-a16"]
    assert _tag(["delora"], "variant.lambda_=4") == ["delora-r8-a16-lambda4"]


@pytest.mark.parametrize("written", ["variant.ratio=16", "variant.ratio=16.0", "variant.ratio='16'"])
def test_the_default_written_out_is_the_default_study(written):
    assert _tag(["loraplus"], written) == _tag(["loraplus"])


@pytest.mark.parametrize("written", ["variant.ratio=8", "variant.ratio=8.0", "variant.ratio='8'"])
def test_one_value_written_three_ways_is_one_tag(written):
    assert _tag(["loraplus"], written) == ["loraplus-r8-a16-ratio8"]


def test_rank_and_alpha_written_as_text_resolve_too():
    assert _tag(["lora"], "rank='4'", "alpha='8.0'") == ["lora-r4-a8"]


def test_targets_are_named_sorted_and_deduplicated():
    one = _tag(["lora"], "target_modules=value,query")
    two = _tag(["lora"], "target_modules=query,value,query")
    assert one == two == ["lora-r8-a16-t=query+value"]


def test_a_long_tag_gets_a_hash_instead():
    spec = VariantSpec("goat", options={"num_experts": 4, "top_k": 1, "aux_loss_weight": 0.01,
                                         "rho": 2.0, "eta": 0.5, "exact_start": True})
    spec.validate()
    resolve_variant(spec)  # the registry's options, coerced, those that differ from the defaults
    tag = spec.tag
    assert len(tag) <= 64 and tag.startswith("goat-r8-a16-")
    assert len(tag.rsplit("-", 1)[1]) == 8  # the hash
    other = VariantSpec("goat", options={**spec.options, "eta": 0.25})
    other.validate()
    resolve_variant(other)
    assert other.tag != tag


# ------------------------------------------------------------------------------ run folders


class _MemberA(Sentiment):
    key = "glue-aa"


class _MemberB(Sentiment):
    key = "glue-bb"


@pytest.fixture
def two_member_group(monkeypatch):
    for key in [k for k in task_base._REGISTRY if k.startswith("glue-")]:
        monkeypatch.delitem(task_base._REGISTRY, key)
    monkeypatch.setitem(task_base._REGISTRY, "glue-aa", _MemberA)
    monkeypatch.setitem(task_base._REGISTRY, "glue-bb", _MemberB)


def test_a_group_sweep_writes_one_folder_per_task_and_grid_point(two_member_group, tiny_bert_dir,
                                                                  tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(name="grp", model=str(tiny_bert_dir), task="glue",
                     variants=[VariantSpec("lora", rank=2, alpha=4)], lrs=[1e-3, 1e-2], seeds=[0],
                     train=TrainConfig(steps=2, batch_size=4, max_length=32),
                     task_options={"eval_limit": 8}, storage=f"sqlite:///{tmp_path / 's.db'}",
                     runs_dir="runs")  # relative: stored absolute
    outcome = run_sweep(spec)
    assert outcome.summary.completed == 4
    storage = spec.storage
    folders = {}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        root = study.user_attrs["run_root"]
        assert Path(root).is_absolute() and root.startswith(str(tmp_path / "runs"))
        for t in study.get_trials():
            run_dir = Path(t.user_attrs["run_dir"])
            assert run_dir.parent == Path(root) and run_dir.name == t.user_attrs["grid_point"]
            assert json.loads((run_dir / "config.json").read_text())["study"] == name
            folders[run_dir] = name
    assert len(folders) == 4  # two tasks x two learning rates, no folder shared
    tasks = {p.relative_to(tmp_path / "runs").parts[1] for p in folders}
    assert tasks == {"glue-aa", "glue-bb"}


def test_run_root_names_sweep_task_model_and_tag(tmp_path):
    root = Path(study_run_root("runs", "s", "sentiment", "meta-llama/Llama-3.1-8B", "lora-r8-a16"))
    assert root.is_absolute()
    assert root.parts[-5:] == ("runs", "s", "sentiment", "meta-llama--Llama-3.1-8B", "lora-r8-a16")
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    a.mkdir(parents=True), b.mkdir(parents=True)
    assert study_run_root("r", "s", "t", str(a), "x") != study_run_root("r", "s", "t", str(b), "x")


def test_the_readme_names_the_run_folder_the_sweep_writes(tmp_path, monkeypatch):
    from lorasweep.paths import RUNS_DIR

    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    root = Path(study_run_root(str(RUNS_DIR), "SWEEP", "TASK", "MODEL", "VARIANT-TAG"))
    written = (root / grid_point(1e-3, 0)).relative_to(tmp_path).as_posix()
    assert f"`{written}/`" in readme
    assert "adaptive search's rungs of a point share\n  it" in readme  # one folder per point
    for model, folder in (("embedded:minilm", "embedded-minilm"),
                          ("meta-llama/Llama-3.1-8B", "meta-llama--Llama-3.1-8B")):
        assert Path(study_run_root("r", "s", "t", model, "x")).parent.name == folder
        assert f"`{folder}`" in readme


def test_a_run_folder_of_another_study_is_refused(tmp_path):
    from lorasweep.train.trial import run_trial

    (tmp_path / "config.json").write_text(json.dumps({"study": "other"}))
    spec = TrialSpec(sweep="s", study="mine", storage="", trial_number=0, model="embedded:minilm",
                     task="sentiment", task_options={}, model_options={}, variant=VariantSpec(),
                     lr=1e-3, seed=0, train=TrainConfig(steps=1), run_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="belongs to study 'other'"):
        run_trial(spec)
    assert json.loads((tmp_path / "config.json").read_text()) == {"study": "other"}  # untouched


# ---------------------------------------------------------------------------------- pruners


def test_pruners_by_name():
    assert isinstance(make_pruner(None), optuna.pruners.NopPruner)  # studies made before it
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("successive-halving"), optuna.pruners.SuccessiveHalvingPruner)


def test_pruner_is_validated_recorded_and_kept():
    with pytest.raises(ConfigError, match="unknown pruner 'hyperband'"):
        check_spec(SweepSpec(pruner="hyperband"))
    storage = optuna.storages.InMemoryStorage()
    sync_sweep(check_spec(SweepSpec(name="p", pruner="median")), storage)
    (name,) = optuna.get_all_study_names(storage)
    assert optuna.load_study(study_name=name, storage=storage).user_attrs["pruner"] == "median"
    with pytest.raises(ConfigError, match="already ran with --pruner median"):
        sync_sweep(check_spec(SweepSpec(name="p")), storage)
    assert SweepSpec().pruner == "none"


# -------------------------------------------------------------------------------- divergence


def test_divergence_rule_on_loss_curves():
    assert diverged_loss([[1, 0.69], [40, 7.6e6], [80, 7.6e6]])  # finite, far above the start
    assert diverged_loss([[1, 0.69], [2, math.nan]])
    assert not diverged_loss([[1, 0.69], [40, 0.5], [80, 0.3]])
    assert not diverged_loss([[1, 0.69], [80, 1.3]])  # above the start, not 2x above
    assert diverged_loss([[1, 0.69]] + [[s, 1.5] for s in range(70, 80)])
    assert not diverged_loss([])


def test_no_pruning_without_a_pruner_and_huge_learning_rates_diverge(tiny_bert_dir, tmp_path):
    """Intermediate scores every step, scores far apart: the default prunes nothing; lr=1e8
    sends the loss far above its start (recorded as diverged), 1e-3 does not."""
    spec = SweepSpec(name="np", model=str(tiny_bert_dir), task="sentiment",
                     variants=[VariantSpec("lora", rank=2, alpha=4)],
                     lrs=[1e-6, 1e-4, 1e-3, 1e-2, 1.0, 1e8], seeds=[0], allow_any_lr=True,
                     train=TrainConfig(steps=6, batch_size=8, max_length=32, eval_every=1,
                                       warmup_ratio=0.0, max_grad_norm=0.0),
                     task_options={"eval_limit": 8}, storage=f"sqlite:///{tmp_path / 's.db'}",
                     runs_dir=str(tmp_path / "runs"))
    outcome = run_sweep(spec)
    assert outcome.summary.pruned == 0 and outcome.summary.completed == 6
    (name,) = optuna.get_all_study_names(spec.storage)
    trials = {t.params["lr"]: t for t in optuna.load_study(study_name=name, storage=spec.storage)
              .get_trials()}
    assert trials[1e8].user_attrs["diverged"] is True
    assert trials[1e-3].user_attrs["diverged"] is False
    curve = trials[1e-3].user_attrs["loss_curve"]
    assert [step for step, _ in curve] == [1, 2, 3, 4, 5, 6]


def test_a_rung_of_the_adaptive_search_is_named_with_how_far_it_goes():
    from lorasweep.sweep.outcome import trial_label

    assert trial_label("lora-r8-a16", 1e-3, 0, budget=0.3) == "lora-r8-a16 lr=1e-3 seed=0 to 30%"
    assert trial_label("lora-r8-a16", 1e-3, 0, budget=1.0) == "lora-r8-a16 lr=1e-3 seed=0"
    assert trial_label("lora-r8-a16", 1e-3, 0, budget=None) == "lora-r8-a16 lr=1e-3 seed=0"
