"""The real CLI, in subprocesses: bad input exits 2 with one clear line and writes nothing.

Every bad-input case runs ``python -m lorasweep run ...`` in its own empty folder (so the default
store would be ``./lorasweep-out/studies.db`` there). A valid tiny run in the same way is the control:
it shows that the "nothing written" checks look where a real run does write. All these commands
run concurrently, once per module (each pays the torch import), and each test checks one.
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

from lorasweep.paths import RUNS_DIR, STORE_FILE

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nope"

# name -> (arguments after `lorasweep`, a word the error line must contain, files to create first)
CASES: dict[str, tuple[list[str], str, dict[str, str]]] = {
    "unknown variant": (["run", "--variant", "lora,nope"], "'nope'", {}),
    "unknown task": (["run", "--task", "nope"], "'nope'", {}),
    "near-miss variant": (["run", "--variant", "lora_ga"], "'lora_ga' (did you mean 'lora-ga'?)", {}),
    "near-miss task": (["run", "--task", "gsm8"], "'gsm8' (did you mean 'gsm8k'?)", {}),
    "zero workers": (["run", "--workers", "0"], "got 0: pass e.g. --workers 2", {}),
    "zero max length": (["run", "--max-length", "0"], "got 0: pass e.g. --max-length 256", {}),
    "zero grad accum": (["run", "--grad-accum", "0"], "got 0: pass e.g. --grad-accum 4", {}),
    "unknown model": (["run", "--model", "notamodel"], "'notamodel'", {}),
    "malformed lrs": (["run", "--lrs", "1e-4,abc"], "'abc'", {}),
    "negative lr": (["run", "--lrs", "1e-4,-0.001"], "-0.001", {}),
    "rank 0": (["run", "--rank", "0"], "got 0", {}),
    "unreadable recipe": (["run", "--recipe", "missing.yaml"], "missing.yaml", {}),
    "invalid yaml recipe": (
        ["run", "--recipe", "bad.yaml"],
        "bad.yaml",
        {"bad.yaml": "lrs: [1e-4\n"},
    ),
    "unknown recipe key": (["run", "--recipe", "r.yaml"], "'lrss'", {"r.yaml": "lrss: [0.001]\n"}),
    "unreachable storage": (["run", "--storage", UNREACHABLE], "127.0.0.1:1", {}),
    "set without =": (["run", "--set", "trainsteps50"], "'trainsteps50'", {}),
    "negative checkpoint interval": (
        ["run", "--set", "train.checkpoint_every=-5"], "checkpoint_every", {}
    ),
    # Rich markup in a user's value must be printed as is (not eaten, not a MarkupError).
    "markup in a bad value": (["run", "--lrs", "1e-4,[/x]"], "'[/x]'", {}),
}
CONTROL = "valid tiny run"
CONTROL_ARGS = [
    "run",
    "--variant",
    "lora",
    "--lrs",
    "1e-3",
    "--steps",
    "1",
    "--batch-size",
    "4",
    "--sweep",
    "ok",
    "--set",
    "task.eval_limit=4",
    "--max-length",
    "16",
    "--grad-accum",
    "2",
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorasweep", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _studies_in(folder: Path) -> list[str]:
    db = folder / STORE_FILE
    if not db.exists():
        return []
    return optuna.get_all_study_names(f"sqlite:///{db}")


Outcome = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tiny_bert_dir) -> dict[str, Outcome]:
    # The control run is the longest: started first, the short ones fill the other cores.
    jobs: dict[str, tuple[list[str], Path]] = {
        CONTROL: ([*CONTROL_ARGS, "--model", str(tiny_bert_dir)], tmp_path_factory.mktemp("ok"))
    }
    for i, (name, (args, _, files)) in enumerate(CASES.items()):
        folder = tmp_path_factory.mktemp(f"case{i}")
        for fname, text in files.items():
            (folder / fname).write_text(text)
        jobs[name] = (args, folder)
    jobs["report without store"] = (["report"], tmp_path_factory.mktemp("nostore"))
    jobs["variants"] = (["variants", "--json"], tmp_path_factory.mktemp("variants"))
    jobs["tasks"] = (["tasks", "--json"], tmp_path_factory.mktemp("tasks"))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_cli, args, folder) for name, (args, folder) in jobs.items()}
        return {name: (jobs[name][1], f.result()) for name, f in futures.items()}


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
    assert not (folder / RUNS_DIR).exists(), detail


def test_a_valid_run_writes_where_the_bad_ones_did_not(outcomes):
    """Control: the same command-line shape with valid input fills the default store."""
    folder, proc = outcomes[CONTROL]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (name,) = _studies_in(folder)
    assert name.startswith("ok|sentiment|")
    study = optuna.load_study(
        study_name=name, storage=f"sqlite:///{folder / STORE_FILE}"
    )
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.params["lr"] == pytest.approx(1e-3)
    assert (folder / RUNS_DIR).is_dir()
    (config,) = (folder / RUNS_DIR).rglob("config.json")  # --max-length and --grad-accum reached it
    train = json.loads(config.read_text())["train"]
    assert (train["max_length"], train["grad_accum"]) == (16, 2)


def test_report_without_a_store_is_a_clear_error(outcomes):
    folder, proc = outcomes["report without store"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "no study store" in proc.stderr
    assert not (folder / STORE_FILE).exists()


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


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["report", "--help"], ["status", "--help"]],
    ids=" ".join,
)
def test_help_does_not_import_torch_or_transformers(args, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE, json.dumps(args)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    probe = [line for line in proc.stderr.splitlines() if line.startswith("PROBE ")]
    assert probe, proc.stderr
    result = json.loads(probe[-1][len("PROBE ") :])
    assert result["code"] in (0, None), proc.stderr
    assert result["heavy"] == [], f"--help imported {result['heavy']}"
    assert "Usage" in proc.stdout


def test_variants_json_lists_the_variants(outcomes):
    from lorasweep.variants.base import AXES

    _, proc = outcomes["variants"]
    assert proc.returncode == 0, proc.stderr
    entries = {e["key"]: e for e in json.loads(proc.stdout)}
    assert {"lora", "rslora", "dora", "loraplus", "pissa"} <= set(entries)
    for key, entry in entries.items():
        assert entry["axis"] in AXES, key
        assert isinstance(entry["summary"], str) and entry["summary"].strip(), key


def test_tasks_json_lists_sentiment(outcomes):
    _, proc = outcomes["tasks"]
    assert proc.returncode == 0, proc.stderr
    entries = {e["key"]: e for e in json.loads(proc.stdout)}
    assert entries["sentiment"]["metric"] == "accuracy"
    assert entries["sentiment"]["summary"].strip()


def test_offline_gsm8k_names_the_data_and_the_offline_model_in_its_first_error(tmp_path):
    """Offline with nothing cached, GSM8K's default needs the Hub twice (its data and its
    default model): the first error names both fixes, --data-dir and embedded:smollm2."""
    env = {**_env(), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    proc = subprocess.run([sys.executable, "-m", "lorasweep", "run", "--task", "gsm8k"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "--data-dir DIR" in errors[0] and "--model embedded:smollm2" in errors[0], errors[0]
    assert _studies_in(tmp_path) == []
