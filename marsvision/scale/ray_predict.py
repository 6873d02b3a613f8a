"""``predict --engine ray --output FILE.parquet``: the pipeline of ``ray_engine.py`` into shards, then
FILE assembled from them (``parquet.assemble``); resumable after a kill."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..inference.classifier import expand_sources
from . import check_engine
from . import parquet as pqt
from .ray_engine import RayOptions, classify_to_shards, ray_session, settings_for


@dataclass
class PredictReport:
    files: int = 0
    classified: int = 0  # by this run
    skipped: int = 0  # already in the output or its shards
    rows: int = 0  # in the output file
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, output: str) -> str:
        rate = self.classified / max(self.seconds, 1e-9)
        return (
            f"{self.files} files: {self.classified - len(self.failed)} classified, {len(self.failed)} failed, "
            f"{self.skipped} already in {output} ({rate:.0f} img/s); {self.rows} rows in {output}"
        )


def run_predict(paths: list[str], cfg, opts: RayOptions | None = None, progress: bool | None = None) -> PredictReport:
    """`marsvision predict --engine ray --output FILE.parquet`: every input exactly once in FILE.

    Shards go to FILE.parts/ as they are made; a rerun after a kill skips what FILE or its shards hold,
    then FILE is assembled (atomically) from the old FILE plus the shards. Rows of files that were in an
    earlier run's FILE stay. Paths given twice are classified once."""
    from ..model_file import bundled_model_path

    check_engine(cfg.engine)
    opts = opts or RayOptions()
    if cfg.threads:
        opts.actor_threads = cfg.threads
    if cfg.batch_size:
        opts.batch_size = cfg.batch_size
    progress = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()
    output = Path(cfg.output)
    parts = Path(f"{output}.parts")
    model_path = Path(cfg.model) if cfg.model else bundled_model_path()
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file not found")
    settings = settings_for(model_path, cfg.top_k, cfg.min_confidence)
    files = list(dict.fromkeys(str(s) for s in expand_sources(paths)))
    done: set[str] = set()
    for existing in ([output] if output.is_file() else []) + pqt.shards(parts):
        pqt.check_settings(existing, settings)
        done.update(pqt.read_paths(existing))
    report = PredictReport(files=len(files), skipped=sum(f in done for f in files))
    writer = pqt.ShardWriter(parts, settings, done=done, rows_per_shard=opts.shard_rows)
    if len(done) < len(files) or any(f not in done for f in files):
        with ray_session(cfg.ray_address):
            classify_to_shards(
                files, model_path, settings, writer, opts, cfg.top_k, cfg.min_confidence, cfg.device, progress
            )
    report.classified = writer.written_rows
    report.failed = writer.errors
    report.rows = pqt.assemble(output, parts, settings)
    report.seconds = time.perf_counter() - t0
    return report
