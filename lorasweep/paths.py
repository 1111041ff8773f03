"""Where lorasweep writes by default: one output folder under the current directory.

Everything a run or a report writes by default lives under :data:`OUTPUT_DIR`, a folder whose
name cannot be mistaken for the package's source folder and is one line in a ``.gitignore``::

    lorasweep-out/
      studies.db        the study store (SQLite)
      runs/             one folder per trial: config.json, metrics.json, adapter/
      reports/SWEEP/    report.html, report.md, curves.png, results.csv, results.json
      logs/             worker logs of the local launcher

Each path is relative to the current directory, so a sweep run from a project folder keeps its
results there. ``--storage``, ``runs_dir`` and ``report --out`` move any of them elsewhere.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LOGS_DIR", "OUTPUT_DIR", "REPORTS_DIR", "RUNS_DIR", "STORE_FILE", "report_dir"]

OUTPUT_DIR = Path("lorasweep-out")
STORE_FILE = OUTPUT_DIR / "studies.db"
RUNS_DIR = OUTPUT_DIR / "runs"
REPORTS_DIR = OUTPUT_DIR / "reports"
LOGS_DIR = OUTPUT_DIR / "logs"


def report_dir(sweeps: list[str]) -> Path:
    """The default folder of a report on ``sweeps``: ``reports/SWEEP`` (``reports/A+B`` for a
    report on several), so a second sweep's report never overwrites the first's."""
    return REPORTS_DIR / "+".join(sorted(set(sweeps)))
