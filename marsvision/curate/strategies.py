"""Review strategies: which unlabelled images a curator should label next, and how to weigh the labels
when the linear head is refitted. Numpy only (the queue over the archive is ``curate.queue``).

``choose(strategy, probs, features, k, rng, exclude)`` returns up to ``k`` row indices in asking order.
``probs`` (N, K) are the current head's class probabilities, ``features`` (N, F) the head's input;
``exclude`` the rows already labelled. The diversity steps run on the ``candidates(k)`` smallest-margin
rows only (a few hundred), so one call stays far under a second at N = 100 000, F = 1792
(``benchmarks/active_learning.py`` measures it). Strategies:

- ``random``: uniform without replacement (the baseline).
- ``margin``: smallest top-2 probability margin first (Scheffer, Decomain & Wrobel 2001).
- ``entropy``: largest predictive entropy first (uncertainty sampling; Lewis & Gale 1994, Settles 2009).
- ``margin_balanced``: among the candidates, round-robin over the predicted classes (each class's
  smallest margin first), so one round is not spent on one confusion (class-balanced selection,
  Aggarwal et al. 2020; Bengar et al. 2022).
- ``margin_kcenter``: among the candidates, greedy k-center (farthest-first) in cosine distance on
  L2-normalised features, starting from the smallest margin (Sener & Savarese 2018; margin + diversity
  as in Brinker 2003).
- ``cluster_margin``: k-means (k clusters, k-means++ start) on the candidates' normalised features, the
  smallest-margin image of each cluster (Cluster-Margin, Citovsky et al. 2021, on a margin shortlist).
- ``badge``: k-means++ seeding on gradient embeddings (p - onehot(argmax p)) ⊗ z of the candidates,
  z the normalised features, started at the largest gradient (BADGE, Ash et al. 2020).

``sample_weights`` weighs curator labels against the original training images.
The defaults below are chosen on val by ``benchmarks/active_learning.py`` (results/active_learning.md).
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..head.fit import balanced_weights

STRATEGIES = ("random", "margin", "entropy", "margin_balanced", "margin_kcenter", "cluster_margin", "badge")
DEFAULT_STRATEGY = "cluster_margin"
DEFAULT_ROUND_SIZE = 10  # images asked per refit
DEFAULT_WEIGHT = 10.0  # a curator label weighs this many class-balanced training images of its class
CANDIDATE_FACTOR, MIN_CANDIDATES, MAX_CANDIDATES = 4, 200, 1000


def candidates(k: int, available: int) -> int:
    """How many smallest-margin rows the diversity strategies choose among: 4k, at least 200, at most
    1000 (and at most the rows available)."""
    return min(available, max(min(CANDIDATE_FACTOR * k, MAX_CANDIDATES), MIN_CANDIDATES, k))


def margins(probs: np.ndarray) -> np.ndarray:
    """(N,) top-1 minus top-2 probability."""
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _smallest(score: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m smallest scores, ascending (ties by index); +inf rows (excluded) never come."""
    part = np.argpartition(score, m - 1)[:m] if m < len(score) else np.arange(len(score))
    return part[np.lexsort((part, score[part]))]


def _kcenter(gram: np.ndarray, k: int) -> np.ndarray:
    """Farthest-first traversal in cosine distance (1 - gram of unit rows), from row 0."""
    picked, dist = [0], 1.0 - gram[0]
    for _ in range(k - 1):
        dist[picked] = -np.inf
        j = int(np.argmax(dist))
        picked.append(j)
        dist = np.minimum(dist, 1.0 - gram[j])
    return np.asarray(picked)


def _kmeanspp(gram: np.ndarray, k: int, rng: np.random.Generator, first: int | None = None) -> np.ndarray:
    """k-means++ seeding from a Gram matrix; first seed ``first``, else the largest norm (as BADGE starts)."""
    sq = np.diag(gram).astype(np.float64)
    picked = [int(np.argmax(sq)) if first is None else first]
    d2 = np.maximum(sq + sq[picked[0]] - 2 * gram[:, picked[0]], 0)
    for _ in range(k - 1):
        d2[picked] = 0
        total = d2.sum()
        j = (
            int(rng.choice(len(d2), p=d2 / total))
            if total > 1e-12
            else int(np.flatnonzero(~np.isin(np.arange(len(d2)), picked))[0])
        )
        picked.append(j)
        d2 = np.minimum(d2, np.maximum(sq + sq[j] - 2 * gram[:, j], 0))
    return np.asarray(picked)


def _cluster_lowest(gram: np.ndarray, k: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """k-means (Lloyd on the Gram matrix, k-means++ start) of rows sorted by margin; the first (smallest-
    margin) row of each cluster, then the remaining rows by margin if clusters came out empty."""
    assign = np.argmax(gram[:, _kmeanspp(gram, k, rng, first=0)], axis=1)
    for _ in range(iters):
        onehot = np.zeros((len(gram), k), gram.dtype)
        onehot[np.arange(len(gram)), assign] = 1.0
        n = np.maximum(onehot.sum(0), 1.0)
        gh = gram @ onehot  # <x_i, sum of cluster c>
        score = gh / n - 0.5 * (onehot * gh).sum(0) / n**2  # <x_i, centre_c> - |centre_c|² / 2
        score[:, onehot.sum(0) == 0] = -np.inf
        new = np.argmax(score, axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
    _, first = np.unique(assign, return_index=True)  # rows are in margin order: first = lowest margin
    first = np.sort(first)
    rest = np.setdiff1d(np.arange(len(gram)), first)
    return np.concatenate([first, rest])[:k]


def choose(
    strategy: str,
    probs: np.ndarray,
    features: np.ndarray | None,
    k: int,
    rng: np.random.Generator | None = None,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``k`` distinct row indices not in ``exclude``, in asking order (see the module docstring).

    ``features`` may be None for random, margin, entropy and margin_balanced. ``rng`` (random, the
    k-means++ steps) defaults to a fixed seed, so equal inputs give equal answers.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    probs = np.asarray(probs, np.float64)
    rng = np.random.default_rng(0) if rng is None else rng
    taken = np.zeros(len(probs), bool)
    if exclude is not None and len(exclude):
        taken[np.asarray(exclude, np.int64)] = True
    k = min(int(k), int((~taken).sum()))
    if k <= 0:
        return np.zeros(0, np.int64)
    if strategy == "random":
        return rng.choice(np.flatnonzero(~taken), k, replace=False).astype(np.int64)
    if strategy == "entropy":
        h = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
        return _smallest(np.where(taken, np.inf, -h), k).astype(np.int64)
    margin = np.where(taken, np.inf, margins(probs))
    if strategy == "margin":
        return _smallest(margin, k).astype(np.int64)
    cand = _smallest(margin, candidates(k, int((~taken).sum())))  # ascending margin
    if strategy == "margin_balanced":
        pred = probs[cand].argmax(1)
        order = np.argsort(pred, kind="stable")  # within a class: still ascending margin
        rank = np.empty(len(cand), np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(pred[order])) + 1]
        rank[order] = np.arange(len(cand)) - np.repeat(starts, np.diff(np.r_[starts, len(cand)]))
        return cand[np.lexsort((np.arange(len(cand)), rank))[:k]].astype(np.int64)  # round-robin
    if features is None:
        raise UsageError(f"strategy {strategy!r} needs features")
    z = _normalised(np.asarray(features)[cand])
    gram = z @ z.T  # cosine similarities of the candidates
    if strategy == "margin_kcenter":
        return cand[_kcenter(gram, k)].astype(np.int64)
    if strategy == "cluster_margin":
        return cand[_cluster_lowest(gram, k, rng)].astype(np.int64)
    p = probs[cand]
    a = p - np.eye(p.shape[1])[p.argmax(1)]  # gradient of the loss w.r.t. the logits, at the prediction
    return cand[_kmeanspp((a @ a.T) * gram, k, rng)].astype(np.int64)  # <a⊗z, a'⊗z'>


def sample_weights(y_train: np.ndarray, y_new: np.ndarray, weight: float | str = DEFAULT_WEIGHT) -> np.ndarray:
    """Per-sample weights for refitting on ``concat(y_train, y_new)`` (class indices).

    A number w: training images class-balanced (scikit-learn's "balanced", mean 1), each curator label
    w × the balanced weight of its class; a class with curator labels only is weighed as if they were
    its training images (it counts like any other class), then × w. ``"union"``: class-balanced over
    training images and curator labels together.
    """
    y_train, y_new = np.asarray(y_train, np.int64), np.asarray(y_new, np.int64)
    y_all = np.concatenate([y_train, y_new])
    n_classes = int(y_all.max()) + 1 if len(y_all) else 0
    if weight == "union":
        return balanced_weights(y_all)
    count = np.bincount(y_train, minlength=n_classes)
    only_new = count == 0
    count[only_new] = np.bincount(y_new, minlength=n_classes)[only_new]
    per_class = count.sum() / (np.count_nonzero(count) * np.maximum(count, 1))
    return np.concatenate([per_class[y_train], float(weight) * per_class[y_new]])
