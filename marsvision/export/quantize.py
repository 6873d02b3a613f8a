"""int8 for `marsvision export`: ONNX Runtime static QDQ quantisation and the ONNX metadata it writes.

``quantize_int8`` takes the options as plain data (``export.onnx.quant_options``), which the int8 file's
metadata and export.json record. Options are chosen by measurement on val (benchmarks/quantization.py);
``keep_float`` names what stays float.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx

from ..errors import UsageError


def set_metadata(path: Path, meta: dict, precision: str) -> None:
    """Write marsvision's ``metadata_props`` into the ONNX file at ``path`` (in place)."""
    from .head import with_metadata

    onnx.save(with_metadata(onnx.load(str(path)), {**meta, "precision": precision}), str(path))


def calibration_reader(images_u8: np.ndarray, mean, std, batch_size: int = 10):
    """An ORT ``CalibrationDataReader`` over uint8 images, normalised exactly as at inference.

    It supports ``set_range`` so the calibrator can collect in small chunks (histogram methods
    otherwise hold every activation of every image in memory at once).
    """
    from onnxruntime.quantization import CalibrationDataReader

    from ..preprocess import normalize

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = (len(images_u8) + batch_size - 1) // batch_size
            self.set_range(0, self.batches)

        def __len__(self) -> int:
            return self.batches

        def set_range(self, start_index: int, end_index: int) -> None:
            self.i, self.end = start_index, end_index

        def get_next(self):
            if self.i >= self.end:
                return None
            x = normalize(images_u8[self.i * batch_size : (self.i + 1) * batch_size], mean, std)
            self.i += 1
            return {"input": x}

        def rewind(self) -> None:
            self.set_range(0, self.batches)

    return Reader()


def quantize_int8(fp32_path: Path, out_path: Path, calib_u8: np.ndarray, meta: dict, options: dict) -> None:
    """Pre-process (shape inference, constant folding), calibrate and quantise to QDQ int8.

    ``options``: activation_type and weight_type (uint8 | int8), per_channel, calib_method (minmax |
    entropy | percentile) with its percentile, keep_float (names for ``resolve_nodes``).
    """
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    for name, value, valid in (
        ("activation type", options["activation_type"], types),
        ("weight type", options["weight_type"], types),
        ("calibration", options["calib_method"], methods),
    ):
        if value not in valid:
            raise UsageError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    prep = out_path.with_name(out_path.stem + ".prep.onnx")
    quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=True)
    keep_float = resolve_nodes(prep, options["keep_float"])
    extra = {"CalibStridedMinMax": 1}  # collect one reader batch at a time (bounded memory)
    if options["calib_method"] == "percentile":
        extra["CalibPercentile"] = options["percentile"]
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(max(level, logging.ERROR))  # ORT logs a line per tensor and prints its progress
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(prep),
            str(out_path),
            calibration_reader(calib_u8, meta["mean"], meta["std"]),
            quant_format=QuantFormat.QDQ,
            per_channel=options["per_channel"],
            activation_type=types[options["activation_type"]],
            weight_type=types[options["weight_type"]],
            calibrate_method=methods[options["calib_method"]],
            nodes_to_exclude=keep_float,
            extra_options=extra,
        )
    root.setLevel(level)
    prep.unlink()
    set_metadata(out_path, {**meta, "quantization": {**options, "float_nodes": keep_float}}, "int8")


def resolve_nodes(model_path: Path, names: list[str]) -> list[str]:
    """Node names for ``--keep-float``: 'first:K' / 'last:K' → the first / last K Conv nodes (graph order), 'stem' →
    'first:1', 'classifier' → the last Gemm/MatMul; any other entry must be a node name."""
    return _resolve(onnx.load(str(model_path), load_external_data=False).graph.node, names)


def _resolve(nodes, names: list[str]) -> list[str]:
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    known = {n.name for n in nodes}
    out: list[str] = []
    for name in names:
        if name == "stem":
            name = "first:1"
        if name.startswith("first:") and name[6:].isdigit():
            out += convs[: int(name[6:])]
        elif name.startswith("last:") and name[5:].isdigit():
            out += convs[len(convs) - int(name[5:]) :]
        elif name == "classifier":
            out += heads[-1:]
        elif name in known:
            out.append(name)
        else:
            raise UsageError(
                f"--keep-float: no node {name!r} in the graph "
                "(use 'first:K', 'last:K', 'stem', 'classifier' or a node name)"
            )
    return list(dict.fromkeys(out))


def float_conv_indices(model_path: Path, keep_float: list[str]) -> list[int]:
    """Positions, among the graph's Conv nodes in order, of the convs ``--keep-float`` leaves in float."""
    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    keep = set(_resolve(nodes, keep_float))
    return [i for i, name in enumerate(convs) if name in keep]
