import numpy as np
import pytest
import torch

from marsvision.data.msl import decode_many
from marsvision.inference.predict import load_model
from marsvision.preprocess import ImageError, decode, load_image, to_model_input
from marsvision.training.augment import EvalPreset, TrainPreset

IMG = "images/0077ML0005780000102730I01_DRCL.JPG"
HALF = (0.5, 0.5, 0.5)


def test_golden_preprocessing(mini_data):
    a = decode(mini_data / IMG, 224)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_allclose(a.reshape(-1, 3).mean(0), [117.155, 88.563, 68.954], atol=0.5)
    assert a[0, 0].tolist() == [0, 0, 0]
    np.testing.assert_allclose(a[100, 150], [119, 83, 57], atol=2)
    x = to_model_input(mini_data / IMG, 224, HALF, HALF)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 100, 150], [119 / 127.5 - 1, 83 / 127.5 - 1, 57 / 127.5 - 1], atol=0.02)


def test_identical_across_code_paths(mini_data, tiny_model):
    """Training/eval (decode_many + EvalPreset), predict (Classifier) and the numpy path agree exactly."""
    path = mini_data / IMG
    reference = to_model_input(path, 64, HALF, HALF)
    batch = torch.from_numpy(decode_many([path], 64))
    via_train = EvalPreset(HALF, HALF)(batch)[0].numpy()
    clf = load_model(tiny_model)
    from marsvision.preprocess import normalize

    via_predict = normalize(clf.decode(str(path))[None], clf.mean, clf.std)[0]
    np.testing.assert_allclose(via_train, reference, atol=1e-6)
    np.testing.assert_array_equal(via_predict, reference)
    # The same image given as bytes, a PIL image or a uint8 array decodes identically.
    assert np.array_equal(decode(path.read_bytes(), 64), decode(path, 64))
    assert np.array_equal(decode(load_image(path, 64), 64), decode(path, 64))


def test_train_preset_is_batched_and_seeded(mini_data):
    x = torch.from_numpy(decode_many(sorted((mini_data / "images").glob("*.JPG"))[:8], 64))
    preset = TrainPreset(HALF, HALF)
    a = preset(x, generator=torch.Generator().manual_seed(1))
    b = preset(x, generator=torch.Generator().manual_seed(1))
    c = preset(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0001 and a.max() <= 1.0001


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file"),
        (b"hello", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, "corrupt|truncated|cannot decode|not an image"),
    ],
)
def test_bad_bytes_give_image_error(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode(p, 32)


@pytest.mark.parametrize("mean,std", [((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_normalize_lookup_is_bit_identical_to_the_formula(mean, std):
    from marsvision.preprocess import normalize

    batch = np.random.default_rng(0).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    x = batch.astype(np.float32) * np.float32(1.0 / 255.0)
    expected = ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(0, 3, 1, 2)
    got = normalize(batch, mean, std)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"] and np.array_equal(got, expected)
