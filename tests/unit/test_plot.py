"""curves.png: a grid of panels, one colour per variant everywhere, LoRA first as the baseline,
a chance line where the metric has one, identical curves still visible."""

from __future__ import annotations

import math
import struct

import matplotlib.colors as mcolors
import pytest

from lorasweep.report.collect import Cell, VariantSummary
from lorasweep.report.plot import (
    PREDICTED_LABEL,
    WINDOW_LABEL,
    build_figure,
    chance_level,
    grid_shape,
    plot_curves,
)


def _summary(task, tag, variant, scores, metric="accuracy", sweep="s"):
    cells = {lr: Cell(v, 0.01, 2, 0) for lr, v in scores.items()}
    best = max(cells, key=lambda lr: cells[lr].mean)
    return VariantSummary(sweep, task, "embedded:minilm", variant, tag, metric, cells, best,
                          cells[best].mean, (best, best))


SAME = {1e-4: 0.6, 1e-3: 0.8, 1e-2: 0.5}


@pytest.fixture
def summaries():
    out = []
    for task, metric in (("sentiment", "accuracy"), ("glue-cola", "matthews_correlation"),
                         ("glue-stsb", "pearson"), ("arith", "exact_match")):
        out += [_summary(task, "dora-r8-a16", "dora", SAME, metric),
                _summary(task, "pissa-r8-a16", "pissa", SAME, metric),  # identical to dora
                _summary(task, "lora-r8-a16", "lora", {1e-4: 0.55, 1e-3: 0.7}, metric)]
    out.append(_summary("glue (avg of 2)", "lora-r8-a16", "lora", {1e-3: 0.4}, "average"))
    return out


@pytest.mark.parametrize(("panels", "shape"), [(1, (1, 1)), (3, (1, 3)), (4, (2, 2)),
                                               (5, (2, 3)), (6, (2, 3)), (9, (3, 3)),
                                               (10, (4, 3))])
def test_panels_are_laid_out_in_a_grid(panels, shape):
    assert grid_shape(panels) == shape


def test_chance_levels():
    assert chance_level("sentiment", "accuracy") == 0.5
    assert chance_level("glue-cola", "matthews_correlation") == 0.0
    assert chance_level("glue-stsb", "pearson") == 0.0
    assert chance_level("arith", "exact_match") is None
    assert chance_level("glue (avg of 2)", "average") is None


def test_figure(summaries):
    fig = build_figure(summaries)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5 and len(fig.axes) == 6  # 2 x 3, the last one hidden
    colours: dict[str, set] = {}
    for ax in panels:
        curves = {c.get_label(): c.lines[0] for c in ax.containers}  # one errorbar per variant
        for label, line in curves.items():
            colours.setdefault(label, set()).add(mcolors.to_hex(line.get_color()))
        lines = ax.get_lines()
        assert list(curves)[0] == "lora-r8-a16 (baseline)"  # drawn first, on top of nothing
        if "dora-r8-a16" in curves:  # equal scores, yet drawn apart: offset x, other markers
            dora, pissa = curves["dora-r8-a16"], curves["pissa-r8-a16"]
            assert list(dora.get_ydata()) == list(pissa.get_ydata())
            assert all(a != b for a, b in zip(dora.get_xdata(), pissa.get_xdata(), strict=True))
            assert dora.get_marker() != pissa.get_marker()
        chance = [line for line in lines if line.get_label() == "chance"]
        title = ax.get_title()
        if "sentiment" in title:
            assert [list(c.get_ydata()) for c in chance] == [[0.5, 0.5]]
        elif "cola" in title or "stsb" in title:
            assert [list(c.get_ydata()) for c in chance] == [[0.0, 0.0]]
        else:
            assert chance == []
    # one colour per variant across all panels; LoRA black, labelled as the baseline
    assert all(len(c) == 1 for c in colours.values()), colours
    assert colours["lora-r8-a16 (baseline)"] == {"#000000"}
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "lora-r8-a16 (baseline)" and "chance" in labels
    assert labels.count("dora-r8-a16") == 1  # one legend for the figure


def test_png_is_a_grid_not_a_strip(summaries, tmp_path):
    path = plot_curves(summaries, tmp_path / "curves.png")
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert 1500 <= width <= 2000 and 900 <= height <= 1200, (width, height)


def _searched(tag, variant, search, window=None):
    """A search's summary: its first rung (30%) over ``window`` or every LR, one full trial."""
    lrs = window or [1e-5, 1e-4, 1e-3, 1e-2]
    s = _summary("sentiment", tag, variant, {1e-3: 0.8})
    s.band, s.search = None, search
    s.rungs = {0.3: {lr: 0.6 + 0.05 * i for i, lr in enumerate(lrs)}, 1.0: {1e-3: 0.8}}
    return s


def _labels(fig) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def test_a_searchs_rungs_are_labelled_by_its_search():
    adaptive = build_figure([_searched("lora-r8-a16", "lora", "adaptive"),
                             _searched("dora-r8-a16", "dora", "adaptive")])
    labels = _labels(adaptive)
    assert "adaptive search: validation at 30%" in labels
    assert not any("transfer" in label for label in labels)


def test_a_transfer_variant_shows_its_window_and_prediction():
    """A transfer sweep: its rungs say so; LoRA+ (window 1e-4..1e-3, predicted 3e-4) gets a band
    over its window and a diamond at its prediction on its first rung; LoRA (the reference,
    without a window) gets neither."""
    window = [1e-4, 3.16e-4, 1e-3]
    summaries = [_searched("lora-r8-a16", "lora", "transfer"),
                 _searched("loraplus-r8-a16", "loraplus", "transfer", window)]
    row = {"sweep": "s", "task": "sentiment", "model": "embedded:minilm",
           "variant_tag": "loraplus-r8-a16", "predicted_lr": 3e-4, "window": window}
    fig = build_figure(summaries, [row])
    labels = _labels(fig)
    assert "transfer search: validation at 30%" in labels
    assert not any(label.startswith("adaptive search") for label in labels)
    assert PREDICTED_LABEL in labels and WINDOW_LABEL in labels
    (ax,) = [a for a in fig.axes if a.get_visible()]
    colour = next(mcolors.to_hex(c.lines[0].get_color()) for c in ax.containers
                  if c.get_label() == "loraplus-r8-a16")
    (band,) = [p for p in ax.patches if p.get_gid() == "transfer-window"]
    xs = band.get_patch_transform().transform(band.get_path().vertices)[:, 0]  # data x
    assert min(xs) < 1e-4 < 1e-3 < max(xs) and max(xs) < 3.16e-3  # the window, not beyond
    assert mcolors.to_hex(band.get_facecolor()) == colour
    (diamond,) = [c for c in ax.collections if c.get_gid() == "transfer-predicted"]
    ((x, y),) = diamond.get_offsets()
    shift = x / 3e-4  # the variant's small horizontal offset
    # on the rung's dashed line, in log-LR between 1e-4 (0.6) and 3.16e-4 (0.65)
    assert 0.9 < shift < 1.1 and y == pytest.approx(0.6 + 0.05 * math.log(3) / math.log(3.16))
    assert mcolors.to_hex(diamond.get_edgecolor()[0]) == colour
    # the reference's summary has no row: nothing marked in its colour
    assert len([p for p in ax.patches if p.get_gid() == "transfer-window"]) == 1


def test_chance_of_a_task_on_your_data_comes_from_its_recorded_labels():
    """text-classification's class knows no label count: the study's recorded labels give it;
    a minimized loss's chance is the uniform predictor's (the recorded diverged score)."""
    from lorasweep.tasks import make_task

    assert chance_level("text-classification", "accuracy") is None
    assert chance_level("text-classification", "accuracy", ["rotten", "fresh", "meh"]) == 1 / 3
    assert chance_level("x", "loss", direction="minimize", worst=10.8) == 10.8
    task = make_task("text-classification", dataset="reviews.csv", metric="macro_f1")
    assert (task.metric_name, task.direction) == ("macro_f1", "maximize")  # the option's


def test_the_rung_note_names_the_search_that_ran_the_rungs():
    from lorasweep.report._format import RUNG_NOTE, rung_note

    adaptive = [_searched("lora-r8-a16", "lora", "adaptive")]
    transfer = [_searched("lora-r8-a16", "lora", "transfer"),
                _searched("dora-r8-a16", "dora", "transfer", [1e-4, 3.16e-4, 1e-3])]
    assert rung_note(adaptive) == RUNG_NOTE and "adaptive search stopped" in RUNG_NOTE
    assert "the transfer search stopped at F%" in rung_note(transfer)
    assert "adaptive" not in rung_note(transfer)
