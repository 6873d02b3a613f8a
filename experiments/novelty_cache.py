"""Embed the official splits and the OOD set once with the bundled int8 file, for the novelty experiments.

    python experiments/novelty_cache.py --data ../shared/data/msl-images --out /tmp/novelty-cache

Writes, per split (train, val, test, ood): features (N, 1792), texture (N, 1280), the tapped stage maps
(N, 512, 6, 6; stages 6 and 7), the head map (N, 1280, 6, 6) and the stride-16 map of stage 5
(``blocks.4``, N, 112, 12, 12) as float16, labels, sols and paths. The stage-5 map is not a graph output of
the bundled file: a copy of the graph with that tensor added as an output is run here.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from marsvision.data.msl import MSLDataset, decode_many, sol_of
from marsvision.inference.onnx_runtime import OnnxClassifier
from marsvision.model_file import bundled_model_path

REPO = Path(__file__).resolve().parents[1]
MID = "/blocks.4/blocks.4.2/Add_output_0"  # the last block of stage 5: 112 channels at stride 16


def with_mid_output(src: Path, dst: Path) -> None:
    proto = onnx.load(str(src))
    proto.graph.node.append(helper.make_node("Identity", [MID], ["mid_map"], name="output_mid_map"))
    proto.graph.output.append(helper.make_tensor_value_info("mid_map", onnx.TensorProto.FLOAT, None))
    onnx.save(proto, str(dst))


def embed(clf: OnnxClassifier, paths: list[Path], out: Path, name: str, batch: int = 32) -> None:
    n = len(paths)
    arrays: dict[str, np.ndarray] = {}
    for lo in range(0, n, batch):
        u8 = decode_many(paths[lo : lo + batch], clf.input_size, workers=2)
        names = ["features", "texture", *clf.map_names, "mid_map"]
        got = dict(zip(names, clf._run(names, u8), strict=True))
        got["taps"] = np.concatenate([got.pop(m) for m in clf.map_names[1:]], axis=1)
        got["head_map"] = got.pop(clf.map_names[0])
        for k, v in got.items():
            if k not in arrays:
                arrays[k] = np.zeros((n, *v.shape[1:]), np.float32 if k in ("features", "texture") else np.float16)
            arrays[k][lo : lo + len(v)] = v
        print(f"{name} {min(lo + batch, n)}/{n}", flush=True)
    for k, v in arrays.items():
        np.save(out / f"{name}_{k}.npy", v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="/tmp/novelty-cache")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = MSLDataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "mid.onnx"
        with_mid_output(bundled_model_path(), f)
        clf = OnnxClassifier(f, threads=1)
        rows = list(csv.DictReader((REPO / "benchmarks/ood/provenance.csv").open()))
        ood = [REPO / "benchmarks/ood/images" / r["file"] for r in rows]
        embed(clf, ood, out, "ood")
        for split in ("val", "test", "train"):
            s = ds.split(split)
            np.save(out / f"{split}_labels.npy", s.labels)
            np.save(out / f"{split}_sols.npy", np.array([sol_of(p) for p in s.paths]))
            (out / f"{split}_paths.txt").write_text("\n".join(map(str, s.paths)))
            embed(clf, s.paths, out, split)


if __name__ == "__main__":
    main()
