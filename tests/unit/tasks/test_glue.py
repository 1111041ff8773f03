"""GLUE tasks: the table against the study, loading from local files, collation, a real tiny
model's loss, scoring through evaluate() with an oracle model, and every error's fix."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from helpers import hub_unreachable, sweep_one_point
from transformers import AutoTokenizer

from lorasweep.config import TrainConfig
from lorasweep.tasks import TaskError, get_task, list_tasks, task_registry
from lorasweep.tasks.glue import GLUE_LRS, GLUE_TASKS
from lorasweep.train.model import load_model

STUDY_METRICS = {"glue-cola": "matthews_correlation", "glue-qqp": "f1", "glue-stsb": "pearson"}
WORDS = "the a cat dog sat ran on under mat log red big small quick".split()


def _row(task, rng: random.Random, label) -> dict:
    row = {f: " ".join(rng.choices(WORDS, k=rng.randint(3, 9))) for f in task.spec.fields}
    return {**row, "label": label, "idx": 0}


def write_glue(root: Path, key: str, sizes=(("train", 8), ("validation", 6)), seed=0) -> Path:
    """A few rows per split in GLUE's schema (text fields, label, idx)."""
    task = task_registry()[key]
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        labels = ([round(rng.uniform(0, 5), 2) for _ in range(n)] if task.num_labels == 1
                  else [i % task.num_labels for i in range(n)])
        lines = [json.dumps(_row(task, rng, y)) for y in labels]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_table_follows_the_study():
    assert GLUE_TASKS == ("glue-cola", "glue-sst2", "glue-mrpc", "glue-qqp", "glue-stsb",
                          "glue-mnli", "glue-qnli", "glue-rte", "glue-wnli")
    listed = {row["key"]: row for row in list_tasks()}
    for key in GLUE_TASKS:
        cls = task_registry()[key]
        assert cls.metric == STUDY_METRICS.get(key, "accuracy")
        assert cls.num_labels == {"glue-stsb": 1, "glue-mnli": 3}.get(key, 2)
        assert cls.default_model == "FacebookAI/roberta-base" and cls.default_lrs == GLUE_LRS
        assert (listed[key]["metric"], listed[key]["default_model"]) == (cls.metric,
                                                                         cls.default_model)
        cfg = TrainConfig(**cls.default_train)
        cfg.validate()
        assert (cfg.steps, cfg.epochs, cfg.batch_size, cfg.max_length) == (None, 10, 32, 256)
        assert (cfg.weight_decay, cfg.schedule, cfg.warmup_ratio, cfg.precision) == (
            0.0, "linear", 0.03, "fp32")
        assert cfg.eval_every == math.ceil(cls.spec.train_size / 32)  # one epoch
    assert GLUE_LRS == (1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3)
    assert task_registry()["glue-mnli"].spec.validation == "validation_matched"


@pytest.mark.parametrize("key", GLUE_TASKS)
def test_load_and_collate_from_local_files(key, tmp_path, tokenizer):
    task = get_task(key, data_dir=str(write_glue(tmp_path, key)))
    data = task.load()
    assert len(data.train) == 8 and len(data.validation) == 6
    assert data.test is data.validation  # the study scores GLUE's validation split
    assert set(data.train[0]) == {*task.spec.fields, "label"}
    batch = task.collate(tokenizer, data.train[:3], max_length=16)
    assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].shape[1] <= 16
    seps = (batch["input_ids"] == tokenizer.sep_token_id).sum(-1)
    assert seps.tolist() == [len(task.spec.fields)] * 3  # a text, or [CLS] a [SEP] b [SEP]
    if task.num_labels == 1:
        assert batch["labels"].dtype == torch.float32
    else:
        assert batch["labels"].dtype == torch.long
        assert batch["labels"].tolist() == [e["label"] for e in data.train[:3]]
    limited = get_task(key, data_dir=str(tmp_path), eval_limit=2).load()
    assert limited.validation == data.validation[:2]


@pytest.mark.parametrize("key", ["glue-rte", "glue-stsb", "glue-mnli"])
def test_tiny_model_loss(key, tmp_path, tiny_bert_dir):
    task = get_task(key, data_dir=str(write_glue(tmp_path, key)))
    data = task.load()
    model_dir = tiny_bert_dir
    if task.num_labels != 2:  # a checkpoint's saved head must match (a pretrained one has none)
        from helpers import make_tiny_bert

        model_dir = make_tiny_bert(tmp_path / "model", num_labels=task.num_labels)
    loaded = load_model(str(model_dir), task, seed=0)
    out = loaded.model(**task.collate(loaded.tokenizer, data.train[:4], max_length=32))
    assert out.logits.shape == (4, task.num_labels) and torch.isfinite(out.loss)
    out.loss.backward()
    score = task.evaluate(loaded.model, loaded.tokenizer, data.validation, 4, 32, torch.no_grad)
    assert math.isfinite(score) and set(task.last_scores) >= {task.metric}


class _Oracle(torch.nn.Module):
    """Answers from a table keyed by the (unpadded) token ids: tests evaluate()'s bookkeeping."""

    def __init__(self, answers: dict[tuple[int, ...], float], num_labels: int):
        super().__init__()
        self.answers, self.num_labels = answers, num_labels
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **_):
        keys = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask,
                                                                       strict=True)]
        answers = [self.answers[k] for k in keys]
        if self.num_labels == 1:
            logits = torch.tensor(answers).unsqueeze(-1)
        else:
            logits = torch.nn.functional.one_hot(torch.tensor(answers).long(), self.num_labels)
            logits = logits.float()
        return type("Out", (), {"logits": logits})()


def _oracle(task, tokenizer, examples, answer) -> _Oracle:
    answers = {}
    for e in examples:
        batch = task.collate(tokenizer, [e], 64)
        answers[tuple(batch["input_ids"][0].tolist())] = answer(e)
    return _Oracle(answers, task.num_labels)


@pytest.mark.parametrize("key", ["glue-cola", "glue-qqp", "glue-stsb", "glue-mnli"])
def test_gold_answers_score_one_and_constant_answers_score_low(key, tmp_path, tokenizer):
    root = write_glue(tmp_path, key, (("train", 2), ("validation", 12)))
    task = get_task(key, data_dir=str(root))
    examples = task.load().validation

    def score(answer):
        return task.evaluate(_oracle(task, tokenizer, examples, answer), tokenizer, examples,
                             5, 64, torch.no_grad)

    assert score(lambda e: e["label"]) == pytest.approx(1.0)
    if task.num_labels == 2:
        assert task.last_scores["accuracy"] == 1.0
    constant = score(lambda e: 0.0 if task.num_labels == 1 else 0)
    assert constant <= (1 / task.num_labels if task.metric == "accuracy" else 0.0)
    labels = [e["label"] for e in examples]
    permuted = random.Random(1).sample(labels, len(labels))
    shuffled = dict(zip(map(id, examples), permuted, strict=True))
    assert score(lambda e: shuffled[id(e)]) < 0.9


def test_holdout_keeps_glue_validation_as_an_untouched_test_set(tmp_path):
    root = write_glue(tmp_path, "glue-rte", (("train", 20), ("validation", 6)))
    full = get_task("glue-rte", data_dir=str(root)).load()
    data = get_task("glue-rte", data_dir=str(root), holdout=0.25).load()
    assert len(data.validation) == 5 and len(data.train) == 15
    assert data.test == full.validation
    rows = sorted(map(json.dumps, data.train + data.validation))
    assert rows == sorted(map(json.dumps, full.train))
    again = get_task("glue-rte", data_dir=str(root), holdout=0.25).load()
    assert again.validation == data.validation  # seeded: part of the task
    with pytest.raises(TaskError, match=r"holdout must be a fraction"):
        get_task("glue-rte", data_dir=str(root), holdout=1.5)


def test_a_labelled_local_test_file_is_the_test_split(tmp_path):
    root = write_glue(tmp_path, "glue-sst2", (("train", 4), ("validation", 4), ("test", 3)))
    data = get_task("glue-sst2", data_dir=str(root)).load()
    assert len(data.test) == 3 and data.test is not data.validation


def test_missing_files_name_the_files_and_the_layout(tmp_path):
    with pytest.raises(TaskError) as err:
        get_task("glue-mrpc", data_dir=str(tmp_path))
    message = str(err.value)
    for part in (str(tmp_path / "train.jsonl"), str(tmp_path / "validation.jsonl"),
                 "sentence1, sentence2, label", "--set task.data_dir=DIR"):
        assert part in message


def test_bad_rows_say_where_and_why(tmp_path):
    root = write_glue(tmp_path, "glue-rte")
    (root / "validation.jsonl").write_text(json.dumps({"sentence1": "a", "label": 0}) + "\n")
    with pytest.raises(TaskError, match=r"validation.jsonl:1: no field 'sentence2'"):
        get_task("glue-rte", data_dir=str(root)).load()
    (root / "validation.jsonl").write_text(json.dumps({"sentence1": "a", "sentence2": "b",
                                                       "label": -1}) + "\n")
    with pytest.raises(TaskError, match=r"test labels are hidden"):
        get_task("glue-rte", data_dir=str(root)).load()


def test_unreachable_hub_names_the_local_files(monkeypatch):
    hub_unreachable(monkeypatch, "nyu-mll/glue")
    task = get_task("glue-mnli")  # no data_dir: nothing to check before loading
    with pytest.raises(TaskError) as err:
        task.load()
    message = str(err.value)
    for part in ("nyu-mll/glue (mnli)", "Couldn't reach", "DIR/train.jsonl",
                 "DIR/validation.jsonl", "validation_matched", "premise, hypothesis, label"):
        assert part in message


def test_end_to_end_sweep_records_the_metric(tmp_path, tiny_bert_dir):
    root = write_glue(tmp_path / "rte", "glue-rte", (("train", 8), ("validation", 4)))
    trial = sweep_one_point(tmp_path, tiny_bert_dir, "glue-rte", root, max_length=32)
    assert 0.0 <= trial.user_attrs["test_accuracy"] <= 1.0
    # GLUE's objective is the best validation score over the evaluations (the study's protocol)
    assert trial.value == trial.user_attrs["best_validation_accuracy"]
