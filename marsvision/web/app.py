"""The archive's REST API and web page: ``create_app`` assembles the routers, the error handlers and the
classification slots around one ``ArchiveState``; the routes live in routes/, one module per resource.

Reads are open; writes (corrections, stored uploads, activating a model version) need the bearer token
when one is configured and are refused (403) when none is, unless anonymous writes are allowed.
Requests are limited in body size, files, pixels and body time, exports in number (limits.py); the
Host header is checked, writes are authenticated before their body is read, and every answer carries
OWASP's secure headers (security.py). Uploads are capped in size (413); undecodable images are
answered with the status of their kind (errors.py); classification runs at most ``classify_slots`` at
a time, a few more wait their turn, and beyond that the answer is 503 with Retry-After. Images are served
by id, never by a path from the request.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine

from ..archive.db import open_engine
from .errors import add_error_handlers
from .limits import BodyLimits, StreamCap
from .routes import browse, classes, classify, corrections, download, export, health, images, models, page, review
from .security import HostCheck, SecurityHeaders, WriteGate
from .settings import Settings
from .slots import ClassificationSlots
from .state import ArchiveState


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The app over ``engine`` (default: one opened on ``settings.db``, whose schema must be current)."""
    state = ArchiveState(settings, engine or open_engine(settings.db or None, migrate=False))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="marsvision archive",
        version="1",
        description="Search, browse and correct classified Curiosity (MSL) images.",
        lifespan=lifespan,
        # Django's DATA_UPLOAD_MAX_NUMBER_FILES: the multipart parser's own default is 1,000 files.
        form_limits={"max_files": settings.max_files, "max_fields": settings.max_files + 8},
    )
    app.state.archive = state
    for module in (health, images, export, download, browse, classes, corrections, classify, models, review):
        app.include_router(module.router)
    add_error_handlers(app)
    # Outermost last: headers on every answer, then Host, then write access (before any body is read),
    # then the body's size and time, then the caps on exports and classifications.
    app.add_middleware(ClassificationSlots, slots=settings.classify_slots)
    app.add_middleware(StreamCap, path="/api/export", cap=settings.max_exports, send_timeout=settings.body_timeout)
    app.add_middleware(
        StreamCap,
        path="/api/download.zip",
        cap=settings.max_downloads,
        send_timeout=settings.body_timeout,
        what="downloads",
    )
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(WriteGate, settings=settings)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    if page.STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
        app.include_router(page.router)
    return app
