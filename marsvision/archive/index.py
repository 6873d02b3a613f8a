"""`marsvision index`: classify image files and folders into the archive's database, one row per image.

Files are hashed first: an image whose content (SHA-256) is already in the archive is skipped (or, with
``reclassify``, labelled again by the active model). New images are classified by the archive's active
model and written in batches, one transaction each: a kill loses at most the batch in flight, never
leaves half a row, and a rerun finishes the job with every image exactly once. The archive plans the
run (an ``IndexJob``); an engine runs it: ``run_local`` here, or the Ray engine
(``marsvision.scale.ray_index.RAY``); the CLI picks one. An unreadable image is
stored with its reason and named on stderr; it never stops the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from tqdm import tqdm

from ..errors import UsageError
from ..files import sha256_file
from ..inference.classifier import Classifier, Prediction, expand_sources
from ..inference.predict import load_model
from .db import DB_HELP, Image, ImageVectors, ModelVersion, open_engine, sessions, utcnow
from .locks import archive_lock
from .records import VECTORS, image_rows, prediction_columns
from .rescore import rescore_rows, vector_rows
from .versions import VersionError, active_version, ensure_active


@dataclass
class IndexConfig:
    """Classify images (files, folders, recursively) into the archive database, one row per image."""

    db: str = field(default="", metadata={"help": DB_HELP})
    model: str = field(
        default="",
        metadata={
            "help": "model for a new archive (default: the bundled model); later runs use the archive's active model"
        },
    )
    reclassify: bool = field(
        default=False, metadata={"help": "label images already in the archive again with the active model"}
    )
    batch_size: int = field(default=64, metadata={"help": "images written per transaction"})
    threads: int = field(default=0, metadata={"help": "CPU threads for decoding and the model (0: all)"})
    top_k: int = field(default=5, metadata={"help": "most likely classes stored per image"})
    engine: str = field(
        default="local",
        metadata={
            "help": (
                "local: this process; ray: a Ray cluster (classify into Parquet shards, "
                "then a bulk load; the same rows; needs pip install 'marsvision[ray]'; "
                "docs/scaling.md)"
            )
        },
    )
    ray_address: str = field(
        default="",
        metadata={
            "help": "Ray cluster for --engine ray, e.g. auto or ray://head:10001 (default: start a local Ray instance)"
        },
    )


@dataclass
class IndexReport:
    files: int = 0
    indexed: int = 0
    reclassified: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable or unhashable
    seconds: float = 0.0
    model: str = ""

    def summary(self) -> str:
        rate = (self.indexed + self.reclassified) / max(self.seconds, 1e-9)
        return (
            f"{self.files} files: {self.indexed} indexed, {self.reclassified} reclassified, {self.skipped} "
            f"already in the archive, {len(self.failed)} unreadable ({rate:.0f} img/s, model {self.model})"
        )


def hash_files(files: list[Path], cfg: IndexConfig) -> list[tuple[str, int] | str]:
    """(sha256, size) per file, or the reason it could not be read (``e.strerror``): a thread pool here."""
    threads = cfg.threads or 4

    def one(f):
        try:
            return sha256_file(f)
        except OSError as e:
            return e.strerror or type(e).__name__

    with ThreadPoolExecutor(max(2, threads)) as pool:
        return list(pool.map(one, files))


def _insert(session):
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def insert_new(session, rows: list[dict]) -> None:
    """Insert image rows (``records.image_rows``) and their vectors, leaving out contents another indexer
    wrote meanwhile (a race, never a duplicate)."""
    insert = _insert(session)
    images = [{k: v for k, v in r.items() if k not in VECTORS} for r in rows]
    new = session.execute(
        insert(Image).on_conflict_do_nothing(index_elements=["sha256"]).returning(Image.id, Image.sha256), images
    ).all()
    ids = dict((sha, i) for i, sha in new)
    vectors = [
        {"image_id": ids[r["sha256"]], **{k: r[k] for k in VECTORS}}
        for r in rows
        if r["sha256"] in ids and r["features"] is not None
    ]
    if vectors:
        session.execute(insert(ImageVectors), vectors)


def replace_vectors(session, rows: list[dict]) -> None:
    """Write the vectors of existing images (``image_id`` + ``records.VECTORS``), replacing any."""
    insert = _insert(session)
    rows = [r for r in rows if r["features"] is not None]
    if rows:
        stmt = insert(ImageVectors)
        session.execute(
            stmt.on_conflict_do_update(index_elements=["image_id"], set_={k: stmt.excluded[k] for k in VECTORS}), rows
        )


def write_batch(session, items: list[tuple], clf: Classifier, model_id: int, report: IndexReport) -> None:
    """Write one batch of classified images, ``(path, sha256, size, image id or None, prediction)`` each:
    new contents are inserted (``insert_new``), those with an id (``--reclassify``) get the new
    prediction columns and vectors. Both engines write through here (``IndexJob.write``), so their rows
    are the same."""
    report.failed += [(str(path), p.error) for path, *_, p in items if not p.ok]
    rows = image_rows([(path, sha, size, p) for path, sha, size, _, p in items], clf, model_id)
    new = [row for row, item in zip(rows, items, strict=True) if item[3] is None]
    again = [(item[3], row, item[4]) for row, item in zip(rows, items, strict=True) if item[3] is not None]
    if new:
        insert_new(session, new)
    if again:
        now = utcnow()
        session.execute(
            update(Image), [{"id": i, **prediction_columns(p, clf, model_id), "indexed_at": now} for i, _, p in again]
        )
        replace_vectors(session, [{"image_id": i, **{k: row[k] for k in VECTORS}} for i, row, _ in again])
    report.indexed += len(new)
    report.reclassified += len(again)


class ToIndex(NamedTuple):
    path: Path
    sha256: str
    size: int
    image_id: int | None  # set when the content is in the archive already (``--reclassify``)


@dataclass
class IndexJob:
    """One ``index`` run, planned by the archive and run by an engine (``run_local`` here; the Ray engine
    in ``marsvision.scale.ray_index``): the files to classify, already hashed once and checked against
    the archive, the model, the database and the options. An engine classifies ``todo`` and hands each
    batch to ``write``; ``known`` tells it which contents the database holds by then."""

    db: Engine
    clf: Classifier
    model_id: int
    model_path: str
    todo: list[ToIndex]
    options: IndexConfig
    report: IndexReport
    progress: bool
    _active_clf: tuple[int, Classifier] | None = None  # a version activated during the run, loaded

    def known(self, hashes: list[str]) -> dict[str, int]:
        """sha256 → image id of those already in the archive."""
        found: dict[str, int] = {}
        with self.db.connect() as conn:
            for i in range(0, len(hashes), 500):
                rows = conn.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(hashes[i : i + 500])))
                found.update(dict(rows.all()))
        return found

    def write(self, items: list[tuple[str | Path, str, int, int | None, Prediction]]) -> None:
        """Write one batch, ``(path, sha256, size, image id or None, prediction)`` each, in one transaction:
        a kill loses at most the batch in flight, never half a row. Under the archive's lock, after any
        activation: when another version became active since the run began, the batch is re-scored with it
        from its vectors before it commits, so every row carries the active version."""
        with archive_lock(self.db), sessions(self.db).begin() as session:
            active = active_version(session)
            write_batch(session, items, self.clf, self.model_id, self.report)
            if active is not None and active.id != self.model_id:
                self._rescore(session, active, [item[1] for item in items])

    def _rescore(self, session, active: ModelVersion, hashes: list[str]) -> None:
        own = session.get(ModelVersion, self.model_id)
        if (own.info.get("features_from") or own.version) != (active.info.get("features_from") or active.version):
            raise VersionError(
                f"{active.version} was activated during this run and cannot read its features; "
                f"rerun `marsvision index PATH --reclassify`"
            )
        if self._active_clf is None or self._active_clf[0] != active.id:
            if self._active_clf is not None:
                self._active_clf[1].close()
            self._active_clf = (active.id, load_model(active.path, threads=self.options.threads or None))
        ids = list(session.scalars(select(Image.id).where(Image.sha256.in_(hashes))))
        rows = vector_rows(session, ids=ids)
        if rows:
            rescore_rows(session, self._active_clf[1], active.id, rows)
        # rows without vectors (unreadable images) carry no label; they move to the active version too
        session.execute(update(Image).where(Image.id.in_(ids)).values(model_id=active.id))

    def close(self) -> None:
        if self._active_clf is not None:
            self._active_clf[1].close()
            self._active_clf = None


def run_local(job: IndexJob) -> None:
    """The local engine: classify ``job.todo`` in this process, ``batch_size`` images a transaction."""
    todo, size = job.todo, job.options.batch_size
    bar = tqdm(total=len(todo), desc="index", unit="img", disable=not job.progress)
    try:
        preds = job.clf.predict_iter([t.path for t in todo], top_k=job.options.top_k)
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            # not strict: the prediction stream runs on past this batch
            job.write([(*t, p) for t, p in zip(chunk, preds, strict=False)])
            bar.update(len(chunk))
    finally:
        bar.close()


@dataclass(frozen=True)
class IndexEngine:
    """How an ``IndexJob`` is hashed and run: ``LOCAL`` here, ``scale.ray_index.RAY`` on a Ray cluster
    (hashed by Ray tasks next to the data). Each file is hashed once, by ``hashes``; ``run`` reuses it."""

    hashes: Callable[[list[Path], IndexConfig], list[tuple[str, int] | str]]
    run: Callable[[IndexJob], None]


LOCAL = IndexEngine(hash_files, run_local)


def plan(
    runner: IndexEngine,
    engine: Engine,
    clf: Classifier,
    model_id: int,
    model_path: str,
    paths: list[str],
    cfg: IndexConfig,
    report: IndexReport,
    progress: bool,
) -> IndexJob:
    """Hash every file once, then leave out unreadable files (reported), repeated contents and contents
    already in the archive (skipped, or kept with their id under ``reclassify``)."""
    files = []
    for source in expand_sources(paths):
        if Path(source).is_file():
            files.append(Path(source).resolve())  # rows keep where the file is, from anywhere
        else:
            report.failed.append((str(source), "file not found"))
    report.files = len(files)
    seen: dict[str, tuple[Path, int]] = {}
    for f, h in zip(files, runner.hashes(files, cfg), strict=True):
        if isinstance(h, str):
            report.failed.append((str(f), h))
        elif h[0] in seen:
            report.skipped += 1  # the same content twice in this run
        else:
            seen[h[0]] = (f, h[1])
    job = IndexJob(engine, clf, model_id, str(model_path), [], cfg, report, progress)
    known = job.known(list(seen))
    job.todo = [
        ToIndex(f, sha, size, known.get(sha)) for sha, (f, size) in seen.items() if cfg.reclassify or sha not in known
    ]
    report.skipped += len(seen) - len(job.todo)
    return job


def sync_vector_index(engine) -> None:
    """Bring the similar-images index in step with the committed rows (a file index writes its file: the
    server then starts without building it; pgvector's is in step already)."""
    from .vectors import open_vector_index

    with sessions(engine)() as session:
        open_vector_index(engine).sync(session)


def run_index(
    paths: list[str],
    cfg: IndexConfig,
    progress: bool | None = None,
    runner: IndexEngine | None = None,
) -> IndexReport:
    """`marsvision index`: plan the job and run it with ``runner`` (default ``LOCAL``; the CLI passes
    ``scale.ray_index.RAY`` for ``--engine ray``); returns the report (unreadable files are named in it)."""
    if runner is None:
        if cfg.engine != "local":
            raise UsageError(f"--engine {cfg.engine!r}: pass its IndexEngine (marsvision.cli picks it), or use local")
        runner = LOCAL
    progress = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()
    engine = open_engine(cfg.db or None)
    with archive_lock(engine), sessions(engine).begin() as session:  # two first runs: one bundled model row
        mv = ensure_active(session, cfg.model or None)
        model_path, model_id, version = mv.path, mv.id, mv.version
    clf = load_model(model_path, threads=cfg.threads or None)
    report = IndexReport(model=version)
    job = None
    try:
        job = plan(runner, engine, clf, model_id, model_path, paths, cfg, report, progress)
        runner.run(job)
        sync_vector_index(engine)
    finally:
        if job is not None:
            job.close()
        clf.close()
        engine.dispose()
        report.seconds = time.perf_counter() - t0
    return report
