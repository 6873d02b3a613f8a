"""Errors into statuses by kind and type: the table, the stored images that cannot be shown, and the
family's other errors; a bug stays a 500."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from marsvision.archive.db import open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.errors import ImageError, ImageErrorKind, MarsvisionError
from marsvision.web.app import create_app
from marsvision.web.errors import IMAGE_STATUS, add_error_handlers
from marsvision.web.settings import Settings


def test_every_kind_has_its_status():
    assert set(IMAGE_STATUS) == set(ImageErrorKind)
    assert {k.name: IMAGE_STATUS[k] for k in ImageErrorKind} == {
        "NOT_FOUND": 404,
        "EMPTY": 422,
        "NOT_AN_IMAGE": 415,
        "BOMB": 422,
        "CORRUPT": 422,
    }


def test_errors_a_route_leaves_to_the_handlers():
    app = FastAPI()
    add_error_handlers(app)
    raised = {
        "/bomb": ImageError("refused as a possible decompression bomb", ImageErrorKind.BOMB),
        "/gone": ImageError("file not found", ImageErrorKind.NOT_FOUND),
        "/family": MarsvisionError("no model version 'x'"),
        "/bug": RuntimeError("a bug"),
    }
    for path, error in raised.items():
        app.add_api_route(path, lambda error=error: (_ for _ in ()).throw(error))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/bomb").status_code == 422 and "bomb" in client.get("/bomb").json()["detail"]
    assert client.get("/gone").status_code == 404
    assert client.get("/family").json() == {"detail": "no model version 'x'"}
    assert client.get("/family").status_code == 422
    assert client.get("/bug").status_code == 500


@pytest.fixture
def broken_archive(tmp_path, broken_images, example_images):
    data = example_images[0].read_bytes()
    (broken_images / "cut.jpg").write_bytes(data[: len(data) // 3])  # a real JPEG, truncated
    db = f"sqlite:///{tmp_path / 'a.db'}"
    run_index([str(example_images[0]), str(broken_images)], IndexConfig(db=db), progress=False)
    engine = open_engine(db)
    with TestClient(create_app(Settings(), engine)) as client:
        yield client, broken_images
    engine.dispose()


def test_stored_images_that_cannot_be_shown_answer_by_kind(broken_archive, example_images):
    client, folder = broken_archive
    ids = {i["path"].rsplit("/", 1)[-1]: i["id"] for i in client.get("/api/images").json()["items"]}
    expected = {"empty.jpg": 422, "notes.jpg": 415, "half.JPG": 415, "cut.jpg": 422}  # half.JPG: a header only
    for name, status in expected.items():
        r = client.get(f"/api/images/{ids[name]}/thumbnail")
        assert r.status_code == status and name in r.json()["detail"], (name, r.text)
    (folder / "cut.jpg").unlink()
    assert client.get(f"/api/images/{ids['cut.jpg']}/thumbnail").status_code == 404
