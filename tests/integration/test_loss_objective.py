"""A loss as the objective, through the real store and worker loop, on a synthetic loss curve.

The task is the test package's ``LossTask`` (tests/plugins: ``task.metric=loss``, minimized); the
stand-in trial function replaces training only. The loss falls from chance to its minimum at
lr=1e-3 and diverges above 3e-3: the study is created to minimize, a diverged learning rate
records the uniform predictor's loss (ln of the embedded SmolLM2's vocabulary, from its config),
and every reader (the report's selection and band, the adaptive search, status, export's pick)
takes the lowest.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.report import collect_rows, summarise, write_report
from lorasweep.report.export import _NATIVE, _pick
from lorasweep.sweep.spec import SweepError
from lorasweep.sweep.status import study_status
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import STOPPED_ATTR, study_name, sync_sweep
from lorasweep.sweep.synthetic import SyntheticCurve
from lorasweep.sweep.worker import run_worker

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
TASK = "reviews_pkg.tasks:LossTask"
LRS = [round(10 ** (-4.5 + 0.5 * k), 8) for k in range(7)]  # 3e-5 .. 3e-2, half-decades
UNIFORM = math.log(49152)  # the embedded SmolLM2's vocabulary
# chance 10.0, not ln(V): a diverged trial's score must come from the study, not the curve
CURVE = SyntheticCurve(peak=-3.0, chance=10.0, top=2.0, curvature=0.3, metric="loss")


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def _spec(tmp_path, search="grid", seeds=(0, 1), **task_options) -> SweepSpec:
    return SweepSpec(name=f"loss-{search}", model="embedded:smollm2", task=TASK,
                     variants=[VariantSpec("lora")], lrs=list(LRS), seeds=list(seeds),
                     train=TrainConfig(steps=100), storage=f"journal:{tmp_path / 's.journal'}",
                     search=search, runs_dir=str(tmp_path / "runs"), task_options=task_options)


def _sweep(spec, trial_fn=CURVE):
    storage = open_storage(spec.storage)
    syncs = sync_sweep(spec, storage, spec.storage)
    summary = run_worker(spec.storage, [s.study for s in syncs], trial_fn=trial_fn, poll_s=0.01)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    return study, summary


def _mean(lr, seeds) -> float:
    return statistics.fmean(CURVE.sample(lr, s, 1.0, "lora")[0] for s in seeds)


def test_a_grid_sweep_minimizes_the_loss(tmp_path):
    spec = _spec(tmp_path)
    study, summary = _sweep(spec)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["validation_loss"]
    attrs = study.user_attrs
    assert (attrs["direction"], attrs["metric_name"]) == ("minimize", "loss")
    assert attrs["worst_score"] == pytest.approx(UNIFORM)

    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == len(LRS) * 2 and summary.diverged == 4  # 1e-2 and 3e-2, two seeds
    diverged = [t for t in trials if t.user_attrs["diverged"]]
    assert {t.params["lr"] for t in diverged} == set(LRS[-2:])  # 1e-2, 3e-2
    assert all(t.value == pytest.approx(UNIFORM) for t in diverged)  # finite: ln(V), not inf/NaN

    lowest = min((lr for lr in LRS if lr < 1e-2), key=lambda lr: _mean(lr, (0, 1)))
    assert lowest == 1e-3
    rows = collect_rows(spec.storage)
    assert {r["direction"] for r in rows} == {"minimize"}
    (s,) = summarise(rows)
    assert s.best_lr == lowest and s.minimize and s.chance == pytest.approx(UNIFORM)
    # the mirrored band: within 10% of the fall from chance (ln V) to the best loss
    top = s.cells[s.best_lr].validation
    good = [lr for lr, c in s.cells.items()
            if not c.diverged and c.validation <= top + 0.1 * (UNIFORM - top)]
    assert s.band == (min(good), max(good)) and s.band[0] < lowest  # a real band, not a point
    assert s.cells[1e-2].validation == pytest.approx(UNIFORM)  # shown at the chance line

    text = write_report([s], rows, tmp_path / "report")["report.md"].read_text()
    assert "validation loss is within 0.1 of the best one's fall below the loss training started from" in text
    assert "a loss, lower is better" in text
    assert f"{UNIFORM:.3f}" in text  # the diverged learning rates' cells

    (status,) = study_status(spec.storage)
    assert (status["direction"], status["objective"]) == ("minimize", "validation_loss")
    assert status["best_value"] == min(t.value for t in trials) and status["best_lr"] == lowest

    at_best = [r for r in rows if r["lr"] == lowest]
    for r in at_best:  # what a real trial saves (the stand-in trains nothing)
        (Path(r["run_dir"]) / "adapter").mkdir(parents=True)
        (Path(r["run_dir"]) / "adapter" / _NATIVE[0]).touch()
    picked = _pick(s, rows)  # export: the seed with the lower validation loss at the best LR
    assert picked["select_score"] == min(r["select_score"] for r in at_best)
    assert len({r["select_score"] for r in at_best}) == 2  # the seeds differ: the pick means it


def test_the_dashboard_shows_the_diverged_loss(tmp_path):
    from helpers import require

    dashboard = require("optuna_dashboard")
    from test_dashboard import _get

    spec = _spec(tmp_path, seeds=(0,))
    _sweep(spec)
    app = dashboard.wsgi(open_storage(spec.storage, create=False))
    (summary,) = _get(app, "/api/studies")["study_summaries"]
    study = _get(app, f"/api/studies/{summary['study_id']}")
    assert study["objective_names"] == ["validation_loss"]
    assert study["directions"] == ["minimize"]
    by_lr = {p["param_internal_value"]: t for t in study["trials"] for p in t["params"]
             if p["name"] == "lr"}
    assert by_lr[LRS[-1]]["values"][0] == pytest.approx(UNIFORM)


def test_the_adaptive_search_finds_the_lowest_loss(tmp_path):
    """Its rungs keep the lowest losses (maximizing, it would keep the flat region at chance)."""
    spec = _spec(tmp_path, search="adaptive", seeds=(0,))
    # the minimum at 10^-3.2: its grid point, 1e-3, is the lowest at every fidelity (a short
    # run's minimum sits higher: the synthetic curve's short-horizon bias)
    curve = SyntheticCurve(peak=-3.2, chance=10.0, top=2.0, curvature=0.3, metric="loss",
                           noise=False)
    study, _ = _sweep(spec, curve)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert min(LRS, key=lambda lr: curve.mean(lr)) == 1e-3
    state = study.user_attrs["search_state"]
    assert state["finished"] and state["best_lr"] == 1e-3
    full = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
            if t.user_attrs.get("budget", 1.0) >= 1.0]
    assert min(full, key=lambda t: t.value).params["lr"] == 1e-3
    (s,) = summarise(collect_rows(spec.storage))
    assert s.best_lr == 1e-3


def _broken(spec, reporter=None):
    raise RuntimeError("no such layer")


def test_fail_fast_and_a_changed_direction_refused(tmp_path):
    """The first trials of a minimizing study failing alike stop it; a rerun that would
    maximize in the same study is refused with one line, nothing written."""
    spec = _spec(tmp_path, seeds=(0,))
    study, summary = _sweep(spec, _broken)
    assert summary.failed == 2 and study.user_attrs[STOPPED_ATTR] == "RuntimeError: no such layer"
    store = Path(spec.storage.split(":", 1)[1])
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    with pytest.raises(SweepError, match=r"already ran on .* to minimize validation_loss \(now: "
                                         r"maximize validation_accuracy\)"):
        sync_sweep(_spec(tmp_path, seeds=(0,), metric="accuracy"), open_storage(spec.storage),
                   spec.storage)
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
