"""lorasweep.config: recipes -> SweepSpec, --set overrides, validation errors, TrialSpec."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lorasweep.config import (
    ConfigError,
    SweepSpec,
    TrainConfig,
    TrialSpec,
    VariantSpec,
    load_recipe,
    parse_floats,
    parse_ints,
)
from lorasweep.launch.run import check_spec
from lorasweep.sweep.spec import apply_overrides, build_spec, train_for


def _recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _spec(tmp_path: Path, text: str) -> SweepSpec:
    return build_spec(load_recipe(_recipe(tmp_path, text)))


def _config_error(make, *words: str) -> str:
    """Run ``make()`` (build and validate); it must raise ConfigError naming every word."""
    with pytest.raises(ConfigError) as info:
        spec = make()
        if isinstance(spec, SweepSpec):
            check_spec(spec)
    message = str(info.value)
    assert "\n" not in message, f"a ConfigError is one line: {message!r}"
    for word in words:
        assert word in message, f"{word!r} not named in {message!r}"
    return message


# ------------------------------------------------------------------------------ recipes


def test_recipe_fills_every_sweep_field(tmp_path):
    spec = _spec(
        tmp_path,
        """
        name: paper-grid
        model: embedded:minilm
        task: sentiment
        rank: 16
        alpha: 32
        variants:
          - lora
          - key: loraplus
            ratio: 8
          - key: dora
            rank: 4
        lrs: [1e-4, 1.0e-3]
        seeds: [0, 1, 2]
        train: {steps: 50, batch_size: 8, schedule: linear}
        task_options: {eval_limit: 10}
        storage: sqlite:///elsewhere.db
        launcher: local
        workers: 2
        runs_dir: my/runs
        """,
    )
    assert spec.name == "paper-grid"
    assert spec.model == "embedded:minilm" and spec.task == "sentiment"
    assert [v.key for v in spec.variants] == ["lora", "loraplus", "dora"]
    # The shared rank applies where a variant does not set its own; alpha everywhere.
    assert [v.rank for v in spec.variants] == [16, 16, 4]
    assert {v.alpha for v in spec.variants} == {32.0}
    # An unknown key inside a variant mapping is one of that variant's options.
    assert spec.variants[1].options == {"ratio": 8}
    assert spec.variants[0].options == {} and spec.variants[2].options == {}
    # PyYAML reads "1e-4" as a string: it must still become the float 1e-4.
    assert spec.lrs == [1e-4, 1e-3] and all(isinstance(x, float) for x in spec.lrs)
    assert spec.seeds == [0, 1, 2]
    assert train_for(spec, spec.task) == TrainConfig(steps=50, batch_size=8, schedule="linear")
    assert spec.task_options == {"eval_limit": 10}
    assert spec.storage == "sqlite:///elsewhere.db"
    assert spec.launcher == "local" and spec.workers == 2 and spec.runs_dir == "my/runs"
    assert check_spec(spec) is spec


def test_recipe_variant_options_mapping_and_target_string(tmp_path):
    spec = _spec(
        tmp_path,
        """
        variants:
          - key: loraplus
            options: {ratio: 4}
            target_modules: query, value
        """,
    )
    (variant,) = spec.variants
    assert variant.options == {"ratio": 4}
    assert variant.target_modules == ["query", "value"]
    check_spec(spec)


def test_recipe_comma_strings_for_variants_lrs_and_seeds(tmp_path):
    spec = _spec(tmp_path, "variants: lora, dora\nlrs: '1e-5, 3e-4'\nseeds: '0,1'\n")
    assert [v.key for v in spec.variants] == ["lora", "dora"]
    assert spec.lrs == [1e-5, 3e-4]
    assert spec.seeds == [0, 1]


def test_recipe_scalar_lr_and_seed(tmp_path):
    spec = _spec(tmp_path, "lrs: 0.002\nseeds: 7\n")
    assert spec.lrs == [0.002] and spec.seeds == [7]


def test_empty_recipe_mapping_gives_defaults(tmp_path):
    default = build_spec({})
    spec = _spec(tmp_path, "name: default\n")
    assert [v.tag for v in spec.variants] == [v.tag for v in default.variants]
    assert spec.lrs == default.lrs and spec.seeds == default.seeds
    assert spec.model == default.model and spec.task == default.task
    assert spec.search == default.search
    coded = SweepSpec()  # built in code: LoRA over the same grid, a grid search
    assert coded.lrs == default.lrs and [v.key for v in coded.variants] == ["lora"]
    assert coded.search == "grid"


# ---------------------------------------------------------------------------- overrides


def test_override_train_keeps_other_train_keys():
    data = apply_overrides({"train": {"steps": 10, "batch_size": 4}}, ["train.steps=50"])
    assert data["train"] == {"steps": 50, "batch_size": 4}  # YAML-typed: 50 is an int
    assert train_for(build_spec(data), "sentiment").steps == 50


def test_override_task_options():
    data = apply_overrides({}, ["task.eval_limit=100"])
    spec = build_spec(data)
    assert spec.task_options == {"eval_limit": 100}


def test_override_variant_option_applies_to_every_variant():
    data = {"variants": ["loraplus", {"key": "loraplus", "rank": 4, "options": {"ratio": 2}}]}
    spec = build_spec(apply_overrides(data, ["variant.ratio=8"]))
    assert [v.options for v in spec.variants] == [{"ratio": 8}, {"ratio": 8}]
    assert [v.rank for v in spec.variants] == [8, 4]  # the override touched only the option
    check_spec(spec)


def test_override_variant_option_on_comma_string_variants():
    spec = build_spec(apply_overrides({"variants": "pissa,pissa"}, ["variant.niter=4"]))
    assert [v.options for v in spec.variants] == [{"niter": 4}, {"niter": 4}]


def test_override_variant_option_with_default_variant():
    spec = build_spec(apply_overrides({}, ["variant.ratio=3"]))  # each of the default three
    assert [(v.key, v.options) for v in spec.variants] == [
        ("lora", {"ratio": 3}), ("loraplus", {"ratio": 3}), ("adalora", {"ratio": 3})]
    _config_error(lambda: spec, "ratio")  # plain LoRA has no such option


def test_override_variant_option_beats_inline_option():
    data = {"variants": [{"key": "loraplus", "ratio": 8}]}
    spec = build_spec(apply_overrides(data, ["variant.ratio=4"]))
    assert spec.variants[0].options == {"ratio": 4}


def test_override_top_level_keys():
    data = apply_overrides(
        {"variants": "lora,dora"}, ["rank=4", "alpha=8", "target_modules=query,value", "name=x"]
    )
    spec = build_spec(data)
    assert spec.name == "x"
    assert [(v.rank, v.alpha, v.target_modules) for v in spec.variants] == [
        (4, 8.0, ["query", "value"]),
        (4, 8.0, ["query", "value"]),
    ]


def test_override_empty_value_is_none():
    assert apply_overrides({"storage": "x"}, ["storage="])["storage"] is None


def test_override_unknown_top_level_key_rejected_by_from_dict():
    _config_error(lambda: build_spec(apply_overrides({}, ["colour=red"])), "colour")


@pytest.mark.parametrize("assignment", ["train.steps", "=3", " =3", "novalue"])
def test_malformed_set_is_a_config_error(assignment):
    _config_error(lambda: apply_overrides({}, [assignment]), "key=value", repr(assignment))


def test_override_with_unknown_prefix():
    _config_error(lambda: apply_overrides({}, ["foo.size=3"]), "foo.size")


def test_unknown_model_option_is_named_at_validation():
    # model.X sets a model option (model.dtype=bf16); an unknown one fails validation
    data = apply_overrides({}, ["model.size=3"])
    assert data["model_options"] == {"size": 3}
    _config_error(lambda: check_spec(build_spec(data)), "size")


def test_override_unknown_train_key_names_it():
    _config_error(lambda: build_spec(apply_overrides({}, ["train.stepz=5"])), "stepz")


def test_overrides_do_not_mutate_their_input():
    data = {"train": {"steps": 1}, "variants": [{"key": "loraplus"}]}
    before = copy.deepcopy(data)
    apply_overrides(data, ["train.steps=5", "variant.ratio=4", "rank=2"])
    assert data == before


def test_override_invalid_yaml_value_is_a_config_error():
    _config_error(lambda: apply_overrides({}, ["name=[a"]), "name")


def test_override_variant_field_is_not_an_uncaught_type_error():
    spec = build_spec(apply_overrides({}, ["variant.rank=4"]))
    try:
        check_spec(spec)
    except ConfigError:
        return  # a clear rejection is fine
    assert spec.variants[0].rank == 4  # ... and so is applying it


# --------------------------------------------------------------------- validation errors


def test_unknown_variant():
    _config_error(lambda: SweepSpec(variants=[VariantSpec("nope")]), "'nope'", "lora")


def test_unknown_variant_option():
    _config_error(
        lambda: SweepSpec(variants=[VariantSpec("lora", options={"ratio": 2})]), "'ratio'", "lora"
    )


def test_bad_variant_option_value():
    _config_error(
        lambda: SweepSpec(variants=[VariantSpec("loraplus", options={"ratio": -1})]), "-1"
    )


@pytest.mark.parametrize("rank", [0, -3])
def test_non_positive_rank(rank):
    _config_error(lambda: SweepSpec(variants=[VariantSpec("lora", rank=rank)]), str(rank), "rank")


def test_non_positive_alpha():
    _config_error(lambda: SweepSpec(variants=[VariantSpec("lora", alpha=0)]), "alpha")


def test_malformed_lr_list():
    _config_error(lambda: parse_floats("1e-4,abc"), "'abc'", "1e-4,abc")


def test_parse_floats_accepts_spaces_and_exponents():
    assert parse_floats(" 1e-5, 3E-4 ,0.01") == [1e-5, 3e-4, 0.01]


def test_malformed_seed_list():
    _config_error(lambda: parse_ints("0,x"), "'0,x'")
    assert parse_ints("0, 1,2,") == [0, 1, 2]


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_non_positive_or_non_finite_lr(lr):
    _config_error(lambda: SweepSpec(lrs=[1e-4, lr]), repr(lr))


def test_string_lr_in_spec():
    _config_error(lambda: SweepSpec(lrs=["fast"]), "'fast'")


def test_malformed_lr_in_recipe_list(tmp_path):
    _config_error(lambda: _spec(tmp_path, "lrs: [1e-4, abc]\n"), "abc")


def test_malformed_seed_in_recipe_list(tmp_path):
    _config_error(lambda: _spec(tmp_path, "seeds: [0, x]\n"), "x")


def test_non_numeric_alpha_in_recipe(tmp_path):
    _config_error(lambda: _spec(tmp_path, "alpha: abc\n"), "abc")


def test_numeric_sweep_name_in_recipe(tmp_path):
    spec = _spec(tmp_path, "name: 2024\n")
    try:
        check_spec(spec)
    except ConfigError as err:
        assert "2024" in str(err)


def test_empty_grid():
    _config_error(lambda: SweepSpec(lrs=[]), "empty", "--lrs")


def test_empty_seeds_and_variants():
    _config_error(lambda: SweepSpec(seeds=[]), "seed")
    _config_error(lambda: SweepSpec(variants=[]), "variant")


def test_same_variant_twice():
    _config_error(
        lambda: SweepSpec(variants=[VariantSpec("lora"), VariantSpec("lora")]), "lora-r8-a16"
    )


@pytest.mark.parametrize("name", ["", "a/b", "a:b", "a b"])
def test_bad_sweep_name(name):
    _config_error(lambda: SweepSpec(name=name), repr(name))


def test_unknown_task():
    _config_error(lambda: SweepSpec(task="nope"), "'nope'", "sentiment")


def test_unknown_task_option():
    _config_error(lambda: SweepSpec(task_options={"colour": 1}), "'colour'")


def test_unknown_model():
    _config_error(lambda: SweepSpec(model="notamodel"), "'notamodel'")


def test_unknown_embedded_model():
    _config_error(lambda: SweepSpec(model="embedded:nope"), "embedded:nope", "embedded:minilm")


def test_model_folder_without_config(tmp_path):
    _config_error(lambda: SweepSpec(model=str(tmp_path)), str(tmp_path), "config.json")


def test_model_folder_with_a_saved_model(tiny_bert_dir):
    assert check_spec(SweepSpec(model=str(tiny_bert_dir))).model == str(tiny_bert_dir)


def test_hub_id_shape_is_accepted_offline():
    check_spec(SweepSpec(model="org/name"))  # not fetched: only the shape is checked here


@pytest.mark.parametrize(
    ("train", "word"),
    [
        ({"steps": 0}, "steps"),
        ({"epochs": -1.0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"schedule": "cyclic"}, "'cyclic'"),
        ({"precision": "fp8"}, "'fp8'"),
    ],
)
def test_bad_train_settings(train, word):
    _config_error(lambda: SweepSpec(train=TrainConfig(**train)), word)


def test_bad_launcher_and_workers():
    _config_error(lambda: SweepSpec(launcher="slurmish"), "'slurmish'")
    _config_error(lambda: SweepSpec(workers=0), "workers")


def test_unknown_recipe_key(tmp_path):
    _config_error(lambda: _spec(tmp_path, "lrss: [1e-4]\n"), "'lrss'", "lrs")


def test_variant_entry_without_key(tmp_path):
    _config_error(lambda: _spec(tmp_path, "variants:\n  - rank: 4\n"), "'key'")


def test_unreadable_recipe_path(tmp_path):
    missing = tmp_path / "missing.yaml"
    _config_error(lambda: load_recipe(missing), str(missing))
    _config_error(lambda: load_recipe(tmp_path), str(tmp_path))  # a folder is not a recipe


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = _recipe(tmp_path, "name: x\nlrs: [1e-4\nseeds: [0]\n")
    message = _config_error(lambda: load_recipe(path), str(path), "YAML")
    assert "line " in message


@pytest.mark.parametrize("text", ["- lora\n- dora\n", "", "just a string\n"])
def test_recipe_must_be_a_mapping(tmp_path, text):
    path = _recipe(tmp_path, text)
    _config_error(lambda: load_recipe(path), str(path), "mapping")


# ------------------------------------------------------------------------- VariantSpec.tag


def test_tag_stable_for_equal_specs():
    a = VariantSpec("loraplus", rank=4, alpha=8, options={"ratio": 8, "x": [1, 2]})
    b = VariantSpec("loraplus", rank=4, alpha=8, options={"x": [1, 2], "ratio": 8})
    assert a.tag == a.tag == b.tag  # option order does not matter


def test_tag_names_key_rank_and_alpha():
    tag = VariantSpec("dora", rank=4, alpha=8).tag
    assert tag.startswith("dora-") and "r4" in tag and "a8" in tag


def test_tag_distinct_for_different_settings():
    specs = [
        VariantSpec("loraplus"),
        VariantSpec("loraplus", options={"ratio": 8}),
        VariantSpec("loraplus", options={"ratio": 4}),
        VariantSpec("loraplus", target_modules=["query"]),
        VariantSpec("loraplus", target_modules=["value"]),
        VariantSpec("loraplus", rank=4),
        VariantSpec("loraplus", alpha=32),
        VariantSpec("loraplus", dropout=0.1),
        VariantSpec("lora"),
    ]
    tags = [s.tag for s in specs]
    assert len(set(tags)) == len(tags), tags


def test_tag_is_the_same_in_another_process():
    """The tag names studies in a shared store: it must not depend on the process (hash seed)."""
    spec = VariantSpec("loraplus", rank=4, options={"ratio": 8, "b": "x"}, target_modules=["query"])
    code = (
        "from lorasweep.config import VariantSpec; "
        "print(VariantSpec('loraplus', rank=4, options={'b': 'x', 'ratio': 8}, "
        "target_modules=['query']).tag)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == spec.tag


# -------------------------------------------------------------------------------- TrialSpec


def _trial_spec() -> TrialSpec:
    return TrialSpec(
        sweep="s",
        study="s|sentiment|embedded:minilm|loraplus-r4-a8",
        storage="sqlite:///x.db",
        trial_number=3,
        model="embedded:minilm",
        task="sentiment",
        task_options={"eval_limit": 10},
        model_options={"dtype": "fp32"},
        variant=VariantSpec(
            "loraplus", rank=4, alpha=8, target_modules=["query"], options={"ratio": 8.0}
        ),
        lr=3e-4,
        seed=2,
        train=TrainConfig(steps=7, batch_size=4),
        run_dir="/tmp/run",
    )


def test_trial_spec_dict_round_trip_through_json():
    spec = _trial_spec()
    data = json.loads(json.dumps(spec.to_dict()))  # plain data: JSON-serialisable as is
    again = TrialSpec.from_dict(data)
    assert again == spec
    assert isinstance(again.variant, VariantSpec) and isinstance(again.train, TrainConfig)
    assert again.variant.tag == spec.variant.tag


def test_trial_spec_from_dict_does_not_mutate_input():
    data = _trial_spec().to_dict()
    before = copy.deepcopy(data)
    TrialSpec.from_dict(data)
    assert data == before


def test_trial_spec_pickles():
    spec = _trial_spec()
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_trial_spec_is_frozen():
    spec = _trial_spec()
    with pytest.raises(AttributeError):
        spec.lr = 1.0  # type: ignore[misc]


def test_the_quickstart_recipe_is_the_embedded_default():
    """recipes/quickstart.yaml says what a bare `lorasweep run` does, field for field."""
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
    given, default = build_spec(load_recipe(recipe)), build_spec({})
    assert train_for(given, given.task) == train_for(default, default.task)
    assert dataclasses.replace(given, train={}) == default  # the rest, field for field
    assert [v.key for v in default.variants] == ["lora", "loraplus", "adalora"]
    assert default.search == "adaptive"


def test_a_tasks_default_variants_and_search_fill_a_sweep_that_names_none(monkeypatch):
    from lorasweep.tasks import task_registry

    sentiment = task_registry()["sentiment"]
    monkeypatch.setattr(sentiment, "default_variants", ("lora", "dora"))
    monkeypatch.setattr(sentiment, "default_search", "adaptive")
    spec = build_spec({})
    assert [v.key for v in spec.variants] == ["lora", "dora"] and spec.search == "adaptive"
    ranked = build_spec(apply_overrides({}, ["variant.rank=4"]))  # applies to every default
    assert [(v.key, v.rank) for v in ranked.variants] == [("lora", 4), ("dora", 4)]
    given = build_spec({"variants": ["pissa"], "search": "grid"})  # what is given wins
    assert [v.key for v in given.variants] == ["pissa"] and given.search == "grid"
    own = build_spec({"lrs": [1e-4, 1e-3]})  # the task's search goes with the task's grid
    assert own.search == "grid" and [v.key for v in own.variants] == ["lora", "dora"]
    asked = build_spec({"lrs": [1e-4, 1e-3, 1e-2], "search": "adaptive"})
    assert asked.search == "adaptive" and asked.lrs == [1e-4, 1e-3, 1e-2]
    other = build_spec({"task": "arith"})  # another task keeps its own (LoRA, grid)
    assert [v.key for v in other.variants] == ["lora"] and other.search == "grid"
