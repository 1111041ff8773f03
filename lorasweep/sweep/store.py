"""Study storage: the one shared state. SQLite by default, any SQLAlchemy URL, or a journal file.

URLs:
* ``None``: ``sqlite:///lorasweep-out/studies.db`` under the current directory (:mod:`lorasweep.paths`);
* ``sqlite:///...``, ``postgresql+psycopg://...``: Optuna's ``RDBStorage``;
* ``journal:PATH`` (or a path ending in ``.journal``/``.log``): Optuna's ``JournalStorage`` over a
  file, the choice for shared file systems on clusters.

Secrets: a URL's password never leaves this process unmasked (:mod:`.urls`, whose masking
functions this module's ``__all__`` includes).

A store that cannot be used (missing, damaged, read-only, written by a newer version, an unknown
driver) is a :class:`StorageError` with one line naming the problem and the fix. lorasweep never
repairs or rewrites a store on its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

from .lock import store_lock
from .urls import (
    SECRET_ENV,
    default_storage_url,
    journal_path,
    mask_secrets,
    port_of,
    sqlite_path,
    storage_label,
    stray_credentials,
)

__all__ = [
    "SECRET_ENV",
    "STORE_VERSION",
    "STORE_VERSION_ATTR",
    "StorageError",
    "check_storage",
    "default_storage_url",
    "mask_secrets",
    "open_storage",
    "storage_errors",
    "storage_label",
]

#: Version of the study attributes lorasweep writes (``lorasweep_store`` on every study). A store
#: holding a higher version was written by a newer lorasweep and is refused. 2: the trials'
#: TrialSpec template is one attribute; 1 (still read): its fields were attributes of their own.
STORE_VERSION = 2
STORE_VERSION_ATTR = "lorasweep_store"
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StorageError(ValueError):
    """A storage URL that cannot be opened."""


def _make_parent(path: Path, label: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot create the folder of the store {label}: "
                           f"{err.strerror or err}; pass --storage a path you can write") from None


def _open_journal(journal: str, create: bool):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(journal)
    _check_creatable(path, journal, create)
    if create:
        _make_parent(path, journal)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise StorageError(f"cannot open the journal {journal!r}: {err.strerror or err}; "
                           "pass --storage a path you can write") from None


def _check_sqlite_file(path: Path, url: str, create: bool, make: bool = True) -> bool:
    """Refuse what is not an SQLite store before SQLite touches it; True when it is writable."""
    if path.is_dir():
        raise StorageError(f"store {url!r} is a folder: pass --storage sqlite:///FOLDER/studies.db")
    if not path.exists():
        _check_creatable(path, url, create)
        if make:
            _make_parent(path, repr(url))
        return True
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise StorageError(f"cannot read the store {url!r}: {err.strerror}; fix its permissions "
                           "or pass --storage another file") from None
    if not head and not create:
        raise StorageError(f"no study store at {url!r} (an empty file): run `lorasweep run` first "
                           "or pass --storage")
    if head and head != _SQLITE_MAGIC:
        raise StorageError(_corrupt(url, "not a lorasweep study store (not an SQLite database)"))
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if create and not writable:
        raise StorageError(f"the store {url!r} is read-only: make it (and its folder) writable, "
                           "or pass --storage another file")
    return writable


def _corrupt(label: str, what: str) -> str:
    return (f"{label} is {what}: lorasweep does not repair it; restore it from a backup, "
            "or pass --storage another file")


def _driver(url: str) -> tuple[str, str]:
    scheme = url.split("://", 1)[0]
    dialect, _, driver = scheme.partition("+")
    driver = driver or {"postgresql": "psycopg2", "mysql": "mysqldb"}.get(dialect, dialect)
    pip = {"psycopg": "pip install 'lorasweep[postgres]'", "psycopg2": "pip install psycopg2-binary"}
    return driver, pip.get(driver, f"pip install {driver}")


def _check_port(url: str, label: str) -> None:
    port = port_of(url)
    if port and not port.isdigit():
        raise StorageError(f"storage {label}: port {port!r} is not a number; fix --storage "
                           "(e.g. postgresql+psycopg://USER@HOST:5432/DB)")


def _check_credentials(url: str, label: str) -> None:
    """Refuse, before any driver sees it, a URL whose password holds a bare ``@``: the driver
    would end the password at that ``@`` and quote the rest of it as a host name."""
    if stray_credentials(url) is not None:
        raise StorageError(f"storage {label}: the password holds '@', which ends the password in "
                           "a URL; write each '@' of the user name or password as %40 (and ':' as "
                           "%3A, '/' as %2F), e.g. postgresql+psycopg://USER:PA%40SS@HOST:5432/DB")


def _schema_error(url: str, label: str, err: Exception) -> StorageError:
    """Optuna refused the tables: name the schema found, and the fix."""
    import optuna

    found = "unknown"
    with contextlib.suppress(Exception):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        engine.dispose()
    if "optuna storage upgrade" in str(err):
        fix = "run `optuna storage upgrade --storage URL` (a copy first), or pass --storage another store"
    else:
        fix = "it was written by a newer Optuna: upgrade optuna and lorasweep, or pass --storage another store"
    return StorageError(f"study store {label} has the Optuna table schema {found}, which Optuna "
                        f"{optuna.__version__} cannot use; {fix}")


@contextlib.contextmanager
def storage_errors(url: str | None) -> Iterator[None]:
    """Turn a database failure while using the store into one :class:`StorageError` line."""
    import optuna
    import sqlalchemy.exc

    label = storage_label(url)
    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as err:
        cause = err if isinstance(err, sqlalchemy.exc.SQLAlchemyError) else err.__cause__
        orig = getattr(cause, "orig", None) or cause or err
        reason = mask_secrets((str(orig).strip().splitlines() or [type(orig).__name__])[0], url)
        low = reason.lower()
        if "not a database" in low or "malformed" in low or "disk image" in low:
            raise StorageError(_corrupt(f"study store {label}", f"corrupt ({reason})")) from None
        if "readonly" in low or "read-only" in low:
            raise StorageError(f"study store {label} is read-only: make it (and its folder) "
                               "writable, or pass --storage another file") from None
        raise StorageError(f"cannot use storage {label}: {reason}; start the server or fix --storage") from None


def _check_versions(storage, label: str) -> None:
    for study in storage.get_all_studies():
        version = study.user_attrs.get(STORE_VERSION_ATTR, 0)
        if not isinstance(version, int) or version > STORE_VERSION:
            raise StorageError(
                f"study store {label} was written by a newer lorasweep (study {study.study_name!r}: "
                f"store version {version!r}, this lorasweep knows up to {STORE_VERSION}): "
                "upgrade lorasweep, or pass --storage another store")


def check_storage(url: str | None, create: bool = True) -> None:
    """The checks that need no database library and write nothing: a bad URL, port or path, a
    missing driver, a file that is not an SQLite store, a read-only store. Cheap: validation
    runs them before anything heavier."""
    url = url or default_storage_url()
    label = storage_label(url)
    journal = journal_path(url)
    if journal is not None:
        _check_creatable(Path(journal), journal, create)
        return
    if sqlite_path(url) is not None:
        _check_sqlite_file(Path(sqlite_path(url)), url, create, make=False)
        return
    if "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL: use sqlite:///FILE, postgresql+psycopg://..., or journal:FILE"
        )
    _check_credentials(url, label)
    _check_port(url, label)
    driver, pip = _driver(url)
    module = {"mysqldb": "MySQLdb"}.get(driver, driver)
    if importlib.util.find_spec(module) is None:
        raise StorageError(f"storage {label} needs the database driver {driver}, which is not "
                           f"installed: {pip} (or use postgresql+psycopg://)")


def _check_creatable(path: Path, label: str, create: bool) -> None:
    if path.exists():
        return
    if not create:
        what = "journal file" if journal_path(label) or "://" not in label else "study store"
        raise StorageError(f"no {what} at {label!r}: run `lorasweep run` first or pass --storage")
    ancestor = next((p for p in path.parents if p.exists()), Path("."))
    if not ancestor.is_dir():
        raise StorageError(f"cannot create the store {label!r}: {str(ancestor)!r} is a file, not a "
                           "folder; pass --storage a path you can write")
    if not os.access(ancestor, os.W_OK):
        raise StorageError(f"cannot create the store {label!r}: {str(ancestor)!r} is read-only; "
                           "pass --storage a path you can write")


def open_storage(url: str | None, create: bool = True):
    """An Optuna storage for ``url``; a clear :class:`StorageError` when it cannot be used."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # lorasweep reports progress itself
    url = url or default_storage_url()
    label = storage_label(url)
    journal = journal_path(url)
    if journal is not None:
        storage = _open_journal(journal, create)
        with storage_errors(url):
            _check_versions(storage, journal)
        return storage
    writable = True
    if sqlite_path(url) is not None:
        writable = _check_sqlite_file(Path(sqlite_path(url)), url, create)
    elif "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL: use sqlite:///FILE, postgresql+psycopg://..., or journal:FILE"
        )
    else:
        _check_credentials(url, label)
        _check_port(url, label)
    if not create and _no_studies_table(url):  # never write a schema into an empty store
        raise StorageError(f"no study store at {storage_label(url)!r}: run `lorasweep run` first "
                           "or pass --storage")
    try:
        # Two first runs at once: one creates the tables (a read-only store is never locked).
        lock = store_lock(url, "create-store") if writable else contextlib.nullcontext()
        with storage_errors(url), lock:
            storage = _rdb_storage(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:
        if isinstance(err, StorageError):
            raise
        reason = mask_secrets(str(err).strip().splitlines()[0], url)
        raise StorageError(f"bad storage URL {label}: {reason}; fix --storage") from None
    except ImportError:
        driver, pip = _driver(url)
        raise StorageError(f"storage {label} needs the database driver {driver}, which is not "
                           f"installed: {pip} (or use postgresql+psycopg://)") from None
    except RuntimeError as err:  # Optuna's table schema check
        raise _schema_error(url, label, err) from None
    if url.startswith("sqlite") and writable:
        _serialise_sqlite_transactions(storage.engine)
    with storage_errors(url):
        _check_versions(storage, label)
    return storage


def _no_studies_table(url: str) -> bool:
    """True when the store at ``url`` has no Optuna schema yet, found without writing to it."""
    import sqlalchemy

    if sqlite_path(url) is not None:
        import sqlite3

        path = Path(sqlite_path(url))
        if not path.is_file():
            return True
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'"
            return con.execute(query).fetchone() is None
        except sqlite3.DatabaseError:
            return False  # not a database: opening it names the problem
        finally:
            con.close()
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except Exception:
        return False  # a bad URL: opening it names the problem
    try:
        return not sqlalchemy.inspect(engine).has_table("studies")
    except Exception:
        return False  # unreachable: opening it names the problem
    finally:
        engine.dispose()
def _rdb_storage(url: str):
    """Optuna's RDBStorage with its own heartbeat on (see :mod:`.heartbeat`)."""
    import warnings

    import optuna

    from .heartbeat import grace_s, interval_s

    with warnings.catch_warnings():  # the heartbeat arguments are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=_engine_kwargs(url), skip_compatibility_check=False,
            heartbeat_interval=interval_s(), grace_period=grace_s(),
        )


def _serialise_sqlite_transactions(engine) -> None:
    """Make each SQLite transaction take the write lock at BEGIN.

    Python's sqlite3 driver opens no transaction before a SELECT, so Optuna's pop of a waiting
    trial (read WAITING, then write RUNNING) is not atomic on SQLite: two workers can pop the
    same enqueued trial and run a grid point twice. ``BEGIN IMMEDIATE`` serialises them; the
    busy timeout makes the others wait rather than fail. (PostgreSQL locks the row instead.)
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners existed must not be reused


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Parallel local workers: wait for the write lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
