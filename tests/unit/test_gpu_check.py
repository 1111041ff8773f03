"""The prepared GPU check runs its CPU mode (the same code on tiny shapes) and prints its one
table: every variant beside itself over NF4, and a full CLI trial over NF4, completed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import require_qlora

from lorasweep.variants import registry

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_mode_prints_its_table():
    require_qlora()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    steps = {line.split()[1]: line for line in lines if line.startswith("step ")}
    for key in registry():
        for name in (key, f"{key}@nf4"):
            assert name in steps and "x time" in steps[name], (name, steps.get(name))
    (trial,) = [line for line in lines if line.startswith("trial ")]
    assert "complete" in trial and "base nf4" in trial, trial
