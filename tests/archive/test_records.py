"""Image rows: the vectors of a batch are the vectors of its images one by one, bit for bit (the local
and the Ray engine cut batches differently and must write the same rows)."""

from marsvision import load_model
from marsvision.archive.records import SKETCH_DIMS, from_blob, image_row, image_rows
from marsvision.model_file import bundled_model_path


def test_batch_rows_equal_single_rows(example_images, tmp_path):
    clf = load_model(bundled_model_path())
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    sources = [*example_images, bad]
    preds = clf.predict(sources, top_k=3)
    items = [(s, f"sha{i}", i, p) for i, (s, p) in enumerate(zip(sources, preds, strict=True))]
    batch = image_rows(items, clf, model_id=7)
    assert batch == [image_row(*item, clf, 7) for item in items]
    good, broken = batch[0], batch[-1]
    assert good["model_id"] == 7 and good["label"] == preds[0].label and len(good["top_k"]) == 3
    assert from_blob(good["sketch"], "f2").shape == (SKETCH_DIMS,)
    assert from_blob(good["features"], "f2").shape == preds[0].features.shape
    assert broken["label"] is None and broken["error"] and broken["features"] is None
