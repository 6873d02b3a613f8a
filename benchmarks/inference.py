"""Edge-runtime benchmark: speed, latency, size, memory and accuracy of each runtime, in one run.

    python benchmarks/inference.py --data ../shared/data/msl-images

On the official test split (1305 images), all in the same run so ratios are comparable:

- decode+resize only (the floor): ``transforms.decode`` (PIL open, JPEG draft, RGB, resize) in
  1 and 2 threads, no model;
- ``marsvision predict`` end to end, as a user runs it (a fresh process: start-up, model load,
  decoding, inference, CSV written) for torch (the .pt checkpoint) in fp32 and with the bf16
  autocast the torch path uses on CPUs that have it, ONNX Runtime fp32 and ONNX Runtime int8,
  with ``--threads 1`` and ``--threads 2``: images/s (best of ``--repeats``),
  peak RSS of the process (``wait4``), test accuracy and macro-F1 from its CSV;
- batch-1 latency, one thread, after warm-up: p50/p90/p99 over ``--latency-runs`` single-image
  calls of all a prediction computes after decoding (normalisation, model, head, calibration and
  novelty: ``Classifier.outputs`` + ``trust.apply``), each runtime in its own process;
- model file sizes.

Writes ``benchmarks/results/inference.json`` and ``inference.md`` (the README table).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, RESULTS, write_results

from marsvision.data.msl import MSLDataset
from marsvision.metrics import classification_metrics
from marsvision.model_file import bundled_model_path, bundled_source_path
from marsvision.preprocess import decode


def decode_rate(paths: list[Path], size: int, threads: int) -> float:
    """Images/s of decode+resize alone (the floor any runtime sits on)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda p: decode(p, size), paths):
            pass
    return len(paths) / (time.perf_counter() - t0)


# `marsvision predict` as the console script runs it; "torch_fp32" turns bf16 autocast off first.
CLI = "import sys; from marsvision.cli import main; sys.exit(main())"
CLI_FP32 = (
    "import sys; import marsvision.inference.torch_runtime as t; t.TorchClassifier.autocast = False; "
    "from marsvision.cli import main; sys.exit(main())"
)


def run_predict(model: Path, list_file: Path, threads: int, out_csv: Path, fp32: bool = False) -> dict:
    """One `marsvision predict` process over the listed files: wall time and peak RSS."""
    paths = list_file.read_text().split("\n")
    cmd = [
        sys.executable,
        "-c",
        CLI_FP32 if fp32 else CLI,
        "predict",
        *paths,
        "--model",
        str(model),
        "--threads",
        str(threads),
        "--output",
        str(out_csv),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"predict failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def scores(out_csv: Path, truth: dict[str, str]) -> dict:
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    names = sorted(set(truth.values()) | {r["label"] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    m = classification_metrics([index[truth[r["path"]]] for r in rows], [index[r["label"]] for r in rows], names)
    return {"n": m["n"], "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}


LATENCY_WORKER = r"""
import json, sys, time
import numpy as np
from marsvision.inference.predict import load_model
from marsvision.preprocess import decode
model, fp32, runs, paths = sys.argv[1], sys.argv[2] == "fp32", int(sys.argv[3]), sys.argv[4:]
if model.endswith(".pt"):
    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import marsvision.inference.torch_runtime
    marsvision.inference.torch_runtime.TorchClassifier.autocast = not fp32
clf = load_model(model, threads=1)
images = [decode(p, clf.input_size)[None] for p in paths]
def predict_decoded(x):  # all a prediction computes after decoding: model, head, calibration, novelty
    logits, features, texture = clf.outputs(x)
    return clf.trust.apply(logits, texture, features)
for x in images[:50]:
    predict_decoded(x)  # warm-up
times = []
for i in range(runs):
    x = images[i % len(images)]
    t0 = time.perf_counter()
    predict_decoded(x)
    times.append(time.perf_counter() - t0)
ms = np.array(times) * 1000
print(json.dumps({"runs": runs, "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                  "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}))
"""


def latency(model: Path, runs: int, paths: list[Path], fp32: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", LATENCY_WORKER, str(model), "fp32" if fp32 else "auto", str(runs), *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="data set folder")
    ap.add_argument("--torch-model", default=str(bundled_source_path()), help="torch checkpoint (.pt)")
    ap.add_argument("--int8", default=str(bundled_model_path()), help="int8 ONNX file")
    ap.add_argument("--fp32", default="", help="fp32 ONNX file (default: runs/export/<name>/<name>.onnx)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts for end-to-end runs")
    ap.add_argument("--repeats", type=int, default=2, help="end-to-end runs per setting (best one reported)")
    ap.add_argument("--latency-runs", type=int, default=1000, help="timed batch-1 calls per runtime")
    ap.add_argument("--skip-torch", action="store_true", help="leave out the torch runtime")
    args = ap.parse_args()

    torch_model = Path(args.torch_model)
    fp32 = Path(args.fp32) if args.fp32 else REPO / "runs" / "export" / torch_model.stem / f"{torch_model.stem}.onnx"
    runtimes = {"torch_fp32": torch_model, "torch_bf16": torch_model, "ort_fp32": fp32, "ort_int8": Path(args.int8)}
    if args.skip_torch:
        runtimes = {k: v for k, v in runtimes.items() if not k.startswith("torch")}
    for name, path in runtimes.items():
        if not path.is_file():
            sys.exit(
                f"{name}: model file {path} not found (export it with `marsvision export --model "
                f"{torch_model} --int8 --output marsvision/assets`)"
            )
    ds = MSLDataset(args.data or None)
    test = ds.split("test")
    truth = {str(p): ds.class_names[int(c)] for p, c in zip(test.paths, test.labels, strict=True)}
    threads = [int(t) for t in args.threads.split(",")]
    result: dict = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
            "images": len(test),
            "note": "end-to-end = a fresh `marsvision predict` process over all test images "
            "(start-up, model load, decode, inference, CSV); best of repeats",
        },
        "files": {name: {"path": str(p), "mb": round(p.stat().st_size / 2**20, 2)} for name, p in runtimes.items()},
    }
    import onnxruntime

    result["meta"]["onnxruntime"] = onnxruntime.__version__
    size = 224
    print(f"{len(test)} test images; load average {os.getloadavg()[0]:.2f}", flush=True)
    # The floor is the best decode rate seen: measured at the start and again at the end of the run.
    floor = {t: [decode_rate(test.paths, size, t) for _ in range(args.repeats + 1)] for t in threads}
    print("decode+resize only:", {t: round(max(v)) for t, v in floor.items()}, flush=True)

    e2e: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        list_file = Path(tmp) / "files.txt"
        list_file.write_text("\n".join(map(str, test.paths)))
        for name, path in runtimes.items():
            for t in threads:
                runs = [
                    run_predict(path, list_file, t, Path(tmp) / f"{name}-{t}.csv", fp32=name == "torch_fp32")
                    for _ in range(args.repeats)
                ]
                best = min(runs, key=lambda r: r["seconds"])
                e2e[f"{name}@{t}"] = {
                    "img_s": round(len(test) / best["seconds"], 1),
                    "seconds": round(best["seconds"], 2),
                    "all_seconds": [round(r["seconds"], 2) for r in runs],
                    "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
                    "cpu_s": round(best["cpu_s"], 2),
                    **scores(Path(tmp) / f"{name}-{t}.csv", truth),
                }
                print(f"{name} threads={t}: {e2e[f'{name}@{t}']}", flush=True)
    result["end_to_end"] = e2e
    sample = test.paths[:: max(1, len(test) // 200)][:200]
    result["latency_batch1_1thread"] = {}
    for name, path in runtimes.items():
        lat = latency(path, args.latency_runs, sample, fp32=name == "torch_fp32")
        result["latency_batch1_1thread"][name] = {k: round(v, 3) for k, v in lat.items()}
        print(f"{name} latency: {result['latency_batch1_1thread'][name]}", flush=True)

    for t in threads:
        floor[t] += [decode_rate(test.paths, size, t) for _ in range(args.repeats + 1)]
    result["decode_img_s"] = {str(t): round(max(v), 1) for t, v in floor.items()}
    result["decode_img_s_all"] = {str(t): [round(x) for x in v] for t, v in floor.items()}
    print("decode+resize only (best of start and end):", result["decode_img_s"], flush=True)
    t_max = str(max(threads))
    for name in ("torch_fp32", "torch_bf16"):
        if name in runtimes:
            result[f"int8_vs_{name}_end_to_end"] = round(
                e2e[f"ort_int8@{t_max}"]["img_s"] / e2e[f"{name}@{t_max}"]["img_s"], 2
            )
    result["int8_vs_decode_floor"] = round(e2e[f"ort_int8@{t_max}"]["img_s"] / result["decode_img_s"][t_max], 3)
    result["meta"]["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results("inference", result, markdown_table(result, threads))


def markdown_table(r: dict, threads: list[int]) -> str:
    labels = {
        "torch_fp32": "torch fp32 (.pt)",
        "torch_bf16": "torch bf16 autocast (.pt; CLI default on this CPU)",
        "ort_fp32": "ONNX Runtime fp32",
        "ort_int8": "ONNX Runtime int8",
    }
    head = (
        ["runtime"]
        + [f"img/s, {t} thr" for t in threads]
        + ["p50 / p90 / p99 ms (batch 1, 1 thr)", "file MB", "peak RSS MB", "test acc", "test macro-F1"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append(
        "| decode+resize only (floor) | "
        + " | ".join(f"{r['decode_img_s'][str(t)]:.0f}" for t in threads)
        + " | – | – | – | – | – |"
    )
    t_max = max(threads)
    for name, label in labels.items():
        if f"{name}@{t_max}" not in r["end_to_end"]:
            continue
        e = r["end_to_end"]
        lat = r["latency_batch1_1thread"][name]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{e[f'{name}@{t}']['img_s']:.0f}" for t in threads)
            + f" | {lat['p50_ms']:.1f} / {lat['p90_ms']:.1f} / {lat['p99_ms']:.1f} | {r['files'][name]['mb']:.1f}"
            + f" | {e[f'{name}@{t_max}']['peak_rss_mb']:.0f} | {e[f'{name}@{t_max}']['accuracy']:.4f}"
            + f" | {e[f'{name}@{t_max}']['macro_f1']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
