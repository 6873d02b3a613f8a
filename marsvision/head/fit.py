"""Fit the linear head on (N, F) features: standardise, then a class-balanced logistic regression, folded
into one linear layer (W, b) that the model file stores."""

from __future__ import annotations

import numpy as np


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    sample_weight: np.ndarray | None = None,
    start: tuple[np.ndarray, np.ndarray] | None = None,
):
    """The probe's classifier on (N, F) features: standardise, then a logistic regression that is
    class-balanced unless ``sample_weight`` is given. Returns the fitted scikit-learn pipeline.

    ``start``: a folded head (W (K, F), b (K,), as ``fold_head`` returns) to start the solver from. A refit
    moves the optimum only a little, so starting there takes a fraction of the iterations; the optimum
    (the problem is convex) is the same.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    balance = "balanced" if sample_weight is None else None
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(C=c, class_weight=balance, max_iter=3000, warm_start=start is not None)
    if start is not None:
        classes = np.unique(y)
        w, b = start[0][classes], start[1][classes]
        known = b > -1e3  # a class the start never fitted (bias -1e4) starts from zero
        lr.coef_ = np.where(known[:, None], w * scaler.scale_, 0.0)  # unfold: the inverse of fold_head
        lr.intercept_ = np.where(known, b + w @ scaler.mean_, 0.0)
    lr.fit(scaler.transform(x), y, sample_weight=sample_weight)
    return Pipeline([("standardscaler", scaler), ("logisticregression", lr)])


def fold_head(pipe, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``fit_head`` pipeline as one linear layer: weight (K, F) and bias (K,) float32.

    logits = W (x - mu) / sigma + b  =  (W / sigma) x + (b - W mu / sigma); a class absent from the
    fitted labels gets bias -1e4, so it is never predicted.
    """
    scaler, clf = pipe[0], pipe[-1]
    w = np.zeros((num_classes, len(scaler.scale_)), np.float32)
    b = np.full(num_classes, -1e4, np.float32)
    w[clf.classes_] = clf.coef_ / scaler.scale_
    b[clf.classes_] = clf.intercept_ - (clf.coef_ * (scaler.mean_ / scaler.scale_)).sum(1)
    return w, b


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights that give every class present the same total weight, mean 1
    (scikit-learn's ``class_weight="balanced"``)."""
    count = np.bincount(y)
    return len(y) / (np.count_nonzero(count) * count[y])
