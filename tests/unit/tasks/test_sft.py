"""``sft``: formats, loss masks from prefix rendering, truncation, extraction, the NLL metric,
the minimized objective's properties (real tokenizers and a tiny real Llama, no mocks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import _char_tokenizer, make_tiny_llama

from lorasweep.tasks import TaskError, get_task, make_task, task_registry
from lorasweep.tasks.arith import make_problems
from lorasweep.tasks.sft import render
from lorasweep.tasks.sft_metric import exact_match_rate, extractor, normalise

PROBLEMS = make_problems(30, seed=5, level=1)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _three_formats(root: Path) -> dict[str, Path]:
    return {
        "alpaca": _jsonl(root / "alpaca.jsonl", [
            {"instruction": p["question"], "input": "", "output": p["answer"]} for p in PROBLEMS]),
        "prompt-completion": _jsonl(root / "pc.jsonl", [
            {"prompt": p["question"], "completion": p["answer"]} for p in PROBLEMS]),
        "messages": _jsonl(root / "messages.jsonl", [
            {"messages": [{"role": "user", "content": p["question"]},
                          {"role": "assistant", "content": p["answer"]}]} for p in PROBLEMS]),
    }


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_tokenizer_dir) -> Path:
    return smollm2_tokenizer_dir


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("char-tokenizer")
    _char_tokenizer().save_pretrained(path)
    return path


def _task(dataset: Path, tokenizer: Path, **options):
    return get_task("sft", dataset=str(dataset), tokenizer=str(tokenizer), **options)


def test_registered_as_a_built_in_with_the_embedded_default():
    cls = task_registry()["sft"]
    assert (cls.metric, cls.model_kind, cls.default_model) == ("loss", "causal-lm",
                                                                "embedded:smollm2")


def test_the_objective_follows_the_metric():
    loss, em = make_task("sft"), make_task("sft", metric="exact_match")
    assert (loss.metric_name, loss.direction) == ("loss", "minimize")
    assert (em.metric_name, em.direction) == ("exact_match", "maximize")
    assert loss.diverged_score(49152) == pytest.approx(math.log(49152))  # a uniform predictor
    assert em.diverged_score(49152) == 0.0
    assert loss.extra_metrics(2.0, 1.5) == pytest.approx(
        {"validation_perplexity": math.exp(2.0), "test_perplexity": math.exp(1.5)})
    assert em.extra_metrics(0.5, 0.5) == {}


def test_alpaca_prompt_completion_and_messages_train_on_identical_tokens(tmp_path,
                                                                          smollm2_tokenizer):
    batches = {}
    for fmt, path in _three_formats(tmp_path).items():
        task = _task(path, smollm2_tokenizer, prompt="chat")
        data = task.load()
        assert {r["format"] for r in data.train} == {fmt}  # auto picked it by the columns
        batches[fmt] = task.collate(task.tokenizer, data.train[:6], 256)
    first = batches["alpaca"]
    for fmt in ("prompt-completion", "messages"):
        assert first["input_ids"].tolist() == batches[fmt]["input_ids"].tolist(), fmt
        assert first["labels"].tolist() == batches[fmt]["labels"].tolist(), fmt
    tokenizer = task.tokenizer
    row = first["labels"][0]
    learned = tokenizer.decode(row[row != -100])
    assert learned == data.train[0]["turns"][-1]["content"] + "<|im_end|>\n"


def _chats(n: int) -> list[dict]:  # distinct rows (a duplicate of a held-out row leaves train)
    return [{"messages": [{**t, "content": t["content"] + " " * (i if t["role"] == "user" else 0)}
                          for t in _CHAT["messages"]]} for i in range(n)]


_CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}


@pytest.mark.parametrize("loss_on, spans", [("completion", ["6<|im_end|>\n"]),
                                            ("last", ["6<|im_end|>\n"]),
                                            ("assistant", ["4<|im_end|>\n", "6<|im_end|>\n"]),
                                            ("all", None)])
def test_labels_are_minus_100_exactly_outside_the_learned_answers(char_dir, loss_on, spans):
    from transformers import AutoTokenizer

    from lorasweep.tasks.sft_format import to_example

    tokenizer = AutoTokenizer.from_pretrained(char_dir)
    example = to_example(_CHAT, "auto", {}, {}, None, 1, "chat.jsonl")
    ids, labels = render(tokenizer, example, "chat", loss_on)
    full = tokenizer.apply_chat_template(_CHAT["messages"], tokenize=False)
    assert tokenizer.decode(ids) == full  # the pieces join into the template's own rendering
    if spans is None:
        assert labels == ids
        return
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        assert label in (-100, token)
        if label != -100:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    assert [tokenizer.decode(r) for r in runs] == spans


def test_sharegpt_keys_and_role_names_are_mapped(tmp_path, char_dir):
    rows = [{"conversations": [{"from": "human", "value": f"q{i}"},
                               {"from": "bot9", "value": f"a{i}"}]} for i in range(20)]
    path = _jsonl(tmp_path / "share.jsonl", rows)
    with pytest.raises(TaskError, match=r"row 1: role 'bot9' \(turn 2\) is not "
                                        r"user/assistant/system \(map it: --set task.roles="):
        _task(path, char_dir).load()
    data = _task(path, char_dir, roles="bot9=assistant").load()
    assert [t["role"] for t in data.train[0]["turns"]] == ["user", "assistant"]


def test_fields_map_columns_and_system_adds_a_turn(tmp_path, char_dir):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)]
    path = _jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(TaskError, match="row 1 of qa.jsonl has none of messages"):
        _task(path, char_dir).load()
    data = _task(path, char_dir, fields="prompt=question,completion=answer",
                 system="Answer.").load()
    assert [t["role"] for t in data.train[0]["turns"]] == ["system", "user", "assistant"]


def test_a_template_that_rewrites_earlier_turns_names_the_turn_and_the_fix(tmp_path):
    tokenizer = _char_tokenizer()  # earlier answers rewritten: not prefix-stable
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
                               "{{ m['role'] }}: (earlier)\n{% else %}{{ m['role'] }}:"
                               "{{ m['content'] }}\n{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    tokenizer.save_pretrained(tmp_path / "tok")
    path = _jsonl(tmp_path / "m.jsonl", _chats(20))
    with pytest.raises(TaskError, match=r"rewrites earlier turns \(turn 5\); use task.loss_on=last"):
        _task(path, tmp_path / "tok", loss_on="assistant").load()
    task = _task(path, tmp_path / "tok", loss_on="last")  # the fix the line gives
    row = task.load().train[0]
    ids, labels = render(task.tokenizer, row, "chat", "last")
    assert task.tokenizer.decode([t for t, lab in zip(ids, labels, strict=True)
                                  if lab != -100]) == "6\n"


def test_rows_whose_answer_max_length_cuts_away_are_dropped_or_refused(tmp_path, char_dir):
    rows = [{"prompt": f"p{i:03}", "completion": "a"} for i in range(99)]
    rows.append({"prompt": "q" * 200, "completion": "a"})
    path = _jsonl(tmp_path / "long.jsonl", rows)
    task = _task(path, char_dir, max_length=60, holdout=0.1)
    data = task.load()
    assert task.dropped == 1 and len(data.train) + len(data.validation) == 99
    many = rows[:90] + [{"prompt": "q" * 200 + str(i), "completion": "a"} for i in range(10)]
    with pytest.raises(TaskError, match=r"10 of 100 rows lose their whole answer at "
                                        r"max_length=60 \(over 1%\): use --set "
                                        r"train.max_length=2\d\d"):
        _task(_jsonl(tmp_path / "many.jsonl", many), char_dir, max_length=60).load()


def test_messages_without_a_chat_template_is_refused(tmp_path):
    tokenizer = _char_tokenizer()
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "plain")
    path = _jsonl(tmp_path / "m.jsonl", _chats(20))
    with pytest.raises(TaskError, match="task.format=messages needs a chat template"):
        _task(path, tmp_path / "plain").load()


def test_plain_prompts_need_no_template(tmp_path, char_dir):
    path = _jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Q: 1+{i}?", "completion": f" {1 + i}"} for i in range(20)])
    task = _task(path, char_dir, prompt="plain")
    data = task.load()
    row = next(r for r in data.train if r["turns"][0]["content"] == "Q: 1+1?")
    ids, labels = render(task.tokenizer, row, "plain", "completion")
    assert task.tokenizer.decode(ids) == "<s>Q: 1+1? 2</s>"
    assert task.tokenizer.decode([t for t, lab in zip(ids, labels, strict=True)
                                  if lab != -100]) == " 2</s>"


@pytest.mark.parametrize("spec, text, want", [
    ("full", "  The Answer. ", "the answer"),
    ("last_line", "steps\n\n#### 1,234\n", "#### 1234"),
    ("last_number", "so 3 + 4 = $1,207.", "1207"),
    ("marker:####", "a = 5\n#### $72\nmore", "72"),
    ("regex:answer is (\\w+)", "the answer is Paris!", "paris"),
])
def test_extract_modes_and_lm_eval_normalisation(spec, text, want):
    assert normalise(extractor(spec)(text)) == want


def test_exact_match_extracts_both_sides_and_misses_without_an_answer():
    refs = ["x\n#### 72", "y\n#### 5", "#### 1,000"]
    preds = ["x = 72\n#### 72", "no marker here 5", "#### 1000"]
    assert exact_match_rate(preds, refs, "marker:####") == pytest.approx(2 / 3)
    with pytest.raises(TaskError, match="task.extract='nope'"):
        extractor("nope")


def test_the_loss_metric_is_the_mean_nll_per_answer_token(tmp_path, char_dir):
    import contextlib

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    rows = [{"prompt": f"What is {i} + {i}?", "completion": f"It is {2 * i}."}
            for i in range(12)]
    task = _task(_jsonl(tmp_path / "nll.jsonl", rows), char_dir)
    data = task.load()
    model = AutoModelForCausalLM.from_pretrained(make_tiny_llama(tmp_path / "tiny"))
    examples = data.train[:5]
    got = task.evaluate(model, task.tokenizer, examples, 2, 128, contextlib.nullcontext)
    total, count = 0.0, 0
    with torch.no_grad():  # each row alone, unpadded: the batched padding must not change it
        for example in examples:
            ids, labels = render(task.tokenizer, example, "auto", "completion")
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            target = torch.tensor(labels[1:])
            total += F.cross_entropy(logits[:-1], target, ignore_index=-100,
                                     reduction="sum").item()
            count += int((target != -100).sum())
    assert got == pytest.approx(total / count, rel=1e-4)
    assert task.evaluate_with_loss(model, task.tokenizer, examples, 2, 128,
                                   contextlib.nullcontext) == pytest.approx((got, got), rel=1e-4)
