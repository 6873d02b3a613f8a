"""Atlas-style browsing through the API: the label-field filters, the off-camera flag, the confident switch,
facet counts, the per-sol timeline and the bulk download, on SQLite and PostgreSQL.

The archive: the 12 example images and 3 unreadable files, indexed; then four rows are given PDS label
fields and cameras as the indexer writes them for products (an engineering camera, off the training
cameras, on two of them), so the filters have values to find and values to miss."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from marsvision.archive.db import Image, open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.web.app import create_app
from marsvision.web.settings import Settings

PRODUCTS = [  # the first four readable rows, in id order, become these
    dict(
        product_id="NLB_450000000EDR_F0000000NCAM00100M1",
        instrument="NL",
        instrument_id="NAV_LEFT_B",
        off_camera=True,
        sequence_id="NCAM00100",
        target="MARS",
        filter_name=None,
        start_time="2013-01-01T10:00:00+00:00",
        site=5,
        drive=100,
    ),
    dict(
        product_id="0718ML0030500000304873E01_DRCL",
        instrument="ML",
        instrument_id="MAST_LEFT",
        off_camera=False,
        sequence_id="mcam03050",
        target="Mars",
        filter_name="L0",
        start_time="2013-02-01T10:00:00+00:00",
        site=6,
        drive=0,
    ),
    dict(
        product_id="0762MR0032740140403831I01_DRCL",
        instrument="MR",
        instrument_id="MAST_RIGHT",
        off_camera=False,
        sequence_id="mcam03274",
        target="CALIBRATION",
        filter_name="R0",
        start_time="2013-03-01T10:00:00+00:00",
        site=6,
        drive=20,
    ),
    dict(
        product_id="FRB_460000000EDR_F0000000FHAZ00200M1",
        instrument="Front_Hazcam_Right",  # an identifier as a label writes it (not upper-cased)
        instrument_id="FHAZ_RIGHT_B",
        off_camera=True,
        sequence_id="FHAZ00200",
        target="MARS",
        filter_name=None,
        start_time="2013-04-01T10:00:00+00:00",
        site=7,
        drive=0,
    ),
]


@pytest.fixture
def archive(db_url, example_images, broken_images, tmp_path):
    import datetime as dt

    run_index([str(example_images[0].parent), str(broken_images)], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    with engine.begin() as conn:
        ids = conn.scalars(select(Image.id).where(Image.error.is_(None)).order_by(Image.id)).all()
        conn.execute(update(Image).where(Image.error.is_(None)).values(off_camera=False))
        for image_id, fields in zip(ids, PRODUCTS, strict=False):
            t = dt.datetime.fromisoformat(fields["start_time"])
            conn.execute(update(Image).where(Image.id == image_id).values(**{**fields, "start_time": t}))
        # one curator's label, so the reviewed facet has both values
        conn.execute(update(Image).where(Image.id == ids[5]).values(reviewed_label="ground"))
    settings = Settings(allow_anonymous_writes=True, max_download_files=100, max_download_bytes=50 * 2**20)
    app = create_app(settings, engine)
    with TestClient(app) as client:
        client.product_ids, client.ids = ids[:4], ids
        yield client
    engine.dispose()


def search(client, **params) -> list[dict]:
    r = client.get("/api/images", params={"page_size": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def total(client, **params) -> int:
    return client.get("/api/images", params={"page_size": 1, **params}).json()["total"]


def test_label_field_filters(archive):
    ids = archive.product_ids
    assert [i["id"] for i in search(archive, off_camera=True)] == [ids[0], ids[3]]
    assert len(search(archive, off_camera=False)) == 10
    assert [i["id"] for i in search(archive, product_id=PRODUCTS[1]["product_id"])] == [ids[1]]
    assert [i["id"] for i in search(archive, sequence_id="mcam03274")] == [ids[2]]
    assert [i["id"] for i in search(archive, target="mars")] == [ids[0], ids[1], ids[3]]  # any case
    assert [i["id"] for i in search(archive, target="Calibration")] == [ids[2]]
    assert [i["id"] for i in search(archive, filter_name="L0")] == [ids[1]]
    assert [i["id"] for i in search(archive, site=6)] == [ids[1], ids[2]]
    assert [i["id"] for i in search(archive, drive=0)] == [ids[1], ids[3]]
    # times: an offset is honoured (11:00+01:00 is 10:00 UTC), a time without one is UTC
    window = search(archive, start_time_min="2013-02-01T11:00:00+01:00", start_time_max="2013-03-01T10:00:00")
    assert [i["id"] for i in window] == [ids[1], ids[2]]
    assert [i["id"] for i in search(archive, start_time_min="2013-03-01T10:00:01Z")] == [ids[3]]
    # the instrument as a label writes it, and a code in any case
    assert [i["id"] for i in search(archive, instrument="Front_Hazcam_Right")] == [ids[3]]
    assert [i["id"] for i in search(archive, instrument="nl")] == [ids[0]]
    # q: part of the file name or of the product id
    assert [i["id"] for i in search(archive, q="FHAZ00200")] == [ids[3]]
    everything = search(archive)
    for q in (Path(everything[-1]["path"]).name[:6], PRODUCTS[1]["product_id"][:10]):  # a file name's, a product id's
        want = {i["id"] for i in everything if q in Path(i["path"]).name or q in (i["product_id"] or "")}
        assert want and {i["id"] for i in search(archive, q=q)} == want
    assert ids[1] in {i["id"] for i in search(archive, q=PRODUCTS[1]["product_id"][:10])}
    assert archive.get("/api/images", params={"start_time_min": "yesterday"}).status_code == 422


def test_items_carry_the_label_fields_and_sort_by_start_time(archive):
    ids = archive.product_ids
    items = search(archive, sort="start_time", descending=True)
    with_time = [i for i in items if i["start_time"]]
    assert [i["id"] for i in with_time] == [ids[3], ids[2], ids[1], ids[0]]
    first = next(i for i in items if i["id"] == ids[0])
    assert first["start_time"] == "2013-01-01T10:00:00+00:00"
    assert (first["product_id"], first["instrument_id"], first["off_camera"]) == (
        PRODUCTS[0]["product_id"],
        "NAV_LEFT_B",
        True,
    )
    assert (first["sequence_id"], first["target"], first["site"], first["drive"]) == ("NCAM00100", "MARS", 5, 100)
    detail = archive.get(f"/api/images/{ids[1]}").json()
    assert detail["filter_name"] == "L0" and detail["start_time"] == "2013-02-01T10:00:00+00:00"
    rows = list(csv.DictReader(io.StringIO(archive.get("/api/export", params={"off_camera": True}).text)))
    assert [r["product_id"] for r in rows] == [PRODUCTS[0]["product_id"], PRODUCTS[3]["product_id"]]
    assert rows[0]["start_time"] == "2013-01-01T10:00:00+00:00" and rows[0]["off_camera"] == "1"


def test_confident_switch_leaves_out_off_camera_unknown_and_unsure(archive, db_url):
    from sqlalchemy import create_engine

    ids = archive.ids
    engine = create_engine(db_url)
    with engine.begin() as conn:  # one unsure, one unknown among the training cameras' images
        conn.execute(update(Image).where(Image.id == ids[4]).values(confidence=0.89, unknown=False))
        conn.execute(update(Image).where(Image.id == ids[5]).values(confidence=0.99, unknown=True))
        conn.execute(update(Image).where(Image.id == ids[6]).values(confidence=0.9, unknown=False))
    engine.dispose()
    archive.app.state.archive.changed()
    confident = search(archive, confident=True)
    assert confident and all(
        i["confidence"] >= 0.9 and i["unknown"] is False and i["off_camera"] is not True for i in confident
    )
    got = {i["id"] for i in confident}
    assert not got & {ids[0], ids[3], ids[4], ids[5]} and ids[6] in got  # off-camera, unsure, unknown out; 0.9 in
    rest = {i["id"] for i in search(archive, confident=False)}
    assert not got & rest and len(got | rest) == 15  # the unreadable (no confidence) are among the rest
    assert total(archive, confident=True) == archive.get("/api/facets").json()["total"] - len(rest)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"sol_min": 700, "sol_max": 900},
        {"instrument": "MR", "reviewed": False},
        {"off_camera": False, "confident": True},
    ],
)
def test_facets_count_each_value_under_the_other_filters(archive, filters):
    """Each facet value's count is the search total with that value set and the facet's own filter replaced."""
    body = archive.get("/api/facets", params=filters).json()
    assert body["total"] == total(archive, **filters)
    assert set(body["facets"]) == {"label", "instrument", "unknown", "reviewed", "off_camera", "confident"}
    for facet, values in body["facets"].items():
        assert [v["count"] for v in values] == sorted((v["count"] for v in values), reverse=True)
        others = {k: v for k, v in filters.items() if k != facet}
        for v in values:
            if v["value"] is None:
                continue
            value = str(v["value"]).lower() if isinstance(v["value"], bool) else v["value"]
            assert v["count"] == total(archive, **others, **{facet: value}), (facet, v)
        # every image under the other filters with a value of this facet is counted once
        known = sum(v["count"] for v in values if v["value"] is not None)
        assert known <= total(archive, **others)


def test_facets_keep_the_values_their_own_filter_excludes(archive):
    label = search(archive, error=False)[0]["label"]
    labels = archive.get("/api/facets", params={"label": label}).json()["facets"]["label"]
    assert len(labels) > 1 and {v["value"] for v in labels} >= {label}  # other classes stay, with counts
    off = archive.get("/api/facets", params={"off_camera": True}).json()
    assert off["total"] == 2
    assert {v["value"]: v["count"] for v in off["facets"]["off_camera"]} == {True: 2, False: 10, None: 3}
    assert {v["value"] for v in off["facets"]["instrument"]} == {"NL", "Front_Hazcam_Right"}


def test_timeline_by_class_and_camera(archive):
    for by in ("class", "camera"):
        body = archive.get("/api/timeline", params={"by": by, "sol_min": 800, "sol_max": 900}).json()
        assert body["by"] == by and body["selected"] == [800, 900]
        assert body["sols"] == sorted(body["sols"])
        assert all(len(s["counts"]) == len(body["sols"]) for s in body["series"])
        # the sol range is left out: the whole mission, as the search without it
        assert sum(s["total"] for s in body["series"]) == total(archive, error=False)
        for i, sol in enumerate(body["sols"]):
            assert sum(s["counts"][i] for s in body["series"]) == total(archive, sol_min=sol, sol_max=sol)
        key = body["series"][0]["key"]
        param = {"class": "label", "camera": "instrument"}[by]
        assert body["series"][0]["total"] == total(archive, **{param: key})
    cams = archive.get("/api/timeline", params={"by": "camera", "off_camera": True}).json()
    assert {s["key"] for s in cams["series"]} == {"NL", "Front_Hazcam_Right"}
    assert archive.get("/api/timeline", params={"by": "target"}).status_code == 422


def test_facets_and_timeline_are_cached_until_a_write(archive):
    first = archive.get("/api/facets").json()
    image = search(archive, reviewed=False, error=False)[0]["id"]
    r = archive.put(f"/api/images/{image}/label", json={"label": "wheel"})
    assert r.status_code == 200, r.text
    after = archive.get("/api/facets").json()
    reviewed = lambda body: {v["value"]: v["count"] for v in body["facets"]["reviewed"]}  # noqa: E731
    assert reviewed(after)[True] == reviewed(first)[True] + 1  # the write cleared the cache


def test_download_zip_holds_the_files_and_their_metadata(archive, example_images):
    r = archive.get("/api/download.zip", params={"instrument": "MH"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "attachment" in r.headers["content-disposition"]
    wanted = search(archive, instrument="MH")
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names[-1] == "metadata.csv" and len(names) == len(wanted) + 1
        rows = list(csv.DictReader(io.StringIO(zf.read("metadata.csv").decode())))
        assert [int(row["id"]) for row in rows] == [i["id"] for i in wanted]
        for row, item in zip(rows, wanted, strict=True):
            assert row["zip_files"] == f"images/{item['id']}-{Path(item['path']).name}" and not row["zip_missing"]
            assert zf.read(row["zip_files"]) == Path(item["path"]).read_bytes()
            assert row["label"] == item["label"] and row["sha256"] == item["sha256"]


def test_download_names_missing_files_and_empty_results(archive, tmp_path, example_images):
    gone = search(archive, error=True)[0]
    Path(gone["path"]).unlink()
    with zipfile.ZipFile(io.BytesIO(archive.get("/api/download.zip", params={"error": True}).content)) as zf:
        rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(zf.read("metadata.csv").decode()))}
        assert len(rows) == 3 and rows[gone["id"]]["zip_missing"] == Path(gone["path"]).name
        assert len(zf.namelist()) == 3  # two files and the metadata
    empty = archive.get("/api/download.zip", params={"label": "no such class"})
    with zipfile.ZipFile(io.BytesIO(empty.content)) as zf:
        assert zf.namelist() == ["metadata.csv"]


def test_download_is_capped(archive):
    state = archive.app.state.archive
    object.__setattr__(state.settings, "max_download_files", 3)
    r = archive.get("/api/download.zip")
    assert r.status_code == 413 and "at most 3" in r.json()["detail"]
    assert archive.get("/api/download.zip", params={"instrument": "NL"}).status_code == 200
    object.__setattr__(state.settings, "max_download_files", 100)
    object.__setattr__(state.settings, "max_download_bytes", 1000)
    r = archive.get("/api/download.zip", params={"error": False})
    assert r.status_code == 413 and "MB" in r.json()["detail"]


def test_download_streams_and_holds_no_session_while_sending(tmp_path):
    """The zip's bytes come out while the rows are still being read, and no session is open when they do."""
    from marsvision.archive.download import result_pages, zip_stream
    from marsvision.archive.queries import Filters

    files = []
    for i in range(6):
        f = tmp_path / f"f{i}.jpg"
        f.write_bytes(bytes([i]) * 3000)
        files.append(f)
    open_sessions = []

    class FakeSession:
        def __enter__(self):
            open_sessions.append(self)
            return self

        def __exit__(self, *exc):
            open_sessions.remove(self)

    pages_read = []

    def fake_export_page(session, filters, after, limit):
        assert open_sessions == [session]
        rows = [{"id": i + 1, "path": str(files[i]), "product_id": None} for i in range(after, min(after + limit, 6))]
        pages_read.append(len(rows))
        return rows

    import marsvision.archive.download as download

    original = download.export_page
    download.export_page = fake_export_page
    try:
        stream = zip_stream(result_pages(FakeSession, Filters(), limit=5, page=2))
        first = next(b for b in stream if b)
        assert first.startswith(b"PK\x03\x04") and pages_read == [2] and not open_sessions
        rest = b"".join(stream)
    finally:
        download.export_page = original
    assert pages_read == [2, 2, 1] and not open_sessions  # the cap: 5 of the 6 rows
    with zipfile.ZipFile(io.BytesIO(first + rest)) as zf:
        assert zf.namelist() == [f"images/{i + 1}-f{i}.jpg" for i in range(5)] + ["metadata.csv"]
        assert zf.read("images/3-f2.jpg") == bytes([2]) * 3000


def test_a_new_sol_range_reuses_the_cached_timeline(archive, monkeypatch):
    import marsvision.web.routes.browse as routes

    calls = []
    real = routes.timeline
    monkeypatch.setattr(routes, "timeline", lambda s, f, by: calls.append(f) or real(s, f, by))
    first = archive.get("/api/timeline", params={"sol_min": 800, "sol_max": 900, "label": "wheel"}).json()
    second = archive.get("/api/timeline", params={"sol_min": 700, "label": "wheel"}).json()
    assert len(calls) == 1 and calls[0].sol_min is None  # computed once, without the range
    assert (first["selected"], second["selected"]) == ([800, 900], [700, None])
    assert first["series"] == second["series"]
    archive.get("/api/timeline", params={"label": "ground"})
    assert len(calls) == 2  # other filters: computed again
