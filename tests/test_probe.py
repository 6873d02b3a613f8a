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
