"""The similar-images half of benchmarks/serve.py: prepare the archive's vector index after the bulk load,
measure its recall@10 against exact search and its in-process latency (with and without filters), and the
HTTP request mixes for ``GET /api/images/{id}/similar``.

Recall and latency are measured in the benchmark's process, on the index the server uses
(``archive.vectors.open_vector_index``): ``--similar-queries`` random images, each asked for its 10 nearest
unfiltered and under one of the filters below, against exact search over every stored sketch (numpy).
"""

from __future__ import annotations

import random
import time

import numpy as np
from sqlalchemy import select, text

from marsvision.archive.db import Image, open_engine, sessions
from marsvision.archive.queries import Filters
from marsvision.archive.vectors import FileIndex, open_vector_index, read_rows

INSTRUMENTS = ("MH", "ML", "MR")


def filter_mix(labels: list[str], weights: list[float], rng: random.Random):
    """One of the filters the similar scenarios and the recall check use: (name, query parameters)."""
    kinds = [
        ("label", lambda: {"label": rng.choices(labels, weights)[0]}),
        (
            "sol range + instrument",
            lambda: (
                lambda a: {"sol_min": a, "sol_max": a + rng.randint(20, 300), "instrument": rng.choice(INSTRUMENTS)}
            )(rng.randint(0, 1000)),
        ),
        ("min_confidence 0.9", lambda: {"min_confidence": 0.9}),
        ("label + sol ≥ 700", lambda: {"label": rng.choices(labels, weights)[0], "sol_min": 700}),
    ]
    name, make = rng.choice(kinds)
    return name, make()


def to_filters(params: dict) -> Filters:
    return Filters(**params)


def before_bulk(engine) -> bool:
    """pgvector: drop the HNSW index for the bulk load (built once after it: how a bulk load is done)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.begin() as conn:
        has = conn.execute(text("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_image_vectors_embedding'")).first()
        if has:
            conn.execute(text("DROP INDEX ix_image_vectors_embedding"))
    return bool(has)


def prepare(db_url: str, had_hnsw: bool) -> dict:
    """Build the vector index as the product would after a load: pgvector's HNSW index (CREATE INDEX), or
    the index file (``run_index`` does this after its last commit). Returns what it took."""
    engine = open_engine(db_url)
    info: dict = {}
    try:
        index = open_vector_index(engine)
        info["backend"] = "file (usearch)" if isinstance(index, FileIndex) else "pgvector (HNSW)"
        t0 = time.perf_counter()
        if had_hnsw:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("SET maintenance_work_mem = '1GB'"))
                conn.execute(
                    text(
                        "CREATE INDEX ix_image_vectors_embedding ON image_vectors "
                        "USING hnsw (embedding halfvec_ip_ops) WITH (m = 16, ef_construction = 128)"
                    )
                )
                conn.execute(text("ANALYZE image_vectors"))
        else:
            with sessions(engine)() as s:
                index.sync(s)
        info["build_seconds"] = round(time.perf_counter() - t0, 1)
        if isinstance(index, FileIndex):
            info["file_mb"] = round(sum(p.stat().st_size for p in index.folder.glob("*.usearch")) / 2**20, 1)
    finally:
        engine.dispose()
    return info


def recall_and_latency(db_url: str, labels: list[str], weights: list[float], queries: int, seed: int) -> dict:
    """recall@10 against exact search and in-process latency, unfiltered and filtered, on ``queries`` images."""
    engine = open_engine(db_url)
    rng = random.Random(seed)
    try:
        index = open_vector_index(engine)
        with sessions(engine)() as s:
            ids, matrix = read_rows(s, 0)
            cols = s.execute(
                select(Image.id, Image.label, Image.sol, Image.instrument, Image.confidence).order_by(Image.id)
            ).all()
        meta = {r[0]: r for r in cols}
        label = np.array([meta[i][1] or "" for i in ids])
        sol = np.array([meta[i][2] if meta[i][2] is not None else -1 for i in ids])
        inst = np.array([meta[i][3] or "" for i in ids])
        conf = np.array([meta[i][4] if meta[i][4] is not None else -1.0 for i in ids])

        def mask(p: dict) -> np.ndarray:
            m = np.ones(len(ids), bool)
            if "label" in p:
                m &= label == p["label"]
            if "sol_min" in p:
                m &= sol >= p["sol_min"]
            if "sol_max" in p:
                m &= sol <= p["sol_max"]
            if "instrument" in p:
                m &= inst == p["instrument"]
            if "min_confidence" in p:
                m &= conf >= p["min_confidence"]
            return m

        out = {"unfiltered": {"hits": 0, "want": 0, "ms": []}, "filtered": {"hits": 0, "want": 0, "ms": []}}
        by_kind: dict[str, list[float]] = {}
        for qi in np.random.default_rng(seed).choice(len(ids), queries, replace=False):
            qid = int(ids[qi])
            scores = matrix @ matrix[qi]
            scores[qi] = -np.inf
            for case in ("unfiltered", "filtered"):
                params = {} if case == "unfiltered" else filter_mix(labels, weights, rng)[1]
                s_case = np.where(mask(params), scores, -np.inf) if params else scores
                top = np.argsort(-s_case, kind="stable")[:10]
                truth = {int(ids[j]) for j in top if np.isfinite(s_case[j])}
                with sessions(engine)() as s:
                    t0 = time.perf_counter()
                    got = index.similar(s, qid, 10, to_filters(params) if params else None)
                    ms = (time.perf_counter() - t0) * 1e3
                out[case]["hits"] += len(truth & {g for g, _ in got})
                out[case]["want"] += len(truth)
                out[case]["ms"].append(ms)
                out[case].setdefault("short", 0)
                out[case]["short"] += len(got) < len(truth)
                if params:
                    by_kind.setdefault(",".join(sorted(params)), []).append(ms)
        result = {}
        for case, r in out.items():
            result[case] = {
                "queries": len(r["ms"]),
                "recall_at_10": round(r["hits"] / max(1, r["want"]), 4),
                "fewer_than_matching": r["short"],
                "p50_ms": round(float(np.percentile(r["ms"], 50)), 2),
                "p95_ms": round(float(np.percentile(r["ms"], 95)), 2),
            }
        result["filtered_p95_ms_by_filter"] = {
            k: round(float(np.percentile(v, 95)), 2) for k, v in sorted(by_kind.items())
        }
        return result
    finally:
        engine.dispose()


def similar_requests(max_id: int, labels: list[str], weights: list[float], seed: int, filtered: bool):
    """An endless, seeded mix of GET /api/images/{id}/similar (k 12), unfiltered or under ``filter_mix``."""
    rng = random.Random(seed)
    while True:
        image_id = rng.randint(1, max_id)
        name, params = filter_mix(labels, weights, rng) if filtered else ("none", {})
        yield name, image_id, {"k": 12, **params}
