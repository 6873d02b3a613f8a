import csv
import json

import numpy as np
import pytest
from PIL import Image

from marsvision.cli import main
from marsvision.inference.predict import load_model


def test_api_predict_accepts_paths_arrays_and_pil(tiny_model, mini_data):
    clf = load_model(tiny_model)
    path = sorted((mini_data / "images").glob("*.JPG"))[0]
    arr = np.asarray(Image.open(path).convert("RGB"))
    preds = clf.predict([path, arr, Image.open(path)], top_k=3)
    assert [p.ok for p in preds] == [True, True, True]
    assert preds[0].label == preds[1].label == preds[2].label
    assert preds[0].label in clf.class_names and len(preds[0].top_k) == 3
    assert sum(c for _, c in preds[0].top_k) <= 1.0 + 1e-6
    assert clf.predict(path)[0].label == preds[0].label  # a single input also works


def test_api_folders_full_probabilities_and_rows(tiny_onnx, example_images, tmp_path):
    import marsvision

    model = marsvision.load_model(tiny_onnx["int8"])
    folder = example_images[0].parent
    preds = model.predict([folder, tmp_path / "missing.jpg", example_images[0]], top_k=2)
    assert [p.source for p in preds] == [
        *map(str, example_images),
        str(tmp_path / "missing.jpg"),
        str(example_images[0]),
    ]
    first, missing = preds[0], preds[len(example_images)]
    assert missing.error == "file not found" and missing.probabilities is None
    assert first.probabilities.shape == (len(model.class_names),) and abs(first.probabilities.sum() - 1) < 1e-5
    assert first.probabilities[model.class_names.index(first.label)] == first.confidence
    row = first.to_dict()
    assert (
        list(row)
        == [
            "path",
            "label",
            "confidence",
            "unknown",
            "novelty",
            "top1_label",
            "top1_confidence",
            "top2_label",
            "top2_confidence",
            "error",
        ]
        and row["error"] is None
    )
    assert row["unknown"] is None and row["novelty"] is None  # this file carries no novelty data
    assert json.loads(json.dumps(missing.to_dict()))["label"] is None
    marsvision.write_predictions(preds, tmp_path / "p.json", top_k=2)
    marsvision.write_predictions(preds, tmp_path / "p.csv", top_k=2)
    written = json.loads((tmp_path / "p.json").read_text())
    assert (
        written[0]["confidence"] == round(first.confidence, 5)
        and written[len(example_images)]["error"] == "file not found"
    )
    assert list(csv.DictReader((tmp_path / "p.csv").open())) == [{k: str(v) for k, v in r.items()} for r in written]


def test_classifier_makes_its_thread_pools_once(tiny_onnx, example_images):
    model = load_model(tiny_onnx["int8"], threads=2)
    model.predict(example_images[:2])
    pools = model._pools
    model.predict(example_images[2:4])
    assert model._pools is pools and pools is not None
    with model:
        model.predict(example_images[:1])
    assert model._pools is None  # closed; a later call makes new ones
    assert model.predict(example_images[0])[0].ok


def test_ensemble_averages_member_probabilities(tiny_model, tiny_onnx, mini_data, tmp_path):
    from marsvision.model_file import ModelFileError

    path = sorted((mini_data / "images").glob("*.JPG"))[0]
    members = [load_model(tiny_model), load_model(tiny_onnx["fp32"])]
    ens = load_model([tiny_model, tiny_onnx["fp32"]])
    assert ens.runtime == "ensemble" and ens.class_names == members[0].class_names
    want = np.mean([[dict(m.predict(path, top_k=5)[0].top_k)[c] for c in ens.class_names] for m in members], axis=0)
    got = dict(ens.predict(path, top_k=5)[0].top_k)
    np.testing.assert_allclose([got[c] for c in ens.class_names], want, atol=1e-5)
    # Members with other classes cannot vote together.
    import torch

    ckpt = torch.load(tiny_model, weights_only=True)
    ckpt["class_names"] = ckpt["class_names"][::-1]
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="differ"):
        load_model([tiny_model, tmp_path / "other.pt"])


@pytest.fixture(params=["torch", "fp32", "int8"])
def any_model(request, tiny_model):
    """The tiny model as each file kind predict accepts: torch .pt, fp32 ONNX, int8 ONNX."""
    return tiny_model if request.param == "torch" else request.getfixturevalue("tiny_onnx")[request.param]


def test_cli_bad_input_folder(any_model, bad_input_folder, tmp_path, capsys):
    """The same broken and odd inputs behave the same on every runtime."""
    folder, good, bad = bad_input_folder
    out = tmp_path / "out.csv"
    code = main(["predict", str(folder), "--model", str(any_model), "--output", str(out), "--top-k", "2"])
    assert code == 1  # some inputs failed
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    by_name = {r["path"].split("mixed inputs/")[1]: r for r in rows}
    assert set(by_name) == good | bad  # README.txt skipped, nothing lost
    for name in good:
        assert by_name[name]["label"] and not by_name[name]["error"], name
        assert by_name[name]["top2_label"]
    reasons = {name: by_name[name]["error"] for name in bad}
    assert "truncated" in reasons["truncated.jpg"]
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image" in reasons["notes.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name in bad:
        assert f"{name}: " in err
    assert f"{len(good)} classified, {len(bad)} failed" in err


def test_cli_predict_json_and_exit_zero(any_model, mini_data, tmp_path):
    files = sorted((mini_data / "images").glob("*.JPG"))[:3]
    out = tmp_path / "p.json"
    assert main(["predict", *map(str, files), "--model", str(any_model), "--output", str(out), "--threads", "1"]) == 0
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == list(map(str, files))
    assert all(r["label"] and 0 < r["confidence"] <= 1 for r in rows)


def test_cli_predict_missing_path_and_bad_model(tiny_model, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.jpg"), "--model", str(tiny_model)]) == 1
    assert "nope.jpg: file not found" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"definitely not a model")
    assert main(["predict", str(tmp_path), "--model", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "foreign.pt: not a readable marsvision model file" in err and "Traceback" not in err
