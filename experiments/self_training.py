"""Self-training of the probe on unlabelled images (transductive; passed the second forward run,
experiments/results/probe_forward.md, and was kept out of the product as an experiment).

    python experiments/self_training.py --data ../shared/data/msl-images --adapt test \
        --train-splits train+val --name probe-lite0ml-trainval-192-adapt-test

Fits the multi-level Lite0 probe (192 px, C = 1) on ``--train-splits``, pseudo-labels the ``--adapt``
images (a split, whose labels are not read, or a folder) whose top probability is >= 0.9, refits
with them at half weight (Lee, 2013) and writes an ordinary model file,
``runs/experiments/<name>/best.pt``, which benchmarks/compare_models.py evaluates.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from marsvision.atomic import atomic_write  # noqa: E402
from marsvision.data.msl import SPLITS, DataError, MSLDataset, decode_many  # noqa: E402
from marsvision.inference.classifier import expand_sources  # noqa: E402
from marsvision.model_file import model_meta  # noqa: E402
from marsvision.nets.checkpoint import save_model  # noqa: E402
from marsvision.nets.models import model_defaults  # noqa: E402
from marsvision.training.probe import ProbeConfig, extract_features, fit_head, fold_head, frozen_backbone  # noqa: E402


def self_train(
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    c: float,
    threshold: float = 0.9,
    weight: float = 0.5,
    sample_weight: np.ndarray | None = None,
    first=None,
) -> tuple:
    """Adapt ``fit_head`` to unlabelled images of a later period by one round of pseudo-labels (Lee, 2013).

    Fit on (x, y); label the ``pool`` images (M, F) whose top probability is ≥ ``threshold``; refit on
    both, the pseudo-labelled ones class-balanced among themselves and scaled by ``weight``. The labelled
    part keeps ``sample_weight`` (default: class-balanced, mean 1). ``first``: that first fit, if the
    caller already made it. Returns (pipeline, kept mask (M,)).
    """

    def balanced(labels):
        count = np.bincount(labels)
        return len(labels) / (np.count_nonzero(count) * count[labels])

    first = first if first is not None else fit_head(x, y, c, sample_weight=sample_weight)
    proba = first.predict_proba(pool)  # (M, K) over first.classes_
    kept = proba.max(1) >= threshold
    pseudo = first.classes_[proba[kept].argmax(1)]
    w = np.concatenate([balanced(y) if sample_weight is None else sample_weight, weight * balanced(pseudo)])
    return fit_head(np.concatenate([x, pool[kept]]), np.concatenate([y, pseudo]), c, sample_weight=w), kept


def adaptation_images(ds: MSLDataset, source: str) -> list[Path]:
    """Image paths of ``source``: a split of ``ds`` (paths only, its labels are not used) or a folder."""
    if source in SPLITS:
        return ds.split(source).paths
    files = [Path(f) for f in expand_sources([source])]
    if not Path(source).is_dir() or not files:
        raise DataError(f"{source}: not a split ({', '.join(SPLITS)}) nor a folder holding images")
    return files


def readable_rows(errors: list[tuple[int, str]], n: int, source: str) -> np.ndarray:
    """Indices of the ``n`` adaptation images that decoded; each unreadable one is named on stderr."""
    for _, msg in sorted(errors):
        print(f"skipped for adaptation: {msg}", file=sys.stderr)
    rows = np.setdiff1d(np.arange(n), [i for i, _ in errors])
    if not len(rows):
        raise DataError(f"{source}: none of its {n} images could be read")
    return rows


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="")
    ap.add_argument("--adapt", required=True, help="a split name (its labels are not used) or a folder")
    ap.add_argument("--train-splits", default="train")
    ap.add_argument("--model", default="efficientnet_lite0_multilevel")
    ap.add_argument("--img-size", type=int, default=192)
    ap.add_argument("--c", type=float, default=1.0)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--name", required=True)
    args = ap.parse_args(argv)
    if args.adapt in args.train_splits.split("+"):
        raise SystemExit(f"--adapt {args.adapt}: that split is already fitted on with its labels")
    ds = MSLDataset(args.data or None)
    train = ds.splits(args.train_splits.split("+"))
    class_ids = sorted(set(train.labels.tolist()))
    train = train.subset(args.limit or None)
    backbone, preset = frozen_backbone(args.model)
    to_index = {c: i for i, c in enumerate(class_ids)}

    def feats(paths, errors=None):
        return extract_features(backbone, torch.from_numpy(decode_many(paths, args.img_size, errors=errors)), preset)

    x, y = feats(train.paths), np.array([to_index[c] for c in train.labels])
    pool, errors = adaptation_images(ds, args.adapt), []
    x_pool = feats(pool, errors)
    readable = readable_rows(errors, len(pool), args.adapt)
    pipe, kept = self_train(x, y, x_pool[readable], args.c, args.threshold, args.weight)
    adapted = {"images": len(readable), "unreadable": len(errors), "pseudo_labelled": int(kept.sum())}
    w, b = fold_head(pipe, len(class_ids))
    backbone.reset_classifier(len(class_ids))
    head = backbone.get_classifier()
    head.weight.data, head.bias.data = torch.from_numpy(w), torch.from_numpy(b)
    d = model_defaults(args.model)
    run = Path(args.out) / "experiments" / args.name
    cfg = {
        **asdict(
            ProbeConfig(
                model=args.model,
                data=args.data,
                train_splits=args.train_splits,
                img_size=args.img_size,
                c=args.c,
                limit=args.limit,
            )
        ),
        **vars(args),
    }
    save_model(
        run / "best.pt",
        backbone,
        model_meta(
            args.model,
            [ds.class_names[c] for c in class_ids],
            args.img_size,
            d["mean"],
            d["std"],
            config=cfg,
            metrics={"adapted": adapted},
        ),
    )
    with atomic_write(run / "config.json") as f:
        json.dump({**cfg, "adapted": adapted}, f, indent=2)
    print(
        f"self-trained on {adapted['pseudo_labelled']} of {adapted['images']} {args.adapt} images → {run / 'best.pt'}"
    )
    return run / "best.pt"


if __name__ == "__main__":
    main()
