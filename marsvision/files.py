"""File contents by hash: the one SHA-256 helper (data set checks, the archive's skip-known rule, exports,
Parquet rows and stored uploads all use it)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20  # 1 MiB reads: hashing runs at disk speed without holding a whole file in memory


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size
