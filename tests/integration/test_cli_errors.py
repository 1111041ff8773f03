"""The real CLI, in subprocesses: bad input exits 2 with one clear line and writes nothing.

Every bad-input case runs ``python -m lorasweep run ...`` in its own empty folder (so the default
store would be ``./lorasweep/studies.db`` there). The cases run concurrently, once per module, and
each test checks one of them. A valid tiny run in the same way is the control: it shows that the
"nothing written" checks look where a real run does write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nope"

# name -> (arguments after `lorasweep`, a word the error line must contain, files to create first)
CASES: dict[str, tuple[list[str], str, dict[str, str]]] = {
    "unknown variant": (["run", "--variant", "lora,nope"], "'nope'", {}),
    "unknown task": (["run", "--task", "nope"], "'nope'", {}),
    "unknown model": (["run", "--model", "notamodel"], "'notamodel'", {}),
    "malformed lrs": (["run", "--lrs", "1e-4,abc"], "'abc'", {}),
    "negative lr": (["run", "--lrs", "1e-4,-0.001"], "-0.001", {}),
    "rank 0": (["run", "--rank", "0"], "got 0", {}),
    "unreadable recipe": (["run", "--recipe", "missing.yaml"], "missing.yaml", {}),
    "invalid yaml recipe": (["run", "--recipe", "bad.yaml"], "bad.yaml", {"bad.yaml": "lrs: [1e-4\n"}),
    "unknown recipe key": (["run", "--recipe", "r.yaml"], "'lrss'", {"r.yaml": "lrss: [0.001]\n"}),
    "unreachable storage": (["run", "--storage", UNREACHABLE], "127.0.0.1:1", {}),
    "set without =": (["run", "--set", "trainsteps50"], "'trainsteps50'", {}),
    "unknown variant option": (["run", "--variant", "loraplus", "--set", "variant.ratioo=2"],
                               "'ratioo'", {}),
    "markup in a bad value": (["run", "--variant", "[/x]"], "'[/x]'", {}),
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _cli(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _studies_in(folder: Path) -> list[str]:
    db = folder / "lorasweep" / "studies.db"
    if not db.exists():
        return []
    return optuna.get_all_study_names(f"sqlite:///{db}")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    folders = {}
    for i, (name, (_, _, files)) in enumerate(CASES.items()):
        folder = tmp_path_factory.mktemp(f"case{i}")
        for fname, text in files.items():
            (folder / fname).write_text(text)
        folders[name] = folder
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_cli, CASES[name][0], folders[name]) for name in CASES}
        return {name: (folders[name], f.result()) for name, f in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(outcomes, case):
    folder, proc = outcomes[case]
    word = CASES[case][1]
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, detail
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, detail
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, detail
    assert word in errors[0], detail
    assert _studies_in(folder) == [], detail
    assert not (folder / "lorasweep" / "runs").exists(), detail


def test_a_valid_run_writes_where_the_bad_ones_did_not(tiny_bert_dir, tmp_path):
    """Control: the same command line shape with valid input creates the default store."""
    args = ["run", "--model", str(tiny_bert_dir), "--variant", "lora", "--lrs", "1e-3",
            "--steps", "1", "--batch-size", "4", "--sweep", "ok",
            "--set", "task.eval_limit=4", "--set", "train.max_length=16"]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    names = _studies_in(tmp_path)
    assert len(names) == 1 and names[0].startswith("ok|sentiment|")

    status = _cli(["status", "--json"], tmp_path)
    assert status.returncode == 0, status.stderr
    (study,) = json.loads(status.stdout)
    assert (study["sweep"], study["complete"], study["failed"]) == ("ok", 1, 0)

    report = _cli(["report", "--out", "rep"], tmp_path)
    assert report.returncode == 0, report.stderr
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {
        "report.md", "results.csv", "results.json", "curves.png"}


def test_report_without_a_store_is_a_clear_error(tmp_path):
    proc = _cli(["report"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "no study store" in proc.stderr
    assert not (tmp_path / "lorasweep" / "studies.db").exists()


_HELP_PROBE = """
import json, sys
sys.argv = ["lorasweep", *json.loads(sys.argv[1])]
from lorasweep.cli import main
code = None
try:
    main()
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print("PROBE " + json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["report", "--help"],
                                  ["status", "--help"]], ids=" ".join)
def test_help_does_not_import_torch_or_transformers(args, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _HELP_PROBE, json.dumps(args)], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=60)
    probe = [line for line in proc.stderr.splitlines() if line.startswith("PROBE ")]
    assert probe, proc.stderr
    result = json.loads(probe[-1][len("PROBE "):])
    assert result["code"] in (0, None), proc.stderr
    assert result["heavy"] == [], f"--help imported {result['heavy']}"
    assert "Usage" in proc.stdout


def test_variants_json_lists_the_variants():
    from lorasweep.variants.base import AXES

    proc = _cli(["variants", "--json"], REPO)
    assert proc.returncode == 0, proc.stderr
    entries = {e["key"]: e for e in json.loads(proc.stdout)}
    assert {"lora", "rslora", "dora", "loraplus", "pissa"} <= set(entries)
    for key, entry in entries.items():
        assert entry["axis"] in AXES, key
        assert isinstance(entry["summary"], str) and entry["summary"].strip(), key


def test_tasks_json_lists_sentiment():
    proc = _cli(["tasks", "--json"], REPO)
    assert proc.returncode == 0, proc.stderr
    entries = {e["key"]: e for e in json.loads(proc.stdout)}
    assert entries["sentiment"]["metric"] == "accuracy"
    assert entries["sentiment"]["summary"].strip()
