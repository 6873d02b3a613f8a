"""What one app holds for its life: the database, the active model (reloaded when another version is
activated), the similarity index, the search counts, the heatmap cache and the heatmap slots."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import anyio
from sqlalchemy.engine import Engine

from ..archive.db import ModelVersion, sessions
from ..archive.locks import archive_lock
from ..archive.queries import CountCache
from ..archive.vectors import open_vector_index
from ..archive.versions import active_version, ensure_active
from ..inference.classifier import Classifier
from ..inference.predict import load_model
from .lru import LockedLRU
from .settings import Settings

MODEL_CHECK = 2.0  # seconds between looks at which model version is active
SEARCH_THREADS = 2  # searches at once (the rest queue)
HEATMAP_CACHE = 128  # heatmap PNGs kept in memory (~60 KB each)


@dataclass(frozen=True)
class ActiveModel:
    """The active version's row and its loaded classifier."""

    version: ModelVersion
    classifier: Classifier


class ArchiveState:
    def __init__(self, settings: Settings, engine: Engine):
        self.settings, self.engine, self.sessions = settings, engine, sessions(engine)
        self.vectors = open_vector_index(engine, settings.vector_index)  # similar images: pgvector or a file
        self.counts = CountCache()
        # Facet counts and timelines of recent filters, as the search totals (a timeline is ~26 000 numbers).
        self.browse = CountCache(size=64)
        # Computing a heatmap takes 0.2-1 s and the page asks for the same ones again.
        self.heatmaps: LockedLRU[bytes] = LockedLRU(HEATMAP_CACHE)
        self.heatmap_slots = threading.BoundedSemaphore(max(1, settings.classify_slots))  # they run the model too
        # Searches run SEARCH_THREADS at a time and the rest wait their turn: 40 threads taking turns
        # at the GIL cost more CPU and make the slowest searches slower (measured: benchmarks/serve.py).
        self.searches = anyio.CapacityLimiter(SEARCH_THREADS)
        self._lock = threading.Lock()
        self._active: ActiveModel | None = None
        self._checked = 0.0  # when the active version was last read from the database
        with archive_lock(engine), self.sessions.begin() as s:
            ensure_active(s)

    def model(self) -> ActiveModel:
        """The active version and its classifier; loads it when it changed. The database is asked at most
        every ``MODEL_CHECK`` seconds (another process may activate a version)."""
        with self._lock:
            if self._active is not None and time.monotonic() - self._checked < MODEL_CHECK:
                return self._active
        with self.sessions() as s:
            mv = active_version(s)
        with self._lock:
            self._checked = time.monotonic()
            old = self._active
            if old is None or old.version.id != mv.id:
                self._active = ActiveModel(mv, load_model(mv.path, threads=self.settings.threads))
                if old is not None:
                    old.classifier.close()
            else:
                self._active = ActiveModel(mv, old.classifier)
            return self._active

    def changed(self) -> None:
        """After a write: counts and the active version are read again."""
        self.counts.clear()
        self.browse.clear()
        self._checked = 0.0

    def close(self) -> None:
        with self._lock:
            active, self._active = self._active, None
        if active is not None:
            active.classifier.close()
