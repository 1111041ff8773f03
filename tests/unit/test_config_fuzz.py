"""Property-based fuzzing of recipe YAML and ``--set`` overrides (Hypothesis).

Any recipe document and any list of overrides either validates into a SweepSpec, or fails with a
ConfigError whose message is one non-empty line: never another exception. Keys come from the
schema and from outside it, values of every YAML type (unicode, huge numbers, NaN, empty
strings, nested lists and mappings). Validation here is the cheap part (no model or data is
loaded: that is the sweep's preflight, outside this path); the Hub is switched off.
"""

from __future__ import annotations

import pytest

yaml = pytest.importorskip("yaml")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lorasweep.config import ConfigError, load_recipe  # noqa: E402
from lorasweep.launch.run import check_spec  # noqa: E402
from lorasweep.sweep.spec import apply_overrides, build_spec  # noqa: E402

TOP_KEYS = ["name", "model", "task", "variants", "lrs", "seeds", "train", "task_options",
            "model_options", "storage", "launcher", "workers", "runs_dir", "rank", "alpha",
            "target_modules", "allow_any_lr"]
TRAIN_KEYS = ["steps", "epochs", "batch_size", "grad_accum", "weight_decay", "warmup_ratio",
              "schedule", "max_grad_norm", "eval_every", "max_length", "estimation_batches",
              "precision", "device"]
VARIANT_KEYS = ["lora", "dora", "rslora", "loraplus", "pissa", "adalora", "nope", ""]
OVERRIDE_KEYS = ([f"train.{k}" for k in TRAIN_KEYS] + ["task.eval_limit", "task.data_dir",
                 "model.dtype", "model.trust_remote_code", "variant.rank", "variant.ratio",
                 "variant.key", "variant.options", "x.y.z", "", "."] + TOP_KEYS)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.just(""),
    st.sampled_from(["sentiment", "embedded:minilm", "1e-3", "many", "-1", "0", "lora", "1e400",
                     "inline", "local", "cosine", "fp32", "ünïcødé", "[/x]", "a: b", "\x00"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), st.integers()),
                                                 inner, max_size=4)), max_leaves=8)
names = st.one_of(st.text(max_size=8), st.integers(), st.none())  # mapping keys of any type
options = st.dictionaries(st.one_of(st.sampled_from(["ratio", "rank", "init", "dtype"]), names),
                          values, max_size=3)
variant_entries = st.one_of(
    st.sampled_from(VARIANT_KEYS),
    st.fixed_dictionaries({"key": st.one_of(st.sampled_from(VARIANT_KEYS), values)},
                          optional={"rank": values, "alpha": values, "dropout": values,
                                    "options": st.one_of(options, values), "ratio": values,
                                    "target_modules": values}),
    values,
)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), scalars)
# Each schema key is present with some probability, mostly with a value of roughly its type;
# now and then a key outside the schema is added.
schema_values = {
    "name": scalars, "model": st.one_of(st.just("embedded:minilm"), scalars),
    "task": st.one_of(st.sampled_from(["sentiment", "arith", "gsm8k", "glue", "nope"]), values),
    "variants": st.one_of(st.lists(variant_entries, max_size=3), values),
    "lrs": st.one_of(st.lists(numbers, max_size=4), values),
    "seeds": st.one_of(st.lists(numbers, max_size=3), values),
    "train": st.one_of(st.dictionaries(st.one_of(st.sampled_from(TRAIN_KEYS), names), values,
                                       max_size=4), values),
    "task_options": st.one_of(st.dictionaries(
        st.one_of(st.sampled_from(["eval_limit", "data_dir", "validation_size", "train_size"]),
                  names), values, max_size=3), values),
    "model_options": st.one_of(st.dictionaries(
        st.one_of(st.sampled_from(["dtype", "trust_remote_code", "gradient_checkpointing"]),
                  names), values, max_size=3), values),
    **{k: values for k in ("storage", "launcher", "workers", "runs_dir", "rank", "alpha",
                           "target_modules", "allow_any_lr")},
}
recipes = st.tuples(
    st.fixed_dictionaries({}, optional=schema_values),
    st.one_of(st.just({}), st.just({}), st.dictionaries(names, values, max_size=1)),
).map(lambda parts: {**parts[0], **parts[1]})
overrides = st.lists(st.builds(
    lambda k, v, sep: f"{k}{sep}{v}",
    st.one_of(st.sampled_from(OVERRIDE_KEYS), st.text(max_size=10)),
    st.one_of(st.text(max_size=16), st.sampled_from(["abc", "-1", "1e999", "[1, 2", "{a: 1}",
                                                     "null", "''", "true", "[lora, dora]"])),
    st.sampled_from(["=", "=", ""])), max_size=4)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _validate(data, sets):
    try:
        spec = build_spec(apply_overrides(data, sets))
        check_spec(spec)
    except ConfigError as err:
        message = str(err)
        assert message.strip(), "an empty error message"
        assert "\n" not in message, f"a multi-line error: {message!r}"
        return None
    return spec


FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "200")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(recipe=recipes, sets=overrides)
def test_any_recipe_and_overrides_validate_or_fail_with_one_line(recipe, sets):
    spec = _validate(recipe, sets)
    if spec is not None:  # what validated is really usable: positive LRs and seeds that are ints
        assert spec.lrs and all(0 < lr <= 10 or spec.allow_any_lr for lr in spec.lrs)
        assert all(isinstance(s, int) and s >= 0 for s in spec.seeds)
        assert isinstance(spec.workers, int) and spec.workers > 0


@FUZZ
@given(text=st.one_of(st.text(max_size=200), recipes.map(lambda r: yaml.safe_dump(r, allow_unicode=True)),
                      st.binary(max_size=64).map(lambda b: b.decode("latin-1"))))
def test_any_recipe_file_loads_or_fails_with_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "r.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        data = load_recipe(path)
    except ConfigError as err:
        assert str(err).strip() and "\n" not in str(err)
        return
    _validate(data, [])


@pytest.mark.parametrize("raw", [b"name: \xff\xfe\n", b"\x80\x81"])
def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path, raw):
    path = tmp_path / "r.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_recipe(path)
