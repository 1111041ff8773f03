r"""A synthetic learning-rate curve that stands in for training (tests, search benchmarks).

With :math:`x = \log_{10}\eta`, peak :math:`x_p`, chance :math:`c` and top :math:`t`, the
full-budget score is

.. math::

    s(x) = c + (t - c)\,\sigma\!\left(\frac{x - (x_p - w_r)}{0.12}\right)
           - k\,(x - x_p)^2 \qquad (x \le x_p + w_c),

and :math:`c` past the collapse :math:`x > x_p + w_c` (a non-finite loss further up). A run of
fraction :math:`f` of the budget peaks higher, :math:`x_p + 0.4\,(1 - f)`, and lower,
:math:`t - 0.08\,(1 - f)` (the short-horizon bias). Seed noise is Gaussian with standard
deviation :math:`0.005 + 0.05\,\sigma'` (half a point at the peak, five on the rising edge),
drawn from a generator seeded by the learning rate, seed and budget, so a rerun is identical.
The final loss is :math:`0.7 - (s - c)` (NaN past the collapse). With ``informative_from`` a
run shorter than that fraction says
nothing: chance plus 2 points of noise and a loss of 0.693 plus noise of 0.01 (a fresh head that
needs more steps than such a run has: on the embedded task, runs of 20 steps of their own
100-step schedule score 0.50-0.55 and their validation losses sit at 0.692-0.71, lowest at the
lowest LRs). A rung of the adaptive search (``budget`` < 1) is scored like a run of that fraction
of the budget; it records ``resumed_from_step`` from the step the point's previous rung reached.

With ``top < chance`` the curve is a loss to minimize (``metric``, say ``loss``): it falls from
chance (the uniform predictor's loss, what a diverged run records) to ``top`` at the peak and
rises again by the curvature; past the collapse it diverges and records the study's score for
a diverged run (the trial spec's ``diverged_score``, ln of the vocabulary), as the loop does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from pathlib import Path
from typing import Any

from ..config import rung_step

__all__ = ["SyntheticCurve", "SyntheticResult"]


@dataclasses.dataclass(frozen=True)
class SyntheticCurve:
    """Callable like ``run_trial(spec, reporter)``; peaks per variant key (default ``peak``)."""

    peak: float = -3.0  # log10 of the best learning rate at full budget
    peaks: tuple[tuple[str, float], ...] = ()
    chance: float = 0.5
    top: float = 0.9
    rise_width: float = 1.0  # decades from the rising edge's midpoint to the peak
    collapse: float = 0.6  # decades above the peak where the score collapses
    curvature: float = 0.02
    noise: bool = True
    informative_from: float = 0.0
    metric: str = "accuracy"

    @property
    def minimize(self) -> bool:
        """A loss: lower is better (``top`` below ``chance``)."""
        return self.top < self.chance

    def peak_of(self, variant: str) -> float:
        return dict(self.peaks).get(variant, self.peak)

    def mean(self, lr: float, budget: float = 1.0, variant: str = "") -> float:
        x, peak = math.log10(lr), self.peak_of(variant) + 0.4 * (1 - budget)
        if x > peak + self.collapse:
            return self.chance
        sign = -1.0 if self.minimize else 1.0
        top = self.top - sign * 0.08 * (1 - budget)
        rise = 1 / (1 + math.exp(-(x - (peak - self.rise_width)) / 0.12))
        return self.chance + (top - self.chance) * rise - sign * self.curvature * (x - peak) ** 2

    def sample(self, lr: float, seed: int, budget: float = 1.0, variant: str = "") -> tuple[float, float]:
        """(score, final loss) of one seeded run; the loss is NaN where the run diverges."""
        x, peak = math.log10(lr), self.peak_of(variant) + 0.4 * (1 - budget)
        mean = self.mean(lr, budget, variant)
        if not self.noise:
            noisy = mean
        else:
            z = (x - (peak - self.rise_width)) / 0.12
            slope = math.exp(-abs(z)) / (1 + math.exp(-abs(z))) ** 2 * 4  # sigma'(z) / sigma'(0)
            digest = hashlib.sha256(f"{lr:.6g}|{seed}|{budget:g}|{variant}".encode()).digest()
            noisy = mean + random.Random(digest).gauss(0.0, 0.005 + 0.05 * slope)
        diverged = x > peak + self.collapse + 0.3
        # the training loss: the objective itself for a loss, else falling as the score rises
        loss = math.nan if diverged else (noisy if self.minimize else 0.7 - (noisy - self.chance))
        if budget < self.informative_from:
            digest = hashlib.sha256(f"chance|{lr:.6g}|{seed}|{budget:g}|{variant}".encode()).digest()
            rng = random.Random(digest)
            noisy, loss = self.chance + rng.gauss(0.0, 0.02), 0.693 + rng.gauss(0.0, 0.01)
        if self.minimize:
            return max(noisy, 0.0), loss
        return min(max(noisy, 0.0), 1.0), loss

    def __call__(self, spec: Any, reporter: Any = None) -> Any:
        """A finished trial for ``spec`` at its budget (a rung of the adaptive search < 1).

        Like a real trial, a rung continues the run of the rung below: the point's run folder
        records the step reached (``synthetic-step``), and the trial reports
        ``resumed_from_step`` from it, so what the search trains can be counted."""
        budget = float(getattr(spec, "budget", 1.0) or 1.0)
        score, loss = self.sample(spec.lr, spec.seed, budget, spec.variant.key)
        diverged = math.isnan(loss)
        value = self.chance if diverged else score
        steps = spec.train.steps or 1
        last = rung_step(steps, budget)
        marker = Path(spec.run_dir) / "synthetic-step"
        before = int(marker.read_text()) if marker.is_file() else 0
        resumed = before if before <= last else 0
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(last))
        if diverged and self.minimize and getattr(spec, "diverged_score", None) is not None:
            value = spec.diverged_score  # a loss: the study's score for a diverged run (ln V)
        metrics = {"final_loss": loss, "validation_loss": loss if budget < 1.0 else math.nan,
                   "recent_loss": loss, f"validation_{self.metric}": value,
                   f"test_{self.metric}": value if budget >= 1.0 else math.nan,
                   "diverged": diverged, "steps": last}
        attrs = {"metric": self.metric, "config": spec.to_dict(), "resumed_from_step": resumed,
                 "schedule_steps": steps}
        return SyntheticResult(value, False, metrics, attrs)


@dataclasses.dataclass
class SyntheticResult:
    """The fields of ``TrialResult`` the worker reads (without importing torch)."""

    value: float
    pruned: bool
    metrics: dict[str, Any]
    attrs: dict[str, Any]

