"""The trials in the trackers users watch, with real backends and no network.

TensorBoard: a sweep run with ``--log tensorboard`` writes each trial's event files into its run
folder; read back with TensorBoard's own reader, a trial stopped and resumed has each step once,
equal to its ``events.jsonl``, and its hyperparameters. A tracker that fails warns, is recorded in
the trial and never fails it. Where results are logged is not part of a study: a rerun may add
or drop a tracker.
"""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from helpers import require
from optuna.trial import TrialState

from lorasweep.config import ConfigError, SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch.run import run_sweep
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name
from lorasweep.train.events import read_events

STEPS = 6


class StopAt:
    """Asks the process to stop (as SIGTERM would) once the trial reaches ``step``."""

    def __init__(self, step):
        self.step = step

    def __call__(self, spec, reporter):
        import signal

        from lorasweep.train.trial import run_trial

        outer = self

        class Stopping:
            def __getattr__(self, name):
                return getattr(reporter, name)

            def on_step(self, step, loss):
                reporter.on_step(step, loss)
                if step == outer.step and outer.step:
                    outer.step = None  # once: the retry runs to the end
                    signal.raise_signal(signal.SIGUSR2)

        return run_trial(spec, Stopping())


def _spec(model, tmp_path, lrs=(1e-3,), **kw) -> SweepSpec:
    return SweepSpec(name="tb", model=str(model), task="sentiment", launcher="inline",
                     variants=[VariantSpec("lora", rank=4, alpha=8)], lrs=list(lrs), seeds=[0],
                     train=TrainConfig(steps=STEPS, batch_size=8, max_length=32, eval_every=3,
                                       checkpoint_every=2),
                     task_options={"eval_limit": 8}, storage=f"sqlite:///{tmp_path / 's.db'}",
                     runs_dir=str(tmp_path / "runs"), **kw)


def _trials(spec):
    storage = open_storage(spec.storage, create=False)
    return optuna.load_study(study_name=study_name(spec, spec.variants[0]),
                             storage=storage).get_trials()


def _scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)], acc


def _stop_first_trial_then_run(spec, monkeypatch) -> None:
    """Run ``spec`` with its first trial stopped after step 3 (the second runs through)."""
    import signal

    previous = signal.signal(signal.SIGUSR2, lambda *a: None)  # the forwarded stop: ignored
    try:
        with monkeypatch.context() as m:
            m.setattr("lorasweep.sweep.worker._trial_function", lambda: StopAt(3))
            run_sweep(spec)
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_tensorboard_reads_back_each_step_once_after_a_resume(tiny_bert_dir, tmp_path, monkeypatch):
    require("tensorboard")
    import signal

    from lorasweep.launch.run import run_sweep as run
    from lorasweep.sweep.worker import run_worker  # noqa: F401  (the worker runs the trials)

    spec = _spec(tiny_bert_dir, tmp_path, log=["tensorboard"])
    previous = signal.signal(signal.SIGUSR2, lambda *a: None)  # the forwarded stop: ignored
    try:
        monkeypatch.setattr("lorasweep.sweep.worker._trial_function", lambda: StopAt(3))
        run(spec)  # stopped after step 3 (checkpoint there), its point enqueued again
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert [t.state for t in _trials(spec)] == [TrialState.FAIL, TrialState.WAITING]
    monkeypatch.undo()
    run(spec)  # the retry resumes from step 3
    done = [t for t in _trials(spec) if t.state == TrialState.COMPLETE]
    # the stop asked for after step 3 lands in step 3's evaluation, which it ends at once: the
    # trial keeps its checkpoint at step 2, and the retry redoes step 3
    assert len(done) == 1 and done[0].user_attrs["resumed_from_step"] == 2
    assert "tracker_error" not in done[0].user_attrs
    run_dir = done[0].user_attrs["run_dir"]
    events = read_events(run_dir)
    logged = [(r["step"], r["loss"]) for r in events if r["event"] == "step"]
    assert [s for s, _ in logged] == list(range(1, STEPS + 1))
    loss, acc = _scalars(f"{run_dir}/tb", "train/loss")
    assert [s for s, _ in loss] == list(range(1, STEPS + 1))  # each step once
    assert [v for _, v in loss] == pytest.approx([v for _, v in logged])
    lr, _ = _scalars(f"{run_dir}/tb", "train/lr/adapter")
    assert [v for _, v in lr] == pytest.approx([r["lr"]["adapter"] for r in events
                                                if r["event"] == "step"])
    evals, _ = _scalars(f"{run_dir}/tb", "eval/accuracy")
    assert [s for s, _ in evals] == [3, STEPS]
    assert {"train/grad_norm", "train/grad_norm/heads", "train/tokens", "test/accuracy"} <= set(
        acc.Tags()["scalars"])
    # the hyperparameters: HParams' session start, with the trial's lr and seed
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = [plugin_data_pb2.HParamsPluginData.FromString(content)
            for content in acc.PluginTagToContent("hparams").values()]
    starts = [d.session_start_info for d in data if d.HasField("session_start_info")]
    assert len(starts) == 1
    hp = starts[0].hparams
    assert hp["lr"].number_value == pytest.approx(1e-3) and hp["seed"].number_value == 0
    assert hp["variant_tag"].string_value == "lora-r4-a8"
    final, _ = _scalars(f"{run_dir}/tb", "hparam/validation_accuracy")
    assert final[-1][1] == pytest.approx(done[0].value)


def test_a_rerun_may_add_or_drop_a_tracker_and_a_failing_one_never_fails_a_trial(
        tiny_bert_dir, tmp_path, monkeypatch):
    require("tensorboard")
    spec = _spec(tiny_bert_dir, tmp_path, lrs=[1e-3])
    run_sweep(spec)
    # a rerun with a tracker is the same study (nothing to do: the point is complete)
    again = dataclasses.replace(spec, lrs=[1e-3, 2e-3], log=["tensorboard"])

    def broken(self, spec, resume_step):
        raise OSError("disk full")

    monkeypatch.setattr("lorasweep.train.trackers.tensorboard.TensorBoardSink.open", broken)
    with pytest.warns(RuntimeWarning, match="tracker tensorboard failed"):
        outcome = run_sweep(again)
    assert outcome.summary.completed == 1 and outcome.summary.failed == 0
    trials = [t for t in _trials(spec) if t.state == TrialState.COMPLETE]
    assert len(trials) == 2
    (new,) = [t for t in trials if t.params["lr"] == 2e-3]
    assert new.user_attrs["tracker_error"] == {"tensorboard": "OSError: disk full"}
    assert read_events(new.user_attrs["run_dir"])  # the event log is written all the same


def test_an_unknown_tracker_or_option_is_refused(tiny_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'neptune'"):
        run_sweep(_spec(tiny_bert_dir, tmp_path, log=["neptune"]))
    with pytest.raises(ConfigError, match="unknown log option 'colour'"):
        run_sweep(_spec(tiny_bert_dir, tmp_path, log=["tensorboard"], log_options={"colour": 1}))
    assert not (tmp_path / "s.db").exists()


def test_mlflow_has_a_parent_per_study_and_a_child_per_point(tiny_bert_dir, tmp_path,
                                                              monkeypatch):
    """MLflow on a local SQLite store: one experiment for the sweep, one parent run for its
    study, a child per grid point; the stopped and resumed point is one run, each step once,
    and its final metrics are the store's."""
    require("mlflow")

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    spec = _spec(tiny_bert_dir, tmp_path, lrs=(1e-3, 2e-3), log=["mlflow"])
    _stop_first_trial_then_run(spec, monkeypatch)
    run_sweep(spec)  # the stopped point resumes from its checkpoint (at 2: see above)
    done = [t for t in _trials(spec) if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and sorted(t.user_attrs["resumed_from_step"] for t in done) == [0, 2]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("lorasweep/tb")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lorasweep.kind") == "study"]
    assert len(parents) == 1
    assert parents[0].data.tags["lorasweep.study"] == study_name(spec, spec.variants[0])
    children = [r for r in runs if r not in parents]
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_lr = {float(r.data.params["lr"]): r for r in children}
    for trial in done:
        run = by_lr[trial.params["lr"]]
        assert run.info.status == "FINISHED" and run.data.params["seed"] == "0"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, STEPS + 1))  # each step once, the resumed too
        for key in ("validation_accuracy", "test_accuracy", "final_loss"):
            assert run.data.metrics[key] == pytest.approx(trial.user_attrs[key])
        evals = client.get_metric_history(run.info.run_id, "eval/accuracy")
        assert sorted(m.step for m in evals) == [3, STEPS]


def _histories(client, run_id):
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics}


def test_export_replays_the_same_data_as_live_logging_and_again_adds_nothing(
        tiny_bert_dir, tmp_path, monkeypatch):
    require("mlflow")
    require("tensorboard")
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from lorasweep.cli import app

    live, exported = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'exp.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live)
    spec = _spec(tiny_bert_dir, tmp_path, log=["mlflow", "tensorboard"])
    run_sweep(spec)
    (trial,) = _trials(spec)
    tb = f"{trial.user_attrs['run_dir']}/tb"
    loss_live, _ = _scalars(tb, "train/loss")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported)
    for _ in range(2):  # the second export adds nothing
        for to in ("mlflow", "tensorboard"):
            out = CliRunner().invoke(app, ["export", "--to", to, "--sweep", "tb",
                                           "--storage", spec.storage])
            assert out.exit_code == 0, out.output
            assert "replayed 1 trials" in out.output
    a, b = MlflowClient(tracking_uri=live), MlflowClient(tracking_uri=exported)
    runs_a = a.search_runs([a.get_experiment_by_name("lorasweep/tb").experiment_id])
    runs_b = b.search_runs([b.get_experiment_by_name("lorasweep/tb").experiment_id])
    assert len(runs_a) == len(runs_b) == 2  # the parent and the point's child
    child = {r.data.tags.get("lorasweep.kind", "point"): r for r in runs_b}["point"]
    live_child = {r.data.tags.get("lorasweep.kind", "point"): r for r in runs_a}["point"]
    assert _histories(b, child.info.run_id) == _histories(a, live_child.info.run_id)
    assert child.data.params == live_child.data.params
    loss, acc = _scalars(tb, "train/loss")
    assert loss == loss_live  # each step once, live and twice replayed
    final, _ = _scalars(tb, "hparam/validation_accuracy")
    assert len(final) == 1 and final[0][1] == pytest.approx(trial.value)


def test_export_to_an_unknown_tracker_or_sweep_is_refused(tmp_path):
    from typer.testing import CliRunner

    from lorasweep.cli import app

    db = f"sqlite:///{tmp_path / 's.db'}"
    open_storage(db)
    out = CliRunner().invoke(app, ["export", "--to", "neptune", "--storage", db])
    assert out.exit_code == 2 and "unknown tracker 'neptune'" in out.output
    out = CliRunner().invoke(app, ["export", "--to", "tensorboard", "--sweep", "nope",
                                   "--storage", db])
    assert out.exit_code == 2 and "no sweep named 'nope'" in out.output


def _wandb_records(run_folder):
    """The records of an offline run's ``.wandb`` file, read by W&B's own reader
    (``wandb leet inspect --json``)."""
    import json
    import subprocess
    import sys

    (log,) = run_folder.glob("run-*.wandb")
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                         capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


WANDB_KEY = "0123456789abcdef0123456789abcdefPLANTED1"


def test_wandb_offline_runs_hold_the_config_group_and_each_step_once(tiny_bert_dir, tmp_path,
                                                                       monkeypatch):
    """W&B offline: a run per grid point (group = sweep, job type = task, a fixed id from the
    study and point), its config lr and seed, each training step once across the stopped trial's
    two offline folders (the retry logs only what the first did not), the final metrics in the
    summary; the planted API key is in none of the files, and no command line is recorded."""
    require("wandb")

    from lorasweep.train.trackers.wandb import run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setattr("sys.argv", ["lorasweep", "run", "--lrs", "1e-3,2e-3", "--argv-marker"])
    spec = _spec(tiny_bert_dir, tmp_path, lrs=(1e-3, 2e-3), log=["wandb"])
    _stop_first_trial_then_run(spec, monkeypatch)
    run_sweep(spec)  # the stopped point resumes from its checkpoint
    done = [t for t in _trials(spec) if t.state == TrialState.COMPLETE]
    # the stop lands in step 3's evaluation and ends it at once: the retry resumes from the
    # checkpoint at step 2 and redoes step 3, which the first segment logged already
    resumed = sorted(t.user_attrs["resumed_from_step"] for t in done)
    assert len(done) == 2 and resumed == [0, 2]
    assert all("tracker_error" not in t.user_attrs for t in done)

    folders = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(folders) == 3  # the stopped point's two segments, the other point's one
    name = study_name(spec, spec.variants[0])
    for trial in done:
        point = trial.user_attrs["run_dir"].rsplit("/", 1)[-1]
        ident = run_id(name, point)
        mine = [f for f in folders if f.name.endswith(ident)]
        assert len(mine) == (2 if trial.user_attrs["resumed_from_step"] else 1)
        records = [r for f in mine for r in _wandb_records(f)]
        runs = [r["run"] for r in records if r["type"] == "run"]
        assert {r["run_id"] for r in runs} == {ident}
        assert {r["run_group"] for r in runs} == {"tb"} and {r["job_type"] for r in runs} == {
            "sentiment"}
        config = runs[0]["config"]["update"]
        assert config["lr"] == pytest.approx(trial.params["lr"]) and config["seed"] == 0
        assert config["variant_tag"] == "lora-r4-a8"
        rows = [r["history"]["item"] for r in records if r["type"] == "history"]
        steps = [row["_step"] for row in rows if "train/loss" in row]
        assert steps == list(range(1, STEPS + 1))  # each step once
        logged = {r["step"]: r["loss"] for r in read_events(trial.user_attrs["run_dir"])
                  if r["event"] == "step"}
        assert [row["train/loss"] for row in rows if "train/loss" in row] == pytest.approx(
            [logged[s] for s in steps])
        assert sorted(row["_step"] for row in rows if "eval/accuracy" in row) == [3, STEPS]
        summary = {}
        for r in records:
            if r["type"] == "summary":
                summary.update(r["summary"].get("update", {}))
        assert summary["validation_accuracy"] == pytest.approx(trial.value)
        assert summary["state"] == "completed"
        assert not any(r["type"] == "metadata" for r in records)  # no args, no program
    # the planted key and the command line: in no file of W&B's folder, the run folders or store
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "s.db" for p in files)
    leaks = [str(p) for p in files if WANDB_KEY.encode() in p.read_bytes()
             or b"PLANTED" in p.read_bytes() or b"--argv-marker" in p.read_bytes()]
    assert leaks == []


def test_wandb_without_a_key_or_offline_mode_is_refused_before_anything_runs(
        tiny_bert_dir, tmp_path, monkeypatch):
    require("wandb")
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    spec = _spec(tiny_bert_dir, tmp_path)
    run_sweep(spec)  # a store that holds a trial
    db = tmp_path / "s.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("WANDB_") and k != "NETRC"}
    repo = Path(__file__).resolve().parents[2]
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"), PYTHONPATH=str(repo),
               HF_HUB_OFFLINE="1")
    for args in (["run", "--model", str(tiny_bert_dir), "--variant", "lora", "--lrs", "1e-3,5e-3",
                  "--steps", "2", "--sweep", "tb", "--storage", spec.storage, "--log", "wandb"],
                 ["export", "--to", "wandb", "--storage", spec.storage]):
        out = subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2, out.stderr
        assert len(lines) == 1 and lines[0].startswith("error: --log wandb needs a W&B API key")
        assert "WANDB_MODE=offline" in lines[0]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "lorasweep-out").exists()


def test_export_to_wandb_gives_the_live_runs_data(tiny_bert_dir, tmp_path, monkeypatch):
    """W&B offline, live and exported: the same config, group, rows and summary for the point."""
    require("wandb")
    from typer.testing import CliRunner

    from lorasweep.cli import app

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "live"))
    spec = _spec(tiny_bert_dir, tmp_path, log=["wandb"])
    run_sweep(spec)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "exp"))
    out = CliRunner().invoke(app, ["export", "--to", "wandb", "--sweep", "tb",
                                   "--storage", spec.storage])
    assert out.exit_code == 0, out.output
    assert "replayed 1 trials" in out.output

    def read(folder):
        (run,) = (tmp_path / folder / "wandb").glob("offline-run-*")
        records = _wandb_records(run)
        (info,) = [r["run"] for r in records if r["type"] == "run"]
        rows = [{k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
                | {"step": r["history"]["item"]["_step"]}
                for r in records if r["type"] == "history"]
        summary = {}
        for r in records:
            if r["type"] == "summary":
                summary.update(r["summary"].get("update", {}))
        summary = {k: v for k, v in summary.items() if not k.startswith("_")}
        return info, rows, summary

    (live, live_rows, live_summary), (exp, exp_rows, exp_summary) = read("live"), read("exp")
    for key in ("run_id", "run_group", "job_type", "display_name", "config"):
        assert exp[key] == live[key], key
    assert [r["step"] for r in live_rows] == list(range(1, STEPS + 1))
    assert exp_rows == live_rows and exp_summary == live_summary
    assert live_summary["state"] == "completed"


def test_a_tracking_uri_with_a_password_is_printed_masked(tiny_bert_dir, tmp_path, monkeypatch):
    """MLflow at a server that is not there, its URI holding a password: the run's closing line
    names the URI masked, the failure to reach it warns masked, and the trial is recorded with
    the tracker's (masked) error; the password is in nothing printed or stored."""
    require("mlflow")
    import sqlite3

    from typer.testing import CliRunner

    from lorasweep.cli import app

    secret = "Tr4ckPw-5e1f"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:{secret}@127.0.0.1:9/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    db = tmp_path / "s.db"
    with pytest.warns(RuntimeWarning) as caught:
        out = CliRunner().invoke(app, [
            "run", "--model", str(tiny_bert_dir), "--variant", "lora", "--lrs", "1e-3",
            "--steps", "1", "--batch-size", "4", "--sweep", "tb", "--storage", f"sqlite:///{db}",
            "--log", "mlflow", "--set", "task.eval_limit=4", "--set", "train.max_length=16",
            "--set", f"runs_dir={tmp_path / 'runs'}"])
    assert out.exit_code == 0, out.output
    warned = [str(w.message) for w in caught]
    assert any("could not prepare" in w and "me:***@127.0.0.1" in w for w in warned), warned
    assert not any(secret in w for w in warned)
    assert "mlflow: experiment lorasweep/tb at http://me:***@127.0.0.1:9/" in out.output
    assert secret not in out.output
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert "tracker_error" in dump and "me:***@127.0.0.1" in dump and secret not in dump
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [str(p) for p in files if secret.encode() in p.read_bytes()] == []
