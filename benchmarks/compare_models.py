"""Compare the model family on the official val and test splits, in one reproducible command.

    python benchmarks/compare_models.py --data ../shared/data/msl-images

Trains whatever run folder is missing (tens of minutes each on 2 CPU cores; an existing
``runs/<name>/best.pt`` is reused), then evaluates every model file on val and test with the same
``load_model`` → ``predict`` path as the CLI, and writes ``benchmarks/results/models.json`` and
``models.md``. Selection among models uses the val columns only; test is reported, never used.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, write_results

from marsvision.data.msl import MSLDataset
from marsvision.evaluation.evaluate import evaluate_split
from marsvision.inference.predict import load_model
from marsvision.metrics import bootstrap_ci
from marsvision.model_file import bundled_model_path, bundled_source_path
from marsvision.training.engine import run_folder
from marsvision.training.probe import ProbeConfig, train_probe
from marsvision.training.train import TrainConfig, train

# name → (description, kind, config). Hyper-parameters were chosen on val (see MODEL_CARD.md).
FT = dict(model="efficientnet_lite0", train_size=192, lr=6e-4)
MODELS = {
    "small_cnn-train": (
        "(a) small CNN from scratch",
        "train",
        TrainConfig(model="small_cnn", epochs=8, lr=2e-3, batch_size=64, name="small_cnn-train"),
    ),
    "probe-lite0-train": (
        "(b) frozen Lite0 + balanced logistic regression",
        "probe",
        ProbeConfig(name="probe-lite0-train"),
    ),
    "lite0-train": ("(c) fine-tuned Lite0, 6 epochs", "train", TrainConfig(**FT, epochs=6, name="lite0-train")),
    "lite0-lpft-3ep": (
        "(c) Lite0 LP-FT (fine-tuned from the probe), 3 epochs",
        "train",
        TrainConfig(**FT, epochs=3, init="runs/probe/probe-lite0-train/best.pt", name="lite0-lpft-3ep"),
    ),
    "lite0-lpft-3ep-loss": (
        "(c) Lite0 LP-FT, class-weighted loss instead of the sampler, 3 epochs",
        "train",
        TrainConfig(
            **FT, epochs=3, balance="loss", init="runs/probe/probe-lite0-train/best.pt", name="lite0-lpft-3ep-loss"
        ),
    ),
    "lite0-lpft-3ep-noflip": (
        "(c) Lite0 LP-FT without horizontal flips, 3 epochs",
        "train",
        TrainConfig(
            **FT, epochs=3, hflip=0.0, init="runs/probe/probe-lite0-train/best.pt", name="lite0-lpft-3ep-noflip"
        ),
    ),
    "probe-lite0-train-192": (
        "(b) frozen Lite0 + balanced logistic regression, 192 px input",
        "probe",
        ProbeConfig(img_size=192, name="probe-lite0-train-192"),
    ),
    "lite0-lpft-3ep-192": (
        "(c) Lite0 LP-FT, 160 px crops, 192 px input, 3 epochs",
        "train",
        TrainConfig(
            model="efficientnet_lite0",
            lr=6e-4,
            epochs=3,
            train_size=160,
            img_size=192,
            init="runs/probe/probe-lite0-train/best.pt",
            name="lite0-lpft-3ep-192",
        ),
    ),
    "ensemble-probe-lpft": (
        "(d) ensemble: mean probabilities of (b) and (c) LP-FT",
        "ensemble",
        ("probe-lite0-train", "lite0-lpft-3ep"),
    ),
    "probe-lite2-train": (
        "(d) frozen Lite2 + balanced logistic regression",
        "probe",
        ProbeConfig(model="efficientnet_lite2", name="probe-lite2-train"),
    ),
    "probe-lite0-trainval": (
        "(b) refit on train+val, 224 px, C=10 from val (bundled until 2026-11-27)",
        "probe",
        ProbeConfig(train_splits="train+val", c=10.0, name="probe-lite0-trainval"),
    ),
    "probe-lite0-trainval-192": (
        "(b) 192 px refit on train+val, C=3 from val (bundled before the multi-level model)",
        "probe",
        ProbeConfig(train_splits="train+val", img_size=192, c=3.0, name="probe-lite0-trainval-192"),
    ),
    "probe-lite0ml-train-192": (
        "(b) multi-level Lite0 features (head + last two stages) + balanced logistic regression, 192 px",
        "probe",
        ProbeConfig(model="efficientnet_lite0_multilevel", img_size=192, name="probe-lite0ml-train-192"),
    ),
    "probe-lite0ml-trainval-192": (
        "bundled: multi-level (b), 192 px, refit on train+val, C=1 from val",
        "probe",
        ProbeConfig(
            model="efficientnet_lite0_multilevel",
            train_splits="train+val",
            img_size=192,
            c=1.0,
            name="probe-lite0ml-trainval-192",
        ),
    ),
    "probe-lite0ml-train-192-c0.1": (
        "multi-level (b), 192 px, C=0.1 (sol-grouped CV's choice, rejected on val)",
        "probe",
        ProbeConfig(model="efficientnet_lite0_multilevel", img_size=192, c=0.1, name="probe-lite0ml-train-192-c0.1"),
    ),
    "probe-lite0ml-trainval-192-c0.1": (
        "multi-level (b), 192 px, refit on train+val, C=0.1 (bundled briefly, then reverted)",
        "probe",
        ProbeConfig(
            model="efficientnet_lite0_multilevel",
            train_splits="train+val",
            img_size=192,
            c=0.1,
            name="probe-lite0ml-trainval-192-c0.1",
        ),
    ),
    # Experiments, kept out of the product: their model files are built by scripts in experiments/.
    "probe-lite0ml-tuned-train-192": (
        "multi-level (b), 192 px, then its last two stages + head fine-tuned 3 epochs, "
        "WiSE alpha 0.75 (partial_finetune.py; not bundled: forward macro-F1 rule unmet)",
        "experiment",
        "tuned_probe.py --seeds 1",
    ),
    "probe-lite0ml-tuned-trainval-192": (
        "the same, refit on train+val (not bundled)",
        "experiment",
        "tuned_probe.py --seeds 1 --train-splits train+val",
    ),
    # Self-training on unlabelled images (probe_forward.md's second run): transductive rows.
    "probe-lite0ml-train-192-adapt-val": (
        "multi-level (b), 192 px, C=1, self-trained on the unlabelled val images "
        "(transductive: its val column saw val's images, not their labels)",
        "experiment",
        "self_training.py --adapt val",
    ),
    "probe-lite0ml-train-192-adapt-test": (
        "the same, self-trained on the unlabelled test images instead (transductive on test)",
        "experiment",
        "self_training.py --adapt test",
    ),
    "probe-lite0ml-trainval-192-adapt-test": (
        "bundled setting (refit on train+val, C=1), self-trained on the "
        "unlabelled test images (transductive on test; not bundled)",
        "experiment",
        "self_training.py --adapt test --train-splits train+val",
    ),
}


def ensure_model(name: str, kind: str, cfg, data: str) -> Path | list[Path]:
    if kind == "ensemble":
        return [ensure_model(m, MODELS[m][1], MODELS[m][2], data) for m in cfg]
    if kind == "experiment":  # cfg: the script under experiments/ and its options
        path = Path("runs") / "experiments" / name / "best.pt"
        if not path.is_file():
            raise SystemExit(
                f"{name}: build {path} first with `python experiments/{cfg} --data {data or 'DIR'} --name {name}`"
            )
        return path
    cfg.data = data
    if kind == "probe":
        path = run_folder(cfg.out, "probe", cfg.name) / "best.pt"
        if not path.is_file():
            train_probe(cfg)
        return path
    run = run_folder(cfg.out, "train", cfg.name)
    if not (run / "best.pt").is_file():
        train(cfg, resume=str(run) if (run / "last.pt").is_file() else None)
    return run / "best.pt"


# Rows measured by earlier versions whose recipe has left the package (SolDrift, rejected by the forward
# rule; experiments/probe_forward.py keeps it): kept in the table, in their place, never rebuilt.
RETIRED = ["probe-lite0ml-drift-train-192", "probe-lite0ml-drift-trainval-192"]
REFERENCE = "probe-lite0-train"  # the val winner: other rows report their paired val difference to it
# Self-trained row → the same fit without self-training; they report paired test differences to it.
TWINS = {
    "probe-lite0ml-train-192-adapt-val": "probe-lite0ml-train-192",
    "probe-lite0ml-train-192-adapt-test": "probe-lite0ml-train-192",
    "probe-lite0ml-trainval-192-adapt-test": "probe-lite0ml-trainval-192",
}


@functools.cache  # the reference's file is read for every row; called after all evaluations
def read_predictions(name: str, split: str) -> tuple[list[str], list[str], list[str]] | None:
    """(paths, true names, predicted names) from the row's report folder, if it is there."""
    path = Path("reports") / f"{name}-{split}" / "predictions.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["path"] for r in rows], [r["true"] for r in rows], [r["label"] for r in rows]


def add_intervals(row: dict) -> None:
    """95 % bootstrap intervals of each split's accuracy / macro-F1, and the paired macro-F1
    difference to the reference model (both scored on the same resampled images).

    Computed from the report folders of this machine; where a row's (or the reference's) predictions
    are not here, the intervals an earlier run measured are kept."""
    for split in ("val", "test"):
        got, ref = read_predictions(row["model"], split), read_predictions(REFERENCE, split)
        if got is None:
            continue
        paths, true, pred = got
        twin = read_predictions(TWINS[row["model"]], split) if row["model"] in TWINS and split == "test" else None
        names = sorted(set(true) | set(pred) | {n for other in (ref, twin) if other for n in other[2]})
        code = {n: i for i, n in enumerate(names)}
        y, p = [code[n] for n in true], [code[n] for n in pred]
        held_out = split not in row["train_splits"].split("+")
        base = [code[n] for n in ref[2]] if ref and ref[0] == paths and row["model"] != REFERENCE and held_out else None
        ci = bootstrap_ci(y, p, baseline=base)
        row[f"{split}_acc_ci95"] = [round(v, 4) for v in ci["accuracy"]]
        row[f"{split}_macro_f1_ci95"] = [round(v, 4) for v in ci["macro_f1"]]
        if base is not None:
            row[f"{split}_acc_diff_vs_reference_ci95"] = [round(v, 4) for v in ci["accuracy_diff"]]
            row[f"{split}_macro_f1_diff_vs_reference_ci95"] = [round(v, 4) for v in ci["macro_f1_diff"]]
        if twin and twin[0] == paths:
            t = bootstrap_ci(y, p, baseline=[code[n] for n in twin[2]])
            row["test_acc_diff_vs_twin_ci95"] = [round(v, 4) for v in t["accuracy_diff"]]
            row["test_macro_f1_diff_vs_twin_ci95"] = [round(v, 4) for v in t["macro_f1_diff"]]


def ci(r: dict, key: str) -> str:
    return f"{r[key][0]:.3f} to {r[key][1]:.3f}" if key in r else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="data set folder")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--bundled", action="store_true", help="also evaluate the bundled model file")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ds = MSLDataset(args.data or None)
    rows = []
    todo = [(n, *MODELS[n]) for n in args.models.split(",") if n]
    if args.bundled:
        todo.append(("bundled-pt", "bundled torch file, fp16 (marsvision/assets)", "file", bundled_source_path()))
        if bundled_model_path().is_file():
            todo.append(("bundled-int8", "bundled int8 ONNX file (marsvision/assets)", "file", bundled_model_path()))
    for name, desc, kind, cfg in todo:
        path = cfg if kind == "file" else ensure_model(name, kind, cfg, args.data)
        clf = load_model(path)
        files = path if isinstance(path, list) else [path]
        row = {
            "model": name,
            "description": desc,
            "file": "+".join(map(str, files)),
            "arch": clf.meta["arch"],
            "train_splits": clf.meta.get("config", {}).get("train_splits", "train"),
            "size_mb": round(sum(Path(p).stat().st_size for p in files) / 2**20, 2),
        }
        for split in ("val", "test"):
            t0 = time.perf_counter()
            m = evaluate_split(clf, ds, split, Path("reports") / f"{name}-{split}", progress=False)
            row.update(
                {
                    f"{split}_acc": round(m["accuracy"], 4),
                    f"{split}_macro_f1": round(m["macro_f1"], 4),
                    f"{split}_weighted_f1": round(m["weighted_f1"], 4),
                    f"{split}_img_per_s": round(len(ds.split(split)) / (time.perf_counter() - t0), 1),
                }
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    # Merge with rows of earlier runs of this script (models evaluated now replace theirs).
    old = json.loads((RESULTS / "models.json").read_text())["rows"] if (RESULTS / "models.json").is_file() else []
    done = {r["model"] for r in rows}
    order = list(MODELS) + ["bundled-pt", "bundled-int8"]
    at = order.index("probe-lite0ml-tuned-trainval-192") + 1
    order[at:at] = RETIRED
    for r in old:  # descriptions follow the current MODELS table
        r["description"] = MODELS[r["model"]][0] if r["model"] in MODELS else r["description"]
    rows = sorted(
        [r for r in old if r["model"] not in done] + rows,
        key=lambda r: order.index(r["model"]) if r["model"] in order else len(order),
    )
    for r in rows:
        add_intervals(r)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "note": "val trained on by *-trainval models, so their val columns are not held out",
        "intervals": f"95 % percentile bootstrap over images (1000 resamples); differences are paired "
        f"against {REFERENCE} on the same resamples",
    }
    lines = [
        "| model | trained on | val acc | val macro-F1 | val weighted-F1 | val acc − (b), 95% CI | "
        "val macro-F1 − (b), 95% CI | test acc | test macro-F1 | test weighted-F1 | test acc, 95% CI | size MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['description']} | {r['train_splits']} | {r['val_acc']:.3f} | {r['val_macro_f1']:.3f} | "
            f"{r['val_weighted_f1']:.3f} | {ci(r, 'val_acc_diff_vs_reference_ci95')} | "
            f"{ci(r, 'val_macro_f1_diff_vs_reference_ci95')} | "
            f"{r['test_acc']:.3f} | {r['test_macro_f1']:.3f} | {r['test_weighted_f1']:.3f} | "
            f"{ci(r, 'test_acc_ci95')} | {r['size_mb']} |"
        )
    twins = [r for r in rows if "test_acc_diff_vs_twin_ci95" in r]
    if twins:
        lines += [
            "",
            "Self-training against the same fit without it, paired 95 % intervals on test "
            "(accuracy / macro-F1, points):",
        ]
        lines += [
            f"- {r['description']}: {100 * r['test_acc_diff_vs_twin_ci95'][0]:+.1f} to "
            f"{100 * r['test_acc_diff_vs_twin_ci95'][1]:+.1f} / {100 * r['test_macro_f1_diff_vs_twin_ci95'][0]:+.1f} "
            f"to {100 * r['test_macro_f1_diff_vs_twin_ci95'][1]:+.1f}"
            for r in twins
        ]
    write_results("models", {"meta": meta, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
