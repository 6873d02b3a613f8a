"""The MSL labelled data set: locating a copy, reading its official sol-based splits, decoding images.

Two layouts load: the Zenodo original (``calibrated/``, ``*-calibrated-shuffled.txt``,
``msl_synset_words-indexed.txt``) and the Kaggle re-upload (``images/``, ``Train_CSV.csv`` …
with columns ``JPG,LABELS``, ``Labels Information.txt``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MarsvisionError
from ..preprocess import ImageError, decode

DATA_ENV = "MARSVISION_DATA"
DEFAULT_DATA = Path("data/msl-images")
DATA_HELP = f"data set folder (default: ${DATA_ENV}, then ./{DEFAULT_DATA})"
SPLITS = ("train", "val", "test")
ZENODO_SPLIT_FILES = {s: f"{s}-calibrated-shuffled.txt" for s in SPLITS}
ZENODO_CLASS_FILE = "msl_synset_words-indexed.txt"
KAGGLE_SPLIT_FILES = {"train": "Train_CSV.csv", "val": "Validation_CSV.csv", "test": "Test_CSV.csv"}
KAGGLE_CLASS_FILE = "Labels Information.txt"


class DataError(MarsvisionError, RuntimeError):
    """The data set copy is missing, incomplete or malformed; the message says where."""


def resolve_data_dir(data: str | os.PathLike | None = None) -> Path:
    """``--data DIR``, else ``$MARSVISION_DATA``, else ``./data/msl-images``."""
    if data:
        candidates = [("--data", Path(data))]
    elif os.environ.get(DATA_ENV):
        candidates = [(f"${DATA_ENV}", Path(os.environ[DATA_ENV]))]
    else:
        candidates = [("default", DEFAULT_DATA)]
    source, root = candidates[0]
    if not root.is_dir():
        raise DataError(
            f"data set not found at {root} ({source}); pass --data DIR, set {DATA_ENV}, "
            "or run `marsvision data download`"
        )
    return root


@dataclass
class Split:
    """One split: image paths and the official class ids (as in the class-name file)."""

    name: str
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 official ids

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, n: int | None, seed: int = 0) -> Split:
        """A class-stratified-ish random subset of ``n`` images (all when n is None), for tests."""
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return Split(self.name, [self.paths[i] for i in idx], self.labels[idx])


def _parse_class_file(path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        m = re.match(r"\s*(\d+)\s*[:,\-=\t ]\s*(.+?)\s*$", line)
        if not m:
            raise DataError(f"{path}: line {n}: expected '<id> <class name>', got {line!r}")
        names[int(m.group(1))] = m.group(2)
    if not names:
        raise DataError(f"{path}: no class names found")
    return names


def sol_of(path: str | os.PathLike) -> int:
    """The Mars day an MSL image was taken: its file name starts with the 4-digit sol (``0292MH…``)."""
    name = Path(path).name
    if not name[:4].isdigit():
        raise DataError(f"{path}: file name does not start with a 4-digit sol")
    return int(name[:4])


class MSLDataset:
    """A copy of the MSL data set on disk (either layout)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_data_dir(root)
        if (self.root / ZENODO_CLASS_FILE).is_file():
            self.layout = "zenodo"
            self.class_file = self.root / ZENODO_CLASS_FILE
        elif (self.root / KAGGLE_CLASS_FILE).is_file():
            self.layout = "kaggle"
            self.class_file = self.root / KAGGLE_CLASS_FILE
        else:
            raise DataError(
                f"{self.root}: neither {ZENODO_CLASS_FILE} (Zenodo layout) nor "
                f"{KAGGLE_CLASS_FILE!r} (Kaggle layout) found"
            )
        self.class_names: dict[int, str] = _parse_class_file(self.class_file)

    def split(self, name: str) -> Split:
        """Read one official split; every listed image must exist."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        rows = self._zenodo_rows(name) if self.layout == "zenodo" else self._kaggle_rows(name)
        paths, labels = [], []
        for where, rel, label in rows:
            path = self._image_path(rel)
            if not path.is_file():
                raise DataError(f"{where}: image {rel} does not exist ({path})")
            if label not in self.class_names:
                raise DataError(f"{where}: class id {label} is not in {self.class_file.name}")
            paths.append(path)
            labels.append(label)
        return Split(name, paths, np.asarray(labels, dtype=np.int64))

    def splits(self, names: Iterable[str]) -> Split:
        """Several splits concatenated, e.g. ``train+val`` for the final refit."""
        parts = [self.split(n) for n in names]
        return Split(
            "+".join(p.name for p in parts),
            [p for s in parts for p in s.paths],
            np.concatenate([s.labels for s in parts]),
        )

    def _zenodo_rows(self, name: str):
        f = self.root / ZENODO_SPLIT_FILES[name]
        if not f.is_file():
            raise DataError(f"{self.root}: split file {f.name} is missing")
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{f}: line {n}: expected '<image> <class id>', got {line!r}")
            yield f"{f}: line {n}", parts[0], int(parts[1])

    def _kaggle_rows(self, name: str):
        f = self.root / KAGGLE_SPLIT_FILES[name]
        if not f.is_file():
            raise DataError(f"{self.root}: split file {f.name} is missing")
        with open(f, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().upper(): c for c in reader.fieldnames or []}
            if "JPG" not in cols or "LABELS" not in cols:
                raise DataError(f"{f}: expected columns JPG,LABELS, got {reader.fieldnames}")
            for n, row in enumerate(reader, 2):
                label = row[cols["LABELS"]].strip()
                if not label.isdigit():
                    raise DataError(f"{f}: line {n}: class id {label!r} is not an integer")
                yield f"{f}: line {n}", row[cols["JPG"]].strip(), int(label)

    def _image_path(self, rel: str) -> Path:
        direct = self.root / rel
        if direct.is_file() or self.layout == "zenodo":
            return direct
        return self.root / "images" / Path(rel).name  # Kaggle CSVs may name the file alone


def decode_many(
    paths: Sequence[Path], size: int, workers: int | None = None, progress: bool = False, errors: list | None = None
) -> np.ndarray:
    """Decode and resize images in parallel threads (PIL releases the GIL) → (N, size, size, 3) uint8.

    Training data must be clean: the first unreadable image raises ``DataError`` naming it. With an
    ``errors`` list, unreadable images are appended to it as (index, "path: reason") instead, and
    their rows are zeros.
    """
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)

    def work(i: int) -> None:
        try:
            out[i] = decode(paths[i], size)
        except ImageError as e:
            if errors is None:
                raise DataError(f"{paths[i]}: {e}") from None
            errors.append((i, f"{paths[i]}: {e}"))

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        it = pool.map(work, range(len(paths)))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(paths), desc=f"decode {size}px", unit="img", leave=False)
        for _ in it:
            pass
    return out


def balanced_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` items drawn round-robin over classes (each class shuffled), sorted."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked, dtype=np.int64))
