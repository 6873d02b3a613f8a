"""PDS products in the archive: their label fields and camera flag stored as columns (migration 0004),
file-name fields kept for plain JPEG/PNG files, bad products stored with their error."""

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from pds_products import attached, detached, pds4
from PIL import Image as PILImage
from sqlalchemy import create_engine, select, text

from marsvision.archive import db
from marsvision.archive.db import Image, open_engine
from marsvision.archive.index import IndexConfig, run_index
from marsvision.preprocess import load_image

pytest.importorskip("pdr")


def stored(db_url) -> dict[str, Image]:
    engine = open_engine(db_url)
    with engine.connect() as conn:
        got = {f"{Path(r.path).parent.name}/{Path(r.path).name}": r for r in conn.execute(select(Image)).all()}
    engine.dispose()
    return got


def test_index_stores_the_label_fields_and_the_camera(db_url, tmp_path, example_images):
    pixels = np.asarray(load_image(example_images[0], 224))
    folder = tmp_path / "downlink"
    detached(folder / "detached", pixels)
    attached(folder / "attached", 255 - pixels)
    pds4(folder / "pds4", pixels[::-1])
    broken = detached(folder / "broken", pixels[:, ::-1])
    broken.with_suffix(".IMG").write_bytes(b"\0" * 100)
    shutil.copy(example_images[0], folder / example_images[0].name)
    navcam = folder / "NLB_459577234EDR_F0481570NCAM00353M1.JPG"
    shutil.copy(example_images[1], navcam)
    PILImage.fromarray(pixels).save(folder / "holiday.png")

    report = run_index([str(folder)], IndexConfig(db=db_url), progress=False)
    assert report.files == 7 and report.indexed == 7 and len(report.failed) == 1
    rows = stored(db_url)
    assert len(rows) == 7

    products = [r for r in rows.values() if r.product_id]
    assert len(products) == 3
    for r in products:
        assert r.error is None and r.label
        assert (r.sol, r.instrument, r.off_camera) == (1664, "MR", False)
        assert r.product_id.upper() == "1664MR0086340000802438C00_DRCL"
        assert r.start_time.replace(tzinfo=dt.timezone.utc) == dt.datetime(
            2017, 4, 11, 20, 23, 54, 397000, tzinfo=dt.timezone.utc
        )
        assert (r.local_mean_solar_time, r.sequence_id, r.filter_name) == (
            "Sol-01664M12:20:10.483",
            "mcam09502",
            "MASTCAM_R0_CLEAR",
        )
        assert r.target.upper() == "MARS" and (r.lines, r.samples, r.bands, r.site, r.drive) == (*pixels.shape, 62, 660)
        assert r.name_fields["sol"] == 1664  # MSL product names are MMM file names too
    assert {r.instrument_id for r in products} == {"MAST_RIGHT", "Mast Camera Right"}

    bad = rows[f"broken/{broken.name}"]
    assert "truncated" in bad.error and bad.label is None and bad.product_id is None

    jpeg = rows[f"downlink/{example_images[0].name}"]  # as before PDS products: the file name's fields
    assert jpeg.sol == jpeg.name_fields["sol"] and jpeg.instrument == jpeg.name_fields["instrument"]
    assert jpeg.off_camera is False and jpeg.product_id is None and jpeg.lines is None
    nav = rows[f"downlink/{navcam.name}"]
    assert (nav.instrument, nav.off_camera, nav.sol, nav.label is not None) == ("NL", True, None, True)
    plain = rows["downlink/holiday.png"]
    assert (plain.instrument, plain.off_camera, plain.sol) == (None, None, None)


def test_migration_flags_the_cameras_of_rows_indexed_before(tmp_path):
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        for i, instrument in enumerate(("MR", "MH", "MD", None)):
            conn.execute(
                text(
                    "INSERT INTO images (id, sha256, path, size_bytes, indexed_at, instrument, name_fields, top_k) "
                    "VALUES (:id, :sha, :path, 1, '2026-12-05', :instrument, '{}', '[]')"
                ),
                {"id": i + 1, "sha": f"{i:064d}", "path": f"/x/{i}.jpg", "instrument": instrument},
            )
    engine.dispose()
    engine = open_engine(url)  # upgrades to head
    with engine.connect() as conn:
        flags = dict(conn.execute(text("SELECT instrument, off_camera FROM images")).all())
        indexes = {r[1] for r in conn.execute(text("PRAGMA index_list('images')"))}
    engine.dispose()
    assert flags == {"MR": 0, "MH": 0, "MD": 1, None: None}
    assert {"ix_images_product_id", "ix_images_off_camera", "ix_images_start_time"} <= indexes
