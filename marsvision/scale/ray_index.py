"""``index --engine ray``: the archive's ``IndexJob`` on Ray (``RAY``). Its files are hashed once, by Ray
tasks next to the data, then checked against the database by the archive; the files to do are
classified into Parquet shards by the pipeline of ``ray_engine.py``, whose read tasks take the job's
hashes instead of hashing again, then bulk-loaded through ``IndexJob.write``, so both engines write the
same rows for the same images. Leftover shards of a killed run are loaded first."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from ..archive.index import IndexEngine
from ..files import sha256_file
from . import parquet as pqt
from .ray_engine import RayOptions, _data_context, _path_blocks, classify_to_shards, ray_session, settings_for


def shard_folder(engine) -> Path:
    """Where ``index --engine ray`` keeps its shards until they are in the database: beside a SQLite
    file (``archive.db.shards/``), else ``.marsvision-shards/<hash of the URL>/`` in the working folder."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(f"{url.database}.shards")
    key = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
    return Path(".marsvision-shards") / key


def _hash_task(batch):
    """Ray task: paths → (path, sha256, size_bytes, error), with the local engine's reasons
    (``e.strerror``) for files it cannot read."""
    pa = pqt.pa()
    rows = []
    for path in batch.column("path").to_pylist():
        try:
            rows.append((path, *sha256_file(path), None))
        except OSError as e:
            rows.append((path, None, None, e.strerror or type(e).__name__))
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    names, types = ("path", "sha256", "size_bytes", "error"), (pa.string(), pa.string(), pa.int64(), pa.string())
    return pa.table({n: pa.array(c, t) for n, c, t in zip(names, cols, types, strict=True)})


def hash_files(files: list[Path], cfg, opts: RayOptions | None = None) -> list[tuple[str, int] | str]:
    """``archive.index.hash_files`` on Ray: (sha256, size) per file, or the reason it could not be read."""
    import ray.data

    opts = opts or RayOptions()
    out = {}
    with ray_session(cfg.ray_address), _data_context(tolerate_errors=False):
        ds = ray.data.from_arrow(_path_blocks([str(f) for f in files], 256)).map_batches(
            _hash_task, batch_size=256, batch_format="pyarrow", num_cpus=opts.read_cpus
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                out[row["path"]] = row["error"] or (row["sha256"], row["size_bytes"])
    return [out[str(f)] for f in files]


def load_shards(job, folder: Path, settings: dict) -> set[str]:
    """Bulk-load every shard in ``folder`` into the database, then delete it: ``batch_size`` rows a
    transaction, through ``job.write``. Contents already in the database are left out (loaded before a
    kill), or with ``reclassify`` given the shard's prediction. A shard of another model or top-k is
    dropped (its images are classified again). A kill mid-shard rolls back its transaction; the shard
    stays. Returns the contents written."""
    cfg = job.options
    written: set[str] = set()
    for shard in pqt.shards(folder):
        try:
            if pqt.settings_of(shard) != settings:
                shard.unlink()
                continue
            rows = pqt.to_predictions(pqt.pq().read_table(shard))
        except FileNotFoundError:  # loaded and removed meanwhile by another run on this database
            continue
        in_db = job.known([sha for _, sha, _ in rows if sha])
        for start in range(0, len(rows), max(1, cfg.batch_size)):
            items = [
                (p.source, sha, size, in_db.get(sha), p)
                for p, sha, size in rows[start : start + cfg.batch_size]
                if cfg.reclassify or sha not in in_db
            ]
            if items:
                job.write(items)
            written.update(sha for _, sha, *_ in items)
        shard.unlink(missing_ok=True)
    pqt.remove_stale_temporaries(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return written


def run_ray(job, opts: RayOptions | None = None) -> None:
    """The Ray engine for an ``archive.index.IndexJob``: what ``archive.index.run_local`` does, on Ray.

    Leftover shards of a killed run are loaded first (their images then count as indexed and are not
    classified again); the job's other files are classified into shards, which are then bulk-loaded.
    A killed ``--reclassify`` run, run again, classifies every image again: rows are updated, never
    duplicated."""
    cfg = job.options
    opts = opts or RayOptions()
    if cfg.threads:
        opts.actor_threads = cfg.threads
    folder = shard_folder(job.db)
    settings = settings_for(job.model_path, cfg.top_k)
    with ray_session(cfg.ray_address):
        resumed = load_shards(job, folder, settings)
        todo = [t for t in job.todo if cfg.reclassify or t.sha256 not in resumed]
        writer = pqt.ShardWriter(folder, settings, rows_per_shard=opts.shard_rows)
        if todo:
            hashes = {str(t.path): (t.sha256, t.size) for t in todo}
            classify_to_shards(
                list(hashes), job.model_path, settings, writer, opts, cfg.top_k, progress=job.progress, hashes=hashes
            )
    load_shards(job, folder, settings)


# The Ray engine of ``marsvision index --engine ray`` (the CLI runs it inside one ``ray_session``).
RAY = IndexEngine(hash_files, run_ray)
