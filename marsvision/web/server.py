"""`marsvision serve`: ``run_serve`` runs the app of ``app.py`` under uvicorn with one or several worker
processes, with the ``Settings`` that its ``ServeConfig`` resolves once."""

from __future__ import annotations

import os

from fastapi import FastAPI

from ..archive.db import open_engine, sessions
from ..archive.locks import archive_lock
from ..archive.versions import ensure_active
from .app import create_app
from .settings import ServeConfig, Settings

SERVE_ENV = "MARSVISION_SERVE"  # how run_serve hands its settings to worker processes


def app_from_environment() -> FastAPI:
    """The app of one worker process (uvicorn's factory), from the settings ``run_serve`` left in the
    environment; the database was migrated and given its model before the workers started."""
    return create_app(Settings.from_json(os.environ[SERVE_ENV]))


def run_serve(cfg: ServeConfig) -> None:
    """`marsvision serve`: the app under uvicorn until interrupted."""
    import uvicorn

    settings = cfg.settings()
    engine = open_engine(settings.db)
    with archive_lock(engine), sessions(engine).begin() as s:
        ensure_active(s)
    writes = {"token": "token required", "anonymous": "anonymous", "disabled": "disabled"}[settings.writes]
    print(
        f"marsvision: serving {engine.url.render_as_string(hide_password=True)} on http://{cfg.host}:{cfg.port}/ "
        f"(API docs at /docs; writes: {writes}; {cfg.workers} worker{'s' if cfg.workers > 1 else ''})",
        flush=True,
    )
    if cfg.workers <= 1:
        uvicorn.run(create_app(settings, engine), host=cfg.host, port=cfg.port, log_level="warning")
        return
    engine.dispose()
    os.environ[SERVE_ENV] = settings.to_json()
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=cfg.workers,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
    )
