"""Bad input against a store that already holds completed trials: one line, exit 2, store intact.

One tiny real sweep fills a SQLite store once per module (two completed trials). Every case then
gets its own folder with a byte copy of that store as the default store (or a
damaged copy of it), runs ``python -m lorasweep ...`` in a subprocess, and checks: exit code 2,
no traceback, exactly one ``error:`` line that names the problem, no secret in the output, and
the store's bytes (SHA-256) unchanged. The cases run concurrently, each paying its own imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lorasweep.paths import OUTPUT_DIR, RUNS_DIR, STORE_FILE

REPO = Path(__file__).resolve().parents[2]
SECRET = "S3CRETPW"
STORE = STORE_FILE
BASE_RUN = ["run", "--variant", "lora", "--steps", "1", "--batch-size", "4", "--sweep", "base",
            "--set", "task.eval_limit=4", "--set", "train.max_length=16"]


def _corrupt_random(folder: Path) -> None:
    (folder / STORE).write_bytes(os.urandom(8192))


def _truncate(folder: Path) -> None:
    data = (folder / STORE).read_bytes()
    (folder / STORE).write_bytes(data[: len(data) // 3])


def _read_only(folder: Path) -> None:
    (folder / STORE).chmod(0o444)
    (folder / STORE.parent).chmod(0o555)


def _regular_file(folder: Path) -> None:
    (folder / "afile").write_text("not a folder\n")


def _newer_lorasweep(folder: Path) -> None:
    with sqlite3.connect(folder / STORE) as db:  # a study attribute version from the future
        db.execute("DELETE FROM study_user_attributes WHERE key = 'lorasweep_store'")
        db.execute("INSERT INTO study_user_attributes (study_id, key, value_json) "
                   "SELECT study_id, 'lorasweep_store', ? FROM studies", (json.dumps(99),))


def _newer_optuna(folder: Path) -> None:
    with sqlite3.connect(folder / STORE) as db:  # a table schema no installed Optuna knows
        db.execute("UPDATE alembic_version SET version_num = 'v9.9.9.zzz'")


def _empty_model_config(folder: Path) -> None:
    (folder / "m").mkdir()
    (folder / "m" / "config.json").write_text("{}")


def _small_gsm8k(folder: Path) -> None:
    (folder / "d").mkdir()
    line = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    for split in ("train", "test"):
        (folder / "d" / f"{split}.jsonl").write_text("\n".join([line] * 5) + "\n")


def _file(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


Setup = Callable[[Path], None] | None
# name -> (arguments after `lorasweep`, words the error line must contain, setup of the folder)
CASES: dict[str, tuple[list[str], list[str], Setup]] = {
    # corrupt stores: named as such, with the fix; never repaired
    "random bytes: run": (["run", "--lrs", "1e-3"], ["not a lorasweep study store", "backup"], _corrupt_random),
    "random bytes: status": (["status"], ["not a lorasweep study store", "--storage"], _corrupt_random),
    "random bytes: report": (["report", "--out", "rep"], ["not a lorasweep study store"], _corrupt_random),
    "truncated: run": (["run", "--lrs", "1e-3"], ["corrupt", "backup"], _truncate),
    "truncated: status": (["status"], ["corrupt", "backup"], _truncate),
    "truncated: report": (["report", "--out", "rep"], ["corrupt", "backup"], _truncate),
    "read-only store": (["run", "--lrs", "2e-3", "--sweep", "new"], ["read-only"], _read_only),
    "newer lorasweep store": (["run", "--lrs", "1e-3"], ["newer lorasweep", "upgrade"], _newer_lorasweep),
    "newer lorasweep store: status": (["status"], ["newer lorasweep"], _newer_lorasweep),
    "newer optuna schema": (["run", "--lrs", "1e-3"], ["schema", "v9.9.9.zzz"], _newer_optuna),
    # bad storage URLs
    "sqlite under /proc": (["run", "--storage", "sqlite:////proc/lorasweep-x/s.db"], ["/proc/lorasweep-x", "--storage"], None),
    "journal under /proc": (["run", "--storage", "journal:/proc/lorasweep-x/s.journal"], ["/proc/lorasweep-x", "--storage"], None),
    "sqlite under a file": (["run", "--storage", "sqlite:///afile/s.db"], ["afile", "--storage"], _regular_file),
    "journal under a file": (["run", "--storage", "journal:afile/s.journal"], ["afile", "--storage"], _regular_file),
    "missing driver": (["status", "--storage", "postgresql+psycopg2://u@127.0.0.1:5432/db"], ["psycopg2", "pip install"], None),
    "non-numeric port": (["status", "--storage", "postgresql+psycopg://u@127.0.0.1:abc/db"], ["port", "'abc'"], None),
    "password in the query": (["status", "--storage", f"postgresql+psycopg://u@127.0.0.1:1/db?password={SECRET}"], ["127.0.0.1:1", "***"], None),
    "password with @": (["status", "--storage", f"postgresql+psycopg://u:{SECRET}@x@127.0.0.1:1/db"], ["u:***@"], None),
    "password with %-escapes": (["status", "--storage", f"postgresql+psycopg://u:{SECRET}%40%3A@127.0.0.1:1/db"], ["u:***@"], None),
    # wrong-typed settings
    "steps: many": (["run", "--recipe", "r.yaml"], ["steps", "'many'"], _file("r.yaml", b"train:\n  steps: many\n")),
    "workers: two": (["run", "--recipe", "r.yaml"], ["workers", "'two'"], _file("r.yaml", b"workers: two\n")),
    "--set train.steps=abc": (["run", "--set", "train.steps=abc"], ["steps", "'abc'"], None),
    "--search bogus": (["run", "--search", "bogus"], ["bogus", "grid, adaptive or transfer"], None),
    "--search transfer, window past its budget": (["run", "--search", "transfer", "--set", "search.transfer_budget=0.1"], ["search.transfer_budget=0.1", "window of 3", "search.window"], None),
    "--set search.tie=2": (["run", "--search", "adaptive", "--set", "search.tie=2"], ["search.tie", "[0, 1)"], None),
    "--set search.budget=-1": (["run", "--search", "adaptive", "--set", "search.budget=-1"], ["search.budget", "(0, 1]"], None),
    "--set search.tyo=1": (["run", "--search", "adaptive", "--set", "search.tyo=1"], ["'tyo'", "tie"], None),
    "--search adaptive, budget short of the grid": (["run", "--search", "adaptive", "--lrs", "1e-4,1e-3,1e-2"], ["search.budget=0.4", "3 learning rates", ">= 0.54", "--search grid"], None),
    "recipe not UTF-8": (["run", "--recipe", "r.yaml"], ["r.yaml", "UTF-8"], _file("r.yaml", b"lrs: [0.001]\nname: \xff\xfe\x80\n")),
    # values out of range
    "negative seed": (["run", "--seeds", "-1"], ["seed", "-1"], None),
    "lr 1e5": (["run", "--lrs", "1e-3,1e5"], ["100000", "--allow-any-lr"], None),
    "lr 1e8": (["run", "--lrs", "1e8"], ["1e+08", "--allow-any-lr"], None),
    "model folder with an empty config": (["run", "--model", "m", "--lrs", "1e-3"], ["'m'", "config"], _empty_model_config),
    # fail fast before any trial
    "hub model offline": (["run", "--model", "someorg/somemodel", "--lrs", "1e-3"], ["someorg/somemodel", "token", "--model DIR"], None),
    "validation larger than the data": (
        ["run", "--task", "gsm8k", "--model", "m", "--lrs", "1e-3", "--set", "task.data_dir=d",
         "--set", "task.validation_size=50"], ["validation_size"], _small_gsm8k),
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"  # no network here, and none wanted in tests
    return env


def _cli(args: list[str], cwd: Path, drop_root: bool = False) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if drop_root and os.geteuid() == 0:  # root ignores file modes unless it drops this capability
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    return subprocess.run([*prefix, sys.executable, "-m", "lorasweep", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _digest(folder: Path) -> str | None:
    path = folder / STORE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def populated(tmp_path_factory, tiny_bert_dir) -> Path:
    """A folder whose default store holds two completed trials of a tiny real sweep."""
    folder = tmp_path_factory.mktemp("populated")
    proc = _cli([*BASE_RUN, "--model", str(tiny_bert_dir), "--lrs", "1e-3,1e-2"], folder)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, populated, tiny_bert_dir):
    jobs = {}
    for i, (name, (args, _, setup)) in enumerate(CASES.items()):
        if name == "read-only store" and not _can_drop_root():
            continue
        folder = tmp_path_factory.mktemp(f"bad{i}")
        shutil.copytree(populated / OUTPUT_DIR, folder / OUTPUT_DIR,
                        ignore=shutil.ignore_patterns("runs", "logs", "reports"))
        if name == "validation larger than the data":  # a real model folder beside the data
            shutil.copytree(tiny_bert_dir, folder / "m")
        if setup is not None:
            setup(folder)
        jobs[name] = (folder, args, _digest(folder))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_cli, args, folder, name == "read-only store")
                   for name, (folder, args, _) in jobs.items()}
        return {name: (jobs[name], f.result()) for name, f in futures.items()}


def _can_drop_root() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_the_store_is_unchanged(outcomes, case):
    if case not in outcomes:  # root without setpriv (util-linux) cannot make a file read-only
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("setpriv (util-linux) is needed to test a read-only store as root")
        pytest.skip("setpriv (util-linux) is needed to test a read-only store as root")
    (folder, _, before), proc = outcomes[case]
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, detail
    assert "Traceback" not in proc.stderr + proc.stdout, detail
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, detail
    for word in CASES[case][1]:
        assert word in errors[0], f"{word!r} missing in: {errors[0]}"
    assert SECRET not in proc.stderr + proc.stdout, detail
    assert _digest(folder) == before, "the store's bytes changed"
    assert not (folder / RUNS_DIR).exists(), "a trial ran"


def test_the_populated_store_is_a_real_one(populated):
    """Control: the store every case starts from holds completed trials (read back by status)."""
    proc = _cli(["status", "--json"], populated)
    assert proc.returncode == 0, proc.stderr
    (study,) = json.loads(proc.stdout)
    assert study["complete"] == 2 and study["failed"] == 0


def test_a_trial_that_cannot_fit_in_memory_is_refused_before_anything_is_written(populated,
                                                                                  tmp_path):
    """GSM8K's study budget (batch 16, length 1024, LoRA-GA's estimate) with two local workers,
    under a 2 GiB budget (as a container's limit would give): one line naming the estimate, the
    budget and what to lower; exit 2; the store holding trials unchanged; no trial run."""
    shutil.copytree(populated / OUTPUT_DIR, tmp_path / OUTPUT_DIR,
                    ignore=shutil.ignore_patterns("runs", "logs", "reports"))
    _small_gsm8k(tmp_path)
    before = _digest(tmp_path)
    args = ["run", "--task", "gsm8k", "--model", "embedded:smollm2", "--variant", "lora-ga",
            "--lrs", "1e-3", "--launcher", "local", "--workers", "2", "--set", "task.data_dir=d",
            "--set", "task.validation_size=2"]
    proc = subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=tmp_path,
                          env={**_env(), "LORASWEEP_MEMORY_LIMIT": "2GiB"}, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, detail
    assert "Traceback" not in proc.stderr + proc.stdout, detail
    for word in ("a trial of lora-ga", "on gsm8k needs about", "each worker has 1.0 GiB",
                 "LORASWEEP_MEMORY_LIMIT / 2 workers", "--max-length (now 1024)", "--grad-accum",
                 "--workers", "--try"):
        assert word in errors[0], f"{word!r} missing in: {errors[0]}"
    assert _digest(tmp_path) == before, "the store's bytes changed"
    assert not (tmp_path / RUNS_DIR).exists(), "a trial ran"
