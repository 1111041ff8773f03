"""GSM8K's data: local files (GSM8K, MetaMathQA), the held-out validation slice, the errors that
say which files go where, the Hub probe."""

from __future__ import annotations

import json

import pytest
from helpers import write_gsm8k, write_metamathqa

from lorasweep.tasks import TaskError, generation, get_task
from lorasweep.tasks.math_answer import extract_answer


def test_gsm8k_loads_local_files_with_a_held_out_validation_slice(tmp_path):
    root = write_gsm8k(tmp_path / "gsm8k")
    data = get_task("gsm8k", data_dir=str(root), validation_size=5).load()
    assert (len(data.train), len(data.validation), len(data.test)) == (25, 5, 6)
    assert data == get_task("gsm8k", data_dir=str(root), validation_size=5).load()  # fixed
    train = {e["question"] for e in data.train}
    assert not train & {e["question"] for e in data.validation + data.test}
    for example in data.train + data.validation + data.test:
        assert set(example) == {"question", "answer"}
        assert "<<" not in example["answer"] and "####" in example["answer"]
    limited = get_task("gsm8k", data_dir=str(root), validation_size=5, eval_limit=2,
                       train_samples=10).load()
    assert (len(limited.train), len(limited.validation), len(limited.test)) == (10, 2, 2)


def test_gsm8k_metamathqa_holds_out_gsm_problems_and_their_rephrasings(tmp_path):
    root = write_gsm8k(tmp_path / "d")
    write_metamathqa(root)
    rows = [json.loads(line) for line in (root / "metamathqa.jsonl").read_text().splitlines()]
    origin = {r["query"]: r for r in rows}
    data = get_task("gsm8k", data_dir=str(root), train="metamathqa", validation_size=4).load()
    held = {origin[e["question"]]["original_question"] for e in data.validation}
    assert len(data.validation) == 4
    assert all(origin[e["question"]]["type"].startswith("GSM") for e in data.validation)
    assert all(extract_answer(e["answer"]) is not None for e in data.validation)
    # 60 rows, minus 4 held out, minus the 4 rephrasings of the held-out problems
    assert len(data.train) == 52
    assert not held & {origin[e["question"]]["original_question"] for e in data.train}
    assert data.test[0]["question"] == json.loads((root / "test.jsonl").read_text().split("\n")[0])["question"]
    capped = get_task("gsm8k", data_dir=str(root), train="metamathqa", validation_size=4,
                      train_samples=7).load()
    assert capped.train == data.train[:7]  # the first rows, in file order


def test_gsm8k_names_the_missing_files(tmp_path):
    with pytest.raises(TaskError, match=r"train\.jsonl.*test\.jsonl.*--data-dir DIR"):
        get_task("gsm8k", data_dir=str(tmp_path))
    write_gsm8k(tmp_path)
    with pytest.raises(TaskError, match=r"metamathqa\.jsonl"):
        get_task("gsm8k", data_dir=str(tmp_path), train="metamathqa")


def test_gsm8k_offline_without_data_dir_says_where_to_put_the_files(monkeypatch):
    monkeypatch.setattr(generation, "hub_usable", lambda repo: False)
    with pytest.raises(TaskError, match=r"openai/gsm8k.*DIR/train\.jsonl and DIR/test\.jsonl"):
        get_task("gsm8k")


def test_hub_probe_is_false_offline_without_a_cache(monkeypatch, tmp_path):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    assert generation.hub_usable("openai/gsm8k") is False
    (tmp_path / "hub" / "datasets--openai--gsm8k").mkdir(parents=True)
    assert generation.hub_usable("openai/gsm8k") is True


def test_gsm8k_rejects_rows_without_a_final_answer(tmp_path):
    write_gsm8k(tmp_path)
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q?", "answer": "no marker"}))
    with pytest.raises(TaskError, match="#### <number>"):
        get_task("gsm8k", data_dir=str(tmp_path)).load()
