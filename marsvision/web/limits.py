"""Limits on what one request may take, as ASGI middleware in front of every route: the size of its body and
the time the body may take to arrive (nginx's ``client_max_body_size`` and body timeout), and how many
streams of one kind run at once (exports).

A body is cut off at the limit: a declared Content-Length over it is answered 413 before anything is
read; a chunked body is counted as it arrives and cut at the first byte over. A body still arriving after
``body_timeout`` seconds is answered 408 and its connection closed: a client sending 1 byte/s must not
hold a worker, a classification slot (slots.py acquires one only after the whole body is in) or memory.
"""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import JSONResponse


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _answer(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


class BodyLimits:
    """413 for a body over ``max_bytes`` (declared or counted), 408 for one still arriving after ``timeout``
    seconds. The app's own answer to a cut-off body (a parse error, most likely) is replaced by ours."""

    def __init__(self, app, max_bytes: int, timeout: float):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        mb = f"{self.max_bytes / 2**20:g} MB"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                return await _answer(400, "Content-Length is not a number")(scope, receive, send)
            if too_big:
                return await _answer(413, f"the body is larger than {mb}", Connection="close")(scope, receive, send)
        deadline = time.monotonic() + self.timeout
        state = {"received": 0, "done": False, "refused": None, "started": False}

        async def limited_receive():
            if state["done"]:  # the body is in: what follows is the wait for a disconnect, unlimited
                return await receive()
            if state["refused"] is not None:
                raise state["refused"]
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                state["refused"] = _Refused(408, f"the body did not arrive within {self.timeout:g} s")
                raise state["refused"] from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["refused"] = _Refused(413, f"the body is larger than {mb}")
                    raise state["refused"]
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        async def checked_send(message):
            if state["refused"] is not None:
                return  # our answer goes instead (below)
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, checked_send)
        except _Refused:
            pass
        except Exception:
            if state["refused"] is None:
                raise
        refused = state["refused"]
        if refused is not None and not state["started"]:
            await _answer(refused.status, refused.detail, Connection="close")(scope, receive, send)


class _Stalled(Exception):
    pass


class StreamCap:
    """At most ``cap`` requests at once on ``path`` (exports and bulk downloads: each one reads a whole result
    set, a download its image files too); more are answered 503 with Retry-After at once. A stream counts
    until the app returns, which it does when it has sent its last byte, when its client left (Starlette's
    StreamingResponse stops on the disconnect), or when its client has taken nothing for ``send_timeout``
    seconds (then its connection is dropped: a client that stops reading but keeps its socket open would
    hold a place for ever)."""

    def __init__(self, app, path: str, cap: int, send_timeout: float, what: str = "exports"):
        self.app, self.path, self.cap, self.send_timeout, self.running = app, path, cap, send_timeout, 0
        self.what = what

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        if self.running >= self.cap:
            busy = _answer(503, f"{self.cap} {self.what} are running; retry shortly", **{"Retry-After": "5"})
            return await busy(scope, receive, send)

        async def timed_send(message):
            try:
                await asyncio.wait_for(send(message), self.send_timeout)
            except TimeoutError:
                raise _Stalled from None

        self.running += 1  # before any await: the event loop runs one request at a time here
        try:
            await self.app(scope, receive, timed_send)
        except _Stalled:
            pass  # the server closes a connection whose answer was not finished
        finally:
            self.running -= 1
