"""What `marsvision serve` runs with: ``ServeConfig``, the command's options (one CLI option per field), and
``Settings``, the app's values resolved from them and from the environment once, at start-up.

The environment is read here and nowhere else: ``$MARSVISION_DB`` (the database when ``--db`` is not
given), ``$MARSVISION_TOKEN`` (the write token when ``--token-file`` is not given) and
``$MARSVISION_UPLOADS`` (the folder of stored uploads when ``--uploads`` is not given) and
``$MARSVISION_VECTOR_INDEX`` (the similar-images index folder when ``--vector-index`` is not given). A request never
reads the environment (the uploads folder was read on every stored upload before).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..archive.db import DB_ENV, DB_HELP, database_url

TOKEN_ENV = "MARSVISION_TOKEN"
UPLOADS_ENV = "MARSVISION_UPLOADS"
DEFAULT_UPLOADS = "marsvision-uploads"
VECTOR_INDEX_ENV = "MARSVISION_VECTOR_INDEX"  # archive.vectors.INDEX_ENV (that module reads it for `index`)


@dataclass(frozen=True)
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
    uploads: str = field(
        default="",
        metadata={
            "help": (
                f"folder where uploads classified with ?store=true are kept "
                f"(default: ${UPLOADS_ENV}, then ./{DEFAULT_UPLOADS})"
            )
        },
    )

    vector_index: str = field(
        default="",
        metadata={
            "help": (
                "folder of the similar-images index file, for SQLite or PostgreSQL without pgvector "
                f"(default: ${VECTOR_INDEX_ENV}, then beside a SQLite file, else ./marsvision-vectors/)"
            )
        },
    )

    def settings(self, environ: Mapping[str, str] | None = None) -> Settings:
        """The app's settings: the token read from its file (or the environment), paths resolved."""
        environ = os.environ if environ is None else environ
        if self.token_file:
            token = Path(self.token_file).read_text().strip()
            if not token:
                raise ValueError(f"{self.token_file}: the token file is empty")
        else:
            token = environ.get(TOKEN_ENV) or None
        return Settings(
            db=database_url(self.db or environ.get(DB_ENV) or None),
            token=token,
            allow_anonymous_writes=self.allow_anonymous_writes,
            max_upload_bytes=int(self.max_upload_mb * 2**20),
            classify_slots=self.classify_slots,
            threads=self.threads or None,
            uploads=Path(self.uploads or environ.get(UPLOADS_ENV) or DEFAULT_UPLOADS).resolve(),
            vector_index=str(Path(self.vector_index or environ.get(VECTOR_INDEX_ENV) or "").resolve())
            if (self.vector_index or environ.get(VECTOR_INDEX_ENV))
            else "",
        )


@dataclass(frozen=True)
class Settings:
    """The app's settings (``create_app``), fixed for its life. Reads are open; writes need ``token`` when
    one is set, and are refused without one unless ``allow_anonymous_writes``."""

    db: str = ""  # a SQLAlchemy URL; "" means ``database_url``'s default
    token: str | None = field(default=None, repr=False)
    allow_anonymous_writes: bool = False
    max_upload_bytes: int = 20 * 2**20
    classify_slots: int = 2
    threads: int | None = None  # the model's CPU threads (None: all)
    uploads: Path = Path(DEFAULT_UPLOADS)
    vector_index: str = ""  # the index file's folder ("": archive.vectors.default_folder)

    @property
    def writes(self) -> Literal["token", "anonymous", "disabled"]:
        return "token" if self.token else ("anonymous" if self.allow_anonymous_writes else "disabled")

    def to_json(self) -> str:
        """For worker processes (``server.app_from_environment``); holds the token: keep it in the environment."""
        return json.dumps({**asdict(self), "uploads": str(self.uploads)})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        d = json.loads(text)
        return cls(**{**d, "uploads": Path(d["uploads"])})
