"""The refit's calibration is chosen on held-out campaigns of the corrections (``refreshed_trust``)."""

import numpy as np

from marsvision.curate.refit import campaign_folds, refreshed_trust
from marsvision.head.trust import fit_novelty
from marsvision.inference.trust import Calibration, Trust, softmax


def test_campaign_folds_keep_each_sol_whole_and_contiguous():
    sols = np.array([900, 12, 12, 40, 41, 300, 300, 301, 650, 655, 12, 900])
    folds = campaign_folds(sols, len(sols))
    for s in np.unique(sols):
        assert len(set(folds[sols == s])) == 1  # a campaign is never split
    order = np.argsort(sols, kind="stable")
    assert (np.diff(folds[order]) >= 0).all() and len(set(folds)) == 5  # contiguous sol ranges
    assert campaign_folds(None, 7).tolist() == [0, 1, 2, 3, 4, 0, 1]


def toy(shift: float, seed: int = 0):
    """3 classes whose labels follow softmax(x W): training images at temperature 1, the corrected images
    (a later period) at temperature ``shift``; the parent's calibration is a fixed temperature of 3."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 8)).astype(np.float32)

    def draw(n, temperature):
        x = rng.normal(size=(n, 8)).astype(np.float32)
        return x, np.array([rng.choice(3, p=p) for p in softmax(x @ w.T / temperature)])

    x_train, y_train = draw(2000, 1.0)
    x_new, y_new = draw(150, shift)
    tex = np.abs(rng.normal(size=(2150, 16))).astype(np.float32)
    nov = fit_novelty(None, tex[:2000], np.arange(2000) * 20, k=3, dims=4, gap=10, rate=0.05)
    parent = Trust(Calibration(np.log(3.0), 0.0), nov)
    coords, residual = nov.embed(tex[2000:])
    emb = np.concatenate([coords, residual[:, None]], axis=1)  # what the archive stores
    return parent, (w, np.zeros(3, np.float32), 1.0), x_train, y_train, x_new, y_new, emb, np.arange(150) * 3


def test_the_held_out_choice_follows_the_truth():
    for shift, right, wrong in ((1.0, "softmax", "parent"), (3.0, "parent", "softmax")):
        parent, fit, xt, yt, xn, yn, emb, sols = toy(shift)
        info = refreshed_trust(parent, fit, xt, yt, xn, yn, emb, 1.0, sols).calibration.info
        scores = info["refit_candidates_held_out"]
        assert info["refit_choice"] == min(scores, key=lambda n: scores[n]["nll"]) != wrong
        assert scores[right]["nll"] < scores[wrong]["nll"]
