"""The study's metrics against values computed by hand, and against scikit-learn and scipy
(oracles from the dev extra) on random and degenerate inputs."""

from __future__ import annotations

import random

import pytest
from helpers import require

from lorasweep.tasks.metrics import accuracy, f1, macro_f1, matthews_correlation, pearson, spearman

# preds vs refs: TP = 2 (0, 4), TN = 1 (2), FP = 1 (1), FN = 1 (3)
PREDS = [1, 1, 0, 0, 1]
REFS = [1, 0, 0, 1, 1]


def test_accuracy_by_hand():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(PREDS, REFS) == 3 / 5


def test_f1_by_hand():
    assert f1(PREDS, REFS) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2/3
    assert f1(PREDS, REFS, positive=0) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # 1/2
    assert f1([0, 0, 0], [1, 0, 1]) == 0.0  # no true positive


def test_matthews_by_hand():
    # (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 − 1) / sqrt(3·3·2·2) = 1/6
    assert matthews_correlation(PREDS, REFS) == pytest.approx(1 / 6)
    # 3 classes: s = 4, c = 3, Σ p_k t_k = 5, Σ p_k² = Σ t_k² = 6 -> (12 − 5) / (16 − 6)
    assert matthews_correlation([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx(0.7)
    assert matthews_correlation(REFS, REFS) == 1.0
    assert matthews_correlation([1 - r for r in REFS], REFS) == pytest.approx(-1.0)
    assert matthews_correlation([1] * 5, REFS) == 0.0  # constant predictions: no signal


def test_pearson_by_hand():
    # x = 1,2,3; y = 2,4,7: Sxy = 5, Sxx = 2, Syy = 114/9 -> 5 / sqrt(228/9) = 15 / sqrt(228)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / 228 ** 0.5)
    assert pearson([0.5, 1.5, 4.0], [1, 3, 8]) == pytest.approx(1.0)  # affine map
    assert pearson([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert pearson([2.5, 2.5, 2.5], [1, 2, 3]) == 0.0  # a collapsed regressor
    assert pearson([0.1, 0.1, 0.1], [1, 2, 3]) == 0.0  # constant, even where the mean rounds
    assert pearson([float("nan"), 1, 2], [1, 2, 3]) == 0.0


@pytest.mark.parametrize("metric", [accuracy, f1, macro_f1, matthews_correlation, pearson,
                                    spearman])
def test_bad_inputs_raise(metric):
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
    with pytest.raises(ValueError, match="2 predictions for 3"):
        metric([1, 0], [1, 0, 1])


# ------------------------------------------------------------------- scikit-learn / scipy oracles
def _cases(classes: int, n_cases: int = 40):
    """Random prediction/reference pairs of 1 to 30 items, degenerate ones included (constant
    predictions, no positive class, all correct)."""
    rng = random.Random(classes)
    for i in range(n_cases):
        n = rng.randint(1, 30)
        refs = [rng.randrange(classes) for _ in range(n)]
        if i % 8 == 0:
            preds = [rng.randrange(classes)] * n
        elif i % 8 == 1:
            preds = list(refs)
        else:
            preds = [rng.randrange(classes) for _ in range(n)]
        yield preds, refs


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")  # the degenerate cases
@pytest.mark.parametrize("classes", [2, 3, 5])
def test_accuracy_and_matthews_match_scikit_learn(classes):
    sklearn_metrics = require("sklearn.metrics")
    for preds, refs in _cases(classes):
        assert accuracy(preds, refs) == pytest.approx(sklearn_metrics.accuracy_score(refs, preds))
        assert matthews_correlation(preds, refs) == pytest.approx(
            sklearn_metrics.matthews_corrcoef(refs, preds), abs=1e-12
        )


def test_f1_matches_scikit_learn():
    sklearn_metrics = require("sklearn.metrics")
    for preds, refs in _cases(2):
        for positive in (0, 1):
            expected = sklearn_metrics.f1_score(refs, preds, pos_label=positive, labels=[0, 1],
                                                zero_division=0.0)
            assert f1(preds, refs, positive=positive) == pytest.approx(expected, abs=1e-12)


def test_pearson_matches_scipy():
    stats = require("scipy.stats")
    rng = random.Random(7)
    for n in (2, 3, 5, 17, 200):
        for _ in range(10):
            xs = [rng.uniform(-5, 5) for _ in range(n)]
            ys = [2 * x + rng.gauss(0, 3) for x in xs]
            if len(set(xs)) > 1 and len(set(ys)) > 1:
                assert pearson(xs, ys) == pytest.approx(stats.pearsonr(xs, ys)[0], abs=1e-9)
    # STS-B's shape: scores in [0, 5] with ties
    xs = [rng.choice([0.0, 1.2, 2.5, 3.8, 5.0]) for _ in range(100)]
    ys = [min(5.0, max(0.0, x + rng.gauss(0, 1))) for x in xs]
    assert pearson(xs, ys) == pytest.approx(stats.pearsonr(xs, ys)[0], abs=1e-9)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_macro_f1_matches_scikit_learn(classes):
    sklearn_metrics = require("sklearn.metrics")
    for preds, refs in _cases(classes):
        expected = sklearn_metrics.f1_score(refs, preds, average="macro", zero_division=0.0)
        assert macro_f1(preds, refs) == pytest.approx(expected, abs=1e-12)


def test_spearman_matches_scipy_with_and_without_ties():
    stats = require("scipy.stats")
    rng = random.Random(11)
    for n in (3, 5, 17, 200):
        for tied in (False, True):
            xs = [float(rng.randint(0, 4)) if tied else rng.uniform(-5, 5) for _ in range(n)]
            ys = [x + rng.gauss(0, 2) for x in xs]
            if len(set(xs)) > 1 and len(set(ys)) > 1:
                assert spearman(xs, ys) == pytest.approx(stats.spearmanr(xs, ys)[0], abs=1e-9)
    assert spearman([1, 2, 3], [10, 20, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([2, 2, 2], [1, 2, 3]) == 0.0
