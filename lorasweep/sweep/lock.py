"""A per-study lock across processes and machines, for read-then-enqueue critical sections.

Popping a waiting trial is atomic in every Optuna storage, but deciding *what* to enqueue (the
adaptive search reads the study's trials, then enqueues its next proposals) is a read followed by
writes: two workers doing it at once would enqueue the same proposal twice. ``study_lock`` makes
that section exclusive per study, using what the storage itself offers:

* ``postgresql``: a session-level advisory lock (``pg_advisory_lock``) keyed by the study name;
* ``mysql``: ``GET_LOCK`` on the study name;
* SQLite and journal files: a POSIX record lock (``fcntl.lockf``) on a lock file beside the store,
  released by the kernel if the process dies, and honoured over NFS (journal files on clusters).

Threads of one process are serialised by an in-process lock as well (POSIX locks are per process).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from .urls import store_file

__all__ = ["lock_key", "store_lock", "study_lock"]

_THREAD_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_GUARD = threading.Lock()


def lock_key(study_name: str) -> int:
    """A stable signed 64-bit key for ``study_name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.sha1(study_name.encode()).digest()[:8]
    return int.from_bytes(digest, "big", signed=True)


def _thread_lock(url: str, study_name: str) -> threading.Lock:
    with _GUARD:
        return _THREAD_LOCKS.setdefault((url, study_name), threading.Lock())


@contextlib.contextmanager
def _file_lock(path: Path, study_name: str) -> Iterator[None]:
    import fcntl

    lock_file = path.with_name(f"{path.name}.lorasweep-lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as handle:
        # One byte per study (its key's offset), so studies of one store do not wait on each other.
        offset = lock_key(study_name) % (2**31)
        fcntl.lockf(handle, fcntl.LOCK_EX, 1, offset)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN, 1, offset)


@contextlib.contextmanager
def _rdb_lock(storage, study_name: str, dialect: str) -> Iterator[None]:
    from sqlalchemy import text

    with storage.engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(study_name)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(study_name)})
                conn.commit()
        else:  # mysql / mariadb
            name = f"lorasweep-{lock_key(study_name):x}"
            conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": name})
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})


@contextlib.contextmanager
def study_lock(storage, storage_url: str, study_name: str) -> Iterator[None]:
    """Hold the study's lock for the ``with`` block (blocks until it is free)."""
    with _thread_lock(storage_url, study_name):
        path = store_file(storage_url)
        if path is not None:
            with _file_lock(Path(path), study_name):
                yield
            return
        dialect = storage.engine.dialect.name
        if dialect in ("postgresql", "mysql", "mariadb"):
            with _rdb_lock(storage, study_name, dialect):
                yield
            return
        raise ValueError(f"no cross-process lock for {dialect} storages: use sqlite, postgresql, "
                         "mysql or a journal file")


@contextlib.contextmanager
def store_lock(storage_url: str, key: str) -> Iterator[None]:
    """A lock named ``key`` on the store at ``storage_url`` before it is opened (its creation:
    two first runs at once, one creates the tables); a short-lived engine for server stores."""
    path = store_file(storage_url)
    if path is not None:
        if path in ("", ":memory:"):
            yield
            return
        with _thread_lock(storage_url, key), _file_lock(Path(path), key):
            yield
        return
    import types

    import sqlalchemy

    engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "mysql", "mariadb"):
            yield
            return
        with _thread_lock(storage_url, key), _rdb_lock(types.SimpleNamespace(engine=engine), key, dialect):
            yield
    finally:
        engine.dispose()
