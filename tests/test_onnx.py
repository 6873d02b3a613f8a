"""ONNX export, int8 quantisation and the torch-free runtime."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from marsvision.cli import main
from marsvision.model_file import ModelFileError
from marsvision.predict import load_model

REPO = Path(__file__).resolve().parents[1]
IMG = "calibrated/0077ML0005780000102730I01_DRCL.JPG"
# Modules a base install (onnxruntime, numpy, Pillow, tqdm) does not have.
HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib", "onnx")


def test_export_writes_self_describing_checked_files(tiny_onnx, tiny_model):
    fp32, int8, report = tiny_onnx["fp32"], tiny_onnx["int8"], tiny_onnx["report"]
    assert fp32.is_file() and int8.is_file()
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights
    assert report["passed"] and report["checks"]["fp32_vs_torch_max_abs_logit_diff"]["value"] <= 1e-3
    assert {"fp32_scores", "int8_scores", "int8_vs_fp32_val_top1_agreement",
            "int8_vs_fp32_test_top1_agreement"} <= set(report["checks"])
    written = json.loads((fp32.parent / "export.json").read_text())
    assert written["files"]["int8"]["bytes"] == int8.stat().st_size
    import onnxruntime as ort

    props = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == ["apxs", "drt side", "ground", "horizon", "wheel"]
    assert props["input_size"] == "64" and json.loads(props["mean"]) == [0.5] * 3 and props["arch"] == "small_cnn"
    quant = json.loads(props["marsvision_meta"])["quantization"]
    assert props["precision"] == "int8" and quant["per_channel"] and quant["keep_float"] == ["first:3", "classifier"]
    assert [n.rsplit("/", 1)[-1] for n in quant["float_nodes"]] == ["Conv", "Conv", "Conv", "Gemm"]
    # weight tuning ran before quantising (1 step over 24 train images) and is recorded in the file
    assert quant["weight_tuning"] == {"epochs": 1, "lr": 2e-5, "images": 24}
    assert report["int8_tuning"]["steps"] == 1 and report["int8_tuning"]["tuned_convs"] == 9 - 3
    clf = load_model(int8)
    assert clf.runtime == "onnxruntime" and clf.meta["source"]["file"] == tiny_model.name
    assert not any(name.endswith(".tmp") or name.startswith(".export-") for name in os.listdir(int8.parent))


def test_preprocessing_identical_across_torch_and_onnx(tiny_model, tiny_onnx, real_data):
    """The exact array each runtime feeds its model is the same, for paths, bytes and arrays."""
    from PIL import Image

    path = real_data / IMG
    inputs = [path, path.read_bytes(), np.asarray(Image.open(path).convert("RGB"))]
    torch_clf, onnx_clf = load_model(tiny_model), load_model(tiny_onnx["fp32"])
    seen_torch, seen_onnx = [], []
    torch_clf.model.register_forward_pre_hook(lambda m, a: seen_torch.append(a[0].float().numpy().copy()))

    class Recorder:
        def __init__(self, session):
            self.session = session

        def run(self, names, feed):
            seen_onnx.append(next(iter(feed.values())).copy())
            return self.session.run(names, feed)

    onnx_clf.session = Recorder(onnx_clf.session)
    a, b = torch_clf.predict(inputs), onnx_clf.predict(inputs)
    assert np.array_equal(seen_torch[0], seen_onnx[0]) and seen_onnx[0].shape == (3, 3, 64, 64)
    assert np.array_equal(seen_onnx[0][0], seen_onnx[0][1]) and np.array_equal(seen_onnx[0][0], seen_onnx[0][2])
    assert [p.label for p in a] == [p.label for p in b]


def test_fp32_onnx_logits_match_torch(tiny_model, tiny_onnx, real_data):
    import torch

    from marsvision.checkpoint import build_model, read_model_file
    from marsvision.transforms import decode, normalize

    files = sorted((real_data / "calibrated").glob("*.JPG"))[:8]
    batch = np.stack([decode(f, 64) for f in files])
    with torch.no_grad():
        ref = build_model(read_model_file(tiny_model))(torch.from_numpy(normalize(batch, [0.5] * 3, [0.5] * 3))).numpy()
    got = load_model(tiny_onnx["fp32"], threads=1).logits(batch)
    assert np.abs(got - ref).max() <= 1e-3


def test_threads_caps_the_session(tiny_onnx):
    clf = load_model(tiny_onnx["int8"], threads=1)
    opts = clf.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1 and clf.threads == 1 and clf.lanes == 1
    two = load_model(tiny_onnx["int8"], threads=2)  # two single-threaded runs in flight
    assert two.lanes == 2 and two.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("content,expect", [
    (b"\x00garbage, not a protobuf\xff" * 20, "not a readable ONNX model"),
    (b"", "not a readable ONNX model"),
    ("foreign", "without marsvision metadata"),
])
def test_corrupt_or_foreign_onnx_is_one_line_error(tmp_path, capsys, tiny_onnx, content, expect):
    bad = tmp_path / "model.onnx"
    if content == "foreign":  # a valid ONNX model, but not one of ours (metadata stripped)
        import onnx

        proto = onnx.load(str(tiny_onnx["fp32"]))
        del proto.metadata_props[:]
        onnx.save(proto, str(bad))
    else:
        bad.write_bytes(content)
    with pytest.raises(ModelFileError, match=expect):
        load_model(bad)
    assert main(["predict", str(tmp_path), "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marsvision: error: ") and expect in err and err.count("\n") == 1 and "Traceback" not in err


def test_failed_check_is_loud_and_writes_nothing(tiny_model, real_data, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--model", str(tiny_model), "--int8", "--output", str(out), "--work", str(tmp_path / "w"),
                 "--data", str(real_data), "--calib-images", "10", "--check-images", "20", "--threads", "1",
                 "--min-agreement", "1.01"])
    assert code == 2
    err = capsys.readouterr().err
    assert "export checks failed" in err and "top-1 agree on" in err and "limit 101.00%" in err
    assert not (out / "tiny.int8.onnx").exists() and not (tmp_path / "w" / "tiny.onnx").exists()
    assert not json.loads((tmp_path / "w" / "export.json").read_text())["passed"]


def test_missing_bundled_model_names_the_export_command(monkeypatch, tmp_path):
    import marsvision.predict as predict

    monkeypatch.setattr(predict, "bundled_model_path", lambda: tmp_path / "marsvision-lite0.int8.onnx")
    with pytest.raises(ModelFileError, match="marsvision export --model"):
        load_model()


def test_bundled_model_is_small_int8_onnx():
    from marsvision.predict import bundled_model_path

    path = bundled_model_path()
    if not path.is_file():
        pytest.skip("bundled model not exported yet")
    assert path.stat().st_size <= 5 * 2**20
    clf = load_model()
    assert clf.runtime == "onnxruntime" and clf.meta["precision"] == "int8" and len(clf.class_names) >= 20


def _run(code: str, env_extra: dict | None = None, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [(env_extra or {}).get("PYTHONPATH"), str(REPO)]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_import_and_onnx_predict_never_import_torch(tiny_onnx, real_data):
    r = _run(textwrap.dedent(f"""
        import sys, marsvision
        clf = marsvision.load_model({str(tiny_onnx["int8"])!r}, threads=1)
        assert clf.predict({str(real_data / IMG)!r})[0].ok
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_predict_and_evaluate_where_torch_cannot_be_imported(tiny_onnx, real_data, tmp_path):
    """A base install: importing torch (or sklearn, matplotlib, onnx, timm) fails outright."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        sys.meta_path.insert(0, _Block())
    """))
    cli = "import sys; from marsvision.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    def cli_run(*args):
        return subprocess.run([sys.executable, "-c", cli, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    blocked = cli_run("train", "--help")
    assert blocked.returncode == 2 and "pip install 'marsvision[train]'" in blocked.stderr  # the blocker works
    out = tmp_path / "p.csv"
    files = sorted((real_data / "calibrated").glob("*.JPG"))[:5]
    r = cli_run("predict", *map(str, files), "--model", str(tiny_onnx["int8"]), "--output", str(out), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 6 and "5 classified, 0 failed" in r.stderr
    r = cli_run("evaluate", "--model", str(tiny_onnx["int8"]), "--split", "val", "--limit", "20",
                "--data", str(real_data), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    assert "macro-F1" in r.stdout and "matplotlib is not installed" in r.stderr
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["runtime"] == "onnxruntime"
    r = cli_run("predict", str(files[0]), "--model", str(REPO / "tests" / "conftest.py"))
    assert r.returncode == 2 and "not a readable ONNX model" in r.stderr


@pytest.mark.parametrize("mean,std", [((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_normalize_lookup_is_bit_identical_to_the_formula(mean, std):
    from marsvision.transforms import normalize

    batch = np.random.default_rng(0).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    x = batch.astype(np.float32) * np.float32(1.0 / 255.0)
    expected = ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(0, 3, 1, 2)
    got = normalize(batch, mean, std)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"] and np.array_equal(got, expected)


def test_threads_pins_the_cli_only_while_it_runs(tiny_onnx, real_data, tmp_path):
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and 2 CPUs")
    from marsvision.predict import limit_cpus

    before = os.sched_getaffinity(0)
    with limit_cpus(1):
        assert len(os.sched_getaffinity(0)) == 1
    assert os.sched_getaffinity(0) == before
    files = sorted((real_data / "calibrated").glob("*.JPG"))[:2]
    assert main(["predict", *map(str, files), "--model", str(tiny_onnx["int8"]), "--threads", "1",
                 "--output", str(tmp_path / "p.csv")]) == 0
    assert os.sched_getaffinity(0) == before


def test_keep_float_names_resolve_to_graph_nodes(tiny_onnx):
    import onnx

    from marsvision.onnx_quantize import resolve_nodes

    nodes = onnx.load(str(tiny_onnx["fp32"])).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    head = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1]
    got = resolve_nodes(tiny_onnx["fp32"], ["stem", "first:2", "last:1", "classifier"])
    assert got == [convs[0], convs[1], convs[-1], head]  # in order, without repeats
    with pytest.raises(ValueError, match="no node 'nope'"):
        resolve_nodes(tiny_onnx["fp32"], ["nope"])


def test_multilevel_lite0_exports_with_matching_logits_and_conv_order(tmp_path):
    """The bundled architecture traces to ONNX; its Conv nodes match the torch convs one to one, which the
    int8 weight tuning relies on to know which convs are kept in float."""
    import onnx
    import torch

    from marsvision.checkpoint import model_meta
    from marsvision.int8_tuning import quantised_convs
    from marsvision.models import create_model
    from marsvision.onnx_export import export_fp32
    from marsvision.onnx_quantize import float_conv_indices

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
