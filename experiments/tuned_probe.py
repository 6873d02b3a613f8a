"""The probe with its last two stages and head fine-tuned (LP-FT on cached maps, a soup of seeds, then
WiSE-FT), an experiment that failed the forward macro-F1 rule (experiments/results/partial_finetune*.md).

    python experiments/tuned_probe.py --data ../shared/data/msl-images --seeds 1 \
        --name probe-lite0ml-tuned-train-192

Writes an ordinary model file, ``runs/experiments/<name>/best.pt`` (benchmarks/compare_models.py
evaluates it), and config.json. When val is not fitted on, the tuned model and the probe it started
from are scored there with paired bootstrap intervals: one tuning alone can lose 5 pt of val accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from probe_tuning import ProbeTail, average, frozen_stage_maps, interpolate, probe_features, tail_outputs, tune_tail  # noqa: E402

from marsvision.atomic import atomic_write  # noqa: E402
from marsvision.data.msl import MSLDataset, decode_many  # noqa: E402
from marsvision.metrics import classification_metrics, paired_scores  # noqa: E402
from marsvision.model_file import model_meta  # noqa: E402
from marsvision.nets.checkpoint import save_model  # noqa: E402
from marsvision.nets.models import model_defaults  # noqa: E402
from marsvision.training.probe import fit_head, fold_head, frozen_backbone  # noqa: E402

MODEL = "efficientnet_lite0_multilevel"


def tuning_on_val(probe: ProbeTail, tuned: ProbeTail, maps: torch.Tensor, y: np.ndarray, names: list[str]) -> dict:
    """Accuracy and macro-F1 of the probe and of its tuned version on val maps (N, 112, S/16, S/16),
    with paired bootstrap intervals of the differences (tuned − probe)."""
    base, pred = (tail_outputs(m, maps).argmax(1).numpy() for m in (probe, tuned))
    scores = paired_scores(y, pred, base, names)
    own = classification_metrics(y, base, names)
    return {
        "probe": {"accuracy": own["accuracy"], "macro_f1": own["macro_f1"]},
        "tuned": {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]},
        "accuracy_diff": scores["accuracy_diff"],
        "macro_f1_diff": scores["macro_f1_diff"],
    }


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="")
    ap.add_argument("--train-splits", default="train")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--img-size", type=int, default=192)
    ap.add_argument("--c", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=3, help="tuning epochs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, default=0.75, help="WiSE-FT: (1 - alpha) * probe + alpha * tuned")
    ap.add_argument("--views", type=int, default=3, help="cached views per training image")
    ap.add_argument("--seeds", type=int, default=3, help="tunings averaged (a model soup)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--name", required=True)
    args = ap.parse_args(argv)
    ds = MSLDataset(args.data or None)
    train = ds.splits(args.train_splits.split("+"))
    class_ids = sorted(set(train.labels.tolist()))
    train = train.subset(args.limit or None)
    to_index = {c: i for i, c in enumerate(class_ids)}
    names = [ds.class_names[c] for c in class_ids]
    backbone, preset = frozen_backbone(MODEL)

    def maps_of(paths, views=1):
        return frozen_stage_maps(backbone, torch.from_numpy(decode_many(paths, args.img_size)), preset, views)

    maps_tr, y_tr = maps_of(train.paths, args.views), np.array([to_index[c] for c in train.labels])
    w, b = fold_head(fit_head(probe_features(backbone, maps_tr[0]), y_tr, args.c), len(class_ids))
    backbone.reset_classifier(len(class_ids))
    head = backbone.get_classifier()
    head.weight.data, head.bias.data = torch.from_numpy(w), torch.from_numpy(b)
    probe = ProbeTail(backbone, head.weight.data, head.bias.data)
    members, rates = zip(
        *[
            tune_tail(probe, maps_tr, np.arange(len(y_tr)), y_tr, args.lr, args.epochs, seed=seed)
            for seed in range(args.seeds)
        ],
        strict=True,
    )
    tuned = interpolate(probe, average(list(members)), args.alpha)
    tuned.fold_into(backbone)
    tune_val = None
    if args.val_split not in args.train_splits.split("+"):
        val = ds.split(args.val_split).subset(args.limit or None)
        keep = [i for i, c in enumerate(val.labels) if c in to_index]
        tune_val = tuning_on_val(
            probe,
            tuned,
            maps_of([val.paths[i] for i in keep])[0],
            np.array([to_index[c] for c in val.labels[keep]]),
            names,
        )
    d = model_defaults(MODEL)
    run = Path(args.out) / "experiments" / args.name
    cfg = {"model": MODEL, **vars(args), "tune_img_per_s": round(float(np.mean(rates)), 1), "tune_val": tune_val}
    save_model(
        run / "best.pt",
        backbone,
        model_meta(
            MODEL, names, args.img_size, d["mean"], d["std"], config=cfg, metrics={"C": args.c, "tune_val": tune_val}
        ),
    )
    with atomic_write(run / "config.json") as f:
        json.dump(cfg, f, indent=2)
    print(f"tuned probe → {run / 'best.pt'}; on {args.val_split}: {json.dumps(tune_val)}")
    return run / "best.pt"


if __name__ == "__main__":
    main()
