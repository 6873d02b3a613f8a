"""Calibration, novelty and the head as plain data: fitted by marsvision.head.trust, applied in numpy."""

import json

import numpy as np
import pytest

from marsvision.head.trust import FORWARD_RATE, fit_calibration, fit_novelty, fit_trust, held_out_predictions
from marsvision.inference.trust import Calibration, Head, Novelty, Trust, decode_array, encode_array, softmax
from marsvision.metrics import expected_calibration_error
from marsvision.model_file import ModelFileError


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-3), ("int8", 1 / 254 + 1e-6)])
def test_arrays_round_trip_as_json(dtype, tol):
    a = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    d = json.loads(json.dumps(encode_array(a, dtype)))
    b = decode_array(d)
    # int8: the error bound is per column (each its own scale)
    assert b.dtype == np.float32 and b.shape == (3, 5) and np.all(np.abs(a - b) <= tol * np.abs(a).max(0))
    with pytest.raises(ValueError, match="dtype"):
        decode_array({**d, "dtype": "int4"})


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
    nov = fit_novelty(None, x, sols, k=3, dims=8, gap=10, rate=0.05)
    inside, _, _ = texture_clusters(np.random.default_rng(1))
    outside = np.abs(rng.normal(size=(50, x.shape[1]))).astype(np.float32)  # no class direction at all
    assert (nov(inside) > 1).mean() <= 0.15 and (nov(outside) > 1).mean() >= 0.9
    assert nov.info["target_flag_rate"] == 0.05 and nov.part("texture").reference.shape == (len(x), 8)
    again = type(nov).from_dict(json.loads(json.dumps(nov.to_dict())))
    np.testing.assert_allclose(again(outside), nov(outside), rtol=1e-5)


def test_feature_neighbours_score_a_planted_far_point_high_and_a_reference_zero():
    rng = np.random.default_rng(0)
    x, _, sols = texture_clusters(rng)
    nov = fit_novelty(x, None, sols, feature_k=1, feature_dims=16, gap=10, rate=0.05)
    part = nov.part("features")
    assert part.k == 1 and part.reference_residual is None and part.scale is not None
    # An image among the references is at distance ~0 (int8 storage); one far from all, far above 1.
    assert np.all(part.raw(x[:5]) < 1e-2 * part.threshold)
    far = x[:1] + 25.0 * BASE[:1, : x.shape[1]] / np.linalg.norm(BASE[0])
    far[:, :8] += 40.0
    assert nov(None, far)[0] > 3 * np.quantile(nov(None, x), 0.95)


def test_novelty_is_the_geometric_mean_of_the_parts_and_each_part_sees_its_own_input():
    rng = np.random.default_rng(0)
    x, _, sols = texture_clusters(rng)
    features = np.abs(x[:, ::-1] + rng.normal(size=x.shape)).astype(np.float32)
    nov = fit_novelty(features, x, sols, k=3, dims=8, feature_dims=16, gap=10, rate=0.05, joint_quantile=0.95)
    assert [p.source for p in nov.parts] == ["features", "texture"]
    f, t = nov.part("features"), nov.part("texture")
    both = np.sqrt(f.raw(features[:9]) / f.threshold * t.raw(x[:9]) / t.threshold) / nov.threshold
    np.testing.assert_allclose(nov(x[:9], features[:9]), both, rtol=1e-5)
    # the joint threshold flags about `rate` of the fitted images (against their own, a lower bound)
    assert (nov(x, features) > 1).mean() <= 0.05
    # stored texture embeddings plus the features give the same novelty as the images' own outputs
    coords, res = nov.embed(x[:9])
    np.testing.assert_allclose(nov.from_embedding(np.c_[coords, res], features[:9]), nov(x[:9], features[:9]), 1e-5)
    alone = f.raw(features[:9]) / f.threshold / nov.threshold  # a part left out: the other alone
    np.testing.assert_allclose(nov.from_embedding(None, features[:9]), alone, 1e-5)
    again = Novelty.from_dict(json.loads(json.dumps(nov.to_dict())))
    np.testing.assert_allclose(again(x[:9], features[:9]), nov(x[:9], features[:9]), rtol=1e-5)
    with pytest.raises(ValueError, match="needs"):
        nov(None, None)


def drifting(seed, first_sol, last_sol, per_sol=3, dims=48):
    """Four kinds of image whose look drifts slowly with the sol (new terrain), three images a sol."""
    rng = np.random.default_rng(seed)
    sols = np.repeat(np.arange(first_sol, last_sol), per_sol)
    drift = np.random.default_rng(8).normal(size=dims)
    x = BASE[rng.integers(0, 4, len(sols)), :dims] + np.outer(sols * 0.002, drift) + rng.normal(size=(len(sols), dims))
    x = np.abs(x).astype(np.float32)
    return x, x[:, ::-1].copy(), sols  # features, texture, sols


def test_forward_threshold_flags_about_its_target_of_a_later_period():
    f, t, sols = drifting(0, 0, 300)
    later_f, later_t, _ = drifting(1, 300, 400)
    settings = {"k": 3, "dims": 8, "feature_dims": 16}
    nov = fit_novelty(f, t, sols, **settings)
    fixed = fit_novelty(f, t, sols, joint_quantile=0.75, **settings)  # the rule before: val-chosen quantile
    forward = nov.info["forward"]
    assert forward["cut_sol"] == np.median(sols) and forward["fitted"] + forward["scored"] < len(sols)
    assert nov.info["joint_quantile"] == forward["quantile"] > 0.75
    flagged = (nov(later_t, later_f) > 1).mean()
    assert flagged <= 2 * FORWARD_RATE and (fixed(later_t, later_f) > 1).mean() > 2 * max(flagged, FORWARD_RATE)
    outside = np.abs(np.random.default_rng(2).normal(size=(50, 48)) * 6).astype(np.float32)
    assert (nov(outside, outside) > 1).mean() >= 0.9
    # images of too few sols for a forward simulation: the 1 - rate quantile, said so
    few = fit_novelty(f[sols < 20], t[sols < 20], sols[sols < 20], rate=0.05, **settings)
    assert few.info["joint_quantile"] == 0.95 and "note" in few.info["forward"]


def test_a_two_part_files_confidence_reads_the_texture_part_alone():
    rng = np.random.default_rng(0)
    x, y, sols = texture_clusters(rng)
    features = np.abs(x + rng.normal(size=x.shape)).astype(np.float32)
    trust = fit_trust(features, x, y, sols, num_classes=5, c=1.0)
    assert [p.source for p in trust.novelty.parts] == ["features", "texture"]
    assert trust.calibration.reads == "texture" and trust.calibration.slope != 0
    logits = rng.normal(size=(7, 5)) * 3
    far = features[:7] * 4  # only the features move: the novelty changes, the confidence does not
    probs, novelty = trust.apply(logits, x[:7], features[:7])
    probs_far, novelty_far = trust.apply(logits, x[:7], far)
    assert np.all(novelty_far > novelty)
    np.testing.assert_array_equal(probs_far, probs)
    texture_part = trust.novelty.part("texture")
    np.testing.assert_allclose(probs, trust.calibration(logits, texture_part.raw(x[:7]) / texture_part.threshold))
    coords, res = trust.novelty.embed(x[:7])  # stored embeddings (the archive's re-score): the same
    np.testing.assert_allclose(trust.apply_embedded(logits, np.c_[coords, res], features[:7])[0], probs, rtol=1e-5)
    d = json.loads(json.dumps(trust.to_dict()))
    assert d["calibration"]["reads"] == "texture" and Trust.from_dict(d).calibration.reads == "texture"
    # a file of the one-part novelty has no "reads": its law reads the novelty, as before
    old = {k: v for k, v in d["calibration"].items() if k != "reads"}
    assert Calibration.from_dict(old).reads == "novelty" and "reads" not in Calibration.from_dict(old).to_dict()
    with pytest.raises(ModelFileError, match="reads"):
        Calibration.from_dict({**old, "reads": "colour"})


def test_corrections_join_the_references_of_both_parts():
    rng = np.random.default_rng(0)
    x, _, sols = texture_clusters(rng)
    nov = fit_novelty(x, x, sols, k=1, dims=8, feature_k=1, feature_dims=16, gap=10, rate=0.05)
    new = np.abs(rng.normal(size=(3, x.shape[1])) * 5).astype(np.float32)
    coords, res = nov.embed(new)
    more = nov.with_references(np.c_[coords, res], new)
    assert nov(new, new).min() > 1 and np.all(more(new, new) <= nov(new, new))
    # in the features part a correction is its own nearest reference (the texture part keeps its residual
    # apart, as for every reference: the distance of an image to itself is √2 × its residual there)
    f = more.part("features")
    assert f.raw(new).max() < 0.05 * f.threshold  # its own int8-rounded coordinates
    assert more.info["corrections_added"] == 3 and len(more.part("features").reference) == len(x) + 3


def test_files_before_the_features_part_still_read():
    rng = np.random.default_rng(0)
    x, _, sols = texture_clusters(rng)
    t = fit_novelty(None, x, sols, k=3, dims=8).part("texture")
    old = {
        "method": "knn-texture",
        "threshold": t.threshold,
        "k": 3,
        "channels": x.shape[1],
        "mean": encode_array(t.mean),
        "basis": encode_array(t.basis),
        "reference": encode_array(t.reference, "float16"),
        "reference_residual": encode_array(t.reference_residual),
        "info": {},
    }
    nov = Novelty.from_dict(json.loads(json.dumps(old)))
    np.testing.assert_allclose(nov(x[:5]), t.raw(x[:5]) / t.threshold, rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        Novelty.from_dict({**old, "method": "patchcore"})


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
