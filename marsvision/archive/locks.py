"""One writer of the archive's versions at a time: activating a version (which re-scores every row),
writing an index batch, creating the schema and the first active version take the archive's lock.

PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) held by one pooled connection, which every
process and host on that database sees. SQLite: ``flock`` on a lock file beside the database (every process
on that machine; flock locks belong to an open file, so two threads of one process wait for each other too).

Without it, two activations at once left every row on the version that was not active, an activation
during a running ``index`` left 113 rows on the old one, and two ``index`` runs at once on a fresh
PostgreSQL database crashed in the migrations.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

ARCHIVE_LOCK = 0x6D617273  # "mars": the advisory lock's key (one per database)
_MEMORY = threading.Lock()  # an in-memory SQLite database belongs to one process


def lock_file(engine: Engine) -> Path | None:
    """The SQLite lock file beside the database (None for an in-memory one)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).with_name(Path(database).name + ".lock")


@contextmanager
def archive_lock(engine: Engine) -> Iterator[None]:
    """Hold the archive's lock for the block (waits for the holder)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ARCHIVE_LOCK})
            conn.commit()  # the lock is the session's, not the transaction's: no transaction left open
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ARCHIVE_LOCK})
                conn.commit()
        return
    path = lock_file(engine)
    if path is None:
        with _MEMORY:
            yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
