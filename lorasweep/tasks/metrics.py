"""The study's classification metrics, in plain Python (no scikit-learn).

Each takes predictions and references of equal, non-zero length and returns a float. Degenerate
inputs follow scikit-learn's conventions, so a collapsed model scores as "no signal" (0.0), never
NaN: F1 is 0 when there are no true positives, Matthews correlation is 0 when a marginal of the
confusion matrix is constant, Pearson is 0 when either side is constant.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["accuracy", "f1", "macro_f1", "matthews_correlation", "pearson", "spearman"]


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("a metric of an empty set")


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of exact matches."""
    _check(predictions, references)
    return sum(int(p == r) for p, r in zip(predictions, references, strict=True)) / len(references)


def f1(predictions: Sequence[int], references: Sequence[int], positive: int = 1) -> float:
    """Binary F1 of class ``positive``: ``2 TP / (2 TP + FP + FN)``."""
    _check(predictions, references)
    pairs = [(p == positive, r == positive) for p, r in zip(predictions, references, strict=True)]
    tp = sum(1 for p, r in pairs if p and r)
    fp = sum(1 for p, r in pairs if p and not r)
    fn = sum(1 for p, r in pairs if r and not p)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation coefficient (multi-class form of Gorodkin, 2004).

    With ``c`` correct, ``s`` samples, ``p_k`` predictions of class k and ``t_k`` references
    of class k: ``(c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))``. For two classes
    this is ``(TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``.
    """
    _check(predictions, references)
    s = len(references)
    c = sum(int(p == r) for p, r in zip(predictions, references, strict=True))
    p_k, t_k = Counter(predictions), Counter(references)
    cov = c * s - sum(p_k[k] * t_k[k] for k in p_k)
    spread_p = s * s - sum(v * v for v in p_k.values())
    spread_t = s * s - sum(v * v for v in t_k.values())
    denominator = spread_p * spread_t
    return cov / math.sqrt(denominator) if denominator > 0 else 0.0


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation coefficient; 0.0 when either side is constant (or not finite)."""
    _check(predictions, references)
    xs, ys = [float(p) for p in predictions], [float(r) for r in references]
    if not all(math.isfinite(v) for v in xs + ys):
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if len(set(xs)) == 1 or len(set(ys)) == 1 or sxx <= 0 or syy <= 0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """The unweighted mean of each class's F1, over the classes of references and predictions."""
    _check(predictions, references)
    classes = sorted(set(references) | set(predictions), key=str)
    return sum(f1(predictions, references, positive=c) for c in classes) / len(classes)


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson of the (tie-averaged) ranks; 0.0 when constant."""
    _check(predictions, references)
    xs, ys = [float(p) for p in predictions], [float(r) for r in references]
    if not all(math.isfinite(v) for v in xs + ys):
        return 0.0
    return pearson(_ranks(xs), _ranks(ys))
