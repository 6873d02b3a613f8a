"""Archive scale: classify and index millions of images with Ray, into Parquet and the archive database.

- ``parquet``: the row schema (path, sha256, label, confidence, unknown, novelty, top-k, probabilities,
  features, texture, error), crash-safe shards (temporary name, then rename) and the atomic assembly
  of a final ``.parquet`` file; ``write_parquet`` is ``predict --output x.parquet`` for the local engine.
- ``ray_engine``: ``predict --engine ray``, and the classification ``index --engine ray`` runs: list
  files → read bytes (tasks) → decode + classify (``map_batches`` on an actor pool, the model loaded
  once per actor) → shards. Exactly once and resumable.
- ``ray_index``: ``index --engine ray``: hashing by Ray tasks, then the shards bulk-loaded through the
  local indexer's ``write_batch``.

Needs the ``[ray]`` extra (``[parquet]`` for Parquet output alone). Nothing here imports Ray or pyarrow
when the module is imported: ``import marsvision`` never does, and a missing extra is a one-line error.
"""

from __future__ import annotations

import importlib

ENGINES = ("local", "ray")
ENGINE_HELP = "local: this process; ray: a Ray cluster (needs pip install 'marsvision[ray]'; see docs/scaling.md)"
RAY_ADDRESS_HELP = (
    "Ray cluster to join with --engine ray, e.g. ray://head:10001 or auto (default: start a local Ray instance)"
)


class NeedsExtraError(RuntimeError):
    """A feature needs packages of an extra that is not installed; the message names the install command."""


def require(module: str, feature: str, extra: str):
    """Import ``module`` or raise ``NeedsExtraError`` naming ``pip install 'marsvision[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NeedsExtraError(f"{feature} needs {e.name or module}: pip install 'marsvision[{extra}]'") from None


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return engine


def predict_engine(cfg) -> str:
    """Check a ``PredictConfig``'s engine and output before any image is read: ``"local"`` or ``"ray"``.
    Unknown engines, a missing extra or ``--engine ray`` without a ``.parquet`` output are one-line errors."""
    engine = check_engine(cfg.engine)
    if engine == "ray":
        if not cfg.output.endswith(".parquet"):
            raise ValueError("--engine ray writes Parquet: give --output FILE.parquet")
        require("ray.data", "--engine ray", "ray")
    if cfg.output.endswith(".parquet"):
        require("pyarrow.parquet", "Parquet output", "parquet")
    return engine
