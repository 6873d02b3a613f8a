"""The archive's database: its tables (SQLAlchemy 2), how to open one, and its migrations (Alembic).

One schema for SQLite (the default, a file beside you) and PostgreSQL (``postgresql://…``):

- ``models``: every model version the archive has used: file, hash, when, from which corrections, and
  which one is active;
- ``images``: one row per image content (SHA-256): where it was found, its file-name fields or a PDS
  product's label fields, its camera and whether that is outside the training cameras, the active
  model's output (label, calibrated confidence, unknown flag, novelty, top-k, which version), or why it
  could not be read; the latest curator's label;
- ``image_vectors``: each readable image's feature vector, texture coordinates and similarity sketch;
- ``image_counts``, ``image_totals``: how many images have each combination of the values the page filters
  on (sol, label, camera, flags, curator's label, confidence percent), per sol and in all, kept in step by
  triggers (archive/counts.py);
- ``corrections``: every curator's correction, never deleted; the model's label is never overwritten;
- ``training_images``: the training images' features, stored once for refits.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ..errors import MarsvisionError

DEFAULT_DB = "marsvision.db"
DB_ENV = "MARSVISION_DB"
DB_HELP = (
    f"database: a SQLAlchemy URL (sqlite:///file.db, "
    f"postgresql://user@host/db) or a file path (default: ${DB_ENV}, then "
    f"./{DEFAULT_DB})"
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(80), unique=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    corrections: Mapped[int] = mapped_column(Integer, default=0)  # corrections it was fitted with
    info: Mapped[dict] = mapped_column(JSON, default=dict)  # training inputs, measured checks


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A PDS product's label (marsvision/pds.py) or else the MSL file name (msl_names.py) gives the sol and
    # the camera; None when neither does. ``instrument``: the camera's code (marsvision/cameras.py: MH, ML,
    # MR, MD as in the file names; NL, FR, CR, … for the engineering cameras and the RMI), else a label's
    # identifier as written.
    sol: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    instrument: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    name_fields: Mapped[dict] = mapped_column(JSON, default=dict)
    # True: the camera is outside those the model was trained on (Mastcam, MAHLI); None: camera unknown.
    off_camera: Mapped[bool | None] = mapped_column(Boolean, index=True, nullable=True)
    # The label fields of a PDS product (None for plain JPEG/PNG files).
    product_id: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    instrument_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # INSTRUMENT_ID as written
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True, nullable=True)
    local_mean_solar_time: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sequence_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    filter_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lines: Mapped[int | None] = mapped_column(Integer, nullable=True)
    samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bands: Mapped[int | None] = mapped_column(Integer, nullable=True)
    site: Mapped[int | None] = mapped_column(Integer, nullable=True)
    drive: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it could not be read
    # The output of the model version ``model_id`` (re-scored when another version is activated).
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), index=True, nullable=True)
    label: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, index=True, nullable=True)
    unknown: Mapped[bool | None] = mapped_column(Boolean, index=True, nullable=True)
    novelty: Mapped[float | None] = mapped_column(Float, nullable=True)
    margin: Mapped[float | None] = mapped_column(Float, index=True, nullable=True)  # top-1 minus top-2 probability
    top_k: Mapped[list] = mapped_column(JSON, default=list)  # [[label, probability], ...]
    # The latest curator's label (the corrections table keeps every one).
    reviewed_label: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ImageVectors(Base):
    """What a re-score or a refit needs, so no image is decoded again: the pooled features (float16) and
    the texture's coordinates in the novelty basis (float32); and a small similarity sketch (float16).
    In their own table: 3.7 KB a row would make every search read five times the pages."""

    __tablename__ = "image_vectors"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), primary_key=True)
    features: Mapped[bytes] = mapped_column(LargeBinary)
    texture: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sketch: Mapped[bytes] = mapped_column(LargeBinary)


class _Counted:
    """The values an image is counted by (archive/counts.py says how each is written and kept)."""

    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    instrument: Mapped[str] = mapped_column(String(32), primary_key=True)
    unknown: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    reviewed_label: Mapped[str] = mapped_column(String(64), primary_key=True)
    off_camera: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    error: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    confidence_pct: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class ImageCount(_Counted, Base):
    """How many images have these values on this sol. On SQLite the rows live in the key's B-tree (sol
    first: a sol range is a range of it)."""

    __tablename__ = "image_counts"
    __table_args__ = {"sqlite_with_rowid": False}

    sol: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)


class ImageTotal(_Counted, Base):
    """How many images have these values, whatever their sol."""

    __tablename__ = "image_totals"
    __table_args__ = {"sqlite_with_rowid": False}


class Correction(Base):
    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    label: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    model_label: Mapped[str | None] = mapped_column(String(64), nullable=True)  # what the model said then


class TrainingImage(Base):
    """The training images' features (float16), computed once by the model that computes the archive's
    features (``features_from``), so a refit never decodes an image."""

    __tablename__ = "training_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    features_from: Mapped[str] = mapped_column(String(80), index=True)
    split: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(64))
    sol: Mapped[int | None] = mapped_column(Integer, nullable=True)
    features: Mapped[bytes] = mapped_column(LargeBinary)


def database_url(db: str | None = None) -> str:
    """``--db``, else ``$MARSVISION_DB``, else ./marsvision.db; a plain path means a SQLite file, and
    ``postgresql://`` uses the psycopg (3) driver."""
    db = db or os.environ.get(DB_ENV) or DEFAULT_DB
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser()}"
    url = make_url(db)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


class DatabaseError(MarsvisionError):
    """The archive database cannot be opened (unreachable server, wrong credentials, not a database)."""


def open_engine(db: str | None = None, migrate: bool = True) -> Engine:
    """An engine for ``db`` with the schema brought up to date (Alembic ``upgrade head``)."""
    url = database_url(db)
    if url.startswith("sqlite"):
        Path(make_url(url).database or DEFAULT_DB).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _):
            # WAL: readers (the web page) never wait for the indexer's writes, and a kill leaves the
            # database as of the last commit.
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    if migrate:
        try:
            upgrade(engine)
        except OperationalError as e:  # unreachable, refused, not a database: one line, not a traceback
            reason = (str(e.orig) if e.orig is not None else str(e)).strip().splitlines()
            where = make_url(url).render_as_string(hide_password=True)
            raise DatabaseError(
                f"{where}: cannot open the database ({reason[0] if reason else type(e).__name__})"
            ) from e
    return engine


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine) -> None:
    """Apply every Alembic migration the database has not had (idempotent)."""
    from alembic import command
    from alembic.config import Config

    from .locks import archive_lock

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    # One migrator at a time: two `index` runs on a fresh PostgreSQL database both created the tables,
    # and one died with a 99-line traceback.
    with archive_lock(engine), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
