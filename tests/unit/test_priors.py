"""The prior shifts from the study's tables, the transfer window, and their checks."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest

import lorasweep.published as published
from lorasweep.sweep.priors import priors
from lorasweep.sweep.search import Observation, SearchError, check_window, plan, window_around

TABLES = Path(published.__file__).parent


def _best(path: Path) -> dict[str, float]:
    """Per variant, the LR of its best printed score, read with csv alone (the oracle)."""
    best: dict[str, tuple[float, float]] = {}
    with path.open() as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            score, lr = float(row["score"]), float(row["lr"])
            if row["variant"] not in best or score > best[row["variant"]][0]:
                best[row["variant"]] = (score, lr)
    return {v: lr for v, (_, lr) in best.items()}


def test_the_study_priors_are_the_median_shift_over_the_four_tables():
    files = sorted(TABLES.glob("*.csv"))
    assert len(files) == 4
    tables = [_best(f) for f in files]
    known = priors()
    assert "lora" not in known and "aurora" not in known  # the reference, and no evidence
    for variant in ("loraplus", "hira", "dora", "melora", "randlora"):
        shifts = [math.log10(t[variant] / t["lora"]) for t in tables]
        prior = known[variant]
        assert prior.tables == 4 and prior.sweeps == 0
        assert math.isclose(prior.shift, statistics.median(shifts), abs_tol=1e-9)
        assert (prior.low, prior.high) == pytest.approx((min(shifts), max(shifts)))
    assert known["dora"].shift == 0.0 and known["loraplus"].factor < 0.2 < 2 < known["hira"].factor


def test_leaving_a_table_out_leaves_its_shift_out():
    gsm8k = _best(TABLES / published.FAMILIES["gsm8k"])
    rest = [_best(TABLES / f) for fam, f in published.FAMILIES.items() if fam != "gsm8k"]
    held = priors(exclude_families=("gsm8k",))["loramoe"]
    assert held.tables == 3
    assert math.isclose(held.shift, statistics.median(
        math.log10(t["loramoe"] / t["lora"]) for t in rest), abs_tol=1e-9)
    assert gsm8k["loramoe"] != gsm8k["lora"]


GRID = [round(10 ** (-5 + 0.5 * k), 8) for k in range(10)]


def test_the_window_is_the_nearest_lattice_points_and_shifts_inward_at_an_end():
    assert window_around(GRID, 1.2e-3) == pytest.approx(GRID[3:6])
    assert window_around(GRID, 1e-3, {"window": 5}) == pytest.approx(GRID[2:7])
    # below the grid: the lattice's points past its edge (search.extend=2), then inward
    assert window_around(GRID, 1e-9) == pytest.approx([1e-6, 3.16228e-6, 1e-5], rel=1e-3)
    assert window_around(GRID, 1e-9, {"extend": 0}) == GRID[:3]


def test_a_flat_window_widens_to_every_other_grid_point():
    window = GRID[1:4]
    first = plan(GRID, [0], [], window=window, chance=0.5)
    assert sorted(p.lr for p in first.proposals) == window  # the window alone, at rung 0
    flat = [Observation(lr, 0, 0.3, "complete", 0.5, 0.69) for lr in window]
    wider = plan(GRID, [0], flat, window=window, chance=0.5)
    assert any("flat" in n and "widened" in n for n in wider.notes)
    def six(lrs):  # the lattice writes LRs with 6 significant digits
        return {float(f"{lr:.6g}") for lr in lrs}

    probed = six(p.lr for p in wider.proposals) | six(window)
    assert probed == six(window) | six(GRID[1::2])  # in step with the window's first point
    assert wider.cap == pytest.approx(0.4 * len(GRID))  # the adaptive search's budget
    # not flat where chance is known and the window is above it
    high = [Observation(lr, 0, 0.3, "complete", 0.8, 0.3) for lr in window]
    assert not any("widened" in n for n in plan(GRID, [0], high, window=window, chance=0.5).notes)


def test_a_window_the_transfer_budget_cannot_pay_for_is_refused():
    check_window(10)  # 3 points at 0.3 and one resumed: 1.6 of 2.5 full trials
    with pytest.raises(SearchError, match=r"search.transfer_budget=0.1 .* window of 3 .* >= 0.16"):
        check_window(10, {"transfer_budget": 0.1})
    with pytest.raises(SearchError, match="search.window must be an integer >= 1"):
        check_window(10, {"window": 0})
