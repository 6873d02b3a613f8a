"""Which novelty notices a new kind of rover image? Leave-one-class-out (LOCO) on val, to choose.

    python experiments/novelty_cache.py --data ../shared/data/msl-images   # once: embeddings → /tmp/novelty-cache
    python experiments/novelty_methods.py [--split val]                    # → experiments/results/novelty_methods.*

For each class c with images in the query split: fit the method on the bank split (train) without c, score
the query split (val), AUROC of c's images against the other classes' images. Plus AUROC of the
out-of-distribution set (benchmarks/ood) against the query split with the method fitted on the whole bank.

Every method here scores a query by its distance to the bank's images or patches, so each is computed
once per class of the bank (``per_class``: a query's nearest distances to each class's images or patches
separately) and the LOCO fold for c takes the minimum over the other classes: exact, and one pass over
the bank instead of 24. Methods whose model is not a nearest-neighbour search (principal components,
Gaussian) are refitted per fold.

Methods (all on the bundled int8 file's frozen outputs):
- ``texture-knn``: today's novelty (spatial std per channel of the last map, k = 5 in 32 PCA dims);
- ``feature-knn``: cosine distance of the pooled features (1792) to the k-th nearest bank image;
- ``patchcore``: Roth et al. 2022: patch features of a map, each averaged with its 3×3 neighbours, a
  greedy k-center coreset of each class's patches (a fraction of them, chosen on 64-dim random
  projections), image score = max over its patches of the distance to the nearest bank patch;
- ``demud``: Wagstaff et al. 2013: norm of the residual of the (centred, L2-normalised) pooled features
  after projecting on the top-k principal components of the bank;
- ``recon-patch``: Kerner et al. 2020-style reconstruction error, here of the patch features by their
  top-k principal components (a linear autoencoder), max over patches;
- ``mahalanobis``: an RX detector on the pooled features (shrunk covariance; Kerner et al. compare RX);
- rank-averages of two scores.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from marsvision.head.trust import fit_neighbours, fit_novelty

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


class Cache:
    def __init__(self, root: Path):
        self.root = root

    def __call__(self, split: str, what: str) -> np.ndarray:
        return np.load(self.root / f"{split}_{what}.npy", mmap_mode="r")


# ------------------------------------------------------------------------------------------ patches


def local_average(maps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → each cell the mean of its 3×3 neighbourhood (cells outside the map not counted)."""
    x = np.pad(maps.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones(maps.shape[2:], np.float32), 1)
    h, w = maps.shape[2:]
    s = sum(x[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3))
    n = sum(ones[i : i + h, j : j + w] for i in range(3) for j in range(3))
    return s / n


def patches(maps: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(N, C, H, W) → (N, H·W, C) locally averaged patch features."""
    out = [local_average(np.asarray(maps[i : i + chunk])) for i in range(0, len(maps), chunk)]
    x = np.concatenate(out)
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1).copy()


def coreset(x: np.ndarray, n: int, seed: int = 0, dims: int = 64) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` picked by greedy k-center (each pick the row furthest from those
    already picked), distances on a random projection to ``dims`` (as PatchCore does, for speed)."""
    if n >= len(x):
        return np.arange(len(x))
    rng = np.random.default_rng(seed)
    p = x @ (rng.standard_normal((x.shape[1], dims)).astype(np.float32) / np.sqrt(dims))
    sq = (p * p).sum(1)
    picked = [int(rng.integers(len(x)))]
    d = sq - 2 * p @ p[picked[0]] + sq[picked[0]]
    for _ in range(n - 1):
        i = int(d.argmax())
        picked.append(i)
        d = np.minimum(d, sq - 2 * p @ p[i] + sq[i])
    return np.array(picked)


def min_dist_per_class(
    q: np.ndarray, bank: np.ndarray, bank_class: np.ndarray, classes: np.ndarray, chunk: int = 4096
) -> np.ndarray:
    """(Q, D) queries → (Q, len(classes)) squared distance to the nearest bank row of each class."""
    bsq = (bank * bank).sum(1)
    out = np.empty((len(q), len(classes)), np.float32)
    for lo in range(0, len(q), chunk):
        qq = q[lo : lo + chunk]
        d2 = (qq * qq).sum(1)[:, None] + bsq[None] - 2 * qq @ bank.T
        for j, c in enumerate(classes):
            out[lo : lo + chunk, j] = d2[:, bank_class == c].min(1)
    return np.maximum(out, 0)


def knn_per_class(q: np.ndarray, bank: np.ndarray, bank_class: np.ndarray, classes, k: int) -> np.ndarray:
    """(Q, D) → (Q, len(classes), k) the k smallest squared distances to each class's bank rows."""
    bsq = (bank * bank).sum(1)
    d2 = np.maximum((q * q).sum(1)[:, None] + bsq[None] - 2 * q @ bank.T, 0)
    out = np.full((len(q), len(classes), k), np.inf, np.float32)
    for j, c in enumerate(classes):
        dc = d2[:, bank_class == c]
        kk = min(k, dc.shape[1])
        if kk:
            out[:, j, :kk] = np.sort(np.partition(dc, kk - 1, axis=1)[:, :kk], axis=1)
    return out


# ------------------------------------------------------------------------------------------ LOCO


def loco(score_without, q_labels: np.ndarray, classes) -> dict:
    """``score_without(c)`` → (Q,) scores with class c left out of the bank; AUROC per query class."""
    out = {}
    for c in classes:
        pos = q_labels == c
        if pos.sum() == 0 or pos.all():
            continue
        s = score_without(c)
        out[int(c)] = auroc(s[~pos], s[pos])
    return out


def summary(per_class: dict, names: dict, ood: float | None) -> dict:
    v = np.array(list(per_class.values()))
    worst = min(per_class, key=per_class.get)
    return {
        "mean": float(v.mean()),
        "worst": float(v.min()),
        "worst_class": names[worst],
        "below_0.6": int((v < 0.6).sum()),
        "ood": ood,
        "per_class": {names[c]: round(a, 4) for c, a in per_class.items()},
    }


def knn_loco(q, bank, bank_lab, q_lab, classes, k, ood_q=None):
    """Image-level kNN: score = distance to the k-th nearest bank image outside the left-out class."""
    ks = knn_per_class(q, bank, bank_lab, classes, k)
    idx = {c: j for j, c in enumerate(classes)}

    def without(c):
        rest = np.delete(ks, idx[c], axis=1).reshape(len(q), -1)
        return np.sqrt(np.partition(rest, k - 1, axis=1)[:, k - 1])

    res = loco(without, q_lab, classes)
    ood = None
    if ood_q is not None:
        s_all = np.sqrt(np.partition(ks.reshape(len(q), -1), k - 1, axis=1)[:, k - 1])
        ko = knn_per_class(ood_q, bank, bank_lab, classes, k).reshape(len(ood_q), -1)
        ood = auroc(s_all, np.sqrt(np.partition(ko, k - 1, axis=1)[:, k - 1]))
    return res, without, ood


def patch_loco(qp, bankp, bank_lab, q_lab, classes, frac, ood_p=None, seed=0):
    """PatchCore: per-class coreset, per-class nearest patch, image score = max over patches of the
    nearest distance outside the left-out class."""
    n, p, d = bankp.shape
    flat = bankp.reshape(-1, d)
    flat_lab = np.repeat(bank_lab, p)
    keep = []
    for c in classes:
        rows = np.flatnonzero(flat_lab == c)
        if len(rows):
            keep.append(rows[coreset(flat[rows], max(1, round(frac * len(rows))), seed)])
    keep = np.concatenate(keep)
    bank, blab = flat[keep], flat_lab[keep]
    m = min_dist_per_class(qp.reshape(-1, d), bank, blab, classes).reshape(len(qp), p, len(classes))
    idx = {c: j for j, c in enumerate(classes)}

    def without(c):
        return np.sqrt(np.delete(m, idx[c], axis=2).min(2).max(1))

    res = loco(without, q_lab, classes)
    ood = None
    if ood_p is not None:
        mo = min_dist_per_class(ood_p.reshape(-1, d), bank, blab, classes).reshape(len(ood_p), -1, len(classes))
        ood = auroc(np.sqrt(m.min(2).max(1)), np.sqrt(mo.min(2).max(1)))
    return res, without, ood, len(bank)


def refit_loco(fit, q, bank, bank_lab, q_lab, classes, ood_q=None):
    """A method refitted per fold: ``fit(bank rows)`` → a scorer of query rows."""

    def without(c):
        return fit(bank[bank_lab != c])(q)

    res = loco(without, q_lab, classes)
    ood = None
    if ood_q is not None:
        f = fit(bank)
        ood = auroc(f(q), f(ood_q))
    return res, without, ood


def l2n(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pca_residuals(ks):
    """DEMUD's score for each k in ``ks`` from one eigen-decomposition of the bank's covariance."""

    def fit(bank):
        mean = bank.mean(0)
        z = bank - mean
        _, v = np.linalg.eigh(z.T @ z)
        v = v[:, ::-1].astype(np.float32)

        def score(q):
            z = q - mean
            c = z @ v[:, : max(ks)]
            total = (z * z).sum(1)
            return [np.sqrt(np.maximum(total - (c[:, :k] ** 2).sum(1), 0)) for k in ks]

        return score

    return fit


def patch_recon(k: int, sample: int = 20000):
    def fit(bankp):
        flat = bankp.reshape(-1, bankp.shape[-1])
        rng = np.random.default_rng(0)
        flat = flat[rng.choice(len(flat), min(sample, len(flat)), replace=False)]
        mean = flat.mean(0)
        _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
        v = vt[:k].T

        def score(qp):
            z = qp - mean
            return np.linalg.norm(z - (z @ v) @ v.T, axis=2).max(1)

        return score

    return fit


def mahalanobis(shrink: float = 0.1):
    def fit(bank):
        mean = bank.mean(0)
        cov = np.cov(bank - mean, rowvar=False)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        prec = np.linalg.inv(cov).astype(np.float32)

        def score(q):
            z = q - mean
            return np.einsum("nd,de,ne->n", z, prec, z)

        return score

    return fit


def product_family(record, cache, bl, ql, classes, bsols) -> None:
    """The product's two parts (``fit_neighbours``) refitted per fold (nothing of the left-out class in the
    standardisation, the principal directions or the references) at a few settings, and their weighted
    geometric mean, whose ranking does not depend on the parts' thresholds (so none is fitted per fold).
    The raw distances per fold are kept in the cache folder. Also the share of val flagged by
    ``fit_novelty`` with all of train."""
    bf, qf, of = (np.asarray(cache(s, "features")) for s in ("train", "val", "ood"))
    bt, qt, ot = (np.asarray(cache(s, "texture")) for s in ("train", "val", "ood"))
    settings = [(1, 256), (2, 256), (1, 384), (2, 384)]
    keep = cache.root / "product_folds_val.npz"
    raw = dict(np.load(keep)) if keep.exists() else {}
    for c in [*classes, "all"]:
        if f"{c}/texture/q" in raw:
            continue
        t0, m = time.time(), (bl != c) if c != "all" else np.ones(len(bl), bool)
        tex = fit_neighbours(bt[m], "texture", 5, 32, residual=True, standardise=False)
        raw[f"{c}/texture/q"], raw[f"{c}/texture/o"] = tex.raw(qt), tex.raw(ot)
        top = fit_neighbours(bf[m], "features", 1, 384, residual=False, standardise=True)
        for k, d in settings:
            f = replace(top, basis=top.basis[:, :d], reference=top.reference[:, :d], k=k)
            raw[f"{c}/{k},{d}/q"], raw[f"{c}/{k},{d}/o"] = f.raw(qf), f.raw(of)
        np.savez(keep, **raw)
        print(f"product fold {c}: {time.time() - t0:.0f} s", flush=True)

    def entry(name, score):
        without = lambda c: score(c, "q")  # noqa: E731
        record(name, loco(without, ql, classes), without, auroc(score("all", "q"), score("all", "o")))

    entry("product texture part (k=5, 32 dims + residual)", lambda c, s: raw[f"{c}/texture/{s}"])
    for k, d in settings:
        entry(f"product features part (standardised, k={k}, {d} dims)", lambda c, s, k=k, d=d: raw[f"{c}/{k},{d}/{s}"])
        for w in (0.5, 0.67, 0.8):

            def geo(c, s, k=k, d=d, w=w):
                return w * np.log(raw[f"{c}/{k},{d}/{s}"] + 1e-12) + (1 - w) * np.log(raw[f"{c}/texture/{s}"] + 1e-12)

            entry(f"product geometric mean (features k={k} {d} dims)^{w} (texture)^{1 - w:.2f}", geo)
    nov = fit_novelty(bf, bt, bsols)
    print(f"fit_novelty with its defaults on all train flags {(nov(qt, qf) > 1).mean():.3f} of val", flush=True)


def rank(x):
    return np.argsort(np.argsort(x)) / len(x)


def write(results: dict) -> None:
    """Add these results to experiments/results/novelty_methods.{json,md} (runs of some families add up)."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "novelty_methods.json"
    # runs of some families add to the table
    results = {**(json.loads(out.read_text()) if out.exists() else {}), **results}
    out.write_text(json.dumps(results, indent=1))
    lines = [
        "LOCO on val (fit on train without class c, AUROC of c's val images vs the other val images); "
        "OOD: AUROC of benchmarks/ood vs val, fitted on all train. `python experiments/novelty_methods.py`",
        "",
        "`product max(...)` rows: an earlier version of the product family (each part over its own "
        "held-out-campaign threshold, then the larger): the texture decided alone. PatchCore and recon-patch "
        "read the bundled file's maps, 3x3-averaged patches in 64 PCA dimensions (PatchCore); `--quick` settings.",
        "Shipped: geometric mean (features k=2 256 dims)^0.5 (texture)^0.50.",
        "",
        "| method | LOCO mean | worst (class) | classes < 0.6 | OOD AUROC |",
        "|---|---|---|---|---|",
    ]
    for n, r in sorted(results.items(), key=lambda kv: -kv[1]["mean"]):
        ood = "" if r["ood"] is None else f"{r['ood']:.4f}"
        lines.append(f"| {n} | {r['mean']:.3f} | {r['worst']:.3f} ({r['worst_class']}) | {r['below_0.6']} | {ood} |")
    (RESULTS / "novelty_methods.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/novelty-cache")
    ap.add_argument("--quick", action="store_true", help="fewer settings")
    ap.add_argument("--maps", default="taps,mid", help="which maps PatchCore and recon-patch read")
    ap.add_argument("--fracs", default="0.01,0.05", help="PatchCore coreset fractions")
    ap.add_argument("--families", default="texture,knn,patch,recon,demud,combo", help="which to run")
    args = ap.parse_args()
    cache = Cache(Path(args.cache))
    names = dict(
        (int(a), b)
        for a, b in (
            line.split(maxsplit=1)
            for line in Path("/work/shared/data/msl-images/msl_synset_words-indexed.txt").read_text().splitlines()
            if line.strip()
        )
    )
    bl, ql = np.asarray(cache("train", "labels")), np.asarray(cache("val", "labels"))
    classes = np.unique(np.r_[bl, ql])
    results: dict = {}
    scorers: dict = {}

    def record(name, res, without, ood, extra=None):
        results[name] = {**summary(res, names, ood), **(extra or {})}
        memo: dict = {}
        scorers[name] = lambda c: memo[c] if c in memo else memo.setdefault(c, without(c))
        r = results[name]
        print(
            f"{name:<40} LOCO mean {r['mean']:.3f} worst {r['worst']:.3f} ({r['worst_class']}) "
            f"<0.6: {r['below_0.6']}  OOD {r['ood'] if ood is None else round(ood, 4)}  {extra or ''}",
            flush=True,
        )
        write({name: results[name]})

    fam = set(args.families.split(","))
    # today's texture kNN, refitted per fold (its PCA basis is the bank's)
    bt, qt, ot = (np.asarray(cache(s, "texture")) for s in ("train", "val", "ood"))
    bsols = np.asarray(cache("train", "sols"))

    def texture_fit(mask):
        return fit_novelty(None, bt[mask], bsols[mask]).part("texture").raw

    def tex_without(c):
        return texture_fit(bl != c)(qt)

    if "texture" in fam:
        full = texture_fit(np.ones(len(bt), bool))
        record("texture-knn (today)", loco(tex_without, ql, classes), tex_without, auroc(full(qt), full(ot)))

    if "product" in fam:
        product_family(record, cache, bl, ql, classes, bsols)

    # pooled features, cosine kNN
    bf, qf, of = (l2n(cache(s, "features")) for s in ("train", "val", "ood"))
    for k in () if "knn" not in fam else (1, 3, 5, 10) if not args.quick else (1, 5):
        record(f"feature-knn cosine k={k}", *knn_loco(qf, bf, bl, ql, classes, k, of))
    # DEMUD-style residual after the top-k principal components; Mahalanobis (RX)

    # PatchCore on the maps
    maps = {
        "taps 6x6 (stages 6+7, 512)": lambda s: patches(cache(s, "taps")),
        "mid 12x12 (stage 5, 112)": lambda s: patches(cache(s, "mid_map")),
    }
    maps = {k: v for k, v in maps.items() if k.split()[0] in args.maps.split(",")}
    for mname, get in maps.items() if fam & {"patch", "recon"} else ():
        t0 = time.time()
        bp, qp, op = get("train"), get("val"), get("ood")
        # the same reduction the product would need (bank size in the file): PCA to ≤ 128 dims on bank patches
        flat = bp.reshape(-1, bp.shape[-1])
        sample = flat[np.random.default_rng(0).choice(len(flat), min(30000, len(flat)), replace=False)]
        mean = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
        for dims in () if "patch" not in fam else (64,) if args.quick else (32, 64, 128):
            if dims >= bp.shape[-1]:
                continue
            v = vt[:dims].T.astype(np.float32)
            b2, q2, o2 = ((x - mean) @ v for x in (bp, qp, op))
            for frac in map(float, args.fracs.split(",")):
                t1 = time.time()
                res, without, ood, nb = patch_loco(q2, b2, bl, ql, classes, frac, o2)
                record(
                    f"patchcore {mname} pca{dims} coreset {frac:.0%}",
                    res,
                    without,
                    ood,
                    {"bank_patches": int(nb), "dims": dims, "seconds": round(time.time() - t1)},
                )
        for k in (16, 64) if "recon" in fam else ():
            record(f"recon-patch {mname} k={k}", *refit_loco(patch_recon(k), qp, bp, bl, ql, classes, op))
        print(f"{mname}: {time.time() - t0:.0f} s", flush=True)

    t0 = time.time()
    demud_ks = (8, 32, 128) if "demud" in fam else ()
    fits = {c: pca_residuals(demud_ks)(bf[bl != c]) for c in classes} if demud_ks else {}
    full_fit = pca_residuals(demud_ks)(bf) if demud_ks else None
    for i, k in enumerate(demud_ks):

        def without(c, i=i):
            return fits[c](qf)[i]

        record(f"demud residual k={k}", loco(without, ql, classes), without, auroc(full_fit(qf)[i], full_fit(of)[i]))
    if "demud" in fam:
        record("mahalanobis (RX) pooled", *refit_loco(mahalanobis(), qf, bf, bl, ql, classes, of))
    print(f"image-level methods: {time.time() - t0:.0f} s", flush=True)

    # rank-average combinations of the best patch and best global score
    patch_best = max((n for n in results if n.startswith("patchcore")), key=lambda n: results[n]["mean"], default=None)
    for glob in [n for n in results if not n.startswith("patchcore")] if "combo" in fam and patch_best else ():
        for w in (0.5,):

            def combo(c, a=patch_best, b=glob, w=w):
                return w * rank(scorers[a](c)) + (1 - w) * rank(scorers[b](c))

            record(f"rank-avg [{patch_best}] + [{glob}]", loco(combo, ql, classes), combo, None)

    write(results)


if __name__ == "__main__":
    main()
