import numpy as np
import pytest
import torch

from marsvision.data import decode_many
from marsvision.predict import load_model
from marsvision.transforms import EvalPreset, ImageError, TrainPreset, decode, load_image, to_model_input

IMG = "calibrated/0077ML0005780000102730I01_DRCL.JPG"
HALF = (0.5, 0.5, 0.5)


def test_golden_preprocessing(real_data):
    a = decode(real_data / IMG, 224)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_allclose(a.reshape(-1, 3).mean(0), [117.155, 88.563, 68.954], atol=0.5)
    assert a[0, 0].tolist() == [0, 0, 0]
    np.testing.assert_allclose(a[100, 150], [119, 83, 57], atol=2)
    x = to_model_input(real_data / IMG, 224, HALF, HALF)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 100, 150], [119 / 127.5 - 1, 83 / 127.5 - 1, 57 / 127.5 - 1], atol=0.02)


def test_identical_across_code_paths(real_data, tiny_model):
    """Training/eval (decode_many + EvalPreset), predict (Classifier) and the numpy path agree exactly."""
    path = real_data / IMG
    reference = to_model_input(path, 64, HALF, HALF)
    batch = torch.from_numpy(decode_many([path], 64))
    via_train = EvalPreset(HALF, HALF)(batch)[0].numpy()
    clf = load_model(tiny_model)
    from marsvision.transforms import normalize

    via_predict = normalize(clf.decode(str(path))[None], clf.mean, clf.std)[0]
    np.testing.assert_allclose(via_train, reference, atol=1e-6)
    np.testing.assert_array_equal(via_predict, reference)
    # The same image given as bytes, a PIL image or a uint8 array decodes identically.
    assert np.array_equal(decode(path.read_bytes(), 64), decode(path, 64))
    assert np.array_equal(decode(load_image(path, 64), 64), decode(path, 64))


def test_train_preset_is_batched_and_seeded(real_data):
    x = torch.from_numpy(decode_many(sorted((real_data / "calibrated").glob("*.JPG"))[:8], 64))
    preset = TrainPreset(HALF, HALF)
    a = preset(x, generator=torch.Generator().manual_seed(1))
    b = preset(x, generator=torch.Generator().manual_seed(1))
    c = preset(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0001 and a.max() <= 1.0001


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"hello", "not an image"),
                                            (b"\xff\xd8\xff\xe0" + b"\0" * 20, "corrupt|truncated|cannot decode|not an image")])
def test_bad_bytes_give_image_error(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode(p, 32)
