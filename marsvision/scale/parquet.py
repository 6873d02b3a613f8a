"""Parquet shards for the Ray engine: crash-safe shards and their atomic assembly into one file. The row
format itself (``schema``, ``records_table``, ``to_predictions``…) is ``marsvision.inference.parquet``,
re-exported here for the shard code's callers.

Crash safety: a shard is written under a temporary name, fsynced and renamed (``atomic.atomic_write``),
so a kill leaves whole shards or none; the final file is assembled the same way, and rows already in
it are never taken twice from shards a kill left behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from ..atomic import atomic_write
from ..inference.parquet import (  # noqa: F401  (the row format, re-exported)
    META_KEY,
    SCHEMA_VERSION,
    check_settings,
    pa,
    pq,
    read_paths,
    records_table,
    schema,
    settings_of,
    to_predictions,
    write_parquet,
    write_table,
)

SHARD_GLOB = "part-*.parquet"
DEFAULT_SHARD_ROWS = 1000  # ~12 MB a shard with the bundled model's 1792 features and 1280 texture values


def shards(folder: str | os.PathLike) -> list[Path]:
    """The finished shards in ``folder`` (temporary files of a killed writer are not among them)."""
    folder = Path(folder)
    return sorted(folder.glob(SHARD_GLOB)) if folder.is_dir() else []


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete what a killed writer left half-written (``atomic_write``'s hidden ``.NAME.*.tmp`` files)."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(".part-*.tmp"):
            tmp.unlink(missing_ok=True)


class ShardWriter:
    """Rows in, whole shards out: every ``rows_per_shard`` rows a ``part-NNNNNN-XXXXXXXX.parquet`` file,
    written atomically. A path already written (by this writer or in ``done``) is dropped, so a batch
    that a restarted worker delivers twice is stored once."""

    def __init__(
        self,
        folder: str | os.PathLike,
        settings: dict,
        done: Iterable[str] = (),
        rows_per_shard: int = DEFAULT_SHARD_ROWS,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)
        self.settings, self.rows_per_shard = settings, max(1, rows_per_shard)
        self.seen: set[str] = set(done)
        self.pending: list = []
        self.pending_rows = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.errors: list[tuple[str, str]] = []
        self._next = len(shards(self.folder))

    def add(self, table) -> None:
        a = pa()
        paths = table.column("path").to_pylist()
        keep, batch_seen = [], set()
        for p in paths:
            new = p not in self.seen and p not in batch_seen
            keep.append(new)
            batch_seen.add(p)
        if not all(keep):
            self.dropped_rows += len(keep) - sum(keep)
            table = table.filter(a.array(keep, a.bool_()))
        if not table.num_rows:
            return
        self.seen.update(table.column("path").to_pylist())
        errors = table.column("error").to_pylist()
        self.errors += [(p, e) for p, e in zip(table.column("path").to_pylist(), errors, strict=True) if e is not None]
        self.pending.append(table.select(schema().names).cast(schema(self.settings)))
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.pending_rows:
            return
        table = pa().concat_tables(self.pending)
        name = f"part-{self._next:06d}-{uuid.uuid4().hex[:8]}.parquet"
        write_table(table, self.folder / name)
        self._next += 1
        self.written_rows += table.num_rows
        self.pending, self.pending_rows = [], 0


def conform(table, sch):
    """``table`` in schema ``sch``: a file of an older schema (without the ``product`` column of
    schema 2) gets that column as nulls, so a run resumed after an upgrade still assembles."""
    a = pa()
    for f in sch:
        if f.name not in table.column_names:
            table = table.append_column(f, a.nulls(table.num_rows, f.type))
    return table.select(sch.names).cast(sch)


def assemble(output: str | os.PathLike, folder: str | os.PathLike, settings: dict) -> int:
    """The final file: the rows of ``output`` (when a previous run made it) then those of every shard in
    ``folder`` not already there, written to a temporary file and renamed over ``output``; the shards and
    ``folder`` are removed after. Streams one row group at a time (memory stays flat). Returns the rows."""
    a, q = pa(), pq()
    output, folder = Path(output), Path(folder)
    parts = shards(folder)
    if not parts and output.is_file():
        return q.ParquetFile(output).metadata.num_rows
    sch = schema(settings)
    sources = ([output] if output.is_file() else []) + parts
    seen: set[str] = set()
    rows = 0
    with atomic_write(output, "wb") as f, q.ParquetWriter(f, sch) as writer:
        for src in sources:
            pf = q.ParquetFile(src)
            for g in range(pf.num_row_groups):
                table = pf.read_row_group(g)
                paths = table.column("path").to_pylist()
                keep = [p not in seen for p in paths]
                seen.update(paths)
                if not all(keep):
                    table = table.filter(a.array(keep, a.bool_()))
                if table.num_rows:
                    writer.write_table(conform(table, sch))
                    rows += table.num_rows
        if not rows:
            writer.write_table(sch.empty_table())
    for part in parts:
        part.unlink(missing_ok=True)
    remove_stale_temporaries(folder)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return rows
