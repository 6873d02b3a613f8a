"""Calibration, novelty and the head as plain data: fitted by marsvision.head.trust, applied in numpy."""

import json

import numpy as np
import pytest

from marsvision.head.trust import fit_calibration, fit_novelty, fit_trust, held_out_predictions
from marsvision.inference.trust import Calibration, Head, Trust, decode_array, encode_array, softmax
from marsvision.metrics import expected_calibration_error


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-3)])
def test_arrays_round_trip_as_json(dtype, tol):
    a = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    d = json.loads(json.dumps(encode_array(a, dtype)))
    b = decode_array(d)
    assert b.dtype == np.float32 and b.shape == (3, 5) and np.abs(a - b).max() <= tol * np.abs(a).max()
    with pytest.raises(ValueError, match="dtype"):
        decode_array({**d, "dtype": "int8"})


BASE = np.random.default_rng(42).normal(size=(4, 64)) * 3  # the classes' directions


def texture_clusters(rng, n_per=40, centres=4, dims=64, sols_apart=60):
    """In-distribution textures: a few directions (classes), each photographed in many campaigns."""
    x = np.concatenate([BASE[c, :dims] + rng.normal(size=(n_per, dims)) for c in range(centres)])
    y = np.repeat(np.arange(centres), n_per)
    sols = np.tile(np.arange(n_per) * (sols_apart // 4), centres)  # every class seen across time
    return np.abs(x).astype(np.float32), y, sols


def test_novelty_flags_what_is_unlike_the_training_images():
    rng = np.random.default_rng(0)
    x, _, sols = texture_clusters(rng)
    nov = fit_novelty(x, sols, k=3, dims=8, gap=10, rate=0.05)
    inside, _, _ = texture_clusters(np.random.default_rng(1))
    outside = np.abs(rng.normal(size=(50, x.shape[1]))).astype(np.float32)  # no class direction at all
    assert (nov(inside) > 1).mean() <= 0.15 and (nov(outside) > 1).mean() >= 0.9
    assert nov.info["target_flag_rate"] == 0.05 and nov.reference.shape == (len(x), 8)
    again = type(nov).from_dict(json.loads(json.dumps(nov.to_dict())))
    np.testing.assert_allclose(again(outside), nov(outside), rtol=1e-5)


def test_calibration_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 6)) * 4
    labels = np.array([rng.choice(6, p=p) for p in softmax(logits / 2.0)])  # the truth is T = 2
    cal = fit_calibration(logits, np.ones(len(labels)), labels)
    assert abs(np.exp(cal.log_t) - 2.0) < 0.15
    # Where the far images are the wrong ones, the temperature grows with the novelty.
    novelty = np.where(rng.random(4000) < 0.5, 0.5, 2.0)
    labels = np.array([rng.choice(6, p=p) for p in softmax(logits / np.where(novelty > 1, 4.0, 1.0)[:, None])])
    cal = fit_calibration(logits, novelty, labels)
    assert cal.slope > 0.5 and cal.temperature(np.array([2.0]), 1)[0] > 2 * cal.temperature(np.array([0.5]), 1)[0]


def test_trust_applies_as_plain_data():
    rng = np.random.default_rng(0)
    x, y, sols = texture_clusters(rng)
    features = x + rng.normal(size=x.shape) * 0.1
    trust = fit_trust(features, x, y, sols, num_classes=5, c=1.0)
    d = json.loads(json.dumps(trust.to_dict()))
    again = Trust.from_dict(d)
    logits = rng.normal(size=(7, 5))
    a, b = trust.apply(logits, x[:7]), again.apply(logits, x[:7])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5)
    assert np.allclose(a[0].sum(1), 1)
    # the reported held-out ECEs are those of the held-out predictions, before and after the calibration
    logits, novelty, held_y = held_out_predictions(features, x, y, sols, num_classes=5, c=1.0)
    info = trust.calibration.info
    assert info["held_out_ece_before"] == pytest.approx(expected_calibration_error(softmax(logits), held_y))
    assert info["held_out_ece_after"] == pytest.approx(
        expected_calibration_error(trust.calibration(logits, novelty), held_y)
    )
    assert Trust.from_dict(None).apply(logits, None)[1] is None  # no trust data: softmax, no novelty
    np.testing.assert_allclose(Trust().apply(logits, x[:7])[0], softmax(logits))


def campaigns_with_private_fingerprints(seed=0, days=300, per_sol=4, length=20):
    """Images whose label is random per campaign of ``length`` sols and readable only from that campaign's
    own feature (a one-hot fingerprint): a head that saw a campaign labels it perfectly, one that did not
    guesses (1 in 4). Campaigns of 20 sols straddle the 30-sol windows, so only the gap keeps them apart."""
    rng = np.random.default_rng(seed)
    sols = np.repeat(np.arange(days), per_sol)
    campaign = sols // length
    n_campaigns = campaign.max() + 1
    labels = rng.integers(0, 4, n_campaigns)[campaign]
    features = np.eye(n_campaigns)[campaign] * 5 + rng.normal(size=(len(sols), n_campaigns))
    texture = np.abs(rng.normal(size=(len(sols), 64)))
    return features.astype(np.float32), texture.astype(np.float32), labels, sols


def test_held_out_windows_never_see_their_own_campaign():
    features, texture, labels, sols = campaigns_with_private_fingerprints()
    accuracy = {}
    for gap in (10, 0):
        logits, novelty, y = held_out_predictions(features, texture, labels, sols, num_classes=4, c=1.0, gap=gap)
        assert len(logits) == len(novelty) == len(y) > 0.8 * len(labels)
        accuracy[gap] = float((logits.argmax(1) == y).mean())
    assert accuracy[10] < 0.3  # chance: no held-out image's campaign was fitted
    assert accuracy[0] > accuracy[10] + 0.1  # without the gap, the straddling campaigns leak (the test can fail)


def test_ece_of_known_miscalibration():
    # half the images at confidence 0.9 right 60 % of the time, half at 0.7 right 70 %: ECE = 0.5 · 0.3
    probs = np.array([[0.9, 0.1]] * 10 + [[0.7, 0.3]] * 10)
    labels = np.array([0] * 6 + [1] * 4 + [0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.15)
    assert expected_calibration_error(np.array([[0.25, 0.75]] * 4), np.array([1, 1, 1, 0])) == pytest.approx(0.0)


def test_head_and_class_maps_are_exact_for_pooled_maps():
    rng = np.random.default_rng(0)
    head = Head(rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32))
    maps = rng.normal(size=(2, 5, 4, 4)).astype(np.float32)
    logits = head(maps.mean((2, 3)))
    cams = head.class_maps(maps, np.array([0, 2]))
    np.testing.assert_allclose(cams.mean((1, 2)) + head.bias[[0, 2]], logits[[0, 1], [0, 2]], rtol=1e-5, atol=1e-5)
    assert Head.from_dict(json.loads(json.dumps(head.to_dict()))).weight.tolist() == head.weight.tolist()


def test_calibration_without_slope_is_temperature_scaling():
    logits = np.array([[2.0, 0.0, -1.0]])
    np.testing.assert_allclose(Calibration(np.log(2.0), 0.0)(logits, np.array([5.0])), softmax(logits / 2))
