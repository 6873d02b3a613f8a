"""Choose the int8 quantisation options by measurement on val (never test).

    python benchmarks/quantization.py --model runs/lite0-train/best.pt --data ../shared/data/msl-images

Exports the model to fp32 ONNX once, then quantises it with each candidate option set (the same
``quantize_int8`` that `marsvision export` runs) and measures on the whole val split: top-1
agreement with fp32, accuracy, macro-F1, RMS logit error, and int8 speed (batch 32, one thread).
Writes ``benchmarks/results/<--results>.json`` and ``.md`` (default ``quantization``). The defaults of
``ExportConfig`` are the winner; see README, "Edge runtime".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from common import RESULTS, write_results

from marsvision.data.msl import MSLDataset, balanced_subset, decode_many
from marsvision.export.onnx import (
    ExportConfig,
    export_fp32,
    onnx_logits,
    quant_options,
    split_scores,
    tune_and_export,
    tuning_images,
)
from marsvision.export.quantize import quantize_int8
from marsvision.nets.checkpoint import build_model, read_model_file

# (label, ExportConfig overrides). Baselines first, then the variations around the chosen default.
MM = dict(calib_method="minmax")
CANDIDATES = [
    ("per-tensor U8S8 MinMax, all int8", dict(MM, per_channel=False, keep_float="")),
    ("per-channel U8S8 MinMax, all int8", dict(MM, keep_float="")),
    ("per-channel S8S8 MinMax, all int8", dict(MM, activation_type="int8", keep_float="")),
    ("per-channel U8S8 MinMax, stem conv float", dict(MM, keep_float="stem")),
    ("per-channel U8S8 MinMax, first 2 convs float", dict(MM, keep_float="first:2")),
    ("per-channel U8S8 MinMax, first 3 convs float", dict(MM, keep_float="first:3")),
    ("per-channel U8S8 MinMax 1000 images, first 2 convs float", dict(MM, keep_float="first:2", calib_images=1000)),
    ("per-channel U8S8 Entropy, first 2 convs float", dict(calib_method="entropy", keep_float="first:2")),
    ("per-channel U8S8 Percentile 99.99, first 2 convs float", dict(percentile=99.99, keep_float="first:2")),
    ("per-channel U8S8 Percentile 99.999, first 2 convs float", dict(keep_float="first:2")),
    ("per-channel S8S8 Percentile 99.999, first 2 convs float", dict(activation_type="int8", keep_float="first:2")),
    ("per-channel U8S8 Percentile 99.999, first 2 convs + classifier float", dict(keep_float="first:2,classifier")),
    ("per-channel U8S8 Percentile 99.999, first 3 convs float", dict(keep_float="first:3")),
    ("per-channel U8S8 Percentile 99.999, first 3 convs + classifier float", dict()),
    ("per-channel U8S8 Percentile 99.999, first 3 + last conv float", dict(keep_float="first:3,last:1")),
    (
        "per-channel U8S8 Percentile 99.999, first 3 + last conv + classifier float",
        dict(keep_float="first:3,last:1,classifier"),
    ),
    (
        "per-channel U8S8 Percentile 99.999 1000 images, first 3 convs float",
        dict(keep_float="first:3", calib_images=1000),
    ),
    (
        "per-channel U8S8 Percentile 99.999, first 3 + last 4 convs + classifier float",
        dict(keep_float="first:3,last:4,classifier"),
    ),
    (
        "per-channel U8S8 Percentile 99.999, first 3 + last 8 convs + classifier float",
        dict(keep_float="first:3,last:8,classifier"),
    ),
    (
        "per-channel U8S8 Percentile 99.999, first 3 + last 16 convs + classifier float",
        dict(keep_float="first:3,last:16,classifier"),
    ),
    ("per-channel U8S8 Percentile 99.999, first 6 convs + classifier float", dict(keep_float="first:6,classifier")),
    ("per-channel U8S8 Percentile 99.999, first 9 convs + classifier float", dict(keep_float="first:9,classifier")),
    # Weight tuning (int8_tuning.py) before quantising, on all train images; the rows above have none.
    ("first 3 convs + classifier float, weight tuning 1 epoch, lr 2e-5", dict(tune_epochs=1)),
    ("first 3 convs + classifier float, weight tuning 2 epochs, lr 2e-5 (default)", dict(tune_epochs=2)),
    ("first 3 convs + classifier float, weight tuning 2 epochs, lr 5e-5", dict(tune_epochs=2, tune_lr=5e-5)),
    (
        "first 6 convs + classifier float, weight tuning 1 epoch, lr 2e-5",
        dict(keep_float="first:6,classifier", tune_epochs=1),
    ),
]


def speed(path: Path, images: np.ndarray) -> float:
    """Images/s of the model alone, one thread, batches of 32 (after one warm-up batch)."""
    from marsvision.inference.onnx_runtime import OnnxClassifier

    clf = OnnxClassifier(path, threads=1)
    clf.logits(images[:32])
    t0 = time.perf_counter()
    for i in range(0, len(images), 32):
        clf.logits(images[i : i + 32])
    return len(images) / (time.perf_counter() - t0)


@dataclass
class Inputs:
    """What every quantisation measurement needs: the model file and decoded val + calibration images."""

    ckpt: dict
    meta: dict
    dataset: MSLDataset
    val_u8: np.ndarray  # (N, S, S, 3) the whole val split at the model's input size
    train_labels: np.ndarray
    calib_idx: np.ndarray  # class-balanced train indices (nested: any prefix size is balanced too)
    calib_u8: np.ndarray


def load_inputs(model: str, data: str, n_calib: int) -> Inputs:
    ckpt = read_model_file(model)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    ds = MSLDataset(data or None)
    size = int(meta["input_size"])
    train = ds.split("train")
    calib_idx = balanced_subset(train.labels, n_calib)
    return Inputs(
        ckpt,
        meta,
        ds,
        decode_many(ds.split("val").paths, size, workers=1),
        train.labels,
        calib_idx,
        decode_many([train.paths[i] for i in calib_idx], size, workers=1),
    )


def fidelity(q: np.ndarray, ref: np.ndarray) -> dict:
    """int8 logits against fp32 logits, both (N, C): top-1 agreement and RMS logit error."""
    return {
        "agreement": round(float((q.argmax(1) == ref.argmax(1)).mean()), 4),
        "rms_logit_error": round(float(np.sqrt(((q - ref) ** 2).mean())), 4),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        (
            "| options | val agreement with fp32 | val acc | val macro-F1 | RMS "
            "logit error | img/s (1 thread, model only) | MB |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['options']} | {r['agreement']:.2%} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{r['rms_logit_error']:.3f} | {r['img_s_1thread']:.0f} | {r.get('mb', '–')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="torch model file (.pt)")
    ap.add_argument("--data", default="", help="data set folder")
    ap.add_argument("--only", default="", help="comma-separated candidate numbers (1-based) to run")
    ap.add_argument("--results", default="quantization", help="results file stem under benchmarks/results/")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    n_calib = max(c.get("calib_images", ExportConfig.calib_images) for _, c in CANDIDATES)
    inp = load_inputs(args.model, args.data, n_calib)
    meta, val_u8, names = inp.meta, inp.val_u8, list(inp.meta["class_names"])
    val_true = [inp.dataset.class_names[int(c)] for c in inp.dataset.split("val").labels]
    picked = {int(i) for i in args.only.split(",") if i}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_fp32(build_model(inp.ckpt), meta, fp32)
        ref = onnx_logits(fp32, val_u8, threads=1)
        base = split_scores(ref, val_true, names)
        rows.append(
            {
                "options": "fp32 ONNX (reference)",
                **base,
                "agreement": 1.0,
                "rms_logit_error": 0.0,
                "img_s_1thread": round(speed(fp32, val_u8[:256]), 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        for number, (label, overrides) in enumerate(CANDIDATES, 1):
            if picked and number not in picked:
                continue
            cfg = replace(ExportConfig(), **{"tune_epochs": 0, **overrides})
            out = Path(tmp) / f"q{number}.onnx"
            source, tuning = fp32, {}
            if cfg.tune_epochs > 0:
                source = Path(tmp) / f"tuned{number}.onnx"
                torch.set_num_threads(2)  # tuning is training: give it both cores, then back to one
                tuning = tune_and_export(inp.ckpt, meta, fp32, source, tuning_images(inp.dataset, cfg), cfg, threads=2)
                torch.set_num_threads(1)
            t0 = time.perf_counter()
            # Balanced subsets are nested: the first n of the round-robin order are the n-image set.
            subset = np.isin(inp.calib_idx, balanced_subset(inp.train_labels, cfg.calib_images))
            quantize_int8(source, out, inp.calib_u8[subset], meta, quant_options(cfg))
            seconds = time.perf_counter() - t0
            q = onnx_logits(out, val_u8, threads=1)
            rows.append(
                {
                    "options": label,
                    **split_scores(q, val_true, names),
                    **fidelity(q, ref),
                    "img_s_1thread": round(speed(out, val_u8[:256]), 1),
                    "quantise_s": round(seconds, 1),
                    **(
                        {"tune_s": tuning["seconds"], "tune_loss": [tuning["loss_first"], tuning["loss_last"]]}
                        if tuning
                        else {}
                    ),
                    "mb": round(out.stat().st_size / 2**20, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    json_path = RESULTS / f"{args.results}.json"
    previous = json.loads(json_path.read_text()) if picked and json_path.is_file() else {}
    if previous.get("model") == str(args.model):  # a partial rerun on the same model updates its rows only
        new = {r["options"]: r for r in rows}
        rows = [new.pop(r["options"], r) for r in previous["rows"]] + list(new.values())
    result = {
        "model": str(args.model),
        "val_images": len(val_u8),
        "calibration": "class-balanced train images",
        "rows": rows,
    }
    write_results(args.results, result, markdown(rows))


if __name__ == "__main__":
    main()
