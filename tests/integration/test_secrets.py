"""No secret leaves the user's hands: a real sweep against a password-protected PostgreSQL.

The private test server gets a role that must authenticate with a password holding ``@``, ``:``,
``/`` and ``%`` (so the URL carries %-escapes), and ``HF_TOKEN`` is set in the environment. A full
sweep (local worker processes), ``status`` and ``report`` run through the real CLI; then every
byte they printed, every file under the working folder (runs, worker logs, report) and a dump of
every table of the store are searched for the password (raw, escaped, or a part of it) and the
token: zero hits. Controls show the searches look where the data is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import PG_SECRET

REPO = Path(__file__).resolve().parents[2]
HF_TOKEN = "hf_w10TokenThatMustNotLeak7d1e"
WANDB_KEY = "c0ffee0123456789abcdefWandbKeyNotToLeak42"
NEEDLES = [PG_SECRET, quote(PG_SECRET, safe=""), quote(PG_SECRET), "S3cr", "9f2c", HF_TOKEN,
           "TokenThatMustNotLeak", WANDB_KEY, "WandbKeyNotToLeak"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(HF_TOKEN=HF_TOKEN, HF_HUB_OFFLINE="1", WANDB_API_KEY=WANDB_KEY,
               WANDB_MODE="offline", WANDB_DIR=str(cwd / "wb"))
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def _dump(superuser_url: str, dbname: str) -> str:
    """Every row of every table of the store's database, as text (read as the superuser)."""
    import psycopg

    conninfo = superuser_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    lines = []
    with psycopg.connect(f"{conninfo}/{dbname}") as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                lines.append(f"{table}: {row!r}")
    return "\n".join(lines)


def _hits(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def test_no_password_or_token_in_output_files_or_store(postgres_password_url, postgres_url,
                                                       tiny_bert_dir, tmp_path):
    url = postgres_password_url
    run = _cli(["run", "--model", str(tiny_bert_dir), "--variant", "lora", "--lrs", "1e-3,1e-2",
                "--steps", "1", "--batch-size", "4", "--sweep", "secret", "--storage", url,
                "--launcher", "local", "--workers", "1", "--set", "task.eval_limit=4",
                "--set", "train.max_length=16"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    status = _cli(["status", "--json", "--storage", url], tmp_path)
    table = _cli(["status", "--storage", url], tmp_path)  # ends with the dashboard command
    assert "optuna-dashboard postgresql+psycopg://lsuser@127.0.0.1" in table.stdout, table.stdout
    report = _cli(["report", "--storage", url, "--out", "rep"], tmp_path)
    wrong = _cli(["status", "--storage", url.replace("lsuser:", "lsuser:x"), "--json"], tmp_path)
    assert status.returncode == 0 and report.returncode == 0, status.stderr + report.stderr
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr, wrong.stderr

    printed = "".join(p.stdout + p.stderr for p in (run, status, table, report, wrong))
    assert _hits(printed) == [], printed
    assert "lsuser:***@127.0.0.1" in run.stdout  # the report hint shows the masked URL

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in files) and (tmp_path / "rep").is_dir()
    assert any(p.suffix == ".log" for p in files)  # the local worker's log is searched too
    assert any(p.name == "events.jsonl" for p in files)  # each trial's event log
    # the trackers' files: searched by test_trackers.py's sweep on this store (every tracker)
    leaks = {str(p.relative_to(tmp_path)): h for p in files
             if (h := _hits(p.read_bytes().decode("utf-8", "replace")))}
    assert leaks == {}

    dump = _dump(postgres_url, "lorasweep_secret")
    assert "lsuser:***@" in dump and "secret|sentiment" in dump  # trials and their configs are there
    assert _hits(dump) == [], [line for line in dump.splitlines() if _hits(line)][:3]


def test_a_bare_at_in_the_password_leaks_no_fragment(postgres_password_url, postgres_url,
                                                     tiny_bert_dir, tmp_path):
    """The password written raw (``lsuser:S3cr@t:p%w/d-9f2c@127.0.0.1``): the driver would end it
    at its first ``@`` and quote the rest as a host name. Every command refuses the URL before
    connecting, saying to write ``@`` as ``%40``; no fragment of the password is printed, written
    or stored, and the store is left as it was."""
    from urllib.parse import unquote

    import sqlalchemy

    from lorasweep.sweep.store import StorageError, storage_errors

    escaped = postgres_password_url.split("lsuser:", 1)[1].rsplit("@", 1)[0]
    assert unquote(escaped) == PG_SECRET
    raw = postgres_password_url.replace(escaped, PG_SECRET)
    before = _dump(postgres_url, "lorasweep_secret")
    runs = [
        _cli(["run", "--model", str(tiny_bert_dir), "--variant", "lora", "--lrs", "1e-3",
              "--steps", "1", "--sweep", "raw-at", "--storage", raw, "--launcher", launcher], tmp_path)
        for launcher in ("inline", "local")
    ] + [_cli(["status", "--storage", raw], tmp_path), _cli(["status", "--json", "--storage", raw], tmp_path),
         _cli(["report", "--storage", raw], tmp_path)]
    for proc in runs:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: storage postgresql+psycopg://lsuser:***@127.0.0.1:"), line
        assert "%40" in line
    printed = "".join(p.stdout + p.stderr for p in runs)
    fragments = ["S3cr", "9f2c", "d-9f2c", "p%w", "t:p"]
    assert [f for f in fragments if f in printed] == [], printed
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(), written  # refused before anything was written
    after = _dump(postgres_url, "lorasweep_secret")
    assert after == before and [f for f in fragments if f in after] == []

    # The driver's own text for such a URL quotes a fragment (``failed to resolve host
    # 'Qz9f2c@127.0.0.1'``); the one error path scrubs it.
    bare = raw.replace(PG_SECRET, "S3cr@Qz9f2c")
    engine = sqlalchemy.create_engine(bare)
    with pytest.raises(StorageError) as err, storage_errors(bare):
        engine.connect()
    engine.dispose()
    assert "cannot use storage" in str(err.value) and "127.0.0.1" in str(err.value), str(err.value)
    assert [f for f in ("S3cr", "Qz9f2c") if f in str(err.value)] == [], str(err.value)
