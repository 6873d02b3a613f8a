"""Limits on one request (marsvision.web.limits and the classify route): body size before and while it is
read, body time, files and pixels per request; a slow body holds no classification slot."""

import asyncio
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from web.asgi_driver import run_async, scope

from marsvision.archive.db import open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.web.app import create_app
from marsvision.web.settings import ServeConfig, Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def engine(db_url, example_images):
    run_index([str(example_images[0])], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


async def call(app, sc, chunks, delay_after=None):
    """Send ``chunks`` as the body (then stall forever when ``delay_after`` is that many chunks); returns
    (status, chunks the app read)."""
    sent, read = [], {"n": 0}

    async def receive():
        if delay_after is not None and read["n"] >= delay_after:
            await asyncio.sleep(3600)
        if read["n"] < len(chunks):
            read["n"] += 1
            return {"type": "http.request", "body": chunks[read["n"] - 1], "more_body": read["n"] < len(chunks)}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(sc, receive, send)
    return sent[0]["status"], read["n"]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    boundary = b"xXxBoUnDaRyxXx"
    body = b""
    for name, data in files:
        body += b"--" + boundary + b"\r\n"
        body += f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode()
        body += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, b"multipart/form-data; boundary=" + boundary


def test_declared_and_streamed_bodies_over_the_limit_are_413_before_they_are_read(engine):
    app = create_app(Settings(token=TOKEN, max_body_bytes=256 * 1024), engine)
    big = [(b"content-length", str(200 * 2**20).encode()), (b"content-type", b"application/json")]
    status, read = run_async(lambda: call(app, scope("POST", "/api/classify", headers=big), [b"x" * 65536] * 4))
    assert (status, read) == (413, 0)
    chunked = [(b"content-type", b"multipart/form-data; boundary=b")]  # no length: counted as it comes
    status, read = run_async(lambda: call(app, scope("POST", "/api/classify", headers=chunked), [b"x" * 65536] * 40))
    assert status == 413 and read == 5  # cut at the first chunk over 256 KB


def test_writes_are_authenticated_before_their_body_is_read(engine):
    app = create_app(Settings(token=TOKEN), engine)
    headers = [(b"content-length", str(10 * 2**20).encode()), (b"content-type", b"application/json")]
    body = [b" " * 2**20] * 10
    status, read = run_async(lambda: call(app, scope("PUT", "/api/images/1/label", headers=headers), body))
    assert (status, read) == (401, 0)
    store = scope("POST", "/api/classify", b"store=true", headers=headers)
    assert run_async(lambda: call(app, store, body)) == (401, 0)


def test_a_slow_body_gets_408_and_holds_no_classification_slot(engine, example_images):
    app = create_app(Settings(classify_slots=1, body_timeout=1.5), engine)
    body, ctype = multipart([("a.jpg", example_images[0].read_bytes())])
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]

    async def main():
        slow = asyncio.create_task(
            call(app, scope("POST", "/api/classify", headers=headers), [body[:100], body[100:]], 1)
        )
        await asyncio.sleep(0.2)  # the slow upload has begun
        fast = await call(app, scope("POST", "/api/classify", headers=headers), [body])
        return fast, await asyncio.wait_for(slow, 10)

    fast, slow = run_async(main)
    assert fast[0] == 200 and slow[0] == 408


def test_files_and_pixels_per_request_are_capped(engine, example_images):
    app = create_app(Settings(max_files=3, max_pixels=5_000_000), engine)
    jpeg = example_images[0].read_bytes()
    with TestClient(app) as client:
        ok = client.post("/api/classify", files=[("files", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(3)])
        assert ok.status_code == 200
        many = client.post("/api/classify", files=[("files", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(4)])
        assert many.status_code == 400 and "files" in many.json()["detail"].lower()
        buf = io.BytesIO()
        Image.new("I;16", (2000, 2000)).save(buf, format="PNG")  # 4 Mpx in a few kB
        png = buf.getvalue()
        big = client.post("/api/classify", files=[("files", (f"{i}.png", png, "image/png")) for i in range(2)])
        assert big.status_code == 413 and "million pixels" in big.json()["detail"]


def test_every_limit_is_a_serve_option():
    s = ServeConfig(max_body_mb=2, max_files=5, max_pixels_m=1.5, body_timeout=7, max_exports=3).settings({})
    assert (s.max_body_bytes, s.max_files, s.max_pixels, s.body_timeout, s.max_exports) == (
        2 * 2**20,
        5,
        1_500_000,
        7,
        3,
    )
