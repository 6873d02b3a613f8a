"""Run an exported ONNX model file (fp32 or int8) with ONNX Runtime: no torch needed.

An exported file is self-describing: ``marsvision export`` writes the class names, input size,
normalisation and architecture into the ONNX ``metadata_props`` (``model_file.metadata_props``),
so ``OnnxClassifier`` needs nothing but the file. Preprocessing is the shared numpy/PIL
``preprocess.decode`` + ``preprocess.normalize``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..model_file import ModelFileError, parse_metadata
from ..preprocess import normalize
from .classifier import Classifier, available_cpus
from .trust import Head

FEATURES, TEXTURE = "features", "texture"  # graph outputs of a format /2 file (export/head.py)

MAX_LANES = 4  # concurrent batches at most (memory: each holds its own activations)


def session_options(threads: int):
    """ONNX Runtime settings, chosen deliberately (docs/edge-runtime.md).

    - all graph optimisations: Conv+Clip fusion, QDQ → QLinearConv int8 kernels, constant folding;
    - ``threads`` intra-op threads per run, no inter-op pool (the graph is a single chain);
    - no spin-waiting: idle model threads must leave the CPU to the image-decoding threads.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only; ORT warnings are not actionable for users
    return so


class OnnxClassifier(Classifier):
    """An exported marsvision ONNX file run by ONNX Runtime on the CPU (or CUDA when available)."""

    runtime = "onnxruntime"
    # Small batches: the int8 kernels are as fast at 4 images as at 32 (cache-resident activations)
    # and peak memory is far lower (end to end, 2 threads: 4 → 127 MB, 16 → 302 MB RSS).
    batch_size = 4

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError(f"{path}: ONNX models need onnxruntime (`pip install onnxruntime`)") from None
        path = Path(path)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UsageError(f"--device {device}: this onnxruntime has no CUDA provider; use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        # N threads: up to MAX_LANES batches in flight, the threads split among them. Independent
        # single-threaded runs beat one run on N threads when decoding shares the cores (no
        # barrier waits on a preempted worker): 337 vs 319 img/s end to end on 2 cores.
        n = threads or available_cpus()
        self.lanes = min(n, MAX_LANES)
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(max(1, n // self.lanes)), providers=providers
            )
        except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph, NotImplemented, ...
            reason = " ".join(str(e).split())[:200]
            raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: {reason})") from None
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        super().__init__(meta, threads)
        self.path = path
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        size = meta["input_size"]
        if (
            len(inputs) != 1
            or len(shape) != 4
            or shape[1] != 3
            or any(isinstance(d, int) and d != size for d in shape[2:])
        ):
            raise ModelFileError(
                f"{path}: model input {[(i.name, i.shape) for i in inputs]} is not "
                f"one (N, 3, {size}, {size}) image batch"
            )
        self.input_name, self.precision = inputs[0].name, meta["precision"]
        names = [o.name for o in outputs]
        if "head" in meta:  # format /2: features and maps out of the graph, the head in numpy
            try:
                self.head = Head.from_dict(meta["head"])
            except (KeyError, ValueError, TypeError) as e:
                raise ModelFileError(f"{path}: broken head in the metadata ({type(e).__name__}: {e})") from None
            self.map_names = list(meta["head"].get("maps", []))
            missing = [n for n in [FEATURES, TEXTURE, *self.map_names] if n not in names]
            if (
                missing
                or self.head.weight.shape[0] != len(self.class_names)
                or self.head.bias.shape != (len(self.class_names),)
            ):
                raise ModelFileError(
                    f"{path}: outputs {names} and head {self.head.weight.shape} do not fit "
                    f"{len(self.class_names)} classes (missing: {missing})"
                )
        else:  # format /1: a logits graph
            n_out = outputs[0].shape[-1] if outputs and outputs[0].shape else None
            if not outputs or (isinstance(n_out, int) and n_out != len(self.class_names)):
                raise ModelFileError(
                    f"{path}: model output {outputs[0].shape if outputs else None} does not "
                    f"have {len(self.class_names)} classes"
                )
            self.logits_name = names[0]

    def _run(self, names: list[str], batch_u8: np.ndarray) -> list[np.ndarray]:
        return self.session.run(names, {self.input_name: normalize(batch_u8, self.mean, self.std)})

    def embed(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.head is None:
            return super().embed(batch_u8)
        features, texture = self._run([FEATURES, TEXTURE], batch_u8)
        return features, texture

    def feature_maps(self, batch_u8: np.ndarray) -> np.ndarray:
        if self.head is None or not self.map_names:
            return super().feature_maps(batch_u8)
        return np.concatenate(self._run(self.map_names, batch_u8), axis=1)

    def embed_with_maps(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.head is None or not self.map_names:
            return super().embed_with_maps(batch_u8)
        features, texture, *maps = self._run([FEATURES, TEXTURE, *self.map_names], batch_u8)
        return features, texture, np.concatenate(maps, axis=1)

    def outputs(self, batch_u8: np.ndarray):
        if self.head is None:
            return self._run([self.logits_name], batch_u8)[0], None, None
        return super().outputs(batch_u8)
