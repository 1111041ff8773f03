"""``--set model.quantize=...`` on the CLI: a bad value or a missing qlora extra stops the run
with one ``error:`` line and exit code 2 before anything is written (the store already holding
a trial stays byte for byte the same)."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from lorasweep.cli import app


def _run(tmp_path, model_dir, *extra):
    return CliRunner().invoke(app, [
        "run", "--task", "sentiment", "--model", str(model_dir), "--variant", "lora",
        "--search", "grid", "--lrs", "1e-3", "--steps", "1", "--batch-size", "4",
        "--launcher", "inline", "--storage", f"sqlite:///{tmp_path / 's.db'}",
        "--set", "task.eval_limit=4", "--set", "train.max_length=32", *extra])


@pytest.mark.parametrize(("value", "hide", "message"), [
    ("nf4", True, "error: model.quantize=nf4 needs bitsandbytes: pip install 'lorasweep[qlora]'"),
    ("int3", False, "error: model.quantize must be none or nf4, got 'int3'"),
])
def test_a_bad_quantize_stops_before_anything_is_written(tiny_bert_dir, tmp_path, monkeypatch,
                                                          value, hide, message):
    monkeypatch.chdir(tmp_path)
    first = _run(tmp_path, tiny_bert_dir)
    assert first.exit_code == 0, first.output
    before = (tmp_path / "s.db").read_bytes()
    if hide:  # as where the extra is not installed: importing it fails, finding it too
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    result = _run(tmp_path, tiny_bert_dir, "--lrs", "1e-2", "--set", f"model.quantize={value}")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert (tmp_path / "s.db").read_bytes() == before


def test_a_qlora_run_records_its_base_in_the_store(tiny_bert_dir, tmp_path, monkeypatch):
    import optuna
    from helpers import require_qlora

    require_qlora()
    monkeypatch.chdir(tmp_path)
    result = _run(tmp_path, tiny_bert_dir, "--set", "model.quantize=nf4")
    assert result.exit_code == 0, result.output
    storage = f"sqlite:///{tmp_path / 's.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    (trial,) = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    base = trial.user_attrs["base"]
    assert base["quantize"] == "nf4" and 4.1 < base["bits_per_param"] < 4.3
