"""`marsvision index`: one row per image content, skips and reclassifies, unreadable files, kill -9."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[2]
from marsvision.archive.db import Correction, Image, ImageVectors, ModelVersion, open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.archive.records import from_blob
from marsvision.cli import main


def rows(db_url):
    """Every image row, with its vectors (None for unreadable images)."""
    engine = open_engine(db_url)
    with engine.connect() as conn:
        out = conn.execute(
            select(Image, ImageVectors.features, ImageVectors.texture, ImageVectors.sketch).outerjoin(
                ImageVectors, ImageVectors.image_id == Image.id
            )
        ).all()
    engine.dispose()
    return out


def test_index_stores_one_complete_row_per_image(db_url, example_images, broken_images):
    report = run_index(
        [str(example_images[0].parent), str(broken_images), "/nowhere.jpg"], IndexConfig(db=db_url), progress=False
    )
    assert report.indexed == 15 and report.skipped == 0
    assert {os.path.basename(p) for p, _ in report.failed} == {"empty.jpg", "notes.jpg", "half.JPG", "nowhere.jpg"}
    got = rows(db_url)
    assert len(got) == 15 and len({r.sha256 for r in got}) == 15
    good = [r for r in got if r.error is None]
    assert len(good) == 12
    for r in good:
        assert r.label and 0 < r.confidence <= 1 and r.unknown is not None and r.novelty > 0 and len(r.top_k) == 5
        assert r.sol and r.instrument in ("MH", "ML", "MR") and r.name_fields["sol"] == r.sol
        assert from_blob(r.features, "f2").shape == (1792,) and from_blob(r.texture, "f4").shape == (33,)
        assert os.path.isabs(r.path) and r.model_id is not None
    bad = {os.path.basename(r.path): r.error for r in got if r.error}
    assert bad["empty.jpg"] == "empty file" and "not an image" in bad["notes.jpg"] and bad["half.JPG"]
    # Rerun: nothing new; --reclassify: labelled again by the active model, still one row each.
    again = run_index([str(example_images[0].parent), str(broken_images)], IndexConfig(db=db_url), progress=False)
    assert again.indexed == 0 and again.skipped == 15
    re = run_index([str(example_images[0].parent)], IndexConfig(db=db_url, reclassify=True), progress=False)
    assert re.reclassified == 12 and len(rows(db_url)) == 15


def test_same_content_twice_is_one_row(tmp_path, example_images):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder in (a, b):
        (folder / example_images[0].name).write_bytes(example_images[0].read_bytes())
    db = f"sqlite:///{tmp_path / 'x.db'}"
    report = run_index([str(a), str(b)], IndexConfig(db=db), progress=False)
    assert report.indexed == 1 and report.skipped == 1 and len(rows(db)) == 1


def test_cli_index_exit_codes_and_model_switch(tmp_path, example_images, broken_images, capsys):
    db = str(tmp_path / "cli.db")
    assert main(["index", str(example_images[0].parent), "--db", db]) == 0
    assert "12 indexed" in capsys.readouterr().err
    assert main(["index", str(broken_images), "--db", db]) == 1
    err = capsys.readouterr().err
    assert "empty.jpg: empty file" in err and "Traceback" not in err
    other = tmp_path / "other.onnx"
    other.write_bytes(b"different content")
    assert main(["index", str(example_images[0]), "--db", db, "--model", str(other)]) == 2
    assert "marsvision models activate" in capsys.readouterr().err


def unique_images(folder, n, sources):
    """``n`` distinct small JPEGs made from real ones (a corner block of a different colour each)."""
    import hashlib

    folder.mkdir()
    base = [np.asarray(PILImage.open(s).convert("RGB")) for s in sources]
    for i in range(n):
        a = base[i % len(base)].copy()
        a[:16, :16] = [i % 256, (i // 256) * 64, 128]
        PILImage.fromarray(a).save(folder / f"{i:04d}MH0000000000000000I01_DRCL.JPG", quality=90)
    assert len({hashlib.sha256(f.read_bytes()).digest() for f in folder.iterdir()}) == n


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_every_image_exactly_once(db_url, tmp_path, example_images):
    folder = tmp_path / "downlink"
    unique_images(folder, 400, example_images)
    cmd = [
        sys.executable,
        "-m",
        "marsvision.cli",
        "index",
        str(folder),
        "--db",
        db_url,
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = create_engine(db_url, poolclass=NullPool)  # a fresh connection per look: no stale snapshot
    deadline = time.time() + 60
    count = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            with engine.connect() as conn:
                count = conn.scalar(select(func.count(Image.id)))
        except Exception:  # noqa: BLE001 — the schema may not exist yet
            count = 0
        if count >= 40:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the indexer finished before it could be killed; give it more images"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with engine.connect() as conn:
        after_kill = conn.execute(
            select(Image.label, ImageVectors.features, Image.error).outerjoin(
                ImageVectors, ImageVectors.image_id == Image.id
            )
        ).all()
    assert 40 <= len(after_kill) < 400 and len(after_kill) % 8 == 0  # whole batches only
    assert all(r.label and r.features for r in after_kill)  # no half rows
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (
        f"{400 - len(after_kill)} indexed" in done.stderr and f"{len(after_kill)} already in the archive" in done.stderr
    )
    with engine.connect() as conn:
        total, distinct = conn.execute(select(func.count(Image.id), func.count(Image.sha256.distinct()))).one()
    engine.dispose()
    assert total == distinct == 400


def test_corrections_and_models_tables_exist(db_url):
    engine = open_engine(db_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count(ModelVersion.id))) == 0
        assert conn.scalar(select(func.count(Correction.id))) == 0
    engine.dispose()
