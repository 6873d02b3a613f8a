"""Latency of the Atlas-style browsing queries (facet counts, the per-sol timeline) on a 100 000-row archive.

    . .venv/bin/activate && nice -n 5 python benchmarks/browse.py --data /work/shared/data/msl-images

Builds the archive as benchmarks/serve.py does (``build_archive``: the indexer's real rows plus synthetic
copies with varied sols and instruments), then gives a tenth of the synthetic rows an engineering camera
(Navcam, Hazcam: ``off_camera`` true) so the off-camera facet and the confident switch have something to
leave out. Each query runs in-process through the library (what the routes call), on a fresh cache each
time (``--repeats`` runs of each filter set, the cache cleared before each: the figures are of the
queries, not of the 5-second cache), on 2 cores shared with other processes. A kept archive is reused
(``--db``). ``--backend postgresql`` builds the same archive in a throwaway PostgreSQL server (tests/servers.py).
Writes benchmarks/results/browse[-postgresql][-ROWS].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from common import write_results  # noqa: E402
from sqlalchemy import text  # noqa: E402

from marsvision.archive.db import open_engine, sessions  # noqa: E402

FILTER_SETS = {
    "none": {},
    "label": {"label": "wheel"},
    "sol range": {"sol_min": 300, "sol_max": 600},
    "instrument + unknown": {"instrument": "MR", "unknown": False},
    "confident": {"confident": True},
    "reviewed + label + sols": {"reviewed": True, "label": "ground", "sol_min": 100, "sol_max": 900},
    "min confidence": {"min_confidence": 0.95},
}


def build(url: str, rows: int, data: Path | None, n_real: int) -> dict:
    from serve import build_archive  # benchmarks/serve.py: the same archive as the serve benchmark

    info, _ = build_archive(url, None, rows, 0.03, 0, data, n_real)
    engine = open_engine(url)
    with engine.begin() as conn:  # a tenth of the copies from engineering cameras: off the training cameras
        conn.execute(text("UPDATE images SET off_camera = FALSE WHERE instrument IN ('MH', 'ML', 'MR')"))
        conn.execute(
            text(
                "UPDATE images SET instrument = CASE id % 2 WHEN 0 THEN 'NL' ELSE 'FR' END, off_camera = TRUE "
                "WHERE id % 10 = 7"
            )
        )
    if engine.dialect.name == "postgresql":  # the statistics after the update, as autovacuum would
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE images"))
    engine.dispose()
    return info


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def in_process(db: str, repeats: int) -> dict:
    """Each query on each filter set, ``repeats`` times, timed around the library call (no cache)."""
    from marsvision.archive.facets import facets, timeline
    from marsvision.archive.queries import Filters

    engine = open_engine(db)
    calls = {
        "facets": lambda s, f: facets(s, f),
        "timeline by class": lambda s, f: timeline(s, f, "class"),
        "timeline by camera": lambda s, f: timeline(s, f, "camera"),
    }
    out = {}
    with sessions(engine)() as s:
        for name, call in calls.items():
            all_ms = []
            for label, params in FILTER_SETS.items():
                ms = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    call(s, Filters(**params))
                    ms.append((time.perf_counter() - t0) * 1000)
                out.setdefault(name, {})[label] = {"p50_ms": p(ms, 50), "p95_ms": p(ms, 95)}
                all_ms += ms
            out[name]["all"] = {"p50_ms": p(all_ms, 50), "p95_ms": p(all_ms, 95), "n": len(all_ms)}
    engine.dispose()
    return out


def over_http(db: str, requests: int, seed: int = 0) -> dict:
    """A real server (`marsvision serve`, its own process): /api/facets and /api/timeline, one client,
    each request with a sol range and a minimum confidence (a whole percent < 50 %, as the page's slider
    sends: what the maintained counts can answer, archive/counts.py) drawn at random (so the 5-second cache
    rarely answers), then the same filters again (what the cache answers while a user pages)."""
    import random
    import socket
    import subprocess

    import httpx

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "marsvision.cli", "serve", "--db", db, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(seed)
    out = {}
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 600  # a copied archive has no similar-images index file yet: built first
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
            endpoints = (("/api/facets", {}), ("/api/timeline", {"by": "class"}), ("/api/timeline", {"by": "camera"}))
            for path, extra in endpoints:
                cold, warm = [], []
                sets = list(FILTER_SETS.values())
                for i in range(requests):
                    lo = rng.randrange(0, 1000)
                    params = {**sets[i % len(sets)], **extra, "sol_min": lo, "sol_max": lo + rng.randrange(1, 400)}
                    # a timeline is cached without its sol range: another filter drawn at random defeats that
                    params.setdefault("min_confidence", rng.randrange(0, 50) / 100)
                    for times in (cold, warm):
                        t0 = time.perf_counter()
                        r = client.get(path, params=params)
                        times.append((time.perf_counter() - t0) * 1000)
                        assert r.status_code == 200, r.text
                name = path.rsplit("/", 1)[1] + (f" by {extra['by']}" if extra else "")
                out[name] = {
                    "uncached": {"p50_ms": p(cold, 50), "p95_ms": p(cold, 95), "n": len(cold)},
                    "cached": {"p50_ms": p(warm, 50), "p95_ms": p(warm, 95), "n": len(warm)},
                    "bytes": len(r.content),
                }
    finally:
        server.terminate()
        server.wait(10)
    return out


def markdown(out: dict) -> str:
    lines = [
        f"# Facets and timeline at {out['rows']:,} rows ({out['db']}, 2 cores shared with other processes)",
        "",
        f"Load average when it started: {out['load_average']}. Command: `python benchmarks/browse.py`.",
        "",
        "## In-process (the library call, no cache)",
        "",
        "| query | filters | p50 ms | p95 ms |",
        "|---|---|---|---|",
    ]
    for name, by_filters in out["in_process"].items():
        for label, v in by_filters.items():
            lines.append(f"| {name} | {label} | {v['p50_ms']} | {v['p95_ms']} |")
    lines += ["", "## Over HTTP (one client, a random sol range and minimum confidence per request)", ""]
    lines += [
        "| request | uncached p50 | uncached p95 | cached p50 | cached p95 | body bytes |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in out["http"].items():
        u, c = v["uncached"], v["cached"]
        lines.append(f"| {name} | {u['p50_ms']} | {u['p95_ms']} | {c['p50_ms']} | {c['p95_ms']} | {v['bytes']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="the MSL data set (calibrated/*.JPG)")
    ap.add_argument("--db", type=Path, default=Path("/tmp/marsvision-browse-bench/archive.db"))
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--real", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--requests", type=int, default=70, help="HTTP requests per endpoint")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = ap.parse_args()
    if args.backend == "postgresql":
        from serve import postgres_server

        with postgres_server() as (url, version, _):
            return run(args, url, {"rows": args.rows, "db": "postgresql", "server": version}, build_first=True)
    fresh = not args.db.exists()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    return run(args, f"sqlite:///{args.db}", {"rows": args.rows, "db": "sqlite"}, build_first=fresh)


def run(args, url: str, out: dict, build_first: bool) -> int:
    import os

    if build_first:
        out["build"] = build(url, args.rows, args.data, args.real)
    if args.build_only:
        print(json.dumps(out.get("build", {}), default=str)[:2000])
        return 0
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["in_process"] = in_process(url, args.repeats)
    out["http"] = over_http(url, args.requests)
    name = "browse" + ("" if out["db"] == "sqlite" else "-postgresql")
    name += "" if args.rows == 100_000 else f"-{args.rows}"
    write_results(name, json.loads(json.dumps(out, default=str)), markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
