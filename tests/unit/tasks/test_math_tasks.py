"""The math generation tasks (gsm8k, arith): load, collate, forward, metric, generation, and
end-to-end sweeps through the CLI. GSM8K runs on small fixture files written here; the models
are a tiny random Llama with a character-level tokenizer (fast) and, end to end, the embedded
SmolLM2."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from helpers import make_tiny_llama, write_gsm8k

from lorasweep.config import TrainConfig
from lorasweep.launch.run import check_spec
from lorasweep.paths import STORE_FILE
from lorasweep.sweep.spec import build_spec, train_for
from lorasweep.tasks import TaskError, get_task, task_registry
from lorasweep.tasks.math_answer import accuracy_of_texts, extract_answer
from lorasweep.tasks.math_common import ALPACA_PROMPT


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from lorasweep.train.model import load_model

    return load_model(str(tiny_llama_dir), get_task("arith"), seed=0)


# ---------------------------------------------------------------------------- registry


@pytest.mark.parametrize("key", ["gsm8k", "arith"])
def test_registered_with_the_generation_contract(key):
    cls = task_registry()[key]
    assert cls.metric == "exact_match" and cls.model_kind == "causal-lm"
    assert cls.worst_score == 0.0 and cls.default_model and cls.default_lrs
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(cls.default_train) <= fields
    TrainConfig(**cls.default_train).validate()


def test_gsm8k_defaults_follow_the_study():
    cls = task_registry()["gsm8k"]
    assert cls.default_lrs == (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
    budget = cls.default_train
    assert budget["max_length"] == 1024 and budget["batch_size"] * budget["grad_accum"] == 64
    assert budget["epochs"] == 1 and budget["steps"] is None
    assert cls.default_model == "meta-llama/Llama-3.1-8B"
    assert task_registry()["arith"].default_model == "embedded:smollm2"


@pytest.mark.parametrize(("key", "options", "match"), [
    ("arith", {"prompt": "chatml"}, "task.prompt"),
    ("arith", {"max_new_tokens": 0}, "max_new_tokens"),
    ("arith", {"eval_batch_size": 0}, "eval_batch_size"),
    ("arith", {"train_size": -1}, "train_size"),
    ("arith", {"level": 4}, "task.level must be one of 1, 2, 3"),
    ("arith", {"trian_size": 5}, "unknown option 'trian_size'"),
    ("arith", {"match": "loose"}, "task.match must be one of strict, flexible"),
    ("gsm8k", {"train": "math", "data_dir": "x"}, "task.train"),
    ("gsm8k", {"validation_size": 0, "data_dir": "x"}, "validation_size"),
])
def test_bad_options_are_refused(key, options, match):
    with pytest.raises(TaskError, match=match):
        get_task(key, **options)


# ---------------------------------------------------------------------------- arith data


def test_arith_splits_are_fixed_disjoint_and_sized():
    data = get_task("arith").load()
    again = get_task("arith").load()
    assert (data.train, data.validation, data.test) == (again.train, again.validation, again.test)
    assert (len(data.train), len(data.validation), len(data.test)) == (2000, 50, 50)
    questions = [{e["question"] for e in s} for s in (data.train, data.validation, data.test)]
    assert sum(map(len, questions)) == 2100  # no repeats within or across splits
    small = get_task("arith", train_size=50, validation_size=10, test_size=20, eval_limit=5).load()
    assert (len(small.train), len(small.validation), len(small.test)) == (50, 5, 5)
    assert small.test == data.test[:5]  # a split's seed does not depend on the other sizes


@pytest.mark.parametrize(("level", "n_steps"), [(1, {1}), (2, {2}), (3, {2, 3})])
def test_arith_solutions_are_correct_arithmetic(level, n_steps):
    data = get_task("arith", train_size=400, level=level).load()
    step = re.compile(r"((?:\d+ [-+*/] )+\d+) = \$?(\d+)")
    for example in data.train + data.test:
        answer = example["answer"]
        assert re.search(r"\n#### \d+$", answer), answer
        steps = step.findall(answer)
        assert len(steps) in n_steps, answer
        if level == 1:  # one addition or subtraction of two 2-digit numbers
            assert re.fullmatch(r"\d\d [-+] \d\d", steps[0][0]), answer
        for expression, result in steps:
            assert eval(expression) == int(result), answer  # digits and + - * / only
        assert steps[-1][1] == extract_answer(answer)  # the last step computes the answer


def test_gold_answers_score_one_and_shuffled_answers_score_low():
    test = get_task("arith").load().test
    golds = [e["answer"] for e in test]
    assert accuracy_of_texts(golds, golds) == 1.0
    shuffled = golds[1:] + golds[:1]  # a derangement: every prediction is another problem's
    assert accuracy_of_texts(shuffled, golds) < 0.1
    rng = random.Random(0)
    wrong = [f"The answer is {int(extract_answer(g)) + rng.randint(1, 9)}." for g in golds]
    assert accuracy_of_texts(wrong, golds) == 0.0


def test_arith_scores_strictly_by_default_and_gsm8k_flexibly():
    """arith credits only answers in the format it teaches; gsm8k extracts like its evaluations."""
    examples = get_task("arith").load().test[:4]
    sums = [[e["answer"].split("\n")[0]] for e in examples]  # the right working, no #### line
    golds = [[e["answer"]] for e in examples]
    assert get_task("arith").score(examples, golds) == 1.0
    assert get_task("arith").score(examples, sums) == 0.0
    assert get_task("arith", match="flexible").score(examples, sums) == 1.0
    assert task_registry()["gsm8k"]().score(examples, sums) == 1.0


# ---------------------------------------------------------------------------- collate


@pytest.mark.parametrize("prompt", ["chat", "alpaca"])
def test_collate_masks_exactly_prompt_and_padding(tiny, prompt):
    task = get_task("arith", prompt=prompt)
    tokenizer = tiny.tokenizer
    examples = get_task("arith").load().train[:4]
    batch = task.collate(tokenizer, examples, max_length=512)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape
    for row, example in enumerate(examples):
        prompt_ids, answer_ids = task.encode(tokenizer, example["question"], example["answer"])
        n_prompt, n_answer = len(prompt_ids), len(answer_ids)
        assert mask[row].tolist() == [1] * (n_prompt + n_answer) + [0] * (ids.shape[1] - n_prompt - n_answer)
        expected = [-100] * n_prompt + answer_ids + [-100] * (ids.shape[1] - n_prompt - n_answer)
        assert labels[row].tolist() == expected  # loss on the answer tokens only
        assert ids[row, n_prompt:n_prompt + n_answer].tolist() == answer_ids
        kept = tokenizer.decode(answer_ids)
        assert example["answer"] in kept
        end = "<|im_end|>" if prompt == "chat" else "</s>"  # the model learns to stop
        assert kept.rstrip().endswith(end)
        text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
        if prompt == "alpaca":
            assert text == ALPACA_PROMPT.format(query=example["question"])
        else:
            assert text.startswith("user\n" + example["question"]) and text.endswith("assistant\n")


def test_collate_truncation_keeps_the_answer(tiny):
    task = get_task("arith", prompt="alpaca")
    example = get_task("arith").load().train[0]
    prompt_ids, answer_ids = task.encode(tiny.tokenizer, example["question"], example["answer"])
    limit = 2 * len(answer_ids) + 10
    assert len(prompt_ids) + len(answer_ids) > limit  # the prompt must lose its start
    batch = task.collate(tiny.tokenizer, [example], max_length=limit)
    assert batch["input_ids"].shape[1] == limit
    assert batch["labels"][0, -len(answer_ids):].tolist() == answer_ids  # the whole answer
    kept = limit - len(answer_ids)
    assert batch["input_ids"][0, :kept].tolist() == prompt_ids[-kept:]  # the prompt's end
    tight = task.collate(tiny.tokenizer, [example], max_length=20)  # too short for the answer
    assert tight["input_ids"].shape[1] == 20
    assert tight["labels"][0, 10:].tolist() == answer_ids[:10]  # half the budget for each


def test_auto_prompt_follows_the_chat_template(tiny):
    from lorasweep.tasks.generation import prompt_style

    class Base:
        chat_template = None

    assert prompt_style(tiny.tokenizer, "auto") == "chat"
    assert prompt_style(Base(), "auto") == "alpaca"
    with pytest.raises(TaskError, match="chat template"):
        prompt_style(Base(), "chat")


# ---------------------------------------------------------------------------- model


def test_forward_backward_on_a_tiny_llama(tiny):
    task = get_task("arith")
    batch = task.collate(tiny.tokenizer, task.load().train[:3], max_length=256)
    tiny.model.train()
    loss = tiny.model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert tiny.model.model.embed_tokens.weight.grad is not None
    tiny.model.zero_grad(set_to_none=True)


def test_generation_eval_returns_a_fraction_and_restores_train_mode(tiny):
    task = get_task("arith", max_new_tokens=6, eval_limit=5)
    test = task.load().test
    tiny.model.train()
    score = task.evaluate(tiny.model, tiny.tokenizer, test, 2, 256, contextlib.nullcontext)
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    assert tiny.model.training
    texts = task.generate(tiny.model, tiny.tokenizer, test, 3, 256, contextlib.nullcontext)
    assert len(texts) == 5 and all(len(t) == 1 and isinstance(t[0], str) for t in texts)
    one_by_one = [task.generate(tiny.model, tiny.tokenizer, [e], 1, 256, contextlib.nullcontext)[0]
                  for e in test[:2]]
    assert texts[:2] == one_by_one  # left padding does not change greedy completions


def test_eval_batch_size_overrides_the_training_batch_size(monkeypatch, tmp_path):
    seen = []

    def generate(model, tokenizer, examples, batch_size, *rest):
        seen.append(batch_size)
        return [[e["answer"]] for e in examples]

    examples = get_task("arith", eval_limit=3).load().test
    for options, expected in (({}, 2), ({"eval_batch_size": 7}, 7)):
        task = get_task("gsm8k", data_dir=str(write_gsm8k(tmp_path)), **options)
        monkeypatch.setattr(task, "generate", generate)
        assert task.evaluate(None, None, examples, 2, 64, contextlib.nullcontext) == 1.0
        assert seen.pop() == expected
    arith = get_task("arith")  # the offline task batches its evaluation widely by default
    monkeypatch.setattr(arith, "generate", generate)
    assert arith.evaluate(None, None, examples, 2, 64, contextlib.nullcontext) == 1.0
    assert seen.pop() == 64


def test_arith_generation_budget_follows_the_level():
    from lorasweep.tasks.arith import BUDGETS

    assert [get_task("arith", level=n).options.max_new_tokens for n in (1, 2, 3)] == [32, 56, 96]
    assert BUDGETS == {1: 32, 2: 56, 3: 96}
    assert get_task("arith", level=3, max_new_tokens=7).options.max_new_tokens == 7


def test_generation_stops_at_a_written_answer():
    from lorasweep.tasks.math_common import _WRITTEN

    assert _WRITTEN.search("so 3 + 4 = 7\n#### 7\n")
    assert _WRITTEN.search("The answer is: $1,234.50.\n")
    assert not _WRITTEN.search("#### 7")  # maybe 72: not complete yet
    assert not _WRITTEN.search("The answer is 5 apples")


# ---------------------------------------------------------------------------- end to end


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def _trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{cwd / STORE_FILE}"
    return [t for name in optuna.get_all_study_names(url)
            for t in optuna.load_study(study_name=name, storage=url).get_trials()]


def _assert_one_scored_trial(cwd: Path) -> None:
    (trial,) = _trials(cwd)
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    for key in ("test_exact_match", "validation_exact_match"):
        assert 0.0 <= trial.user_attrs[key] <= 1.0
    assert trial.user_attrs["metric"] == "exact_match"


def test_cli_sweep_gsm8k_on_fixture_files(tmp_path, tiny_llama_dir):
    data = write_gsm8k(tmp_path / "data")
    run = _cli("run", "--task", "gsm8k", "--model", str(tiny_llama_dir), "--variant", "lora",
               "--lrs", "1e-3", "--steps", "2", "--batch-size", "4",
               "--data-dir", str(data), "--set", "task.validation_size=5",
               "--set", "task.eval_limit=4", "--set", "task.max_new_tokens=8",
               "--set", "train.grad_accum=1", "--set", "train.max_length=640", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    _assert_one_scored_trial(tmp_path)
    config = json.loads(next((tmp_path / "lorasweep-out" / "runs").rglob("config.json")).read_text())
    assert config["task_options"]["data_dir"] == str(data)  # --data-dir is task.data_dir


def test_data_dir_flag_recipe_key_and_set_are_one_setting(tmp_path):
    from lorasweep.sweep.spec import apply_overrides

    data = write_gsm8k(tmp_path / "data")
    by_key = build_spec({"task": "gsm8k", "data_dir": str(data)})
    by_set = build_spec(apply_overrides({"task": "gsm8k"}, [f"task.data_dir={data}"]))
    assert by_key.task_options["data_dir"] == by_set.task_options["data_dir"] == str(data)
    check_spec(by_key)
    relative = build_spec({"task": "gsm8k", "data_dir": "data"})
    assert Path(relative.task_options["data_dir"]).is_absolute()  # workers may run elsewhere


def test_a_wrong_data_dir_is_one_error_line_and_writes_nothing(tmp_path):
    run = _cli("run", "--task", "gsm8k", "--data-dir", "missing", cwd=tmp_path)
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: gsm8k: missing ") and "--data-dir DIR" in line
    assert str(tmp_path / "missing" / "train.jsonl") in line
    assert not (tmp_path / "lorasweep-out").exists()
    help_text = _cli("run", "--help", cwd=tmp_path).stdout
    assert "--data-dir" in help_text and "task.data_dir" in help_text


@pytest.mark.slow
def test_cli_sweep_arith_on_embedded_smollm2(tmp_path):
    pytest.importorskip("gguf")
    run = _cli("run", "--task", "arith", "--model", "embedded:smollm2", "--variant", "lora",
               "--lrs", "1e-4", "--steps", "2", "--set", "task.eval_limit=4", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    _assert_one_scored_trial(tmp_path)
    assert "de-quantizing" not in run.stdout + run.stderr  # no third-party bar in the run's display


def test_offline_nlg_recipe_is_the_default_arith_sweep():
    from lorasweep.config import load_recipe

    path = Path(__file__).resolve().parents[3] / "recipes" / "offline-nlg.yaml"
    assert path.read_text().splitlines()[0] == "# lorasweep run --recipe recipes/offline-nlg.yaml"
    recipe = check_spec(build_spec(load_recipe(path)))
    default = check_spec(build_spec({"task": "arith"}))
    assert (recipe.task, recipe.model, recipe.lrs, recipe.seeds, train_for(recipe, "arith")) == (
        default.task, default.model, default.lrs, default.seeds, train_for(default, "arith"))
    assert [(v.key, v.rank, v.alpha) for v in recipe.variants] == [
        (v.key, v.rank, v.alpha) for v in default.variants]
    assert get_task("arith", **recipe.task_options).options == get_task("arith").options
