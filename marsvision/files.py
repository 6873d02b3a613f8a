"""File contents by hash: the one SHA-256 helper (data set checks, the archive's skip-known rule, exports,
Parquet rows and stored uploads all use it)."""

from __future__ import annotations

import hashlib
import os

from . import pds

CHUNK = 1 << 20  # 1 MiB reads: hashing runs at disk speed without holding a whole file in memory


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of the file at ``path``, read in chunks.

    A PDS product's detached label is hashed together with its data file (``pds.product_files_of``): two
    products may share a label's text, and new data under an old label is a new image. Every engine hashes
    through here, so the local and the Ray indexer agree."""
    h = hashlib.sha256()
    size = 0
    for part in pds.product_files_of(path):
        with open(part, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
                size += len(block)
    return h.hexdigest(), size
