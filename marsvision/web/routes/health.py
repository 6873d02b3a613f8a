"""Liveness and readiness, for a load balancer or an orchestrator."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..deps import StateDep
from ..schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"description": "not ready, and why"}})
def readyz(state: StateDep):
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        active = state.model()
    except Exception as e:  # noqa: BLE001 — any failure means not ready, said in one line
        return JSONResponse({"status": "not ready", "reason": f"{type(e).__name__}: {e}"[:300]}, status_code=503)
    return Ready(
        status="ready",
        database=state.engine.dialect.name,
        model=active.version.version,
        classes=len(active.classifier.class_names),
        writes=state.settings.writes,
    )
