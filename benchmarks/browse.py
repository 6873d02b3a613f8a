"""Latency of the Atlas-style browsing queries (facet counts, the per-sol timeline) on a 100 000-row archive.

    . .venv/bin/activate && nice -n 5 python benchmarks/browse.py --data /work/shared/data/msl-images

Builds the archive as benchmarks/serve.py does (``build_archive``: the indexer's real rows plus synthetic
copies with varied sols and instruments), then gives a tenth of the synthetic rows an engineering camera
(Navcam, Hazcam: ``off_camera`` true) so the off-camera facet and the confident switch have something to
leave out. Each query runs in-process through the library (what the routes call), on a fresh cache each
time (``--repeats`` runs of each filter set, the cache cleared before each: the figures are of the
queries, not of the 5-second cache), on 2 cores shared with other processes. A kept archive is reused
(``--db``). Writes benchmarks/results/browse.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from sqlalchemy import text  # noqa: E402

from marsvision.archive.db import open_engine  # noqa: E402

FILTER_SETS = {
    "none": {},
    "label": {"label": "wheel"},
    "sol range": {"sol_min": 300, "sol_max": 600},
    "instrument + unknown": {"instrument": "MR", "unknown": False},
    "confident": {"confident": True},
    "reviewed + label + sols": {"reviewed": True, "label": "ground", "sol_min": 100, "sol_max": 900},
    "min confidence": {"min_confidence": 0.95},
}


def build(db: Path, rows: int, data: Path | None, n_real: int) -> dict:
    from serve import build_archive  # benchmarks/serve.py: the same archive as the serve benchmark

    info, _ = build_archive(f"sqlite:///{db}", None, rows, 0.03, 0, data, n_real)
    engine = open_engine(str(db))
    with engine.begin() as conn:  # a tenth of the copies from engineering cameras: off the training cameras
        conn.execute(text("UPDATE images SET off_camera = 0 WHERE instrument IN ('MH', 'ML', 'MR')"))
        conn.execute(
            text(
                "UPDATE images SET instrument = CASE id % 2 WHEN 0 THEN 'NL' ELSE 'FR' END, off_camera = 1 "
                "WHERE id % 10 = 7"
            )
        )
    engine.dispose()
    return info


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="the MSL data set (calibrated/*.JPG)")
    ap.add_argument("--db", type=Path, default=Path("/tmp/marsvision-browse-bench/archive.db"))
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--real", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    out: dict = {"rows": args.rows, "db": "sqlite"}
    if not args.db.exists():
        args.db.parent.mkdir(parents=True, exist_ok=True)
        out["build"] = build(args.db, args.rows, args.data, args.real)
    if args.build_only:
        print(json.dumps(out.get("build", {}), default=str)[:2000])
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
