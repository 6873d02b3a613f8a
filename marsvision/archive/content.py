"""An indexed file read back only while it is still the content the archive indexed: same place (no link
followed), same size, same SHA-256. Anyone who can write into an indexed folder could otherwise swap an
image for a link to the token file, or for any other file, and read it through the archive."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .. import pds
from ..errors import MarsvisionError
from ..files import sha256_file


class ContentGone(MarsvisionError):
    """Nothing is at the indexed path any more."""


class ContentChanged(MarsvisionError):
    """Something is at the indexed path, but not the indexed content; the message names the change."""


def _followed(path: Path) -> str | None:
    """Where ``path`` leads when a link (of the file or of a folder above it) lies on the way, else None.
    Indexed paths were resolved when indexed, so any link on the way now is a change."""
    real = os.path.realpath(path)
    return real if real != str(path) else None


def read_indexed(path: str, sha256: str, size: int) -> bytes:
    """The bytes at ``path`` when they are the indexed content (``sha256``, ``size``); else ``ContentGone``
    or ``ContentChanged``. Read once, from one open file: what is hashed is what is served."""
    p = Path(path)
    if not os.path.lexists(p):
        raise ContentGone(f"{path} is no longer there")
    parts = pds.product_files_of(p)
    for part in parts:
        if (real := _followed(part)) is not None:
            raise ContentChanged(f"{part} is now a link to {real}; the archive serves only what it indexed")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a link swapped in since: refused here
    except OSError as e:
        raise ContentChanged(f"{path} cannot be opened now ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ContentChanged(f"{path} is no longer a regular file")
        if len(parts) == 1 and st.st_size != size:
            raise ContentChanged(f"{path} changed size: {st.st_size} bytes now, {size} when indexed")
        data = f.read()
    # A product's hash covers its label and its data file (files.sha256_file); a plain file's, its bytes.
    now = hashlib.sha256(data).hexdigest() if len(parts) == 1 else sha256_file(p)[0]
    if now != sha256:
        raise ContentChanged(f"{path} changed content: its SHA-256 is {now[:12]}…, {sha256[:12]}… when indexed")
    return data
