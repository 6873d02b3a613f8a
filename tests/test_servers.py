"""The server fixtures work: a real PostgreSQL takes a SQLAlchemy round trip, a real Chromium runs a page's JS."""

from __future__ import annotations

import datetime
import functools
import http.server
import threading

import pytest

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>marsvision test page</title></head>
<body>
  <p id="status">waiting</p>
  <button id="go" onclick="document.getElementById('status').textContent = 'clicked on ' + location.host">Go</button>
</body></html>
"""


@pytest.mark.slow
def test_postgres_round_trip(postgres_url):  # noqa: F811
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        meta = sa.MetaData()
        rovers = sa.Table(
            "rovers",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(40), nullable=False),
            sa.Column("landed", sa.Date),
        )
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(rovers.insert(), [{"name": "Curiosity", "landed": datetime.date(2012, 8, 6)}])
        with engine.connect() as conn:
            row = conn.execute(sa.select(rovers.c.id, rovers.c.name, rovers.c.landed)).one()
            version = conn.execute(sa.text("select version()")).scalar_one()
        assert tuple(row) == (1, "Curiosity", datetime.date(2012, 8, 6))
        assert version.startswith("PostgreSQL ")
        meta.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture
def local_site(tmp_path):
    """Serve tmp_path/site over HTTP on 127.0.0.1 (free port) from a background thread; yields the base URL."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE, encoding="utf-8")

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep request lines out of pytest's captured stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
def test_browser_clicks_button(browser_page, local_site, tmp_path):  # noqa: F811
    page = browser_page
    page.goto(f"{local_site}/index.html")
    assert page.title() == "marsvision test page"
    assert page.text_content("#status") == "waiting"
    page.click("#go")
    port = local_site.rsplit(":", 1)[1]
    assert page.text_content("#status") == f"clicked on 127.0.0.1:{port}"
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
