"""A pruned trial is drawn, not only listed: in curves.png and in report.html, with its own
marker and legend label, at the validation score its pruner judged (its last report).

The store is real (``sync_sweep``'s grid, popped with ``study.ask()``); the pruned trial reports
an intermediate score, as the worker's reporter does before the pruner stops it.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.launch.run import check_spec
from lorasweep.report import collect_rows, summarise
from lorasweep.report.html import _colors, _curves_figure
from lorasweep.report.plot import PRUNED_LABEL, build_figure
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep

LRS = [1e-4, 1e-3, 1e-2]
SCORES = {1e-4: 0.62, 1e-3: 0.81}  # test accuracy; 1e-2 is pruned at step 20
PRUNED_STEP, PRUNED_SCORE = 20, 0.55


def _store(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = check_spec(SweepSpec(name="pr", model="embedded:minilm", task="sentiment",
                                variants=[VariantSpec("lora")], lrs=LRS, seeds=[0], storage=url,
                                pruner="median"))
    storage = open_storage(url)
    sync_sweep(spec, storage)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    for _ in LRS:
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-12, 1e3, log=True)
        trial.suggest_int("seed", 0, 2**31 - 1)
        trial.set_user_attr("metric", "accuracy")
        if lr in SCORES:
            trial.report(SCORES[lr] - 0.05, 10)
            trial.set_user_attr("test_accuracy", SCORES[lr])
            trial.set_user_attr("validation_accuracy", SCORES[lr] - 0.01)
            study.tell(trial, SCORES[lr] - 0.01)
        else:
            trial.report(0.6, 10)
            trial.report(PRUNED_SCORE, PRUNED_STEP)
            study.tell(trial, state=TrialState.PRUNED)
    return url


def test_a_pruned_trial_is_drawn_with_its_own_marker_and_label(tmp_path):
    rows = collect_rows(_store(tmp_path))
    (pruned,) = [r for r in rows if r["state"] == "pruned"]
    assert (pruned["lr"], pruned["pruned_step"], pruned["pruned_score"]) == (1e-2, PRUNED_STEP,
                                                                            PRUNED_SCORE)
    (s,) = summarise(rows)
    assert sorted(s.cells) == [1e-4, 1e-3]  # never a cell: it has no final score
    assert s.pruned == {1e-2: [(PRUNED_STEP, PRUNED_SCORE)]}

    fig = build_figure([s])  # curves.png
    (ax,) = [a for a in fig.axes if a.get_visible()]
    drawn = [tuple(xy) for c in ax.collections for xy in c.get_offsets().tolist()]
    assert (1e-2, PRUNED_SCORE) in drawn  # one variant: no horizontal offset
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert PRUNED_LABEL in legend, legend

    html = _curves_figure([s], _colors([s]))  # report.html's curves panel
    (trace,) = [t for t in html.data if t.name == f"{s.variant_tag} pruned"]
    assert list(trace.x) == [1e-2] and list(trace.y) == [PRUNED_SCORE]
    assert trace.marker.symbol == "triangle-down-open"
    assert trace.showlegend is not False  # a legend entry of its own
    assert f"pruned at step {PRUNED_STEP}" in trace.text[0]
    others = {t.marker.symbol for t in html.data if t is not trace and t.marker is not None}
    assert "triangle-down-open" not in others
