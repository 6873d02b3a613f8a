"""Trust benchmark: calibrated confidence, selective labels, the unknown-image flag, and what they cost.

    python benchmarks/trust.py --data ../shared/data/msl-images

Two models, both the bundled recipe (frozen multi-level Lite0 features of the bundled int8 file, a
class-balanced logistic regression at C = 1), each calibrated by ``marsvision.head.trust`` on the images
it was fitted on, never on the images it is scored on:

- the **train-only twin** (fitted and calibrated on train; val and test held out): the split on which
  every trust choice was made (val);
- the **bundled int8 file** as shipped (fitted and calibrated on train+val; test held out): the report.

For each held-out split: accuracy, ECE (15 bins) before and after calibration, mean confidence, coverage
and accuracy of the labels given at confidence ≥ 0.5 / 0.8 / 0.9 / 0.95 and not flagged unknown,
the share flagged unknown; novelty AUROC against the out-of-distribution set (benchmarks/ood/, 90
images whose provenance is in its provenance.csv) and the share of it flagged, per group. Then the
runtime cost, side by side in one run: file sizes, batch-1 latency on one thread (p50/p90/p99 of
``Classifier.outputs`` + calibration + novelty, i.e. all a prediction computes) and `marsvision predict`
throughput on the test split with 1 and 2 threads, for the file before this work (git revision
``--before``, a logits graph without trust data) and the shipped file.

Writes ``benchmarks/results/trust.json``, ``trust.md`` and ``trust_reliability.png``.
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
from pathlib import Path

import numpy as np
from common import OOD, REPO, RESULTS, auroc, write_results
from inference import latency  # (the edge benchmark's batch-1 worker)

from marsvision.data.msl import MSLDataset, sol_of
from marsvision.head.fit import fit_head, fold_head
from marsvision.head.trust import fit_trust
from marsvision.inference.predict import load_model
from marsvision.inference.trust import Head, Trust, softmax
from marsvision.metrics import calibration_bins, expected_calibration_error, selective_accuracy
from marsvision.model_file import bundled_model_path

THRESHOLDS = (0.5, 0.8, 0.9, 0.95)


def embed(clf, paths) -> dict:
    preds = list(clf.predict_iter(paths, batch_size=16))
    bad = [p for p in preds if not p.ok]
    if bad:
        sys.exit(f"{bad[0].source}: {bad[0].error}")
    return {"features": np.stack([p.features for p in preds]), "texture": np.stack([p.texture for p in preds])}


def split_scores(head: Head, trust: Trust, emb: dict, y: np.ndarray) -> dict:
    logits = head(emb["features"])
    raw = softmax(logits)
    probs, novelty = trust.apply(logits, emb["texture"], emb["features"])
    correct = probs.argmax(1) == y
    unknown = novelty > 1
    return {
        "n": int(len(y)),
        "accuracy": float(correct.mean()),
        "ece_before": expected_calibration_error(raw, y),
        "ece_after": expected_calibration_error(probs, y),
        "mean_confidence_before": float(raw.max(1).mean()),
        "mean_confidence_after": float(probs.max(1).mean()),
        "flagged_unknown": float(unknown.mean()),
        "selective": selective_accuracy(probs.max(1), correct, ~unknown, THRESHOLDS),
        "selective_ignoring_unknown": selective_accuracy(probs.max(1), correct, None, THRESHOLDS),
        "bins_before": calibration_bins(raw, y),
        "bins_after": calibration_bins(probs, y),
        "_novelty": novelty,
    }


def ood_scores(trust: Trust, id_novelty: np.ndarray, emb: dict, groups: np.ndarray, generated: np.ndarray) -> dict:
    """Novelty AUROC against the in-distribution images, for the whole set and apart for its real images
    (46 of the 90 are generated: flat fields, noise, patterns, charts), and the share flagged."""
    nov = trust.novelty(emb["texture"], emb["features"])
    return {
        "n": int(len(nov)),
        "n_generated": int(generated.sum()),
        "auroc_vs_in_distribution": auroc(id_novelty, nov),
        "auroc_real_only": auroc(id_novelty, nov[~generated]),
        "auroc_generated_only": auroc(id_novelty, nov[generated]),
        "flagged_real_only": float((nov[~generated] > 1).mean()),
        "flagged": float((nov > 1).mean()),
        "flagged_by_group": {g: float((nov[groups == g] > 1).mean()) for g in sorted(set(groups))},
        "missed": sorted(str(f) for f, v in zip(emb["files"], nov, strict=True) if v <= 1),
    }


def best_temperature(logits: np.ndarray, y: np.ndarray, novelty: np.ndarray) -> dict:
    """A diagnostic, never a choice: the single temperature that minimises test ECE, chosen on test itself,
    i.e. the floor of what any temperature scaling can reach on this split."""
    rows = []
    for t in np.round(np.arange(0.8, 2.51, 0.05), 2):
        p = softmax(logits / t)
        sel = selective_accuracy(p.max(1), p.argmax(1) == y, novelty <= 1, (0.9,))[0]
        rows.append(
            {
                "temperature": float(t),
                "ece": expected_calibration_error(p, y),
                "coverage_0.9": sel["coverage"],
                "accuracy_0.9": sel["accuracy"],
            }
        )
    return min(rows, key=lambda r: r["ece"])


def runtime(before: Path, after: Path, test_paths: list[Path], runs: int) -> dict:
    """Sizes, batch-1 latency (1 thread) and `marsvision predict` throughput, both files in one run."""
    out = {}
    sample = test_paths[:: max(1, len(test_paths) // 200)][:200]
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "files.txt"
        listing.write_text("\n".join(map(str, test_paths)))
        for name, path in (("before", before), ("after", after)):
            row = {
                "file_mb": round(path.stat().st_size / 2**20, 3),
                "latency_batch1_1thread": latency(path, runs, sample),
            }
            for threads in (1, 2):
                best = None
                for _ in range(2):
                    t0 = time.perf_counter()
                    subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "marsvision.cli",
                            "predict",
                            *map(str, test_paths),
                            "--model",
                            str(path),
                            "--threads",
                            str(threads),
                            "--output",
                            str(Path(tmp) / "p.csv"),
                        ],
                        check=True,
                        capture_output=True,
                        cwd=REPO,
                        env={**os.environ, "PYTHONPATH": str(REPO)},
                    )
                    seconds = time.perf_counter() - t0
                    best = seconds if best is None else min(best, seconds)
                row[f"img_s_{threads}thr"] = round(len(test_paths) / best, 1)
            out[name] = row
            print(name, row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="")
    ap.add_argument("--model", default=str(bundled_model_path()), help="the shipped model file (format /2, with trust)")
    ap.add_argument("--before", default="fcef950", help="git revision whose bundled int8 file is the 'before' row")
    ap.add_argument("--latency-runs", type=int, default=1000)
    ap.add_argument(
        "--keep-runtime",
        action="store_true",
        help="do not time again: keep the runtime rows (and their date) of the last results/trust.json",
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    ds = MSLDataset(args.data or None)
    clf = load_model(args.model)
    names = clf.class_names
    labels, paths = {}, {}
    for s in ("train", "val", "test"):
        sp = ds.split(s)
        keep = [i for i, c in enumerate(sp.labels) if ds.class_names[int(c)] in names]
        paths[s] = [sp.paths[i] for i in keep]
        labels[s] = np.array([names.index(ds.class_names[int(sp.labels[i])]) for i in keep])
        print(f"{s}: {len(keep)} of {len(sp)} images of the model's classes", flush=True)
    emb = {s: embed(clf, paths[s]) for s in ("train", "val", "test")}
    with open(OOD / "provenance.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    prov = {r["file"]: r["group"] for r in rows}
    made = {r["file"]: r["source"].startswith("generated") for r in rows}  # by benchmarks/ood_set.py
    ood_files = sorted(prov)
    emb["ood"] = {**embed(clf, [OOD / "images" / f for f in ood_files]), "files": ood_files}
    groups = np.array([prov[f] for f in ood_files])
    generated = np.array([made[f] for f in ood_files])

    # The train-only twin: head and trust fitted on train alone; val and test held out.
    t0 = time.perf_counter()
    sols_train = np.array([sol_of(p) for p in paths["train"]])
    w, b = fold_head(fit_head(emb["train"]["features"], labels["train"], 1.0), len(names))
    twin_trust = fit_trust(
        emb["train"]["features"], emb["train"]["texture"], labels["train"], sols_train, len(names), 1.0
    )
    twin_seconds = time.perf_counter() - t0
    twin = {
        "fitted_on": "train",
        "trust_fit_seconds": round(twin_seconds, 1),
        "calibration": {k: v for k, v in twin_trust.calibration.to_dict().items()},
        "novelty_threshold": twin_trust.novelty.threshold,
    }
    for s in ("val", "test"):
        twin[s] = split_scores(Head(w, b), twin_trust, emb[s], labels[s])
    twin["ood"] = ood_scores(twin_trust, twin["val"]["_novelty"], emb["ood"], groups, generated)
    ood_novelty = twin_trust.novelty(emb["ood"]["texture"], emb["ood"]["features"])
    twin["ood"]["auroc_vs_test"] = auroc(twin["test"]["_novelty"], ood_novelty)

    bundled = {
        "fitted_on": clf.trust.calibration.info.get("fitted_on_splits"),
        "calibration": clf.trust.calibration.to_dict(),
        "novelty_info": clf.trust.novelty.info,
        "test": split_scores(clf.head, clf.trust, emb["test"], labels["test"]),
    }
    bundled["ood"] = ood_scores(clf.trust, bundled["test"]["_novelty"], emb["ood"], groups, generated)
    bundled["diagnostic_best_temperature_on_test"] = best_temperature(
        clf.head(emb["test"]["features"]), labels["test"], bundled["test"]["_novelty"]
    )

    if args.keep_runtime:  # timings need an idle machine; the quality figures do not
        previous = json.loads((RESULTS / "trust.json").read_text())
        cost = {**previous["runtime"], "measured": previous["runtime"].get("measured", previous["meta"]["date"])}
        # a size is not a timing: measured now, so a refit file (novelty references added) shows its own
        size = round(Path(args.model).stat().st_size / 2**20, 3)
        if size != cost["after"]["file_mb"]:
            cost["after"] = {**cost["after"], "file_mb": size}
            cost["note"] = "sizes measured now; the timings are of the file as it was then"
    else:
        cost = timed(args)
    for m in (twin["val"], twin["test"], bundled["test"]):
        m.pop("_novelty")
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "model": args.model,
            "before": args.before,
            "seconds": round(time.perf_counter() - t_start, 1),
        },
        "train_only_twin": twin,
        "bundled": bundled,
        "runtime": cost,
    }
    write_reliability(bundled["test"], RESULTS / "trust_reliability.png")
    write_results("trust", result, markdown(result))


def timed(args) -> dict:
    """The runtime rows: the file before trust (git revision ``--before``) against the shipped one."""
    test_paths = MSLDataset(args.data or None).split("test").paths
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before.int8.onnx"
        before.write_bytes(
            subprocess.run(
                ["git", "show", f"{args.before}:marsvision/assets/marsvision-lite0.int8.onnx"],
                capture_output=True,
                check=True,
                cwd=REPO,
            ).stdout
        )
        return {
            **runtime(before, Path(args.model), test_paths, args.latency_runs),
            "measured": time.strftime("%Y-%m-%d"),
        }


def write_reliability(scores: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from marsvision.atomic import atomic_save

    fig = Figure(figsize=(9, 4.2))
    for i, (key, title) in enumerate((("bins_before", "softmax (before)"), ("bins_after", "calibrated (after)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        bins = [r for r in scores[key] if r["n"]]
        ax.bar(
            [(r["lo"] + r["hi"]) / 2 for r in bins],
            [r["accuracy"] for r in bins],
            width=1 / 15 * 0.9,
            color="#4c72b0",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="0.5", label="perfect calibration")
        ax.plot(
            [r["confidence"] for r in bins],
            [r["accuracy"] for r in bins],
            "o",
            color="#dd8452",
            ms=3,
            label="mean confidence",
        )
        ece = scores["ece_before" if i == 0 else "ece_after"]
        ax.set_title(f"test, {title}: ECE {ece:.3f}")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    atomic_save(lambda tmp: fig.savefig(tmp, dpi=110, format="png"), path)


def markdown(r: dict) -> str:
    twin, bundled, cost = r["train_only_twin"], r["bundled"], r["runtime"]

    def row(label: str, s: dict) -> str:
        sel = {x["threshold"]: x for x in s["selective"]}
        cells = " | ".join(f"{sel[t]['coverage']:.3f} / {sel[t]['accuracy']:.3f}" for t in THRESHOLDS)
        return (
            f"| {label} | {s['n']} | {s['accuracy']:.3f} | {s['ece_before']:.4f} → {s['ece_after']:.4f} | "
            f"{s['mean_confidence_before']:.3f} → {s['mean_confidence_after']:.3f} | "
            f"{s['flagged_unknown']:.3f} | {cells} |"
        )

    t, o = bundled["test"], bundled["ood"]
    sel9 = next(x for x in t["selective"] if x["threshold"] == 0.9)
    lat_a = cost["after"]["latency_batch1_1thread"]
    targets = [
        ("test ECE (15 bins) ≤ 0.03", f"{t['ece_after']:.4f}", t["ece_after"] <= 0.03),
        ("confidence ≥ 0.9 and not unknown: accuracy ≥ 0.97", f"{sel9['accuracy']:.3f}", sel9["accuracy"] >= 0.97),
        ("… covering ≥ 70 % of test", f"{sel9['coverage']:.3f}", sel9["coverage"] >= 0.70),
        ("≤ 10 % of test flagged unknown", f"{t['flagged_unknown']:.3f}", t["flagged_unknown"] <= 0.10),
        (
            "AUROC test vs out-of-distribution ≥ 0.98",
            f"{o['auroc_vs_in_distribution']:.4f}",
            o["auroc_vs_in_distribution"] >= 0.98,
        ),
        (
            "… on its real images only (not generated)",
            f"{o['auroc_real_only']:.4f}",
            o["auroc_real_only"] >= 0.98,
        ),
        ("≥ 95 % of the out-of-distribution set flagged", f"{o['flagged']:.3f}", o["flagged"] >= 0.95),
        # issue 22 raised the bound from 5 to 8 MB for the novelty's features references
        ("bundled file ≤ 8 MB", f"{cost['after']['file_mb']:.2f} MiB", cost["after"]["file_mb"] * 2**20 <= 8e6),
        ("batch-1 p50 ≤ 3.5 ms, one thread", f"{lat_a['p50_ms']:.2f} ms", lat_a["p50_ms"] <= 3.5),
        (
            "throughput within 10 % of before (2 threads)",
            f"{cost['after']['img_s_2thr']:.0f} vs {cost['before']['img_s_2thr']:.0f} img/s",
            cost["after"]["img_s_2thr"] >= 0.9 * cost["before"]["img_s_2thr"],
        ),
    ]
    lines = [
        "Targets (bundled int8 file, official test split, calibration and threshold fitted without test):",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {'yes' if c else '**no**'} |" for a, b, c in targets]
    lines += [
        "",
        "Accuracy, calibration, flagged share and selective labels (coverage / accuracy of the labels given "
        "at confidence ≥ t and not flagged unknown):",
        "",
        "| model, split | images | accuracy | ECE before → after | mean confidence | flagged unknown | "
        + " | ".join(f"t = {x}" for x in THRESHOLDS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(THRESHOLDS),
        row("train-only twin, val (where choices were made)", twin["val"]),
        row("train-only twin, test", twin["test"]),
        row("**bundled (train+val), test**", bundled["test"]),
        "",
        "Out-of-distribution set (90 images, benchmarks/ood/): novelty AUROC against the held-out split and share "
        "flagged unknown:",
        "",
        f"| model | AUROC, all | AUROC, the {o['n'] - o['n_generated']} real images only | flagged | "
        + " | ".join(sorted(o["flagged_by_group"]))
        + " |",
        "|---|---|---|---|" + "---|" * len(o["flagged_by_group"]),
    ]
    for label, ood, auc in (
        ("train-only twin (vs val)", twin["ood"], twin["ood"]["auroc_vs_in_distribution"]),
        ("bundled (vs test)", o, o["auroc_vs_in_distribution"]),
    ):
        lines.append(
            f"| {label} | {auc:.4f} | {ood['auroc_real_only']:.4f} | {ood['flagged']:.3f} | "
            + " | ".join(f"{v:.2f}" for _, v in sorted(ood["flagged_by_group"].items()))
            + " |"
        )
    best = bundled["diagnostic_best_temperature_on_test"]
    lines += [
        "",
        f"Not flagged by the bundled model: {', '.join(o['missed']) or 'none'}.",
        "",
        f"Diagnostic, chosen on test and never used: the best single temperature for test (T = "
        f"{best['temperature']:.2f}) reaches ECE {best['ece']:.4f}, and at confidence ≥ 0.9 covers "
        f"{best['coverage_0.9']:.3f} at accuracy {best['accuracy_0.9']:.3f}: no temperature scaling meets the "
        f"ECE and selective targets on this split.",
        "",
        f"Runtime, both files in one run (measured {cost.get('measured', r['meta']['date'])}"
        + (f"; {cost['note']}" if "note" in cost else "")
        + "):",
        "",
        "| file | MiB | p50 / p90 / p99 ms (batch 1, 1 thread) | img/s, 1 thread | img/s, 2 threads |",
        "|---|---|---|---|---|",
    ]
    for name, label in (
        ("before", f"before ({r['meta']['before']}: logits graph, no trust)"),
        ("after", "shipped (features graph, calibration, novelty)"),
    ):
        c, lat = cost[name], cost[name]["latency_batch1_1thread"]
        lines.append(
            f"| {label} | {c['file_mb']:.2f} | {lat['p50_ms']:.2f} / {lat['p90_ms']:.2f} / {lat['p99_ms']:.2f} | "
            f"{c['img_s_1thr']:.0f} | {c['img_s_2thr']:.0f} |"
        )
    cal = bundled["calibration"]
    lines += [
        "",
        f"Bundled calibration: T = exp({cal['log_t']:.3f} + {cal['slope']:.3f} · log "
        f"{'texture novelty' if cal.get('reads') == 'texture' else 'novelty'}); "
        f"{cal['info'].get('fitted_on', '')}. Reliability diagram: trust_reliability.png.",
        f"Measured in {r['meta']['seconds']:.0f} s on {r['meta']['cpus']} CPUs ({r['meta']['date']}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
