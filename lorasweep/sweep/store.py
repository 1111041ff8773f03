"""Study storage: the one shared state. SQLite by default, any SQLAlchemy URL, or a journal file.

URLs:
* ``None``: ``sqlite:///lorasweep-out/studies.db`` under the current directory (:mod:`lorasweep.paths`);
* ``sqlite:///...``, ``postgresql+psycopg://...``: Optuna's ``RDBStorage``;
* ``journal:PATH`` (or a path ending in ``.journal``/``.log``): Optuna's ``JournalStorage`` over a
  file, the choice for shared file systems on clusters.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import STORE_FILE

__all__ = ["StorageError", "default_storage_url", "open_storage", "storage_label"]

DEFAULT_DB = STORE_FILE


class StorageError(ValueError):
    """A storage URL that cannot be opened."""


def default_storage_url() -> str:
    return f"sqlite:///{DEFAULT_DB.resolve()}"


def storage_label(url: str) -> str:
    """The URL without its password, for messages and provenance."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}@{host}"
    return url


def _journal_path(url: str) -> str | None:
    if url.startswith("journal:"):
        return url.split(":", 1)[1]
    if "://" not in url and url.endswith((".journal", ".log")):
        return url
    return None


def open_storage(url: str | None, create: bool = True):
    """An Optuna storage for ``url``; a clear :class:`StorageError` when it cannot be reached."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # lorasweep reports progress itself
    url = url or default_storage_url()
    journal = _journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(journal)
        if not create and not path.is_file():  # reading never creates the file
            raise StorageError(f"no journal file at {journal!r}: check --storage")
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.exists() and not create:
            raise StorageError(f"no study store at {url!r}: run `lorasweep run` first or pass --storage")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
    elif "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL: use sqlite:///FILE, postgresql+psycopg://..., or journal:FILE"
        )
    if not create and _no_studies_table(url):  # never write a schema into an empty store
        raise StorageError(f"no study store at {storage_label(url)!r}: run `lorasweep run` first "
                           "or pass --storage")
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=_engine_kwargs(url), skip_compatibility_check=False
        )
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError) as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise StorageError(
            f"cannot open storage {storage_label(url)}: {reason}; start the server or fix --storage"
        ) from None
    except ModuleNotFoundError as err:
        raise StorageError(
            f"storage {storage_label(url)} needs the driver {err.name}: pip install 'lorasweep[postgres]'"
        ) from None
    if url.startswith("sqlite"):
        _serialise_sqlite_transactions(storage.engine)
    return storage


def _no_studies_table(url: str) -> bool:
    """True when the store at ``url`` has no Optuna schema yet, found without writing to it."""
    import sqlalchemy

    if url.startswith("sqlite:///"):
        import sqlite3

        path = Path(url[len("sqlite:///") :])
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
