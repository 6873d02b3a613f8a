"""The classifier core: a model plus the preprocessing it was trained with → one ``Prediction`` per input.

Runtimes (ONNX Runtime, torch) subclass ``Classifier`` and supply the pooled ``features`` (and the
feature maps, for explanations); the linear head, calibration, novelty, decoding, batching, threading
and the results are shared here. numpy and PIL only: no runtime is imported.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import cameras
from ..preprocess import ImageError, ImageInput, image_files, load_image, resize_uint8
from .trust import Head, Trust, softmax  # noqa: F401  (softmax: part of this module's API)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Prediction:
    """One input's result, or an ``error``.

    ``label``/``confidence``: the most likely class and its calibrated probability; ``top_k``
    [(label, prob)]; ``novelty``: distance to the training images in units of the threshold, and
    ``unknown`` = novelty > 1 (None when the model file carries no novelty data). ``withheld`` says why
    the label was left empty by a ``min_confidence`` rule (``withhold_below``). Arrays for programs:
    ``probabilities`` (K,) in the order of the model's ``class_names``, ``logits`` (K,), ``features`` (F,)
    and ``texture`` (C,), what the novelty is computed from (``Classifier.embed``; both, since the novelty
    has a features part and a texture part).
    """

    source: str
    label: str | None = None
    confidence: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    novelty: float | None = None
    unknown: bool | None = None
    withheld: str | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)
    logits: np.ndarray | None = field(default=None, repr=False)
    features: np.ndarray | None = field(default=None, repr=False)
    texture: np.ndarray | None = field(default=None, repr=False)
    feature_maps: np.ndarray | None = field(default=None, repr=False)  # (F, H, W), only when asked for
    # A PDS product's camera (its archive code, ``cameras.instrument_code``) and whether it is outside the
    # training cameras; None for inputs without a label (plain JPEG/PNG: the archive reads their names).
    instrument: str | None = None
    off_camera: bool | None = None
    product: dict | None = field(default=None, repr=False)  # a PDS product's label fields (``pds.FIELDS``)

    @property
    def ok(self) -> bool:
        return self.error is None

    def set_product(self, fields: dict) -> None:
        """A PDS product's label fields, and the camera they name."""
        self.product, self.instrument = fields, cameras.instrument_code(fields.get("instrument"))
        self.off_camera = cameras.off_camera(fields.get("instrument"))

    def withhold_below(self, min_confidence: float) -> Prediction:
        """Leave the label empty (``withheld`` says why) when the confidence is below ``min_confidence``
        or the image is flagged unknown; the confidence and top-k stay. Returns self."""
        if self.ok and self.label is not None:
            if self.unknown:
                self.withheld = f"unknown image (novelty {self.novelty:.2f} > 1)"
            elif self.confidence < min_confidence:
                self.withheld = f"confidence {self.confidence:.3f} < {min_confidence:g}"
            if self.withheld:
                self.label = None
        return self

    def to_dict(self, top_k: int | None = None, withheld: bool = False, camera: bool | None = None) -> dict:
        """One flat row of plain data: path, label, confidence, unknown, novelty, then instrument and
        off_camera (with ``camera``; by default when this input's camera is known), then with ``top_k`` > 1
        (default: as many as were asked of ``predict``) top1_label, top1_confidence, …, then withheld
        (when asked for) and error. A failed input has None where it has no value."""
        row = {
            "path": self.source,
            "label": self.label,
            "confidence": self.confidence,
            "unknown": self.unknown,
            "novelty": self.novelty,
        }
        if camera or (camera is None and self.off_camera is not None):
            row["instrument"], row["off_camera"] = self.instrument, self.off_camera
        k = len(self.top_k) if top_k is None else top_k
        if k > 1:
            for i in range(k):
                name, prob = self.top_k[i] if i < len(self.top_k) else (None, None)
                row[f"top{i + 1}_label"], row[f"top{i + 1}_confidence"] = name, prob
        if withheld:
            row["withheld"] = self.withheld
        row["error"] = self.error
        return row


def is_single_input(images) -> bool:
    """One image (a path, bytes, a PIL image or an array) rather than a sequence of them."""
    return isinstance(images, (str, os.PathLike, bytes, bytearray, np.ndarray)) or hasattr(images, "getpixel")


def expand_sources(sources: Iterable[ImageInput]) -> Iterator[ImageInput]:
    """Inputs in order, each folder replaced by the image files under it (recursive, sorted)."""
    for s in sources:
        if isinstance(s, (str, os.PathLike)) and Path(s).is_dir():
            yield from image_files(s)
        else:
            yield s


class Classifier:
    """A model plus the preprocessing it was trained with.

    Subclasses supply ``features`` (pooled, the head's input) and ``feature_maps``, and set ``head``;
    ``trust`` (calibration, novelty) comes from the model file. ``meta`` holds at least
    ``class_names``, ``input_size``, ``mean``, ``std`` and ``arch``. The decoding and model thread pools
    are made on first use and kept (a web service calls ``predict`` once per request); ``close()`` or
    a ``with`` block ends them.
    """

    runtime = "base"
    lanes = 1  # batches the model may run at the same time (each call single- or multi-threaded)
    batch_size = 16  # default images per model call
    head: Head | None = None

    def __init__(self, meta: dict, threads: int | None = None):
        self.meta = meta
        self.class_names: list[str] = list(meta["class_names"])
        self.input_size: int = int(meta["input_size"])
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.threads = threads
        self.trust = Trust.from_dict(meta.get("trust"))
        self._pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._pools_lock = threading.Lock()

    def decode(self, source: ImageInput) -> np.ndarray:
        """One input → (S, S, 3) uint8, or ``ImageError``."""
        return self.decode_product(source)[0]

    def decode_product(self, source: ImageInput) -> tuple[np.ndarray, dict | None]:
        """``decode`` and, for a PDS product, its label fields (else None)."""
        img = load_image(source, self.input_size)
        return resize_uint8(img, self.input_size), img.info.get("pds")

    def embed(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 → pooled features (N, F), the head's input, and the texture (N, C): the
        spatial standard deviation of each channel of the last feature map, which novelty reads."""
        raise NotImplementedError(f"{type(self).__name__} has no feature output")

    def features(self, batch_u8: np.ndarray) -> np.ndarray:
        return self.embed(batch_u8)[0]

    def feature_maps(self, batch_u8: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, F, H, W) float32 maps whose spatial means are the features."""
        raise NotImplementedError(f"{type(self).__name__} has no feature maps")

    def embed_with_maps(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``embed`` and ``feature_maps`` of one batch (runtimes do both in one run of the model)."""
        return (*self.embed(batch_u8), self.feature_maps(batch_u8))

    def outputs(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(logits (N, K), features (N, F), texture (N, C)); the last two are None when the model does
        not expose them (an ensemble, an ONNX file of format /1)."""
        f, t = self.embed(batch_u8)
        return self.head(f), f, t

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, K) float32 logits."""
        return self.outputs(batch_u8)[0]

    @property
    def decode_workers(self) -> int:
        return self.threads or min(4, available_cpus())

    def _executors(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        with self._pools_lock:
            if self._pools is None:
                self._pools = (
                    ThreadPoolExecutor(self.decode_workers, thread_name_prefix="marsvision-decode"),
                    ThreadPoolExecutor(max(1, self.lanes), thread_name_prefix="marsvision-model"),
                )
            return self._pools

    def close(self) -> None:
        """End the thread pools (they are made again if the classifier is used after this)."""
        with self._pools_lock:
            pools, self._pools = self._pools, None
        for pool in pools or ():
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _results(
        self, sources: list, arrays: list, errors: list, top_k: int, maps: bool = False, products: list | None = None
    ) -> list[Prediction]:
        good = [i for i, a in enumerate(arrays) if a is not None]
        out = [Prediction(str(s), error=e) for s, e in zip(sources, errors, strict=True)]
        for p, fields in zip(out, products or [], strict=False):
            if fields is not None:
                p.set_product(fields)
        if good:
            batch = np.stack([arrays[i] for i in good])
            if maps:
                feats, texture, feature_maps = self.embed_with_maps(batch)
                logits = self.head(feats)
            else:
                logits, feats, texture = self.outputs(batch)
            probs, novelty = self.trust.apply(logits, texture, feats)
            k = max(1, min(top_k, probs.shape[1]))
            for n, i in enumerate(good):
                p, row = out[i], probs[n]
                best = np.argsort(-row, kind="stable")[:k]
                p.top_k = [(self.class_names[j], float(row[j])) for j in best]
                p.label, p.confidence = p.top_k[0]
                p.probabilities, p.logits = row, logits[n]
                p.features = None if feats is None else feats[n]
                p.texture = None if texture is None else texture[n]
                if maps:
                    p.feature_maps = feature_maps[n]
                if novelty is not None:
                    p.novelty, p.unknown = float(novelty[n]), bool(novelty[n] > 1.0)
        return out

    def _decode_safe(self, source) -> tuple[np.ndarray | None, str | None, dict | None]:
        try:
            array, fields = self.decode_product(source)
            return array, None, fields
        except ImageError as e:
            return None, str(e), None

    def predict_iter(
        self, sources: Iterable[ImageInput], batch_size: int | None = None, top_k: int = 1, maps: bool = False
    ) -> Iterator[Prediction]:
        """Yield one ``Prediction`` per input, in order (folders expanded to their images); bad inputs
        carry ``error`` and never stop the batch.

        A thread pool decodes images (PIL releases the GIL) while the model works: ``self.lanes``
        batches at a time, each in its own thread (ONNX Runtime releases the GIL too). Only about
        ``lanes + 1`` batches are decoded ahead, so memory stays flat however many inputs there are.
        ``maps``: also keep each image's ``feature_maps`` (for explanations; large).
        """
        batch_size = batch_size or self.batch_size
        decoders, models = self._executors()
        lanes = max(1, self.lanes)
        sources = list(expand_sources(sources))
        ahead = (lanes + 1) * batch_size + self.decode_workers
        decoded: deque[Future] = deque()
        running: deque[Future] = deque()
        next_index = 0

        def fill() -> None:
            nonlocal next_index
            while len(decoded) < ahead and next_index < len(sources):
                decoded.append(decoders.submit(self._decode_safe, sources[next_index]))
                next_index += 1

        def classify(chunk: list, futures: list[Future]) -> list[Prediction]:
            got = [f.result() for f in futures]
            arrays, errors, products = zip(*got, strict=True) if got else ((), (), ())
            return self._results(chunk, list(arrays), list(errors), top_k, maps, list(products))

        try:
            fill()
            for start in range(0, len(sources), batch_size):
                chunk = sources[start : start + batch_size]
                futures = [decoded.popleft() for _ in chunk]
                fill()
                running.append(models.submit(classify, chunk, futures))
                if len(running) >= lanes:
                    yield from running.popleft().result()
            while running:
                yield from running.popleft().result()
        finally:
            for f in (*decoded, *running):
                f.cancel()

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        batch_size: int | None = None,
        top_k: int = 1,
        maps: bool = False,
    ) -> list[Prediction]:
        """Classify paths, folders, bytes, PIL images or uint8 arrays; a single input also returns a list."""
        if is_single_input(images):
            images = [images]
        return list(self.predict_iter(images, batch_size=batch_size, top_k=top_k, maps=maps))
