"""The archive's REST API and web page (FastAPI), a thin adapter over the library (`marsvision serve` runs
it: server.py).

Reads are open; writes (corrections, stored uploads, activating a model version) need the bearer token
when one is configured and are refused (403) when none is, unless anonymous writes are allowed.
Uploads are capped in size (413), decoded with the decompression-bomb guard (422) and refused with a
message when they are not images (415); classification runs at most ``classify_slots`` at a time, a few more
wait their turn, and beyond that the answer is 503 with Retry-After. Images are served by id, never by a
path from the request.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run time,
# and they refer to names local to create_app.

import asyncio
import csv
import hashlib
import hmac
import io
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from ..atomic import atomic_write
from ..curate.review import DEFAULT_STRATEGY, STRATEGIES
from ..inference.predict import load_model
from ..preprocess import ImageError, load_image
from .db import Correction, Image, sessions, utcnow
from .index import insert_new
from .queries import (
    EXPORT_COLUMNS,
    CountCache,
    Filters,
    SketchIndex,
    class_counts,
    export_rows,
    get_image,
    get_images,
    isoformat,
    search,
)
from .records import image_row
from .rescore import activate
from .review import review_queue
from .versions import VersionError, active_version, ensure_active, find, version_rows

STATIC = Path(__file__).with_name("static")
MODEL_CHECK = 2.0  # seconds between looks at which model version is active
SLOT_WAIT = 0.5  # seconds a classification may wait for a free slot (one frees about every 10 ms)
QUEUE_PER_SLOT = 4  # classifications that may wait per slot
SEARCH_THREADS = 2  # searches at once (the rest queue); see Archive
HEATMAP_CACHE = 128  # heatmap PNGs kept in memory (~60 KB each)
TOKEN_ENV = "MARSVISION_TOKEN"


class LabelIn(BaseModel):
    label: str = Field(min_length=1, max_length=64)
    note: str = Field(default="", max_length=2000)
    author: str = Field(default="", max_length=120)


class Archive:
    """What the app holds: the database, the active model (reloaded when another version is activated),
    the similarity index and the classification slots."""

    def __init__(self, engine: Engine, threads: int | None, classify_slots: int):
        self.engine, self.sessions, self.threads = engine, sessions(engine), threads
        self.sketches = SketchIndex()
        self.heatmap_slots = threading.BoundedSemaphore(max(1, classify_slots))  # heatmaps run the model too
        self._lock = threading.Lock()
        self._model = (None, None)  # (version row id, Classifier)
        self.heatmaps: OrderedDict = OrderedDict()  # (image, label, size, version) → PNG bytes, most recent last
        self.counts = CountCache()
        # Searches run SEARCH_THREADS at a time and the rest wait their turn: 40 threads taking turns
        # at the GIL cost more CPU and make the slowest searches slower (measured: benchmarks/serve.py).
        self.searches = anyio.CapacityLimiter(SEARCH_THREADS)
        self._checked = 0.0  # when the active version was last read from the database
        with self.sessions.begin() as s:
            ensure_active(s)

    def model(self):
        """(version row, Classifier) of the active version; loads it when it changed. The database is
        asked at most every ``MODEL_CHECK`` seconds (another process may activate a version)."""
        with self._lock:
            if self._model[0] is not None and time.monotonic() - self._checked < MODEL_CHECK:
                return self._model_row, self._model[1]
        with self.sessions() as s:
            mv = active_version(s)
        with self._lock:
            self._checked = time.monotonic()
            if self._model[0] != mv.id:
                old = self._model[1]
                self._model = (mv.id, load_model(mv.path, threads=self.threads))
                if old is not None:
                    old.close()
            self._model_row = mv
            return mv, self._model[1]

    def changed(self) -> None:
        """After a write: counts and the active version are read again."""
        self.counts.clear()
        self._checked = 0.0


class ClassificationSlots:
    """ASGI middleware: a classification holds one of ``slots`` from before its upload is read. Waiting
    requests queue in arrival order, at most ``QUEUE_PER_SLOT`` per slot and ``SLOT_WAIT`` seconds each;
    beyond either, 503 with Retry-After at once, without the body going through the multipart parser.
    Every other request passes straight through."""

    def __init__(self, app, slots: int):
        self.app, self.free = app, asyncio.Semaphore(slots)
        self.limit = slots * (1 + QUEUE_PER_SLOT)  # running + waiting
        self.admitted = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/api/classify":
            return await self.app(scope, receive, send)
        busy = JSONResponse(
            {"detail": "busy classifying; retry shortly"}, status_code=503, headers={"Retry-After": "1"}
        )
        if self.admitted >= self.limit:
            return await busy(scope, receive, send)
        self.admitted += 1  # counted before any await: the event loop runs one request at a time here
        try:
            try:
                await asyncio.wait_for(self.free.acquire(), SLOT_WAIT)  # asyncio.Semaphore wakes waiters FIFO
            except TimeoutError:
                return await busy(scope, receive, send)
            try:
                await self.app(scope, receive, send)
            finally:
                self.free.release()
        finally:
            self.admitted -= 1


def create_app(
    engine: Engine,
    token: str | None = None,
    allow_anonymous_writes: bool = False,
    max_upload_bytes: int = 20 * 2**20,
    classify_slots: int = 2,
    threads: int | None = None,
) -> FastAPI:
    archive = Archive(engine, threads, classify_slots)
    app = FastAPI(
        title="marsvision archive",
        version="1",
        description="Search, browse and correct classified Curiosity (MSL) images.",
    )
    app.state.archive = archive

    def writer(request: Request) -> str:
        """Write access: the bearer token when one is configured; else only with anonymous writes allowed."""
        if token is None:
            if not allow_anonymous_writes:
                raise HTTPException(
                    403,
                    "writes are disabled: start the server with --token-file or $MARSVISION_TOKEN "
                    "(or --allow-anonymous-writes)",
                )
            return "anonymous"
        sent = request.headers.get("authorization", "")
        if not (sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].strip(), token)):
            raise HTTPException(
                401,
                "this write needs the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return "token"

    async def filters(
        q: Annotated[str | None, Query(max_length=200, description="part of the file name")] = None,
        label: str | None = None,
        min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
        max_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
        unknown: bool | None = None,
        sol_min: int | None = None,
        sol_max: int | None = None,
        instrument: str | None = None,
        reviewed: bool | None = None,
        reviewed_label: str | None = None,
        error: bool | None = None,
    ) -> Filters:
        # async: plain parsing, so no hop to a worker thread and back (measured: 0.8 ms of a search)
        return Filters(
            label,
            min_confidence,
            max_confidence,
            unknown,
            sol_min,
            sol_max,
            instrument,
            reviewed,
            reviewed_label,
            error,
            q,
        )

    def image_or_404(session, image_id: int) -> Image:
        img = session.get(Image, image_id)
        if img is None:
            raise HTTPException(404, f"no image {image_id}")
        return img

    @app.get("/healthz", tags=["health"])
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            mv, clf = archive.model()
        except Exception as e:  # noqa: BLE001 — any failure means not ready, said in one line
            return JSONResponse({"status": "not ready", "reason": f"{type(e).__name__}: {e}"[:300]}, status_code=503)
        writes = "token" if token else ("anonymous" if allow_anonymous_writes else "disabled")
        return {
            "status": "ready",
            "database": engine.dialect.name,
            "model": mv.version,
            "classes": len(clf.class_names),
            "writes": writes,
        }

    @app.get("/api/images", tags=["images"])
    async def list_images(
        f: Annotated[Filters, Depends(filters)],
        sort: str = "id",
        descending: bool = False,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    ):
        def run():
            with archive.sessions() as s:
                return search(s, f, sort, descending, page, page_size, archive.counts)

        try:
            # A Response, not a dict: FastAPI's encoder would take longer than the query (2.5 ms a page).
            return JSONResponse(await anyio.to_thread.run_sync(run, limiter=archive.searches))
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    @app.get("/api/images/{image_id}", tags=["images"])
    def image_detail(image_id: int):
        with archive.sessions() as s:
            d = get_image(s, image_id)
            if d is None:
                raise HTTPException(404, f"no image {image_id}")
            d["corrections"] = [
                {
                    "label": c.label,
                    "note": c.note,
                    "author": c.author,
                    "model_label": c.model_label,
                    "created_at": isoformat(c.created_at),
                }
                for c in s.scalars(select(Correction).where(Correction.image_id == image_id).order_by(Correction.id))
            ]
            return d

    def _open(img: Image, size: int):
        try:
            picture = load_image(img.path, size)
        except ImageError as e:
            raise HTTPException(404 if "not found" in str(e) else 422, f"image {img.id} ({img.path}): {e}") from None
        picture.thumbnail((size, size))
        return picture

    def _jpeg(picture, quality=85) -> Response:
        buf = io.BytesIO()
        picture.save(buf, format="JPEG", quality=quality)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/images/{image_id}/thumbnail", tags=["images"], response_class=Response)
    def thumbnail(image_id: int, size: Annotated[int, Query(ge=32, le=1024)] = 192):
        with archive.sessions() as s:
            img = image_or_404(s, image_id)
        return _jpeg(_open(img, size))

    @app.get("/api/images/{image_id}/file", tags=["images"], response_class=Response)
    def image_file(image_id: int):
        """The image as it was indexed (its file, by id)."""
        with archive.sessions() as s:
            img = image_or_404(s, image_id)
        if not Path(img.path).is_file():
            raise HTTPException(404, f"image {image_id}: {img.path} is no longer there")
        return FileResponse(img.path)

    @app.get("/api/images/{image_id}/heatmap", tags=["images"], response_class=Response)
    def heatmap(image_id: int, label: str | None = None, size: Annotated[int, Query(ge=64, le=768)] = 384):
        """Where the evidence for ``label`` (default: the predicted class) lies, over the image (PNG)."""
        from ..inference.explain import explain, overlay

        with archive.sessions() as s:
            img = image_or_404(s, image_id)
        mv, clf = archive.model()
        if label is not None and label not in clf.class_names:
            raise HTTPException(422, f"unknown class {label!r}")
        key = (image_id, label, size, mv.id)
        if key in archive.heatmaps:  # computing one takes 0.2-1 s: the page asks for the same ones again
            return Response(archive.heatmaps[key], media_type="image/png", headers={"Cache-Control": "max-age=600"})
        if not archive.heatmap_slots.acquire(blocking=False):
            raise HTTPException(503, "busy making heatmaps; retry shortly", headers={"Retry-After": "1"})
        try:
            e = explain(clf, [img.path], [label] if label else [])[0]
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        finally:
            archive.heatmap_slots.release()
        if not e.prediction.ok:
            raise HTTPException(
                404 if "not found" in e.prediction.error else 422, f"image {image_id}: {e.prediction.error}"
            )
        buf = io.BytesIO()
        overlay(img.path, e.heatmaps[label or e.prediction.label], size).save(buf, format="PNG")
        archive.heatmaps[key] = buf.getvalue()
        while len(archive.heatmaps) > HEATMAP_CACHE:
            archive.heatmaps.popitem(last=False)
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=600"})

    @app.get("/api/images/{image_id}/similar", tags=["images"])
    def similar(image_id: int, k: Annotated[int, Query(ge=1, le=100)] = 12):
        with archive.sessions() as s:
            image_or_404(s, image_id)
            near = dict(archive.sketches.similar(s, image_id, k))
            items = get_images(s, list(near))
            for d in items:
                d["similarity"] = round(near[d["id"]], 4)
            return {"image": image_id, "items": items}

    @app.get("/api/classes", tags=["classes"])
    def classes():
        with archive.sessions() as s:
            counts = {c["label"]: c for c in class_counts(s)}
        _, clf = archive.model()
        empty = {"count": 0, "reviewed": 0, "not_reviewed": 0, "curated": 0}
        return {
            "classes": [{**empty, **counts.get(n, {"label": n}), "model": True} for n in clf.class_names]
            + [{**c, "model": False} for n, c in counts.items() if n not in clf.class_names]
        }

    @app.put("/api/images/{image_id}/label", tags=["curation"])
    def correct(image_id: int, body: LabelIn, who: Annotated[str, Depends(writer)]):
        """A curator's label, stored beside the model's (which is never overwritten), with time and author."""
        _, clf = archive.model()
        if body.label not in clf.class_names:
            raise HTTPException(422, f"unknown class {body.label!r}; the model's classes: {', '.join(clf.class_names)}")
        with archive.sessions.begin() as s:
            img = image_or_404(s, image_id)
            now = utcnow()
            s.add(
                Correction(
                    image_id=img.id,
                    label=body.label,
                    note=body.note,
                    author=body.author or who,
                    created_at=now,
                    model_id=img.model_id,
                    model_label=img.label,
                )
            )
            img.reviewed_label, img.reviewed_at = body.label, now
        archive.changed()
        return image_detail(image_id)

    @app.post("/api/classify", tags=["classify"])
    async def classify(
        files: Annotated[list[UploadFile], File(description="one or more images")],
        store: bool = False,
        request: Request = None,
    ):
        """Classify uploaded images; ``store=true`` also adds them to the archive (a write)."""
        if store:
            writer(request)
        payloads = []
        for f in files:
            data = await f.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"{f.filename}: larger than {max_upload_bytes / 2**20:g} MB")
            payloads.append((f.filename or "upload", data))
        from starlette.concurrency import run_in_threadpool

        mv, clf = await run_in_threadpool(archive.model)
        preds = await run_in_threadpool(clf.predict, [d for _, d in payloads], None, 3)  # a slot is held: see below
        bad = [(name, p.error) for (name, _), p in zip(payloads, preds, strict=True) if not p.ok]
        if len(bad) == len(preds):
            name, why = bad[0]
            status = 422 if ("bomb" in why or "truncated" in why or "corrupt" in why or why == "empty file") else 415
            raise HTTPException(status, f"{name}: {why}")
        results = []
        for (name, _data), p in zip(payloads, preds, strict=True):
            results.append(
                {
                    "filename": name,
                    "label": p.label,
                    "confidence": p.confidence,
                    "unknown": p.unknown,
                    "novelty": p.novelty,
                    "top_k": [[n, c] for n, c in p.top_k],
                    "error": p.error,
                    "model_version": mv.version,
                }
            )
        if store:
            results = await run_in_threadpool(_store, payloads, preds, results, mv, clf)
            archive.changed()
        return {"items": results}

    app.add_middleware(ClassificationSlots, slots=classify_slots)

    def _store(payloads, preds, results, mv, clf):
        upload_dir = Path(os.environ.get("MARSVISION_UPLOADS", "marsvision-uploads")).resolve()
        upload_dir.mkdir(parents=True, exist_ok=True)
        with archive.sessions.begin() as s:
            for (name, data), p, r in zip(payloads, preds, results, strict=True):
                if not p.ok:
                    continue
                sha = hashlib.sha256(data).hexdigest()
                path = upload_dir / f"{sha[:16]}_{Path(name).name}"
                if not path.exists():  # atomically: a crash never leaves half an upload the row points to
                    with atomic_write(path, "wb") as f:
                        f.write(data)
                insert_new(s, [image_row(path, sha, len(data), p, clf, mv.id)])
                r["id"] = s.scalar(select(Image.id).where(Image.sha256 == sha))
        return results

    @app.get("/api/export", tags=["images"])
    def export(f: Annotated[Filters, Depends(filters)], format: Literal["csv", "json"] = "csv"):
        """Every matching image (streamed): the columns begin with `predict`'s, then the archive's own."""

        def rows():
            with archive.sessions() as s:
                yield from export_rows(s, f)

        def cell(v):
            return (
                "" if v is None else (int(v) if isinstance(v, bool) else (json.dumps(v) if isinstance(v, list) else v))
            )

        if format == "json":

            def body():
                yield "["
                for i, r in enumerate(rows()):
                    yield ("," if i else "") + "\n" + json.dumps(r, ensure_ascii=False)
                yield "\n]\n"

            return StreamingResponse(
                body(),
                media_type="application/json",
                headers={"Content-Disposition": "attachment; filename=marsvision-export.json"},
            )

        def body_csv():
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS)
            w.writeheader()
            for i, r in enumerate(rows()):
                w.writerow({k: cell(v) for k, v in r.items()})
                if i % 500 == 499:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()

        return StreamingResponse(
            body_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": "attachment; filename=marsvision-export.csv"},
        )

    @app.get("/api/models", tags=["models"])
    def models():
        with archive.sessions() as s:
            return {"models": version_rows(s)}

    @app.post("/api/models/{version}/activate", tags=["models"])
    def activate_version(version: str, who: Annotated[str, Depends(writer)]):
        """Make ``version`` the active model and re-score the whole archive from stored features (no decode)."""
        with archive.sessions() as s:
            try:
                mv = find(s, version)
            except VersionError as e:
                raise HTTPException(404, str(e)) from None
        try:
            return activate(archive.sessions, mv)
        except VersionError as e:
            raise HTTPException(409, str(e)) from None
        finally:
            archive.changed()

    @app.get("/api/review", tags=["curation"])
    def review(limit: Annotated[int, Query(ge=1, le=100)] = 10, strategy: str = DEFAULT_STRATEGY):
        """The not yet reviewed images whose labels would teach the model most, in asking order."""
        if strategy not in STRATEGIES:
            raise HTTPException(422, f"strategy must be one of {', '.join(STRATEGIES)}")
        _, clf = archive.model()
        with archive.sessions() as s:
            items = review_queue(s, clf, strategy, limit)
        return {"strategy": strategy, "default": DEFAULT_STRATEGY, "strategies": list(STRATEGIES), "items": items}

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def page():
            return FileResponse(STATIC / "index.html")

    return app
