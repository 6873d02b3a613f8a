"""Predictions as Parquet rows: the one row schema of ``predict --output x.parquet`` (both engines) and
of the archive's bulk load, beside the CSV and JSON writers of ``predict.py``. pyarrow is imported only
when a Parquet file is read or written (``pip install 'marsvision[parquet]'``).

A row is one input: ``path`` (as given, or resolved by ``index``), ``sha256`` and ``size_bytes`` of its
content (null when the file could not be read), ``label``, ``confidence`` (calibrated), ``unknown``,
``novelty``, ``withheld`` (why a ``--min-confidence`` rule left the label empty), ``top_k`` [{label,
confidence}], ``probabilities`` (K, float64, in the model's class order), ``features`` (F, float32, the
pooled features the head reads), ``texture`` (C, float32, what novelty reads), ``product`` (a PDS
product's label fields, ``pds.FIELDS``, as a JSON object; null for other inputs) and ``error``. The values
are exactly those of ``Prediction`` (the runtimes' float32 features and texture, float64 calibrated
probabilities, Python floats), so ``to_predictions`` gives back what ``archive.records.image_rows``
needs and a bulk load writes the local indexer's rows bit for bit. Files are written atomically
(``atomic.atomic_write``): a kill leaves the old file or none. Shards and their assembly are
``marsvision.scale.parquet``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np

from ..atomic import atomic_write
from ..errors import UsageError, require
from ..files import sha256_file
from .classifier import Prediction

META_KEY = b"marsvision"
SCHEMA_VERSION = 2  # 2: the ``product`` column (without it, Ray-indexed products lost their label fields)


def pa():
    """pyarrow, imported when first needed: ``import marsvision`` never does, and a missing extra is one line."""
    return require("pyarrow", "Parquet output", "parquet")


def pq():
    return require("pyarrow.parquet", "Parquet output", "parquet")


def schema(settings: dict | None = None):
    """The row schema; ``settings`` (model hash, top-k, …) go into the file's metadata."""
    a = pa()
    top = a.struct([("label", a.string()), ("confidence", a.float64())])
    fields = [
        ("path", a.string()),
        ("sha256", a.string()),
        ("size_bytes", a.int64()),
        ("label", a.string()),
        ("confidence", a.float64()),
        ("unknown", a.bool_()),
        ("novelty", a.float64()),
        ("withheld", a.string()),
        ("top_k", a.list_(top)),
        ("probabilities", a.list_(a.float64())),
        ("features", a.list_(a.float32())),
        ("texture", a.list_(a.float32())),
        ("product", a.string()),
        ("error", a.string()),
    ]
    meta = {META_KEY: json.dumps({"schema": SCHEMA_VERSION, "settings": settings or {}}, sort_keys=True).encode()}
    return a.schema(fields, metadata=meta)


def _vectors(arrays: list[np.ndarray | None], dtype=np.float32):
    """A list<float> column from per-row arrays (None: a null row), built from one flat buffer."""
    a = pa()
    lengths = np.array([0 if x is None else len(x) for x in arrays], np.int64)
    offsets = np.zeros(len(arrays) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    parts = [np.asarray(x, dtype).ravel() for x in arrays if x is not None]
    values = np.concatenate(parts) if parts else np.zeros(0, dtype)
    mask = a.array([x is None for x in arrays], a.bool_())
    return a.ListArray.from_arrays(a.array(offsets), a.array(values, a.from_numpy_dtype(np.dtype(dtype))), mask=mask)


def records_table(
    preds: list[Prediction], sha256: list[str | None], size_bytes: list[int | None], settings: dict | None = None
):
    """Predictions (with their files' hash and size) → one Arrow table in ``schema``."""
    a = pa()
    sch = schema(settings)
    cols = {
        "path": [p.source for p in preds],
        "sha256": list(sha256),
        "size_bytes": list(size_bytes),
        "label": [p.label for p in preds],
        "confidence": [p.confidence for p in preds],
        "unknown": [p.unknown for p in preds],
        "novelty": [p.novelty for p in preds],
        "withheld": [p.withheld for p in preds],
        "top_k": [[{"label": n, "confidence": c} for n, c in p.top_k] if p.ok else None for p in preds],
    }
    arrays = [a.array(cols[f.name], f.type) for f in sch if f.name in cols]
    arrays += [
        _vectors([p.probabilities for p in preds], np.float64),
        _vectors([p.features for p in preds]),
        _vectors([p.texture for p in preds]),
        a.array([None if p.product is None else json.dumps(p.product, sort_keys=True) for p in preds], a.string()),
        a.array([p.error for p in preds], a.string()),
    ]
    return a.Table.from_arrays(arrays, schema=sch)


def _column_vectors(col) -> list[np.ndarray | None]:
    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return [values[offsets[i] : offsets[i + 1]].copy() if valid[i] else None for i in range(len(col))]


def to_predictions(table) -> list[tuple[Prediction, str | None, int | None]]:
    """Rows back into (``Prediction``, sha256, size_bytes): the inverse of ``records_table``."""
    cols = {
        name: table.column(name).to_pylist()
        for name in (
            "path",
            "sha256",
            "size_bytes",
            "label",
            "confidence",
            "unknown",
            "novelty",
            "withheld",
            "top_k",
            "error",
        )
    }
    vecs = {name: _column_vectors(table.column(name)) for name in ("probabilities", "features", "texture")}
    products = table.column("product").to_pylist() if "product" in table.column_names else [None] * len(table)
    out = []
    for i, path in enumerate(cols["path"]):
        top = [(t["label"], t["confidence"]) for t in cols["top_k"][i] or []]
        p = Prediction(
            path,
            label=cols["label"][i],
            confidence=cols["confidence"][i],
            top_k=top,
            error=cols["error"][i],
            novelty=cols["novelty"][i],
            unknown=cols["unknown"][i],
            withheld=cols["withheld"][i],
            probabilities=vecs["probabilities"][i],
            features=vecs["features"][i],
            texture=vecs["texture"][i],
        )
        if products[i] is not None:
            p.set_product(json.loads(products[i]))
        out.append((p, cols["sha256"][i], cols["size_bytes"][i]))
    return out


def settings_of(path: str | os.PathLike) -> dict:
    """The settings a Parquet file of this schema was written with ({} if none)."""
    meta = pq().read_schema(path).metadata or {}
    return json.loads(meta.get(META_KEY, b"{}")).get("settings", {})


def check_settings(path: str | os.PathLike, settings: dict) -> None:
    """Resuming into ``path`` (a shard or an output) is only right with the settings that wrote it."""
    theirs = settings_of(path)
    differ = {k: (theirs.get(k), v) for k, v in settings.items() if theirs.get(k) != v}
    if differ:
        what = ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in sorted(differ.items()))
        raise UsageError(f"{path} was written with other settings ({what}): remove it, or rerun with the same settings")


def write_table(table, path: str | os.PathLike) -> None:
    """Write one Parquet file atomically: a temporary name beside it, fsync, rename."""
    with atomic_write(path, "wb") as f:
        pq().write_table(table, f)


def sha256_or_none(source) -> tuple[str | None, int | None]:
    """(sha256, size) of a file source; (None, None) for an in-memory image or a file that cannot be read."""
    try:
        return sha256_file(source) if isinstance(source, (str, os.PathLike)) else (None, None)
    except OSError:
        return None, None


def write_parquet(
    predictions: Iterable[Prediction],
    path: str | os.PathLike,
    top_k: int = 1,
    withheld: bool = False,
    settings: dict | None = None,
) -> None:
    """``predict --output x.parquet`` of the local engine: every prediction as a row of ``schema``, the
    files hashed for ``sha256``/``size_bytes``; written atomically (a kill leaves the old file or none).
    ``top_k``/``withheld`` only go into the settings: rows keep the top-k the predictions were made with."""
    preds = list(predictions)
    hashed = [sha256_or_none(p.source) for p in preds]
    settings = {"top_k": top_k, "withheld": withheld, **(settings or {})}
    write_table(records_table(preds, [h[0] for h in hashed], [h[1] for h in hashed], settings), path)


def read_paths(path: str | os.PathLike) -> list[str]:
    return pq().read_table(path, columns=["path"]).column("path").to_pylist()
