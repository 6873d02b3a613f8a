"""Fit what a model file says about trust: the novelty data and the calibration (applied by
``marsvision.inference.trust``), from the fitted images' features, texture, labels and sols.

The splits run forward in time, and a deployed model meets images of campaigns it has not seen, so both
are fitted campaign by campaign, never on the images' own fit:

- novelty threshold: each fitted image's distance to the fitted images more than ``gap`` sols away
  (images of one campaign are near-duplicates: 81 % of a training image's 5 nearest neighbours are
  within 10 sols of it), and the threshold flags ``rate`` (5 %) of them;
- calibration: the fitted images are cut into windows of ``window`` sols; each window is predicted by
  a head fitted without it and ``gap`` sols either side, with novelty relative to those images; the
  novelty-dependent temperature is fitted to these held-out predictions.

Needs scikit-learn and scipy (the probe's extras), not torch.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import UsageError
from ..inference.trust import Calibration, Novelty, Trust, softmax
from ..metrics import expected_calibration_error
from .fit import fit_head, fold_head

K_NEAREST = 5  # neighbours: k = 5 separated the MSL frames from the out-of-distribution set best on val
DIMS = 32  # kept directions of the texture: as good as all 1280 on val, and the references fit in the file
GAP_SOLS = 10  # a campaign: images within this many sols of each other are near-duplicates
FLAG_RATE = 0.05  # target share of in-distribution images of a new campaign flagged unknown
WINDOW_SOLS = 30  # the held-out windows for the calibration


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kth_distance_away(novelty: Novelty, sols: np.ndarray, gap: int, chunk: int = 1024) -> np.ndarray:
    """Each reference image's distance to its k-th nearest reference more than ``gap`` sols away."""
    r, r_res = novelty.reference, novelty.reference_residual
    rr = (r * r).sum(1) + r_res**2
    out = np.full(len(r), np.inf)
    for lo in range(0, len(r), chunk):
        q = slice(lo, lo + chunk)
        d2 = rr[q, None] + rr[None] - 2 * r[q] @ r.T
        d2[np.abs(sols[q, None] - sols[None]) <= gap] = np.inf
        k = min(novelty.k, d2.shape[1])
        out[q] = np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))
    return out


def fit_novelty(
    texture: np.ndarray,
    sols: np.ndarray,
    k: int = K_NEAREST,
    dims: int = DIMS,
    gap: int = GAP_SOLS,
    rate: float = FLAG_RATE,
) -> Novelty:
    """Novelty data from the fitted images' texture (N, C) and sols (N,)."""
    z = _normalised(texture.astype(np.float64))
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    basis = vt[:dims].T.astype(np.float32)
    projection = Novelty(1.0, mean.astype(np.float32), basis, np.zeros((0, dims), np.float32), np.zeros(0, np.float32))
    coords, residual = projection.embed(texture.astype(np.float32))
    # float16 in the file: round the references the same way here, so the threshold fits them.
    novelty = Novelty(
        1.0,
        projection.mean,
        basis,
        coords.astype(np.float16).astype(np.float32),
        residual,
        k=k,
        channels=texture.shape[1],
    )
    away = _kth_distance_away(novelty, sols, gap)
    away = away[np.isfinite(away)]
    if not len(away):
        raise UsageError(f"no two fitted images are more than {gap} sols apart: novelty cannot be fitted")
    novelty.threshold = float(np.quantile(away, 1 - rate))
    novelty.info = {"target_flag_rate": rate, "gap_sols": gap, "images": len(texture), "k": k, "dims": dims}
    return novelty


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
    predicted by a head fitted without its window of ``window`` sols and ``gap`` sols either side."""
    out = []
    for lo in range(int(sols.min()), int(sols.max()) + 1, window):
        held = (sols >= lo) & (sols < lo + window)
        fit = (sols < lo - gap) | (sols >= lo + window + gap)
        held &= np.isin(labels, labels[fit])
        if not held.any() or len(np.unique(labels[fit])) < 2:
            continue
        w, b = fold_head(fit_head(features[fit], labels[fit], c), num_classes)
        novelty = fit_novelty(texture[fit], sols[fit])
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
    """Novelty on all fitted images, calibration on their held-out predictions; ``info`` of each says
    how it was fitted and what it measured there."""
    t0 = time.perf_counter()
    novelty = fit_novelty(texture, sols)
    logits, nov, y = held_out_predictions(features, texture, labels, sols, num_classes, c)
    calibration = fit_calibration(logits, nov, y)
    probs = calibration(logits, nov)
    calibration.info = {
        "fitted_on": f"{len(y)} held-out predictions: windows of {WINDOW_SOLS} sols, each predicted by a head "
        f"fitted without it and {GAP_SOLS} sols either side (C = {c})",
        "held_out_accuracy": float((logits.argmax(1) == y).mean()),
        "held_out_ece_before": expected_calibration_error(softmax(logits), y),
        "held_out_ece_after": expected_calibration_error(probs, y),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    novelty.info["held_out_flagged"] = float((nov > 1).mean())
    return Trust(calibration, novelty)
