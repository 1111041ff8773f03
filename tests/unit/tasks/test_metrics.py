"""The study's metrics against values computed by hand."""

from __future__ import annotations

import pytest

from lorasweep.tasks.metrics import accuracy, f1, matthews_correlation, pearson

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


@pytest.mark.parametrize("metric", [accuracy, f1, matthews_correlation, pearson])
def test_bad_inputs_raise(metric):
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
    with pytest.raises(ValueError, match="2 predictions for 3"):
        metric([1, 0], [1, 0, 1])
