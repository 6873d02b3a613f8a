"""Crash-safe file writes: a kill mid-write leaves the old file (or none), never half a file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and models are meant to be shared
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(save_fn, path: str | os.PathLike) -> None:
    """Call ``save_fn(tmp_path)`` (e.g. ``torch.save`` or ``fig.savefig``) then rename atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def move_into_place(path: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put a finished file in place: fsync, then one rename (a copy to a temporary name first
    when ``final`` is on another file system), so readers never see half a file."""
    path, final = Path(path), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    if path.stat().st_dev == final.parent.stat().st_dev:
        os.replace(path, final)
    else:
        atomic_save(lambda tmp: shutil.copyfile(path, tmp), final)
