"""Ablations of the linear probe (b) on val: class weighting, C, and horizontal-flip augmentation.

    python benchmarks/probe_ablation.py --data ../shared/data/msl-images

Extracts frozen Lite0 features once (train, val and their mirror images, at the bundled model's
192 px), then fits the logistic regression per setting. Class weight = count^-power (power 1 is
scikit-learn's ``class_weight="balanced"`` up to a constant, the shipped choice); "flip" adds the
mirrored training images. Each row gives val accuracy, macro-F1 and the paired 95 % bootstrap
interval of its macro-F1 difference to the shipped setting (power 1, C = 3, no flips). Writes
``benchmarks/results/probe_ablation.json`` and ``probe_ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from marsvision.atomic import atomic_write  # noqa: E402
from marsvision.data import MSLDataset, decode_many  # noqa: E402
from marsvision.metrics import bootstrap_ci, classification_metrics  # noqa: E402
from marsvision.probe import extract_features, frozen_backbone  # noqa: E402

SHIPPED = {"power": 1.0, "C": 3.0, "flip": False}
SETTINGS = [{"power": p, "C": c, "flip": f} for f in (False, True) for p in (1.0, 0.75, 0.5) for c in (1.0, 3.0, 10.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="data set folder")
    ap.add_argument("--img-size", type=int, default=192, help="input size in pixels")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ds = MSLDataset(args.data or None)
    train, val = ds.split("train"), ds.split("val")
    ids = sorted(set(train.labels.tolist()))
    index = {c: i for i, c in enumerate(ids)}
    names = [ds.class_names[c] for c in ids]
    backbone, preset = frozen_backbone("efficientnet_lite0")
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
        x, y = (np.concatenate([f_tr, f_tr_flip]), np.concatenate([y_tr, y_tr])) if s["flip"] else (f_tr, y_tr)
        scaler = StandardScaler().fit(x)
        w = counts[y] ** -s["power"]
        clf = LogisticRegression(C=s["C"], max_iter=3000).fit(scaler.transform(x), y, sample_weight=w / w.mean())
        preds[json.dumps(s)] = clf.predict(scaler.transform(f_va))
        print(s, flush=True)
    ref = preds[json.dumps(SHIPPED)]
    rows = []
    for s in SETTINGS:
        p = preds[json.dumps(s)]
        m = classification_metrics(y_va, p, names)
        diff = bootstrap_ci(y_va, p, baseline=ref)["macro_f1_diff"]
        rows.append({**s, "val_acc": round(m["accuracy"], 4), "val_macro_f1": round(m["macro_f1"], 4),
                     "val_macro_f1_diff_ci95": [round(v, 4) for v in diff]})
    out = REPO / "benchmarks" / "results"
    with atomic_write(out / "probe_ablation.json") as f:
        json.dump({"img_size": args.img_size, "shipped": SHIPPED, "rows": rows}, f, indent=2)
    lines = ["| class weight | C | flipped copies | val acc | val macro-F1 | macro-F1 − shipped, 95% CI |",
             "|---|---|---|---|---|---|"]
    lines += [f"| count^-{r['power']:g} | {r['C']:g} | {'yes' if r['flip'] else 'no'} | {r['val_acc']:.4f} | "
              f"{r['val_macro_f1']:.4f} | {r['val_macro_f1_diff_ci95'][0]:+.3f} to {r['val_macro_f1_diff_ci95'][1]:+.3f} |"
              for r in rows]
    with atomic_write(out / "probe_ablation.md") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
