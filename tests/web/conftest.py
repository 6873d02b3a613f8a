"""The web tests stand on the archive's fixtures: an empty database per test (SQLite, and PostgreSQL when
slow tests run) and a folder of broken images; and ``archive_server``, a real server for the page tests."""

import socket
import threading
import time

import pytest
from archive.conftest import broken_images, db_url  # noqa: F401 (fixtures, used by name)

TOKEN = "page-test-token"


@pytest.fixture
def archive_server(tmp_path, example_images):
    """(base URL, engine) of a real `marsvision serve` app on a free 127.0.0.1 port, write token TOKEN."""
    import httpx
    import uvicorn

    from marsvision.archive.db import open_engine
    from marsvision.archive.index import IndexConfig, run_index
    from marsvision.web.app import create_app
    from marsvision.web.settings import Settings

    db = tmp_path / "archive.db"
    report = run_index([str(p) for p in example_images], IndexConfig(db=str(db)), progress=False)
    assert report.indexed == len(example_images) == 12 and not report.failed
    engine = open_engine(str(db))
    # Bound here and handed to uvicorn: no other process can take the port between choosing and binding it.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(Settings(token=TOKEN), engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert thread.is_alive(), "the server thread died while starting"
            assert time.monotonic() < deadline, "the server did not answer /healthz within 30 s"
            time.sleep(0.05)
        yield base, engine
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        engine.dispose()
