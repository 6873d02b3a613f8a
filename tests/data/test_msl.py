from pathlib import Path

import pytest
from PIL import Image

from marsvision.data.msl import DataError, MSLDataset, decode_many, resolve_data_dir, sol_of


def test_real_splits_have_official_sizes(real_data):
    ds = MSLDataset(real_data)
    assert ds.layout == "zenodo"
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [3746, 1640, 1305]
    assert ds.class_names[7] == "drt side" and ds.class_names[22] == "sun" and len(ds.class_names) == 25
    assert len(ds.splits(["train", "val"])) == 3746 + 1640


def _fake_kaggle(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 40, 10, 10)).save(root / "images" / f"img{i}.JPG")
    (root / "Labels Information.txt").write_text("0 apxs\n1 apxs cal target\n2 chemcam cal target\n")
    for f, rows in {
        "Train_CSV.csv": [(0, 0), (1, 2)],
        "Validation_CSV.csv": [(2, 1)],
        "Test_CSV.csv": [(3, 0)],
    }.items():
        (root / f).write_text("JPG,LABELS\n" + "".join(f"img{i}.JPG,{c}\n" for i, c in rows))


def test_kaggle_layout_loads(tmp_path):
    _fake_kaggle(tmp_path)
    ds = MSLDataset(tmp_path)
    assert ds.layout == "kaggle"
    tr = ds.split("train")
    assert [p.name for p in tr.paths] == ["img0.JPG", "img1.JPG"] and tr.labels.tolist() == [0, 2]
    assert ds.class_names[2] == "chemcam cal target"
    assert decode_many(tr.paths, 16).shape == (2, 16, 16, 3)


def test_missing_image_is_named(tmp_path):
    _fake_kaggle(tmp_path)
    (tmp_path / "images" / "img3.JPG").unlink()
    with pytest.raises(DataError, match=r"Test_CSV.csv: line 2: image img3.JPG does not exist"):
        MSLDataset(tmp_path).split("test")


def test_zenodo_missing_image_is_named(tmp_path, mini_data):
    (tmp_path / "calibrated").mkdir()
    (tmp_path / "msl_synset_words-indexed.txt").write_text((mini_data / "msl_synset_words-indexed.txt").read_text())
    (tmp_path / "val-calibrated-shuffled.txt").write_text("calibrated/nothere.JPG 8\n")
    with pytest.raises(DataError, match="nothere.JPG does not exist"):
        MSLDataset(tmp_path).split("val")


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.setenv("MARSVISION_DATA", str(b))
    assert resolve_data_dir(a) == a
    assert resolve_data_dir(None) == b
    monkeypatch.delenv("MARSVISION_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="marsvision data download"):
        resolve_data_dir(None)
    (tmp_path / "data" / "msl-images").mkdir(parents=True)
    assert resolve_data_dir(None) == Path("data/msl-images")


def test_decode_many_names_bad_training_image(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.jpg: not an image"):
        decode_many([bad], 16)


def test_sol_of_reads_the_file_name():
    assert sol_of("calibrated/0292MH0002810020103587C00_DRCL.JPG") == 292
    with pytest.raises(DataError, match="holiday.jpg: file name does not start with a 4-digit sol"):
        sol_of(Path("x/holiday.jpg"))
