"""The trials in the trackers users watch, with real backends and no network.

TensorBoard: a sweep run with ``--log tensorboard`` writes each trial's event files into its run
folder; read back with TensorBoard's own reader, a trial stopped and resumed has each step once,
equal to its ``events.jsonl``, and its hyperparameters. A tracker that fails warns, is recorded in
the trial and never fails it. Where results are logged is not part of a study: a rerun may add
or drop a tracker.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

import optuna
import pytest
from conftest import PG_SECRET
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


def _hparams(acc):
    """The trial's hyperparameters as TensorBoard's HParams view reads them (one session)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = [plugin_data_pb2.HParamsPluginData.FromString(content)
            for content in acc.PluginTagToContent("hparams").values()]
    starts = [d.session_start_info for d in data if d.HasField("session_start_info")]
    assert len(starts) == 1
    return starts[0].hparams


def _wandb_run(folders, read=None):
    """An offline run's segments read back (``read``: folder -> its records, read already): its
    run records, history rows (each with ``step``), summary, artifact records, and whether any
    holds system metadata."""
    records = [r for f in folders for r in (read[f] if read else _wandb_records(f))]
    runs = [r["run"] for r in records if r["type"] == "run"]
    rows = [{k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
            | {"step": r["history"]["item"]["_step"]} for r in records if r["type"] == "history"]
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    summary = {k: v for k, v in summary.items() if not k.startswith("_")}
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    return runs, rows, summary, artifacts, any(r["type"] == "metadata" for r in records)


def _by_step(rows):
    merged = {}
    for row in rows:
        merged.setdefault(row["step"], {}).update(row)
    return merged


def test_every_tracker_at_once_two_workers_a_resumed_trial_and_a_planted_password(
        postgres_password_url, postgres_url, tiny_bert_dir, tmp_path, monkeypatch, capfd):
    """The issue's whole case, no network: 2 LRs x 2 seeds on 2 local worker processes, the
    first trial stopped after step 3 (then resumed from its checkpoint), the store a PostgreSQL
    URL carrying a password, TensorBoard, MLflow (local SQLite) and W&B (offline) at once, with
    ``log.project`` and ``log.artifacts``. Each backend read back by its own reader holds each
    step once, equal to the event log, the hyperparameters and provenance, the store's final
    metrics and the adapter; the trial records its tracker runs; ``export --to`` each backend
    gives the same data (again: nothing added); the password and the W&B key are in no file,
    store or output."""
    require("tensorboard")
    require("mlflow")
    require("wandb")
    from mlflow.tracking import MlflowClient
    from test_secrets import HF_TOKEN, _dump
    from typer.testing import CliRunner

    from lorasweep import __version__
    from lorasweep.cli import app
    from lorasweep.train.trackers.wandb import run_id

    monkeypatch.chdir(tmp_path)
    mlflow_db = f"sqlite:///{tmp_path / 'ml' / 'live.db'}"
    (tmp_path / "ml").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    # the command line (the worker processes inherit it) names the store, password and all
    monkeypatch.setattr("sys.argv", ["lorasweep", "run", "--storage", postgres_password_url,
                                     "--argv-marker"])
    spec = dataclasses.replace(
        _spec(tiny_bert_dir, tmp_path, lrs=(1e-3, 2e-3), log=["tensorboard", "mlflow", "wandb"],
              log_options={"project": "lsproj", "artifacts": True}),
        name="trk", seeds=[0, 1], storage=postgres_password_url, launcher="local", workers=2)
    _stop_first_trial_then_run(dataclasses.replace(spec, launcher="inline", workers=1),
                               monkeypatch)
    outcome = run_sweep(spec)  # two worker processes: the stopped point resumes, three more run
    assert outcome.summary.completed == 4 and outcome.summary.failed == 0
    done = [t for t in _trials(spec) if t.state == TrialState.COMPLETE]
    # the stop asked for after step 3 lands in step 3's evaluation, which it ends at once: the
    # trial keeps its checkpoint at step 2, and the retry redoes step 3
    assert sorted(t.user_attrs["resumed_from_step"] for t in done) == [0, 0, 0, 2]
    assert sorted((t.params["lr"], t.params["seed"]) for t in done) == [
        (1e-3, 0), (1e-3, 1), (2e-3, 0), (2e-3, 1)]
    assert all("tracker_error" not in t.user_attrs for t in done)
    name = study_name(spec, spec.variants[0])

    # TensorBoard: each step once (the resumed trial too), equal to the event log; hparams
    for trial in done:
        run_dir = trial.user_attrs["run_dir"]
        point = run_dir.rsplit("/", 1)[-1]
        assert trial.user_attrs["tracker"]["tensorboard"] == f"{run_dir}/tb"
        assert trial.user_attrs["tracker"]["wandb"] == run_id(name, point)
        events = read_events(run_dir)
        steps = [r for r in events if r["event"] == "step"]
        assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
        loss, acc = _scalars(f"{run_dir}/tb", "train/loss")
        assert [s for s, _ in loss] == list(range(1, STEPS + 1))
        assert [v for _, v in loss] == pytest.approx([r["loss"] for r in steps])
        lr, _ = _scalars(f"{run_dir}/tb", "train/lr/adapter")
        assert [v for _, v in lr] == pytest.approx([r["lr"]["adapter"] for r in steps])
        evals, _ = _scalars(f"{run_dir}/tb", "eval/accuracy")
        assert [s for s, _ in evals] == [3, STEPS]
        assert {"train/grad_norm", "train/grad_norm/heads", "train/tokens",
                "test/accuracy"} <= set(acc.Tags()["scalars"])
        hp = _hparams(acc)
        assert hp["lr"].number_value == pytest.approx(trial.params["lr"])
        assert hp["seed"].number_value == trial.params["seed"]
        assert hp["variant_tag"].string_value == "lora-r4-a8"
        assert hp["search"].string_value == "grid" and hp["sweep"].string_value == "trk"
        assert hp["lorasweep_version"].string_value == __version__
        final, _ = _scalars(f"{run_dir}/tb", "hparam/validation_accuracy")
        assert final[-1][1] == pytest.approx(trial.value)

    # MLflow: experiment PROJECT/SWEEP, one parent for the study, a child per point with unique
    # steps, the store's final metrics, the provenance tags and the adapter as artifacts
    def children(uri):
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("lsproj/trk").experiment_id])
        parents = [r for r in runs if r.data.tags.get("lorasweep.kind") == "study"]
        assert len(parents) == 1 and parents[0].data.tags["lorasweep.study"] == name
        kids = [r for r in runs if r not in parents]
        assert len(kids) == 4
        assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {parents[0].info.run_id}
        return client, {r.data.tags["lorasweep.point"]: r for r in kids}

    client, live = children(mlflow_db)
    for trial in done:
        run = live[trial.user_attrs["grid_point"]]
        assert trial.user_attrs["tracker"]["mlflow"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == str(trial.params["seed"])
        tags = run.data.tags
        assert float(tags["lorasweep.lr"]) == trial.params["lr"]
        assert (tags["lorasweep.seed"], tags["lorasweep.sweep"], tags["lorasweep.search"],
                tags["lorasweep.version"], tags["lorasweep.variant"]) == (
            str(trial.params["seed"]), "trk", "grid", __version__, "lora")
        history = _histories(client, run.info.run_id)
        assert [s for s, _ in history["train/loss"]] == list(range(1, STEPS + 1))
        assert [s for s, _ in history["eval/accuracy"]] == [3, STEPS]
        for key in ("validation_accuracy", "test_accuracy", "final_loss"):
            assert run.data.metrics[key] == pytest.approx(trial.user_attrs[key])
        stored = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
        adapter = sorted(f"adapter/{p.name}" for p in
                         (tmp_path / "runs").glob(f"**/{trial.user_attrs['grid_point']}/adapter/*"))
        assert stored == set(adapter) and any(p.endswith(".safetensors") for p in stored)
    assert (tmp_path / "ml" / "mlartifacts").is_dir()  # beside the database, not in the cwd

    # W&B offline: each point's segments (two for the resumed one) under one fixed id, project
    # and group, config lr and seed, each step once, the summary, the adapter as a model artifact
    folders = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(folders) == 5
    read = _wandb_read(folders)
    wandb_live = {}
    for trial in done:
        ident = trial.user_attrs["tracker"]["wandb"]
        mine = [f for f in folders if f.name.endswith(ident)]
        assert len(mine) == (2 if trial.user_attrs["resumed_from_step"] else 1)
        runs, rows, summary, artifacts, metadata = wandb_live[ident] = _wandb_run(mine, read)
        assert {(r["run_id"], r["project"], r["run_group"], r["job_type"]) for r in runs} == {
            (ident, "lsproj", "trk", "sentiment")}
        config = runs[0]["config"]["update"]
        assert config["lr"] == pytest.approx(trial.params["lr"])
        assert config["seed"] == trial.params["seed"] and config["search"] == "grid"
        assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
        logged = {r["step"]: r["loss"] for r in read_events(trial.user_attrs["run_dir"])
                  if r["event"] == "step"}
        assert [r["train/loss"] for r in rows if "train/loss" in r] == pytest.approx(
            [logged[s] for s in range(1, STEPS + 1)])
        assert sorted(r["step"] for r in rows if "eval/accuracy" in r) == [3, STEPS]
        assert summary["validation_accuracy"] == pytest.approx(trial.value)
        assert summary["state"] == "completed" and not metadata  # no args, no program
        assert [a["type"] for a in artifacts] == ["model"], artifacts
        assert artifacts[0]["name"] == f"adapter-{ident}"

    # export --to each backend into a fresh destination: the same data; again, nothing added
    loss_live = {t.number: _scalars(f"{t.user_attrs['run_dir']}/tb", "train/loss")[0]
                 for t in done}
    exported = f"sqlite:///{tmp_path / 'ml' / 'exported.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb-exported"))
    printed = []
    for to in ("mlflow", "tensorboard", "mlflow", "tensorboard", "wandb"):
        out = CliRunner().invoke(app, ["export", "--to", to, "--sweep", "trk",
                                       "--storage", postgres_password_url])
        assert out.exit_code == 0, out.output
        assert "replayed 4 trials" in out.output
        printed.append(out.output)
    client_b, again = children(exported)
    read = _wandb_read(sorted((tmp_path / "wb-exported" / "wandb").glob("offline-run-*")))
    for point, run in live.items():
        assert _histories(client_b, again[point].info.run_id) == _histories(client, run.info.run_id)
        assert again[point].data.params == run.data.params
        assert {a.path for a in client_b.list_artifacts(again[point].info.run_id, "adapter")} == {
            a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    for trial in done:
        run_dir = trial.user_attrs["run_dir"]
        assert _scalars(f"{run_dir}/tb", "train/loss")[0] == loss_live[trial.number]
        final, acc = _scalars(f"{run_dir}/tb", "hparam/validation_accuracy")
        assert len(final) == 1 and final[0][1] == pytest.approx(trial.value)
        assert _hparams(acc)["lr"].number_value == pytest.approx(trial.params["lr"])
        ident = trial.user_attrs["tracker"]["wandb"]
        (folder,) = (tmp_path / "wb-exported" / "wandb").glob(f"offline-run-*-{ident}")
        runs, rows, summary, artifacts, _ = _wandb_run([folder], read)
        live_runs, live_rows, live_summary, live_artifacts, _ = wandb_live[ident]
        for key in ("run_id", "project", "run_group", "job_type", "display_name", "config"):
            assert runs[0][key] == live_runs[0][key], key
        # the live point's rows, its resumed segments' joined by step: the same
        assert _by_step(rows) == _by_step(live_rows) and summary == live_summary
        assert [a["digest"] for a in artifacts] == [a["digest"] for a in live_artifacts]

    # the planted password and key, and the command line: in no file, store or output
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "live.db" for p in files)
    needles = [PG_SECRET.encode(), quote(PG_SECRET, safe="").encode(), b"S3cr", b"9f2c",
               WANDB_KEY.encode(), b"PLANTED", HF_TOKEN.encode(), b"--argv-marker"]
    leaks = [str(p) for p in files if any(n in p.read_bytes() for n in needles)]
    assert leaks == []
    captured = capfd.readouterr()
    text = captured.out + captured.err + "".join(printed)
    assert [n for n in needles if n.decode() in text] == []
    dump = _dump(postgres_url, "lorasweep_secret")
    assert "trk|sentiment" in dump and "'tracker'" in dump
    assert [n for n in needles if n.decode() in dump] == []


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
    with pytest.raises(ConfigError, match="log.project must be a name without '/'"):
        run_sweep(_spec(tiny_bert_dir, tmp_path, log=["wandb"], log_options={"project": "a/b"}))
    with pytest.raises(ConfigError, match="log.artifacts must be true or false"):
        run_sweep(_spec(tiny_bert_dir, tmp_path, log=["mlflow"], log_options={"artifacts": "yes"}))
    assert not (tmp_path / "s.db").exists()


def _histories(client, run_id):
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics}


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
    return _wandb_read([run_folder])[run_folder]


def _wandb_read(folders):
    """Each folder's records (:func:`_wandb_records`), its readers run side by side."""
    import json
    import subprocess
    import sys

    procs = {}
    for folder in folders:
        (log,) = folder.glob("run-*.wandb")
        procs[folder] = subprocess.Popen(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = {}
    for folder, proc in procs.items():
        text, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, folder
        out[folder] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return out


WANDB_KEY = "0123456789abcdef0123456789abcdefPLANTED1"


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

    # `wandb offline`, W&B's own command, run in a project folder: its settings file there is
    # offline mode as WANDB_MODE=offline is, and the export runs (into W&B's offline files)
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "wandb", "offline"], cwd=project, env=env, check=True,
                   capture_output=True, timeout=120)
    assert "mode = offline" in (project / "wandb" / "settings").read_text()
    out = subprocess.run([sys.executable, "-m", "lorasweep", "export", "--to", "wandb",
                          "--storage", spec.storage], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "replayed 1 trials" in out.stdout, out.stderr
    assert len(list((project / "lorasweep-out" / "wandb" / "wandb").glob("offline-run-*"))) == 1


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
