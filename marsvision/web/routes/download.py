"""The current result set as one streamed zip: the image files and a metadata CSV, capped."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from ...archive.download import download_size, result_pages, zip_stream
from ..deps import FiltersDep, SettingsDep, StateDep

router = APIRouter(tags=["images"])


@router.get("/api/download.zip", response_class=StreamingResponse)
def download(state: StateDep, settings: SettingsDep, f: FiltersDep):
    """Every matching image's file (a PDS product: its label and data file) and metadata.csv (the export's
    columns), streamed as a zip. At most ``--max-download-files`` images and ``--max-download-mb`` of
    files: a larger result set is answered 413 (narrow the filters)."""
    with state.sessions() as s:
        n, size = download_size(s, f)
    if n > settings.max_download_files:
        raise HTTPException(
            413, f"{n} images match; a download holds at most {settings.max_download_files}: narrow the filters"
        )
    if size > settings.max_download_bytes:
        raise HTTPException(
            413,
            f"the {n} matching images' files hold {size / 2**20:.1f} MB; a download holds at most "
            f"{settings.max_download_bytes / 2**20:.0f} MB: narrow the filters",
        )
    # At most the images counted: rows indexed since do not make the zip larger than was checked.
    pages = result_pages(state.sessions, f, n)
    return StreamingResponse(
        zip_stream(pages),
        media_type="application/zip",
        headers={"Content-Disposition": "attachment; filename=marsvision-results.zip"},
    )
