"""A result set as one zip, streamed: the images' files and ``metadata.csv`` (the export's columns, plus
the names the files have in the zip).

The zip is written by ``zipfile`` into a sink that hands its bytes on as they come (a stream that cannot
seek: each entry's sizes follow it in a data descriptor), so neither the archive nor a whole file is held
in memory: a chunk of a file at a time. The rows are read first, a keyset page at a time, each page in a
session of its own that is closed before any byte is sent: a slow client holds no database connection.
The metadata goes into a spooled temporary file and is the zip's last entry (the names of missing files
are known only once they were looked for).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..pds import product_files_of
from .db import Image
from .queries import EXPORT_COLUMNS, Filters, export_page

METADATA = "metadata.csv"
METADATA_COLUMNS = (*EXPORT_COLUMNS, "zip_files", "zip_missing")
CHUNK = 1 << 20  # bytes of a file read (and sent) at a time
PAGE = 500  # rows read per session


def download_size(session: Session, filters: Filters) -> tuple[int, int]:
    """(images, bytes of their files as indexed) that match: what a download's cap is checked against."""
    n, size = session.execute(filters.apply(select(func.count(Image.id), func.sum(Image.size_bytes)))).one()
    return n, size or 0


class _Sink(io.RawIOBase):
    """Where zipfile writes: kept until ``take`` hands the bytes on. Not seekable, so zipfile streams."""

    def __init__(self):
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


def _cell(v):
    return "" if v is None else (int(v) if isinstance(v, bool) else (json.dumps(v) if isinstance(v, list) else v))


def _files(row: dict) -> list[Path]:
    """The files of a row: a PDS product's label and data file, else the file itself."""
    return product_files_of(row["path"]) if row.get("product_id") else [Path(row["path"])]


def result_pages(sessions: Callable[[], Session], filters: Filters, limit: int, page: int = PAGE) -> Iterator[list]:
    """The first ``limit`` matching rows in id order, a page at a time, each read in its own session."""
    last, left = 0, limit
    while left > 0:
        with sessions() as s:
            rows = export_page(s, filters, last, min(page, left))
        if not rows:
            return
        yield rows
        left -= len(rows)
        last = rows[-1]["id"]


def _entry(zf: zipfile.ZipFile, sink: _Sink, name: str, chunks: Iterator[bytes], deflate: bool) -> Iterator[bytes]:
    """One entry written a chunk at a time, each chunk's zip bytes handed on as soon as they are written.
    Images are stored as they are: compressed already (deflating a JPEG costs CPU for ~1 %)."""
    info = zipfile.ZipInfo(name, time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zf.open(info, "w", force_zip64=True) as entry:
        for chunk in chunks:
            entry.write(chunk)
            yield sink.take()
    yield sink.take()


def _read(f) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def zip_stream(pages: Iterator[list[dict]]) -> Iterator[bytes]:
    """The zip of the rows in ``pages``, as bytes to send: ``images/<id>-<name>`` for each file, then
    metadata.csv. A file that is gone or unreadable is left out and named in the row's ``zip_missing``."""
    sink = _Sink()
    with (
        tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+", newline="", encoding="utf-8") as metadata,
        zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        writer = csv.DictWriter(metadata, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        for rows in pages:
            for row in rows:
                stored, missing = [], []
                for path in _files(row):
                    name = f"images/{row['id']}-{path.name}"
                    try:
                        f = path.open("rb")  # noqa: SIM115 - closed below; only the open's error is "missing"
                    except OSError:
                        missing.append(path.name)
                        continue
                    with f:
                        yield from _entry(zf, sink, name, _read(f), deflate=False)
                    stored.append(name)
                cells = {k: _cell(v) for k, v in row.items()}
                writer.writerow({**cells, "zip_files": ";".join(stored), "zip_missing": ";".join(missing)})
        metadata.seek(0)
        yield from _entry(zf, sink, METADATA, (t.encode("utf-8") for t in iter(lambda: metadata.read(CHUNK), "")), True)
    yield sink.take()  # the central directory, written on close
