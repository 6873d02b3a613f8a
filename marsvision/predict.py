"""Inference API: ``load_model(path)`` → ``Classifier.predict(images)``.

The CLI, benchmarks and evaluation are thin adapters over this module. ``load_model`` reads either
model file kind — an ONNX file (fp32 or int8, run by ONNX Runtime, no torch needed; the bundled
model is one) or a torch checkpoint (``.pt``, needs ``pip install 'marsvision[train]'``).
Preprocessing comes from the model file (input size, mean, std), through ``transforms.decode`` and
``transforms.normalize`` — the same functions that prepared the training and evaluation images.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .model_file import ModelFileError, model_kind
from .transforms import ImageError, ImageInput, decode, normalize

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
BUNDLED_MODEL = "marsvision-lite0.int8.onnx"
BUNDLED_SOURCE = "marsvision-lite0.pt"  # the torch checkpoint the bundled ONNX file is exported from
EXPORT_COMMAND = f"marsvision export --model marsvision/assets/{BUNDLED_SOURCE} --int8 --output marsvision/assets"


def bundled_model_path() -> Path:
    """The model file shipped inside the package (int8 ONNX)."""
    return Path(str(resources.files("marsvision") / "assets" / BUNDLED_MODEL))


def bundled_source_path() -> Path:
    """The torch checkpoint the bundled ONNX model is exported from (``EXPORT_COMMAND``)."""
    return bundled_model_path().with_name(BUNDLED_SOURCE)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits → (N, C) class probabilities (max-subtracted, so large logits do not overflow)."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@dataclass
class Prediction:
    """One input's result: ``label``/``confidence`` and ``top_k`` [(label, prob)], or an ``error``."""

    source: str
    label: str | None = None
    confidence: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Classifier:
    """A model plus the preprocessing it was trained with; subclasses supply ``logits``.

    ``meta`` holds at least ``class_names``, ``input_size``, ``mean``, ``std`` and ``arch``.
    """

    runtime = "base"
    lanes = 1  # batches the model may run at the same time (each call single- or multi-threaded)
    batch_size = 16  # default images per model call

    def __init__(self, meta: dict, threads: int | None = None):
        self.meta = meta
        self.class_names: list[str] = list(meta["class_names"])
        self.input_size: int = int(meta["input_size"])
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.threads = threads

    def decode(self, source: ImageInput) -> np.ndarray:
        """One input → (S, S, 3) uint8, or ``ImageError``."""
        return decode(source, self.input_size)

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, C) float32 logits."""
        raise NotImplementedError

    def _results(self, sources: list, arrays: list, errors: list, top_k: int) -> list[Prediction]:
        good = [i for i, a in enumerate(arrays) if a is not None]
        out = [Prediction(str(s), error=e) for s, e in zip(sources, errors)]
        if good:
            probs = softmax(self.logits(np.stack([arrays[i] for i in good])))
            k = max(1, min(top_k, probs.shape[1]))
            for row, i in zip(probs, good):
                best = np.argsort(-row, kind="stable")[:k]
                out[i].top_k = [(self.class_names[j], float(row[j])) for j in best]
                out[i].label, out[i].confidence = out[i].top_k[0]
        return out

    def _decode_safe(self, source) -> tuple[np.ndarray | None, str | None]:
        try:
            return self.decode(source), None
        except ImageError as e:
            return None, str(e)

    def predict_iter(self, sources: Iterable[ImageInput], batch_size: int | None = None, top_k: int = 1,
                     workers: int | None = None) -> Iterator[Prediction]:
        """Yield one ``Prediction`` per input, in order; bad inputs carry ``error`` and never stop the batch.

        A thread pool decodes images (PIL releases the GIL) while the model works: ``self.lanes``
        batches at a time, each in its own thread (ONNX Runtime releases the GIL too). Only about
        ``lanes + 1`` batches are decoded ahead, so memory stays flat however many inputs there are.
        """
        batch_size = batch_size or self.batch_size
        workers = workers or self.threads or min(4, available_cpus())
        lanes = max(1, self.lanes)
        sources = list(sources)
        ahead = (lanes + 1) * batch_size + workers
        with ThreadPoolExecutor(workers, thread_name_prefix="marsvision-decode") as decoders, \
                ThreadPoolExecutor(lanes, thread_name_prefix="marsvision-model") as models:
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
                return self._results(chunk, [a for a, _ in got], [e for _, e in got], top_k)

            try:
                fill()
                for start in range(0, len(sources), batch_size):
                    chunk = sources[start:start + batch_size]
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

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int | None = None,
                top_k: int = 1) -> list[Prediction]:
        """Classify paths, bytes, PIL images or uint8 arrays; a single input also returns a list."""
        if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or hasattr(images, "getpixel"):
            images = [images]
        return list(self.predict_iter(images, batch_size=batch_size, top_k=top_k))


class TorchClassifier(Classifier):
    """A torch model (from a ``.pt`` checkpoint); bf16 autocast where the CPU supports it, as in training."""

    runtime = "torch"
    batch_size = 32
    autocast = True  # bf16 where the CPU has it (AVX512-BF16/AMX), as in training; False: plain fp32

    def __init__(self, model, meta: dict, device: str = "cpu", threads: int | None = None):
        import torch

        super().__init__(meta, threads)
        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        from .train import autocast

        x = self.torch.from_numpy(normalize(batch_u8, self.mean, self.std)).to(self.device)
        with self.torch.inference_mode(), (autocast(self.device) if self.autocast else contextlib.nullcontext()):
            return self.model(x.contiguous(memory_format=self.torch.channels_last)).float().cpu().numpy()


def load_torch_model(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> TorchClassifier:
    """A torch checkpoint written by ``marsvision train``/``probe`` (needs the ``[train]`` extra)."""
    try:
        import torch
    except ImportError:
        raise ModelFileError(f"{path}: torch checkpoints need torch; install it with "
                             "`pip install 'marsvision[train]'` or use an .onnx model") from None
    from .checkpoint import build_model, read_model_file

    if threads:
        torch.set_num_threads(threads)
    ckpt = read_model_file(path)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return TorchClassifier(build_model(ckpt), meta, device=device, threads=threads)


class EnsembleClassifier(Classifier):
    """Several models voting: logits are the log of their mean class probabilities.

    Members must share class names and preprocessing, so each image is decoded once. Inference
    costs the sum of the members' costs.
    """

    runtime = "ensemble"

    def __init__(self, members: Sequence[Classifier]):
        first = members[0]
        for m in members[1:]:
            if (m.class_names, m.input_size, m.mean, m.std) != (first.class_names, first.input_size, first.mean, first.std):
                raise ModelFileError(f"ensemble members differ in classes or preprocessing: "
                                     f"{first.meta.get('arch')} vs {m.meta.get('arch')}")
        super().__init__({**first.meta, "arch": "+".join(str(m.meta.get("arch")) for m in members),
                          "members": [m.meta for m in members]}, first.threads)
        self.members = list(members)
        self.batch_size = first.batch_size

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        probs = np.mean([softmax(m.logits(batch_u8)) for m in self.members], axis=0)  # (N, C)
        return np.log(probs + 1e-12).astype(np.float32)


def load_model(path: str | os.PathLike | Sequence[str | os.PathLike] | None = None, device: str = "cpu",
               threads: int | None = None) -> Classifier:
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
        from .onnx_classifier import OnnxClassifier

        return OnnxClassifier(path, device=device, threads=threads)
    return load_torch_model(path, device=device, threads=threads)


def expand_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, folders searched recursively for image files (sorted).

    Returns (files, problems) where problems are (path, reason) for arguments that do not exist.
    """
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            problems.append((str(p), "file not found"))
    return files, problems
