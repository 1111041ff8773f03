"""benchmarks/bench_search.py in pieces, on its synthetic path (the real store and worker loop,
no training): with --store, a grid runs once and serves every method; a run stopped between
sweeps (--max-minutes 0: one new sweep per call) continues where it stopped, each sweep run
exactly once, to the rows a run reusing everything prints; an interrupted TPE study resumes to
the trials an uninterrupted one proposes."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_search  # noqa: E402

LRS = "1e-5,3.16e-5,1e-4,3.16e-4,1e-3,3.16e-3,1e-2,3.16e-2"  # 8: the adaptive budget fits


@pytest.fixture
def folder(tmp_path):
    """The stores' folder: in memory where the system has one (SQLite's commits, each synced
    to disk, are most of this test's time otherwise), else pytest's temporary folder."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="bench-search-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[int, list[dict]]:
    out = tmp_path / f"{name}.json"
    code = bench_search.main(["--synthetic", "--variants", "lora,loraplus", "--reps", "1",
                              "--lrs", LRS, "--store", str(tmp_path / "b.db"),
                              "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def _unit(row: dict) -> tuple:
    return ("transfer", row["rep"]) if row["method"] == "transfer" else (
        row["method"], row["variant"], row["rep"])


def test_a_stopped_run_continues_one_sweep_at_a_time_and_reuses_the_grids(folder, capsys):
    tmp_path = folder
    # a first piece: the grids alone
    code, rows = _run(tmp_path, "grids", "--methods", "grid")
    assert code == 0 and [(r["method"], r["variant"]) for r in rows] == [
        ("grid", "lora"), ("grid", "loraplus")]
    assert all(r["ran"] == 8 for r in rows)
    # then the searches, stopped after each new sweep: the grids are reused, never rerun
    ran: list[set] = []
    for _ in range(10):
        code, rows = _run(tmp_path, "piece", "--max-minutes", "0")
        ran.append({_unit(r) for r in rows if r["ran"]})
        if code == 0:
            break
        assert code == 3 and "rerun the same command to continue" in capsys.readouterr().out
    assert all(r["ran"] == 0 for r in rows if r["method"] == "grid")
    assert [len(units) for units in ran] == [1] * 5  # adaptive x2, TPE x2, transfer: once each
    assert len(set().union(*ran)) == 5
    capsys.readouterr()
    # a last run reuses everything and prints the same rows
    code, again = _run(tmp_path, "again")
    out = capsys.readouterr().out
    assert code == 0 and all(r["ran"] == 0 for r in again)
    assert out.count("reused from the store") == len(again)
    assert "[tpe 2/2]" in out and "[transfer 1/1]" in out and "[adaptive 1/2]" in out
    key = ("variant", "method", "rep", "lr", "test", "steps")
    assert [{k: r[k] for k in key} for r in again] == [{k: r[k] for k in key} for r in rows]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'b.db'}")
    grid = optuna.load_study(study_name=next(n for n in optuna.get_all_study_names(storage)
                                             if n.startswith("grid-lora|")), storage=storage)
    assert len(grid.get_trials()) == 8  # each grid point ran once


def test_an_interrupted_tpe_study_resumes_to_the_same_proposals(folder):
    tmp_path = folder
    args = bench_search._args(["--synthetic", "--lrs", LRS])
    whole, ran = bench_search._tpe("lora", args, 1, 5, str(tmp_path),
                                   f"sqlite:///{tmp_path / 'a.db'}")
    assert ran == 5
    store = f"sqlite:///{tmp_path / 'b.db'}"
    _, ran = bench_search._tpe("lora", args, 1, 3, str(tmp_path), store)
    assert ran == 3
    study = optuna.load_study(study_name=optuna.get_all_study_names(store)[0], storage=store)
    study.ask()  # a trial cut off mid-way (its process killed): failed on resume, not counted
    resumed, ran = bench_search._tpe("lora", args, 1, 5, str(tmp_path), store)
    assert ran == 2 and [t["lr"] for t in resumed] == [t["lr"] for t in whole]
    assert len({t["lr"] for t in whole}) == 5


def test_bad_methods_are_refused():
    with pytest.raises(SystemExit) as stop:
        bench_search._args(["--methods", "grid,tpee"])
    assert stop.value.code == 2
