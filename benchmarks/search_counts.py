"""In-process timings of the search paths with the maintained counts (archive/counts.py) and without them
(the exact COUNT on the images, as before migration 0007): the total of each kind of search that
benchmarks/serve.py sends, the page of ids and rows, the facets, the timeline and the class counts.

    nice -n 5 python benchmarks/search_counts.py --source /tmp/counts-1m/archive.db
    nice -n 5 python benchmarks/search_counts.py --source /tmp/counts-1m/archive.db --backend postgresql

``--backend postgresql`` copies the source archive's image rows (not their vectors) into a throwaway
PostgreSQL server (tests/servers.py), VACUUM ANALYZE, and records EXPLAIN ANALYZE of a page of each kind.
Writes benchmarks/results/search_counts[-postgresql].{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import write_results
from sqlalchemy import create_engine, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from marsvision.archive import counts, facets, queries  # noqa: E402
from marsvision.archive.db import Image, open_engine, sessions  # noqa: E402
from marsvision.archive.queries import Filters  # noqa: E402
from marsvision.archive.versions import ensure_active  # noqa: E402

KINDS = {  # benchmarks/serve.py's search mix, one of each kind (page 1 and page 10)
    "label by confidence": ({"label": "wheel"}, "confidence", True),
    "min_confidence by sol": ({"min_confidence": 0.8}, "sol", False),
    "sol range + instrument": ({"sol_min": 300, "sol_max": 500, "instrument": "MR"}, "sol", False),
    "unknown by novelty": ({"unknown": True}, "novelty", True),
    "not reviewed, least confident": ({"reviewed": False}, "confidence", False),
    "label + not reviewed": ({"label": "ground", "reviewed": False}, "confidence", False),
    "all by id": ({}, "id", True),
    "text (no counts)": ({"q": "0718"}, "id", False),
}


def copy_rows(source: Path, url: str, chunk: int = 5000) -> float:
    """The source archive's image rows into ``url`` (the triggers keep the counts as they go)."""
    src = create_engine(f"sqlite:///{source}")
    dst = open_engine(url)
    with sessions(dst).begin() as s:
        model_id = ensure_active(s).id
    t0 = time.perf_counter()
    with src.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(select(Image.__table__))
        while part := result.fetchmany(chunk):
            with dst.begin() as out:
                out.execute(insert(Image), [{**r._mapping, "model_id": model_id} for r in part])
    seconds = time.perf_counter() - t0
    with dst.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    src.dispose()
    dst.dispose()
    return seconds


def timed(call, repeats: int) -> dict:
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def images_only():
    """The readers of the counts answer None: everything is counted on the images (before 0007)."""
    saved = {n: getattr(counts, n) for n in ("total", "cube", "per_sol")}
    for n in saved:
        setattr(counts, n, lambda *a, **k: None)
    return lambda: [setattr(counts, n, f) for n, f in saved.items()]


def measure(url: str, repeats: int) -> dict:
    engine = open_engine(url)
    out: dict = {"search": {}, "browse": {}}
    with sessions(engine)() as s:
        for mode in ("counts", "images"):
            restore = images_only() if mode == "images" else (lambda: None)
            try:
                for kind, (params, sort, desc) in KINDS.items():
                    f = Filters(**params)
                    row = out["search"].setdefault(kind, {})
                    row[f"total {mode}"] = timed(lambda f=f: queries.total_count(s, f), repeats)
                    for page in (1, 10):
                        row[f"page {page} {mode}"] = timed(
                            lambda f=f, p=page, o=sort, d=desc: queries.search(s, f, o, d, p, 50), repeats
                        )
                for name, call in {
                    "facets": lambda: facets.facets(s, Filters()),
                    "facets, sol range": lambda: facets.facets(s, Filters(sol_min=300, sol_max=600)),
                    "timeline by class": lambda: facets.timeline(s, Filters(), "class"),
                    "timeline by camera": lambda: facets.timeline(s, Filters(), "camera"),
                    "timeline by class, min confidence": lambda: facets.timeline(s, Filters(min_confidence=0.95)),
                }.items():
                    out["browse"].setdefault(name, {})[mode] = timed(call, max(3, repeats // 3))
                if mode == "counts":
                    out["browse"]["class counts"] = {"counts": timed(lambda: queries.class_counts(s), repeats)}
            finally:
                restore()
        if engine.dialect.name == "postgresql":
            out["plans"] = {}
            for kind, (params, sort, desc) in KINDS.items():
                f = Filters(**params)
                column = queries.SORTS[sort]
                q = f.apply(select(Image.id)).order_by(column.desc() if desc else column, Image.id)
                q = q.limit(50).offset(450)
                sql = q.compile(engine, compile_kwargs={"literal_binds": True})
                plan = s.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars().all()
                out["plans"][kind] = plan
    engine.dispose()
    return out


def markdown(out: dict) -> str:
    lines = [
        f"# Search totals and pages with and without the maintained counts ({out['backend']}, {out['rows']:,} rows)",
        "",
        f"Load average at start/end: {out['load_average']} / {out['load_average_end']} (2 cores shared with other "
        f"processes). Command: `python benchmarks/search_counts.py --backend {out['backend']}`. In-process, no cache; "
        '"images" is the exact COUNT on the images (what every search did before migration 0007).',
        "",
        "| search | total: counts p50/p95 ms | total: images p50/p95 ms | page 1 (counts) p50/p95 | "
        "page 10 (counts) p50/p95 | page 10 (images) p50/p95 |",
        "|---|---|---|---|---|---|",
    ]
    f = lambda v: f"{v['p50_ms']} / {v['p95_ms']}"  # noqa: E731
    for kind, r in out["search"].items():
        lines.append(
            f"| {kind} | {f(r['total counts'])} | {f(r['total images'])} | {f(r['page 1 counts'])} | "
            f"{f(r['page 10 counts'])} | {f(r['page 10 images'])} |"
        )
    lines += ["", "| browse | counts p50/p95 ms | images p50/p95 ms |", "|---|---|---|"]
    for name, r in out["browse"].items():
        lines.append(f"| {name} | {f(r['counts'])} | {f(r['images']) if 'images' in r else ''} |")
    for kind, plan in out.get("plans", {}).items():
        lines += ["", f"EXPLAIN ANALYZE, {kind} (page 10):", "", "```", *plan, "```"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="a SQLite archive (upgraded to 0007 if need be)")
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    out: dict = {"backend": args.backend, "load_average": [round(x, 2) for x in os.getloadavg()]}
    with create_engine(f"sqlite:///{args.source}").connect() as conn:
        out["rows"] = conn.scalar(text("SELECT count(*) FROM images"))
    if args.backend == "postgresql":
        from serve import postgres_server

        with postgres_server() as (url, version, _):
            out["server"] = version
            out["copy_seconds"] = round(copy_rows(args.source, url), 1)
            print(f"copied in {out['copy_seconds']} s", flush=True)
            out.update(measure(url, args.repeats))
    else:
        out.update(measure(f"sqlite:///{args.source}", args.repeats))
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results("search_counts" + ("" if args.backend == "sqlite" else "-postgresql"), out, markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
