"""--engine ray on a local 2-CPU Ray cluster: the same rows as the local engine (Parquet and database),
exactly once when an actor is killed mid-run, resumable after a kill, unreadable files as error rows.

Inputs: the 12 example images, the 23 images of the mini data set and broken files made in tmp_path."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from pds_products import attached, detached, pds4

from marsvision.cli import main
from marsvision.inference.predict import PredictConfig
from marsvision.model_file import bundled_model_path
from marsvision.preprocess import load_image

REPO = Path(__file__).resolve().parents[2]
EXAMPLES, MINI_DATA = REPO / "examples" / "images", REPO / "tests" / "assets" / "mini-msl"

ray = pytest.importorskip(
    "ray", reason="ray is not installed (pip install 'marsvision[ray]'): the Ray engine is untested"
)
pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'marsvision[ray]')")
pq = pytest.importorskip("pyarrow.parquet")

from marsvision.scale import parquet as pqt  # noqa: E402
from marsvision.scale.ray_engine import RayOptions, classify_to_shards, settings_for  # noqa: E402
from marsvision.scale.ray_index import RAY  # noqa: E402
from marsvision.scale.ray_predict import run_predict  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]
IMAGES = sorted(EXAMPLES.glob("*.JPG")) + sorted((MINI_DATA / "images").glob("*.JPG"))


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray instance with 2 CPUs for the module (as CI's machine has)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def broken(tmp_path) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "half.JPG").write_bytes(IMAGES[0].read_bytes()[:2000])
    return folder


def predict_cfg(output: Path, **kw) -> PredictConfig:
    return PredictConfig(**{"engine": "ray", "output": str(output), "top_k": 3, **kw})


def rows_by_path(path: Path) -> dict[str, dict]:
    rows = pq.read_table(path).to_pylist()
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "a path is in the output twice"
    return by_path


def test_predict_rows_identical_to_local_engine(tmp_path, broken, capsys):
    inputs = [str(EXAMPLES), str(MINI_DATA / "images"), str(broken), str(tmp_path / "missing.jpg")]
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert main(["predict", *inputs, "--top-k", "3", "--output", str(local)]) == 1
    capsys.readouterr()
    assert main(["predict", *inputs, "--top-k", "3", "--output", str(remote), "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert "missing.jpg: file not found" in err and f"{len(IMAGES)} classified, 4 failed" in err
    a, b = rows_by_path(local), rows_by_path(remote)
    assert len(a) == len(IMAGES) + 4 and a == b  # every column, features included, bit for bit
    assert {p for p, r in b.items() if r["error"]} == {*map(str, broken.iterdir()), str(tmp_path / "missing.jpg")}
    assert not Path(f"{remote}.parts").exists()


def test_rerun_resumes_from_shards_and_output(tmp_path, broken):
    out = tmp_path / "out.parquet"
    cfg = predict_cfg(out)
    files = [*map(str, IMAGES), *map(str, sorted(broken.iterdir()))]
    model = bundled_model_path()
    settings = settings_for(model, 3)
    # A run killed after its first shards: shards on disk (and a half-written temporary), no output yet.
    parts = Path(f"{out}.parts")
    writer = pqt.ShardWriter(parts, settings, rows_per_shard=5)
    classify_to_shards(files[:12], model, settings, writer, RayOptions(), top_k=3)
    (parts / ".part-000099-cafe.parquet.tmp1.tmp").write_bytes(b"half")
    report = run_predict(files, cfg, progress=False)
    assert (report.skipped, report.classified, report.rows) == (12, len(files) - 12, len(files))
    assert sorted(rows_by_path(out)) == sorted(files) and not parts.exists()
    # Nothing left to do: no Ray work, the same file.
    again = run_predict(files, cfg, progress=False)
    assert (again.classified, again.skipped, again.rows) == (0, len(files), len(files))
    # A new image: only it is classified, and the output grows by one row.
    extra = tmp_path / "new" / "copy.JPG"
    extra.parent.mkdir()
    shutil.copy(IMAGES[0], extra)
    more = run_predict([*files, str(extra)], cfg, progress=False)
    assert (more.classified, more.rows) == (1, len(files) + 1)
    with pytest.raises(ValueError, match="other settings"):
        run_predict(files, predict_cfg(out, top_k=5), progress=False)


def classify_actor_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"ClassifyActor" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the actor process through /proc")
def test_killed_actor_every_input_exactly_once(tmp_path, broken):
    # 4 copies of the 35 images under distinct names, batches of 4: the kill lands mid-run.
    files = []
    for n in range(4):
        folder = tmp_path / f"copy{n}"
        folder.mkdir()
        for img in IMAGES:
            shutil.copy(img, folder / img.name)
            files.append(str(folder / img.name))
    files += [*map(str, sorted(broken.iterdir()))]
    out = tmp_path / "out.parquet"
    parts = Path(f"{out}.parts")
    killed: dict = {}

    def kill_one_actor():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pids = classify_actor_pids()
            if pids and pqt.shards(parts):  # the pipeline is under way: rows are on disk
                killed["rows_before"] = sum(pq.read_metadata(s).num_rows for s in pqt.shards(parts))
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
            time.sleep(0.02)

    thread = threading.Thread(target=kill_one_actor, daemon=True)
    thread.start()
    opts = RayOptions(batch_size=4, read_batch=4, shard_rows=8)
    report = run_predict(files, predict_cfg(out), opts, progress=False)
    thread.join()
    assert killed.get("pid"), "no actor was killed"
    assert killed["rows_before"] < len(files), "the kill came after the run"
    assert opts.stats["dropped_repeats"] >= 0 and opts.stats["passes"] >= 1
    rows = rows_by_path(out)  # each path once
    assert sorted(rows) == sorted(files) and report.rows == len(files)
    assert {p for p, r in rows.items() if r["error"]} == set(map(str, broken.iterdir()))


def index_rows(url: str) -> dict[str, dict]:
    """sha256 → every column of the image (and of its vectors, where they have their own table) but
    the id and the time it was indexed."""
    from sqlalchemy import inspect, text

    from marsvision.archive.db import open_engine

    engine = open_engine(url)
    with engine.connect() as conn:
        images = {r["id"]: dict(r) for r in conn.execute(text("SELECT * FROM images")).mappings()}
        if "image_vectors" in inspect(conn).get_table_names():
            for v in conn.execute(text("SELECT * FROM image_vectors")).mappings():
                images[v["image_id"]].update({f"vectors.{k}": val for k, val in v.items() if k != "image_id"})
    engine.dispose()
    return {r["sha256"]: {k: v for k, v in r.items() if k not in ("id", "indexed_at")} for r in images.values()}


@pytest.fixture(params=["sqlite", "postgresql"])
def two_databases(request, tmp_path):
    """Two empty archives (local engine, Ray engine): SQLite files, or databases on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"
        return
    pytest.importorskip("psycopg")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = request.getfixturevalue("postgres_url")
    names = [f"scale_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield tuple(make_url(server).set(database=n).render_as_string(hide_password=False) for n in names)
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_index_rows_identical_to_local_indexer_and_resumable(two_databases, tmp_path, broken, monkeypatch):
    from marsvision.archive.index import IndexConfig, run_index
    from marsvision.scale.ray_index import shard_folder

    monkeypatch.chdir(tmp_path)  # a PostgreSQL archive keeps its shards under ./.marsvision-shards/
    local_url, ray_url = two_databases
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(IMAGES[3], dup / "same-content.JPG")  # one content under two paths: one row, the first path
    # PDS products: their label fields (product id, sol, camera, ...) must reach the rows through the shards.
    products = tmp_path / "products"
    pixels = np.asarray(load_image(IMAGES[4], 224))
    detached(products / "detached", pixels)
    attached(products / "attached", 255 - pixels)
    pds4(products / "pds4", pixels[::-1])
    inputs = [str(EXAMPLES), str(MINI_DATA / "images"), str(broken), str(dup), str(tmp_path / "missing.jpg")]
    inputs.append(str(products))
    local = run_index(inputs, IndexConfig(db=local_url), progress=False)
    # A Ray run killed after classifying the first 10 images: their shard is on disk, not in the database.
    from marsvision.archive.db import open_engine

    engine = open_engine(ray_url)
    settings = settings_for(bundled_model_path(), 5)
    writer = pqt.ShardWriter(shard_folder(engine), settings)
    classify_to_shards(
        [str(p.resolve()) for p in IMAGES[:10]], bundled_model_path(), settings, writer, RayOptions(), top_k=5
    )
    engine.dispose()
    remote = run_index(inputs, IndexConfig(db=ray_url, engine="ray"), progress=False, runner=RAY)
    assert (remote.indexed, remote.skipped) == (local.indexed, local.skipped) == (len(IMAGES) + 6, 1)
    assert sorted(remote.failed) == sorted(local.failed)
    a, b = index_rows(local_url), index_rows(ray_url)
    assert len(a) == len(IMAGES) + 6 and a == b  # every column but id and indexed_at
    assert sum(1 for r in b.values() if r["product_id"]) == 3
    assert not pqt.shards(writer.folder)
    again = run_index(inputs, IndexConfig(db=ray_url, engine="ray"), progress=False, runner=RAY)
    assert (again.indexed, again.skipped) == (0, len(IMAGES) + 7)
    # --reclassify: every image labelled again in place (here over labels spoiled on purpose), as locally
    from sqlalchemy import text

    from marsvision.archive.db import open_engine

    engine = open_engine(ray_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE images SET label = 'spoiled', confidence = 0 WHERE error IS NULL"))
        conn.execute(text("DELETE FROM image_vectors"))
    engine.dispose()
    remote = run_index(inputs, IndexConfig(db=ray_url, engine="ray", reclassify=True), progress=False, runner=RAY)
    local = run_index(inputs, IndexConfig(db=local_url, reclassify=True), progress=False)
    assert (
        (remote.indexed, remote.reclassified, remote.skipped)
        == (local.indexed, local.reclassified, local.skipped)
        == (0, len(IMAGES) + 6, 1)
    )
    assert index_rows(ray_url) == index_rows(local_url) == a


def test_read_tasks_reuse_the_hashes_of_an_index_job(tmp_path):
    # index --engine ray: the archive hashed every file once; the read task keeps that hash and size (a PDS
    # product's are of its label and data file together, not of the file the task reads).
    from marsvision.scale.ray_engine import _path_blocks, read_files

    paths = [str(IMAGES[0]), str(tmp_path / "gone.jpg")]
    given = {paths[0]: ("a" * 64, 123), paths[1]: ("b" * 64, 1)}
    out = [row for block in _path_blocks(paths, 8, given) for row in read_files(block).to_pylist()]
    assert out[0]["sha256"] == "a" * 64 and out[0]["size_bytes"] == 123
    assert out[1]["sha256"] is None and out[1]["error"]  # unreadable now: no hash, the local engine's reason
    (plain,) = _path_blocks(paths[:1], 8)  # predict: no hashes given, the read task hashes
    row = read_files(plain).to_pylist()[0]
    assert row["sha256"] == hashlib.sha256(IMAGES[0].read_bytes()).hexdigest()
    assert row["size_bytes"] == IMAGES[0].stat().st_size
