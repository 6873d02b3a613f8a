"""``index --engine ray``: the files hashed by Ray tasks, classified into Parquet shards by the engine
of ``ray_engine.py``, then bulk-loaded into the archive through the local indexer's ``write_batch``, so
both engines write the same rows for the same images. Leftover shards of a killed run are loaded first."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from . import check_engine
from . import parquet as pqt
from .ray_engine import (
    RayOptions,
    _data_context,
    _path_blocks,
    classify_to_shards,
    hash_files,
    ray_session,
    settings_for,
)


def shard_folder(engine) -> Path:
    """Where ``index --engine ray`` keeps its shards until they are in the database: beside a SQLite
    file (``archive.db.shards/``), else ``.marsvision-shards/<hash of the URL>/`` in the working folder."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(f"{url.database}.shards")
    key = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
    return Path(".marsvision-shards") / key


def hash_all(paths: list[str], opts: RayOptions) -> dict[str, tuple[str | None, int | None, str | None]]:
    """path → (sha256, size, reason it could not be read), hashed by Ray tasks next to the data."""
    import ray.data

    out = {}
    with _data_context(tolerate_errors=False):
        ds = ray.data.from_arrow(_path_blocks(paths, 256)).map_batches(
            hash_files, batch_size=256, batch_format="pyarrow", num_cpus=opts.read_cpus
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                out[row["path"]] = (row["sha256"], row["size_bytes"], row["error"])
    return out


def load_shards(engine, clf, model_id: int, folder: Path, settings: dict, cfg, report, write_batch, known) -> set[str]:
    """Bulk-load every shard in ``folder`` into the database, then delete it: ``cfg.batch_size`` rows a
    transaction, through the local indexer's ``write_batch``. Contents already in the database are left
    out (loaded before a kill), or with ``cfg.reclassify`` given the shard's prediction. A shard of
    another model or top-k is dropped (its images are classified again). A kill mid-shard rolls back
    its transaction; the shard stays. Returns the contents written."""
    from ..archive.db import sessions

    make = sessions(engine)
    written: set[str] = set()
    for shard in pqt.shards(folder):
        try:
            if pqt.settings_of(shard) != settings:
                shard.unlink()
                continue
            rows = pqt.to_predictions(pqt.pq().read_table(shard))
        except FileNotFoundError:  # loaded and removed meanwhile by another run on this database
            continue
        in_db = known(engine, [sha for _, sha, _ in rows if sha])
        for start in range(0, len(rows), max(1, cfg.batch_size)):
            items = [
                (p.source, sha, size, in_db.get(sha), p)
                for p, sha, size in rows[start : start + cfg.batch_size]
                if cfg.reclassify or sha not in in_db
            ]
            if items:
                with make.begin() as session:
                    write_batch(session, items, clf, model_id, report)
            written.update(sha for _, sha, *_ in items)
        shard.unlink(missing_ok=True)
    pqt.remove_stale_temporaries(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return written


def index_files_ray(
    engine,
    clf,
    model_id: int,
    model_path: str | os.PathLike,
    files: list[Path],
    cfg,
    report,
    progress: bool,
    write_batch,
    known,
    opts: RayOptions | None = None,
) -> None:
    """`marsvision index --engine ray`: what ``archive.index.index_files`` does, on Ray.

    Leftover shards of a killed run are loaded first; then the files are hashed (Ray tasks) and, as
    locally, unreadable files are reported, repeated contents and contents already in the database
    skipped (classified again with ``--reclassify``); the rest are classified into shards, which are then
    bulk-loaded. ``write_batch`` and ``known`` are the local indexer's (passed in: no import circle).
    A killed ``--reclassify`` run, run again, classifies every image again: rows are updated, never
    duplicated."""
    check_engine(cfg.engine)
    if cfg.engine != "ray":
        raise ValueError(f"index_files_ray needs --engine ray, not {cfg.engine!r}")
    opts = opts or RayOptions()
    if cfg.threads:
        opts.actor_threads = cfg.threads
    folder = shard_folder(engine)
    settings = settings_for(model_path, cfg.top_k)
    with ray_session(cfg.ray_address):
        resumed = load_shards(engine, clf, model_id, folder, settings, cfg, report, write_batch, known)
        paths = [str(f) for f in files]
        hashed = hash_all(paths, opts) if paths else {}
        seen: dict[str, str] = {}
        for path in paths:  # the local indexer's order: the first path of a content wins
            sha, _, why = hashed[path]
            if why is not None:
                report.failed.append((path, why))
            elif sha in seen:
                report.skipped += 1
            else:
                seen[sha] = path
        in_db = known(engine, list(seen))  # a leftover shard's images count as indexed, not as skipped
        todo = [path for sha, path in seen.items() if cfg.reclassify or sha not in in_db]
        if not cfg.reclassify:
            report.skipped += sum(sha in in_db and sha not in resumed for sha in seen)
        writer = pqt.ShardWriter(folder, settings, rows_per_shard=opts.shard_rows)
        if todo:
            classify_to_shards(todo, model_path, settings, writer, opts, cfg.top_k, 0.0, "cpu", progress)
    load_shards(engine, clf, model_id, folder, settings, cfg, report, write_batch, known)
