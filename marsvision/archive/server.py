"""`marsvision serve`: the command around the app of ``service.py``: its settings, the write token, and
uvicorn with one or several worker processes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from .db import DB_HELP, open_engine, sessions
from .service import TOKEN_ENV, create_app
from .versions import ensure_active


@dataclass
class ServeConfig:
    """Serve the archive: a web page at / and a REST API at /api (OpenAPI page at /docs)."""

    db: str = field(default="", metadata={"help": DB_HELP})
    host: str = field(
        default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0 exposes the archive to your network)"}
    )
    port: int = field(default=8000, metadata={"help": "port"})
    token_file: str = field(
        default="",
        metadata={"help": f"file holding the bearer token that write requests must send (default: ${TOKEN_ENV})"},
    )
    allow_anonymous_writes: bool = field(
        default=False, metadata={"help": "accept writes without a token when none is configured"}
    )
    max_upload_mb: float = field(default=20.0, metadata={"help": "largest upload accepted per file, in MB"})
    classify_slots: int = field(
        default=2, metadata={"help": "classifications at once; more answer 503 with Retry-After"}
    )
    threads: int = field(default=0, metadata={"help": "CPU threads of the model (0: all)"})
    workers: int = field(
        default=1,
        metadata={
            "help": (
                "server processes: one Python process uses one core for requests; each loads the model (about 100 MB)"
            )
        },
    )


def read_token(cfg: ServeConfig) -> str | None:
    if cfg.token_file:
        token = Path(cfg.token_file).read_text().strip()
        if not token:
            raise ValueError(f"{cfg.token_file}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


SERVE_ENV = "MARSVISION_SERVE"  # how run_serve hands its settings to worker processes


def app_from_environment() -> FastAPI:
    """The app of one worker process (uvicorn's factory), from the settings ``run_serve`` left in the
    environment; the database was migrated and given its model before the workers started."""
    cfg = json.loads(os.environ[SERVE_ENV])
    return create_app(
        open_engine(cfg["db"] or None, migrate=False),
        cfg["token"],
        cfg["allow_anonymous_writes"],
        int(cfg["max_upload_mb"] * 2**20),
        cfg["classify_slots"],
        cfg["threads"] or None,
    )


def run_serve(cfg: ServeConfig) -> None:
    """`marsvision serve`: the app under uvicorn until interrupted."""
    import uvicorn

    token = read_token(cfg)
    engine = open_engine(cfg.db or None)
    with sessions(engine).begin() as s:
        ensure_active(s)
    writes = "token required" if token else ("anonymous" if cfg.allow_anonymous_writes else "disabled")
    print(
        f"marsvision: serving {engine.url.render_as_string(hide_password=True)} on http://{cfg.host}:{cfg.port}/ "
        f"(API docs at /docs; writes: {writes}; {cfg.workers} worker{'s' if cfg.workers > 1 else ''})",
        flush=True,
    )
    if cfg.workers <= 1:
        app = create_app(
            engine,
            token,
            cfg.allow_anonymous_writes,
            int(cfg.max_upload_mb * 2**20),
            cfg.classify_slots,
            cfg.threads or None,
        )
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
        return
    engine.dispose()
    os.environ[SERVE_ENV] = json.dumps({**vars(cfg), "token": token})
    uvicorn.run(
        "marsvision.archive.server:app_from_environment",
        factory=True,
        workers=cfg.workers,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
    )
