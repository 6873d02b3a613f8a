"""Fit what a model file says about trust: the novelty data and the calibration (applied by
``marsvision.inference.trust``), from the fitted images' features, texture, labels and sols.

The splits run forward in time, and a deployed model meets images of campaigns it has not seen, so both
are fitted campaign by campaign, never on the images' own fit:

- novelty (``fit_novelty``: the nearest images in the standardised features and in the texture, their
  weighted geometric mean): each fitted image's distance to the fitted images more than ``gap`` sols
  away (images of one campaign are near-duplicates: 81 % of a training image's 5 nearest neighbours
  are within 10 sols of it); each part's threshold flags ``rate`` (5 %) of them, and the joint one is
  set by a deployment simulated on the images' own past (``forward_quantile``);
- calibration: the fitted images are cut into windows of ``window`` sols; each window is predicted by
  a head fitted without it and ``gap`` sols either side, with the texture's novelty relative to those
  images; the novelty-dependent temperature is fitted to these held-out predictions.

Needs scikit-learn and scipy (the probe's extras), not torch.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import UsageError
from ..inference.trust import Calibration, Neighbours, Novelty, Trust, as_stored, softmax
from ..metrics import expected_calibration_error
from .fit import fit_head, fold_head

K_NEAREST = 5  # texture neighbours: k = 5 separated the MSL frames from the out-of-distribution set best on val
DIMS = 32  # kept directions of the texture: as good as all 1280 on val, and the references fit in the file
# Features part, chosen by leave-one-class-out on val (experiments/results/novelty_methods.md): the nearest
# training image (k = 1: a new kind of image is far even from its nearest neighbour, a known one has a
# near-twin), in 256 of the 1792 standardised dimensions without the residual (LOCO mean 0.94 vs 0.92 with
# all 1792; 128 dims: 0.89); per-dimension standardisation lifts the stage-6/7 channels, which the
# ImageNet head's large activations otherwise drown (0.82 → 0.91 at full dimension).
FEATURE_K = 2
FEATURE_DIMS = 256
# The features part's exponent in the weighted geometric mean of the two parts. Heavier weights rank a
# left-out class higher on val (LOCO 0.855 at 0.5, 0.867 at 0.6, 0.881 at 0.8) but the OOD set lower (0.984,
# 0.976, 0.949) and, under the forward threshold, flag more of val (3.9 %, 5.9 %, 11.8 %): 0.5 is the only
# weight that meets LOCO ≥ 0.85, OOD ≥ 0.98 and ≤ 10 % flagged on val (experiments/results/novelty_threshold.md).
FEATURE_WEIGHT = 0.5
# The joint threshold: a quantile of the fitted images' novelty against the images more than GAP_SOLS
# away, the quantile set by a deployment simulated on the fitted images' own past (``forward_quantile``):
# fitted on their earlier half, the quantile above which FORWARD_RATE of their later half lies. A fixed
# quantile did not transfer: 0.75, chosen on val (5.3 % of val flagged, novelty fitted on train), flagged
# 44 % of test with the novelty fitted on train+val. Simulated forward (fitted before sol 182, 300 or
# 400; the later val images scored), the forward rule flags 3.9 / 1.1 / 1.1 % and the 0.75 quantile
# 5.3 / 8.5 / 9.4 % (experiments/results/novelty_threshold.md); the quantile it finds grows with the
# fitted span (0.79 on train, 0.91 on train+val), as the later campaigns move further from the earlier.
FORWARD_RATE = 0.05
GAP_SOLS = 10  # a campaign: images within this many sols of each other are near-duplicates
FLAG_RATE = 0.05  # target share of in-distribution images of a new campaign flagged unknown
WINDOW_SOLS = 30  # the held-out windows for the calibration


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kth_distance_away(part: Neighbours, sols: np.ndarray, gap: int, chunk: int = 1024) -> np.ndarray:
    """Each reference image's distance to its k-th nearest reference more than ``gap`` sols away."""
    r, r_res = part.reference, part.reference_residual
    rr = (r * r).sum(1) + (0 if r_res is None else r_res**2)
    out = np.full(len(r), np.inf)
    for lo in range(0, len(r), chunk):
        q = slice(lo, lo + chunk)
        d2 = rr[q, None] + rr[None] - 2 * r[q] @ r.T
        d2[np.abs(sols[q, None] - sols[None]) <= gap] = np.inf
        k = min(part.k, d2.shape[1])
        out[q] = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))
    return out


def fit_neighbours(x: np.ndarray, source: str, k: int, dims: int, residual: bool, standardise: bool) -> Neighbours:
    """One descriptor's ``Neighbours`` over the images x (N, C), its threshold left at 1."""
    x = np.asarray(x, np.float32)
    centre = scale = None
    if standardise:
        centre, scale = x.mean(0), x.std(0) + 1e-6
        x = (x - centre) / scale
    z = _normalised(x)
    mean = z.mean(0)
    zc = z - mean
    # The main directions from the covariance (C × C), only the ``dims`` largest, in float32: 1.7 s for
    # 384 of 1792 against 6.9 s for all in float64 (one core); an SVD of the N × C images costs more still.
    from scipy.linalg import eigh

    c = zc.shape[1]
    _, vecs = eigh(zc.T @ zc, subset_by_index=[max(c - dims, 0), c - 1], driver="evr")
    part = Neighbours(source, 1.0, mean.astype(np.float32), np.zeros((c, 0), np.float32), np.zeros((0, 0)))
    part.basis = as_stored(vecs[:, ::-1], part.stored_as[0])  # as the file keeps it
    coords = (zc @ part.basis).astype(np.float32)
    res = np.sqrt(np.maximum((zc * zc).sum(1) - (coords.astype(np.float64) ** 2).sum(1), 0)).astype(np.float32)
    return Neighbours(
        source,
        1.0,
        part.mean,
        part.basis,
        as_stored(coords, part.stored_as[1]),
        res if residual else None,
        k,
        centre,
        scale,
    )


def fit_novelty(
    features: np.ndarray | None,
    texture: np.ndarray | None,
    sols: np.ndarray,
    gap: int = GAP_SOLS,
    rate: float = FLAG_RATE,
    k: int = K_NEAREST,
    dims: int = DIMS,
    feature_k: int = FEATURE_K,
    feature_dims: int = FEATURE_DIMS,
    feature_weight: float = FEATURE_WEIGHT,
    joint_quantile: float | None = None,
    texture_part: Neighbours | None = None,
) -> Novelty:
    """Novelty data whose references are these images: pooled features (N, F), texture (N, C) (either may
    be None, leaving its part out) and sols (N,). ``texture_part``: a texture part already fitted on these
    images, kept as it is, threshold included (``marsvision calibrate --novelty-only``).

    Each part's threshold is the distance that ``rate`` of the images exceed against the images more than
    ``gap`` sols away (a new campaign); the novelty is the weighted geometric mean of the two parts'
    distances over their thresholds (``feature_weight`` for the features), over its ``joint_quantile``
    on those images (default: ``forward_quantile`` with both parts, ``1 - rate`` with one). Fit it on any
    subset of images (one class left out, say) to judge novelty against that subset.
    """
    sols = np.asarray(sols)
    fit = {"gap": gap, "rate": rate, "k": k, "dims": dims, "feature_k": feature_k, "feature_dims": feature_dims}
    novelty, held_out = _fit_parts(features, texture, sols, feature_weight=feature_weight, kept=texture_part, **fit)
    info = {"target_flag_rate": rate, "gap_sols": gap, "images": len(sols)}
    if joint_quantile is None and len(novelty.parts) > 1:
        fit["feature_weight"] = feature_weight
        joint_quantile, info["forward"] = forward_quantile(features, texture, sols, **fit)
    elif joint_quantile is None:
        joint_quantile = 1 - rate
    novelty.threshold = float(np.quantile(held_out, joint_quantile))
    info["joint_quantile"] = joint_quantile
    info["parts"] = {p.source: {"k": p.k, "dims": p.basis.shape[1]} for p in novelty.parts}
    novelty.info = info
    return novelty


def _fit_parts(features, texture, sols, gap, rate, k, dims, feature_k, feature_dims, feature_weight, kept=None):
    """The parts, each with its threshold (``kept``: a texture part kept as it is), combined with the joint
    threshold left at 1, and the fitted images' combined novelty against the images more than ``gap`` sols
    away."""
    parts = []
    if features is not None:
        parts.append(fit_neighbours(features, "features", feature_k, feature_dims, residual=False, standardise=True))
    if kept is not None:
        if len(kept.reference) != len(sols):
            raise UsageError(f"the kept texture part has {len(kept.reference)} references, not the {len(sols)} images")
        parts.append(kept)
    elif texture is not None:
        parts.append(fit_neighbours(texture, "texture", k, dims, residual=True, standardise=False))
    if not parts:
        raise UsageError("novelty needs the features or the texture of the images")
    away = np.stack([_kth_distance_away(p, sols, gap) for p in parts])
    ok = np.isfinite(away).all(0)
    if not ok.any():
        raise UsageError(f"no two fitted images are more than {gap} sols apart: novelty cannot be fitted")
    for p, a in zip(parts, away, strict=True):
        if p is not kept:
            p.threshold = float(np.quantile(a[ok], 1 - rate))
    novelty = Novelty(parts, weights={"features": feature_weight, "texture": 1 - feature_weight})
    return novelty, novelty.combine({p.source: a[ok] for p, a in zip(parts, away, strict=True)})


def forward_quantile(
    features: np.ndarray, texture: np.ndarray, sols: np.ndarray, target: float = FORWARD_RATE, **fit
) -> tuple[float, dict]:
    """The joint quantile (of ``fit_novelty``'s held-out novelty) that flags ``target`` of a later period,
    found on the images' own past: parts fitted on the images before their median sol, the images more
    than ``gap`` sols after it scored. Returns it and what was measured; the 1 - ``rate`` quantile where
    the images do not span two such halves."""
    gap, cut = fit["gap"], float(np.median(sols))
    early, late = sols < cut, sols >= cut + gap
    if early.sum() < 2 or not late.any() or np.ptp(sols[early]) <= gap:
        return 1 - fit["rate"], {"note": "the images span too few sols for a forward simulation"}
    sub, held_out = _fit_parts(features[early], texture[early], sols[early], **fit)
    later = sub.combine(sub.raw(texture[late], features[late]))
    q = float((held_out < np.quantile(later, 1 - target)).mean())
    return q, {"target": target, "cut_sol": cut, "fitted": int(early.sum()), "scored": int(late.sum()), "quantile": q}


def held_out_predictions(
    features: np.ndarray,
    texture: np.ndarray,
    labels: np.ndarray,
    sols: np.ndarray,
    num_classes: int,
    c: float,
    window: int = WINDOW_SOLS,
    gap: int = GAP_SOLS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, novelty, labels) of every fitted image whose class is also outside its window, each
    predicted by a head fitted without its window of ``window`` sols and ``gap`` sols either side. The
    novelty is the texture's (what the calibration reads, ``Calibration.reads``)."""
    out = []
    for lo in range(int(sols.min()), int(sols.max()) + 1, window):
        held = (sols >= lo) & (sols < lo + window)
        fit = (sols < lo - gap) | (sols >= lo + window + gap)
        held &= np.isin(labels, labels[fit])
        if not held.any() or len(np.unique(labels[fit])) < 2:
            continue
        w, b = fold_head(fit_head(features[fit], labels[fit], c), num_classes)
        novelty = fit_novelty(None, texture[fit], sols[fit])
        out.append((features[held] @ w.T + b, novelty(texture[held]), labels[held]))
    if not out:
        raise UsageError(f"the fitted images span fewer than {window} sols: no window can be held out")
    return tuple(np.concatenate(z) for z in zip(*out, strict=True))


def fit_calibration(logits: np.ndarray, novelty: np.ndarray, labels: np.ndarray) -> Calibration:
    """The (log_t, slope) that minimise the negative log-likelihood of these held-out predictions."""
    from scipy.optimize import minimize

    log_nov = np.log(np.clip(novelty, 1e-3, 1e3))
    rows = np.arange(len(labels))

    def nll(p):
        z = logits / np.exp(p[0] + p[1] * log_nov)[:, None]
        z = z - z.max(1, keepdims=True)
        return -(z[rows, labels] - np.log(np.exp(z).sum(1))).mean()

    p = minimize(nll, np.zeros(2), method="L-BFGS-B", bounds=[(-3, 3), (-3, 3)]).x
    return Calibration(float(p[0]), float(p[1]))


def fit_trust(
    features: np.ndarray, texture: np.ndarray, labels: np.ndarray, sols: np.ndarray, num_classes: int, c: float
) -> Trust:
    """Novelty (both parts) on all fitted images, calibration on their held-out predictions with the
    texture part's novelty (``Calibration.reads``; a law fitted on the texture alone before the features
    part, so the confidences stay as they were); ``info`` of each says how it was fitted and what it
    measured there."""
    t0 = time.perf_counter()
    novelty = fit_novelty(features, texture, sols)
    logits, nov, y = held_out_predictions(features, texture, labels, sols, num_classes, c)
    calibration = fit_calibration(logits, nov, y)
    calibration.reads = "texture"
    probs = calibration(logits, nov)
    calibration.info = {
        "fitted_on": f"{len(y)} held-out predictions: windows of {WINDOW_SOLS} sols, each predicted by a head "
        f"fitted without it and {GAP_SOLS} sols either side (C = {c})",
        "held_out_accuracy": float((logits.argmax(1) == y).mean()),
        "held_out_ece_before": expected_calibration_error(softmax(logits), y),
        "held_out_ece_after": expected_calibration_error(probs, y),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    novelty.info["held_out_flagged_texture"] = float((nov > 1).mean())
    return Trust(calibration, novelty)
