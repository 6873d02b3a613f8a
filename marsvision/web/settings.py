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
from ..errors import UsageError

TOKEN_ENV = "MARSVISION_TOKEN"
UPLOADS_ENV = "MARSVISION_UPLOADS"
DEFAULT_UPLOADS = "marsvision-uploads"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# TestClient's Host: in-process tests (and the tests of every route) run with the defaults of ``Settings``;
# ``ServeConfig`` never puts it in a real server's list.
TEST_HOST = "testserver"
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
    max_body_mb: float = field(
        default=64.0,
        metadata={"help": "largest request body, in MB (413 before it is read: nginx's client_max_body_size)"},
    )
    max_files: int = field(
        default=16, metadata={"help": "files per request (400 beyond: Django's DATA_UPLOAD_MAX_NUMBER_FILES)"}
    )
    max_pixels_m: float = field(
        default=40.0,
        metadata={"help": "decoded pixels per classify request, in millions, from the images' headers (413 beyond)"},
    )
    body_timeout: float = field(
        default=30.0,
        metadata={
            "help": (
                "seconds a request's body may take to arrive (408 after: a slow client), and an export or download "
                "may wait for its client to read"
            )
        },
    )
    max_exports: int = field(default=4, metadata={"help": "exports streaming at once; more answer 503"})
    allowed_hosts: str = field(
        default="",
        metadata={
            "help": (
                "comma-separated Host names the server answers (400 otherwise, against DNS rebinding; "
                "'*': any); default: the --host address, localhost, 127.0.0.1 and ::1"
            )
        },
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

    max_download_files: int = field(
        default=2000, metadata={"help": "most images one bulk download (/api/download.zip) holds; more answer 413"}
    )
    max_download_mb: float = field(
        default=1024.0, metadata={"help": "most MB of image files one bulk download holds; more answer 413"}
    )
    max_downloads: int = field(default=2, metadata={"help": "bulk downloads streaming at once; more answer 503"})
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
                raise UsageError(f"{self.token_file}: the token file is empty")
        else:
            token = environ.get(TOKEN_ENV) or None
        return Settings(
            db=database_url(self.db or environ.get(DB_ENV) or None),
            token=token,
            allow_anonymous_writes=self.allow_anonymous_writes,
            max_upload_bytes=int(self.max_upload_mb * 2**20),
            classify_slots=self.classify_slots,
            max_body_bytes=int(self.max_body_mb * 2**20),
            max_files=self.max_files,
            max_pixels=int(self.max_pixels_m * 1e6),
            body_timeout=self.body_timeout,
            max_exports=self.max_exports,
            allowed_hosts=tuple(h.strip() for h in self.allowed_hosts.split(",") if h.strip())
            or (self.host, *LOCAL_HOSTS),
            threads=self.threads or None,
            uploads=Path(self.uploads or environ.get(UPLOADS_ENV) or DEFAULT_UPLOADS).resolve(),
            max_download_files=self.max_download_files,
            max_download_bytes=int(self.max_download_mb * 2**20),
            max_downloads=self.max_downloads,
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
    max_body_bytes: int = 64 * 2**20
    max_files: int = 16
    max_pixels: int = 40_000_000
    body_timeout: float = 30.0
    max_exports: int = 4
    allowed_hosts: tuple[str, ...] = (*LOCAL_HOSTS, TEST_HOST)  # "*": any
    threads: int | None = None  # the model's CPU threads (None: all)
    uploads: Path = Path(DEFAULT_UPLOADS)
    max_download_files: int = 2000  # a bulk download's cap: images, then bytes of their files (413 beyond)
    max_download_bytes: int = 1024 * 2**20
    # Fewer than exports: a download also reads and compresses every image file it holds.
    max_downloads: int = 2
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
        return cls(**{**d, "uploads": Path(d["uploads"]), "allowed_hosts": tuple(d["allowed_hosts"])})
