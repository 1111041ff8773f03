"""The private PostgreSQL server of tests/conftest.py works as a real Optuna storage."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

pytestmark = pytest.mark.postgres


def _dispose(storage: RDBStorage) -> None:
    # Close pooled connections so the per-test database can be dropped cleanly.
    storage.engine.dispose()


def test_study_round_trip_through_rdb_storage(fresh_postgres_url: str) -> None:
    assert fresh_postgres_url.startswith("postgresql+psycopg://")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    writer = RDBStorage(fresh_postgres_url)
    try:
        study = optuna.create_study(
            study_name="roundtrip",
            storage=writer,
            direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=0),
        )
        study.optimize(lambda t: (t.suggest_float("x", -10.0, 10.0) - 2.0) ** 2, n_trials=3)
        written = {t.number: (t.value, t.params["x"]) for t in study.trials}
    finally:
        _dispose(writer)

    reader = RDBStorage(fresh_postgres_url)  # a second, independent storage object
    try:
        reloaded = optuna.load_study(study_name="roundtrip", storage=reader)
        trials = reloaded.get_trials(deepcopy=False)
        assert len(trials) == 3
        assert all(t.state == TrialState.COMPLETE for t in trials)
        for t in trials:
            value, x = written[t.number]
            assert t.params["x"] == x
            assert t.value == pytest.approx(value)
            assert t.value == pytest.approx((x - 2.0) ** 2)
        assert reloaded.best_value == pytest.approx(min(v for v, _ in written.values()))
    finally:
        _dispose(reader)


def _study_names(url: str) -> set[str]:
    storage = RDBStorage(url)
    try:
        return {s.study_name for s in optuna.get_all_study_summaries(storage)}
    finally:
        _dispose(storage)


def test_fresh_databases_are_isolated(
    fresh_postgres_url: str, postgres_db_factory, postgres_url: str
) -> None:
    other_url = postgres_db_factory()
    assert other_url != fresh_postgres_url

    storage = RDBStorage(fresh_postgres_url)
    try:
        optuna.create_study(study_name="only-here", storage=storage)
    finally:
        _dispose(storage)

    assert _study_names(fresh_postgres_url) == {"only-here"}
    assert _study_names(other_url) == set()
    assert "only-here" not in _study_names(postgres_url)
