"""Tests for marsvision.download: fetch from a local HTTP server, manifest building and verification."""

from __future__ import annotations

import csv
import functools
import gc
import http.server
import shutil
import threading
import warnings
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from marsvision.data.download import (
    DEFAULT_MANIFEST,
    DownloadError,
    VerifyReport,
    build_manifest,
    download,
    find_root,
    verify,
)

SPLITS = {
    "train-calibrated-shuffled.txt": [("a.JPG", 0), ("b.JPG", 1), ("c.JPG", 2)],
    "val-calibrated-shuffled.txt": [("d.JPG", 0)],
    "test-calibrated-shuffled.txt": [("e.JPG", 1), ("a.JPG", 0)],  # overlap: manifest takes the union
}


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 255 - shade, 40)).save(path, "JPEG")


def make_zenodo(root: Path) -> Path:
    """Tiny Zenodo-layout copy: 5 labelled images, 1 unlabelled, split and synset files."""
    for i, name in enumerate("abcdez"):
        _jpeg(root / "calibrated" / f"{name}.JPG", 40 * i)
    for fname, rows in SPLITS.items():
        (root / fname).write_text("".join(f"calibrated/{n} {lab}\n" for n, lab in rows))
    (root / "msl_synset_words-indexed.txt").write_text("0 apxs\n1 apxs cal target\n2 chemcam cal target\n")
    (root / "README.txt").write_text("fake MSL data\n")
    return root


def make_kaggle(src: Path, root: Path) -> Path:
    """Same images in the Kaggle re-upload's layout: flat images/ folder and CSVs."""
    (root / "images").mkdir(parents=True)
    for p in (src / "calibrated").iterdir():
        shutil.copy(p, root / "images" / p.name)
    for csv_name, split in zip(("Train_CSV.csv", "Validation_CSV.csv", "Test_CSV.csv"), SPLITS, strict=True):
        rows = "".join(f"{n},{lab}\n" for n, lab in SPLITS[split])
        (root / csv_name).write_text("JPG,LABELS\n" + rows)
    (root / "Labels Information.txt").write_text("0 apxs\n")
    return root


def zip_tree(tree: Path, out: Path, prefix: str) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(tree.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(tree).as_posix()}")
    return out


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, manifest built from it)."""
    root = make_zenodo(tmp_path / "src" / "msl-images")
    return root, build_manifest(root, tmp_path / "manifest.csv")


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve tmp_path/www over real HTTP on 127.0.0.1; yields (base URL, served folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    requests_seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            requests_seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    # a proxy set in the environment must not intercept loopback traffic
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests_seen
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_build_manifest_rows(fake):
    root, manifest = fake
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [f"calibrated/{n}.JPG" for n in "abcde"]
    assert all(len(r["sha256"]) == 64 and int(r["size"]) == (root / r["path"]).stat().st_size for r in rows)


def test_download_fetches_unpacks_and_returns_root(fake, server, tmp_path):
    root, manifest = fake
    base, www, seen = server
    zip_tree(root, www / "msl-images.zip", "msl-images")
    dest = tmp_path / "dest"
    got = download(dest, f"{base}/msl-images.zip", progress=False, manifest=manifest)
    assert got == (dest / "msl-images").resolve()
    assert (got / "calibrated" / "a.JPG").is_file() and (got / "train-calibrated-shuffled.txt").is_file()
    assert not list(dest.glob(".*partial"))
    n_requests = len(seen)
    # already verifies: returns the same root without touching the network
    assert download(dest, f"{base}/msl-images.zip", progress=False, manifest=manifest) == got
    assert len(seen) == n_requests


def test_download_kaggle_zip_nested(fake, server, tmp_path):
    root, manifest = fake
    base, www, _ = server
    kaggle = make_kaggle(root, tmp_path / "kaggle")
    zip_tree(kaggle, www / "archive.zip", "outer/inner")  # root two levels deep in the archive
    got = download(tmp_path / "dest", f"{base}/archive.zip", progress=False, manifest=manifest)
    assert (got / "images" / "a.JPG").is_file() and verify(got, manifest, progress=False).ok


def test_download_404_raises(server, tmp_path):
    base, _, _ = server
    url = f"{base}/nope.zip"
    with pytest.raises(DownloadError) as info:
        download(tmp_path / "dest", url, progress=False)
    msg = str(info.value)
    assert url in msg and "404" in msg and "\n" not in msg
    # pooch leaves the 404 response open and the chained traceback keeps it alive in a cycle;
    # collect it here, quietly, so its ResourceWarning can't surface in a later test
    del info
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_download_bad_zip_raises_and_drops_archive(server, tmp_path):
    base, www, _ = server
    (www / "bad.zip").write_bytes(b"this is not a zip archive")
    with pytest.raises(DownloadError, match="bad.zip"):
        download(tmp_path / "dest", f"{base}/bad.zip", progress=False)
    assert not (tmp_path / "dest" / "msl-images.zip").exists()


def test_download_hash_mismatch_raises(fake, server, tmp_path):
    root, manifest = fake
    base, www, _ = server
    zip_tree(root, www / "msl-images.zip", "msl-images")
    with pytest.raises(DownloadError, match="msl-images.zip"):
        download(
            tmp_path / "dest",
            f"{base}/msl-images.zip",
            known_hash="sha256:" + "0" * 64,
            progress=False,
            manifest=manifest,
        )


def test_download_zip_without_dataset_raises(server, tmp_path):
    base, www, _ = server
    with zipfile.ZipFile(www / "other.zip", "w") as zf:
        zf.writestr("something/else.txt", "hi")
    with pytest.raises(DownloadError, match="no MSL data set"):
        download(tmp_path / "dest", f"{base}/other.zip", progress=False)


def test_verify_good_copy(fake):
    root, manifest = fake
    report = verify(root, manifest, progress=False)
    assert report.ok and report.checked == 5
    assert report.missing == [] and report.corrupt == []
    assert report.extra == ["calibrated/z.JPG"]  # unlabelled image: reported, not a failure
    assert "OK" in report.summary() and "1 extra" in report.summary()


def test_verify_missing(fake):
    root, manifest = fake
    (root / "calibrated" / "b.JPG").unlink()
    report = verify(root, manifest, progress=False)
    assert not report.ok and report.missing == ["calibrated/b.JPG"] and report.checked == 4
    assert "calibrated/b.JPG" in report.summary() and "FAILED" in report.summary()


def test_verify_corrupt(fake):
    root, manifest = fake
    p = root / "calibrated" / "c.JPG"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the hash can tell
    p.write_bytes(bytes(data))
    assert verify(root, manifest, progress=False).corrupt == ["calibrated/c.JPG"]
    assert verify(root, manifest, check_hashes=False, progress=False).ok
    with open(root / "calibrated" / "d.JPG", "ab") as f:
        f.write(b"x")  # size mismatch is caught even without hashing
    assert verify(root, manifest, check_hashes=False, progress=False).corrupt == ["calibrated/d.JPG"]


def test_verify_extra(fake):
    root, manifest = fake
    _jpeg(root / "calibrated" / "new.JPG", 7)
    report = verify(root, manifest, progress=False)
    assert report.ok and "calibrated/new.JPG" in report.extra


def test_verify_kaggle_layout(fake, tmp_path):
    root, manifest = fake
    kaggle = make_kaggle(root, tmp_path / "kaggle")
    assert find_root(tmp_path) is not None
    report = verify(kaggle, manifest, progress=False)
    assert report.ok and report.checked == 5 and report.extra == ["images/z.JPG"]
    (kaggle / "images" / "e.JPG").unlink()
    assert verify(kaggle, manifest, progress=False).missing == ["calibrated/e.JPG"]


def test_summary_truncates():
    text = VerifyReport(missing=[f"m{i}" for i in range(25)]).summary()
    assert "m19" in text and "m20" not in text and "5 more" in text


def test_shipped_manifest():
    with open(DEFAULT_MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [r["path"] for r in rows]
    assert len(rows) == 6691 and len(set(paths)) == 6691
    assert all(p.startswith("calibrated/") and p.endswith(".JPG") for p in paths)


def test_shipped_manifest_matches_the_real_copy(real_data):
    report = verify(real_data, check_hashes=False, progress=False)
    assert report.missing == [] and report.ok
