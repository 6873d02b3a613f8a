"""Every image that matches the filters, streamed as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Literal

import anyio
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ...archive.queries import EXPORT_COLUMNS, Filters, export_page
from ..deps import FiltersDep, StateDep
from ..state import ArchiveState

router = APIRouter(tags=["images"])

# Rows a page: each page is read in a session of its own, closed before the page is sent. A session held
# across the stream's yield pinned a pooled connection per stalled client: 15 clients that stopped reading
# exhausted the pool (/readyz 503, searches 500) until the cycle collector freed them, minutes later.
PAGE_ROWS = 2000


def _cell(v):
    return "" if v is None else (int(v) if isinstance(v, bool) else (json.dumps(v) if isinstance(v, list) else v))


def _page(state: ArchiveState, f: Filters, after: int, chunk: int) -> list[dict]:
    with state.sessions() as s:
        return export_page(s, f, after, chunk)


async def export_pages(state: ArchiveState, f: Filters, first: list[dict], chunk: int) -> AsyncIterator[list[dict]]:
    """The pages after ``first`` (read already), each in its own short session on a worker thread. Async, so
    that a client who leaves ends it: Starlette cancels the stream at the disconnect, between two pages."""
    page = first
    while page:
        yield page
        if len(page) < chunk:
            return
        page = await anyio.to_thread.run_sync(_page, state, f, page[-1]["id"], chunk)


def _csv(rows: list[dict], header: bool) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS)
    if header:
        w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


@router.get("/api/export", response_class=StreamingResponse)
async def export(state: StateDep, f: FiltersDep, format: Literal["csv", "json"] = "csv"):
    """Every matching image (streamed): the columns begin with `predict`'s, then the archive's own. The
    first page is read before the answer starts, so a filter the database refuses is a 4xx, not a 200
    cut short."""
    chunk = PAGE_ROWS
    first = await anyio.to_thread.run_sync(_page, state, f, 0, chunk)

    async def body_json():
        yield "["
        n = 0
        async for page in export_pages(state, f, first, chunk):
            yield "".join(("," if n + i else "") + "\n" + json.dumps(r, ensure_ascii=False) for i, r in enumerate(page))
            n += len(page)
        yield "\n]\n"

    async def body_csv():
        yield _csv([], header=True)
        async for page in export_pages(state, f, first, chunk):
            yield _csv(page, header=False)

    return StreamingResponse(
        body_json() if format == "json" else body_csv(),
        media_type="application/json" if format == "json" else "text/csv",
        headers={"Content-Disposition": f"attachment; filename=marsvision-export.{format}"},
    )
