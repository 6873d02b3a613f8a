"""What Earth already has: the state folder a downlink plan is judged against and then adds to.

One file, ``DIR/triage-state.npz``, replaced atomically (``marsvision.atomic``), so a kill at any moment
leaves the previous state whole:

- ``units`` (M, F) float16: the model features of the images Earth has, centred on ``center`` and
  L2-normalised (a dot product is a cosine similarity): the seed (e.g. the training images,
  ``Earth.seeded``), then every image a plan sent;
- ``names`` (M,): where each came from (``seed:<name>`` or the sent path), ``labels`` (M,) its class
  (a seed's true labels, the model's label of a sent image; "" unknown), so a plan knows which classes
  Earth holds few of;
- ``center`` (F,) float32: the mean subtracted before the similarity (the seed's mean; without a
  seed, the first plan's images' mean, kept so later plans compare alike);
- ``meta``: JSON with the plans written so far.

Without a seed, what Earth has at the start is what the model was fitted on, and the plan reads it
through the model's own ``novelty`` (its distance to the training images, from the model file).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_save
from ..errors import MarsvisionError

STATE_FILE = "triage-state.npz"
FORMAT = "marsvision-triage-state/1"


class StateError(MarsvisionError):
    """A state folder that cannot be read or does not fit the model."""


def unit_rows(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Rows of ``x`` centred and L2-normalised (float32), so that a dot product is a cosine similarity."""
    z = np.asarray(x, np.float32) - center
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


@dataclass
class Earth:
    """The images Earth has, as features; ``center`` None until a seed or a first plan sets it."""

    units: np.ndarray  # (M, F) unit rows; float16 from the file, any float in memory
    names: list[str]
    center: np.ndarray | None = None
    meta: dict = field(default_factory=lambda: {"format": FORMAT, "plans": []})
    added: list[np.ndarray] = field(default_factory=list)  # sent since loading: blocks, so adding never copies
    labels: list[str] = field(default_factory=list)  # each image's class ("" unknown): the seed's, the sent's label

    def class_counts(self) -> dict[str, int]:
        """How many images of each class Earth has (a seed's labels, then the labels of what was sent)."""
        out: dict[str, int] = {}
        for label in self.labels:
            if label:
                out[label] = out.get(label, 0) + 1
        return out

    @classmethod
    def empty(cls) -> Earth:
        return cls(np.zeros((0, 0), np.float16), [])

    def all_units(self) -> np.ndarray:
        """Every unit row in one array (for the file)."""
        blocks = [b for b in (self.units, *self.added) if len(b)]
        return np.concatenate([np.asarray(b, np.float16) for b in blocks]) if blocks else self.units

    @classmethod
    def seeded(cls, features: np.ndarray, names: list[str], labels: list[str] | None = None) -> Earth:
        """Earth holding these images (e.g. the training set, with its labels), centred on their mean."""
        f = np.asarray(features, np.float32)
        center = f.mean(0)
        labels = list(labels) if labels is not None else [""] * len(names)
        return cls(unit_rows(f, center), [f"seed:{n}" for n in names], center, labels=labels)

    def __len__(self) -> int:
        return len(self.names)

    def chunks(self, chunk: int = 2048):
        """Earth's unit rows as float32, a chunk at a time (a file's float16 rows never all at once)."""
        for block in (self.units, *self.added):
            for lo in range(0, len(block), chunk):
                yield np.asarray(block[lo : lo + chunk], np.float32)

    def with_sent(
        self, features: np.ndarray, names: list[str], labels: list[str], center: np.ndarray, plan: dict
    ) -> Earth:
        """A new Earth that also holds these sent images (``plan``: a summary kept in ``meta``)."""
        f = unit_rows(np.asarray(features, np.float32).reshape(len(names), -1), center)
        meta = {**self.meta, "plans": [*self.meta.get("plans", []), plan]}
        labels = [*self.labels, *(x or "" for x in labels)]
        return Earth(self.units, [*self.names, *names], center, meta, [*self.added, f], labels)

    @property
    def dims(self) -> int | None:
        return next((b.shape[1] for b in (self.units, *self.added) if len(b)), None)

    def check(self, dims: int) -> None:
        if self.dims not in (None, dims):
            raise StateError(
                f"the state holds {self.dims}-dimensional features, the model gives {dims}: "
                "a state belongs to one model's features (start a new --state folder)"
            )


def load_state(folder: str | Path) -> Earth:
    """The state in ``folder``; a folder without one is an empty Earth."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return Earth.empty()
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise StateError(f"{path}: not a triage state of format {FORMAT}")
            center = z["center"] if z["center"].size else None
            labels = [str(x) for x in z["labels"]]
            return Earth(z["units"], [str(n) for n in z["names"]], center, meta, labels=labels)
    except (OSError, ValueError, KeyError) as e:
        raise StateError(f"{path}: cannot read the triage state ({e})") from None


def save_state(folder: str | Path, earth: Earth) -> Path:
    """Replace the state in ``folder`` in one rename: a kill leaves the old state, never half a new one."""
    path = Path(folder) / STATE_FILE

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                units=earth.all_units(),
                names=np.asarray(earth.names, dtype=str),
                labels=np.asarray(earth.labels, dtype=str),
                center=np.zeros(0, np.float32) if earth.center is None else earth.center.astype(np.float32),
                meta=np.asarray(json.dumps(earth.meta)),
            )
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty state

    atomic_save(write, path)
    return path
