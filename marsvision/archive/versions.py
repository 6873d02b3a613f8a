"""Model versions in the archive: which file labelled which rows, which one is active."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import MarsvisionError
from ..files import sha256_file
from ..model_file import bundled_model_path
from .db import DB_HELP, ModelVersion


class VersionError(MarsvisionError, ValueError):
    """A model version that does not exist or cannot be used here; the message says what to do."""


@dataclass
class ModelsConfig:
    """List the archive's model versions, activate one (re-scoring the archive), or roll back."""

    action: str = field(metadata={"positional": True, "choices": ("list", "activate", "rollback")})
    version: str = field(default="", metadata={"positional": True, "help": "the version to activate"})
    db: str = field(default="", metadata={"help": DB_HELP})


def active_version(session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.active)).first()


def register(
    session: Session,
    path: str | Path,
    version: str = "",
    parent: ModelVersion | None = None,
    corrections: int = 0,
    info: dict | None = None,
) -> ModelVersion:
    """The row of the model file at ``path`` (added when its content is new)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise VersionError(f"{path}: model file not found")
    sha, _ = sha256_file(path)
    found = session.scalars(select(ModelVersion).where(ModelVersion.sha256 == sha)).first()
    if found:
        return found
    mv = ModelVersion(
        version=version or f"{path.stem.split('.')[0]}-{sha[:8]}",
        path=str(path),
        sha256=sha,
        parent_id=parent.id if parent else None,
        corrections=corrections,
        info={
            "features_from": (parent.info.get("features_from") or parent.version) if parent else None,
            **(info or {}),
        },
    )
    session.add(mv)
    session.flush()
    if mv.info.get("features_from") is None:  # a model that computed its own features
        mv.info = {**mv.info, "features_from": mv.version}
    return mv


def set_active(session: Session, mv: ModelVersion) -> None:
    session.execute(update(ModelVersion).values(active=False))
    mv.active = True


def ensure_active(session: Session, model: str | Path | None = None) -> ModelVersion:
    """The active version; an archive without one activates ``model`` (default: the bundled model).
    Asking for another model than the active one is an error that names the command to switch."""
    current = active_version(session)
    if current is None:
        mv = register(session, model or bundled_model_path())
        set_active(session, mv)
        return mv
    if model and register(session, model).id != current.id:
        raise VersionError(
            f"the archive's active model is {current.version}; switch with "
            f"`marsvision models activate VERSION` (or leave out --model)"
        )
    return current


def find(session: Session, version: str) -> ModelVersion:
    mv = session.scalars(select(ModelVersion).where(ModelVersion.version == version)).first()
    if mv is None:
        known = ", ".join(session.scalars(select(ModelVersion.version).order_by(ModelVersion.id)))
        raise VersionError(f"no model version {version!r}; known: {known or 'none'}")
    return mv


def utc_isoformat(t: dt.datetime) -> str:
    """ISO 8601 with the UTC offset: the times are stored in UTC, and SQLite hands them back without it."""
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).isoformat(timespec="seconds")


def version_rows(session: Session) -> list[dict]:
    """Every version, oldest first, with how many images it labels now."""
    from sqlalchemy import func

    from .db import Image

    counts = dict(session.execute(select(Image.model_id, func.count()).group_by(Image.model_id)).all())
    versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))
    names = {m.id: m.version for m in versions}
    return [
        {
            "version": m.version,
            "active": m.active,
            "created_at": utc_isoformat(m.created_at),
            "parent": names.get(m.parent_id),
            "corrections": m.corrections,
            "images": counts.get(m.id, 0),
            "path": m.path,
        }
        for m in versions
    ]


def rollback_target(session: Session) -> ModelVersion:
    """The version a rollback activates: the active version's parent."""
    mv = active_version(session)
    if mv is None or mv.parent_id is None:
        raise VersionError("nothing to roll back to: the active version has no parent")
    return session.get(ModelVersion, mv.parent_id)
