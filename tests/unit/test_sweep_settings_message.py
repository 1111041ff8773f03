"""Rerunning a sweep name with another budget says what the sweep ran with and how to go on."""

from __future__ import annotations

import pytest

from lorasweep.config import ConfigError, SweepSpec, TrainConfig
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import sync_sweep


def test_changed_budget_names_the_stored_value_and_the_way_out(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'studies.journal'}")
    sync_sweep(SweepSpec(lrs=[1e-3], train=TrainConfig(steps=80)), storage)
    with pytest.raises(ConfigError) as err:
        sync_sweep(SweepSpec(lrs=[1e-3], train=TrainConfig(steps=150)), storage)
    message = str(err.value)
    assert "sweep 'default' already ran with train.steps=80 (now 150)" in message
    assert "--sweep NAME" in message
    with pytest.raises(ConfigError, match=r"task\.eval_limit=unset \(now 200\)"):
        sync_sweep(SweepSpec(lrs=[1e-3], train=TrainConfig(steps=80),
                             task_options={"eval_limit": 200}), storage)
    # another name is a new sweep: accepted
    syncs = sync_sweep(SweepSpec(name="longer", lrs=[1e-3], train=TrainConfig(steps=150)), storage)
    assert [s.enqueued for s in syncs] == [1]
