"""The export stream: no database session held while its client is not reading, over when the client leaves,
a cap on exports at once, and its filters checked before the first byte."""

import asyncio

import pytest
from fastapi.testclient import TestClient
from web.asgi_driver import run_async, scope

import marsvision.web.routes.export as export_route
from marsvision.archive.db import open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.web.app import create_app
from marsvision.web.settings import Settings


@pytest.fixture
def indexed(db_url, example_images, tmp_path):
    run_index([str(example_images[0].parent)], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


def test_export_holds_no_session_between_pages_and_none_after_its_client_left(indexed, monkeypatch):
    monkeypatch.setattr(export_route, "PAGE_ROWS", 4)  # 12 rows: several pages
    app = create_app(Settings(max_exports=1), indexed)
    seen = {"checked_out": [], "chunks": 0}

    async def main():
        left, stalled = asyncio.Event(), asyncio.Event()
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and message.get("more_body"):
                seen["checked_out"].append(indexed.pool.checkedout())
                seen["chunks"] += 1
                if seen["chunks"] == 3:  # the client stops reading here
                    stalled.set()
                    await asyncio.Event().wait()

        call = asyncio.create_task(app(scope("GET", "/api/export", b"format=json"), receive, send))
        await asyncio.wait_for(stalled.wait(), 10)
        seen["while_stalled"] = indexed.pool.checkedout()
        # a second export while the first is running: over the cap
        second = []

        async def send2(message):
            second.append(message)

        async def receive2():
            return {"type": "http.request", "body": b"", "more_body": False}

        await app(scope("GET", "/api/export"), receive2, send2)
        seen["second"] = second[0]["status"]
        left.set()  # the client goes away
        await asyncio.wait_for(call, 10)  # ...and the stream ends with it
        seen["after"] = indexed.pool.checkedout()

    run_async(main)
    assert seen["checked_out"] == [0] * len(seen["checked_out"]) and seen["while_stalled"] == 0
    assert seen["second"] == 503 and seen["after"] == 0


def test_export_refuses_bad_filters_before_it_starts(indexed):
    with TestClient(create_app(Settings(), indexed)) as client:
        for params in ({"sol_min": 2**63}, {"sol_max": -(2**63) - 1}, {"label": "a\x00b"}):
            r = client.get("/api/export", params=params)
            assert r.status_code == 422, (params, r.status_code, r.text[:200])
        assert client.get("/api/export", params={"sol_min": 0}).status_code == 200


def test_an_export_whose_client_reads_nothing_is_dropped_after_the_timeout(indexed, monkeypatch):
    monkeypatch.setattr(export_route, "PAGE_ROWS", 4)
    app = create_app(Settings(max_exports=1, body_timeout=0.5), indexed)

    async def main():
        async def receive():
            await asyncio.sleep(3600)  # never leaves, never reads

        sent = []

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) >= 3:
                await asyncio.sleep(3600)

        first = {"type": "http.request", "body": b"", "more_body": False}
        queue = [first]

        async def receive_once():
            return queue.pop() if queue else await receive()

        await asyncio.wait_for(app(scope("GET", "/api/export"), receive_once, send), 10)
        after = []

        async def send2(message):
            after.append(message)

        await app(scope("GET", "/api/export"), lambda: asyncio.sleep(0, first), send2)
        return after[0]["status"], indexed.pool.checkedout()

    assert run_async(main) == (200, 0)  # the stalled one gave its place back


def test_bulk_downloads_at_once_are_capped_and_a_finished_one_gives_its_place_back(indexed, example_images):
    app = create_app(Settings(max_downloads=1, body_timeout=5), indexed)

    async def main():
        stalled, go_on = asyncio.Event(), asyncio.Event()

        def receiver():
            # The request once, then a client that stays: a receive that kept answering at once would
            # spin the stream's disconnect listener without ever yielding to the event loop.
            messages = [{"type": "http.request", "body": b"", "more_body": False}]

            async def receive():
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()

            return receive

        async def slow_send(message):
            if message["type"] == "http.response.body" and not stalled.is_set():
                stalled.set()  # the first chunk of the zip: this client pauses here
                await go_on.wait()

        first = asyncio.create_task(app(scope("GET", "/api/download.zip"), receiver(), slow_send))
        await asyncio.wait_for(stalled.wait(), 10)
        statuses = []

        async def keep(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope("GET", "/api/download.zip"), receiver(), keep)  # while the first one streams
        await app(scope("GET", "/api/export"), receiver(), keep)  # exports have their own cap
        go_on.set()
        await asyncio.wait_for(first, 10)
        await app(scope("GET", "/api/download.zip"), receiver(), keep)  # after it finished
        return statuses

    assert run_async(main) == [503, 200, 200]
