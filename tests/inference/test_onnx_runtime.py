"""The torch-free ONNX runtime: preprocessing shared with torch, threads, bad files, a base install."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from marsvision.cli import main
from marsvision.inference.predict import load_model
from marsvision.model_file import ModelFileError

REPO = Path(__file__).resolve().parents[2]
IMG = "images/0077ML0005780000102730I01_DRCL.JPG"
# Modules a base install (onnxruntime, numpy, Pillow, tqdm) does not have.
HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "matplotlib", "onnx")


def test_preprocessing_identical_across_torch_and_onnx(tiny_model, tiny_onnx, mini_data):
    """The exact array each runtime feeds its model is the same, for paths, bytes and arrays."""
    from PIL import Image

    path = mini_data / IMG
    inputs = [path, path.read_bytes(), np.asarray(Image.open(path).convert("RGB"))]
    torch_clf, onnx_clf = load_model(tiny_model), load_model(tiny_onnx["fp32"])
    seen_torch, seen_onnx = [], []
    first_conv = next(m for m in torch_clf.model.modules() if type(m).__name__ == "Conv2d")
    first_conv.register_forward_pre_hook(lambda m, a: seen_torch.append(a[0].float().numpy().copy()))

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


def test_threads_caps_the_session(tiny_onnx):
    clf = load_model(tiny_onnx["int8"], threads=1)
    opts = clf.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1 and clf.threads == 1 and clf.lanes == 1
    two = load_model(tiny_onnx["int8"], threads=2)  # two single-threaded runs in flight
    assert two.lanes == 2 and two.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize(
    "content,expect",
    [
        (b"\x00garbage, not a protobuf\xff" * 20, "not a readable ONNX model"),
        (b"", "not a readable ONNX model"),
        ("foreign", "without marsvision metadata"),
    ],
)
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


def test_missing_bundled_model_names_the_export_command(monkeypatch, tmp_path):
    import marsvision.inference.predict as predict

    monkeypatch.setattr(predict, "bundled_model_path", lambda: tmp_path / "marsvision-lite0.int8.onnx")
    with pytest.raises(ModelFileError, match="marsvision export --model"):
        load_model()


def test_bundled_model_is_small_int8_onnx():
    from marsvision.model_file import bundled_model_path

    path = bundled_model_path()
    if not path.is_file():
        pytest.skip("bundled model not exported yet")
    assert path.stat().st_size <= 8_000_000  # issue 22: ≤ 8 MB with the novelty's references (7.22 MB)
    clf = load_model()
    assert clf.runtime == "onnxruntime" and clf.meta["precision"] == "int8" and len(clf.class_names) >= 20


def _run(code: str, env_extra: dict | None = None, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [(env_extra or {}).get("PYTHONPATH"), str(REPO)]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_import_and_onnx_predict_never_import_torch(tiny_onnx, mini_data):
    r = _run(
        textwrap.dedent(f"""
        import sys, marsvision
        clf = marsvision.load_model({str(tiny_onnx["int8"])!r}, threads=1)
        assert clf.predict({str(mini_data / IMG)!r})[0].ok
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_predict_and_evaluate_where_torch_cannot_be_imported(tiny_onnx, mini_data, tmp_path):
    """A base install: importing torch (or sklearn, matplotlib, onnx, timm) fails outright."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        sys.meta_path.insert(0, _Block())
    """)
    )
    cli = "import sys; from marsvision.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    def cli_run(*args):
        return subprocess.run(
            [sys.executable, "-c", cli, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
        )

    blocked = cli_run("train", "--help")
    assert blocked.returncode == 2 and "pip install 'marsvision[train]'" in blocked.stderr  # the blocker works
    out = tmp_path / "p.csv"
    files = sorted((mini_data / "images").glob("*.JPG"))[:5]
    r = cli_run("predict", *map(str, files), "--model", str(tiny_onnx["int8"]), "--output", str(out), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 6 and "5 classified, 0 failed" in r.stderr
    r = cli_run(
        "evaluate",
        "--model",
        str(tiny_onnx["int8"]),
        "--split",
        "val",
        "--limit",
        "20",
        "--data",
        str(mini_data),
        "--out",
        str(tmp_path / "rep"),
    )
    assert r.returncode == 0, r.stderr
    assert "macro-F1" in r.stdout and "matplotlib is not installed" in r.stderr
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["runtime"] == "onnxruntime"
    r = cli_run("predict", str(files[0]), "--model", str(REPO / "tests" / "conftest.py"))
    assert r.returncode == 2 and "not a readable ONNX model" in r.stderr


def test_threads_pins_the_cli_only_while_it_runs(tiny_onnx, mini_data, tmp_path):
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and 2 CPUs")
    from marsvision.inference.predict import limit_cpus

    before = os.sched_getaffinity(0)
    with limit_cpus(1):
        assert len(os.sched_getaffinity(0)) == 1
    assert os.sched_getaffinity(0) == before
    files = sorted((mini_data / "images").glob("*.JPG"))[:2]
    assert (
        main(
            [
                "predict",
                *map(str, files),
                "--model",
                str(tiny_onnx["int8"]),
                "--threads",
                "1",
                "--output",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    assert os.sched_getaffinity(0) == before
