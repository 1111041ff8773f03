"""The same sweep on every storage and launcher: real Optuna stores, real training, real workers."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch.progress import SweepProgress
from lorasweep.launch.run import run_sweep
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import fail_reason, study_name

PROVENANCE = ("config", "wall_time_s", "peak_memory_mb", "tokens_per_second", "lorasweep_version",
              "torch_version", "transformers_version", "host", "device", "test_accuracy",
              "validation_accuracy", "trainable_params", "variant_config")


def _spec(model: Path, tmp_path: Path, storage: str, **kw) -> SweepSpec:
    base = dict(
        name="contract", model=str(model), task="sentiment",
        variants=[VariantSpec("lora", rank=4, alpha=8), VariantSpec("dora", rank=4, alpha=8)],
        lrs=[1e-3, 1e-2], seeds=[0],
        train=TrainConfig(steps=3, batch_size=8, max_length=32),
        task_options={"eval_limit": 16}, storage=storage, runs_dir=str(tmp_path / "runs"),
    )
    base.update(kw)
    return SweepSpec(**base)


def _trials(spec: SweepSpec) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(spec.storage, create=False)
    return [t for v in spec.variants
            for t in optuna.load_study(study_name=study_name(spec, v), storage=storage).get_trials()]


def _completed_points(spec: SweepSpec) -> Counter:
    return Counter((t.user_attrs["grid_point"], t.user_attrs["config"]["variant"]["key"])
                   for t in _trials(spec) if t.state == TrialState.COMPLETE)


def test_sweep_contract_on_every_storage(tiny_bert_dir, tmp_path, store_url):
    spec = _spec(tiny_bert_dir, tmp_path, store_url)
    outcome = run_sweep(spec)
    assert outcome.summary.completed == 4 and outcome.summary.failed == 0
    points = _completed_points(spec)
    assert len(points) == 4 and set(points.values()) == {1}
    for trial in _trials(spec):
        missing = [k for k in PROVENANCE if k not in trial.user_attrs]
        assert not missing, f"trial {trial.number} lacks {missing}"
        assert trial.value == trial.user_attrs["validation_accuracy"]
        assert trial.user_attrs["config"]["lr"] == trial.params["lr"]
        run_dir = Path(trial.user_attrs["run_dir"])
        assert (run_dir / "config.json").is_file() and (run_dir / "metrics.json").is_file()
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()

    again = run_sweep(spec)  # the same command again: nothing left to do
    assert again.summary.completed == 0 and again.skipped == 4
    assert len(_trials(spec)) == 4

    wider = _spec(tiny_bert_dir, tmp_path, store_url, lrs=[1e-3, 1e-2, 1e-1])
    grown = run_sweep(wider)  # a grown grid runs only the new points
    assert grown.summary.completed == 2 and grown.skipped == 4
    assert set(_completed_points(wider).values()) == {1}


def test_local_launcher_runs_each_point_once(tiny_bert_dir, tmp_path):
    spec = _spec(tiny_bert_dir, tmp_path, f"sqlite:///{tmp_path / 's.db'}", launcher="local",
                 workers=2, lrs=[1e-4, 1e-3, 1e-2], seeds=[0, 1])
    shown = io.StringIO()
    outcome = run_sweep(spec, progress_factory=lambda total: SweepProgress(
        total, Console(file=shown, width=200, color_system=None), workers=2))
    assert outcome.summary.completed == 12
    points = _completed_points(spec)
    assert len(points) == 12 and set(points.values()) == {1}
    assert len({t.user_attrs["host"] for t in _trials(spec)}) == 1
    logs = sorted((tmp_path / "logs").glob("worker-*.log"))  # beside the runs folder
    assert len(logs) == 2 and all("done" in log.read_text() for log in logs)
    # The parent shows every trial's result, read from the store, labelled, once.
    lines = [line for line in shown.getvalue().splitlines() if "completed" in line]
    assert len(lines) == 12 and all("val accuracy" in x and " test " in x for x in lines)
    assert sum("lr=1e-2 seed=1" in x for x in lines) == 2  # lora and dora
    # Each worker wrote its step count where the parent's step bars read it.
    assert all(t.user_attrs["progress"]["step"] == t.user_attrs["progress"]["total"] == 3
               for t in _trials(spec))


def test_changed_budget_is_refused_without_writing(tiny_bert_dir, tmp_path):
    from lorasweep.config import ConfigError

    url = f"sqlite:///{tmp_path / 's.db'}"
    run_sweep(_spec(tiny_bert_dir, tmp_path, url, variants=[VariantSpec("lora", rank=4)]))
    changed = _spec(tiny_bert_dir, tmp_path, url, variants=[VariantSpec("lora", rank=4)],
                    train=TrainConfig(steps=5, batch_size=8, max_length=32))
    before = len(_trials(changed))
    with pytest.raises(ConfigError, match="steps"):
        run_sweep(changed)
    assert len(_trials(changed)) == before


_KILLABLE_WORKER = """
import sys
from lorasweep.config import SweepSpec
from lorasweep.launch.run import run_sweep
spec = SweepSpec.from_dict({spec!r})
run_sweep(spec)
"""


def test_killed_worker_loses_only_its_trial(tiny_bert_dir, tmp_path):
    """SIGKILL a sweep mid-trial: the lost trial is failed by heartbeat and re-run once."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = _spec(tiny_bert_dir, tmp_path, url, variants=[VariantSpec("lora", rank=4)],
                 lrs=[1e-4, 1e-3, 1e-2], train=TrainConfig(steps=100, batch_size=8, max_length=32))
    data = spec.to_dict()
    data["variants"] = [{"key": "lora", "rank": 4}]
    env = {**os.environ, "LORASWEEP_HEARTBEAT_INTERVAL": "0.5", "LORASWEEP_HEARTBEAT_GRACE": "3"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_WORKER.format(spec=data)], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = None
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial is running, then kill the worker hard
        time.sleep(0.1)
        if storage is None:
            try:
                storage = open_storage(url, create=False)
                study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
            except Exception:
                storage = None
                continue
        if study.get_trials(states=(TrialState.RUNNING,)):
            break
    else:
        pytest.fail("the worker never started a trial: " + proc.stderr.read().decode()[-2000:])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [t.state for t in study.get_trials()].count(TrialState.RUNNING) == 1

    time.sleep(3.5)  # past the heartbeat grace period
    os.environ["LORASWEEP_HEARTBEAT_GRACE"] = "3"  # read when the next run opens its store
    try:
        quick = _spec(tiny_bert_dir, tmp_path, url, variants=[VariantSpec("lora", rank=4)],
                      lrs=[1e-4, 1e-3, 1e-2], train=TrainConfig(steps=100, batch_size=8, max_length=32))
        outcome = run_sweep(quick)
    finally:
        os.environ.pop("LORASWEEP_HEARTBEAT_GRACE", None)
    trials = study.get_trials()
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] == 3 and states[TrialState.FAIL] == 1
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0
    lost = next(t for t in trials if t.state == TrialState.FAIL)
    assert "heartbeat" in fail_reason(lost)
    assert outcome.summary.completed == 3
    assert set(_completed_points(quick).values()) == {1}
