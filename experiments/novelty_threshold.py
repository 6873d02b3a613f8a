"""Which rule for the `unknown` threshold transfers forward in time? Chosen on val only.

    python experiments/novelty_threshold.py [--cache /tmp/novelty-cache]   (after experiments/novelty_cache.py)

The deployment, simulated on the past: the two-part novelty (``fit_novelty``) is fitted on train (sols
3–180), its threshold set by a rule that sees train only, and the share of val (sols 182–564, later)
flagged unknown is measured, with the share of the OOD set (benchmarks/ood) flagged. A rule that flags
≤ 10 % of val while flagging most of the OOD set is applied unchanged to the final fit on train+val; test
is reported by benchmarks/novelty.py, never read here.

Rules, each a quantile q of the fitted images' novelty (the weighted geometric mean before the joint
threshold) against some of the other fitted images:

- ``away G``: images more than G sols away, before or after (the rule of the previous session, G = 10,
  q = 0.75: it flags 5 % of val but 44 % of test);
- ``earlier G, latest half``: only images at least G sols *earlier* (a forward deployment), and only the
  latest half of the fitted images by sol (the earliest have few earlier images to be compared with);
- ``sub-fit``: fit on the earlier half of the fitted images, measure the quantile of its ``away 10``
  novelty that the later half exceeds 5 % of the time, and use that quantile on the whole fit.

Also the part weights, with the leave-one-class-out AUROC on val of experiments/novelty_methods.py (its
cached folds) beside each rule's flagged shares, and a per-part alternative (``per_part_max``: the larger
of the geometric mean and the texture, each over its own threshold). Writes
experiments/results/novelty_threshold.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from marsvision.head.trust import (
    DIMS,
    FEATURE_DIMS,
    FEATURE_K,
    FLAG_RATE,
    GAP_SOLS,
    K_NEAREST,
    fit_novelty,
    forward_quantile,
)
from marsvision.inference.trust import Neighbours, Novelty

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = (0.5, 0.6, 0.67, 0.8)
QUANTILES = (0.5, 0.6, 0.75, 0.9, 0.95)
FIT = {"gap": GAP_SOLS, "rate": FLAG_RATE, "k": K_NEAREST, "dims": DIMS}
FIT.update(feature_k=FEATURE_K, feature_dims=FEATURE_DIMS)
CUTS = (182, 300, 400)  # the fitted images are those before the cut (182: train), the forward ones after it


def kth_distance(part: Neighbours, sols: np.ndarray, excluded, chunk: int = 1024) -> np.ndarray:
    """Each reference image's distance to its k-th nearest reference that ``excluded(sol_q, sol_r)`` keeps
    in (inf where fewer than k are left)."""
    r, r_res = part.reference, part.reference_residual
    rr = (r * r).sum(1) + (0 if r_res is None else r_res**2)
    out = np.full(len(r), np.inf)
    for lo in range(0, len(r), chunk):
        q = slice(lo, lo + chunk)
        d2 = rr[q, None] + rr[None] - 2 * r[q] @ r.T
        d2[excluded(sols[q, None], sols[None])] = np.inf
        k = min(part.k, d2.shape[1])
        out[q] = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))
    return out


def combined(nov: Novelty, parts: dict) -> np.ndarray:
    """The weighted geometric mean of the parts' distances (before the joint threshold); inf rows dropped."""
    ok = np.all([np.isfinite(v) for v in parts.values()], axis=0)
    return nov.combine({k: v[ok] for k, v in parts.items()})


def held_out(nov: Novelty, sols: np.ndarray, rule: str, gap: int) -> np.ndarray:
    if rule == "away":
        return combined(nov, {p.source: kth_distance(p, sols, lambda a, b: np.abs(a - b) <= gap) for p in nov.parts})
    # earlier: references at least ``gap`` sols before the image; the latest half of the images only
    parts = {p.source: kth_distance(p, sols, lambda a, b: b > a - gap) for p in nov.parts}
    late = sols >= np.median(sols)
    return combined(nov, {k: v[late] for k, v in parts.items()})


def thresholds(f, t, sols, w: float) -> tuple[Novelty, dict]:
    """The novelty fitted on (f, t, sols) with features weight w, and {rule: combined-score threshold}."""
    nov = fit_novelty(f, t, sols, feature_weight=w)
    out = {}
    for rule, gaps in (("away", (10, 30)), ("earlier", (10,))):
        for gap in gaps:
            s = held_out(nov, sols, rule, gap)
            for q in QUANTILES:
                out[f"{rule} {gap}, q {q}"] = float(np.quantile(s, q))
    # sub-fit: the product's rule (``forward_quantile``), for two targets
    full_away = held_out(nov, sols, "away", GAP_SOLS)
    for target in (0.05, 0.10):
        q, _ = forward_quantile(f, t, sols, target, feature_weight=w, **FIT)
        print(f"   sub-fit, {target:.0%} of the later half: quantile {q:.3f}", flush=True)
        out[f"sub-fit, {target:.0%} of the later half"] = float(np.quantile(full_away, q))
    return nov, out


def loco_val(cache: Path, w: float) -> dict:
    """LOCO AUROC per class on val from experiments/novelty_methods.py's cached folds (k = 2, 256 dims)."""
    from sklearn.metrics import roc_auc_score

    raw = np.load(cache / "product_folds_val.npz")
    labels = np.load(cache / "val_labels.npy")
    out = {}
    for key in raw.files:
        c, part, s = key.split("/")
        if c == "all" or part != "texture" or s != "q":
            continue
        score = w * np.log(raw[f"{c}/2,256/q"] + 1e-12) + (1 - w) * np.log(raw[f"{c}/texture/q"] + 1e-12)
        pos = labels == int(c)
        if pos.any():
            out[c] = float(roc_auc_score(pos, score))
    ood = np.r_[raw["all/2,256/q"], raw["all/2,256/o"]], np.r_[raw["all/texture/q"], raw["all/texture/o"]]
    y = np.r_[np.zeros(len(raw["all/2,256/q"])), np.ones(len(raw["all/2,256/o"]))]
    out["ood"] = float(roc_auc_score(y, w * np.log(ood[0] + 1e-12) + (1 - w) * np.log(ood[1] + 1e-12)))
    return out


def per_part_max(cache: Path, f, t, sols, vf, vt, of, ot, w: float = 0.5) -> dict:
    """The per-part alternative: novelty = max(geometric mean over its threshold, texture over its own), each
    threshold a quantile (``qg``, ``qt``) of the train images' distances to images more than GAP_SOLS away;
    fitted on train, scored on val (flagged, LOCO with each fold's raw distances over the all-train
    thresholds) and on the OOD set."""
    from sklearn.metrics import roc_auc_score

    nov = fit_novelty(f, t, sols, feature_weight=w, joint_quantile=1.0)
    fp, tp = nov.part("features"), nov.part("texture")
    away = {p.source: kth_distance(p, sols, lambda a, b: np.abs(a - b) <= GAP_SOLS) for p in nov.parts}
    ok = np.isfinite(away["features"]) & np.isfinite(away["texture"])
    g_away, t_away = nov.combine({k: v[ok] for k, v in away.items()}), away["texture"][ok]
    raw = np.load(cache / "product_folds_val.npz")
    labels = np.load(cache / "val_labels.npy")
    out = {}
    for qg in (0.75, 0.9):
        for qt in (0.95, 0.99, 1.0):
            tg, tt = np.quantile(g_away, qg), np.quantile(t_away, qt)

            def score(feat_raw, tex_raw, tg=tg, tt=tt):
                g = np.exp(w * np.log(feat_raw / fp.threshold) + (1 - w) * np.log(tex_raw / tp.threshold))
                return np.maximum(g / tg, tex_raw / tt)

            s_val, s_ood = score(fp.raw(vf), tp.raw(vt)), score(fp.raw(of), tp.raw(ot))
            loco = [
                roc_auc_score(labels == int(c), score(raw[f"{c}/2,256/q"], raw[f"{c}/texture/q"]))
                for c in {k.split("/")[0] for k in raw.files} - {"all"}
                if (labels == int(c)).any()
            ]
            y = np.r_[np.zeros(len(s_val)), np.ones(len(s_ood))]
            out[f"qg {qg}, qt {qt}"] = {
                "val_flagged": float((s_val > 1).mean()),
                "ood_flagged": float((s_ood > 1).mean()),
                "ood_auroc": float(roc_auc_score(y, np.r_[s_val, s_ood])),
                "loco_mean": float(np.mean(loco)),
                "loco_worst": float(np.min(loco)),
            }
            print(f"  max, {qg=} {qt=}: {out[f'qg {qg}, qt {qt}']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="/tmp/novelty-cache")
    args = ap.parse_args()
    cache = Path(args.cache)
    load = lambda s, w: np.asarray(np.load(cache / f"{s}_{w}.npy"), np.float32)  # noqa: E731
    f = np.concatenate([load("train", "features"), load("val", "features")])
    t = np.concatenate([load("train", "texture"), load("val", "texture")])
    sols = np.concatenate([np.load(cache / "train_sols.npy"), np.load(cache / "val_sols.npy")])
    of, ot = load("ood", "features"), load("ood", "texture")
    results = {}
    for w in WEIGHTS:
        loco = loco_val(cache, w)
        ood_auroc = loco.pop("ood")
        results[str(w)] = {
            "loco_mean": float(np.mean(list(loco.values()))),
            "loco_worst": float(min(loco.values())),
            "ood_auroc": ood_auroc,
            "cuts": {},
        }
        print(f"w {w}: LOCO {results[str(w)]['loco_mean']:.3f}, OOD {ood_auroc:.4f}")
        for cut in CUTS:
            t0 = time.time()
            fit, fwd = sols < cut, sols >= cut
            nov, rules = thresholds(f[fit], t[fit], sols[fit], w)
            s_fwd, s_ood = nov.combine(nov.raw(t[fwd], f[fwd])), nov.combine(nov.raw(ot, of))
            results[str(w)]["cuts"][str(cut)] = {
                r: {"forward_flagged": float((s_fwd > th).mean()), "ood_flagged": float((s_ood > th).mean())}
                for r, th in rules.items()
            }
            print(f" fitted on sols < {cut} ({fit.sum()}), forward {fwd.sum()}: {time.time() - t0:.0f} s", flush=True)
    train = sols < 182
    results["per_part_max"] = per_part_max(cache, f[train], t[train], sols[train], f[~train], t[~train], of, ot)
    out = REPO / "experiments" / "results"
    (out / "novelty_threshold.json").write_text(json.dumps(results, indent=1))
    (out / "novelty_threshold.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "Threshold rules for `unknown`, simulated forward inside train+val (experiments/novelty_threshold.py). Each "
        "cell: share of the images after the cut flagged / share of the OOD set (benchmarks/ood, 90) flagged, with "
        "the novelty and its threshold fitted on the images before the cut (182: train alone, the forward images "
        "are val; 300 and 400: train and the val images before). LOCO and OOD AUROC: val, fitted on train "
        "(experiments/novelty_methods.py's folds). `sub-fit` is the product's rule (`forward_quantile`); "
        "its quantile is found for each cut on the images before it. Test is not read.",
        "",
    ]
    for w, r in results.items():
        if w == "per_part_max":
            continue
        lines += [
            f"### features weight {w}: LOCO on val {r['loco_mean']:.3f} (worst {r['loco_worst']:.3f}), "
            f"OOD AUROC {r['ood_auroc']:.4f}",
            "",
            "| rule | " + " | ".join(f"fitted before sol {c}" for c in r["cuts"]) + " |",
            "|---|" + "---|" * len(r["cuts"]),
        ]
        first = next(iter(r["cuts"].values()))
        for i, rule in enumerate(first):
            cells = [list(cut.values())[i] for cut in r["cuts"].values()]
            row = " | ".join(f"{c['forward_flagged']:.3f} / {c['ood_flagged']:.2f}" for c in cells)
            lines.append(f"| {rule} | {row} |")
        lines.append("")
    lines += [
        "### Per-part alternative: max(geometric mean / its threshold, texture / its own), fitted on train, val",
        "",
        "| thresholds (quantiles of the away distances) | val flagged | OOD flagged | OOD AUROC | LOCO mean (worst) |",
        "|---|---|---|---|---|",
    ]
    for name, v in results["per_part_max"].items():
        lines.append(
            f"| {name} | {v['val_flagged']:.3f} | {v['ood_flagged']:.3f} | {v['ood_auroc']:.4f} | "
            f"{v['loco_mean']:.3f} ({v['loco_worst']:.3f}) |"
        )
    lines.append("")
    lines.append("`python experiments/novelty_threshold.py --cache /tmp/novelty-cache` (after novelty_cache.py)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
