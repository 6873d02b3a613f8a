"""PDS products vs the same images as JPEG: `predict` and `index` throughput, and decoding alone.

    python benchmarks/pds.py --data ../shared/data/msl-images --n 64

The first ``--n`` images of the validation split, scaled to the size of the sample Mastcam label
(1180 x 1323 x 3, as the real RDR products are), are written three ways: a JPEG (quality 95), a
detached PDS3 product (.LBL + band-sequential .IMG) and a PDS4 product (.xml + .img)
(tests/pds_products.py builds them from the real labels in tests/assets/pds). Then, for each:

- decode only: ``preprocess.decode`` (what every runtime does before the model), one thread;
- ``marsvision predict FILES --output x.csv`` and ``marsvision index FILES --db fresh.db``, each a fresh
  process as a user runs it, ``--threads`` cores, best of ``--repeats``: the whole run (start-up, model
  load and for index the database's creation included) and the steady rate (N - n) / (t_N - t_n) between
  a run of the first n = ``--small`` files and one of all N, what each further image costs (as
  benchmarks/scale.py measures it).

Target (issue 24): ``index`` on products ≥ 0.8 x ``predict`` on the same products (steady rates).
Writes benchmarks/results/pds.json and pds.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, write_results
from PIL import Image

from marsvision.preprocess import decode

# The product builders of the tests (real PDS3/PDS4 products from the sample labels), shared, not copied.
sys.path.insert(0, str(REPO / "tests"))
from pds_products import detached, label_size, pds4  # noqa: E402


def write_inputs(sources: list[Path], root: Path) -> dict[str, Path]:
    """The same pixels as JPEG, detached PDS3 and PDS4 products, one folder per format."""
    lines, samples = label_size()
    folders = {name: root / name for name in ("jpeg", "pds3", "pds4")}
    for i, src in enumerate(sources):
        pixels = np.asarray(Image.open(src).convert("RGB").resize((samples, lines), Image.BILINEAR))
        folders["jpeg"].mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folders["jpeg"] / src.name, quality=95)
        detached(folders["pds3"] / f"{i:04d}", pixels)
        pds4(folders["pds4"], pixels, name=f"product{i:04d}")
    return folders


def decode_rate(files: list[Path], size: int = 224) -> float:
    decode(files[0], size)  # pdr's import, once
    t = time.perf_counter()
    for f in files:
        decode(f, size)
    return len(files) / (time.perf_counter() - t)


def cli_seconds(args: list[str], repeats: int, fresh_db: Path | None = None) -> float:
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for r in range(repeats):
        extra = []
        if fresh_db:
            db = fresh_db.with_name(f"{fresh_db.name}-{len(args)}-{r}.db")
            db.unlink(missing_ok=True)
            extra = ["--db", str(db)]
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "marsvision.cli", *args, *extra], env=env, capture_output=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.decode()[-2000:]}")
        best = min(best, seconds)
    return best


def markdown(res: dict) -> str:
    lines = [
        f"# PDS products vs JPEG ({res['n']} images at {res['size']}, {res['threads']} threads, "
        f"best of {res['repeats']}; {res['cpu']})",
        "",
        "| input | bytes/image | decode only (img/s, 1 thread) | predict: whole run / steady (img/s) | "
        "index: whole run / steady (img/s) | index / predict (steady) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["formats"].items():
        lines.append(
            f"| {name} | {r['bytes_per_image']:,} | {r['decode_per_s']:.1f} | {r['predict']['whole']:.1f} / "
            f"{r['predict']['steady']:.1f} | {r['index']['whole']:.1f} / {r['index']['steady']:.1f} | "
            f"{r['index_over_predict']:.2f} |"
        )
    lines += [
        "",
        "jpeg: the same pixels as the products, quality 95. pds3: detached label (.LBL + .IMG); pds4: .xml + .img.",
        "predict and index: a fresh process each, as a user runs them. Steady: (N - n) / (t_N - t_n) between a run",
        f"of n = {res['small']} files and one of all N (start-up, model load and database creation left out).",
        "Target: index on products ≥ 0.8 x predict on the same products (steady).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "msl-images"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--small", type=int, default=16, help="files of the short run (steady rate)")
    args = ap.parse_args()
    data = Path(args.data)
    names = [line.split()[0] for line in (data / "val-calibrated-shuffled.txt").read_text().splitlines()[: args.n]]
    sources = [data / n for n in names]
    lines, samples = label_size()
    with tempfile.TemporaryDirectory(prefix="pds-bench-") as tmp:
        root = Path(tmp)
        folders = write_inputs(sources, root)
        res = {
            "n": len(sources),
            "size": f"{lines} x {samples} x 3",
            "threads": args.threads,
            "repeats": args.repeats,
            "small": args.small,
            "cpu": platform.processor() or platform.machine(),
            "formats": {},
        }
        for name, folder in folders.items():
            files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in (".jpg", ".lbl", ".xml"))
            assert len(files) == len(sources), (name, len(files))
            threads = ["--threads", str(args.threads)]
            rates = {}
            for command in ("predict", "index"):
                seconds = {}
                for part in (files[: args.small], files):
                    if command == "predict":
                        extra = ["--output", str(root / f"{name}.csv")]
                        seconds[len(part)] = cli_seconds(["predict", *map(str, part), *extra, *threads], args.repeats)
                    else:
                        db = root / f"{name}-{len(part)}"
                        seconds[len(part)] = cli_seconds(["index", *map(str, part), *threads], args.repeats, db)
                n, big = len(files[: args.small]), len(files)
                rates[command] = {
                    "seconds": seconds,
                    "whole": big / seconds[big],
                    "steady": (big - n) / (seconds[big] - seconds[n]),
                }
            res["formats"][name] = {
                "bytes_per_image": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) // len(files),
                "decode_per_s": decode_rate(files),
                **rates,
                "index_over_predict": rates["index"]["steady"] / rates["predict"]["steady"],
            }
            print(name, res["formats"][name], flush=True)
    write_results("pds", res, markdown(res))


if __name__ == "__main__":
    main()
