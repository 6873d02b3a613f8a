"""Every image that matches the filters, streamed as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ...archive.queries import EXPORT_COLUMNS, export_rows
from ..deps import FiltersDep, StateDep

router = APIRouter(tags=["images"])


def _cell(v):
    return "" if v is None else (int(v) if isinstance(v, bool) else (json.dumps(v) if isinstance(v, list) else v))


@router.get("/api/export", response_class=StreamingResponse)
def export(state: StateDep, f: FiltersDep, format: Literal["csv", "json"] = "csv"):
    """Every matching image (streamed): the columns begin with `predict`'s, then the archive's own."""

    def rows():
        with state.sessions() as s:  # its own session: the stream outlives the request's dependencies
            yield from export_rows(s, f)

    def body_json():
        yield "["
        for i, r in enumerate(rows()):
            yield ("," if i else "") + "\n" + json.dumps(r, ensure_ascii=False)
        yield "\n]\n"

    def body_csv():
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS)
        w.writeheader()
        for i, r in enumerate(rows()):
            w.writerow({k: _cell(v) for k, v in r.items()})
            if i % 500 == 499:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    return StreamingResponse(
        body_json() if format == "json" else body_csv(),
        media_type="application/json" if format == "json" else "text/csv",
        headers={"Content-Disposition": f"attachment; filename=marsvision-export.{format}"},
    )
