"""Inference API: ``load_model(path)`` → ``Classifier.predict(images)`` → ``write_predictions``.

The CLI, benchmarks and evaluation are thin adapters over this module. ``load_model`` reads either
model file kind — an ONNX file (fp32 or int8, run by ONNX Runtime, no torch needed; the bundled
model is one) or a torch checkpoint (``.pt``, needs ``pip install 'marsvision[train]'``).
Preprocessing comes from the model file (input size, mean, std), through ``preprocess.decode`` and
``preprocess.normalize``, the same functions that prepared the training and evaluation images.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from ..atomic import atomic_write
from ..model_file import EXPORT_COMMAND, ModelFileError, bundled_model_path, model_kind
from .classifier import Classifier, Prediction, softmax

# Shared by every command that classifies (predict, evaluate).
BATCH_HELP = "images per forward pass (0: the runtime's default, 4 for ONNX, 32 for torch)"
THREADS_HELP = "CPU budget: pin the process to N cores and use N model and N decoding threads (0: all cores, unpinned)"


@dataclass
class PredictConfig:
    """Classify image files and folders (recursively); one output row per input."""

    model: str = field(
        default="",
        metadata={
            "help": "model file: .onnx (fp32 or int8) or a torch .pt checkpoint (default: the bundled int8 model)"
        },
    )
    output: str = field(
        default="",
        metadata={
            "help": (
                "write results to this .csv, .json or .parquet file (Parquet: with "
                "sha256, top-k and features; needs pip install 'marsvision[parquet]') "
                "(default: a table on a terminal, CSV when piped)"
            )
        },
    )
    top_k: int = field(default=1, metadata={"help": "also report the K most likely classes"})
    min_confidence: float = field(
        default=0.0,
        metadata={
            "help": (
                "leave the label empty (column 'withheld' says why) when the calibrated "
                "confidence is below this or the image is flagged unknown (0: always "
                "label)"
            )
        },
    )
    batch_size: int = field(default=0, metadata={"help": BATCH_HELP})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    engine: str = field(
        default="local",
        metadata={
            "help": (
                "local: this process; ray: a Ray cluster, writes --output FILE.parquet, "
                "resumable (needs pip install 'marsvision[ray]'; --threads and "
                "--batch-size then apply per actor; docs/scaling.md)"
            )
        },
    )
    ray_address: str = field(
        default="",
        metadata={
            "help": "Ray cluster for --engine ray, e.g. auto or ray://head:10001 (default: start a local Ray instance)"
        },
    )


@contextlib.contextmanager
def limit_cpus(n: int) -> Iterator[None]:
    """Pin this process to ``n`` of its CPUs while the block runs (Linux; elsewhere a no-op).

    A hard CPU budget, as on a rover: thread counts alone do not cap CPU use, since decoding
    overlaps the model. ``n`` = 0 leaves the process as it is.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        allowed = set()
    pin = 0 < n < len(allowed)
    if pin:
        os.sched_setaffinity(0, sorted(allowed)[:n])
    try:
        yield
    finally:
        if pin:
            os.sched_setaffinity(0, allowed)


class EnsembleClassifier(Classifier):
    """Several models voting: logits are the log of their mean class probabilities.

    Members must share class names and preprocessing, so each image is decoded once. Inference
    costs the sum of the members' costs. The members' calibration and novelty data do not carry over
    to their average: an ensemble reports plain probabilities and no novelty.
    """

    runtime = "ensemble"

    def __init__(self, members: Sequence[Classifier]):
        first = members[0]
        for m in members[1:]:
            if (m.class_names, m.input_size, m.mean, m.std) != (
                first.class_names,
                first.input_size,
                first.mean,
                first.std,
            ):
                raise ModelFileError(
                    f"ensemble members differ in classes or preprocessing: "
                    f"{first.meta.get('arch')} vs {m.meta.get('arch')}"
                )
        super().__init__(
            {
                **first.meta,
                "arch": "+".join(str(m.meta.get("arch")) for m in members),
                "members": [m.meta for m in members],
                "trust": None,
            },
            first.threads,
        )
        self.members = list(members)
        self.batch_size = first.batch_size

    def outputs(self, batch_u8: np.ndarray) -> tuple[np.ndarray, None, None]:
        probs = np.mean([softmax(m.logits(batch_u8)) for m in self.members], axis=0)  # (N, C)
        return np.log(probs + 1e-12).astype(np.float32), None, None


def load_model(
    path: str | os.PathLike | Sequence[str | os.PathLike] | None = None, device: str = "cpu", threads: int | None = None
) -> Classifier:
    """Load a model file — ONNX (``.onnx``) or torch checkpoint (``.pt``); default: the bundled int8 model.

    A list of paths gives an ``EnsembleClassifier`` averaging their probabilities.
    ``threads`` caps the CPU threads of the model and of image decoding (default: all available).
    """
    if isinstance(path, (list, tuple)):
        if len(path) == 1:
            return load_model(path[0], device, threads)
        return EnsembleClassifier([load_model(p, device, threads) for p in path])
    if path is None:
        path = bundled_model_path()
        if not path.is_file():
            raise ModelFileError(f"bundled model {path} is missing; build it with `{EXPORT_COMMAND}`")
    if model_kind(path) == "onnx":
        from .onnx_runtime import OnnxClassifier

        return OnnxClassifier(path, device=device, threads=threads)
    from .torch_runtime import load_torch_model

    return load_torch_model(path, device=device, threads=threads)


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)  # 0/1: the same in CSV and JSON
    return round(value, 5) if isinstance(value, float) else value


def prediction_rows(results: Iterable[Prediction], top_k: int = 1, withheld: bool = False) -> list[dict]:
    """The rows ``write_predictions`` writes: ``Prediction.to_dict`` with numbers to 5 decimals and ""
    where there is no value (in CSV and JSON alike). The instrument and off_camera columns are there when
    some input carries its camera (a PDS product), so plain JPEG/PNG inputs give the rows they always did."""
    results = list(results)
    camera = any(p.off_camera is not None for p in results)
    return [{k: _cell(v) for k, v in p.to_dict(top_k, withheld, camera).items()} for p in results]


def write_predictions(
    results: Iterable[Prediction],
    path: str | os.PathLike | IO[str] | None = None,
    top_k: int = 1,
    withheld: bool = False,
) -> None:
    """Write one row per result: JSON for a ``.json`` path, else CSV; to stdout when ``path`` is None,
    or to an open text stream. A file is written atomically (a kill leaves the old file or none).

    Columns: path, label, confidence, unknown, novelty, instrument and off_camera when some input is a
    PDS product, with ``top_k`` > 1 top1_label,
    top1_confidence, …, with ``withheld`` the reason a label was withheld, then error. A ``.parquet``
    path: the rows of ``inference.parquet`` (with sha256, top-k, features; needs pyarrow).
    """
    if isinstance(path, (str, os.PathLike)) and str(path).endswith(".parquet"):
        from .parquet import write_parquet

        return write_parquet(results, path, top_k=top_k, withheld=withheld)
    rows = prediction_rows(results, top_k, withheld)
    if path is None or isinstance(path, io.TextIOBase) or hasattr(path, "write"):
        _write_csv(rows, path or sys.stdout)
    elif str(path).endswith(".json"):
        with atomic_write(path, encoding="utf-8") as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)
    else:
        with atomic_write(path, newline="", encoding="utf-8") as f:
            _write_csv(rows, f)


def _write_csv(rows: list[dict], f: IO[str]) -> None:
    fields = list(rows[0]) if rows else ["path", "label", "confidence", "error"]
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)


def format_predictions(results: Sequence[Prediction]) -> str:
    """A table for the terminal: path, label, confidence and a note (unknown, withheld or the error)."""

    def note(p: Prediction) -> str:
        if not p.ok:
            return f"error: {p.error}"
        return p.withheld or ("unknown image" if p.unknown else "")

    rows = [
        (p.source, p.label or ("–" if p.ok else ""), f"{p.confidence:.3f}" if p.ok else "", note(p)) for p in results
    ]
    head = ("path", "label", "confidence", "")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head[:3])]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip() for a, b, c, d in [head, *rows]
    )
