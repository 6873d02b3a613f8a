"""The web page: index.html at / and its scripts and style under /static (shipped in the wheel)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=FileResponse)
def page():
    return FileResponse(STATIC / "index.html")
