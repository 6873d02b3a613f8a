"""`marsvision export`: fp32 and int8 ONNX files that check themselves."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from marsvision.cli import main
from marsvision.inference.predict import load_model

REPO = Path(__file__).resolve().parents[2]
IMG = "images/0077ML0005780000102730I01_DRCL.JPG"
# Modules a base install (onnxruntime, numpy, Pillow, tqdm) does not have.
HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib", "onnx")


def test_export_writes_self_describing_checked_files(tiny_onnx, tiny_model):
    fp32, int8, report = tiny_onnx["fp32"], tiny_onnx["int8"], tiny_onnx["report"]
    assert fp32.is_file() and int8.is_file()
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights
    assert report.passed and report.checks["fp32_vs_torch_max_abs_logit_diff"]["value"] <= 1e-3
    assert {"fp32_scores", "int8_scores", "int8_vs_fp32_val_top1_agreement", "int8_vs_fp32_test_top1_agreement"} <= set(
        report.checks
    )
    written = json.loads((fp32.parent / "export.json").read_text())
    assert written["files"]["int8"]["bytes"] == int8.stat().st_size
    assert json.loads((fp32.parent / "config.json").read_text())["calib_images"] == 8  # the resolved config
    import onnxruntime as ort

    props = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == ["apxs", "drt side", "ground", "horizon", "wheel"]
    assert props["input_size"] == "64" and json.loads(props["mean"]) == [0.5] * 3 and props["arch"] == "small_cnn"
    quant = json.loads(props["marsvision_meta"])["quantization"]
    assert props["precision"] == "int8" and quant["per_channel"] and quant["keep_float"] == ["first:3", "classifier"]
    assert [n.rsplit("/", 1)[-1] for n in quant["float_nodes"]] == ["Conv", "Conv", "Conv", "Gemm"]
    # weight tuning ran before quantising (1 step over the 11 train images) and is recorded in the file
    assert quant["weight_tuning"] == {"epochs": 1, "lr": 2e-5, "images": "all train"}
    assert report.int8_tuning["steps"] == 1 and report.int8_tuning["tuned_convs"] == 9 - 3
    clf = load_model(int8)
    assert clf.runtime == "onnxruntime" and clf.meta["source"]["file"] == tiny_model.name
    # A features graph: the classifier is metadata, and the logits through it are the logits graph's.
    assert clf.meta["format"] == "marsvision-onnx/2" and clf.head.weight.shape == (5, 256)
    assert report.checks["int8_features_graph_max_abs_logit_diff"]["value"] <= 1e-4
    assert not any(name.endswith(".tmp") or name.startswith(".export-") for name in os.listdir(int8.parent))


def test_fp32_onnx_logits_match_torch(tiny_model, tiny_onnx, mini_data):
    import torch

    from marsvision.nets.checkpoint import build_model, read_model_file
    from marsvision.preprocess import decode, normalize

    files = sorted((mini_data / "images").glob("*.JPG"))[:8]
    batch = np.stack([decode(f, 64) for f in files])
    with torch.no_grad():
        ref = build_model(read_model_file(tiny_model))(torch.from_numpy(normalize(batch, [0.5] * 3, [0.5] * 3))).numpy()
    got = load_model(tiny_onnx["fp32"], threads=1).logits(batch)
    assert np.abs(got - ref).max() <= 1e-3


def test_failed_check_is_loud_and_writes_nothing(tiny_model, mini_data, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "export",
            "--model",
            str(tiny_model),
            "--int8",
            "--output",
            str(out),
            "--work",
            str(tmp_path / "w"),
            "--data",
            str(mini_data),
            "--calib-images",
            "10",
            "--check-images",
            "20",
            "--threads",
            "1",
            "--min-agreement",
            "1.01",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "export checks failed" in err and "top-1 agree on" in err and "limit 101.00%" in err
    assert not (out / "tiny.int8.onnx").exists() and not (tmp_path / "w" / "tiny.onnx").exists()
    assert not json.loads((tmp_path / "w" / "export.json").read_text())["passed"]


def test_keep_float_names_resolve_to_graph_nodes(tiny_model, tmp_path):
    """On the logits graph the exporter quantises (the shipped files have their classifier in the metadata)."""
    import onnx

    from marsvision.export.onnx import export_fp32
    from marsvision.export.quantize import resolve_nodes
    from marsvision.nets.checkpoint import build_model, read_model_file

    ckpt = read_model_file(tiny_model)
    path = tmp_path / "logits.onnx"
    export_fp32(build_model(ckpt), {k: v for k, v in ckpt.items() if k != "state_dict"}, path)
    nodes = onnx.load(str(path)).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    head = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1]
    got = resolve_nodes(path, ["stem", "first:2", "last:1", "classifier"])
    assert got == [convs[0], convs[1], convs[-1], head]  # in order, without repeats
    with pytest.raises(ValueError, match="no node 'nope'"):
        resolve_nodes(path, ["nope"])


def test_multilevel_lite0_exports_with_matching_logits_and_conv_order(tmp_path):
    """The bundled architecture traces to ONNX; its Conv nodes match the torch convs one to one, which the
    int8 weight tuning relies on to know which convs are kept in float."""
    import onnx
    import torch

    from marsvision.export.int8_tuning import quantised_convs
    from marsvision.export.onnx import export_fp32
    from marsvision.export.quantize import float_conv_indices
    from marsvision.model_file import model_meta
    from marsvision.nets.models import create_model

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_multilevel", 3, pretrained=False).eval()
    path = tmp_path / "ml.onnx"
    export_fp32(model, model_meta("efficientnet_lite0_multilevel", ["a", "b", "c"], 64, (0.5,) * 3, (0.5,) * 3), path)
    x = torch.randn(2, 3, 64, 64)
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-3)
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    assert len(convs) == len(quantised_convs(model, [])) == 49
    assert float_conv_indices(path, ["first:3", "classifier"]) == [0, 1, 2]
