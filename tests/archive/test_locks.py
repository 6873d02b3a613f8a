"""The archive's lock (marsvision.archive.locks): activations and index batches take turns, so every row
carries the active version; migrations and the first active version are made once by concurrent runs."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import onnx
from sqlalchemy import func, select

from marsvision.archive.db import Image, ModelVersion, open_engine, sessions
from marsvision.archive.index import LOCAL, IndexConfig, IndexEngine, run_index, run_local
from marsvision.archive.rescore import activate
from marsvision.archive.versions import active_version, register
from marsvision.model_file import bundled_model_path

REPO = Path(__file__).resolve().parents[2]


def other_version(engine, tmp_path, name: str) -> ModelVersion:
    """A second version of the bundled model: the same graph (it re-scores the same features), other bytes."""
    model = onnx.load(str(bundled_model_path()))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "copy": name})
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    with sessions(engine).begin() as s:
        parent = active_version(s)
        return register(s, path, version=name, parent=parent)


def versions_of_rows(engine) -> set[int]:
    with sessions(engine)() as s:
        return set(s.scalars(select(Image.model_id).distinct()))


def active_id(engine) -> int:
    with sessions(engine)() as s:
        return active_version(s).id


def test_two_activations_at_once_leave_every_row_on_the_active_version(db_url, example_images, tmp_path):
    run_index([str(example_images[0].parent)], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    a, b = other_version(engine, tmp_path, "a"), other_version(engine, tmp_path, "b")
    for _ in range(3):
        threads = [threading.Thread(target=activate, args=(sessions(engine), v), kwargs={"chunk": 1}) for v in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert versions_of_rows(engine) == {active_id(engine)}
    engine.dispose()


def test_an_activation_during_an_index_run_is_carried_by_the_rest_of_the_run(db_url, example_images, tmp_path):
    run_index([str(example_images[0])], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    newer = other_version(engine, tmp_path, "newer")

    def run(job):
        write = job.write

        def write_then_activate(items):
            write(items)
            if active_id(engine) != newer.id:  # lands between the run's first and second batch
                activate(sessions(engine), newer)

        job.write = write_then_activate
        run_local(job)

    report = run_index(
        [str(example_images[0].parent)], IndexConfig(db=db_url, batch_size=4), False, IndexEngine(LOCAL.hashes, run)
    )
    assert report.indexed == 11
    assert versions_of_rows(engine) == {newer.id} == {active_id(engine)}
    engine.dispose()


def test_two_index_runs_at_once_on_a_fresh_database(db_url, example_images):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "marsvision.cli", "index", str(example_images[0].parent), "--db", db_url]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    engine = open_engine(db_url)
    with sessions(engine)() as s:
        assert s.scalar(select(func.count(Image.id))) == 12
        assert s.scalar(select(func.count(ModelVersion.id))) == 1
    engine.dispose()
