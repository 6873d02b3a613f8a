"""What a hostile client or page cannot do (marsvision.web.security, the /file route, stored uploads): another
Host, another Origin, content served as something else, files outside the indexed content, 500s from
malformed input."""

import io
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marsvision.archive.db import open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.web.app import create_app
from marsvision.web.settings import ServeConfig, Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(db_url, example_images, tmp_path):
    """A client over an archive of copies of two example images (in tmp_path/indexed), token TOKEN."""
    folder = tmp_path / "indexed"
    folder.mkdir()
    for p in example_images[:2]:
        shutil.copy(p, folder / p.name)
    run_index([str(folder)], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    settings = Settings(token=TOKEN, uploads=tmp_path / "uploads", allow_anonymous_writes=False)
    with TestClient(create_app(settings, engine)) as client:
        yield client, folder
    engine.dispose()


def test_host_header_must_be_an_allowed_host(served):
    client, _ = served
    assert client.get("/api/images").status_code == 200  # testserver: the in-process default
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.nip.io"):
        assert client.get("/api/images", headers={"Host": host}).status_code == 400
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200
    defaults = ServeConfig(host="10.0.0.5").settings({}).allowed_hosts
    assert set(defaults) == {"10.0.0.5", "localhost", "127.0.0.1", "::1"}
    assert ServeConfig(allowed_hosts="archive.lab, *").settings({}).allowed_hosts == ("archive.lab", "*")


def test_writes_from_another_origin_are_refused(served):
    client, _ = served
    body = {"label": "ground"}
    evil = client.put("/api/images/1/label", json=body, headers={**AUTH, "Origin": "http://attacker.example"})
    assert evil.status_code == 403
    assert client.put("/api/images/1/label", json=body, headers={**AUTH, "Origin": "null"}).status_code == 403
    same = client.put("/api/images/1/label", json=body, headers={**AUTH, "Origin": "http://testserver"})
    assert same.status_code == 200
    assert client.get("/api/images", headers={"Origin": "http://attacker.example"}).status_code == 200  # a read


def test_every_answer_carries_the_secure_headers(served):
    client, _ = served
    for r in (
        client.get("/"),
        client.get("/api/images"),
        client.get("/api/images/1/file"),
        client.get("/api/images/999"),
        client.get("/api/images", headers={"Host": "attacker.example"}),
    ):
        h = r.headers
        assert (
            "frame-ancestors 'none'" in h["content-security-policy"]
            and "default-src 'self'" in h["content-security-policy"]
        ), r.url
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"


def test_stored_uploads_are_named_by_content_and_format_and_written_once(served, tmp_path, example_images):
    client, _ = served
    buf = io.BytesIO()
    Image.open(example_images[2]).save(buf, format="JPEG")
    hostile = buf.getvalue() + b"<html><script>alert(sessionStorage.getItem('marsvision.token'))</script></html>"
    names = ["x.html", "y.svg", "z.jpg"]
    files = [("files", (n, hostile, "text/html")) for n in names]
    r = client.post("/api/classify", params={"store": True}, files=files, headers=AUTH)
    assert r.status_code == 200, r.text
    ids = {i["id"] for i in r.json()["items"]}
    assert len(ids) == 1 and [i["filename"] for i in r.json()["items"]] == names
    stored = list((tmp_path / "uploads").iterdir())
    import hashlib

    assert len(stored) == 1 and stored[0].name == hashlib.sha256(hostile).hexdigest() + ".jpg"
    served_file = client.get(f"/api/images/{ids.pop()}/file")
    assert served_file.status_code == 200 and served_file.headers["content-type"] == "image/jpeg"
    assert served_file.headers["x-content-type-options"] == "nosniff"


def test_file_serves_only_the_indexed_content(served, tmp_path):
    client, folder = served
    items = client.get("/api/images").json()["items"]
    first, second = (Path(i["path"]) for i in items[:2])
    assert client.get(f"/api/images/{items[0]['id']}/file").content == first.read_bytes()
    secret = tmp_path / "token.txt"
    secret.write_text(TOKEN)
    first.unlink()
    first.symlink_to(secret)  # someone who can write into the indexed folder
    r = client.get(f"/api/images/{items[0]['id']}/file")
    assert r.status_code == 409 and "link" in r.json()["detail"] and TOKEN not in r.text
    original = second.read_bytes()
    second.write_bytes(original[:-10] + b"\0" * 10)  # same size, other content
    r = client.get(f"/api/images/{items[1]['id']}/file")
    assert r.status_code == 409 and "SHA-256" in r.json()["detail"]
    second.write_bytes(original + b"more")
    r = client.get(f"/api/images/{items[1]['id']}/file")
    assert r.status_code == 409 and "size" in r.json()["detail"]
    second.unlink()
    assert client.get(f"/api/images/{items[1]['id']}/file").status_code == 404


def test_malformed_input_is_422_never_500(served, example_images):
    client, _ = served
    big = 2**63
    for path in (f"/api/images/{big}", f"/api/images/{big}/file", f"/api/images/{big}/thumbnail"):
        assert client.get(path).status_code == 422, path
    assert client.put(f"/api/images/{big}/label", json={"label": "ground"}, headers=AUTH).status_code == 422
    for params in ({"page": big}, {"sol_min": big}, {"sol_max": -big}, {"label": "a\x00b"}, {"q": "\x00"}):
        assert client.get("/api/images", params=params).status_code == 422, params
    note = '{"label": "ground", "note": "\\ud800"}'
    r = client.put("/api/images/1/label", content=note, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    jpeg = example_images[0].read_bytes()
    for name in (b"a\x00b.jpg", b"x" * 256 + b".jpg"):  # raw: httpx would escape the NUL
        body = (
            b'--bnd\r\nContent-Disposition: form-data; name="files"; filename="' + name + b'"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--bnd--\r\n"
        )
        r = client.post("/api/classify", content=body, headers={"Content-Type": "multipart/form-data; boundary=bnd"})
        assert r.status_code == 422, (name[:10], r.status_code)
