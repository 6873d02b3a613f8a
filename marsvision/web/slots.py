"""Admission for classifications: an ASGI middleware in front of ``POST /api/classify``."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse

SLOT_WAIT = 0.5  # seconds a classification may wait for a free slot (one frees about every 10 ms)
QUEUE_PER_SLOT = 4  # classifications that may wait per slot


async def read_body(receive) -> tuple[list[dict], bool]:
    """Every message of the request's body (limited in size and time by limits.py, which is in front), and
    whether the client left meanwhile."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, True
        if not message.get("more_body", False):
            return messages, False


class ClassificationSlots:
    """A classification holds one of ``slots`` once its whole upload has arrived: a slow body must not keep
    a slot from the others (two uploads sending 1 byte/s held both slots for 20 s before). Then waiting
    requests queue in arrival order, at most ``QUEUE_PER_SLOT`` per slot and ``SLOT_WAIT`` seconds each;
    beyond either, 503 with Retry-After at once, without the body going through the multipart parser.
    Every other request passes straight through."""

    def __init__(self, app, slots: int):
        self.app, self.free = app, asyncio.Semaphore(slots)
        self.limit = slots * (1 + QUEUE_PER_SLOT)  # running + waiting
        self.admitted = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/api/classify":
            return await self.app(scope, receive, send)
        busy = JSONResponse(
            {"detail": "busy classifying; retry shortly"}, status_code=503, headers={"Retry-After": "1"}
        )
        messages, left = await read_body(receive)
        if left:
            return

        async def replay():
            return messages.pop(0) if messages else await receive()

        if self.admitted >= self.limit:
            return await busy(scope, replay, send)
        self.admitted += 1  # counted before any await: the event loop runs one request at a time here
        try:
            try:
                await asyncio.wait_for(self.free.acquire(), SLOT_WAIT)  # asyncio.Semaphore wakes waiters FIFO
            except TimeoutError:
                return await busy(scope, replay, send)
            try:
                await self.app(scope, replay, send)
            finally:
                self.free.release()
        finally:
            self.admitted -= 1
