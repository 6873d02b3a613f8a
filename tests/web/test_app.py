"""The archive's REST API (marsvision.web), in-process (TestClient), on SQLite and PostgreSQL; real-server tests."""

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from marsvision.archive.db import open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.web.app import create_app
from marsvision.web.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def archive(db_url, example_images, broken_images, tmp_path):
    run_index([str(example_images[0].parent), str(broken_images)], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    app = create_app(Settings(token=TOKEN, max_upload_bytes=64 * 1024, uploads=tmp_path / "uploads"), engine)
    with TestClient(app) as client:  # its lifespan closes the model at the end
        yield client
    engine.dispose()


def test_health_and_readiness(archive):
    assert archive.get("/healthz").json() == {"status": "ok"}
    ready = archive.get("/readyz").json()
    assert ready["status"] == "ready" and ready["classes"] == 24 and ready["model"].startswith("marsvision-lite0")


def test_search_filters_sorting_and_paging(archive):
    everything = archive.get("/api/images", params={"page_size": 100}).json()
    assert everything["total"] == 15 and len(everything["items"]) == 15
    wheel = archive.get("/api/images", params={"label": "wheel"}).json()
    assert wheel["total"] == 1 and wheel["items"][0]["label"] == "wheel" and "features" not in wheel["items"][0]
    sols = archive.get("/api/images", params={"sol_min": 700, "sol_max": 900, "instrument": "mr"}).json()["items"]
    assert sols and all(700 <= i["sol"] <= 900 and i["instrument"] == "MR" for i in sols)
    confident = archive.get("/api/images", params={"min_confidence": 0.999, "sort": "confidence", "descending": True})
    conf = [i["confidence"] for i in confident.json()["items"]]
    assert conf == sorted(conf, reverse=True) and min(conf) >= 0.999
    assert archive.get("/api/images", params={"error": True}).json()["total"] == 3
    # 12 examples, as many flagged unknown as examples/README.md's table says (none since the two-part novelty)
    flagged = sum(
        [c.strip() for c in line.strip("|").split("|")][4] == "yes"
        for line in (Path(__file__).parents[2] / "examples" / "README.md").read_text().splitlines()
        if line.startswith("| 0")
    )
    assert archive.get("/api/images", params={"unknown": False, "error": False}).json()["total"] == 12 - flagged
    assert archive.get("/api/images", params={"unknown": True}).json()["total"] == flagged
    pages = [archive.get("/api/images", params={"page": p, "page_size": 4}).json()["items"] for p in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [4, 4, 4, 3] and len({i["id"] for p in pages for i in p}) == 15
    assert archive.get("/api/images", params={"sort": "path;drop"}).status_code == 422
    assert archive.get("/api/images", params={"min_confidence": 2}).status_code == 422


def test_detail_thumbnail_heatmap_similar_classes(archive):
    first = archive.get("/api/images", params={"error": False}).json()["items"][0]
    d = archive.get(f"/api/images/{first['id']}").json()
    assert d["name_fields"]["instrument_name"] in ("MAHLI", "Mastcam Left", "Mastcam Right") and d["corrections"] == []
    thumb = archive.get(f"/api/images/{first['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    heat = archive.get(f"/api/images/{first['id']}/heatmap", params={"label": "wheel"})
    assert heat.status_code == 200 and heat.content[:4] == b"\x89PNG"
    assert archive.get(f"/api/images/{first['id']}/heatmap", params={"label": "unicorn"}).status_code == 422
    near = archive.get(f"/api/images/{first['id']}/similar", params={"k": 5}).json()["items"]
    assert len(near) == 5 and first["id"] not in [n["id"] for n in near]
    assert [n["similarity"] for n in near] == sorted((n["similarity"] for n in near), reverse=True)
    classes = archive.get("/api/classes").json()["classes"]
    assert len(classes) == 24 and sum(c["count"] for c in classes) == 12
    assert archive.get("/api/images/99999").status_code == 404
    assert archive.get("/api/images/99999/thumbnail").status_code == 404
    assert archive.get("/api/images/..%2F..%2Fetc%2Fpasswd/thumbnail").status_code in (404, 422)  # ids only


def test_heatmap_decodes_its_image_once_and_is_served_from_the_cache_after(archive, monkeypatch):
    """The page's size (512) over an example image (256 px): one decode, for the model and the overlay."""
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(im):
        if im.tile:  # pixels still to decode (a loaded image's load() does nothing)
            decoded.append(im.filename)
        return real_load(im)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    first = archive.get("/api/images", params={"error": False}).json()["items"][0]["id"]
    heat = archive.get(f"/api/images/{first}/heatmap", params={"size": 512})
    assert heat.status_code == 200 and heat.content[:4] == b"\x89PNG" and len(decoded) == 1
    again = archive.get(f"/api/images/{first}/heatmap", params={"size": 512})
    assert again.content == heat.content and len(decoded) == 1  # the cache: nothing decoded
    assert archive.app.state.archive.heatmaps.get((first, None, 512, 1)) == heat.content


def test_similar_takes_the_search_filters_and_sees_new_rows(archive, example_images):
    from PIL import Image

    first = archive.get("/api/images", params={"error": False}).json()["items"][0]["id"]
    near = archive.get(f"/api/images/{first}/similar", params={"k": 100}).json()["items"]
    assert len(near) == 11 and first not in [n["id"] for n in near]
    assert [n["similarity"] for n in near] == sorted((n["similarity"] for n in near), reverse=True)
    label = near[-1]["label"]
    same = archive.get("/api/images", params={"label": label, "error": False}).json()["items"]
    only = archive.get(f"/api/images/{first}/similar", params={"k": 100, "label": label}).json()["items"]
    assert {n["id"] for n in only} == {n["id"] for n in same} - {first} and {n["label"] for n in only} == {label}
    assert archive.get(f"/api/images/{first}/similar", params={"sol_min": 10**6}).json()["items"] == []
    assert archive.get(f"/api/images/{first}/similar", params={"min_confidence": 2}).status_code == 422
    buf = io.BytesIO()
    Image.open(example_images[0]).rotate(180).save(buf, format="JPEG")
    stored = archive.post(
        "/api/classify", params={"store": True}, headers=AUTH, files=[("files", ("new.jpg", buf.getvalue()))]
    )
    assert stored.status_code == 200
    near = archive.get(f"/api/images/{first}/similar", params={"k": 100}).json()["items"]
    assert len(near) == 12 and stored.json()["items"][0]["id"] in [n["id"] for n in near]


def test_every_time_carries_its_utc_offset(archive):
    import datetime as dt

    img = archive.get("/api/images", params={"label": "wheel"}).json()["items"][0]
    archive.put(f"/api/images/{img['id']}/label", json={"label": "ground"}, headers=AUTH)
    d = archive.get(f"/api/images/{img['id']}").json()
    times = [d["indexed_at"], d["reviewed_at"], d["corrections"][0]["created_at"]]
    times += [m["created_at"] for m in archive.get("/api/models").json()["models"]]
    times += [i["indexed_at"] for i in archive.get(f"/api/images/{img['id']}/similar").json()["items"]]
    assert all(dt.datetime.fromisoformat(t).utcoffset() == dt.timedelta(0) for t in times), times


def test_corrections_need_the_token_and_never_overwrite_the_model(archive):
    img = archive.get("/api/images", params={"label": "wheel"}).json()["items"][0]
    body = {"label": "ground", "note": "it is mostly ground", "author": "curator-1"}
    assert archive.put(f"/api/images/{img['id']}/label", json=body).status_code == 401
    assert (
        archive.put(f"/api/images/{img['id']}/label", json=body, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    done = archive.put(f"/api/images/{img['id']}/label", json=body, headers=AUTH)
    assert done.status_code == 200
    d = done.json()
    assert d["label"] == "wheel" and d["reviewed_label"] == "ground"  # the model's label stays
    assert d["corrections"][0] == {
        **d["corrections"][0],
        "label": "ground",
        "author": "curator-1",
        "model_label": "wheel",
    }
    assert archive.put(f"/api/images/{img['id']}/label", json={"label": "unicorn"}, headers=AUTH).status_code == 422
    assert archive.get("/api/images", params={"reviewed": True}).json()["total"] == 1
    wheel = next(c for c in archive.get("/api/classes").json()["classes"] if c["label"] == "wheel")
    assert wheel["reviewed"] == 1 and wheel["not_reviewed"] == 0


def test_writes_refused_without_a_configured_token(db_url, example_images):
    run_index([str(example_images[0])], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    with TestClient(create_app(Settings(), engine)) as client:
        r = client.put("/api/images/1/label", json={"label": "ground"})
        assert r.status_code == 403 and "--token-file" in r.json()["detail"]
    with TestClient(create_app(Settings(allow_anonymous_writes=True), engine)) as client:
        assert client.put("/api/images/1/label", json={"label": "ground"}).status_code == 200
    engine.dispose()


def test_export_all_matching_rows_csv_and_json(archive):
    text = archive.get("/api/export", params={"format": "csv", "error": False}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12 and list(rows[0])[:5] == ["path", "label", "confidence", "unknown", "novelty"]
    items = archive.get("/api/export", params={"format": "json", "label": "wheel"}).json()
    assert len(items) == 1 and items[0]["label"] == "wheel" and json.loads(rows[0]["top_k"])


def jpeg_bytes(path) -> bytes:
    return Path(path).read_bytes()


def test_classify_uploads_and_bad_input(archive, example_images):
    from archive.conftest_helpers import png_bomb

    files = [("files", (p.name, jpeg_bytes(p), "image/jpeg")) for p in example_images[:2]]
    r = archive.post("/api/classify", files=files)
    assert (
        r.status_code == 200
        and [i["label"] for i in r.json()["items"]]
        and all(i["id"] is None if "id" in i else True for i in r.json()["items"])
    )
    assert archive.get("/api/images").json()["total"] == 15  # not stored without ?store=true
    bad = {
        "big.jpg": (b"\xff\xd8" + b"\0" * (70 * 1024), 413),
        "bomb.png": (png_bomb(40000, 40000), 422),
        "notes.jpg": (b"hello, not an image", 415),
        "empty.jpg": (b"", 422),
    }
    for name, (data, status) in bad.items():
        r = archive.post("/api/classify", files=[("files", (name, data, "application/octet-stream"))])
        assert r.status_code == status, (name, r.text)
        assert name in r.json()["detail"]
    assert archive.get("/healthz").status_code == 200 and archive.get("/readyz").json()["status"] == "ready"
    assert archive.post("/api/classify", params={"store": True}, files=files[:1]).status_code == 401


def test_stored_upload_joins_the_archive(archive, tmp_path, monkeypatch, example_images):
    """The upload is written into the settings' uploads folder; the environment, read at start-up only,
    no longer matters."""
    from PIL import Image

    monkeypatch.setenv("MARSVISION_UPLOADS", str(tmp_path / "elsewhere"))
    buf = io.BytesIO()
    Image.open(example_images[0]).rotate(90).save(buf, format="JPEG")
    r = archive.post(
        "/api/classify",
        params={"store": True},
        headers=AUTH,
        files=[("files", ("new.jpg", buf.getvalue(), "image/jpeg"))],
    )
    assert r.status_code == 200 and r.json()["items"][0]["id"]
    stored = archive.get(f"/api/images/{r.json()['items'][0]['id']}").json()["path"]
    assert Path(stored).parent == tmp_path / "uploads" and Path(stored).is_file()
    assert not (tmp_path / "elsewhere").exists()
    assert archive.get("/api/images").json()["total"] == 16
    assert archive.get(f"/api/images/{r.json()['items'][0]['id']}/thumbnail").status_code == 200


def test_classification_slots_queue_in_order_then_answer_503_with_retry_after(monkeypatch):
    """The middleware in front of POST /api/classify: FIFO up to its queue, then 503 + Retry-After at once."""
    import asyncio

    import marsvision.web.slots as service

    monkeypatch.setattr(service, "QUEUE_PER_SLOT", 2)  # one slot: one runs, two wait, more are refused
    order, gate = [], asyncio.Event()

    async def classify(scope, receive, send):  # stands in for the app: holds its slot until the gate opens
        order.append(scope["n"])
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(mw, n):
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/api/classify", "n": n, "headers": []}
        await mw(scope, receive, send)
        start = sent[0]
        return start["status"], dict(start["headers"]).get(b"retry-after")

    async def main():
        mw = service.ClassificationSlots(classify, slots=1)
        tasks = [asyncio.create_task(call(mw, n)) for n in range(4)]  # 1 runs, 2 wait, 1 is refused
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own thread: the browser tests keep an event loop in this one
        results = pool.submit(asyncio.run, main()).result()
    assert [r[0] for r in results] == [200, 200, 200, 503] and results[3][1] == b"1"
    assert order == [0, 1, 2]  # first come, first served


def test_requests_after_the_database_dropped_its_connections_succeed(archive, db_url):
    """PostgreSQL restarted or dropped the server's pooled connections: the next requests get fresh ones."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no server connection to lose")
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    total = archive.get("/api/images").json()["total"]
    admin = create_engine(db_url, poolclass=NullPool)
    with admin.connect() as conn:
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert dropped >= 1
    assert archive.get("/api/images", params={"sort": "confidence"}).json()["total"] == total
    assert archive.get("/api/images/1").status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_server_binds_loopback_serves_docs_and_refuses_anonymous_writes(tmp_path, example_images):
    """What only a real server shows: the command's defaults, the listening address, /docs over HTTP."""
    db = tmp_path / "real.db"
    run_index([str(example_images[0].parent)], IndexConfig(db=str(db)), progress=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MARSVISION_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "marsvision.cli", "serve", "--db", str(db), "--port", str(port)],
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(url + "/readyz").json()["status"] == "ready"
        assert "swagger" in httpx.get(url + "/docs").text.lower()
        assert httpx.get(url + "/openapi.json").json()["paths"]["/api/images"]
        assert httpx.put(url + "/api/images/1/label", json={"label": "ground"}).status_code == 403
        listening = [
            line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"
        ]  # state LISTEN
        assert f"0100007F:{port:04X}" in listening  # 127.0.0.1 only
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "writes: disabled" in out and f"127.0.0.1:{port}" in out


@pytest.mark.slow
def test_real_server_with_two_workers_shares_one_archive(tmp_path, example_images):
    """`serve --workers 2`: two processes answer, a correction written through one is read through any."""
    db = tmp_path / "workers.db"
    run_index([str(example_images[0].parent)], IndexConfig(db=str(db)), progress=False)
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MARSVISION_TOKEN"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marsvision.cli",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--workers",
            "2",
            "--token-file",
            str(tmp_path / "token"),
        ],
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).json().get("status") == "ready":
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2  # uvicorn's supervisor and its worker processes
        assert httpx.put(url + "/api/images/1/label", json={"label": "wheel"}).status_code == 401
        r = httpx.put(url + "/api/images/1/label", json={"label": "wheel", "note": "two workers"}, headers=AUTH)
        assert r.status_code == 200, r.text
        for _ in range(6):  # fresh connections: any worker may answer
            found = httpx.get(url + "/api/images", params={"reviewed_label": "wheel"}).json()
            assert [i["id"] for i in found["items"]] == [1]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode is not None
