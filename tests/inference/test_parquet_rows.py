"""Parquet rows (marsvision.inference.parquet): the schema both engines write, exact round trips, and
`predict --output x.parquet` of the local engine. Fast: no Ray."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest

from marsvision.cli import main

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'marsvision[parquet]')")
pq = pytest.importorskip("pyarrow.parquet")

from marsvision.inference import parquet as pqt  # noqa: E402


def test_rows_round_trip_exactly(predictions):
    predictions = copy.copy(predictions)
    predictions[1] = copy.copy(predictions[1])  # as a PDS product: its label fields and camera come back too
    predictions[1].set_product({"product_id": "1664MR0086340000802438C00", "instrument": "MAST_RIGHT", "sol": 1664})
    shas = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(len(predictions))]
    sizes = list(range(len(predictions)))
    table = pqt.records_table(predictions, shas, sizes, {"top_k": 3})
    assert table.schema.names == [
        "path",
        "sha256",
        "size_bytes",
        "label",
        "confidence",
        "unknown",
        "novelty",
        "withheld",
        "top_k",
        "probabilities",
        "features",
        "texture",
        "product",
        "error",
    ]
    back = pqt.to_predictions(table)
    for p, (q, _sha, _size) in zip(predictions, back, strict=True):
        assert (q.source, q.label, q.confidence, q.unknown, q.novelty, q.top_k, q.error) == (
            p.source,
            p.label,
            p.confidence,
            p.unknown,
            p.novelty,
            p.top_k,
            p.error,
        )
        assert (q.product, q.instrument, q.off_camera) == (p.product, p.instrument, p.off_camera)
        for name in ("probabilities", "features", "texture"):
            a, b = getattr(p, name), getattr(q, name)
            assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), name
    assert back[-1][0].error == "file not found" and back[-1][0].features is None
    assert predictions[0].features.shape == (1792,) and predictions[0].texture.shape == (1280,)


def test_local_engine_writes_parquet(tmp_path, example_images, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    out = tmp_path / "out.parquet"
    code = main(["predict", str(example_images[0].parent), str(broken), "--output", str(out), "--top-k", "2"])
    assert code == 1 and "broken.jpg: not an image file" in capsys.readouterr().err
    table = pq.read_table(out)
    assert table.num_rows == len(example_images) + 1
    rows = {r["path"]: r for r in table.to_pylist()}
    first = rows[str(example_images[0])]
    assert first["sha256"] == hashlib.sha256(example_images[0].read_bytes()).hexdigest()
    assert first["size_bytes"] == example_images[0].stat().st_size
    assert len(first["top_k"]) == 2 and first["top_k"][0]["label"] == first["label"]
    assert len(first["features"]) == 1792 and first["error"] is None
    bad = rows[str(broken)]
    assert (
        bad["label"] is None
        and bad["features"] is None
        and bad["sha256"] == hashlib.sha256(b"not an image").hexdigest()
    )
    assert not list(tmp_path.glob(".*.tmp"))  # written under a temporary name, then renamed
