"""The bundled model gives the known labels: on the shipped example images (always), and on a handful of
official test images (when the full data set is there)."""

import pytest

from marsvision.cli import main
from marsvision.inference.predict import load_model
from marsvision.model_file import bundled_model_path, bundled_source_path

EXAMPLES = {  # examples/images: one test image per class, named by sol and camera
    "0646MH0002610010203802I01_DRCL.JPG": "wheel",
    "0664MH0003250050203868I01_DRCL.JPG": "horizon",
    "0585MH0002970020202762I01_DRCL.JPG": "ground",
    "0728ML0031200000305104E01_DRCL.JPG": "observation tray",
    "0762ML0032760000400107E01_DRCL.JPG": "scoop",
    "0762MR0032740140403831I01_DRCL.JPG": "mastcam cal target",
    "0718ML0030500000304873E01_DRCL.JPG": "chemcam cal target",
    "0805MR0035240000500270E01_DRCL.JPG": "drt side",
    "0840MR0036970000500822I01_DRCL.JPG": "drill",
    "0840MR0037040000500829E01_DRCL.JPG": "portion box",
    "0881MH0000950010302417I01_DRCL.JPG": "rems uv sensor",
    "1048MR0045830000104527I01_DRCL.JPG": "apxs",
}
KNOWN = {
    "0640MH0002640000203781I01_DRCL.JPG": "wheel",
    "0647MH0003250050203806E01_DRCL.JPG": "horizon",
    "0696MH0003630020204109I01_DRCL.JPG": "ground",
    "0895MH0003120000302805C00_DRCL.JPG": "chemin inlet open",
    "0613MH0003900000203357I01_DRCL.JPG": "mastcam",
    "0894MR0038950000501234I01_DRCL.JPG": "apxs",
    "0840MR0036970000500822E01_DRCL.JPG": "drill",
    "0825MH0003730010301624I01_DRCL.JPG": "apxs cal target",
}


def test_bundled_model_labels_the_example_images(example_images):
    model = load_model()
    assert len(model.class_names) == 24 and "sun" not in model.class_names
    preds = model.predict(example_images[0].parent)  # a folder, as the CLI takes it
    assert {p.source.rsplit("/", 1)[-1]: p.label for p in preds} == EXAMPLES
    assert min(p.confidence for p in preds) > 0.8


def test_quick_start_command(example_images, capsys):
    """The README's first command: `marsvision predict examples/images`, CSV when not on a terminal."""
    assert main(["predict", str(example_images[0].parent)]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == "path,label,confidence,unknown,novelty,error" and len(lines) == 1 + len(EXAMPLES)
    assert all(line.split(",")[3] == "0" for line in lines[1:])  # none of them flagged unknown
    assert "12 classified, 0 failed" in out.err


@pytest.mark.parametrize("which", [pytest.param("torch", marks=pytest.mark.slow), "int8"])
def test_bundled_model_known_test_images(real_data, which):
    path = bundled_source_path() if which == "torch" else bundled_model_path()
    if not path.is_file():
        pytest.skip(f"{path.name} is not in this checkout")
    model = load_model(path)
    preds = model.predict([real_data / "calibrated" / name for name in KNOWN])
    assert [p.label for p in preds] == list(KNOWN.values())
    assert min(p.confidence for p in preds) > 0.8
