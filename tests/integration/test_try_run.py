"""``run --try``: a sweep tried small, under its own name, kept out of the real sweep's report.

Through the real CLI on the tiny BERT: the trial runs the small budget (flags given still win),
the study store holds it as the sweep ``NAME-try``, and the real sweep's report finds nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

from lorasweep.config import TRY_EVAL_LIMIT, TRY_SUFFIX, TRY_TRAIN

REPO = Path(__file__).resolve().parents[2]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_a_try_runs_small_as_its_own_sweep_and_stays_out_of_the_real_report(tiny_bert_dir,
                                                                            tmp_path):
    store = f"sqlite:///{tmp_path / 's.db'}"
    proc = _cli(["run", "--try", "--model", str(tiny_bert_dir), "--variant", "lora", "--lrs",
                 "1e-3", "--grad-accum", "2", "--launcher", "inline", "--storage", store], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (name,) = optuna.get_all_study_names(store)
    assert name.startswith(f"default{TRY_SUFFIX}|sentiment|"), name
    (config,) = (tmp_path / "lorasweep-out" / "runs").rglob("config.json")
    trial = json.loads(config.read_text())
    expected = {**TRY_TRAIN, "grad_accum": 2}  # a flag given wins over the try's budget
    assert {k: trial["train"][k] for k in expected} == expected
    assert trial["task_options"]["eval_limit"] == TRY_EVAL_LIMIT
    assert f"next: lorasweep report --sweep default{TRY_SUFFIX}" in proc.stdout

    real = _cli(["report", "--sweep", "default", "--storage", store, "--out", "r"], tmp_path)
    assert real.returncode != 0 and "Traceback" not in real.stderr, real.stdout + real.stderr
    assert not (tmp_path / "r" / "results.csv").exists()
    tried = _cli(["report", "--sweep", f"default{TRY_SUFFIX}", "--storage", store, "--out", "r"],
                 tmp_path)
    assert tried.returncode == 0, tried.stdout + tried.stderr
