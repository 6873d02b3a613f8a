"""Similar images on a vector index: the images whose similarity sketches (records.sketch: 64 unit numbers,
float16) have the largest dot products with an image's own, among those matching the search filters.

Two back ends, one interface (``VectorIndex.similar``), chosen by ``open_vector_index``:

- PostgreSQL with pgvector (archive/pgvector.py): an HNSW index in the database, the filters in the same
  query; always in step with the table, since a trigger fills the vector column in the writing transaction.
- Everything else (SQLite; PostgreSQL without the extension): ``FileIndex``, an HNSW graph (usearch) in a
  file beside the database, kept in step with the table as described there.

Every candidate is scored exactly (float32 over the stored float16 numbers) from a memory-mapped matrix of
the sketches beside the graph (archive/sketch_matrix.py). A filtered search first counts, up to
``EXACT_MAX``, the rows that match (one indexed query): when that few match, they are all scored exactly,
so the answer is the exact one; when more match, the graph's candidates are checked against the filter in
SQL (``Filters``, as /api/images applies it), widening until k match, and a filter whose matches the graph
does not reach by ``WIDEN_MAX`` candidates is scored exactly over all its rows, in chunks.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from ..atomic import atomic_save
from .db import ImageVectors, ModelVersion
from .queries import Filters, own_sketch
from .records import SKETCH_DIMS
from .similar_filters import best, few_matching, has_filters, matching, matching_chunks
from .sketch_matrix import SketchMatrix

CONNECTIVITY = 16  # HNSW's M
EF_ADD = 128  # graph quality at build: recall@10 0.998 at ef 64 (benchmarks/results/vector_index.md)
EF_SEARCH = 512  # recall@10 0.970 at 128, 0.993 at 512 on the serve benchmark's sketches (3000 rows)
# A filter matching at most this many rows is scored exactly over them (capped count, ids, one matrix
# product): at a million rows ~30 ms for 18 000 rows under a shared machine's load, where widening the
# graph's candidates costs ~25 µs a candidate checked in SQL and, when the filter's rows lie away from
# the image, reaches none of them (benchmarks/results/similar_1m.md).
EXACT_MAX = 20_000
WIDEN_MAX = 2048  # graph candidates at most before a filter's rows are all scored exactly
DELTA_MAX = 20_000  # rows searched exactly beside the file before it is rewritten with them
RECOUNT = 60.0  # seconds between counts of the table (a count finds deleted or rewritten rows)
READ_CHUNK = 20_000
RERANK = 4  # graph candidates re-scored exactly per wanted one
INDEX_ENV = "MARSVISION_VECTOR_INDEX"  # the index file's folder, when not given


class VectorIndex(Protocol):
    def similar(
        self, session: Session, image_id: int, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """(image id, similarity) of the ``k`` images nearest to ``image_id`` that match ``filters``, best first."""

    def sync(self, session: Session) -> None:
        """Take in the rows committed since the index last looked (after a write; a no-op where the index is
        always in step)."""


def usearch_index():
    """usearch's ``Index`` class, imported after onnxruntime: the other order crashes the process
    (``import usearch.index; import onnxruntime`` is a segmentation fault with usearch 2.26 and onnxruntime
    1.2x on Linux x86-64, reproduced here; onnxruntime first is fine), and the server loads its model lazily."""
    import onnxruntime  # noqa: F401  (for the import order only)
    from usearch.index import Index

    return Index


def features_source(session: Session) -> str:
    """What computed the stored features (and so the sketches): the active version's ``features_from``; a
    refit shares its parent's, so activating it keeps the index."""
    mv = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
    return "" if mv is None else str(mv.info.get("features_from") or mv.version)


@dataclass(frozen=True)
class Watermark:
    """Which rows an index file covers: every image_vectors row with an id up to ``max_id`` (``count`` of
    them) of the features of ``source``. It is in the file's name, so file and watermark are written by
    one rename."""

    source: str
    max_id: int
    count: int

    def name(self) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.source)}.{self.max_id}.{self.count}.usearch"

    def sketches_name(self) -> str:
        """The name of the memory-mapped sketches file that goes with the graph file (sketch_matrix.py)."""
        return self.name().removesuffix(".usearch") + ".sketches.npy"

    @classmethod
    def parse(cls, path: Path, source: str) -> Watermark | None:
        m = re.fullmatch(r"(.*)\.(\d+)\.(\d+)\.usearch", path.name)
        if not m or m.group(1) != re.sub(r"[^A-Za-z0-9_.-]", "_", source):
            return None
        return cls(source, int(m.group(2)), int(m.group(3)))


def default_folder(db_url: str) -> Path:
    """``$MARSVISION_VECTOR_INDEX``, else beside a SQLite file (``x.db`` → ``x.db.vectors/``), else
    ./marsvision-vectors/<host>-<port>-<database>."""
    if os.environ.get(INDEX_ENV):
        return Path(os.environ[INDEX_ENV]).resolve()
    url = make_url(db_url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().with_name(Path(url.database).name + ".vectors")
    return Path("marsvision-vectors", f"{url.host or 'local'}-{url.port or ''}-{url.database or 'db'}").resolve()


def read_rows(session: Session, after: int, upto: int | None = None, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(ids, sketches as ``dtype``) of the committed rows with ``after`` < id (≤ ``upto``), in id order."""
    ids, blobs, last = [], [], after
    while True:
        q = select(ImageVectors.image_id, ImageVectors.sketch).where(ImageVectors.image_id > last)
        if upto is not None:
            q = q.where(ImageVectors.image_id <= upto)
        rows = session.execute(q.order_by(ImageVectors.image_id).limit(READ_CHUNK)).all()
        ids += [r[0] for r in rows]
        blobs += [r[1] for r in rows]
        if len(rows) < READ_CHUNK:
            break
        last = rows[-1][0]
    matrix = np.frombuffer(b"".join(blobs), "<f2").reshape(len(ids), SKETCH_DIMS).astype(dtype)
    return np.array(ids, np.int64), matrix


class FileIndex:
    """An HNSW graph of the sketches (usearch) in a file of ``folder``, memory-mapped (every server process
    shares the pages), plus the rows committed after it, searched exactly in memory.

    Kept in step with the table, a kill never leaving the file ahead of it:

    - it is built only from committed rows (what a session reads), and its name carries the watermark of
      the rows it holds (``Watermark``); it is written beside its final name and renamed (marsvision.atomic);
    - on load, and whenever the table's largest id grows, the rows after the watermark are read into the
      in-memory part; past ``DELTA_MAX`` of them the file is rewritten with them (``sync``);
    - a file is stale, and rebuilt from the table, when the features' source changed (another model's
      features) or the rows up to its watermark no longer number its count (rows deleted or replaced);
      a missing file is built.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self.index = None  # usearch.Index, viewed from the file
        self.mark: Watermark | None = None
        self.delta_ids = np.zeros(0, np.int64)
        self.delta = np.zeros((0, SKETCH_DIMS), np.float32)
        self.matrix = SketchMatrix.empty()  # the graph's rows' sketches, memory-mapped
        self._top = None  # (source, largest id) as last seen
        self._counted = 0.0

    # ---------------------------------------------------------------------------------------- keeping in step

    def _table_top(self, session: Session) -> tuple[str, int]:
        return features_source(session), session.scalar(select(func.max(ImageVectors.image_id))) or 0

    def _count_upto(self, session: Session, max_id: int) -> int:
        return session.scalar(select(func.count()).where(ImageVectors.image_id <= max_id)) or 0

    def _files(self, source: str) -> list[tuple[Watermark, Path]]:
        found = []
        if self.folder.is_dir():
            for p in self.folder.glob("*.usearch"):
                mark = Watermark.parse(p, source)
                if mark is not None:
                    found.append((mark, p))
        return sorted(found, key=lambda mp: mp[0].max_id)

    def _write(self, ids: np.ndarray, matrix: np.ndarray, mark: Watermark, base: Watermark | None = None) -> Path:
        """The files for ``mark``: ``base``'s graph (loaded into memory) and sketches with ``ids`` added, else
        new ones. The sketches first, the graph last: a graph file on disk always has its sketches (a kill
        between the two leaves sketches without a graph, which the next load removes)."""
        Index = usearch_index()  # noqa: N806
        old = SketchMatrix.open(self.folder / base.sketches_name()) if base is not None else None
        if base is None or old is not None:
            parts = ([] if old is None else [(old.ids, old.records["sketch"])]) + [(ids, matrix)]
            SketchMatrix.write(self.folder / mark.sketches_name(), parts)
        del old  # unmapped before the base's file goes
        if base is not None:
            idx = Index.restore(str(self.folder / base.name()))
        else:
            idx = Index(ndim=SKETCH_DIMS, metric="ip", dtype="f16", connectivity=CONNECTIVITY, expansion_add=EF_ADD)
        if len(ids):
            idx.add(ids.astype(np.uint64), matrix, threads=os.cpu_count() or 1)
        path = self.folder / mark.name()
        atomic_save(lambda tmp: idx.save(tmp), path)
        return path

    def _prune(self, keep: Watermark) -> None:
        # A process that has an older file mapped keeps reading it: Linux frees it when unmapped.
        for p in [*self.folder.glob("*.usearch"), *self.folder.glob("*.sketches.npy")]:
            if p.name not in (keep.name(), keep.sketches_name()):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _load(self, session: Session, source: str) -> None:
        """Open the newest valid file (building one when none is) and its sketches (written from the table
        when missing: an index file from before they existed), then read the rows after it."""
        Index = usearch_index()  # noqa: N806

        chosen = None
        for mark, path in reversed(self._files(source)):
            if self._count_upto(session, mark.max_id) == mark.count:
                chosen = (mark, path)
                break
        if chosen is None:
            ids, matrix = read_rows(session, 0)
            if not len(ids):  # nothing to index yet: no file, every later row in memory until there are some
                self.index, self.mark, self._counted = None, Watermark(source, 0, 0), time.monotonic()
                self.matrix = SketchMatrix.empty()
                self.delta_ids, self.delta = ids, matrix
                return
            mark = Watermark(source, int(ids[-1]), len(ids))
            chosen = (mark, self._write(ids, matrix, mark))
            del ids, matrix
        mark, path = chosen
        self._prune(mark)
        index = Index.restore(str(path), view=True)
        if index is None:  # unreadable (not a usearch file): start again
            path.unlink()
            return self._load(session, source)
        matrix = SketchMatrix.open(self.folder / mark.sketches_name())
        if matrix is None or len(matrix) != mark.count:
            SketchMatrix.write(self.folder / mark.sketches_name(), [read_rows(session, 0, mark.max_id, np.float16)])
            matrix = SketchMatrix.open(self.folder / mark.sketches_name())
        self.index, self.mark, self.matrix = index, mark, matrix
        self.index.expansion_search = EF_SEARCH
        self.delta_ids, self.delta = read_rows(session, mark.max_id)
        self._counted = time.monotonic()

    def refresh(self, session: Session) -> None:
        """Bring the index in step with what ``session`` sees: one indexed query when nothing changed."""
        top = self._table_top(session)
        with self._lock:
            if top == self._top and time.monotonic() - self._counted < RECOUNT:
                return
            stale = self.mark is None or self.mark.source != top[0]
            if not stale and time.monotonic() - self._counted >= RECOUNT:
                stale = self._count_upto(session, self.mark.max_id) != self.mark.count
                self._counted = time.monotonic()
            if stale:
                self._load(session, top[0])
            else:
                last = int(self.delta_ids[-1]) if len(self.delta_ids) else self.mark.max_id
                ids, matrix = read_rows(session, last)
                if len(ids):
                    self.delta_ids = np.concatenate([self.delta_ids, ids])
                    self.delta = np.concatenate([self.delta, matrix])
            self._top = top
            if len(self.delta_ids) > DELTA_MAX:  # the exact part grows slow: into the graph with them
                self._compact()
                self._load(session, top[0])
                self._top = top

    def _compact(self) -> None:
        """Write the in-memory rows into a new file (lock held); the next refresh opens it."""
        mark = Watermark(self.mark.source, int(self.delta_ids[-1]), self.mark.count + len(self.delta_ids))
        base = self.mark if (self.folder / self.mark.name()).exists() else None
        self.matrix = SketchMatrix.empty()  # unmapped: the base's files may go
        self._write(self.delta_ids, self.delta, mark, base)
        self._top, self.index, self.mark = None, None, None

    def sync(self, session: Session) -> None:
        """Bring the index in step and write the rows held in memory into the file (the indexer calls this
        after its last commit)."""
        self.refresh(session)
        with self._lock:
            if len(self.delta_ids):
                self._compact()
        self.refresh(session)

    # -------------------------------------------------------------------------------------------- searching

    def _nearest(self, q: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities) of about ``count`` nearest rows: the graph's plus the in-memory rows'."""
        ids, sims = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.index is not None and len(self.index):
            # Re-scored exactly (float32 over the stored float16 numbers): the graph ranks in float16
            # arithmetic, and near ties at a million rows are within its rounding.
            self.index.expansion_search = max(EF_SEARCH, count)
            m = self.index.search(q, count, threads=1)
            ids, sims = self.matrix.score(np.asarray(m.keys, np.int64), q)
        if len(self.delta_ids):
            ids = np.concatenate([ids, self.delta_ids])
            sims = np.concatenate([sims, np.dot(self.delta, q)])
        order = np.argsort(-sims, kind="stable")[:count]
        return ids[order], sims[order]

    def _exact(self, wanted: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows ``wanted`` (ids), scored exactly: their sketches from the memory-mapped matrix or the
        in-memory rows (an id in neither, an image without a vector, is left out)."""
        ids, sims = self.matrix.score(wanted, q)
        if len(self.delta_ids):
            extra = wanted[np.isin(wanted, self.delta_ids)]
            where = np.searchsorted(self.delta_ids, extra)
            ids = np.concatenate([ids, extra])
            sims = np.concatenate([sims, np.dot(self.delta[where], q)])
        return ids, sims

    def similar(
        self, session: Session, image_id: int, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        q = own_sketch(session, image_id)
        if q is None:
            return []
        self.refresh(session)
        filtered = has_filters(filters)
        if filtered:
            wanted = few_matching(session, filters, EXACT_MAX)
            if wanted is not None:  # few match: all of them, scored exactly
                with self._lock:
                    ids, sims = self._exact(wanted, q)
                return list(zip(*(a.tolist() for a in best(ids, sims, k, image_id)), strict=True))
        with self._lock:
            total = (len(self.index) if self.index is not None else 0) + len(self.delta_ids)
        count = min(total, RERANK * (k + 1))  # candidates, re-scored exactly; widened for a filter
        checked: dict[int, bool] = {}  # candidate id -> matches the filter (each asked of SQL once)
        while True:
            with self._lock:  # the graph's search depth is set per call; SQL runs outside the lock
                ids, sims = self._nearest(q, count)
            if filtered:
                new = [int(i) for i in ids if int(i) not in checked and i != image_id]
                keep = matching(session, new, filters)
                checked.update((i, i in keep) for i in new)
            found = [
                (int(i), float(s))
                for i, s in zip(ids, sims, strict=True)
                if i != image_id and (not filtered or checked.get(int(i)))
            ]
            if len(found) >= k or count >= total:
                return found[:k]
            # Enough candidates for k at the share that matched so far, with a margin. Past WIDEN_MAX the
            # filter's matches lie beyond the graph's neighbourhood of this image (a label unlike it):
            # checking a candidate in SQL costs ~25 µs at a million rows, scoring a matching row ~2 µs.
            need = int(1.5 * (k + 1) * count / len(found)) if found else 4 * count
            if count >= WIDEN_MAX:
                break
            count = min(total, WIDEN_MAX, max(2 * count, need))
        # Every matching row scored exactly, a chunk of ids at a time (bounded memory); ids from the images
        # table alone (its indexes answer most filters without reading the rows).
        top_ids, top_sims = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for chunk in matching_chunks(session, filters):
            with self._lock:
                ids, sims = self._exact(chunk, q)
            top_ids, top_sims = best(np.concatenate([top_ids, ids]), np.concatenate([top_sims, sims]), k, image_id)
        return list(zip(top_ids.tolist(), top_sims.tolist(), strict=True))


def open_vector_index(engine: Engine, folder: str | os.PathLike | None = None) -> VectorIndex:
    """pgvector's HNSW index when the database has it (migration 0005 made it), else a ``FileIndex`` in
    ``folder`` (default: ``default_folder``)."""
    from .pgvector import PgVectorIndex, has_pgvector

    if engine.dialect.name == "postgresql" and has_pgvector(engine):
        return PgVectorIndex()
    return FileIndex(folder or default_folder(engine.url.render_as_string(hide_password=False)))
