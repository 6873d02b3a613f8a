"""Fetch the MSL labelled image set (Zenodo 1049137) and check a local copy against a shipped manifest."""

from __future__ import annotations

import csv
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pooch
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import MarsvisionError
from ..files import sha256_file
from ..preprocess import IMAGE_SUFFIXES
from .msl import DATA_HELP

ZENODO_URL = "https://zenodo.org/records/1049137/files/msl-images.zip?download=1"
ARCHIVE_NAME = "msl-images.zip"
DATA_DIRNAME = "msl-images"  # the data root always ends up at dest/msl-images, whatever the zip's layout
DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "assets" / "msl_manifest.csv"
SPLIT_FILES = ("train-calibrated-shuffled.txt", "val-calibrated-shuffled.txt", "test-calibrated-shuffled.txt")
KAGGLE_CSVS = ("Train_CSV.csv", "Validation_CSV.csv", "Test_CSV.csv")


@dataclass
class DownloadConfig:
    """Download the MSL data set from Zenodo (DOI 10.5281/zenodo.1049137) and verify it."""

    dest: str = field(default="data", metadata={"help": "folder to put msl-images/ in"})
    url: str = field(default="", metadata={"help": "archive URL (default: the Zenodo record)"})


@dataclass
class VerifyConfig:
    """Check a data set copy file by file against the shipped SHA-256 manifest."""

    data: str = field(default="", metadata={"help": DATA_HELP})
    quick: bool = field(default=False, metadata={"help": "compare sizes only, skip hashing"})


class DownloadError(MarsvisionError, RuntimeError):
    """The data set could not be fetched, unpacked or located (message names the URL and the reason)."""


@dataclass
class ManifestEntry:
    path: str  # relative to the data root, POSIX separators, e.g. "calibrated/xxx.JPG"
    sha256: str
    size: int


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`; extra (unlabelled) files never make a copy fail."""

    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    checked: int = 0
    root: Path | None = None
    hashes_checked: bool = True

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    def summary(self, limit: int = 20) -> str:
        """Short human-readable report: counts, then up to ``limit`` missing and corrupt names each."""
        what = "size+sha256" if self.hashes_checked else "size only"
        lines = [
            f"MSL data at {self.root}: {'OK' if self.ok else 'FAILED'} ({what}): {self.checked} checked, "
            f"{len(self.missing)} missing, {len(self.corrupt)} corrupt, "
            f"{len(self.extra)} extra (not in manifest, ignored)"
        ]
        for label, names in (("missing", self.missing), ("corrupt", self.corrupt)):
            if names:
                lines.append(f"{label} ({len(names)}):")
                lines += [f"  {n}" for n in names[:limit]]
                if len(names) > limit:
                    lines.append(f"  ... and {len(names) - limit} more")
        return "\n".join(lines)


def _split_paths(root: Path) -> list[str]:
    """Union of image paths named in the three split files (first column of each line)."""
    paths: set[str] = set()
    for name in SPLIT_FILES:
        for line in (root / name).read_text().splitlines():
            if line.strip():
                paths.add(line.split()[0])  # "calibrated/xxx.JPG <label>"
    return sorted(paths)


def build_manifest(root: str | Path, out_path: str | Path, progress: bool = False) -> Path:
    """Hash every labelled image of a Zenodo-layout copy at ``root`` into a ``path,sha256,size`` CSV."""
    root, out_path = Path(root), Path(out_path)
    paths = _split_paths(root)
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled images missing under {root}, e.g. {missing[0]}")
    with ThreadPoolExecutor() as pool:  # hashlib releases the GIL, so threads hash in parallel
        digests = list(
            tqdm(
                pool.map(lambda p: sha256_file(root / p)[0], paths),
                total=len(paths),
                desc="hashing",
                unit="file",
                disable=not progress,
            )
        )
    with atomic_write(out_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # LF keeps the committed file diff-friendly
        writer.writerow(["path", "sha256", "size"])
        for p, digest in zip(paths, digests, strict=True):
            writer.writerow([p, digest, (root / p).stat().st_size])
    os.chmod(out_path, 0o644)  # atomic_write's mkstemp makes 0600; the asset must be readable by all
    return out_path


def load_manifest(manifest: str | Path | None = None) -> list[ManifestEntry]:
    """Read a manifest CSV (the shipped one by default)."""
    with open(manifest or DEFAULT_MANIFEST, newline="") as f:
        return [ManifestEntry(r["path"], r["sha256"], int(r["size"])) for r in csv.DictReader(f)]


def _layout(root: Path) -> str | None:
    """'zenodo' (calibrated/ + split files), 'kaggle' (images/ + CSVs) or None."""
    if (root / "calibrated").is_dir() and any((root / n).is_file() for n in SPLIT_FILES):
        return "zenodo"
    if (root / "images").is_dir() and any((root / n).is_file() for n in KAGGLE_CSVS):
        return "kaggle"
    return None


def find_root(tree: str | Path) -> Path | None:
    """Shallowest folder under ``tree`` (itself included) that looks like a data-set root."""
    best: Path | None = None
    for dirpath, dirnames, _ in os.walk(tree):
        # macOS zips carry a resource-fork mirror; image folders are huge and never hold a root
        dirnames[:] = [d for d in dirnames if d != "__MACOSX" and d not in ("calibrated", "images")]
        p = Path(dirpath)
        if _layout(p) and (best is None or len(p.parts) < len(best.parts)):
            best = p
    return best


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]


def verify(
    root: str | Path, manifest: str | Path | None = None, check_hashes: bool = True, progress: bool = True
) -> VerifyReport:
    """Compare a local copy (Zenodo or Kaggle layout) with the manifest: missing, corrupt and extra files."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder")
    entries = load_manifest(manifest)
    kaggle = _layout(root) == "kaggle"
    report = VerifyReport(root=root, hashes_checked=check_hashes)
    if kaggle:
        # The Kaggle re-upload flattens folders, so manifest entries are matched by basename
        found = {p.name: p for p in _image_files(root / "images")}
        located = {e.path: found.get(Path(e.path).name) for e in entries}
        known = {Path(e.path).name for e in entries}
        report.extra = sorted(p.relative_to(root).as_posix() for n, p in found.items() if n not in known)
    else:
        located = {e.path: root / e.path for e in entries}
        known = {e.path for e in entries}
        image_dirs = {Path(e.path).parts[0] for e in entries if len(Path(e.path).parts) > 1} or {"calibrated"}
        report.extra = sorted(
            rel
            for d in image_dirs
            for p in _image_files(root / d)
            if (rel := p.relative_to(root).as_posix()) not in known
        )

    def check(entry: ManifestEntry) -> str:
        path = located[entry.path]
        try:
            if path is None or not path.is_file():
                return "missing"
            if path.stat().st_size != entry.size:  # cheap, catches truncation even without hashing
                return "corrupt"
            return "corrupt" if check_hashes and sha256_file(path)[0] != entry.sha256 else "ok"
        except OSError:  # unreadable counts as corrupt: the copy can't be used as is
            return "corrupt"

    with ThreadPoolExecutor() as pool:  # hashlib releases the GIL, so threads hash in parallel
        results = tqdm(
            pool.map(check, entries), total=len(entries), desc="verifying", unit="file", disable=not progress
        )
        for entry, status in zip(entries, results, strict=True):
            if status == "missing":
                report.missing.append(entry.path)
            else:
                report.checked += 1
                if status == "corrupt":
                    report.corrupt.append(entry.path)
    return report


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no details'}"


def download(
    dest: str | Path,
    url: str = ZENODO_URL,
    known_hash: str | None = None,
    progress: bool = True,
    manifest: str | Path | None = None,
) -> Path:
    """Fetch and unpack the data set into ``dest``; return the data root (``dest/msl-images``).

    Does nothing if ``dest`` (or ``dest/msl-images``) already verifies against ``manifest``.
    Raises :class:`DownloadError` on HTTP/zip/hash failures or if the unpacked copy does not verify.
    """
    dest = Path(dest).expanduser().resolve()
    final = dest / DATA_DIRNAME
    for candidate in (dest, final):
        if _layout(candidate) and verify(candidate, manifest, progress=progress).ok:
            return candidate
    dest.mkdir(parents=True, exist_ok=True)
    # Unpack into a scratch folder and move the root into place only once it verifies, so an
    # interrupted run never leaves a half-extracted tree at the final path.
    staging = dest / f".{DATA_DIRNAME}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    archive = dest / ARCHIVE_NAME
    try:
        pooch.retrieve(
            url,
            known_hash=known_hash,
            fname=ARCHIVE_NAME,
            path=dest,
            processor=pooch.Unzip(extract_dir=str(staging)),
            progressbar=progress,
        )
    except Exception as exc:  # pooch surfaces requests, zipfile, hash and OS errors alike
        # A cached archive that fails to unpack would be reused forever by pooch: drop it
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"download of {url} failed: {_one_line(exc)}") from exc
    root = find_root(staging)
    if root is None:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(
            f"download of {url} failed: archive holds no MSL data set "
            "(neither calibrated/ + split files nor images/ + CSVs)"
        )
    report = verify(root, manifest, progress=progress)
    if not report.ok:
        archive.unlink(missing_ok=True)  # so a retry fetches a fresh archive instead of reusing this one
        raise DownloadError(
            f"download of {url} failed: unpacked copy does not verify "
            f"({len(report.missing)} missing, {len(report.corrupt)} corrupt; kept in {staging})"
        )
    shutil.rmtree(final, ignore_errors=True)  # a stale copy that failed verification above
    os.replace(root, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final
