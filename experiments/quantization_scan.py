"""Per-layer int8 sensitivity on val: which convolution, kept in float, brings int8 closest to fp32.

    python experiments/quantization_scan.py --model runs/probe-lite0-train-192/best.pt --data ../shared/data/msl-images

Starts from the default float set (``ExportConfig.keep_float``) and, for every other Conv node,
quantises once more with that node also in float, then measures on the whole val split: top-1
agreement with fp32 and RMS logit error. MinMax calibration keeps each run to seconds (Percentile
takes a minute); the ranking, not the absolute numbers, is the result. Writes
``experiments/results/quantization_scan.json`` and ``quantization_scan.md`` (most helpful layers first).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # benchmarks/common.py (results), beside the benchmarks

from common import EXPERIMENT_RESULTS, write_results  # noqa: E402
from quantization import fidelity, load_inputs  # noqa: E402  (beside this script)

from marsvision.export.onnx import (  # noqa: E402
    ExportConfig,
    export_fp32,
    onnx_logits,
    quant_options,  # noqa: E402
)
from marsvision.export.quantize import quantize_int8, resolve_nodes  # noqa: E402
from marsvision.nets.checkpoint import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="torch model file (.pt), trained on train only")
    ap.add_argument("--data", default="", help="data set folder")
    args = ap.parse_args()
    import onnx
    import torch

    torch.set_num_threads(1)
    base = replace(ExportConfig(), calib_method="minmax")
    inp = load_inputs(args.model, args.data, base.calib_images)
    meta, val_u8, calib_u8 = inp.meta, inp.val_u8, inp.calib_u8
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_fp32(build_model(inp.ckpt), meta, fp32)
        ref = onnx_logits(fp32, val_u8, threads=1)
        always = resolve_nodes(fp32, quant_options(base)["keep_float"])
        convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]

        def score(extra: list[str]) -> dict:
            out = Path(tmp) / "q.onnx"
            quantize_int8(fp32, out, calib_u8, meta, quant_options(replace(base, keep_float=",".join(always + extra))))
            return {**fidelity(onnx_logits(out, val_u8, threads=1), ref), "mb": round(out.stat().st_size / 2**20, 2)}

        baseline = {"node": "(default float set only)", "index": -1, **score([])}
        print(json.dumps(baseline), flush=True)
        for i, name in enumerate(convs):
            if name not in always:
                rows.append({"node": name, "index": i, **score([name])})
                print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (-r["agreement"], r["rms_logit_error"]))
    data = {
        "model": args.model,
        "calibration": "minmax, class-balanced train images",
        "always_float": always,
        "baseline": baseline,
        "rows": rows,
    }
    lines = [
        f"Default float set alone: agreement {baseline['agreement']:.2%}, RMS logit error "
        f"{baseline['rms_logit_error']:.3f}, {baseline['mb']} MB.",
        "",
        "| conv (graph order) | node | val agreement with fp32 | RMS logit error | MB |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['index']} | `{r['node']}` | {r['agreement']:.2%} | {r['rms_logit_error']:.3f} | {r['mb']} |"
        for r in rows
    ]
    write_results("quantization_scan", data, "\n".join(lines), show=20, folder=EXPERIMENT_RESULTS)


if __name__ == "__main__":
    main()
