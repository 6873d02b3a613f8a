"""The maintained image counts (archive/counts.py, migration 0007): after inserts, curator corrections,
re-scores and deletes, the counts give what counting the images gives, under random filters, for search
totals, facets, the timeline and the class counts; on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import delete, func, insert, select, text, update

from marsvision.archive import counts, facets, queries
from marsvision.archive.db import Image, ImageCount, ImageTotal, open_engine, sessions
from marsvision.archive.queries import Filters

LABELS = ["wheel", "ground", "drill", "sun"]
CAMERAS = ["MH", "ML", "MR", "NL", None]
# whole percents and the doubles beside them: 0.29 * 100 is 28.999999999999996, 0.57 * 100 is 56.99999999999999
CONFIDENCES = [0.29, 0.57, 0.9, 0.8999999999999999, 0.9000000000000001, 0.95, 1.0, 0.0, None]


def _row(rng: random.Random, i: int) -> dict:
    ok = rng.random() > 0.1
    confidence = rng.choice(CONFIDENCES) if rng.random() < 0.5 else rng.random()
    return dict(
        sha256=f"{i:064x}",
        path=f"/x/{i}.JPG",
        size_bytes=1,
        sol=rng.choice([None, *range(0, 30)]),
        instrument=rng.choice(CAMERAS),
        off_camera=rng.choice([None, True, False]),
        error=None if ok else "unreadable",
        label=rng.choice(LABELS) if ok else None,
        confidence=confidence if ok else None,
        unknown=rng.choice([True, False]) if ok else None,
        reviewed_label=rng.choice([None, None, *LABELS]),
    )


def _filters(rng: random.Random) -> Filters:
    choices = {
        "label": lambda: rng.choice(LABELS),
        "min_confidence": lambda: rng.choice([0.29, 0.57, 0.9, 0.95, 0.0, 1.0, 0.333]),
        "max_confidence": lambda: rng.choice([0.29, 0.9, 0.5]),
        "unknown": lambda: rng.choice([True, False]),
        "sol_min": lambda: rng.randrange(-1, 30),
        "sol_max": lambda: rng.randrange(0, 30),
        "instrument": lambda: rng.choice(["MH", "mr", "NL"]),
        "reviewed": lambda: rng.choice([True, False]),
        "reviewed_label": lambda: rng.choice(LABELS),
        "error": lambda: rng.choice([True, False]),
        "off_camera": lambda: rng.choice([True, False]),
        "confident": lambda: rng.choice([True, False]),
    }
    names = rng.sample(sorted(choices), rng.randrange(0, 4))
    return Filters(**{n: choices[n]() for n in names})


def _images_only(monkeypatch):
    """Make every reader count the images (what the counts must agree with)."""
    for name in ("total", "cube", "per_sol"):
        monkeypatch.setattr(counts, name, lambda *a, **k: None)


def _exact_classes(session) -> list[dict]:
    model = session.execute(
        select(Image.label, func.count(), func.count(Image.reviewed_label))
        .where(Image.label.is_not(None))
        .group_by(Image.label)
    ).all()
    curated = dict(
        session.execute(
            select(Image.reviewed_label, func.count())
            .where(Image.reviewed_label.is_not(None))
            .group_by(Image.reviewed_label)
        ).all()
    )
    by_label = {n: (c, r) for n, c, r in model}
    return sorted((n, *by_label.get(n, (0, 0)), curated.get(n, 0)) for n in set(by_label) | set(curated))


def _check(session, rng: random.Random, monkeypatch, trials: int = 40) -> None:
    got = sorted((c["label"], c["count"], c["reviewed"], c["curated"]) for c in queries.class_counts(session))
    want = _exact_classes(session)
    assert got == want
    answered = 0
    for _ in range(trials):
        f = _filters(rng)
        fast = (
            counts.total(session, f),
            facets.facets(session, f),
            facets.timeline(session, f, "class"),
            facets.timeline(session, f, "camera"),
        )
        answered += fast[0] is not None
        with monkeypatch.context() as m:
            _images_only(m)
            exact = (
                queries.total_count(session, f),
                facets.facets(session, f),
                facets.timeline(session, f, "class"),
                facets.timeline(session, f, "camera"),
            )
        assert fast[0] in (None, exact[0]), f
        assert fast[1:] == exact[1:], f
    assert answered > trials // 2  # the counts answered most of them (0.333 is the only filter they cannot say)


def test_counts_follow_inserts_updates_and_deletes(db_url, monkeypatch):
    rng = random.Random(7)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Image), [_row(rng, i) for i in range(400)])
        with sessions(engine)() as s:
            _check(s, rng, monkeypatch)
            ids = s.scalars(select(Image.id)).all()
            # curator corrections, one at a time as the review page makes them
            for i in rng.sample(ids, 40):
                s.execute(update(Image).where(Image.id == i).values(reviewed_label=rng.choice(LABELS)))
                s.commit()
            # a re-score: the ORM's bulk update by primary key, as archive/rescore.py writes it
            s.execute(
                update(Image),
                [
                    {"id": i, "label": rng.choice(LABELS), "confidence": rng.choice(CONFIDENCES[:-1]), "unknown": False}
                    for i in rng.sample(ids, 120)
                ],
            )
            # an update of columns that are not counted changes nothing, and a sol moved is
            s.execute(update(Image).where(Image.id.in_(ids[:50])).values(path="/y", sol=Image.sol + 1))
            s.commit()
            s.execute(delete(Image).where(Image.id.in_(rng.sample(ids, 60))))
            s.commit()
            _check(s, rng, monkeypatch)
            # what a kill does to a transaction: its rows and its counts both go
            s.execute(insert(Image), [_row(rng, i) for i in range(1000, 1100)])
            s.execute(update(Image).values(unknown=True))
            s.rollback()
            _check(s, rng, monkeypatch, trials=10)
            assert s.scalar(select(func.sum(ImageCount.n))) == s.scalar(select(func.count()).select_from(Image))
    finally:
        engine.dispose()


@pytest.mark.parametrize("trigger", counts.TRIGGERS)
def test_a_missing_trigger_is_caught(db_url, trigger):
    """The check above can fail: without one trigger, the counts drift from the images."""
    rng = random.Random(3)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Image), [_row(rng, i) for i in range(50)])
            on = "" if conn.dialect.name == "sqlite" else " ON images"
            conn.execute(text(f"DROP TRIGGER {trigger}{on}"))
            conn.execute(insert(Image), [_row(rng, i) for i in range(100, 150)])
            conn.execute(update(Image).where(Image.id % 2 == 0).values(sol=999, label="sun"))
            conn.execute(delete(Image).where(Image.id % 3 == 0))
        with sessions(engine)() as s:
            f = Filters(sol_min=999)
            exact = s.scalar(select(func.count()).select_from(Image).where(Image.sol >= 999))
            by_label = dict(s.execute(select(Image.label, func.count()).group_by(Image.label)).all())
            kept = counts.total(s, f) == exact and counts.total(s, Filters()) == sum(by_label.values())
            assert not kept
    finally:
        engine.dispose()


def test_rebuild_gives_what_the_triggers_kept(db_url):
    rng = random.Random(11)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Image), [_row(rng, i) for i in range(300)])
            conn.execute(update(Image).where(Image.id % 4 == 0).values(confidence=0.57, reviewed_label="drill"))
        read = lambda conn: [  # noqa: E731
            sorted(conn.execute(select(t).where(t.n > 0)).all()) for t in (ImageCount, ImageTotal)
        ]
        with engine.begin() as conn:
            kept = read(conn)
            counts.rebuild(conn)
            assert read(conn) == kept
    finally:
        engine.dispose()


def test_filters_the_counts_cannot_say_count_the_images():
    assert counts.conditions(Filters(q="wheel")) is None
    assert counts.conditions(Filters(min_confidence=0.333)) is None
    assert counts.conditions(Filters(label="")) is None
    assert counts.conditions(Filters(min_confidence=0.29, label="wheel", sol_min=3)) is not None


def test_camera_timeline_and_review_queue_read_their_indexes_in_order(tmp_path):
    """Migration 0008 on SQLite: the camera timeline groups (camera, sol) along ix_image_counts_camera, and a
    class's unreviewed images, least confident first, come along ix_images_label_reviewed_confidence: no
    statement sorts (a temporary B-tree), which is what cost 180 ms at a million images."""
    rng = random.Random(3)
    engine = open_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(insert(Image), [_row(rng, i) for i in range(300)])
        with sessions(engine)() as s:
            seen: list[str] = []
            s.connection().connection.driver_connection.set_trace_callback(seen.append)
            timeline = facets.timeline(s, Filters(label="wheel"), "camera")
            page = queries.search(s, Filters(label="wheel", reviewed=False), sort="confidence")
            s.connection().connection.driver_connection.set_trace_callback(None)
            assert timeline["series"] and page["items"]
            assert all(i["label"] == "wheel" and i["reviewed_label"] is None for i in page["items"])
            confidences = [(i["confidence"] is not None, i["confidence"] or 0) for i in page["items"]]
            assert confidences == sorted(confidences)  # no confidence first, as SQLite orders NULL
            plans = {}
            for sql in seen:
                if sql.startswith("SELECT") and ("image_counts" in sql or "reviewed_label IS NULL" in sql):
                    plans[sql] = s.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
            text_of = {sql: " / ".join(r[-1] for r in plan) for sql, plan in plans.items()}
            assert any("ix_image_counts_camera" in p for p in text_of.values()), text_of
            assert any("ix_images_label_reviewed_confidence" in p for p in text_of.values()), text_of
            for sql, plan in plans.items():
                # the search sorts its page's 50 rows again (outside); the ids' subquery must not sort
                inner = {r[0] for r in plan if r[-1].startswith("LIST SUBQUERY")}
                for node, parent, _, detail in plan:
                    if parent in inner:
                        inner.add(node)
                    if "TEMP B-TREE" in detail:
                        assert "image_counts" not in sql and node not in inner, text_of[sql]
    finally:
        engine.dispose()
