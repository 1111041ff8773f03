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
from lorasweep.report._format import band_text
from lorasweep.report.plot import build_figure
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
    """The steps trained: a promoted trial counts only the steps past the rung it resumed."""
    return sum(t.user_attrs["steps"] - t.user_attrs["resumed_from_step"]
               for t in study.get_trials() if t.state == TrialState.COMPLETE)


@pytest.mark.parametrize(("peak", "informative_from"), [
    (-4.6, 0.0), (-3.0, 0.0), (-1.6, 0.0), (-0.1, 0.0),  # low edge, middle, high, past the grid
    (-5.2, 0.25), (-3.0, 0.25), (-1.6, 0.25),  # runs shorter than 25% learn nothing
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
    budgets = Counter(t.user_attrs["budget"] for t in trials)
    # a probe past the edge is paid for by the middle rung (a peak past the grid needs it)
    extended = any("extended the search" in n for n in state["notes"])
    assert extended or peak != -0.1
    assert budgets == ({0.3: 11, 0.6: 1, 1.0: 1} if extended else {0.3: 10, 0.6: 2, 1.0: 1})
    assert len({t.user_attrs["grid_point"] for t in trials}) == len(trials)  # nothing repeated
    # each promotion resumed the run of the rung below: same run folder, from its last step
    by_lr: dict[float, dict[float, optuna.trial.FrozenTrial]] = {}
    for t in trials:
        by_lr.setdefault(t.params["lr"], {})[t.user_attrs["budget"]] = t
    for rungs in by_lr.values():
        for low, high in ((0.3, 0.6), (0.6, 1.0)):
            if high in rungs:
                assert rungs[high].user_attrs["resumed_from_step"] == rungs[low].user_attrs["steps"]
    assert not any("guess" in n for n in state["notes"])
    rows = collect_rows(spec.storage, "search")
    assert len(rows) == len(trials)
    (variant,) = summarise(rows)
    assert set(variant.cells) == {t.params["lr"] for t in trials if t.user_attrs["budget"] == 1.0}
    assert math.isclose(variant.best_lr, best_lr, rel_tol=1e-6)
    # the stopped rungs: their validation scores, by fidelity; no band claimed from one LR
    assert {f: len(by) for f, by in variant.rungs.items()} == {f: n for f, n in budgets.items()
                                                               if f < 1.0}
    assert variant.band is None and band_text(variant) == "unmeasured"
    figure = build_figure([variant])  # the first rung drawn dashed over every LR it saw
    (dashed,) = [line for line in figure.axes[0].get_lines()
                 if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert len(dashed.get_xdata()) == budgets[0.3]


def test_seeds_average_at_every_rung(tmp_path):
    curve = SyntheticCurve(peak=-2.5)
    spec = _spec(tmp_path, f"journal:{tmp_path / 's.journal'}", seeds=(0, 1))
    storage, _ = _sweep(spec, curve)
    study = _study(spec, storage)
    runs = Counter((t.params["lr"], t.user_attrs["budget"]) for t in study.get_trials())
    assert set(runs.values()) == {2}  # every point of every rung ran at both seeds
    per_rung = Counter(budget for _, budget in runs)
    assert per_rung == {0.3: 10, 0.6: 2, 1.0: 1}  # the schedule scales with seeds, not the points
    assert _steps_spent(study) <= 0.4 * len(FINE_GRID) * 2 * 100
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
        assert sorted(n for s, n in enqueued if s == name) == [0, 0, 0, 10]  # one process won
        study = optuna.load_study(study_name=name, storage=storage)
        points = Counter(t.user_attrs["grid_point"] for t in study.get_trials())
        assert len(points) == 10 and set(points.values()) == {1}  # rung 0: every grid point


def test_real_training_rungs_resume_one_run(tiny_bert_dir, tmp_path):
    """With real training: rungs stop early, are scored on validation only (score and loss) and
    leave a checkpoint; each promotion resumes it, and the full-budget trial the search ends with
    is the grid's trial of that learning rate, bit for bit."""
    from lorasweep.launch.run import run_sweep

    def spec(name: str, search: str, lrs: list[float], **kw) -> SweepSpec:
        return SweepSpec(name=name, model=str(tiny_bert_dir), task="sentiment",
                         variants=[VariantSpec("lora", rank=4, alpha=8)], lrs=lrs, seeds=[0],
                         train=TrainConfig(steps=10, batch_size=8, max_length=32),
                         task_options={"eval_limit": 16}, storage=f"sqlite:///{tmp_path / 's.db'}",
                         search=search, runs_dir=str(tmp_path / "runs"), **kw)

    search = spec("real", "adaptive", [1e-4, 1e-3, 1e-2, 1e-1],
                  search_options={"budget": 0.6})  # 4 x 0.3 + 2 x 0.3 + 0.4 = 2.2 of 2.4
    run_sweep(search)
    study = _study(search, open_storage(search.storage))
    trials = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert Counter(t.user_attrs["budget"] for t in trials) == {0.3: 4, 0.6: 2, 1.0: 1}
    rungs = [t for t in trials if t.user_attrs["budget"] < 1.0]
    (full,) = [t for t in trials if t.user_attrs["budget"] == 1.0]
    assert {t.user_attrs["steps"] for t in rungs} == {3, 6}  # 30% and 60% of the 10 steps
    assert all(t.user_attrs["schedule_steps"] == 10 for t in trials)  # one schedule for all
    assert all(math.isfinite(t.user_attrs["validation_accuracy"]) for t in trials)
    assert all("test_accuracy" not in t.user_attrs for t in rungs)  # NaN: omitted, not null
    assert all(0 < t.user_attrs["validation_loss"] < 5 for t in rungs)  # on the record
    assert all(0 < t.user_attrs["recent_loss"] < 5 for t in trials)  # what ranks ties
    assert math.isfinite(full.user_attrs["test_accuracy"])
    assert "validation_loss" not in full.user_attrs  # NaN outside rungs: omitted
    resumed = {(t.params["lr"], t.user_attrs["budget"]): t.user_attrs["resumed_from_step"]
               for t in trials}
    assert {k: v for k, v in resumed.items() if k[1] > 0.3} == {
        (t.params["lr"], 0.6): 3 for t in trials if t.user_attrs["budget"] == 0.6} | {
        (full.params["lr"], 1.0): 6}
    assert resumed[(full.params["lr"], 0.3)] == 0
    # one run folder per point; the rungs' checkpoints are removed once the search is over
    folders = {t.user_attrs["run_dir"] for t in trials}
    assert len(folders) == 4
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))
    assert (Path(full.user_attrs["run_dir"]) / "adapter").is_dir()
    # the rungs of the point share its event log: each step once, each rung's evaluation once
    from lorasweep.train.events import read_events

    events = read_events(full.user_attrs["run_dir"])
    assert [r["step"] for r in events if r["event"] == "step"] == list(range(1, 11))
    assert [r["step"] for r in events if r["event"] == "eval"] == [3, 6, 10]
    assert not any((Path(t.user_attrs["run_dir"]) / "adapter").exists() for t in rungs
                   if t.params["lr"] != full.params["lr"])
    # the grid's trial of the chosen learning rate, never stopped: the same run
    lr = study.user_attrs["search_state"]["best_lr"]
    assert lr == full.params["lr"]
    grid = spec("grid", "grid", [lr])
    run_sweep(grid)
    (plain,) = _study(grid, open_storage(grid.storage)).get_trials()
    for key in ("validation_accuracy", "test_accuracy", "final_loss", "loss_curve"):
        assert full.user_attrs[key] == plain.user_attrs[key], key
    # the history carries every rung's evaluation, the last one at the end
    assert [h["step"] for h in full.user_attrs["history"]] == [3, 6, 10]
