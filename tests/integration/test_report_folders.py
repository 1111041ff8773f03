"""Each sweep's report goes to its own folder (``lorasweep-out/reports/SWEEP``) unless ``--out``
says otherwise: a second sweep's report leaves the first's as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import optuna
from helpers import tell_waiting
from test_report_readonly import _cli

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep


def _store_with_two_sweeps(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    for name, peak in (("first", 1e-3), ("second", 1e-2)):
        spec = SweepSpec(name=name, variants=[VariantSpec("lora")], lrs=[1e-3, 1e-2], seeds=[0],
                         storage=url)
        sync_sweep(spec, storage)
        study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
        tell_waiting(study, lambda lr, seed, peak=peak: (0.9 if lr == peak else 0.6,
                                                         {"test_accuracy": 0.8}))
    return url


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _sweeps(folder: Path) -> set[str]:
    import csv

    with (folder / "results.csv").open() as handle:
        return {row["sweep"] for row in csv.DictReader(handle)}


def test_two_reports_side_by_side(tmp_path):
    url = _store_with_two_sweeps(tmp_path)
    reports = tmp_path / "lorasweep-out" / "reports"
    first = _cli("report", "--sweep", "first", "--storage", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    kept = _digests(reports / "first")
    assert {"report.md", "report.html", "results.csv"} <= set(kept)
    second = _cli("report", "--sweep", "second", "--storage", url, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert _digests(reports / "first") == kept  # the first report is untouched
    assert str(Path("lorasweep-out/reports/second/report.md")) in second.stdout
    assert _sweeps(reports / "first") == {"first"} and _sweeps(reports / "second") == {"second"}
    both = _cli("report", "--storage", url, cwd=tmp_path)  # every sweep of the store
    assert both.returncode == 0 and _sweeps(reports / "first+second") == {"first", "second"}
    assert sorted(p.name for p in reports.iterdir()) == ["first", "first+second", "second"]
    chosen = _cli("report", "--sweep", "first", "--storage", url, "--out", "mine", cwd=tmp_path)
    assert chosen.returncode == 0 and (tmp_path / "mine" / "report.md").is_file()
    assert _digests(reports / "first") == kept
