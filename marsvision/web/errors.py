"""Errors into HTTP answers, by type and kind, never by the wording of a message: one table for image
errors, and any other ``MarsvisionError`` (a user's input, not a bug) as 422 with its message."""

from __future__ import annotations

import json

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from ..errors import ImageError, ImageErrorKind, MarsvisionError

IMAGE_STATUS = {
    ImageErrorKind.NOT_FOUND: 404,
    ImageErrorKind.EMPTY: 422,  # an image type, with no content
    ImageErrorKind.NOT_AN_IMAGE: 415,  # a format we cannot read
    ImageErrorKind.BOMB: 422,  # a real image, refused by the decompression-bomb guard
    ImageErrorKind.CORRUPT: 422,
}
USER_ERROR_STATUS = 422


def image_http_error(error: ImageError, about: str) -> HTTPException:
    """``error`` of the image ``about`` (a file name, an image id) as the status of its kind."""
    return HTTPException(IMAGE_STATUS[error.kind], f"{about}: {error}")


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    status = IMAGE_STATUS[error.kind] if isinstance(error, ImageError) else USER_ERROR_STATUS
    return JSONResponse({"detail": str(error)}, status_code=status)


async def _out_of_range(request: Request, error: Exception) -> JSONResponse:
    # A value the database cannot hold: an integer past 64 bits (SQLite's driver raises OverflowError before
    # sending it) or a PostgreSQL data exception (class 22: out of range, NUL in text). Input, not a bug;
    # the routes bound their parameters, this is the net under any that does not.
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()
    return JSONResponse({"detail": f"a value out of range: {reason[0] if reason else type(error).__name__}"}, 422)


class _AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a validation error echoes the input, and a lone surrogate
    in it (a note of "\\ud800") cannot be encoded as UTF-8 (it made the 422 itself a 500)."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    return _AsciiJSON({"detail": jsonable_encoder(error.errors())}, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    """Errors a route does not turn into an ``HTTPException`` itself; anything else stays a 500 (a bug)."""
    app.add_exception_handler(MarsvisionError, _user_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(OverflowError, _out_of_range)
