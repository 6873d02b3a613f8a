"""The bundled model gives the known labels on a handful of official test images (when the full data set is
there); the example images are tests/test_examples.py's."""

import pytest

from marsvision.inference.predict import load_model
from marsvision.model_file import bundled_model_path, bundled_source_path

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


@pytest.mark.parametrize("which", [pytest.param("torch", marks=pytest.mark.slow), "int8"])
def test_bundled_model_known_test_images(real_data, which):
    path = bundled_source_path() if which == "torch" else bundled_model_path()
    if not path.is_file():
        pytest.skip(f"{path.name} is not in this checkout")
    model = load_model(path)
    preds = model.predict([real_data / "calibrated" / name for name in KNOWN])
    assert [p.label for p in preds] == list(KNOWN.values())
    assert min(p.confidence for p in preds) > 0.8
