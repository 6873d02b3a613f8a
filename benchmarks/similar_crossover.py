"""Where a filtered similar search should stop widening the index's candidates and score the filter's own
rows exactly (archive/vectors.py ``EXACT_MAX``).

On a SQLite archive of ``--rows`` synthetic rows (clustered 64-number sketches, sol 0-999), in-process:

- widening: the index's ``c`` nearest candidates (usearch, ef = max(512, c)) plus the SQL check of which
  of them match (one primary-key query), for c = 128 … 16384;
- exact: the capped count and the ids matching a sol range (SQL, ``few_matching``), their sketches from the
  memory-mapped matrix, one matrix product, for filters matching m = 1 000 … 100 000 rows.

Widening with c candidates finds k matches when the filter matches about k·N/c rows or more; exact costs
grow with m. The crossover is the c at which widening costs as much as the exact search of the m = k·N/c
rows it would be needed for.

    nice -n 5 python benchmarks/similar_crossover.py --rows 100000
    nice -n 5 python benchmarks/similar_crossover.py --db sqlite:////tmp/x/archive.db   # an existing archive

Results: benchmarks/results/similar_crossover.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, write_results

sys.path.insert(0, str(REPO / "tests"))

from sqlalchemy import insert, select  # noqa: E402

from marsvision.archive.db import Image, ImageVectors, ModelVersion, open_engine, sessions  # noqa: E402
from marsvision.archive.queries import Filters  # noqa: E402
from marsvision.archive.similar_filters import few_matching, matching  # noqa: E402
from marsvision.archive.vectors import FileIndex, default_folder  # noqa: E402


def build(url: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    engine = open_engine(url)
    with sessions(engine).begin() as s:
        s.add(ModelVersion(version="m", path="m.onnx", sha256="0" * 64, active=True, info={}))
    centres = rng.standard_normal((1000, 64))
    for start in range(0, n, 20_000):
        m = min(20_000, n - start)
        v = centres[rng.integers(0, 1000, m)] + rng.normal(0, 0.05 * 8, (m, 64))
        v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f2")
        ids = range(start + 1, start + m + 1)
        with engine.begin() as conn:
            conn.execute(
                insert(Image),
                [
                    {"id": i, "sha256": f"{i:064x}", "path": f"/x/{i}", "size_bytes": 1, "sol": (i * 7919) % 1000}
                    for i in ids
                ],
            )
            conn.execute(
                insert(ImageVectors),
                [{"image_id": i, "features": b"", "sketch": v[j].tobytes()} for j, i in enumerate(ids)],
            )
    engine.dispose()


def p50(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", default=None, help="measure this archive (SQLite) instead of building one")
    p.add_argument("--name", default="similar_crossover", help="results file name under benchmarks/results")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{folder}/a.db"
        if not args.db:
            build(url, args.rows, args.seed)
        engine = open_engine(url)
        index = FileIndex(default_folder(url) if args.db else Path(folder, "vectors"))
        with sessions(engine)() as s:
            index.sync(s)
            index.refresh(s)
            args.rows = len(index.matrix) + len(index.delta_ids)
            q = np.frombuffer(s.get(ImageVectors, 1).sketch, "<f2").astype(np.float32)
            widen = {}
            for c in (128, 512, 1024, 2048, 4096, 8192):

                def one(c=c):
                    ids, _ = index._nearest(q, c)
                    matching(s, [int(i) for i in ids], Filters(sol_min=0, sol_max=499))

                widen[c] = p50(one, args.repeats)
            exact = {}
            sols = sorted({int(x) for x in s.scalars(select(Image.sol).where(Image.id <= 2000)) if x is not None})
            top = max(sols) + 1
            for share in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1):
                f = Filters(sol_min=0, sol_max=max(0, int(top * share) - 1))
                m = len(few_matching(s, f, 10**9))

                def scored(f=f):  # the capped count, the filter's ids, their sketches scored (as vectors.py does)
                    wanted = few_matching(s, f, 10**9)
                    index._exact(wanted, q)

                exact[m] = p50(scored, max(3, args.repeats // 3))
        engine.dispose()
    k = 12
    md = [
        "# Filtered similar search: widen the candidates, or score the filter's rows exactly?",
        "",
        f"{args.rows:,} rows (SQLite, usearch file index), in-process, median of {args.repeats} "
        "(2-core machine shared with other jobs).",
        "",
        "| candidates c | widen ms | finds k=12 when the filter matches ≥ rows |",
        "|---:|---:|---:|",
        *[f"| {c} | {ms} | {int(k * args.rows / c):,} |" for c, ms in widen.items()],
        "",
        "| rows matching m | exact ms |",
        "|---:|---:|",
        *[f"| {m:,} | {ms} |" for m, ms in exact.items()],
        "",
    ]
    md.insert(3, f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    md.insert(4, "")
    write_results(args.name, {"args": vars(args), "widen_ms": widen, "exact_ms": exact}, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
