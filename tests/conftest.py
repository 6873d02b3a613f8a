"""Shared fixtures: the committed mini data set and example images, the full data set when it is there,
tiny model files, bad-input folders.

Most tests run on ``mini_data`` (23 real MSL images in the official layout, tests/assets/mini-msl) and
the example images, so they run anywhere. ``real_data`` is the full data set, found through
``$MARSVISION_DATA`` or ``../shared/data/msl-images``; tests that need it skip, saying why, without it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["servers"]  # a real PostgreSQL server and a real Chromium, for the archive's tests

REPO = Path(__file__).resolve().parents[1]
MINI_DATA = REPO / "tests" / "assets" / "mini-msl"
EXAMPLES = REPO / "examples" / "images"
SHARED_DATA = REPO.parent / "shared" / "data" / "msl-images"


def full_data_dir() -> Path:
    return Path(os.environ["MARSVISION_DATA"]) if os.environ.get("MARSVISION_DATA") else SHARED_DATA


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = full_data_dir()
    if not (root / "msl_synset_words-indexed.txt").is_file():
        pytest.skip(f"the full MSL data set is not at {root} (set MARSVISION_DATA or run `marsvision data download`)")
    return root


@pytest.fixture(scope="session")
def mini_data() -> Path:
    return MINI_DATA


@pytest.fixture(scope="session")
def example_images() -> list[Path]:
    return sorted(EXAMPLES.glob("*.JPG"))


@pytest.fixture(scope="session")
def predictions(example_images):
    """Four example images and a missing file, classified by the bundled model with top-3 (the Parquet
    row tests of inference/ and scale/)."""
    import marsvision

    with marsvision.load_model() as model:
        return model.predict([*example_images[:4], REPO / "missing.jpg"], top_k=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised small CNN saved as a real marsvision model file (64 px input)."""
    import torch

    from marsvision.model_file import model_meta
    from marsvision.nets.checkpoint import save_model
    from marsvision.nets.models import create_model

    torch.manual_seed(0)
    names = ["apxs", "drt side", "ground", "horizon", "wheel"]
    model = create_model("small_cnn", len(names), pretrained=False)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_model(path, model, model_meta("small_cnn", names, 64, (0.5,) * 3, (0.5,) * 3))
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb) with no real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture
def bad_input_folder(tmp_path: Path, example_images) -> tuple[Path, set[str], set[str]]:
    """A folder of good images in odd modes/names and broken files. Returns (folder, good, bad) names."""
    folder = tmp_path / "mixed inputs"
    (folder / "sub dir").mkdir(parents=True)
    src = example_images[0]
    rgb = Image.open(src).convert("RGB")
    good = {
        "plain.JPG": lambda p: p.write_bytes(src.read_bytes()),
        "gray.png": lambda p: rgb.convert("L").save(p),
        "rgba.png": lambda p: rgb.convert("RGBA").save(p),
        "sixteen.png": lambda p: Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(p),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "palette.gif": lambda p: rgb.convert("P").save(p),
        "sub dir/cratère ñ été.jpg": lambda p: rgb.save(p, "JPEG"),
    }
    data = src.read_bytes()
    bad = {
        "truncated.jpg": lambda p: p.write_bytes(data[: len(data) // 3]),
        "empty.jpg": lambda p: p.write_bytes(b""),
        "notes.jpg": lambda p: p.write_text("this is not an image\n"),
        "bomb.png": lambda p: p.write_bytes(png_header_only(40000, 40000)),
    }
    for name, make in {**good, **bad}.items():
        make(folder / name)
    (folder / "README.txt").write_text("ignored: not an image suffix")
    return folder, set(good), set(bad)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> dict:
    """``tiny_model`` exported by `marsvision export --int8` on the mini data set.

    Returns {"fp32": path, "int8": path, "report": export.json dict}.
    """
    from marsvision.export.onnx import ExportConfig, run_export

    root = tmp_path_factory.mktemp("onnx")
    report = run_export(
        ExportConfig(
            model=str(tiny_model),
            output=str(root / "out"),
            work=str(root / "work"),
            int8=True,
            data=str(MINI_DATA),
            calib_images=8,
            tune_epochs=1,
            trust=False,
            min_agreement=0.0,
            max_accuracy_drop=1.0,
            threads=1,
        )
    )
    return {"fp32": root / "work" / "tiny.onnx", "int8": root / "out" / "tiny.int8.onnx", "report": report}


@pytest.fixture(scope="session")
def tiny_calibrated(tiny_onnx, tmp_path_factory) -> Path:
    """``tiny_onnx``'s int8 file with calibration and novelty data fitted on all 23 mini images."""
    from marsvision.export.trust import CalibrateConfig, run_calibrate

    out = tmp_path_factory.mktemp("calibrated") / "tiny.int8.onnx"
    return run_calibrate(
        CalibrateConfig(
            model=str(tiny_onnx["int8"]), data=str(MINI_DATA), splits="train+val+test", output=str(out), threads=1
        ),
        progress=False,
    )


@pytest.fixture(autouse=True)
def _vector_index_folder(tmp_path, monkeypatch):
    """Similar-images index files go to the test's own folder, never the working directory (where they go
    by default for a PostgreSQL archive without pgvector)."""
    monkeypatch.setenv("MARSVISION_VECTOR_INDEX", str(tmp_path / "vector-index"))
