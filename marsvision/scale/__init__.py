"""Archive scale: classify and index millions of images with Ray, into Parquet and the archive database.

- ``parquet``: crash-safe shards (temporary name, then rename) and the atomic assembly of a final
  ``.parquet`` file, in the row format of ``marsvision.inference.parquet``.
- ``ray_engine``: the classification both Ray commands run: list files → read bytes (tasks) → decode +
  classify (``map_batches`` on an actor pool, the model loaded once per actor) → shards. Exactly once
  and resumable.
- ``ray_predict``: ``predict --engine ray``: shards, then the ``--output`` file assembled from them.
- ``ray_index``: ``index --engine ray``: the archive's ``IndexJob`` classified into shards, then
  bulk-loaded through ``IndexJob.write``.

Needs the ``[ray]`` extra (``[parquet]`` for Parquet output alone). Nothing here imports Ray or pyarrow
when the module is imported: ``import marsvision`` never does, and a missing extra is a one-line error.
"""

from __future__ import annotations

from ..errors import UsageError, require

ENGINES = ("local", "ray")
ENGINE_HELP = "local: this process; ray: a Ray cluster (needs pip install 'marsvision[ray]'; see docs/scaling.md)"
RAY_ADDRESS_HELP = (
    "Ray cluster to join with --engine ray, e.g. ray://head:10001 or auto (default: start a local Ray instance)"
)


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return engine


def predict_engine(cfg) -> str:
    """Check a ``PredictConfig``'s engine and output before any image is read: ``"local"`` or ``"ray"``.
    Unknown engines, a missing extra or ``--engine ray`` without a ``.parquet`` output are one-line errors."""
    engine = check_engine(cfg.engine)
    if engine == "ray":
        if not cfg.output.endswith(".parquet"):
            raise UsageError("--engine ray writes Parquet: give --output FILE.parquet")
        require("ray.data", "--engine ray", "ray")
    if cfg.output.endswith(".parquet"):
        require("pyarrow.parquet", "Parquet output", "parquet")
    return engine
