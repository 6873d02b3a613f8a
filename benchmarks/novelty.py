"""Novelty benchmark: does the novelty notice a new kind of rover image, and the images that are not rover images?

    python benchmarks/novelty.py --data ../shared/data/msl-images [--cache /tmp/novelty-bench]

With the bundled int8 file's outputs (pooled features and texture), side by side in one run, the two-part
novelty (``fit_novelty``: the weighted geometric mean of the standardised-features and texture
nearest-neighbour distances, its threshold set by ``forward_quantile``) and the one before it (the texture
alone, ``fit_novelty(None, texture, sols)``):

- **leave-one-class-out** on the official splits: for each class with test images, the novelty is fitted
  on train+val without that class, and the AUROC of its test images against the other test images says
  how well it ranks a kind of image it has never seen above the known kinds (the mean, the worst class
  and every class);
- **out-of-distribution set** (benchmarks/ood, 90 images; provenance.csv says which are generated and
  which are ``[hard]``): AUROC against test with the novelty fitted on all of train+val, for all of
  it, the real images only and the hard ones; the share flagged;
- the share of **test flagged unknown** (novelty > 1) with the novelty fitted on all of train+val, and
  the same for the bundled file's own novelty data (which ``marsvision calibrate`` fitted the same way).

Choices were made on val (experiments/novelty_methods.py); this reports test. Writes
``benchmarks/results/novelty.json`` and ``novelty.md``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, write_results
from inference import latency, run_predict  # the edge benchmark's workers

from marsvision.data.msl import MSLDataset, sol_of
from marsvision.head.trust import fit_novelty
from marsvision.inference.predict import load_model
from marsvision.model_file import bundled_model_path

OOD = REPO / "benchmarks" / "ood"
BEFORE = "before (texture only)"
TWO_PART = "two-part (features + texture)"
METHODS = {
    TWO_PART: lambda f, t, s: fit_novelty(f, t, s),
    BEFORE: lambda f, t, s: fit_novelty(None, t, s),
}


def roc_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    return float(roc_auc_score(y, np.r_[negatives, positives]))


def embed(clf, paths: list[Path], cache: Path | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and texture of ``paths`` (read from / written to ``cache`` when given)."""
    if cache and (cache / f"{name}.npz").exists():
        z = np.load(cache / f"{name}.npz")
        return z["features"], z["texture"]
    preds = list(clf.predict_iter(paths, batch_size=16))
    bad = [p for p in preds if not p.ok]
    if bad:
        sys.exit(f"{bad[0].source}: {bad[0].error}")
    f, t = np.stack([p.features for p in preds]), np.stack([p.texture for p in preds])
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / f"{name}.npz", features=f, texture=t)
    return f, t


def leave_one_class_out(f, t, labels, sols, test_f, test_t, test_labels, names) -> dict:
    """{method: {class: AUROC of its test images against the other test images}}, each with a novelty
    fitted on train+val without that class. One fit serves both methods: the texture alone ranks images
    as its part of the two-part novelty does (a threshold scales a score, it does not reorder it)."""
    out: dict = {name: {} for name in METHODS}
    for c in np.unique(test_labels):
        keep = labels != c
        # any joint threshold ranks the images alike: the forward simulation that sets it is skipped
        nov = fit_novelty(f[keep], t[keep], sols[keep], joint_quantile=0.5)
        pos, name = test_labels == c, names[int(c)]
        for method, s in ((TWO_PART, nov(test_t, test_f)), (BEFORE, nov.part("texture").raw(test_t))):
            out[method][name] = roc_auc(s[~pos], s[pos])
        print(f"  {name:<22} {out[TWO_PART][name]:.3f} (before: {out[BEFORE][name]:.3f})", flush=True)
    return out


def trust_cpu_ms(path: Path, features: np.ndarray, texture: np.ndarray, runs: int = 300) -> float:
    """CPU milliseconds (process time, so other processes on the machine do not count) of the calibration
    and novelty of one image, batch 1, after the model: what the novelty adds to a prediction."""
    clf = load_model(path, threads=1)
    logits = clf.head(features[:runs])
    for i in range(20):
        clf.trust.apply(logits[i : i + 1], texture[i : i + 1], features[i : i + 1])  # warm-up
    t0 = time.process_time()
    for i in range(runs):
        clf.trust.apply(logits[i : i + 1], texture[i : i + 1], features[i : i + 1])
    return (time.process_time() - t0) / runs * 1000


def cost(model: Path, before: str, test_paths: list[Path], runs: int, features, texture) -> dict:
    """File size, batch-1 latency on one thread (all a prediction computes after decoding) and `marsvision
    predict` throughput on test with 2 threads, of ``model`` and the bundled file at git revision
    ``before``, in this run; and whether predict's labels and confidences on test are the same (a refit of
    the novelty should change the novelty and unknown columns only)."""
    out: dict = {"before_revision": before}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before.onnx"
        old.write_bytes(
            subprocess.run(
                ["git", "show", f"{before}:marsvision/assets/{model.name}"], cwd=REPO, capture_output=True, check=True
            ).stdout
        )
        listing = Path(tmp) / "test.txt"
        listing.write_text("\n".join(map(str, test_paths)))
        labels, confidences = {}, {}
        for name, path in (("before", old), ("this file", model)):
            trust_ms = trust_cpu_ms(path, features, texture)
            lat = latency(path, runs, test_paths[:200])
            runs_ = [run_predict(path, listing, 2, Path(tmp) / f"{name}.csv") for _ in range(2)]
            run = min(runs_, key=lambda r: r["seconds"])  # the best of two: the machine is shared
            rows = list(csv.DictReader((Path(tmp) / f"{name}.csv").open(encoding="utf-8")))
            labels[name] = [r["label"] for r in rows]
            confidences[name] = np.array([float(r["confidence"]) for r in rows])
            out[name] = {
                "bytes": path.stat().st_size,
                "mib": round(path.stat().st_size / 2**20, 2),
                "latency_p50_ms": round(lat["p50_ms"], 2),
                "trust_cpu_ms_per_image": round(trust_ms, 3),
                "latency_p90_ms": round(lat["p90_ms"], 2),
                "predict_img_per_s_2_threads": round(len(rows) / run["seconds"], 1),
                "flagged_unknown": sum(r["unknown"] in ("True", "true", "1") for r in rows) / len(rows),
            }
            print(f"{name}: {out[name]}", flush=True)
        out["test_labels_identical"] = labels["before"] == labels["this file"]
        diff = np.abs(confidences["before"] - confidences["this file"])
        out["test_confidence_max_abs_diff"] = float(diff.max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default=str(bundled_model_path()))
    ap.add_argument("--cache", default="", help="folder to keep the embeddings in between runs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--before",
        default="810b439",
        help="git revision whose bundled file is the baseline of the cost comparison ('' to skip it)",
    )
    ap.add_argument("--latency-runs", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    ds = MSLDataset(args.data)
    clf = load_model(args.model, threads=args.threads or None)
    names = ds.class_names
    trval, test = ds.splits(["train", "val"]), ds.split("test")
    f, t = embed(clf, trval.paths, cache, "trainval")
    test_f, test_t = embed(clf, test.paths, cache, "test")
    sols = np.array([sol_of(p) for p in trval.paths])
    rows = list(csv.DictReader((OOD / "provenance.csv").open(encoding="utf-8")))
    ood_f, ood_t = embed(clf, [OOD / "images" / r["file"] for r in rows], cache, "ood")
    subsets = {
        "all": np.ones(len(rows), bool),
        "real": np.array([not r["source"].startswith("generated") for r in rows]),
        "hard": np.array([r["description"].startswith("[hard") for r in rows]),
    }

    result: dict = {"model": Path(args.model).name, "methods": {}}
    print("leave-one-class-out on test", flush=True)
    loco_all = leave_one_class_out(f, t, trval.labels, sols, test_f, test_t, test.labels, names)
    for name, fit in METHODS.items():
        loco = loco_all[name]
        nov = fit(f, t, sols)
        s_test, s_ood = nov(test_t, test_f), nov(ood_t, ood_f)
        worst = min(loco, key=loco.get)
        result["methods"][name] = {
            "loco_mean": float(np.mean(list(loco.values()))),
            "loco_worst": float(loco[worst]),
            "loco_worst_class": worst,
            "loco_below_0.6": int(sum(v < 0.6 for v in loco.values())),
            "loco": loco,
            "ood_auroc": {k: roc_auc(s_test, s_ood[m]) for k, m in subsets.items()},
            "ood_images": {k: int(m.sum()) for k, m in subsets.items()},
            "ood_flagged": {k: float((s_ood[m] > 1).mean()) for k, m in subsets.items()},
            "test_flagged": float((s_test > 1).mean()),
            "info": nov.info,
        }
    clf = load_model(args.model, threads=args.threads or None)  # read again: the file as it is now
    if clf.trust.novelty is not None:  # the file's own novelty data, as `marsvision calibrate` fitted it
        s_test = clf.trust.novelty(test_t, test_f)
        s_ood = clf.trust.novelty(ood_t, ood_f)
        result["bundled_file"] = {
            "parts": [p.source for p in clf.trust.novelty.parts],
            "test_flagged": float((s_test > 1).mean()),
            "ood_auroc": {k: roc_auc(s_test, s_ood[m]) for k, m in subsets.items()},
            "ood_flagged": {k: float((s_ood[m] > 1).mean()) for k, m in subsets.items()},
            "info": clf.trust.novelty.info,
        }
    if args.before:
        result["cost"] = cost(Path(args.model), args.before, test.paths, args.latency_runs, test_f, test_t)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["when"] = time.strftime("%Y-%m-%d %H:%M")
    write_results("novelty", result, markdown(result))


def markdown(r: dict) -> str:
    m = r["methods"]
    cols = list(m)
    lines = [
        f"Novelty of the bundled int8 file's outputs ({r['model']}), official splits; fitted on train+val, "
        "reported on test. Choices were made on val (experiments/results/novelty_methods.md).",
        "",
        "| measure | target | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
        "| leave-one-class-out AUROC, mean | ≥ 0.85 | " + " | ".join(f"{m[c]['loco_mean']:.3f}" for c in cols) + " |",
        "| … worst class | ≥ 0.60 | "
        + " | ".join(f"{m[c]['loco_worst']:.3f} ({m[c]['loco_worst_class']})" for c in cols)
        + " |",
        "| … classes below 0.60 | 0 | " + " | ".join(str(m[c]["loco_below_0.6"]) for c in cols) + " |",
    ]
    for k in ("all", "real", "hard"):
        n = m[cols[0]]["ood_images"][k]
        lines.append(
            f"| OOD AUROC vs test, {k} ({n} images) | ≥ 0.98 | "
            + " | ".join(f"{m[c]['ood_auroc'][k]:.4f}" for c in cols)
            + " |"
        )
        lines.append(
            f"| OOD flagged unknown, {k} | | " + " | ".join(f"{m[c]['ood_flagged'][k]:.3f}" for c in cols) + " |"
        )
    lines.append("| test flagged unknown | ≤ 0.10 | " + " | ".join(f"{m[c]['test_flagged']:.3f}" for c in cols) + " |")
    if "bundled_file" in r:
        b = r["bundled_file"]
        lines += [
            "",
            f"The file's own novelty data ({' + '.join(b['parts'])}; joint quantile "
            f"{b['info'].get('joint_quantile', 0):.3f}): test flagged {b['test_flagged']:.3f}; "
            f"OOD AUROC all {b['ood_auroc']['all']:.4f}, real {b['ood_auroc']['real']:.4f}, "
            f"hard {b['ood_auroc']['hard']:.4f}; OOD flagged all {b['ood_flagged']['all']:.3f}, "
            f"real {b['ood_flagged']['real']:.3f}, hard {b['ood_flagged']['hard']:.3f}.",
        ]
    forward = m.get(TWO_PART, {}).get("info", {}).get("forward", {})
    if "quantile" in forward:
        lines += [
            "",
            f"{TWO_PART}: the unknown threshold is the {forward['quantile']:.3f} quantile of the train+val images' "
            f"novelty against other campaigns, found by `forward_quantile` on train+val alone: fitted on the "
            f"{forward['fitted']} images before sol {forward['cut_sol']:.0f}, it flags {forward['target']:.0%} of the "
            f"{forward['scored']} after it. Test was not used to set it.",
        ]
    if "cost" in r:
        c = r["cost"]
        b, s = c["before"], c["this file"]
        lines += [
            "",
            f"Cost, both files in this run (before: the bundled file at {c['before_revision']}):",
            "",
            "| file | size | batch-1 p50 / p90 ms, 1 thread | of which calibration + novelty (CPU ms) "
            "| predict img/s, 2 threads | test flagged by predict |",
            "|---|---|---|---|---|---|",
        ]
        for name, x in ((f"before ({c['before_revision']})", b), ("this file", s)):
            lines.append(
                f"| {name} | {x['bytes'] / 1e6:.2f} MB ({x['mib']:.2f} MiB) | {x['latency_p50_ms']:.2f} / "
                f"{x['latency_p90_ms']:.2f} | {x['trust_cpu_ms_per_image']:.3f} | "
                f"{x['predict_img_per_s_2_threads']:.0f} | {x['flagged_unknown']:.3f} |"
            )
        lines += [
            "",
            f"Targets: ≤ 8 MB, p50 ≤ 6 ms, throughput within 15 % of before "
            f"({s['predict_img_per_s_2_threads'] / b['predict_img_per_s_2_threads'] - 1:+.1%}). "
            f"predict's labels on test identical to before: {'yes' if c['test_labels_identical'] else 'NO'}; "
            f"confidences: largest difference {c['test_confidence_max_abs_diff']:.2g}.",
        ]
    lines += ["", "Leave-one-class-out AUROC per class (test images of the class vs the other test images):", ""]
    lines.append("| class | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for name in m[cols[0]]["loco"]:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]['loco'][name]:.3f}" for c in cols) + " |")
    command = "python benchmarks/novelty.py --data ../shared/data/msl-images"
    lines += ["", f"`{command}`: {r['seconds']:.0f} s, {r['when']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
