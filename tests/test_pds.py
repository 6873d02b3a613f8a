"""PDS products as inputs: real products (tests/pds_products.py) read through pdr by load_image, predict and
explain; their label fields; bad data files as one-line errors that never stop a batch."""

import json
import sys

import numpy as np
import pytest
from pds_products import MASTCAM_LEFT, PDS4_NAME, attached, detached, label_size, pds3_label, pds4
from PIL import Image

from marsvision import pds
from marsvision.errors import ImageError, ImageErrorKind, MissingExtraError
from marsvision.inference.predict import load_model, prediction_rows
from marsvision.preprocess import image_files, load_image

pytest.importorskip("pdr")

RIGHT = {
    "product_id": "1664MR0086340000802438C00_DRCL",
    "instrument": "MAST_RIGHT",
    "sol": 1664,
    "start_time": "2017-04-11T20:23:54.397",
    "local_mean_solar_time": "Sol-01664M12:20:10.483",
    "sequence_id": "mcam09502",
    "filter": "MASTCAM_R0_CLEAR",
    "target": "MARS",
    "site": 62,
    "drive": 660,
}
LAYOUTS = {"detached": detached, "attached": attached, "pds4": pds4}


@pytest.fixture(scope="module")
def jpeg(example_images):
    return example_images[0]


@pytest.fixture(scope="module")
def pixels(jpeg) -> np.ndarray:
    """The example JPEG's pixels at its own size, as load_image decodes them."""
    return np.asarray(load_image(jpeg, 224))


@pytest.fixture(scope="module")
def products(tmp_path_factory, pixels) -> dict:
    root = tmp_path_factory.mktemp("products")
    return {name: make(root / name, pixels) for name, make in LAYOUTS.items()}


@pytest.fixture(scope="module")
def model():
    with load_model() as clf:
        yield clf


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_gives_the_pixels_and_the_label_fields(products, pixels, layout):
    img, fields = pds.read_product(products[layout])
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), pixels)
    assert (fields["lines"], fields["samples"], fields["bands"]) == pixels.shape
    if layout == "pds4":  # the PDS4 label's own spelling of the same values
        assert fields["product_id"] == PDS4_NAME and fields["instrument"] == "Mast Camera Right"
        assert fields["start_time"] == "2017-04-11T20:23:54.397Z" and fields["target"] == "Mars"
        expected = {k: v for k, v in RIGHT.items() if k not in ("product_id", "instrument", "start_time", "target")}
    else:
        expected = RIGHT
    assert {k: fields[k] for k in expected} == expected


def test_other_label_and_the_data_file_given_instead_of_the_label(tmp_path, pixels):
    label = detached(tmp_path / "left", pixels, MASTCAM_LEFT)
    _, fields = pds.read_product(label.with_suffix(".IMG"))  # the data file: its label is found beside it
    assert (fields["instrument"], fields["sol"], fields["product_id"]) == (
        "MAST_LEFT",
        2264,
        "2264ML0121141200805116C00_DRCL",
    )
    xml = pds4(tmp_path / "p4", pixels)
    assert pds.read_product(xml.with_suffix(".img"))[1]["product_id"] == PDS4_NAME


def test_a_product_at_the_label_size(tmp_path, jpeg):
    """The sample label unchanged in size (1180 x 1323 x 3): the JPEG's pixels scaled up to it."""
    lines, samples = label_size()
    big = np.asarray(Image.open(jpeg).convert("RGB").resize((samples, lines), Image.BILINEAR))
    label = detached(tmp_path, big)
    assert "RECORD_BYTES                        = 1323" in label.read_text()  # the label's own size fields
    img, fields = pds.read_product(label)
    assert img.size == (1323, 1180) and (fields["lines"], fields["samples"]) == (1180, 1323)
    assert np.array_equal(np.asarray(img), big)


def test_predict_and_explain_see_a_product_as_its_jpeg(model, products, jpeg, tmp_path):
    preds = model.predict([jpeg, *products.values()], top_k=3)
    want = preds[0]
    for p in preds[1:]:
        assert p.ok and p.label == want.label and p.top_k[0][0] == want.top_k[0][0]
        np.testing.assert_allclose(p.probabilities, want.probabilities, atol=1e-6)
        assert p.instrument == "MR" and p.off_camera is False and p.product["sol"] == 1664
    assert want.instrument is None and want.off_camera is None and want.product is None
    from marsvision.inference.explain import explain, write_explanations

    sources = list(products.values())
    rows = write_explanations(explain(model, sources), sources, tmp_path / "explain")
    assert [r["label"] for r in rows] == [want.label] * 3 and all(r["instrument"] == "MR" for r in rows)
    assert all((tmp_path / "explain" / f).is_file() for r in rows for f in r["heatmaps"].values())


def test_predict_rows_keep_their_columns_for_jpegs(model, products, example_images):
    columns = ["path", "label", "confidence", "unknown", "novelty"]
    plain = prediction_rows(model.predict(example_images[:2]))
    assert list(plain[0]) == [*columns, "error"]
    mixed = prediction_rows(model.predict([example_images[0], products["pds4"]]))
    assert [list(r) for r in mixed] == [[*columns, "instrument", "off_camera", "error"]] * 2
    assert (mixed[0]["instrument"], mixed[0]["off_camera"]) == ("", "")
    assert (mixed[1]["instrument"], mixed[1]["off_camera"]) == ("MR", 0)


def data_file(product, layout):
    return {"detached": product.with_suffix(".IMG"), "attached": product, "pds4": product.with_suffix(".img")}[layout]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong size"])
def test_bad_data_files_are_one_line_errors_and_the_batch_goes_on(tmp_path, pixels, model, jpeg, layout, damage):
    product = LAYOUTS[layout](tmp_path / layout, pixels)
    data = data_file(product, layout)
    if damage == "missing":
        if layout == "attached":
            pytest.skip("an attached label has no separate data file")
        data.unlink()
    elif damage == "truncated":
        data.write_bytes(data.read_bytes()[:-5000])
    else:
        data.write_bytes(data.read_bytes() + b"\0" * 100)
    with pytest.raises(ImageError) as err:
        pds.read_product(product)
    message = str(err.value)
    assert "\n" not in message and data.name in message
    assert err.value.kind == (ImageErrorKind.NOT_FOUND if damage == "missing" else ImageErrorKind.CORRUPT)
    assert damage in message if damage != "missing" else "is missing" in message
    bad, good = model.predict([product, jpeg])
    assert bad.error == message and not bad.ok and good.ok


def test_a_pds4_label_without_file_size_still_catches_short_data(tmp_path, pixels):
    label = pds4(tmp_path, pixels, file_size=False)
    data = label.with_suffix(".img")
    data.write_bytes(data.read_bytes()[:1000])
    needed = f"{pixels.size:,}"  # lines x samples x 3 bands of 8 bits
    with pytest.raises(ImageError, match=rf"truncated: 1,000 bytes, the image needs {needed}") as err:
        pds.read_product(label)
    assert err.value.kind == ImageErrorKind.CORRUPT


def test_band_counts_and_bit_depths(tmp_path, pixels):
    grey16 = (pixels[..., 0].astype(np.uint16) * 200 + 1000).astype(np.uint16)
    img = load_image(pds4(tmp_path / "grey16", grey16), 224)
    # Scaled by its range, as a 16-bit PNG is (preprocess._to_rgb).
    png = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(png)
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), np.asarray(load_image(png, 224)))
    five = np.concatenate([pixels, pixels[..., :2]], axis=-1)
    img, fields = pds.read_product(pds4(tmp_path / "five", five))
    assert fields["bands"] == 5 and np.array_equal(np.asarray(img), pixels)  # the first 3 bands
    img, fields = pds.read_product(pds4(tmp_path / "two", pixels[..., :2]))
    assert fields["bands"] == 2 and img.mode == "L" and np.array_equal(np.asarray(img), pixels[..., 0])
    grey = detached(tmp_path / "grey3", pixels[..., 1])
    img, fields = pds.read_product(grey)
    assert fields["bands"] == 1 and img.mode == "L" and np.array_equal(np.asarray(img), pixels[..., 1])


def test_a_folder_takes_each_product_once(tmp_path, products, pixels):
    folder = tmp_path / "mixed"
    det = detached(folder, pixels)
    att = attached(folder / "att", pixels)
    xml = pds4(folder, pixels)
    Image.fromarray(pixels).save(folder / "plain.png")
    (folder / "notes.xml").write_text("<notes>not PDS</notes>")
    (folder / "disk.img").write_bytes(b"\0" * 512)
    # a data file whose label has another name (as the sample labels): taken through its label only
    other = tmp_path / "other"
    other.mkdir()
    (other / "x_pds3.lbl").write_text(pds3_label(pixels))
    (other / "1664MR0086340000802438C00_DRCL.IMG").write_bytes(np.moveaxis(pixels, -1, 0).tobytes())
    assert image_files(folder) == sorted([det, att, xml, folder / "plain.png"])
    assert image_files(other) == [other / "x_pds3.lbl"]
    assert pds.read_product(other / "x_pds3.lbl")[1]["sol"] == 1664


def test_files_that_are_not_products(tmp_path):
    for name, content in (("notes.xml", b"<notes/>"), ("disk.img", b"\0" * 64), ("orphan.lbl", b"hello")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / name, 224)
        assert err.value.kind == ImageErrorKind.NOT_AN_IMAGE
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "nowhere.LBL", 224)
    assert err.value.kind == ImageErrorKind.NOT_FOUND


def test_hash_covers_the_data_file(tmp_path, pixels):
    from marsvision.files import sha256_file

    one, two = detached(tmp_path / "a", pixels), detached(tmp_path / "b", 255 - pixels)
    assert one.read_bytes() == two.read_bytes()  # the same label text ...
    assert sha256_file(one)[0] != sha256_file(two)[0]  # ... but two products
    assert sha256_file(one)[1] == one.stat().st_size + one.with_suffix(".IMG").stat().st_size


def test_without_pdr_the_message_names_the_extra(products, monkeypatch):
    monkeypatch.setitem(sys.modules, "pdr", None)
    with pytest.raises(MissingExtraError, match=r"marsvision\[pds\]"):
        load_image(products["detached"], 224)


def test_cli_predict_writes_the_camera_columns(products, jpeg, tmp_path, capsys):
    from marsvision.cli import main

    out = tmp_path / "out.json"
    main(["predict", str(jpeg), *map(str, products.values()), "--output", str(out)])
    rows = json.loads(out.read_text())
    assert [r["instrument"] for r in rows] == ["", "MR", "MR", "MR"]
    assert len({r["label"] for r in rows}) == 1
