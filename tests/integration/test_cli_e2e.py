"""End to end through the real CLI: a short sweep, its report, a rerun that runs nothing twice,
and the saved adapters loaded into peft on the base model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from lorasweep.paths import OUTPUT_DIR, RUNS_DIR, STORE_FILE


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _grid_trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{cwd / STORE_FILE}"
    return [t for name in optuna.get_all_study_names(url)
            for t in optuna.load_study(study_name=name, storage=url).get_trials()]


@pytest.fixture(scope="module")
def swept(tiny_bert_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    args = ["run", "--model", str(tiny_bert_dir), "--variant", "lora,dora,pissa",
            "--lrs", "1e-3,1e-1", "--seeds", "0,1", "--steps", "3", "--batch-size", "8",
            "--rank", "4", "--set", "task.eval_limit=16", "--set", "train.max_length=32",
            "--sweep", "e2e"]
    first = _cli(*args, cwd=cwd)
    assert first.returncode == 0, first.stderr
    return cwd, args, first


def test_sweep_runs_every_grid_point_once(swept):
    cwd, _, first = swept
    assert "12 completed" in first.stdout
    # Everything lands in the output folder, and the run says where and what to run next.
    assert sorted(p.name for p in cwd.iterdir()) == [OUTPUT_DIR.name]
    assert f"study store {STORE_FILE}" in first.stdout and f"{RUNS_DIR}/e2e/" in first.stdout
    assert "next: lorasweep report --sweep e2e" in first.stdout
    trials = _grid_trials(cwd)
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)


def test_rerun_runs_nothing_twice(swept):
    cwd, args, _ = swept
    before = {(t.number, t.datetime_complete) for t in _grid_trials(cwd)}
    again = _cli(*args, cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert "0 completed" in again.stdout and "12 already done" in again.stdout
    assert {(t.number, t.datetime_complete) for t in _grid_trials(cwd)} == before


def test_report_and_status(swept):
    cwd, _, _ = swept
    rep = _cli("report", "--sweep", "e2e", "--out", "rep", cwd=cwd)
    assert rep.returncode == 0, rep.stderr
    out = cwd / "rep"
    assert f"open the report: {(out / 'report.html').resolve().as_uri()}" in rep.stdout
    md = (out / "report.md").read_text()
    for tag in ("lora-r4-a16", "dora-r4-a16", "pissa-r4-a16"):
        assert tag in md
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "results.json").read_text())
    assert len(data["trials"]) == 12 and len(data["summaries"]) == 3
    assert all(len(s["cells"]) == 2 and s["cells"][0]["n"] == 2 for s in data["summaries"])
    status = _cli("status", "--json", cwd=cwd)
    rows = json.loads(status.stdout)
    assert sorted(r["complete"] for r in rows) == [4, 4, 4]
    assert all(r["waiting"] == r["running"] == r["failed"] == 0 for r in rows)


@pytest.mark.parametrize("variant", ["lora", "dora", "pissa"])
def test_saved_adapter_loads_in_peft_with_our_logits(swept, tiny_bert_dir, variant):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lorasweep

    cwd, _, _ = swept
    trial = next(t for t in _grid_trials(cwd)
                 if t.user_attrs["config"]["variant"]["key"] == variant and t.params["lr"] == 1e-3)
    adapter = Path(trial.user_attrs["run_dir"]) / "adapter"
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tok(["a gripping, funny film", "dull and far too long"], return_tensors="pt", padding=True)

    def base():
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()

    ours = lorasweep.load_adapter(base(), adapter).eval()
    theirs = peft.PeftModel.from_pretrained(base(), adapter).eval()
    with torch.no_grad():
        expected, got = ours(**batch).logits, theirs(**batch).logits
        untouched = base()(**batch).logits
    assert not torch.allclose(expected, untouched, atol=1e-6)  # training changed the model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_embedded_default_runs_on_the_real_pretrained_model(tmp_path):
    """The defaults (embedded MiniLM, Rotten Tomatoes) on a tiny budget, through the CLI."""
    run = _cli("run", "--lrs", "1e-5,5e-3", "--steps", "3", "--set", "task.eval_limit=32",
               "--sweep", "smoke", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    trials = _grid_trials(tmp_path)  # the default variants, over the LRs given: a grid
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    keys = sorted(t.user_attrs["config"]["variant"]["key"] for t in trials)
    assert keys == ["adalora", "adalora", "lora", "lora", "loraplus", "loraplus"]
    attrs = next(t for t in trials if t.user_attrs["config"]["variant"]["key"] == "lora").user_attrs
    assert attrs["config"]["model"] == "embedded:minilm" and attrs["config"]["task"] == "sentiment"
    # LoRA r=8 on query and value of MiniLM's 6 layers (384 x 384): 6 * 2 * 8 * (384 + 384)
    assert attrs["trainable_params"] == 6 * 2 * 8 * (384 + 384)
    assert attrs["variant_config"]["modules_to_save"] == ["classifier"]


# ------------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def exported(swept):
    cwd, _, _ = swept
    proc = _cli("export", "--sweep", "e2e", "--out", "exp", "--merge", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, cwd / "exp" / "sentiment", proc


def _selected(cwd: Path, variant: str) -> optuna.trial.FrozenTrial:
    """The trial export must pick: the report's selected LR, then the best validation seed."""
    data = json.loads((cwd / "rep" / "results.json").read_text()) if (cwd / "rep").exists() else None
    if data is None:
        rep = _cli("report", "--sweep", "e2e", "--out", "rep", cwd=cwd)
        assert rep.returncode == 0, rep.stderr
        data = json.loads((cwd / "rep" / "results.json").read_text())
    entry = next(e for e in data["selections"] if e["variant"] == variant)
    trials = [t for t in _grid_trials(cwd) if t.user_attrs["config"]["variant"]["key"] == variant
              and t.params["lr"] == entry["selected_lr"]]
    return max(trials, key=lambda t: (t.user_attrs["validation_accuracy"], -t.params["seed"]))


@pytest.mark.parametrize("variant", ["lora", "dora", "pissa"])
def test_export_writes_the_selected_trial_in_every_format(exported, variant):
    cwd, root, proc = exported
    folder = root / f"{variant}-r4-a16"
    for name in ("lorasweep_adapter.json", "lorasweep_adapter.safetensors", "adapter_config.json",
                 "adapter_model.safetensors", "README.md", "curve.png", "merged/model.safetensors",
                 "merged/config.json"):
        assert (folder / name).is_file(), name
    trial = _selected(cwd, variant)
    chosen = json.loads((folder / "selection.json").read_text())
    assert chosen["seed"] == trial.params["seed"] and chosen["selected_lr"] == trial.params["lr"]
    source = Path(trial.user_attrs["run_dir"]) / "adapter" / "lorasweep_adapter.safetensors"
    assert (folder / "lorasweep_adapter.safetensors").read_bytes() == source.read_bytes()
    card = (folder / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "lorasweep.load_adapter" in card
    assert "![the sweep's learning-rate curve](curve.png)" in card


@pytest.mark.parametrize("variant", ["lora", "dora", "pissa"])
def test_exported_adapter_in_peft_and_merged_give_our_logits(exported, tiny_bert_dir, variant):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lorasweep

    _, root, _ = exported
    folder = root / f"{variant}-r4-a16"
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tok(["a gripping, funny film", "dull and far too long"], return_tensors="pt",
                padding=True)

    def base():
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()

    ours = lorasweep.load_adapter(base(), folder).eval()
    theirs = peft.PeftModel.from_pretrained(base(), folder).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(folder / "merged").eval()
    with torch.no_grad():
        expected = ours(**batch).logits
        untouched = base()(**batch).logits
        got_peft, got_merged = theirs(**batch).logits, merged(**batch).logits
    assert not torch.allclose(expected, untouched, atol=1e-6)
    torch.testing.assert_close(got_peft, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_merged, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("cores", "launched"), [("0", "inline"), ("0,1", "local x2")])
def test_a_run_naming_no_launcher_takes_the_faster_one_for_its_cores(tiny_bert_dir, tmp_path,
                                                                     cores, launched):
    """On CPUs, two worker processes where the process may use two cores, inline on one (the
    affinity mask is what the run sees: taskset)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to offer the run")
    proc = subprocess.run(
        ["taskset", "-c", cores, sys.executable, "-m", "lorasweep", "run", "--model",
         str(tiny_bert_dir), "--lrs", "1e-3,1e-2", "--steps", "2", "--batch-size", "8",
         "--rank", "4", "--set", "task.eval_limit=8", "--set", "train.max_length=32"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    logs = sorted(p.name for p in (tmp_path / OUTPUT_DIR / "logs").glob("worker-*.log"))
    assert logs == ([] if launched == "inline" else ["worker-0.log", "worker-1.log"])
    trials = _grid_trials(tmp_path)  # the default three variants over the two LRs, a grid
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
