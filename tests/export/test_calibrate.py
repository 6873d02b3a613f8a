"""`marsvision calibrate`, and what a calibrated file gives: novelty, unknown, withheld labels, heatmaps."""

import csv
import json

import numpy as np
import onnxruntime as ort
import pytest

from marsvision.cli import main
from marsvision.inference.predict import load_model


def test_calibrated_file_carries_head_trust_and_feature_outputs(tiny_onnx, tiny_calibrated, example_images):
    outputs = [o.name for o in ort.InferenceSession(str(tiny_calibrated)).get_outputs()]
    assert outputs[:2] == ["features", "feature_map_0"] and "texture" in outputs
    clf = load_model(tiny_calibrated)
    assert clf.meta["format"] == "marsvision-onnx/2" and clf.trust.calibration and clf.trust.novelty
    assert clf.trust.novelty.info["fitted_on_splits"] == "train+val+test"
    # The same int8 graph as before calibration: identical logits, now through the numpy head.
    before = load_model(tiny_onnx["int8"])
    batch = np.stack([clf.decode(p) for p in example_images[:4]])
    np.testing.assert_allclose(clf.logits(batch), before.logits(batch), atol=1e-5)
    preds = clf.predict(example_images, top_k=2)
    assert all(p.novelty is not None and isinstance(p.unknown, bool) for p in preds)
    assert all(abs(p.probabilities.sum() - 1) < 1e-5 and p.confidence == p.probabilities.max() for p in preds)


def test_predict_columns_and_min_confidence(tiny_calibrated, example_images, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                str(example_images[0].parent),
                "--model",
                str(tiny_calibrated),
                "--min-confidence",
                "0.99",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label", "confidence", "unknown", "novelty", "withheld", "error"]
    for r in rows:  # a random tiny model: nothing reaches 0.99, every label is withheld and says why
        assert r["label"] == "" and r["withheld"] and float(r["confidence"]) < 0.99 and r["unknown"] in ("0", "1")
    assert "left unlabelled" in capsys.readouterr().err


def test_explain_writes_heatmaps_and_names_bad_inputs(tiny_calibrated, example_images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "why"
    code = main(
        [
            "explain",
            str(example_images[0]),
            str(bad),
            "--model",
            str(tiny_calibrated),
            "--output",
            str(out),
            "--classes",
            "wheel,ground",
        ]
    )
    assert code == 1
    rows = json.loads((out / "explanations.json").read_text())
    assert rows[0]["top1_label"] and set(rows[0]["heatmaps"]) >= {"wheel", "ground", rows[0]["label"]}
    assert rows[1]["error"] and not rows[1]["heatmaps"]
    for name in rows[0]["heatmaps"].values():
        assert (out / name).stat().st_size > 1000
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    assert (
        main(
            [
                "explain",
                str(example_images[0]),
                "--model",
                str(tiny_calibrated),
                "--output",
                str(out),
                "--classes",
                "unicorn",
            ]
        )
        == 2
    )
    assert "unknown class 'unicorn'" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_a_torch_file(tiny_model, mini_data, tmp_path):
    import torch

    out = tmp_path / "cal.pt"
    assert (
        main(
            [
                "calibrate",
                "--model",
                str(tiny_model),
                "--data",
                str(mini_data),
                "--splits",
                "train+val+test",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert "trust" in torch.load(out, weights_only=True)
    preds = load_model(out).predict(sorted((mini_data / "images").glob("*.JPG"))[:3])
    assert all(p.novelty is not None for p in preds)


def test_novelty_only_refit_keeps_every_confidence(tiny_calibrated, mini_data, example_images, tmp_path):
    from dataclasses import replace

    from marsvision.export.trust import write_onnx_trust
    from marsvision.inference.trust import Novelty, Trust

    fitted = load_model(tiny_calibrated).trust
    texture = fitted.novelty.part("texture")
    # a file from before the features part: the texture novelty alone, which the calibration reads
    old = tmp_path / "old.onnx"
    write_onnx_trust(tiny_calibrated, old, Trust(replace(fitted.calibration, reads="novelty"), Novelty([texture])))
    args = ["calibrate", "--data", str(mini_data), "--splits", "train+val+test", "--threads", "1", "--novelty-only"]
    assert main([*args, "--model", str(old), "--output", str(tmp_path / "new.onnx")]) == 0
    before, after = load_model(old), load_model(tmp_path / "new.onnx")
    assert [p.source for p in after.trust.novelty.parts] == ["features", "texture"]
    assert after.trust.novelty.part("texture").to_dict() == texture.to_dict()
    assert after.trust.calibration.reads == "texture"
    a, b = before.predict(example_images), after.predict(example_images)
    assert [(p.label, p.confidence) for p in a] == [(p.label, p.confidence) for p in b]  # to the last bit
    assert [p.novelty for p in a] != [p.novelty for p in b]
    # a law fitted on a two-part novelty cannot be kept with a refitted one
    two = tmp_path / "two.onnx"
    write_onnx_trust(tiny_calibrated, two, Trust(replace(fitted.calibration, reads="novelty"), fitted.novelty))
    assert main([*args, "--model", str(two), "--output", str(tmp_path / "no.onnx")]) != 0
    assert not (tmp_path / "no.onnx").exists()
