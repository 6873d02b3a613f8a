"""What the count triggers (archive/counts.py, migration 0007) cost a bulk load: ``--rows`` image rows (and
their vectors) copied from an existing archive into a fresh one, as benchmarks/serve.py loads its synthetic
rows (executemany in chunks of 5 000), with the triggers, and without them followed by one rebuild of the
counts. On SQLite and, with ``--backend postgresql``, a throwaway PostgreSQL server (tests/servers.py).

    nice -n 5 python benchmarks/count_triggers.py --source /tmp/counts-1m/archive.db --rows 100000

Writes benchmarks/results/count_triggers[-postgresql].{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import write_results
from sqlalchemy import create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from marsvision.archive import counts  # noqa: E402
from marsvision.archive.db import Image, ImageVectors, open_engine, sessions  # noqa: E402
from marsvision.archive.versions import ensure_active  # noqa: E402


def source_rows(path: Path, n: int) -> list[dict]:
    """The first ``n`` images of the source archive with their vectors, as bulk_insert takes them."""
    engine = create_engine(f"sqlite:///{path}")
    v = ImageVectors
    q = select(*Image.__table__.c, v.features, v.texture, v.sketch).outerjoin(v, v.image_id == Image.id).limit(n)
    with engine.connect() as conn:
        rows = [{k: x for k, x in r._mapping.items() if k not in ("id", "model_id")} for r in conn.execute(q)]
    engine.dispose()
    return rows


def load(url: str, rows: list[dict], triggers: bool, server_pid: int | None = None) -> dict:
    """Bulk-insert ``rows`` into a fresh archive at ``url``: wall seconds, and CPU seconds of this process
    plus the database server's (on 2 shared cores the wall time follows the other processes' load; the CPU
    time much less)."""
    from serve import bulk_insert, tree_cpu  # benchmarks/serve.py: the load the 1M archive is built with

    engine = open_engine(url)
    with sessions(engine).begin() as s:
        model_id = ensure_active(s).id
    rows = [{**r, "model_id": model_id} for r in rows]
    if not triggers:
        with engine.begin() as conn:
            counts.drop_triggers(conn)
    cpu = lambda: time.process_time() + (tree_cpu(server_pid) if server_pid else 0.0)  # noqa: E731
    c0 = cpu()
    out = {"insert_s": round(bulk_insert(engine, rows), 2), "insert_cpu_s": round(cpu() - c0, 2)}
    if not triggers:
        t0, c0 = time.perf_counter(), cpu()
        with engine.begin() as conn:
            counts.rebuild(conn)
            counts.create_triggers(conn)
        out["rebuild_s"], out["rebuild_cpu_s"] = round(time.perf_counter() - t0, 2), round(cpu() - c0, 2)
    with engine.connect() as conn:
        out["counted"] = int(conn.scalar(select(func.sum(counts.ImageTotal.n))))
        out["rows"] = int(conn.scalar(select(func.count()).select_from(Image)))
    engine.dispose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="a SQLite archive to copy rows from")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-vectors", action="store_true", help="insert the image rows without their vectors")
    args = ap.parse_args()
    rows = source_rows(args.source, args.rows)
    if args.no_vectors:  # the images table alone: what the triggers add to, without 3.7 KB of vectors a row
        rows = [{**r, "features": None} for r in rows]
    out: dict = {"rows": len(rows), "backend": args.backend, "load_average": [round(x, 2) for x in os.getloadavg()]}
    runs = []
    for _ in range(args.repeats):
        for triggers in (True, False):
            if args.backend == "postgresql":
                from serve import postgres_server

                with postgres_server() as (url, version, postmaster):
                    out["server"] = version
                    runs.append({"triggers": triggers, **load(url, rows, triggers, postmaster)})
            else:
                folder = Path(tempfile.mkdtemp(prefix="marsvision-count-triggers-"))
                try:
                    runs.append({"triggers": triggers, **load(f"sqlite:///{folder / 'a.db'}", rows, triggers)})
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            print(runs[-1], flush=True)
    out["runs"] = runs
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    lines = [
        f"# Bulk load of {len(rows):,} rows with and without the count triggers ({args.backend})",
        "",
        f"Load average at start/end: {out['load_average']} / {out['load_average_end']} (2 cores, shared). "
        f"Command: `python benchmarks/count_triggers.py --source ARCHIVE --rows {args.rows} --backend {args.backend}`.",
        "",
        f"Vectors inserted too: {not args.no_vectors}. CPU: this process's and the database server's.",
        "",
        "| triggers | insert s | insert CPU s | rebuild + create triggers s (CPU s) | rows | counted |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {'on' if r['triggers'] else 'off'} | {r['insert_s']} | {r['insert_cpu_s']} | "
        f"{r.get('rebuild_s', '')} ({r.get('rebuild_cpu_s', '')}) | {r['rows']} | {r['counted']} |"
        for r in runs
    ]
    name = "count_triggers" + ("" if args.backend == "sqlite" else "-postgresql")
    name += "-images" if args.no_vectors else ""
    write_results(name, out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
