"""lorasweep.report over a real SQLite study store filled the way sweep workers fill it.

The store is made by ``sync_sweep`` (the real study layout and enqueued grid); trials are then
popped with ``study.ask()`` and told by hand, as ``sweep.worker`` does after ``run_trial``, so
every score below is chosen here and every expected summary is worked out by hand from them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.launch.run import check_spec
from lorasweep.report import collect_rows, render_terminal, summarise, write_report
from lorasweep.report._format import short_names
from lorasweep.sweep.status import study_status
from lorasweep.sweep.store import StorageError, open_storage
from lorasweep.sweep.study import study_name, sync_sweep

LRS = [1e-4, 1e-3, 1e-2]
LORA, DORA, RSLORA = VariantSpec("lora"), VariantSpec("dora"), VariantSpec("rslora")

# Test accuracies per (lr, seed). LoRA diverges at 1e-2 (scored at the task's worst, 0.5).
LORA_SCORES = {
    (1e-4, 0): 0.60,
    (1e-4, 1): 0.64,
    (1e-3, 0): 0.80,
    (1e-3, 1): 0.84,
    (1e-2, 0): 0.50,
    (1e-2, 1): 0.50,
}
LORA_DIVERGED = {(1e-2, 0), (1e-2, 1)}
# DoRA: (1e-3, 0) fails once (with a stray 0.99 recorded) and its retry completes at 0.86;
# (1e-2, 0) fails and its retry is still waiting; (1e-2, 1) is pruned.
DORA_SCORES = {(1e-4, 0): 0.70, (1e-4, 1): 0.72, (1e-3, 1): 0.88}
DORA_RETRY_SCORE = 0.86
# Validation accuracy is MIRROR - test: it ranks the learning rates opposite to test (so the tests
# see validation select while test is reported), and every score lies above the task's chance
# (0.5), where the good-LR band (relative to the rise above chance) is measured.
MIRROR = 1.45
# The band's tolerance (a fraction of the rise above chance) for the shared summaries: wide enough
# to take LoRA's and DoRA's second learning rate in (they lie 61% and 67% of the rise below
# their best).
TOL = 0.75


def _pop(study: optuna.Study) -> tuple[optuna.Trial, tuple[float, int]]:
    """Pop the next waiting trial and read its grid point, as the worker does."""
    trial = study.ask()
    assert "grid_point" in trial.user_attrs
    lr = trial.suggest_float("lr", 1e-12, 1e3, log=True)
    seed = trial.suggest_int("seed", 0, 2**31 - 1)
    return trial, (lr, seed)


def _complete(study, trial, test_score: float, diverged: bool = False) -> None:
    trial.set_user_attr("metric", "accuracy")
    trial.set_user_attr("test_accuracy", test_score)
    trial.set_user_attr("validation_accuracy", MIRROR - test_score)
    trial.set_user_attr("diverged", diverged)
    trial.set_user_attr("wall_time_s", 1.5)
    # The objective is the validation score; the report must use the test score.
    study.tell(trial, MIRROR - test_score)


def _fail(study, trial, recorded_score: float | None = None) -> None:
    trial.set_user_attr("fail_reason", "RuntimeError: boom")
    if recorded_score is not None:
        trial.set_user_attr("metric", "accuracy")
        trial.set_user_attr("test_accuracy", recorded_score)
    study.tell(trial, state=TrialState.FAIL)


def _spec(url: str, name: str = "rep", variants=(LORA, DORA, RSLORA), seeds=(0, 1)) -> SweepSpec:
    return SweepSpec(
        name=name,
        model="embedded:minilm",
        task="sentiment",
        variants=list(variants),
        lrs=list(LRS),
        seeds=list(seeds),
        storage=url,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A sweep store: LoRA all done, DoRA with retries, RsLoRA caught in every state."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'studies.db'}"
    spec = check_spec(_spec(url))
    storage = open_storage(url)
    syncs = sync_sweep(spec, storage)
    assert [s.enqueued for s in syncs] == [6, 6, 6]

    def load(variant):
        return optuna.load_study(study_name=study_name(spec, variant), storage=storage)

    lora = load(LORA)
    for _ in range(6):
        trial, point = _pop(lora)
        _complete(lora, trial, LORA_SCORES[point], diverged=point in LORA_DIVERGED)
    stray = lora.ask()  # nothing waits: Optuna makes a fresh trial, the worker fails it
    stray.set_user_attr("stray", True)
    lora.tell(stray, state=TrialState.FAIL)

    dora = load(DORA)
    for _ in range(6):
        trial, point = _pop(dora)
        if point in DORA_SCORES:
            _complete(dora, trial, DORA_SCORES[point])
        elif point == (1e-3, 0):
            _fail(dora, trial, recorded_score=0.99)
        elif point == (1e-2, 0):
            _fail(dora, trial)
        else:
            dora.tell(trial, state=TrialState.PRUNED)

    resync = sync_sweep(spec, storage)  # re-enqueues DoRA's two failed points
    assert [s.enqueued for s in resync] == [0, 2, 0]

    trial, point = _pop(dora)  # retries are enqueued in grid order: (1e-3, 0) first
    assert point == (1e-3, 0)
    _complete(dora, trial, DORA_RETRY_SCORE)

    rslora = load(RSLORA)  # one complete, one pruned, one failed, one running, two waiting
    trial, _ = _pop(rslora)
    _complete(rslora, trial, 0.75)
    trial, _ = _pop(rslora)
    rslora.tell(trial, state=TrialState.PRUNED)
    trial, _ = _pop(rslora)
    _fail(rslora, trial)
    _pop(rslora)  # left running
    return url


@pytest.fixture(scope="module")
def rows(store):
    return collect_rows(store, "rep")


@pytest.fixture(scope="module")
def by_tag(rows):
    return {s.variant_tag: s for s in summarise(rows, band_tolerance=TOL)}


# ----------------------------------------------------------------------------- collect_rows


def test_rows_one_per_grid_trial(rows):
    per_tag = {
        tag: [r for r in rows if r["variant_tag"] == tag]
        for tag in (LORA.tag, DORA.tag, RSLORA.tag)
    }
    assert len(per_tag[LORA.tag]) == 6  # the stray trial is not a grid trial
    assert len(per_tag[DORA.tag]) == 6  # the 2 failures that were retried are superseded
    assert len(per_tag[RSLORA.tag]) == 6
    assert len(rows) == 18


def test_rows_carry_the_study_attributes_and_scores(rows):
    lora = [r for r in rows if r["variant_tag"] == LORA.tag]
    assert {(r["sweep"], r["task"], r["model"], r["variant"]) for r in lora} == {
        ("rep", "sentiment", "embedded:minilm", "lora")
    }
    assert {(r["lr"], r["seed"]): r["score"] for r in lora} == pytest.approx(LORA_SCORES)
    assert {(r["lr"], r["seed"]) for r in lora if r["diverged"]} == LORA_DIVERGED
    assert all(r["state"] == "complete" and r["metric"] == "accuracy" for r in lora)
    assert all(r["value"] == pytest.approx(MIRROR - r["score"]) for r in lora)


def test_waiting_and_running_rows_are_listed(rows):
    states = sorted(r["state"] for r in rows if r["variant_tag"] == RSLORA.tag)
    assert states == ["complete", "fail", "pruned", "running", "waiting", "waiting"]


def test_rows_exclude_superseded_failures(rows):
    dora_failed = [
        (r["lr"], r["seed"]) for r in rows if r["variant_tag"] == DORA.tag and r["state"] == "fail"
    ]
    assert (1e-3, 0) not in dora_failed


def test_sweep_filter_and_missing_store(store, tmp_path):
    assert collect_rows(store, "no-such-sweep") == []
    missing = tmp_path / "none.db"
    with pytest.raises(StorageError, match="none.db"):
        collect_rows(f"sqlite:///{missing}")
    assert not missing.exists()  # reading never creates a store


# -------------------------------------------------------------------------------- summarise


def test_mean_and_std_over_seeds(by_tag):
    cells = by_tag[LORA.tag].cells
    assert sorted(cells) == LRS
    assert cells[1e-4].mean == pytest.approx(0.62)
    assert cells[1e-3].mean == pytest.approx(0.82)
    assert cells[1e-3].std == pytest.approx(0.02 * math.sqrt(2))  # sample std of 0.80, 0.84
    assert cells[1e-2].std == 0.0 and cells[1e-2].mean == pytest.approx(0.5)
    assert all(c.n == 2 for c in cells.values())


def test_best_lr_is_chosen_on_validation_and_reported_on_test(by_tag):
    """The store's validation scores are MIRROR - test: validation picks the test-worst LR, and
    the test score at that LR is what is reported (the selection never looks at test)."""
    lora, dora, rslora = by_tag[LORA.tag], by_tag[DORA.tag], by_tag[RSLORA.tag]
    # LoRA: validation 0.83 at 1e-4, 0.63 at 1e-3; 1e-2 (validation 0.95) diverged: not chosen.
    assert (lora.best_lr, lora.peak) == (1e-4, pytest.approx(0.62))
    assert lora.validation_score == pytest.approx(0.83)
    # DoRA: validation 0.74 at 1e-4 beats 0.58 at 1e-3 (the failed 0.99 is not counted).
    assert (dora.best_lr, dora.peak) == (1e-4, pytest.approx(0.71))
    assert dora.cells[1e-3].mean == pytest.approx(0.87)  # the test-best cell, not selected
    assert rslora.peak == pytest.approx(0.75)
    for s in (lora, dora, rslora):
        assert s.cells[s.best_lr].mean == s.peak
        assert s.selection == "validation"
    assert (lora.seeds, dora.seeds, rslora.seeds) == (2, 2, 1)


def test_diverged_cells_counted(by_tag):
    cells = by_tag[LORA.tag].cells
    assert [cells[lr].diverged for lr in LRS] == [0, 0, 2]
    assert all(c.diverged == 0 for c in by_tag[DORA.tag].cells.values())


def test_failed_pruned_and_pending_trials_not_summarised(by_tag):
    dora = by_tag[DORA.tag].cells
    assert sorted(dora) == [1e-4, 1e-3]  # 1e-2: one pruned, one retry still waiting
    assert dora[1e-3].n == 2 and dora[1e-4].n == 2
    assert dora[1e-4].mean == pytest.approx(0.71)
    rslora = by_tag[RSLORA.tag].cells
    assert len(rslora) == 1
    (cell,) = rslora.values()
    assert (cell.n, cell.std, cell.mean) == (1, 0.0, pytest.approx(0.75))


def test_good_lr_band(rows, by_tag):
    # On validation, chance 0.5, tolerance 0.75 of the rise: LoRA's 0.63 keeps 0.13 / 0.33 of
    # its best's rise (0.83 - 0.5), above 1 - 0.75; DoRA's 0.58 keeps 0.08 / 0.24. The diverged
    # 1e-2 (validation 0.95) never enters the band, however wide the tolerance.
    assert by_tag[LORA.tag].band == (1e-4, 1e-3)
    assert by_tag[LORA.tag].band_decades == pytest.approx(1.0)
    assert by_tag[DORA.tag].band == (1e-4, 1e-3)
    tight = {s.variant_tag: s for s in summarise(rows, band_tolerance=0.01)}
    assert tight[LORA.tag].band == (1e-4, 1e-4)
    assert tight[LORA.tag].band_decades == 0.0
    wide = {s.variant_tag: s for s in summarise(rows, band_tolerance=1.0)}
    assert wide[LORA.tag].band == (1e-4, 1e-3)


def test_delta_vs_lora(by_tag):
    assert by_tag[LORA.tag].delta_vs_lora == pytest.approx(0.0)
    assert by_tag[DORA.tag].delta_vs_lora == pytest.approx(0.71 - 0.62)  # selected vs selected
    assert by_tag[RSLORA.tag].delta_vs_lora == pytest.approx(0.75 - 0.62)
    assert by_tag[DORA.tag].lr_ratio_vs_lora == pytest.approx(1.0)
    assert by_tag[DORA.tag].p_value is None  # two seeds: no significance claimed


def test_no_delta_without_lora(rows):
    summaries = summarise([r for r in rows if r["variant"] != "lora"])
    assert summaries and all(s.delta_vs_lora is None for s in summaries)


def test_summarise_nothing():
    assert summarise([]) == []


def test_two_sweeps_are_not_pooled(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    storage = open_storage(url)
    for name, score in (("short", 0.6), ("long", 0.9)):
        spec = _spec(url, name=name, variants=[LORA], seeds=[0])
        sync_sweep(spec, storage)
        study = optuna.load_study(study_name=study_name(spec, LORA), storage=storage)
        for _ in LRS:
            trial, _ = _pop(study)
            _complete(study, trial, score)
    summaries = summarise(collect_rows(url))
    assert all(c.n == 1 for s in summaries for c in s.cells.values())


# ----------------------------------------------------------------------------- study_status


def test_study_status_counts(store):
    status = {s["variant"]: s for s in study_status(store, "rep")}
    states = ("waiting", "running", "complete", "failed", "pruned")
    assert {k: status[LORA.tag][k] for k in states} == dict(
        waiting=0, running=0, complete=6, failed=0, pruned=0
    )  # the stray failure is not counted
    # DoRA's failures were retried (one completed, one waiting): they no longer count.
    assert {k: status[DORA.tag][k] for k in states} == dict(
        waiting=1, running=0, complete=4, failed=0, pruned=1
    )
    assert {k: status[RSLORA.tag][k] for k in states} == dict(
        waiting=2, running=1, complete=1, failed=1, pruned=1
    )
    assert {(s["sweep"], s["task"], s["model"]) for s in status.values()} == {
        ("rep", "sentiment", "embedded:minilm")
    }
    assert study_status(store, "no-such-sweep") == []


def test_finished_trials_counted_for_progress(store):
    """The launchers' progress counts every trial that ended (a failure since retried too) and,
    like the status, never the stray."""
    from lorasweep.launch.poll import count_finished

    names = [study_name(_spec(store), v) for v in (LORA, DORA, RSLORA)]
    assert dict(count_finished(store, names)) == {"completed": 6 + 4 + 1, "diverged": 2,
                                                  "pruned": 1 + 1, "failed": 2 + 1}
    assert dict(count_finished(store, names[1:2])) == {"completed": 4, "diverged": 0,
                                                       "pruned": 1, "failed": 2}


# ---------------------------------------------------------------------------------- render


def _md_table(text: str, first_header: str) -> list[list[str]]:
    """The Markdown table whose header starts with ``| first_header |``, as rows of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    return [table[0], *table[2:]]  # drop the |---| line


@pytest.fixture(scope="module")
def report(rows, tmp_path_factory):
    summaries = summarise(rows, band_tolerance=TOL)
    out = tmp_path_factory.mktemp("report") / "nested" / "out"
    paths = write_report(summaries, rows, out, TOL)
    return summaries, paths


def test_report_files(report):
    _, paths = report
    assert set(paths) == {"report.md", "report.html", "results.csv", "results.json", "curves.png"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())


def test_report_markdown_bolds_each_best_cell(report):
    summaries, paths = report
    text = paths["report.md"].read_text()
    header, *body = _md_table(text, "variant")
    lrs = [float(h) for h in header[1:]]
    assert lrs == LRS
    names, _ = short_names(summaries)  # the shared configuration goes to a caption
    by_tag = {row[0]: row[1:] for row in body}
    assert set(by_tag) == {names[s.variant_tag] for s in summaries}
    for s in summaries:
        cells = by_tag[names[s.variant_tag]]
        bold = [lr for lr, cell in zip(lrs, cells, strict=True) if cell.startswith("**")]
        assert bold == [s.best_lr], (s.variant_tag, cells)
        best = cells[lrs.index(s.best_lr)]
        assert best.startswith(f"**{s.peak:.3f}") and best.endswith("**")
        for lr, cell in zip(lrs, cells, strict=True):
            if lr not in s.cells:
                assert cell == "-"
    assert "(div)" in by_tag[names[LORA.tag]][2]  # LoRA's diverged 1e-2 is marked
    assert "curves.png" in text


def test_report_markdown_summary_table(report):
    summaries, paths = report
    _, *body = _md_table(paths["report.md"].read_text(), "variant | best LR")
    ordered = sorted(summaries, key=lambda s: (s.variant != "lora", s.variant_tag))
    names, _ = short_names(summaries)
    assert [row[0] for row in body] == [names[s.variant_tag] for s in ordered]  # LoRA first
    for row, s in zip(body, ordered, strict=True):
        assert float(row[1]) == pytest.approx(s.best_lr)
        assert float(row[2].split(" ± ")[0]) == pytest.approx(s.peak, abs=5e-4)
        assert float(row[3]) == pytest.approx(s.validation_score, abs=5e-4)
        if s.variant == "lora":  # the baseline's delta against itself is not a result
            assert row[7] == "baseline"
        else:
            assert float(row[7]) == pytest.approx(s.delta_vs_lora, abs=5e-4)


def test_report_csv_one_row_per_trial(report, rows):
    _, paths = report
    with paths["results.csv"].open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert sorted((r["study"], int(r["trial"])) for r in table) == sorted(
        (r["study"], r["trial"]) for r in rows
    )
    assert {r["state"] for r in table} == {"complete", "fail", "pruned", "running", "waiting"}


def _no_constants(name: str):
    raise ValueError(f"results.json holds {name}, which is not JSON")


def test_report_json(report, rows):
    summaries, paths = report
    payload = json.loads(paths["results.json"].read_text(), parse_constant=_no_constants)
    assert len(payload["trials"]) == len(rows)
    assert {t["state"]: ("validation_score" in t and "test_score" in t) for t in payload["trials"]}
    selections = {(e["task"], e["variant_tag"]): e for e in payload["selections"]}
    assert set(selections) == {(s.task, s.variant_tag) for s in summaries}
    lora = selections[("sentiment", LORA.tag)]
    assert (lora["variant"], lora["selected_lr"], lora["selection"], lora["seeds"]) == (
        "lora", 1e-4, "validation", 2)
    assert lora["test_score"] == pytest.approx(0.62)
    assert lora["test_std"] == pytest.approx(0.02 * math.sqrt(2))
    assert lora["validation_score"] == pytest.approx(0.83)
    assert "validation" in payload["rule"]
    got = {s["variant_tag"]: s for s in payload["summaries"]}
    assert set(got) == {s.variant_tag for s in summaries}
    for s in summaries:
        g = got[s.variant_tag]
        assert g["best_lr"] == s.best_lr and g["peak"] == pytest.approx(s.peak)
        assert g["band"] == list(s.band) and g["band_decades"] == pytest.approx(s.band_decades)
        assert [(c["lr"], c["n"], c["diverged"]) for c in g["cells"]] == [
            (lr, c.n, c.diverged) for lr, c in sorted(s.cells.items())
        ]
        assert [c["mean"] for c in g["cells"]] == pytest.approx(
            [c.mean for _, c in sorted(s.cells.items())]
        )


def test_report_png(report):
    import matplotlib.image

    _, paths = report
    path: Path = paths["curves.png"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert height > 0 and width > 0 and image.shape[2] in (3, 4)
    assert image.std() > 0  # something was drawn


def test_report_without_summaries(tmp_path):
    paths = write_report([], [], tmp_path)
    assert "curves.png" not in paths and not (tmp_path / "curves.png").exists()
    payload = json.loads(paths["results.json"].read_text())
    assert (payload["summaries"], payload["selections"], payload["trials"]) == ([], [], [])
    assert "validation" in payload["rule"]
    assert "curves.png" not in paths["report.md"].read_text()  # no link to a missing image


def test_render_terminal_lists_every_variant(report):
    from rich.console import Console

    summaries, _ = report
    console = Console(record=True, width=250)
    render_terminal(summaries, console)
    text = console.export_text()
    names, caption = short_names(summaries)
    for s in summaries:
        assert names[s.variant_tag] in text
    assert caption is None or caption in text  # what the short names leave out
    assert "sentiment" in text
