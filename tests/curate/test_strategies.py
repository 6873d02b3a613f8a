"""The review queue's strategies (numpy only, fast): distinct indices outside ``exclude``, the margin
order, class balance, determinism, k larger than the pool; and the label weights."""

from __future__ import annotations

import numpy as np
import pytest

from marsvision.curate.strategies import DEFAULT_STRATEGY, STRATEGIES, choose, margins, sample_weights


def toy(n: int = 300, k: int = 5, f: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, rng.normal(size=(n, f)).astype(np.float32)


def test_default_is_a_strategy():
    assert DEFAULT_STRATEGY in STRATEGIES


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_distinct_indices_outside_exclude(strategy):
    probs, feats = toy()
    exclude = np.arange(0, 300, 3)
    for k in (1, 7, 40):
        idx = choose(strategy, probs, feats, k, np.random.default_rng(1), exclude)
        assert idx.dtype == np.int64 and len(idx) == k == len(set(idx.tolist()))
        assert not np.isin(idx, exclude).any() and idx.min() >= 0 and idx.max() < 300


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_k_larger_than_available(strategy):
    probs, feats = toy(n=30)
    exclude = np.arange(20)
    idx = choose(strategy, probs, feats, 100, np.random.default_rng(0), exclude)
    assert sorted(idx.tolist()) == list(range(20, 30))
    assert len(choose(strategy, probs, feats, 5, None, np.arange(30))) == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_with_seeded_rng(strategy):
    probs, feats = toy()
    a = choose(strategy, probs, feats, 12, np.random.default_rng(7))
    b = choose(strategy, probs, feats, 12, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_margin_picks_smallest_margins_in_order():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    assert np.allclose(margins(probs), [0.85, 0.05, 0.01, 0.3, 0.0])
    assert choose("margin", probs, None, 3).tolist() == [4, 2, 1]
    assert choose("margin", probs, None, 3, exclude=np.array([2])).tolist() == [4, 1, 3]


def test_entropy_picks_flattest():
    probs = np.array([[0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert choose("entropy", probs, None, 2).tolist() == [1, 2]


def test_class_balanced_spreads_over_predicted_classes():
    # class 0's rows all have smaller margins than anyone else's: margin asks only class 0
    rng = np.random.default_rng(0)
    n, k = 400, 4
    pred = np.repeat(np.arange(k), n // k)
    top = np.where(pred == 0, 0.30, 0.6) + rng.uniform(0, 0.05, n)
    probs = np.full((n, k), 0.0)
    probs[np.arange(n), pred] = top
    probs[np.arange(n), (pred + 1) % k] = 0.29
    probs /= probs.sum(1, keepdims=True)
    assert set(probs[choose("margin", probs, None, 8)].argmax(1).tolist()) == {0}
    picked = probs[choose("margin_balanced", probs, None, 8)].argmax(1)
    assert np.bincount(picked, minlength=k).tolist() == [2, 2, 2, 2]
    first = choose("margin_balanced", probs, None, 4)  # one per class, each class's smallest margin
    m = margins(probs)
    for i in first:
        same = pred == pred[i]
        assert m[i] == m[same].min()


def test_kcenter_avoids_duplicates():
    # 10 near-identical uncertain rows and 10 spread-out ones: k-center takes one duplicate at most
    rng = np.random.default_rng(0)
    feats = np.concatenate(
        [np.tile(rng.normal(size=8), (10, 1)) + 1e-3 * rng.normal(size=(10, 8)), rng.normal(size=(10, 8))]
    )
    shift = np.r_[np.zeros(10), np.full(10, 0.01)]  # the duplicates have the smallest margins
    probs = np.c_[0.5 + shift, 0.5 - shift]
    idx = choose("margin_kcenter", probs, feats, 5)
    assert (idx < 10).sum() == 1


def test_unknown_strategy_and_missing_features():
    probs, _ = toy()
    with pytest.raises(ValueError, match="unknown strategy"):
        choose("nope", probs, None, 3)
    with pytest.raises(ValueError, match="needs features"):
        choose("badge", probs, None, 3)


def test_sample_weights():
    y_train = np.array([0, 0, 0, 1])
    w = sample_weights(y_train, np.array([1, 0]), 3.0)
    base = np.array([4 / 6, 4 / 6, 4 / 6, 2.0])  # scikit-learn's "balanced" on y_train
    assert np.allclose(w, np.r_[base, 3 * 2.0, 3 * 4 / 6])
    # a class with curator labels only counts as if they were its training images
    w = sample_weights(y_train, np.array([2, 2]), 1.0)
    assert np.allclose(w, np.r_[6 / 9, 6 / 9, 6 / 9, 2.0, 1.0, 1.0])
    w = sample_weights(y_train, np.array([1]), "union")
    assert np.allclose(w, [5 / 6] * 3 + [5 / 4] * 2)
    assert np.allclose(sample_weights(y_train, np.zeros(0, np.int64), 10.0), base)
