"""Learning from curators: which images a curator should label, how many per refit, and how much a label
weighs (``marsvision.curate.strategies``), chosen on val, then reported on test.

    python benchmarks/active_learning.py --data ../shared/data/msl-images

Features: the bundled int8 model's (or ``--model``'s) pooled features (``Prediction.features``),
computed once and cached in ``runs/cache/`` under the model file's SHA-256 (``--features NPZ`` reads
train_x/val_x/test_x from another file instead; its *_path must match the splits' order).

Protocol. A simulated curator reveals the true label of exactly the pool images a strategy asks for, in
rounds: ask ``r`` images (``choose``, excluding the images already asked), refit the head on the training
images + all labels so far (``fit_head``, C = 1, weights from ``review.sample_weights``), ask the next
``r``, ... A round never crosses a reporting budget (0 / 10 / 25 / 50 / 100 / 200 labels); round size
"all" asks each budget at once from the unrefitted head (the outside reference's setting). After each
budget, accuracy and macro-F1 (``classification_metrics``, the model's 24 class indices) are scored on
the pool images not yet labelled. Score of a run = mean over budgets 10..200 of (accuracy + macro-F1) / 2.

Choice, on val only (head fitted on train, pool = val):
1. strategy × weight at round size 25: every strategy of ``review.STRATEGIES`` but random; weights
   w ∈ {1, 3, 10, 30} × the class-balanced weight of the label's class among the training images, and
   "union" (class-balanced over training images and labels together);
2. round size ∈ {10, 50, all} for the three best (strategy, weight) pairs of step 1;
3. the best score of steps 1-2 fixes strategy, round size and weight. Random (5 seeds) at that weight.
Test (head fitted on train+val, pool = test), the choices fixed: the chosen strategy (5 seeds: mean and
min-max; beside it the shipped model on the same unlabelled images, and accuracy by distance in sols
from each image to its nearest label), the margin
reference (same round size and weight, and all at once), random (5 seeds: mean and min-max). Test labels
only enter through the curator and the final scores. Writes results/active_learning.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, write_results

from marsvision.atomic import atomic_save, atomic_write
from marsvision.curate import strategies as review
from marsvision.data.msl import MSLDataset, sol_of
from marsvision.files import sha256_file
from marsvision.head.fit import fit_head, fold_head
from marsvision.metrics import classification_metrics

BUDGETS = (0, 10, 25, 50, 100, 200)
WEIGHTS = (1.0, 3.0, 10.0, 30.0, "union")
STEP1_ROUND, STEP2_ROUNDS, STEP2_TOP = 25, (10, 50, "all"), 3
SEEDS = (0, 1, 2, 3, 4)  # random and, on test, the chosen strategy (its k-means++ draws use the seed)
C = 1.0
TARGETS = {25: (0.94, 0.86), 50: (0.97, 0.90)}  # test: accuracy, macro-F1 on the rest
CACHE = REPO / "runs" / "cache"
FITS = {"n": 0, "s": 0.0}


def load_data(data: str, features: str | None, model_path: str | None = None) -> tuple[dict, list[str], dict, dict]:
    """{split: (x (N, F) float32, y (N,) model class index)}, the model's class names, provenance, and
    {split: (sols, the model's own predicted class)} (the model's head on the features: its labels)."""
    import marsvision

    ds = MSLDataset(data)
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    model = marsvision.load_model(model_path)
    names = list(model.class_names)
    index = {n: i for i, n in enumerate(names)}
    labels = {s: np.array([index[ds.class_names[int(c)]] for c in sp.labels]) for s, sp in splits.items()}
    digest = sha256_file(Path(model.path))[0]
    if features:
        src = Path(features)
        info = {
            "features": str(src),
            "model": str(model.path),
            "model_sha256": digest,
            "note": "features read from --features",
        }
    else:
        src = CACHE / f"active_learning-features-{digest[:16]}.npz"
        info = {
            "features": str(src.relative_to(REPO)),
            "model": str(model.path),
            "model_sha256": digest,
            "note": "the model's Prediction.features, cached by the model file's SHA-256",
        }
    if not src.is_file():
        if features:
            raise SystemExit(f"--features {src}: no such file")
        t0, out = time.perf_counter(), {}
        for s, sp in splits.items():
            preds = model.predict(sp.paths, batch_size=16)
            bad = [p for p in preds if p.error or p.features is None]
            if bad:
                why = bad[0].error or "the model file does not expose them (format /1?)"
                raise SystemExit(
                    f"{bad[0].source}: no features ({why}); rebuild the bundled model or pass --features NPZ"
                )
            out[f"{s}_x"] = np.stack([p.features for p in preds]).astype(np.float32)
            out[f"{s}_path"] = np.array([str(p) for p in sp.paths])
        CACHE.mkdir(parents=True, exist_ok=True)
        atomic_save(lambda tmp: np.savez(tmp, **out), src)
        info["extract_s"] = round(time.perf_counter() - t0, 1)
    z = np.load(src)
    out = {}
    for s, sp in splits.items():
        if [Path(str(p)).name for p in z[f"{s}_path"]] != [p.name for p in sp.paths]:
            raise SystemExit(f"{src}: {s} paths differ from the split file's order")
        if "class_names" in z and list(map(str, z["class_names"])) != names:
            raise SystemExit(f"{src}: class names differ from the bundled model's")
        out[s] = (z[f"{s}_x"].astype(np.float32), labels[s])
    own = {s: (np.array([sol_of(p) for p in sp.paths]), model.head(out[s][0]).argmax(1)) for s, sp in splits.items()}
    return out, names, info, own


def head_probs(x_fit, y_fit, weights, x_pool, k):
    """Fit the head (weights None = class-balanced), return its probabilities on the pool."""
    t0 = time.perf_counter()
    w, b = fold_head(fit_head(x_fit, y_fit, C, sample_weight=weights), k)
    FITS["n"] += 1
    FITS["s"] += time.perf_counter() - t0
    z = x_pool.astype(np.float64) @ w.T.astype(np.float64) + b
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


SOL_GROUPS = ("same sol", "1-10 sols", "> 10 sols")


def sol_groups(sols: np.ndarray, asked: np.ndarray) -> dict[str, np.ndarray]:
    """Masks over the pool: images whose sol is that of a label, 1-10 sols from the nearest label, farther."""
    gap = np.abs(sols[:, None] - np.unique(sols[asked])[None, :]).min(1)
    return dict(zip(SOL_GROUPS, (gap == 0, (gap > 0) & (gap <= 10), gap > 10), strict=True))


def score(probs, y, asked, names, context=None) -> dict:
    """Scores on the rest; with ``context`` (sols, the shipped model's and the unrefitted head's predictions
    on the pool) also the shipped model on the same rest and the accuracy by sol distance to the labels."""
    rest = np.ones(len(y), bool)
    rest[asked] = False
    m = classification_metrics(y[rest], probs[rest].argmax(1), names)
    wrong = int((probs[asked].argmax(1) != y[asked]).sum()) if len(asked) else 0
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n_rest": int(rest.sum()), "asked_wrong": wrong}
    if context is not None:
        sols, shipped, start = context
        ms = classification_metrics(y[rest], shipped[rest], names)
        out["shipped"] = {"accuracy": ms["accuracy"], "macro_f1": ms["macro_f1"]}
        if len(asked):
            pred = probs.argmax(1)
            out["by_sol"] = {
                g: {
                    "n": int((mask & rest).sum()),
                    "accuracy": float((pred == y)[mask & rest].mean()),
                    "shipped_accuracy": float((shipped == y)[mask & rest].mean()),
                    "unrefitted_accuracy": float((start == y)[mask & rest].mean()),
                }
                for g, mask in sol_groups(sols, asked).items()
                if (mask & rest).any()
            }
    return out


def curate(strategy, round_size, weight, fit, pool, p0, names, seed=0, context=None) -> dict:
    """One simulated curator run; {budget: scores} plus the asking order (``context``: see ``score``)."""
    (xt, yt), (xp, yp) = fit, pool
    k, rng = len(names), np.random.default_rng(seed)

    def refit(asked):
        sw = review.sample_weights(yt, yp[asked], weight)
        return head_probs(np.concatenate([xt, xp[asked]]), np.concatenate([yt, yp[asked]]), sw, xp, k)

    curve, asked, probs = {0: score(p0, yp, np.zeros(0, np.int64), names, context)}, np.zeros(0, np.int64), p0
    for budget in BUDGETS[1:]:
        if round_size == "all":
            asked = review.choose(strategy, p0, xp, budget, rng)
            probs = refit(asked)
        else:
            while len(asked) < budget:
                new = review.choose(strategy, probs, xp, min(round_size, budget - len(asked)), rng, asked)
                asked = np.concatenate([asked, new])
                probs = refit(asked)
        curve[budget] = score(probs, yp, asked, names, context)
    return {
        "strategy": strategy,
        "round": round_size,
        "weight": weight,
        "seed": seed,
        "objective": float(np.mean([(c["accuracy"] + c["macro_f1"]) / 2 for b, c in curve.items() if b])),
        "curve": curve,
        "asked": asked.tolist(),
    }


def random_runs(weight, fit, pool, p0, names, context=None) -> dict:
    # one round per budget (random does not look at the head): nested draws, 5 refits per seed
    runs = [curate("random", max(BUDGETS), weight, fit, pool, p0, names, seed, context) for seed in SEEDS]
    return {"weight": weight, **spread(runs)}


def spread(runs: list[dict]) -> dict:
    """Runs of several seeds → their per-budget mean, min, max and standard deviation."""
    out = {"seeds": [r["seed"] for r in runs], "runs": runs, "curve": {}}
    for b in BUDGETS:
        for m in ("accuracy", "macro_f1"):
            v = [r["curve"][b][m] for r in runs]
            out["curve"].setdefault(b, {})[m] = {
                "mean": float(np.mean(v)),
                "min": float(min(v)),
                "max": float(max(v)),
                "std": float(np.std(v)),
            }
    return out


def time_choose() -> dict:
    """Seconds per ``choose`` call at N = 100 000, F = 1792, K = 24 (median of 3), 5 000 excluded."""
    rng = np.random.default_rng(0)
    n, f, k = 100_000, 1792, 24
    logits = rng.normal(size=(n, k)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    feats, exclude = rng.normal(size=(n, f)).astype(np.float32), rng.choice(n, 5000, replace=False)
    out = {}
    for s in review.STRATEGIES:
        for kk in (10, 25, 200):
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                review.choose(s, probs, feats, kk, np.random.default_rng(0), exclude)
                ts.append(time.perf_counter() - t0)
            out[f"{s} k={kk}"] = round(float(np.median(ts)), 4)
    return out


def new_class_check(train, val, names) -> dict:
    """A class with labels only from the curator (none in training): drop a class from train, add 5
    of its val images as labels, refit; its recall on the other val images of that class."""
    (xt, yt), (xv, yv) = train, val
    enough = [i for i in range(len(names)) if np.sum(yv == i) >= 20]
    c = min(enough, key=lambda i: np.sum(yt == i))  # the rarest in train among classes with 20+ val images
    keep, idx = yt != c, np.flatnonzero(yv == c)
    lab, rest = idx[:5], idx[5:]
    sw = review.sample_weights(yt[keep], yv[lab], review.DEFAULT_WEIGHT)
    p = head_probs(np.concatenate([xt[keep], xv[lab]]), np.concatenate([yt[keep], yv[lab]]), sw, xv[rest], len(names))
    return {
        "class": names[c],
        "train_images_dropped": int((~keep).sum()),
        "labels": 5,
        "rest": int(len(rest)),
        "recall_rest": float((p.argmax(1) == c).mean()),
    }


def f3(x) -> str:
    return f"{x:.3f}"


def wname(w) -> str:
    return "union" if w == "union" else f"{w:g}×"


def markdown(res) -> str:
    ch, val, test = res["choice"], res["val"], res["test"]
    lines = [
        "# Learning from curators: review queue benchmark",
        "",
        f"Protocol: `benchmarks/active_learning.py` docstring. Features: {res['data']['note']} "
        f'(`{res["data"]["features"]}`). Scores on the pool images not yet labelled ("the rest"). '
        f"Objective = mean over budgets 10..200 of (accuracy + macro-F1) / 2. Wall time "
        f"{res['wall_s']:.0f} s ({res['fits']['n']} head fits, {res['fits']['mean_s']:.2f} s each, "
        f"{res['threads']} BLAS thread).",
        "",
        f"**Chosen on val: strategy `{ch['strategy']}`, round size {ch['round']}, weight {wname(ch['weight'])}** "
        f"(module defaults agree: {res['module_defaults_agree']}). Val objective {f3(ch['val_objective'])}; runner-up "
        f"{ch['runner_up']['strategy']} r = {ch['runner_up']['round']} w = {wname(ch['runner_up']['weight'])}: "
        f"{f3(ch['runner_up']['objective'])}. Val is nearly saturated ("
        f"{f3(val['step1'][0]['curve'][0]['accuracy'])} accuracy before any label), so gaps of a few thousandths "
        "are one or two images.",
        "",
        "## Val step 1: strategy × weight (round size 25), objective",
        "",
        "| strategy | " + " | ".join(wname(w) for w in WEIGHTS) + " |",
        "|---|" + "---:|" * len(WEIGHTS),
    ]
    grid = {(r["strategy"], str(r["weight"])): r["objective"] for r in val["step1"]}
    for s in [s for s in review.STRATEGIES if s != "random"]:
        lines.append(f"| {s} | " + " | ".join(f3(grid[(s, str(w))]) for w in WEIGHTS) + " |")
    rnd = val["random"]
    lines += [
        "",
        f"Random at the chosen weight ({len(SEEDS)} seeds), objective {f3(rnd['objective_mean'])}.",
        "",
        "## Val step 2: round sizes for the best three pairs, and the curves",
        "",
        "| strategy | weight | round | objective | " + " | ".join(f"{b}: acc / F1" for b in BUDGETS) + " |",
        "|---|---|---|---:|" + "---|" * len(BUDGETS),
    ]
    top = sorted(val["step1"] + val["step2"], key=lambda r: -r["objective"])
    shown = [r for r in top if (r["strategy"], str(r["weight"])) in {(p[0], str(p[1])) for p in val["top_pairs"]}]
    shown += [r for r in val["step1"] if r["strategy"] == "margin" and r["weight"] == ch["weight"]]
    for r in shown:
        lines.append(
            f"| {r['strategy']} | {wname(r['weight'])} | {r['round']} | {f3(r['objective'])} | "
            + " | ".join(f"{f3(r['curve'][b]['accuracy'])} / {f3(r['curve'][b]['macro_f1'])}" for b in BUDGETS)
            + " |"
        )
    lines.append(
        f"| random (mean of {len(SEEDS)}) | {wname(rnd['weight'])} | – | {f3(rnd['objective_mean'])} | "
        + " | ".join(
            f"{f3(rnd['curve'][b]['accuracy']['mean'])} / {f3(rnd['curve'][b]['macro_f1']['mean'])}" for b in BUDGETS
        )
        + " |"
    )
    lines += [
        "",
        "## Test (head on train+val, pool = test), choices fixed from val",
        "",
        f"Accuracy / macro-F1 on the rest (the test images not yet labelled). The chosen strategy and random: "
        f"mean of {len(SEEDS)} seeds [min – max] (the strategy's k-means++ draws depend on the seed); margin: one "
        "run (deterministic). Shipped: the bundled model itself (its own head, no label used) on the same rest "
        f"images (seed {SEEDS[0]}'s rest; it differs by at most 0.001 between seeds): the baseline a curator starts "
        "from. The refitted heads start from a head fitted on train+val from the cached features (the 0 row).",
        "",
        f"| labels | n rest | shipped model | chosen: {ch['strategy']} (r = {ch['round']}) | "
        f"margin (r = {ch['round']}) | margin, all at once | random | target (on the mean) |",
        "|---:|---:|---|---|---|---|---|---|",
    ]

    def spread_cell(c) -> str:
        return (
            f"{f3(c['accuracy']['mean'])} [{f3(c['accuracy']['min'])}–{f3(c['accuracy']['max'])}] / "
            f"{f3(c['macro_f1']['mean'])} [{f3(c['macro_f1']['min'])}–{f3(c['macro_f1']['max'])}]"
        )

    for b in BUDGETS:
        one = test["chosen"]["curve"][b]
        cells = [
            f"{f3(one['shipped']['accuracy'])} / {f3(one['shipped']['macro_f1'])}",
            spread_cell(test["chosen_seeds"]["curve"][b]),
            *(
                f"{f3(test[n]['curve'][b]['accuracy'])} / {f3(test[n]['curve'][b]['macro_f1'])}"
                for n in ("margin", "margin_all")
            ),
            spread_cell(test["random"]["curve"][b]),
        ]
        tgt = ""
        if b in TARGETS:
            ok = test["targets"].get(b) or test["targets"][str(b)]
            tgt = f"≥ {TARGETS[b][0]} / ≥ {TARGETS[b][1]}: {'met' if ok['met'] else 'NOT met'}"
        lines.append(f"| {b} | {one['n_rest']} | " + " | ".join(cells) + f" | {tgt} |")
    lines += [
        "",
        "### Where the gain lands: accuracy by distance in sols to the nearest label",
        "",
        "The chosen strategy at 25 and 50 labels, per seed: images of the rest on the same sol as a label, 1–10 "
        "sols from the nearest label, more than 10 sols away (another campaign): n images, accuracy of the "
        "shipped model → of the refitted head (JSON: also the unrefitted train+val head, `unrefitted_accuracy`).",
        "",
        "| labels | seed | same sol: n, shipped → refit | 1–10 sols: n, shipped → refit "
        "| > 10 sols: n, shipped → refit |",
        "|---:|---:|---|---|---|",
    ]
    for b in (25, 50):
        groups = {g: [] for g in SOL_GROUPS}
        for run in test["chosen_seeds"]["runs"]:
            by = run["curve"][b]["by_sol"]
            row = []
            for g in SOL_GROUPS:
                if g in by:
                    groups[g].append(by[g])
                    row.append(f"{by[g]['n']}, {f3(by[g]['shipped_accuracy'])} → {f3(by[g]['accuracy'])}")
                else:
                    row.append("–")
            lines.append(f"| {b} | {run['seed']} | " + " | ".join(row) + " |")
        mean = [
            f"{np.mean([x['n'] for x in v]):.0f}, {f3(np.mean([x['shipped_accuracy'] for x in v]))} → "
            f"{f3(np.mean([x['accuracy'] for x in v]))}"
            if v
            else "–"
            for v in groups.values()
        ]
        lines.append(f"| {b} | mean | " + " | ".join(mean) + " |")
    nc = res["new_class_check"]
    lines += [
        "",
        f"A class with curator labels only: `{nc['class']}` dropped from train ({nc['train_images_dropped']} "
        f"images), 5 val labels added at the default weight: recall {f3(nc['recall_rest'])} on its other "
        f"{nc['rest']} val images.",
        "",
        "`choose` at N = 100 000, F = 1792 (median s per call, 5 000 excluded): "
        + ", ".join(
            f"{k} {v:.3f}" for k, v in res["choose_seconds_100k"].items() if k.endswith("k=25") or k.endswith("k=200")
        )
        + ".",
    ]
    return "\n".join(lines)


def plot(res, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    test, ch = res["test"], res["choice"]
    xs = list(BUDGETS)
    for ax, m, label in zip(fig.subplots(1, 2), ("accuracy", "macro_f1"), ("accuracy", "macro-F1"), strict=True):
        chosen = f"chosen: {ch['strategy']}, r={ch['round']}, w={wname(ch['weight'])}"
        cs = test["chosen_seeds"]["curve"]
        ax.plot(xs, [cs[b][m]["mean"] for b in xs], "o-", label=f"{chosen} (mean of {len(SEEDS)})")
        ax.fill_between(xs, [cs[b][m]["min"] for b in xs], [cs[b][m]["max"] for b in xs], alpha=0.2)
        ax.plot(xs, [test["chosen"]["curve"][b]["shipped"][m] for b in xs], "x--", color="0.4", label="shipped model")
        for key, name, style in (
            ("margin", f"margin, r={ch['round']}", "s--"),
            ("margin_all", "margin, all at once", "^:"),
        ):
            ax.plot(xs, [test[key]["curve"][b][m] for b in xs], style, label=name)
        rc = test["random"]["curve"]
        ax.plot(xs, [rc[b][m]["mean"] for b in xs], "k-", alpha=0.7, label=f"random (mean of {len(SEEDS)})")
        ax.fill_between(xs, [rc[b][m]["min"] for b in xs], [rc[b][m]["max"] for b in xs], color="k", alpha=0.15)
        ax.plot(list(TARGETS), [TARGETS[b][0 if m == "accuracy" else 1] for b in TARGETS], "r*", ms=10, label="target")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(xs, [str(b) for b in xs])
        ax.set_xlabel("labels asked (test pool)")
        ax.set_ylabel(f"{label} on the rest")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Curator labels on test (head on train+val; choices fixed on val)", fontsize=10)
    fig.tight_layout()
    atomic_save(lambda tmp: fig.savefig(tmp, format="png"), path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="MSL data set folder")
    ap.add_argument("--model", default=None, help="model file (default: the bundled int8 model)")
    ap.add_argument("--features", default=None, help="NPZ with train_x/val_x/test_x and *_path (instead of the model)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for the fits (1: no oversubscription)")
    ap.add_argument("--report", action="store_true", help="only rebuild the .md and .png from results/*.json")
    args = ap.parse_args(argv)
    if args.report:
        return report(int_keys(json.loads((RESULTS / "active_learning.json").read_text())))
    import sklearn.linear_model  # noqa: F401  (load its BLAS and OpenMP before limiting them)
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    threadpool_limits(args.threads)  # measured: 0.6 s per fit on 1 thread, 8 s on 2 while another job runs
    splits, names, info, own = load_data(args.data, args.features, args.model)
    train, val, test = splits["train"], splits["val"], splits["test"]
    k = len(names)
    res = {
        "budgets": list(BUDGETS),
        "weights": [str(w) for w in WEIGHTS],
        "c": C,
        "threads": args.threads,
        "data": info,
        "objective": "mean over budgets 10..200 of (accuracy + macro-F1) / 2, on the rest",
    }

    # ---- val: choose
    p0 = head_probs(*train, None, val[0], k)
    step1 = []
    for s in [s for s in review.STRATEGIES if s != "random"]:
        for w in WEIGHTS:
            step1.append(curate(s, STEP1_ROUND, w, train, val, p0, names))
            print(f"val {s:16s} r={STEP1_ROUND} w={w}: {step1[-1]['objective']:.4f}", flush=True)
    pairs = [(r["strategy"], r["weight"]) for r in sorted(step1, key=lambda r: -r["objective"])[:STEP2_TOP]]
    step2 = []
    for s, w in pairs:
        for r in STEP2_ROUNDS:
            step2.append(curate(s, r, w, train, val, p0, names))
            print(f"val {s:16s} r={r} w={w}: {step2[-1]['objective']:.4f}", flush=True)
    ranked = sorted(step1 + step2, key=lambda r: -r["objective"])
    best = ranked[0]
    second = next(
        r
        for r in ranked[1:]
        if (r["strategy"], r["round"], r["weight"]) != (best["strategy"], best["round"], best["weight"])
    )
    choice = {
        "strategy": best["strategy"],
        "round": best["round"],
        "weight": best["weight"],
        "val_objective": best["objective"],
        "runner_up": {k: second[k] for k in ("strategy", "round", "weight", "objective")},
    }
    rnd = random_runs(choice["weight"], train, val, p0, names)
    rnd["objective_mean"] = float(np.mean([r["objective"] for r in rnd["runs"]]))
    res["val"] = {"step1": step1, "step2": step2, "top_pairs": pairs, "random": rnd}
    res["choice"] = choice
    res["module_defaults_agree"] = (choice["strategy"], choice["round"], choice["weight"]) == (
        review.DEFAULT_STRATEGY,
        review.DEFAULT_ROUND_SIZE,
        review.DEFAULT_WEIGHT,
    )
    print(f"chosen on val: {choice}", flush=True)

    # ---- test: report with the choices fixed
    fit = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    q0 = head_probs(*fit, None, test[0], k)
    s, r, w = choice["strategy"], choice["round"], choice["weight"]
    sols, shipped = own["test"]
    ctx = (sols, shipped, q0.argmax(1))
    chosen = [curate(s, r, w, fit, test, q0, names, seed, ctx) for seed in SEEDS]
    res["test"] = {
        "shipped_accuracy_all": float((shipped == test[1]).mean()),
        "chosen": chosen[0],
        "chosen_seeds": spread(chosen),
        "margin": curate("margin", r, w, fit, test, q0, names, 0, ctx),
        "margin_all": curate("margin", "all", w, fit, test, q0, names, 0, ctx),
        "random": random_runs(w, fit, test, q0, names, ctx),
    }
    mean = res["test"]["chosen_seeds"]["curve"]  # the targets are judged on the mean over seeds
    res["test"]["targets"] = {
        str(b): {
            "accuracy": mean[b]["accuracy"]["mean"],
            "macro_f1": mean[b]["macro_f1"]["mean"],
            "target": list(t),
            "met": bool(mean[b]["accuracy"]["mean"] >= t[0] and mean[b]["macro_f1"]["mean"] >= t[1]),
        }
        for b, t in TARGETS.items()
    }
    res["new_class_check"] = new_class_check(train, val, names)
    res["choose_seconds_100k"] = time_choose()
    res["fits"] = {"n": FITS["n"], "total_s": round(FITS["s"], 1), "mean_s": FITS["s"] / max(FITS["n"], 1)}
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    with atomic_write(RESULTS / "active_learning.json") as f:  # first, so a fault in the report loses no run
        json.dump(res, f, indent=2)
    report(res)


def report(res: dict) -> None:
    plot(res, RESULTS / "active_learning.png")
    write_results("active_learning", res, markdown(res))


def int_keys(obj):
    """JSON's string keys of budgets back to ints (the report indexes curves by budget)."""
    if isinstance(obj, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): int_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [int_keys(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
