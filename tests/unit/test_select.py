"""The selection rule over real (journal-file) study stores: chosen on validation, reported on test; the study's
protocol where validation is the test set; no band for flat curves; significance; the study's
curves beside ours."""

from __future__ import annotations

import html
import json
import math

import optuna
import pytest
from helpers import tell_waiting

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.report import collect_rows, compare, study_curves, summarise, write_report
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep

LRS = [1e-4, 3e-4, 1e-3]


def _fill(url: str, variant: VariantSpec, scores: dict, task: str = "sentiment",
          seeds=(0,), extra=None) -> None:
    """Run the real sync, then pop and tell every trial with ``scores[(lr, seed)]`` =
    ``(validation, test)`` as the worker records them."""
    spec = SweepSpec(name="sel", task=task, variants=[variant], lrs=list(LRS), seeds=list(seeds),
                     storage=url)
    storage = open_storage(url)
    sync_sweep(spec, storage)
    study = optuna.load_study(study_name=study_name(spec, variant, task), storage=storage)

    def outcome(lr: float, seed: int):
        validation, test, *best = scores[(lr, seed)]
        return validation, {"metric": "accuracy", "validation_accuracy": validation,
                            "test_accuracy": test,
                            "best_validation_accuracy": best[0] if best else validation,
                            "diverged": False, **(extra or {})}

    tell_waiting(study, outcome)


def test_validation_chooses_where_test_disagrees(tmp_path):
    """LoRA+ as measured on the embedded task: validation picks 3e-4 (test 0.762), the test split
    would pick 1e-3 (0.780). The tuned result is 0.762 at 3e-4."""
    url = f"journal:{tmp_path / 's.journal'}"
    _fill(url, VariantSpec("loraplus"), {(1e-4, 0): (0.70, 0.71), (3e-4, 0): (0.79, 0.762),
                                         (1e-3, 0): (0.77, 0.780)})
    (s,) = summarise(collect_rows(url))
    assert (s.best_lr, s.peak, s.validation_score) == (3e-4, pytest.approx(0.762), 0.79)
    assert s.selection == "validation"
    assert max(s.cells, key=lambda lr: s.cells[lr].mean) == 1e-3  # what the old rule picked


def test_validation_is_test_follows_the_study_protocol(tmp_path):
    """GLUE: the validation split is the test set; the best score over evaluations both chooses
    and is reported, and the selection says so."""
    url = f"journal:{tmp_path / 's.journal'}"
    # the best over evaluations at 1e-3 was 0.80, though its final score was 0.65
    scores = {(1e-4, 0): (0.60, 0.60), (3e-4, 0): (0.70, 0.70), (1e-3, 0): (0.65, 0.65, 0.80)}
    _fill(url, VariantSpec("lora"), scores, task="glue-rte", extra={"validation_is_test": True})
    rows = collect_rows(url)
    assert {r["selection"] for r in rows} == {"best-over-evaluations"}
    (s,) = summarise(rows)
    assert (s.best_lr, s.peak, s.selection) == (1e-3, pytest.approx(0.80), "best-over-evaluations")
    text = write_report([s], rows, tmp_path / "r")["report.md"].read_text()
    assert "no separate validation split" in text


def test_flat_scores_get_no_band_but_a_remark(tmp_path):
    url = f"journal:{tmp_path / 's.journal'}"
    _fill(url, VariantSpec("lora"), {(lr, 0): (0.5, 0.5) for lr in LRS})
    (s,) = summarise(collect_rows(url))
    assert s.band is None and s.band_decades is None
    assert "never left chance" in s.remark
    paths = write_report([s], collect_rows(url), tmp_path / "r")
    assert "never left chance" in paths["report.md"].read_text()


def test_a_bump_at_chance_gets_no_band(tmp_path):
    """Sentiment's chance is 0.5. A best validation score at chance, 0.008 above the others, is
    no band (an absolute tolerance of 0.01 gave this variant the whole span); a 0.008 bump just
    above chance is a band of the bump's own learning rate, not the span."""
    url = f"journal:{tmp_path / 's.journal'}"
    _fill(url, VariantSpec("lora"), {(1e-4, 0): (0.492, 0.5), (3e-4, 0): (0.50, 0.5),
                                     (1e-3, 0): (0.492, 0.5)})
    (s,) = summarise(collect_rows(url))
    assert s.best_lr == 3e-4
    assert s.band is None and s.band_decades is None
    assert "not above chance" in s.remark
    assert "not above chance" in write_report([s], collect_rows(url),
                                              tmp_path / "r")["report.md"].read_text()

    url = f"journal:{tmp_path / 'above.journal'}"
    _fill(url, VariantSpec("lora"), {(1e-4, 0): (0.502, 0.5), (3e-4, 0): (0.51, 0.5),
                                     (1e-3, 0): (0.502, 0.5)})
    (s,) = summarise(collect_rows(url))
    assert (s.band, s.band_decades, s.remark) == ((3e-4, 3e-4), 0.0, None)


def test_a_variant_that_rises_gets_the_band_the_rule_gives(tmp_path):
    """Validation 0.70, 0.90, 0.87 over chance 0.5: the rise is 0.40. With the default tolerance
    (0.1 of the rise) good means >= 0.86: 3e-4 and 1e-3; with 0.6, >= 0.66: all three; with 0.05,
    >= 0.88: the best alone. The report states the rule beside the band."""
    from rich.console import Console

    from lorasweep.report import render_terminal
    from lorasweep.report.select import BAND_TOLERANCE, band_rule

    url = f"journal:{tmp_path / 's.journal'}"
    _fill(url, VariantSpec("lora"), {(1e-4, 0): (0.70, 0.7), (3e-4, 0): (0.90, 0.9),
                                     (1e-3, 0): (0.87, 0.87)})
    rows = collect_rows(url)
    assert BAND_TOLERANCE == 0.1
    (s,) = summarise(rows)
    assert (s.band, s.remark) == ((3e-4, 1e-3), None)
    assert s.band_decades == pytest.approx(math.log10(1e-3 / 3e-4))
    assert summarise(rows, 0.6)[0].band == (1e-4, 1e-3)
    assert summarise(rows, 0.05)[0].band == (3e-4, 3e-4)

    paths = write_report([s], rows, tmp_path / "r", BAND_TOLERANCE)
    rule = band_rule(BAND_TOLERANCE)
    assert "rise above chance" in rule and "0.1" in rule
    assert rule in paths["report.md"].read_text()
    assert html.escape(rule) in paths["report.html"].read_text()
    assert json.loads(paths["results.json"].read_text())["band_rule"] == rule
    console = Console(record=True, width=250)
    render_terminal([s], console, rows, BAND_TOLERANCE)
    assert rule in " ".join(console.export_text().split())  # the caption wraps to the table


def test_a_loss_is_chosen_lowest_and_its_band_mirrored(tmp_path, monkeypatch):
    """A minimized loss (the test package's LossTask): validation 6.0, 2.0, 2.8 under chance
    ln(30522) = 10.33 (the embedded MiniLM's vocabulary), a fall of 8.33. The lowest chooses
    (3e-4); with the default tolerance good means <= 2.83: 3e-4 and 1e-3; with 0.05, <= 2.42:
    the best alone; with 0.6, <= 7.0: all three. A lower test loss than LoRA's is a negative Δ,
    and the report says a lower loss is better."""
    from pathlib import Path

    from lorasweep.report.select import band_rule, delta_rule

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "plugins"))
    url = f"journal:{tmp_path / 's.journal'}"
    task = "reviews_pkg.tasks:LossTask"
    chance = math.log(30522)
    for variant, shift in (("lora", 0.0), ("dora", -0.5)):
        spec = SweepSpec(name="sel", task=task, variants=[VariantSpec(variant)], lrs=list(LRS),
                         seeds=[0], storage=url)
        storage = open_storage(url)
        sync_sweep(spec, storage)
        study = optuna.load_study(study_name=study_name(spec, VariantSpec(variant), task),
                                  storage=storage)
        losses = {1e-4: 6.0, 3e-4: 2.0, 1e-3: 2.8}

        def outcome(lr, seed, shift=shift, losses=losses):
            value = losses[lr] + shift
            return value, {"metric": "loss", "validation_loss": value, "test_loss": value + 0.1,
                           "diverged": False}

        tell_waiting(study, outcome)
    rows = collect_rows(url)
    lora, dora = sorted(summarise(rows), key=lambda s: s.variant != "lora")
    assert lora.minimize and lora.chance == pytest.approx(chance)
    assert (lora.best_lr, lora.band, lora.remark) == (3e-4, (3e-4, 1e-3), None)
    assert summarise(rows, 0.05)[0].band == (3e-4, 3e-4)
    assert summarise(rows, 0.6)[0].band == (1e-4, 1e-3)
    assert dora.delta_vs_lora == pytest.approx(-0.5)  # lower loss: better, negative
    text = write_report([lora, dora], rows, tmp_path / "r")["report.md"].read_text()
    assert band_rule(0.1, True) in text and delta_rule(True) in text
    assert "fall below the loss training started from" in band_rule(0.1, True)
    assert "lower is better" in delta_rule(True)


def test_a_loss_band_is_measured_from_the_loss_training_started_from(tmp_path, monkeypatch):
    """The HumanEval sweep's validation losses (SmolLM2, LoRA, 24 steps) with the loss each trial
    measured before its first step (1.10): the fall below it is 1.10 - 0.7415 = 0.3585, so good
    means <= 0.7774 (1e-3 and 3e-3), while the uniform predictor's ln(30522) = 10.33 would count
    every LR up to 1e-2 as good, 1e-5 (which barely moved the model) included. A variant whose
    every LR ends above its starting loss has no band, and the remark names the reference."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "plugins"))
    url = f"journal:{tmp_path / 's.journal'}"
    task = "reviews_pkg.tasks:LossTask"
    curves = {"lora": {1e-5: 1.0936, 1e-4: 1.0134, 1e-3: 0.7769, 3e-3: 0.7415, 1e-2: 0.7804},
              "dora": {1e-5: 1.2, 1e-4: 1.15, 1e-3: 1.11, 3e-3: 1.3, 1e-2: 1.4}}
    for variant, losses in curves.items():
        spec = SweepSpec(name="sel", task=task, variants=[VariantSpec(variant)],
                         lrs=list(losses), seeds=[0], storage=url)
        storage = open_storage(url)
        sync_sweep(spec, storage)
        study = optuna.load_study(study_name=study_name(spec, VariantSpec(variant), task),
                                  storage=storage)

        def outcome(lr, seed, losses=losses):
            return losses[lr], {"metric": "loss", "validation_loss": losses[lr],
                                "test_loss": losses[lr], "initial_validation_loss": 1.10,
                                "diverged": False}

        tell_waiting(study, outcome)
    rows = collect_rows(url)
    assert {r["initial_score"] for r in rows} == {1.10}
    lora, dora = sorted(summarise(rows), key=lambda s: s.variant != "lora")
    assert (lora.best_lr, lora.band) == (3e-3, (1e-3, 3e-3))
    assert lora.chance == pytest.approx(math.log(30522))  # the plots' line stays the uniform one
    assert dora.band is None and "not below the loss training started from (1.1)" in dora.remark
    for row in rows:  # a store from before the measurement: the uniform predictor's loss
        row["initial_score"] = None
    assert sorted(summarise(rows), key=lambda s: s.variant != "lora")[0].band == (1e-5, 1e-2)


def test_delta_significance_needs_three_seeds(tmp_path):
    url = f"journal:{tmp_path / 's.journal'}"
    seeds = (0, 1, 2)
    lora = {(lr, s): (0.70 + 0.01 * s, 0.70 + 0.01 * s) for lr in LRS for s in seeds}
    dora = {(lr, s): (0.80 + 0.01 * s, 0.80 + 0.01 * s) for lr in LRS for s in seeds}
    _fill(url, VariantSpec("lora"), lora, seeds=seeds)
    _fill(url, VariantSpec("dora"), dora, seeds=seeds)
    by = {s.variant: s for s in summarise(collect_rows(url))}
    assert by["dora"].delta_vs_lora == pytest.approx(0.10)
    assert by["dora"].p_value is not None and by["dora"].p_value < 0.05
    assert by["lora"].p_value is None  # the baseline against itself
    assert by["dora"].test_std == pytest.approx(0.01)


def test_study_curves_ship_and_compare(tmp_path, monkeypatch):
    glue = study_curves("glue-rte")
    assert glue is not None and study_curves("glue (avg of 9)") is glue
    assert study_curves("sentiment") is None and study_curves("gsm8k") is not None
    assert glue.best_lr("lora") == max(glue.curves["lora"], key=lambda p: p[1])[0]
    assert all(0 < score <= 100 for c in glue.curves.values() for _, score in c)
    url = f"journal:{tmp_path / 's.journal'}"
    for key, best in (("lora", 1e-4), ("loraplus", 1e-3)):
        _fill(url, VariantSpec(key), {(lr, 0): (0.9 if lr == best else 0.5, 0.5) for lr in LRS},
              task="glue-rte")
    rows = {r["variant"]: r for r in compare(summarise(collect_rows(url)))}
    study_ratio = glue.best_lr("loraplus") / glue.best_lr("lora")
    assert rows["loraplus"]["study_ratio"] == pytest.approx(study_ratio)
    assert rows["loraplus"]["here_ratio"] == pytest.approx(10.0)
    expected = study_ratio > 2  # here the shift is 10x up: reproduced when the study's is up
    assert rows["loraplus"]["agrees"] is expected
    md = write_report(summarise(collect_rows(url)), collect_rows(url),
                      tmp_path / "r")["report.md"].read_text()
    assert "the study / here" in md and "GLUE" in md

    from typer.testing import CliRunner

    from lorasweep.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "--reference", "--storage", url])
    assert result.exit_code == 0, result.stderr
    assert "the study / here" in result.stdout and "loraplus-r8-a16" in result.stdout
    assert "10x" in result.stdout and not (tmp_path / "lorasweep-out").exists()  # prints only


def test_a_flat_curve_reproduces_no_shift():
    from lorasweep.report.select import Cell, VariantSummary

    def summary(variant, scores, remark=None):
        cells = {lr: Cell(v, 0.0, 1, 0, v) for lr, v in zip(LRS, scores, strict=True)}
        best = max(cells, key=lambda lr: cells[lr].validation)
        return VariantSummary("s", "glue-rte", "m", variant, f"{variant}-r8-a16", "accuracy",
                              cells, best, cells[best].mean, None, remark=remark,
                              lr_ratio_vs_lora=best / 1e-4)

    flat_lora = summary("lora", [0.5, 0.5, 0.5], remark="flat")
    rows = compare([flat_lora, summary("loraplus", [0.5, 0.5, 0.6])])
    assert [r["agrees"] for r in rows] == [None, None]
    rows = compare([summary("lora", [0.6, 0.5, 0.5]), summary("dora", [0.5, 0.5, 0.5], "flat")])
    assert rows[1]["agrees"] is None and rows[0]["agrees"] is True


def test_reference_without_a_study_family_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from lorasweep.cli import app

    url = f"journal:{tmp_path / 's.journal'}"
    _fill(url, VariantSpec("lora"), {(lr, 0): (0.5 + lr, 0.5) for lr in LRS})
    result = CliRunner().invoke(app, ["report", "--reference", "--storage", url])
    assert result.exit_code == 2 and result.stderr.startswith("error:")
    assert "no published curves" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_results_json_keeps_both_scores_per_trial(tmp_path):
    url = f"journal:{tmp_path / 's.journal'}"
    _fill(url, VariantSpec("lora"), {(lr, 0): (0.1 * i, 0.2 * i) for i, lr in enumerate(LRS)})
    rows = collect_rows(url)
    paths = write_report(summarise(rows), rows, tmp_path / "r")
    trials = json.loads(paths["results.json"].read_text())["trials"]
    assert sorted((t["validation_score"], t["test_score"]) for t in trials) == [
        (0.0, 0.0), (0.1, 0.2), (0.2, 0.4)]
    header = paths["results.csv"].read_text().splitlines()[0].split(",")
    assert {"validation_score", "test_score", "selection"} <= set(header)
    assert not math.isnan(trials[0]["validation_score"])
