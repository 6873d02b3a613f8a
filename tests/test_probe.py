import json

from marsvision.checkpoint import read_model_file
from marsvision.data import MSLDataset
from marsvision.predict import load_model
from marsvision.probe import ProbeConfig, train_probe


def test_probe_folds_into_an_ordinary_model_file(real_data, tmp_path):
    out = train_probe(ProbeConfig(data=str(real_data), c=1.0, limit=48, img_size=160, out=str(tmp_path / "p" / "best.pt")),
                      progress=False)
    meta = read_model_file(out)
    assert meta["arch"] == "efficientnet_lite0" and "drt side" in meta["class_names"]
    assert meta["input_size"] == 160  # --img-size reaches the model file, so predict decodes at 160
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["chosen_C"] == 1.0 and cfg["n_train"] == 48 and cfg["feature_img_per_s"] > 0
    # The folded head reproduces the fitted classifier, which fits its 48 training images.
    train = MSLDataset(real_data).split("train").subset(48)
    names = MSLDataset(real_data).class_names
    preds = load_model(out).predict(train.paths)
    correct = sum(p.label == names[c] for p, c in zip(preds, train.labels.tolist()))
    assert correct >= 0.9 * len(train)


def test_tuned_probe_is_one_model_file_whose_changes_are_confined_to_the_tuned_stages(real_data, tmp_path):
    import torch

    cfg = dict(data=str(real_data), model="efficientnet_lite0_multilevel", c=1.0, limit=40, img_size=96)
    frozen = train_probe(ProbeConfig(**cfg, out=str(tmp_path / "f" / "best.pt")), progress=False)
    tuned = train_probe(ProbeConfig(**cfg, tune_epochs=2, tune_views=2, tune_seeds=2, out=str(tmp_path / "t" / "best.pt")),
                        progress=False)
    a, b = read_model_file(frozen)["state_dict"], read_model_file(tuned)["state_dict"]
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in a if not torch.equal(a[k], b[k])}
    # Only the last two stages, the head convolution and the classifier move; BN statistics stay.
    assert changed <= {"net.blocks", "net.conv_head", "net.bn2", "classifier.weight", "classifier.bias"}
    assert any(k.startswith("net.blocks.5") and not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("net.blocks.0", "net.blocks.4", "net.conv_stem")))
    assert all(torch.equal(a[k], b[k]) for k in a if "running_" in k)
    cfg_json = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg_json["tune_epochs"] == 2 and cfg_json["tune_seeds"] == 2 and cfg_json["tune_img_per_s"] > 0
    # val is not fitted on, so the tuning is scored there against the probe it started from.
    tv = cfg_json["tune_val"]
    assert 0 <= tv["probe"]["accuracy"] <= 1 and 0 <= tv["tuned"]["macro_f1"] <= 1
    assert tv["accuracy_diff"][0] <= tv["tuned"]["accuracy"] - tv["probe"]["accuracy"] <= tv["accuracy_diff"][1]
    preds = load_model(tuned).predict(MSLDataset(real_data).split("train").subset(40).paths[:4])
    assert all(p.error is None and p.label for p in preds)


def test_probe_tuning_needs_the_multilevel_model(real_data, tmp_path):
    import pytest

    with pytest.raises(ValueError, match="efficientnet_lite0_multilevel"):
        train_probe(ProbeConfig(data=str(real_data), tune_epochs=1, limit=8, out=str(tmp_path / "x.pt")), progress=False)


def test_tail_reproduces_the_multilevel_network_and_interpolation_ends():
    import torch

    from marsvision.models import create_model
    from marsvision.probe_tuning import FROZEN_STAGES, ProbeTail, average, interpolate

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_multilevel", 5, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = model.net.bn1(model.net.conv_stem(x))
        for block in model.net.blocks[:FROZEN_STAGES]:
            h = block(h)  # (2, 112, 4, 4)
        tail = ProbeTail(model, model.classifier.weight.data, model.classifier.bias.data).eval()
        torch.testing.assert_close(tail(h), model(x))
        other = ProbeTail(model, torch.randn(5, 1792), torch.randn(5)).eval()
        for p in other.stage6.parameters():
            p.add_(1.0)
        torch.testing.assert_close(interpolate(tail, other, 0.0)(h), tail(h))
        torch.testing.assert_close(interpolate(tail, other, 1.0)(h), other(h))
        # A soup of two is their midpoint, and a soup of one model is that model, bit for bit.
        torch.testing.assert_close(average([tail, other])(h), interpolate(tail, other, 0.5)(h))
        assert all(torch.equal(a, b) for a, b in zip(average([other]).state_dict().values(), other.state_dict().values()))
        other.fold_into(model)
        torch.testing.assert_close(model(x), other(h))


def test_self_training_adds_only_confident_pseudo_labels():
    import numpy as np

    from marsvision.probe import fit_head, self_train

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    centres = np.eye(3, 8) * 4
    x = centres[y] + rng.normal(size=(90, 8))
    # The unlabelled images come from a later period: the same classes, shifted.
    y_pool = np.repeat([0, 1, 2], 40)
    pool = centres[y_pool] + 1.5 + rng.normal(size=(120, 8))
    none, kept = self_train(x, y, pool, 1.0, threshold=1.01)
    assert not kept.any()
    ref = fit_head(x, y, 1.0)
    assert np.allclose(none.predict_proba(pool), ref.predict_proba(pool))
    adapted, kept = self_train(x, y, pool, 1.0, threshold=0.9)
    assert 0 < kept.sum() < len(pool)
    assert (ref.predict_proba(pool).max(1) >= 0.9).sum() == kept.sum()
    assert (adapted.predict(pool) == y_pool).mean() >= (ref.predict(pool) == y_pool).mean()


def test_probe_adapts_to_a_folder_and_names_its_unreadable_images(real_data, tmp_path, capsys):
    import shutil

    folder = tmp_path / "archive"
    folder.mkdir()
    for p in MSLDataset(real_data).split("test").subset(12).paths:
        shutil.copy(p, folder)
    (folder / "broken.jpg").write_bytes(b"")
    out = train_probe(ProbeConfig(data=str(real_data), c=1.0, limit=40, img_size=96, adapt=str(folder),
                                  adapt_threshold=0.0, out=str(tmp_path / "a" / "best.pt")), progress=False)
    err = capsys.readouterr().err
    assert "broken.jpg" in err and err.count("skipped for adaptation") == 1
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["adapted"] == {"images": 12, "unreadable": 1, "pseudo_labelled": 12}
    assert read_model_file(out)["metrics"]["adapted"] == cfg["adapted"]
    assert all(p.error is None for p in load_model(out).predict(sorted(folder.glob("*.JPG"))))


def test_probe_adaptation_needs_readable_unlabelled_images(real_data, tmp_path):
    import pytest

    from marsvision.data import DataError

    cfg = dict(data=str(real_data), c=1.0, limit=8, img_size=64, out=str(tmp_path / "x.pt"))
    with pytest.raises(DataError, match="nowhere"):
        train_probe(ProbeConfig(**cfg, adapt=str(tmp_path / "nowhere")), progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_text("not an image")
    with pytest.raises(DataError, match="none of its 1 images could be read"):
        train_probe(ProbeConfig(**cfg, adapt=str(tmp_path / "bad")), progress=False)
    with pytest.raises(ValueError, match="already fitted on"):
        train_probe(ProbeConfig(**cfg, train_splits="train+val", adapt="val"), progress=False)


def test_sol_drift_finds_a_planted_drift_and_folds_into_one_linear_layer():
    import numpy as np

    from marsvision.probe import SolDrift, fit_head, fold_head

    rng = np.random.default_rng(0)
    y = np.tile([0, 1, 2], 80)
    sols = np.arange(240)
    drift = np.zeros(6)
    drift[4] = 1.0  # every class moves along feature 4 as the sols go by; the classes differ along 0-2
    x = np.eye(3, 6)[y] * 3 + np.outer(sols / 60, drift) + 0.3 * rng.normal(size=(240, 6))
    d = SolDrift.fit(x, y, sols, dims=1, periods=4)
    assert abs(d.basis[4, 0]) > 0.95
    z = d.transform(x)
    assert np.abs(z @ d.basis).max() < 1e-9  # nothing left along the removed direction
    pipe = fit_head(z, y, 1.0)
    w, b = d.fold(*fold_head(pipe, 4))
    assert np.allclose(x @ w.T + b, np.c_[pipe.decision_function(z), np.full(240, -1e4)], atol=1e-3)


def test_probe_with_sol_drift_removed_is_an_ordinary_model_file(real_data, tmp_path):
    out = train_probe(ProbeConfig(data=str(real_data), c=1.0, limit=40, img_size=96, drift_dims=2,
                                  out=str(tmp_path / "d" / "best.pt")), progress=False)
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    assert cfg["drift_dims"] == 2 and cfg["drift_periods"] == 4
    train = MSLDataset(real_data).split("train").subset(40)
    names = MSLDataset(real_data).class_names
    preds = load_model(out).predict(train.paths)
    assert sum(p.label == names[c] for p, c in zip(preds, train.labels.tolist())) >= 0.9 * len(train)
