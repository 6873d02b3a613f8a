import json

import pytest

from marsvision.data.msl import MSLDataset
from marsvision.inference.predict import load_model
from marsvision.nets.checkpoint import read_model_file
from marsvision.training.probe import ProbeConfig, train_probe

pytestmark = pytest.mark.slow  # each loads the ImageNet Lite0 backbone


def test_probe_folds_into_an_ordinary_model_file(mini_data, tmp_path):
    out = train_probe(
        ProbeConfig(data=str(mini_data), c=1.0, img_size=160, out=str(tmp_path), name="p"), progress=False
    )
    run = tmp_path / "probe" / "p"
    assert out == run / "best.pt" and {p.name for p in run.iterdir()} == {"best.pt", "config.json", "results.json"}
    meta = read_model_file(out)
    assert meta["arch"] == "efficientnet_lite0" and "drt side" in meta["class_names"]
    assert meta["input_size"] == 160  # --img-size reaches the model file, so predict decodes at 160
    assert json.loads((run / "config.json").read_text())["c"] == 1.0
    results = json.loads((run / "results.json").read_text())
    assert results["chosen_C"] == 1.0 and results["n_train"] == 11 and results["feature_img_per_s"] > 0
    # The folded head reproduces the fitted classifier, which fits its training images.
    ds = MSLDataset(mini_data)
    train = ds.split("train")
    preds = load_model(out).predict(train.paths)
    assert sum(p.label == ds.class_names[c] for p, c in zip(preds, train.labels.tolist(), strict=True)) >= 0.9 * len(
        train
    )


def test_probe_chooses_c_on_val(mini_data, tmp_path):
    train_probe(ProbeConfig(data=str(mini_data), img_size=64, out=str(tmp_path), name="grid"), progress=False)
    results = json.loads((tmp_path / "probe" / "grid" / "results.json").read_text())
    scores = {float(c): s for c, s in results["val_macro_f1_by_C"].items()}
    assert len(scores) == 6 and results["chosen_C"] == max(scores, key=scores.get)
