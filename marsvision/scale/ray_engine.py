"""``--engine ray``: classify (``predict``) and index (``index``) millions of images on a Ray cluster.

Pipeline (Ray Data, streaming): the paths → read bytes, SHA-256 and size (tasks; an unreadable file
becomes an error row with the local engine's message) → decode + classify (``map_batches`` on an actor
pool: each actor loads the model once, from bytes the driver ships, so nodes need no copy of the model
file) → Arrow tables of ``parquet.schema`` rows, which the driver writes as crash-safe Parquet shards
(``parquet.ShardWriter``). ``predict`` then assembles its ``--output FILE.parquet`` atomically;
``index`` (``ray_index.py``) bulk-loads the shards into the database through ``IndexJob.write``, so
both engines write the same rows for the same images.

Exactly once: a path enters the shards once (the writer drops repeats from a retried batch); a killed
actor is restarted by Ray and its batch run again; paths still missing after a pass (a block dropped
after its retries) get another pass, the last one image by image, and an image that keeps killing its
worker becomes an error row. Resumable: a rerun skips paths already in the output or in shards, and
(``index``) contents already in the database.

Sizing (measured on 2 cores, benchmarks/results/scale.md): an actor asks for half a CPU, so the read
tasks always find a free CPU and the pipeline never stalls; the numbers in ``RayOptions`` are the
measured best. Ray is imported only inside functions: this module imports without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import require
from ..files import sha256_file
from ..inference.classifier import Prediction
from ..preprocess import ImageError, load_image
from . import parquet as pqt


@dataclass
class RayOptions:
    """How the pipeline is cut up; the defaults are the measured best on 2 cores (docs/scaling.md)."""

    actors: int = 0  # classifying actors; 0: ACTORS_PER_CPU per CPU of the cluster (at least 1); 3 on 2 CPUs is slower
    actor_cpus: float = 0.5  # logical CPUs an actor reserves: < 1 leaves room for the read tasks (2 x 1.0 stalls)
    actor_threads: int = 1  # decoding and model threads inside one actor (load_model(threads=...))
    batch_size: int = (
        32  # images per actor call (measured: best whole run on full frames; 64 is ~4 % faster on thumbnails)
    )
    read_batch: int = 32  # files per read task call
    read_cpus: float = (
        0.5  # logical CPUs a read task reserves: 0.25 lets Ray start more worker processes than CPUs (each ~1 CPU-s)
    )
    shard_rows: int = pqt.DEFAULT_SHARD_ROWS  # rows per Parquet shard
    passes: int = 3  # runs over the paths still missing; the last one image by image
    stats: dict = field(default_factory=dict)  # filled in: timings of the last run (benchmarks read them)


ACTORS_PER_CPU = 1.0


class _Named(bytes):
    """A file's bytes that print as its path: ``Classifier.predict_iter`` decodes the bytes (no second
    read, no shared file system needed for decoding) and names the ``Prediction`` after the file."""

    def __new__(cls, data: bytes, name: str):
        obj = super().__new__(cls, data)
        obj.name = name
        return obj

    def __str__(self) -> str:
        return self.name


def read_error(path: str, error: OSError) -> str:
    """The reason the local engine gives for a file it cannot open (``preprocess.load_image``'s)."""
    try:
        load_image(path, 8)
    except ImageError as e:
        return str(e)
    except Exception:  # noqa: BLE001 - the OSError below says it well enough
        pass
    return f"corrupt or truncated image: {error}"


def read_files(batch):
    """Read task: paths → (path, data, sha256, size_bytes, error) of each file. A batch with ``sha256`` and
    ``size_bytes`` columns (``index``: the archive hashed every file already) keeps them: each file is hashed
    once, and a PDS product keeps the archive's hash and size of its label and data file together."""
    pa = pqt.pa()
    out: dict[str, list] = {"path": [], "data": [], "sha256": [], "size_bytes": [], "error": []}
    given = (
        list(zip(batch.column("sha256").to_pylist(), batch.column("size_bytes").to_pylist(), strict=True))
        if "sha256" in batch.column_names
        else None
    )
    for i, path in enumerate(batch.column("path").to_pylist()):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            data, sha, size, error = b"", None, None, read_error(path, e)
        else:
            sha, size = given[i] if given else (hashlib.sha256(data).hexdigest(), len(data))
            error = "empty file" if not data else None  # what load_image says of an empty file
        for k, v in zip(out, (path, data, sha, size, error), strict=True):
            out[k].append(v)
    return pa.table(
        {
            "path": pa.array(out["path"], pa.string()),
            "data": pa.array(out["data"], pa.binary()),
            "sha256": pa.array(out["sha256"], pa.string()),
            "size_bytes": pa.array(out["size_bytes"], pa.int64()),
            "error": pa.array(out["error"], pa.string()),
        }
    )


class ClassifyActor:
    """One actor of the pool: the model loaded once, then batches of file bytes → rows."""

    def __init__(
        self,
        model_name: str,
        model_ref: list,
        threads: int,
        top_k: int,
        min_confidence: float,
        settings: dict,
        device: str = "cpu",
    ):
        import ray

        from ..inference.predict import load_model

        self._dir = tempfile.TemporaryDirectory(prefix="marsvision-model-")
        path = Path(self._dir.name) / model_name
        path.write_bytes(ray.get(model_ref[0]))  # in a list: Ray hands the reference over, unresolved
        self.clf = load_model(path, device=device, threads=threads or None)
        self.top_k, self.min_confidence, self.settings = top_k, min_confidence, settings

    def __call__(self, batch):
        paths = batch.column("path").to_pylist()
        errors = batch.column("error").to_pylist()
        data = batch.column("data")
        preds: list[Prediction] = [Prediction(p, error=e) for p, e in zip(paths, errors, strict=True)]
        good = [i for i, e in enumerate(errors) if e is None]
        items = [_Named(data[i].as_py(), paths[i]) for i in good]
        for i, p in zip(good, self.clf.predict_iter(items, top_k=self.top_k), strict=True):
            p.source = paths[i]
            if self.min_confidence > 0:
                p.withhold_below(self.min_confidence)
            preds[i] = p
        return pqt.records_table(
            preds, batch.column("sha256").to_pylist(), batch.column("size_bytes").to_pylist(), self.settings
        )


def connect(address: str = "", num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local instance; True when this call started it."""
    ray = require("ray", "--engine ray", "ray")
    require("ray.data", "--engine ray", "ray")
    if ray.is_initialized():
        return False
    kwargs = {"num_cpus": num_cpus} if not address else {}
    ray.init(
        address=address or "local",
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        **kwargs,
    )
    return True


@contextlib.contextmanager
def ray_session(address: str = ""):
    """Ray for the length of a command: started here (and shut down after) unless already running."""
    started = connect(address)
    try:
        yield require("ray", "--engine ray", "ray")
    finally:
        if started:
            require("ray", "--engine ray", "ray").shutdown()


@contextlib.contextmanager
def _data_context(tolerate_errors: bool):
    """Quiet Ray Data (our own progress bar) and, when asked, let a pass finish past blocks whose tasks
    failed for good (their paths get the next pass); the caller's settings come back after."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")
    old = {n: getattr(ctx, n) for n in names if hasattr(ctx, n)}
    wanted = {
        "enable_progress_bars": False,
        "print_on_execution_start": False,
        "max_errored_blocks": -1 if tolerate_errors else 0,
    }
    logger = logging.getLogger("ray.data")
    level = logger.level
    try:
        for n in old:
            setattr(ctx, n, wanted[n])
        logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors.*")
            yield
    finally:
        for n, v in old.items():
            setattr(ctx, n, v)
        logger.setLevel(level)


def _path_blocks(paths: list[str], rows: int, hashes: dict[str, tuple[str, int]] | None = None):
    """The input as Arrow blocks of at most ``rows`` paths (at least 8 blocks, so small inputs still
    spread over the actors; at most ~10 000, however large the input), with each path's known sha256
    when ``hashes`` has them."""
    pa = pqt.pa()
    rows = max(1, min(rows, math.ceil(len(paths) / 8)), math.ceil(len(paths) / 10_000))
    blocks = []
    for i in range(0, len(paths), rows):
        cols = {"path": pa.array(paths[i : i + rows], pa.string())}
        if hashes is not None:
            cols["sha256"] = pa.array([hashes[p][0] for p in paths[i : i + rows]], pa.string())
            cols["size_bytes"] = pa.array([hashes[p][1] for p in paths[i : i + rows]], pa.int64())
        blocks.append(pa.table(cols))
    return blocks


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1))


def pool_size(opts: RayOptions) -> int:
    if opts.actors:
        return opts.actors
    return max(1, int(cluster_cpus() * ACTORS_PER_CPU))


def classify_dataset(
    paths: list[str],
    model_path: str | os.PathLike,
    settings: dict,
    opts: RayOptions,
    top_k: int = 1,
    min_confidence: float = 0.0,
    device: str = "cpu",
    batch_size: int | None = None,
    read_batch: int | None = None,
    hashes: dict[str, tuple[str, int]] | None = None,
):
    """The lazy Ray Dataset of rows for ``paths`` (read tasks → classifying actor pool); ``hashes``:
    path → (sha256, size) already known, so the read tasks do not hash again."""
    import ray
    import ray.data

    model_path = Path(model_path)
    # The model travels through the object store once; an actor restarted after a kill fetches it again.
    kwargs = {
        "model_name": model_path.name,
        "model_ref": [ray.put(model_path.read_bytes())],
        "threads": opts.actor_threads,
        "top_k": top_k,
        "min_confidence": min_confidence,
        "settings": settings,
        "device": device,
    }
    read_batch = read_batch or opts.read_batch
    ds = ray.data.from_arrow(_path_blocks(paths, read_batch, hashes))
    ds = ds.map_batches(read_files, batch_size=read_batch, batch_format="pyarrow", num_cpus=opts.read_cpus)
    return ds.map_batches(
        ClassifyActor,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size or opts.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=pool_size(opts)),
        num_cpus=opts.actor_cpus,
    )  # Ray Data restarts dead actors and reruns their batches


def classify_to_shards(
    paths: list[str],
    model_path: str | os.PathLike,
    settings: dict,
    writer: pqt.ShardWriter,
    opts: RayOptions,
    top_k: int = 1,
    min_confidence: float = 0.0,
    device: str = "cpu",
    progress: bool = False,
    hashes: dict[str, tuple[str, int]] | None = None,
) -> None:
    """Classify every path not yet in ``writer`` into its shards: exactly one row per path (``hashes``:
    see ``classify_dataset``).

    Up to ``opts.passes`` passes over the paths still missing (the last with one image per batch, so a
    file that kills its worker takes only itself down); what is missing after them becomes an error row.
    A pass that fails and writes nothing raises: the shards written so far stay for a rerun."""
    from tqdm import tqdm

    todo = list(dict.fromkeys(p for p in paths if p not in writer.seen))
    t0 = time.perf_counter()
    first_row = last_row = quarter = None  # quarter: (time, rows) when a quarter of the rows were in
    rows = 0
    reason = ""
    passes = 0
    with tqdm(total=len(todo), desc="classify (ray)", unit="img", disable=not progress) as bar:
        for n in range(max(1, opts.passes)):
            if not todo:
                break
            last = n == opts.passes - 1 and n > 0
            passes += 1
            before = writer.written_rows + writer.pending_rows
            failure = None
            with _data_context(tolerate_errors=True):
                ds = classify_dataset(
                    todo,
                    model_path,
                    settings,
                    opts,
                    top_k,
                    min_confidence,
                    device,
                    batch_size=1 if last else None,
                    read_batch=1 if last else None,
                    hashes=hashes,
                )
                try:
                    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
                        last_row = time.perf_counter() - t0
                        first_row = last_row if first_row is None else first_row
                        rows += batch.num_rows
                        if quarter is None and rows >= len(todo) / 4:
                            quarter = (last_row, rows)
                        had = len(writer.seen)
                        writer.add(batch)
                        bar.update(len(writer.seen) - had)
                except Exception as e:  # noqa: BLE001 - a failed pass: the missing paths get the next one
                    failure = e
            writer.flush()
            todo = [p for p in todo if p not in writer.seen]
            if failure is not None:
                reason = " ".join(f"{type(failure).__name__}: {failure}".split())[:300]
                if writer.written_rows + writer.pending_rows == before:
                    raise RuntimeError(
                        f"the Ray pipeline failed ({reason}); the {writer.written_rows} rows done "
                        f"are kept in {writer.folder}, rerun to resume"
                    ) from failure
        if todo:  # images that took their worker down on every pass
            why = f"not classified: its worker failed on every try ({reason or 'worker died'})"
            writer.add(
                pqt.records_table(
                    [Prediction(p, error=why) for p in todo], [None] * len(todo), [None] * len(todo), settings
                )
            )
            bar.update(len(todo))
    writer.flush()
    # Steady state: the rate over the last three quarters of the rows (the start of the pipeline left out).
    steady = (rows - quarter[1]) / (last_row - quarter[0]) if quarter and last_row > quarter[0] else None
    opts.stats.update(
        seconds=time.perf_counter() - t0,
        first_row_s=first_row,
        steady_rows_per_s=steady,
        passes=passes,
        dropped_repeats=writer.dropped_rows,
        failure=reason or None,
    )


def settings_for(model_path: str | os.PathLike, top_k: int, min_confidence: float = 0.0) -> dict:
    return {"model_sha256": sha256_file(model_path)[0], "top_k": top_k, "min_confidence": min_confidence}
