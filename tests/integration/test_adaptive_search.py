"""The adaptive search through the real store and worker loop, on a known synthetic LR curve.

The stand-in trial function (``SyntheticCurve``) replaces training only: proposals, enqueueing,
the lock, popping, telling and the report's collection are the real ones.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch.local import LocalLauncher
from lorasweep.report import collect_rows, summarise
from lorasweep.sweep.search import lattice
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep
from lorasweep.sweep.synthetic import SyntheticCurve
from lorasweep.sweep.worker import TrialEvents, run_worker

FINE_GRID = [round(10 ** (-5 + 0.5 * k), 8) for k in range(10)]  # 1e-5 .. 3e-1, half-decades


def _spec(tmp_path: Path, url: str, variants=("lora",), seeds=(0,), **kw) -> SweepSpec:
    return SweepSpec(name="search", model="embedded:minilm", task="sentiment",
                     variants=[VariantSpec(v) for v in variants], lrs=list(FINE_GRID),
                     seeds=list(seeds), train=TrainConfig(steps=100), storage=url,
                     search="adaptive", runs_dir=str(tmp_path / "runs"), **kw)


def _sweep(spec: SweepSpec, curve: SyntheticCurve, **worker_kw):
    storage = open_storage(spec.storage)
    syncs = sync_sweep(spec, storage, spec.storage)
    summary = run_worker(spec.storage, [s.study for s in syncs], trial_fn=curve, poll_s=0.05,
                         **worker_kw)
    return storage, summary


def _study(spec: SweepSpec, storage, variant: str = "lora"):
    v = next(v for v in spec.variants if v.key == variant)
    return optuna.load_study(study_name=study_name(spec, v), storage=storage)


def _grid_best(curve: SyntheticCurve, variant: str = "lora") -> float:
    """The best point of the grid (and its in-bounds extension) on the noiseless curve."""
    points, _, _ = lattice(FINE_GRID, 2)
    return max(curve.mean(lr, 1.0, variant) for lr in points)


def _steps_spent(study) -> float:
    return sum(t.user_attrs["budget"] * 100 for t in study.get_trials()
               if t.state != TrialState.FAIL or not t.user_attrs.get("stray"))


@pytest.mark.parametrize(("peak", "informative_from"), [
    (-4.6, 0.0), (-3.0, 0.0), (-1.6, 0.0), (-0.1, 0.0),  # low edge, middle, high, past the grid
    (-4.6, 0.4), (-3.0, 0.4), (-1.6, 0.4),  # 20% probes say nothing: probed again at 40%
])
def test_finds_the_peak_within_tolerance_and_budget(tmp_path, peak, informative_from):
    curve = SyntheticCurve(peak=peak, informative_from=informative_from)
    spec = _spec(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    storage, summary = _sweep(spec, curve)
    study = _study(spec, storage)
    state = study.user_attrs["search_state"]
    assert state["finished"] and summary.failed == 0
    best_lr = state["best_lr"]
    assert curve.mean(best_lr) >= _grid_best(curve) - 0.01  # within one point of the grid's best
    assert _steps_spent(study) <= 0.4 * len(FINE_GRID) * 100  # at most 40% of the grid's steps
    if peak == -0.1:  # past the grid's edge: extended within bounds (lr <= 1) and said so
        assert best_lr > max(FINE_GRID) and best_lr <= 1.0
        assert any("outside the grid" in n for n in state["notes"])
    # ordinary trials: lr and seed params, a grid point, a budget; the report's curve uses only
    # the full-budget ones, and its best LR is the search's
    trials = study.get_trials()
    assert all(set(t.params) == {"lr", "seed"} and "grid_point" in t.user_attrs for t in trials)
    assert {t.user_attrs["budget"] for t in trials} == ({0.2, 0.4, 1.0} if informative_from else
                                                        {0.2, 1.0})
    escalated = [n for n in state["notes"] if "probing again at 0.4" in n]
    assert len(escalated) == (1 if informative_from else 0)
    assert len({t.user_attrs["grid_point"] for t in trials}) == len(trials)  # nothing repeated
    rows = collect_rows(spec.storage, "search")
    assert len(rows) == len(trials)
    (variant,) = summarise(rows)
    assert set(variant.cells) == {t.params["lr"] for t in trials if t.user_attrs["budget"] == 1.0}
    assert math.isclose(variant.best_lr, best_lr, rel_tol=1e-6)


def test_seeds_average_at_full_budget(tmp_path):
    curve = SyntheticCurve(peak=-2.5)
    spec = _spec(tmp_path, f"journal:{tmp_path / 's.journal'}", seeds=(0, 1))
    storage, _ = _sweep(spec, curve)
    study = _study(spec, storage)
    full = Counter(t.params["lr"] for t in study.get_trials() if t.user_attrs["budget"] == 1.0)
    assert full and set(full.values()) == {2}  # every full-budget point ran at both seeds
    probes = [t for t in study.get_trials() if t.user_attrs["budget"] < 1.0]
    assert probes and {t.params["seed"] for t in probes} == {0}  # the bracket: first seed only
    assert curve.mean(study.user_attrs["search_state"]["best_lr"]) >= _grid_best(curve) - 0.01


def _completed(study) -> Counter:
    return Counter(t.user_attrs["grid_point"] for t in study.get_trials()
                   if t.state == TrialState.COMPLETE)


def test_stopped_search_resumes_without_repeating(tmp_path):
    curve = SyntheticCurve(peak=-2.0)
    whole = _spec(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}")
    storage, _ = _sweep(whole, curve)
    expected = _completed(_study(whole, storage))

    spec = _spec(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}")
    calls = {"n": 0}

    def stop_after_four() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    storage, first = _sweep(spec, curve, should_stop=stop_after_four)
    assert 0 < first.completed < sum(expected.values())
    _, rest = _sweep(spec, curve)  # the rerun continues
    study = _study(spec, storage)
    assert _completed(study) == expected and set(_completed(study).values()) == {1}
    assert first.completed + rest.completed == sum(expected.values())
    assert study.user_attrs["search_state"]["finished"]


class _InterruptOnce(SyntheticCurve):
    """The third trial is interrupted (Ctrl-C) the first time it runs."""

    def __call__(self, spec, reporter=None):
        marker = Path(spec.run_dir).parent / "interrupted"
        if spec.trial_number == 2 and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            raise KeyboardInterrupt
        return super().__call__(spec, reporter)


def test_interrupted_trial_is_retried_on_rerun(tmp_path):
    curve = SyntheticCurve(peak=-3.5)
    whole = _spec(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}")
    expected = _completed(_study(whole, _sweep(whole, curve)[0]))

    spec = _spec(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(KeyboardInterrupt):
        _sweep(spec, _InterruptOnce(peak=-3.5))
    storage, _ = _sweep(spec, _InterruptOnce(peak=-3.5))
    study = _study(spec, storage)
    assert _completed(study) == expected and set(_completed(study).values()) == {1}
    (failed,) = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"] == "interrupted"


def test_two_worker_processes_share_the_searches(tmp_path):
    curve = SyntheticCurve(peaks=(("loraplus", -3.5), ("adalora", -2.0)))
    spec = _spec(tmp_path, f"sqlite:///{tmp_path / 's.db'}", variants=("loraplus", "adalora"))
    storage = open_storage(spec.storage)
    syncs = sync_sweep(spec, storage, spec.storage)
    LocalLauncher(workers=2, runs_dir=tmp_path / "runs", trial_fn=curve).launch(  # logs/ beside
        spec.storage, [s.study for s in syncs], 0, TrialEvents())
    for variant in ("loraplus", "adalora"):
        study = _study(spec, storage, variant)
        state = study.user_attrs["search_state"]
        assert state["finished"]
        assert curve.mean(state["best_lr"], 1.0, variant) >= _grid_best(curve, variant) - 0.01
        assert set(_completed(study).values()) == {1}  # no proposal ran twice
        assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    logs = sorted((tmp_path / "logs").glob("worker-*.log"))
    assert len(logs) == 2 and all("done" in log.read_text() for log in logs)


def _propose_together(url: str, names: list[str], barrier, results) -> None:
    from lorasweep.sweep.adaptive import propose
    from lorasweep.sweep.store import open_storage

    storage = open_storage(url, create=False)
    for name in names:  # one round per study: all processes propose at the barrier's release
        study = optuna.load_study(study_name=name, storage=storage)
        barrier.wait()
        results.put((name, propose(study, storage, url).enqueued))


def test_concurrent_proposals_enqueue_each_point_once(tmp_path, store_url):
    """Four processes propose at the same instant (a barrier), over three fresh studies."""
    storage = open_storage(store_url)
    names = [f"race{i}" for i in range(3)]
    for name in names:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for key, value in {"worst_score": 0.0, "lrs": FINE_GRID, "seeds": [0],
                           "search": "adaptive", "search_options": {}}.items():
            study.set_user_attr(key, value)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_propose_together, args=(store_url, names, barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    enqueued = [results.get(timeout=300) for _ in range(4 * len(names))]
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    for name in names:
        assert sorted(n for s, n in enqueued if s == name) == [0, 0, 0, 5]  # one process won
        study = optuna.load_study(study_name=name, storage=storage)
        points = Counter(t.user_attrs["grid_point"] for t in study.get_trials())
        assert len(points) == 5 and set(points.values()) == {1}


def test_real_training_probes_skip_the_test_split(tiny_bert_dir, tmp_path):
    """With real training: probes are scored on validation only (score and loss), full trials on
    both splits."""
    from lorasweep.launch.run import run_sweep

    spec = SweepSpec(name="real", model=str(tiny_bert_dir), task="sentiment",
                     variants=[VariantSpec("lora", rank=4, alpha=8)],
                     lrs=[1e-4, 1e-3, 1e-2, 1e-1], seeds=[0],
                     train=TrainConfig(steps=10, batch_size=8, max_length=32),
                     task_options={"eval_limit": 16}, storage=f"sqlite:///{tmp_path / 's.db'}",
                     search="adaptive", runs_dir=str(tmp_path / "runs"))
    run_sweep(spec)
    trials = [t for t in _study(spec, open_storage(spec.storage)).get_trials()
              if t.state == TrialState.COMPLETE]
    probes = [t for t in trials if t.user_attrs["budget"] < 1.0]
    full = [t for t in trials if t.user_attrs["budget"] == 1.0]
    assert probes and full
    assert all(t.user_attrs["steps"] == 2 for t in probes)  # 20% of the 10 steps
    assert all(math.isfinite(t.user_attrs["validation_accuracy"]) for t in trials)
    assert all(t.user_attrs["test_accuracy"] is None for t in probes)  # NaN, stored as null
    assert all(math.isfinite(t.user_attrs["test_accuracy"]) for t in full)
    # a probe measures its validation loss instead (what tells probes at chance apart)
    assert all(0 < t.user_attrs["validation_loss"] < 5 for t in probes)
    assert all(t.user_attrs["validation_loss"] is None for t in full)
