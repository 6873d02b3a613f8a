"""One family for every error that a user, not a bug, causes: the CLI prints these as one line and the
web service answers them with a 4xx; anything else is a bug and keeps its traceback.

Image errors carry a ``kind`` so that callers branch on it, never on the wording of the message.
"""

from __future__ import annotations

import importlib
from enum import Enum


class MarsvisionError(Exception):
    """A problem with the user's input, files or installation; the message is one line that says what to do."""


class ImageErrorKind(str, Enum):
    """Why an input is not a model input (the web service maps each to an HTTP status)."""

    NOT_FOUND = "not found"
    EMPTY = "empty"
    NOT_AN_IMAGE = "not an image"
    BOMB = "bomb"
    CORRUPT = "corrupt"


class ImageError(MarsvisionError, ValueError):
    """An input that cannot be turned into a model input; the message names the reason.

    A ``ValueError`` too, so that code written against the earlier class keeps working."""

    def __init__(self, message: str, kind: ImageErrorKind = ImageErrorKind.CORRUPT):
        super().__init__(message)
        self.kind = ImageErrorKind(kind)


class MissingExtraError(MarsvisionError, ImportError):
    """A feature needs packages of an extra that is not installed; the message names the install command."""


def require(module: str, feature: str, extra: str):
    """Import ``module`` or raise ``MissingExtraError`` naming ``pip install 'marsvision[extra]'``.

    A missing module of marsvision itself is a bug, not a missing extra, and is raised as it is."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if (e.name or "").startswith("marsvision"):
            raise
        raise MissingExtraError(f"{feature} needs {e.name or module}: pip install 'marsvision[{extra}]'") from None


class UsageError(MarsvisionError, ValueError):
    """Options or inputs that do not fit together (an unknown engine, a resume with other settings, …).

    A ``ValueError`` too, so that code written against the earlier plain ``ValueError`` keeps working."""
