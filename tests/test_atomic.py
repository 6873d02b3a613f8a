"""Crash-safe writes: a failure mid-write leaves the old file and no temporary files."""

import pytest

from marsvision.atomic import atomic_write, move_into_place


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half a fi")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    with atomic_write(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n" and oct(target.stat().st_mode & 0o777) == "0o644"


def test_move_into_place_replaces_in_one_step(tmp_path):
    src, final = tmp_path / "work" / "model.onnx", tmp_path / "out" / "model.onnx"
    src.parent.mkdir()
    src.write_bytes(b"new model")
    move_into_place(src, final)
    assert final.read_bytes() == b"new model" and not src.exists()
