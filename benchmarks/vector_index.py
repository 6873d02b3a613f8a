"""Which approximate-nearest-neighbour library holds the similarity index file: usearch or hnswlib.

Both build an HNSW graph over the archive's 64-number sketches (unit vectors, inner product). Measured per
library and size: build time (2 threads), file size, query p50/p95 (one thread, one query at a time, as a
request runs) and recall@10 against exact search, at the query depth ``ef`` the file index uses.

The vectors are made as benchmarks/serve.py makes its synthetic rows: ``--centres`` unit vectors (its real
images) each copied with N(0, 0.05) noise per number and renormalised.

    nice -n 5 python benchmarks/vector_index.py --rows 100000 1000000

Results: benchmarks/results/vector_index.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_results

DIMS = 64
CONNECTIVITY = 16  # HNSW's M, for both
EF_ADD = 128


def vectors(n: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIMS)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + rng.normal(0.0, 0.05, (n, DIMS)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float16).astype(np.float32)  # as stored: float16


def exact_top(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = []
    for q in queries:
        s = data @ q
        best = np.argpartition(-s, k)[: k + 1]
        out.append(best[np.argsort(-s[best])])
    return np.array(out)


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)]
    return sum(hits) / (k * len(truth))


def bench_usearch(data, queries, efs, folder):
    from usearch.index import Index

    t0 = time.perf_counter()
    idx = Index(ndim=DIMS, metric="ip", dtype="f16", connectivity=CONNECTIVITY, expansion_add=EF_ADD)
    idx.add(np.arange(len(data), dtype=np.uint64), data, threads=2)
    build = time.perf_counter() - t0
    path = Path(folder, "u.usearch")
    idx.save(str(path))
    del idx
    t0 = time.perf_counter()
    idx = Index.restore(str(path), view=True)  # memory-mapped: the server's RSS does not hold it
    load = time.perf_counter() - t0
    out = {}
    for ef in efs:
        idx.expansion_search = ef
        found, times = [], []
        for q in queries:
            t0 = time.perf_counter()
            m = idx.search(q, 11, threads=1)
            times.append(time.perf_counter() - t0)
            found.append(np.asarray(m.keys))
        out[ef] = found, times
    return build, load, path.stat().st_size, out


def bench_hnswlib(data, queries, efs, folder):
    import hnswlib

    t0 = time.perf_counter()
    idx = hnswlib.Index(space="ip", dim=DIMS)
    idx.init_index(max_elements=len(data), M=CONNECTIVITY, ef_construction=EF_ADD)
    idx.set_num_threads(2)
    idx.add_items(data, np.arange(len(data)))
    build = time.perf_counter() - t0
    path = Path(folder, "h.bin")
    idx.save_index(str(path))
    del idx
    t0 = time.perf_counter()
    idx = hnswlib.Index(space="ip", dim=DIMS)
    idx.load_index(str(path))
    load = time.perf_counter() - t0
    idx.set_num_threads(1)
    out = {}
    for ef in efs:
        idx.set_ef(ef)
        found, times = [], []
        for q in queries:
            t0 = time.perf_counter()
            labels, _ = idx.knn_query(q, k=11)
            times.append(time.perf_counter() - t0)
            found.append(labels[0])
        out[ef] = found, times
    return build, load, path.stat().st_size, out


def save(args, runs: list[dict]) -> None:
    header = "| library | rows | ef | build s | load s | file MB | query p50 ms | query p95 ms | recall@10 |\n"
    header += "|---|---|---|---|---|---|---|---|---|\n"
    rows = "".join(
        f"| {r['library']} | {r['rows']:,} | {r['ef']} | {r['build_s']} | {r['load_s']} | {r['file_mb']} | "
        f"{r['query_p50_ms']} | {r['query_p95_ms']} | {r['recall_at_10']} |\n"
        for r in runs
    )
    md = (
        "# Similarity index file: usearch vs hnswlib\n\n"
        f"64-number float16 sketches, {args.centres} centres + N(0, 0.05) noise, M={CONNECTIVITY}, "
        f"ef_construction={EF_ADD}, build on 2 threads, {args.queries} queries one at a time on one thread "
        "(2-core machine shared with other jobs).\n\n" + header + rows
    )
    write_results(args.name, {"args": vars(args), "runs": runs}, md)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--libraries", nargs="+", default=["usearch", "hnswlib"], choices=["usearch", "hnswlib"])
    p.add_argument("--centres", type=int, default=1000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--ef", type=int, nargs="+", default=[64, 128])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="vector_index")
    args = p.parse_args()
    runs = []
    for n in args.rows:
        data = vectors(n, args.centres, args.seed)
        qi = np.random.default_rng(args.seed + 1).choice(n, args.queries, replace=False)
        truth = exact_top(data, data[qi], 10)
        truth = np.array([[j for j in t if j != i][:10] for t, i in zip(truth, qi, strict=True)])
        for lib in args.libraries:
            with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
                fn = bench_usearch if lib == "usearch" else bench_hnswlib
                build, load, size, by_ef = fn(data, data[qi], args.ef, folder)
            for ef, (found, times) in by_ef.items():
                found = [np.array([j for j in f if j != i][:10]) for f, i in zip(found, qi, strict=True)]
                ms = np.array(times) * 1e3
                run = {
                    "library": lib,
                    "rows": n,
                    "ef": ef,
                    "build_s": round(build, 1),
                    "load_s": round(load, 3),
                    "file_mb": round(size / 2**20, 1),
                    "query_p50_ms": round(float(np.percentile(ms, 50)), 3),
                    "query_p95_ms": round(float(np.percentile(ms, 95)), 3),
                    "recall_at_10": round(recall(found, truth, 10), 4),
                }
                print(run, flush=True)
                runs.append(run)
        save(args, runs)  # after each size: a long run cut short keeps what it measured
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
