"""Parquet shards (marsvision.scale.parquet): crash-safe shards and their assembly, and one-line errors
without the extras. Fast: no Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from marsvision.cli import main

REPO = Path(__file__).resolve().parents[2]

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'marsvision[parquet]')")
pq = pytest.importorskip("pyarrow.parquet")

from marsvision.scale import parquet as pqt  # noqa: E402


def test_shards_are_whole_and_assembly_takes_each_path_once(tmp_path, predictions):
    parts, out = tmp_path / "o.parquet.parts", tmp_path / "o.parquet"
    parts.mkdir()
    (parts / ".part-000009-deadbeef.parquet.x1y2.tmp").write_bytes(b"PAR1 half a shard")  # a killed writer's
    settings = {"top_k": 3}
    table = pqt.records_table(predictions, [None] * len(predictions), [None] * len(predictions), settings)
    writer = pqt.ShardWriter(parts, settings, rows_per_shard=2)
    assert not list(parts.glob(".*.tmp"))  # the half-written file is gone
    writer.add(table)
    writer.add(table.slice(0, 2))  # a batch delivered twice (a retried task) is stored once
    writer.flush()
    assert writer.written_rows == len(predictions) and writer.dropped_rows == 2
    assert sum(pq.read_metadata(s).num_rows for s in pqt.shards(parts)) == len(predictions)
    # A kill between renaming the output and deleting the shards: the rerun must not take them twice.
    pqt.write_table(table.slice(0, 3).cast(pqt.schema(settings)), out)
    assert pqt.assemble(out, parts, settings) == len(predictions)
    assert sorted(pqt.read_paths(out)) == sorted(p.source for p in predictions)
    assert not parts.exists() and pqt.settings_of(out) == settings
    with pytest.raises(ValueError, match="other settings"):
        pqt.check_settings(out, {"top_k": 5})


def test_missing_extras_are_one_line_errors(tmp_path, example_images, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow → ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["predict", str(example_images[0]), "--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'marsvision[parquet]'" in err
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    assert main(["predict", str(example_images[0]), "--engine", "ray", "--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'marsvision[ray]'" in err
    assert main(["predict", str(example_images[0]), "--engine", "ray", "--output", "o.csv"]) == 2
    assert "--output FILE.parquet" in capsys.readouterr().err
    assert main(["predict", str(example_images[0]), "--engine", "spark"]) == 2
    assert "choose one of local, ray" in capsys.readouterr().err


def test_importing_marsvision_imports_neither_ray_nor_pyarrow():
    code = (
        "import sys, marsvision, marsvision.cli, marsvision.scale, marsvision.scale.parquet, "
        "marsvision.scale.ray_engine; bad = [m for m in ('ray', 'pyarrow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
