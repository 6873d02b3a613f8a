"""The archive's model versions: list them, activate one (a write)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from ...archive.rescore import activate
from ...archive.versions import VersionError, find, version_rows
from ..deps import SessionDep, StateDep, WriterDep
from ..schemas import Activated, Models

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("", response_model=Models)
def models(session: SessionDep):
    return {"models": version_rows(session)}


@router.post("/{version}/activate", response_model=Activated)
def activate_version(version: str, who: WriterDep, state: StateDep):
    """Make ``version`` the active model and re-score the whole archive from stored features (no decode)."""
    with state.sessions() as s:
        try:
            mv = find(s, version)
        except VersionError as e:
            raise HTTPException(404, str(e)) from None

    def active_classifier():  # the server's own copy, loaded once for the activation and for what follows
        state.changed()
        return state.model().classifier

    try:
        return activate(state.sessions, mv, classifier=active_classifier)
    except VersionError as e:
        raise HTTPException(409, str(e)) from None
    finally:
        state.changed()
