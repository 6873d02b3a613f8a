"""The similar-images half of benchmarks/serve.py: prepare the archive's vector index after the bulk load,
measure its recall@10 against exact search and its in-process latency (with and without filters), and the
HTTP request mixes for ``GET /api/images/{id}/similar``.

Recall and latency are measured in the benchmark's process, on the index the server uses
(``archive.vectors.open_vector_index``): ``--similar-queries`` random images, each asked for its 10 nearest
unfiltered and under one of the filters below, against exact search over every stored sketch (numpy).
Beside recall@10 (the share of the exact 10 found) it reports recall@10 within ``TIE_EPS`` (a returned
image counts when its exact similarity is within 0.001 of the exact 10th's, as ann-benchmarks counts) and
how close the exact 10th and 11th are: where many images tie with the 10th, which of them come back is
arbitrary, and plain recall@10 measures that, not the index.

Run alone on an existing archive (its index file beside it is used, built when missing):

    nice -n 5 python benchmarks/serve_vectors.py --db sqlite:////tmp/x/archive.db --queries 200

writes benchmarks/results/similar_1m.{json,md} (``--name`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np
from sqlalchemy import func, select, text

from marsvision.archive.db import Image, open_engine, sessions
from marsvision.archive.queries import Filters
from marsvision.archive.vectors import FileIndex, open_vector_index, read_rows

INSTRUMENTS = ("MH", "ML", "MR")
TIE_EPS = 1e-3


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
            info["sketches_mb"] = round(sum(p.stat().st_size for p in index.folder.glob("*.sketches.npy")) / 2**20, 1)
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

        out = {c: {"hits": 0, "tie_hits": 0, "want": 0, "ms": [], "short": 0} for c in ("unfiltered", "filtered")}
        by_kind: dict[str, list[float]] = {}
        by_kind_recall: dict[str, list[int]] = {}
        gaps, ties, matched = [], [], []
        with sessions(engine)() as s:  # warm: opens the index files (writes any that are missing)
            index.similar(s, int(ids[0]), 10)
        for qi in np.random.default_rng(seed).choice(len(ids), queries, replace=False):
            qid = int(ids[qi])
            scores = matrix @ matrix[qi]
            scores[qi] = -np.inf
            for case in ("unfiltered", "filtered"):
                params = {} if case == "unfiltered" else filter_mix(labels, weights, rng)[1]
                keep = mask(params) if params else None
                s_case = np.where(keep, scores, -np.inf) if params else scores
                top = np.argsort(-s_case, kind="stable")[:11]
                top10 = [j for j in top[:10] if np.isfinite(s_case[j])]
                truth = {int(ids[j]) for j in top10}
                if len(top10) == 10 and np.isfinite(s_case[top[10]]):
                    gaps.append(float(s_case[top[9]] - s_case[top[10]]))
                    ties.append(int((s_case >= s_case[top[9]] - TIE_EPS).sum()))
                with sessions(engine)() as s:
                    t0 = time.perf_counter()
                    got = index.similar(s, qid, 10, to_filters(params) if params else None)
                    ms = (time.perf_counter() - t0) * 1e3
                hits = len(truth & {g for g, _ in got})
                out[case]["hits"] += hits
                if top10:
                    at = np.searchsorted(ids, [g for g, _ in got])
                    out[case]["tie_hits"] += min(len(top10), int((scores[at] >= s_case[top10[-1]] - TIE_EPS).sum()))
                out[case]["want"] += len(truth)
                out[case]["ms"].append(ms)
                out[case]["short"] += len(got) < len(truth)
                if params:
                    kind = ",".join(sorted(params))
                    by_kind.setdefault(kind, []).append(ms)
                    by_kind_recall.setdefault(kind, [0, 0])
                    by_kind_recall[kind][0] += hits
                    by_kind_recall[kind][1] += len(truth)
                    matched.append(int(keep.sum()))
        result = {}
        for case, r in out.items():
            result[case] = {
                "queries": len(r["ms"]),
                "recall_at_10": round(r["hits"] / max(1, r["want"]), 4),
                "recall_at_10_within_tie": round(r["tie_hits"] / max(1, r["want"]), 4),
                "fewer_than_matching": r["short"],
                "p50_ms": round(float(np.percentile(r["ms"], 50)), 2),
                "p95_ms": round(float(np.percentile(r["ms"], 95)), 2),
            }
        result["filtered_p95_ms_by_filter"] = {
            k: round(float(np.percentile(v, 95)), 2) for k, v in sorted(by_kind.items())
        }
        result["filtered_recall_by_filter"] = {
            k: round(h / max(1, w), 4) for k, (h, w) in sorted(by_kind_recall.items())
        }
        result["filtered_rows_matching_percentiles_5_50_95"] = [int(np.percentile(matched, p)) for p in (5, 50, 95)]
        result["exact_10th_11th_gap"] = {
            "median": float(np.median(gaps)),
            "share_below_tie_eps": round(float(np.mean(np.array(gaps) < TIE_EPS)), 3),
            "rows_within_tie_eps_of_10th_median": float(np.median(ties)),
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


def main() -> int:
    p = argparse.ArgumentParser(description="recall@10 and in-process latency of similar search on an archive")
    p.add_argument("--db", required=True, help="the archive's URL (its index file beside it, or pgvector)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="similar_1m", help="results file name under benchmarks/results")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    from common import write_results

    engine = open_engine(args.db)
    with engine.connect() as conn:
        counts = dict(conn.execute(select(Image.label, func.count()).group_by(Image.label)).all())
        rows = sum(counts.values())
    engine.dispose()
    labels = sorted(k for k in counts if k)
    t0 = time.perf_counter()
    res = recall_and_latency(args.db, labels, [counts[k] for k in labels], args.queries, args.seed)
    res["rows"] = rows
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["load_average"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if not args.no_write:
        md = [
            f"# Similar images at {rows:,} rows, in-process ({args.db.split(':')[0]})",
            "",
            f"{args.queries} query images; 2-core machine shared with other jobs (load average at the end "
            f"{res['load_average'][0]:.1f}).",
            "",
            "| case | recall@10 | recall@10 within 0.001 | p50 ms | p95 ms | fewer than matching |",
            "|---|---:|---:|---:|---:|---:|",
            *[
                f"| {c} | {res[c]['recall_at_10']} | {res[c]['recall_at_10_within_tie']} | {res[c]['p50_ms']} | "
                f"{res[c]['p95_ms']} | {res[c]['fewer_than_matching']} |"
                for c in ("unfiltered", "filtered")
            ],
            "",
            f"Filtered p95 ms by filter: {res['filtered_p95_ms_by_filter']}; recall by filter: "
            f"{res['filtered_recall_by_filter']}; rows matching (5/50/95th percentile): "
            f"{res['filtered_rows_matching_percentiles_5_50_95']}.",
            "",
            f"Exact 10th-11th similarity gap: {res['exact_10th_11th_gap']}.",
            "",
        ]
        write_results(args.name, {"args": vars(args), **res}, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
