"""Ablations of the linear probe (b) on val: features, class weighting, C, and horizontal-flip augmentation.

    python experiments/probe_ablation.py --data ../shared/data/msl-images

Extracts frozen Lite0 features once (train, val and their mirror images, at the bundled model's
192 px), then fits the logistic regression per setting. Features: "head" is the pooled 1280-d head
(``efficientnet_lite0``); "multi-level" adds the pooled outputs of the last two block stages
(``efficientnet_lite0_multilevel``, 1792-d; its first 1280 are the head's). Class weight =
count^-power (power 1 is scikit-learn's ``class_weight="balanced"`` up to a constant); "flip" adds
the mirrored training images. Each row gives val accuracy, macro-F1 and the paired 95 % bootstrap
intervals of its differences to the shipped setting (multi-level, power 1, C = 1, no flips). Writes
``experiments/results/probe_ablation.json`` and ``probe_ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # benchmarks/common.py (results), beside the benchmarks

from common import EXPERIMENT_RESULTS, write_results  # noqa: E402

from marsvision.data.msl import MSLDataset, decode_many  # noqa: E402
from marsvision.metrics import paired_scores  # noqa: E402
from marsvision.training.probe import extract_features, fit_head, frozen_backbone  # noqa: E402

SHIPPED = {"features": "multi-level", "power": 1.0, "C": 1.0, "flip": False}
SETTINGS = [{"features": "multi-level", "power": 1.0, "C": c, "flip": False} for c in (0.3, 1.0, 3.0, 10.0)] + [
    {"features": "head", "power": p, "C": c, "flip": f}
    for f in (False, True)
    for p in (1.0, 0.75, 0.5)
    for c in (1.0, 3.0, 10.0)
]
HEAD = 1280  # the multi-level features start with the head's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="data set folder")
    ap.add_argument("--img-size", type=int, default=192, help="input size in pixels")
    args = ap.parse_args()

    ds = MSLDataset(args.data or None)
    train, val = ds.split("train"), ds.split("val")
    ids = sorted(set(train.labels.tolist()))
    index = {c: i for i, c in enumerate(ids)}
    names = [ds.class_names[c] for c in ids]
    backbone, preset = frozen_backbone("efficientnet_lite0_multilevel")
    x_tr = torch.from_numpy(decode_many(train.paths, args.img_size))
    f_tr, f_tr_flip = extract_features(backbone, x_tr, preset), extract_features(backbone, x_tr.flip(2), preset)
    f_va = extract_features(backbone, torch.from_numpy(decode_many(val.paths, args.img_size)), preset)
    y_tr = np.array([index[c] for c in train.labels])
    keep = np.array([c in index for c in val.labels])
    y_va = np.array([index[c] for c in val.labels[keep]])
    f_va = f_va[keep]
    counts = np.bincount(y_tr, minlength=len(ids))

    preds = {}
    for s in SETTINGS:
        cols = slice(None) if s["features"] == "multi-level" else slice(0, HEAD)
        x, y = (np.concatenate([f_tr, f_tr_flip]), np.concatenate([y_tr, y_tr])) if s["flip"] else (f_tr, y_tr)
        w = counts[y] ** -s["power"]
        preds[json.dumps(s)] = fit_head(x[:, cols], y, s["C"], sample_weight=w / w.mean()).predict(f_va[:, cols])
        print(s, flush=True)
    ref = preds[json.dumps(SHIPPED)]
    rows = []
    for s in SETTINGS:
        p = preds[json.dumps(s)]
        sc = paired_scores(y_va, p, ref, names)
        rows.append(
            {
                **s,
                "val_acc": round(sc["accuracy"], 4),
                "val_macro_f1": round(sc["macro_f1"], 4),
                "val_acc_diff_ci95": [round(v, 4) for v in sc["accuracy_diff"]],
                "val_macro_f1_diff_ci95": [round(v, 4) for v in sc["macro_f1_diff"]],
            }
        )

    def span(v: list[float]) -> str:
        return f"{v[0]:+.3f} to {v[1]:+.3f}"

    lines = [
        "| features | class weight | C | flipped copies | val acc | val macro-F1 | acc − shipped, 95% CI | "
        "macro-F1 − shipped, 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['features']} | count^-{r['power']:g} | {r['C']:g} | {'yes' if r['flip'] else 'no'} | "
        f"{r['val_acc']:.4f} | {r['val_macro_f1']:.4f} | {span(r['val_acc_diff_ci95'])} | "
        f"{span(r['val_macro_f1_diff_ci95'])} |"
        for r in rows
    ]
    write_results(
        "probe_ablation",
        {"img_size": args.img_size, "shipped": SHIPPED, "rows": rows},
        "\n".join(lines),
        folder=EXPERIMENT_RESULTS,
    )


if __name__ == "__main__":
    main()
