"""Split the classifier off an exported graph: the ONNX file computes the features, its metadata holds the head.

A marsvision network ends in one linear layer over average-pooled feature maps. ``split_head`` takes that
layer out of the graph (its weight and bias go into the file's metadata, as plain data) and makes the
graph's outputs the pooled ``features`` (N, F) and the feature maps they were pooled from. Every
runtime then computes logits = features · Wᵀ + b in numpy, and from the same two outputs:

- the novelty score (distance of the features to the training images'),
- a class-activation map per class, Σ_c W[k, c] · map_c: exact for a linear head over pooled maps
  (its spatial mean plus the bias is the logit),
- a refitted head (curators' corrections): a new head is new metadata, the graph and its int8
  weights stay byte for byte, so no new quantisation is needed.

Nothing is recomputed: the graph's own tensors become outputs through Identity nodes, so the features of
an int8 file are exactly the (de)quantised values its classifier layer used to read.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import MarsvisionError
from ..inference.onnx_runtime import FEATURES, TEXTURE  # the names the runtime reads

MAP_PREFIX = "feature_map"
# Ops between a pooling node and the classifier that pass the pooled values through unchanged (up to
# int8 rounding) or concatenate them.
PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Identity", "QuantizeLinear", "DequantizeLinear", "Dropout", "Concat"}
POOLS = {"ReduceMean", "GlobalAveragePool"}


class GraphError(MarsvisionError, ValueError):
    """The graph does not end in a linear layer over pooled maps."""


def _linear_head(graph, producer: dict) -> tuple[onnx.NodeProto, np.ndarray, np.ndarray]:
    """The node computing the graph's single output, as (node, W (K, F), b (K,))."""
    if len(graph.output) != 1:
        raise GraphError(f"expected one output (logits), found {[o.name for o in graph.output]}")
    node = producer.get(graph.output[0].name)
    if node is None or node.op_type != "Gemm":
        raise GraphError(f"the output is not made by a Gemm (a linear layer): {node and node.op_type}")
    init = {t.name: t for t in graph.initializer}
    if node.input[1] not in init or len(node.input) < 3 or node.input[2] not in init:
        raise GraphError("the classifier's weight and bias are not constants of the graph")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0):
        raise GraphError("a transposed classifier input (transA) is not supported")
    w = numpy_helper.to_array(init[node.input[1]]).astype(np.float32)
    w = (w if attrs.get("transB", 0) else w.T) * np.float32(attrs.get("alpha", 1.0))  # (K, F)
    b = numpy_helper.to_array(init[node.input[2]]).astype(np.float32) * np.float32(attrs.get("beta", 1.0))
    return node, w, np.broadcast_to(b, (w.shape[0],)).copy()


def _pooled_maps(tensor: str, producer: dict) -> list[str]:
    """The feature maps whose pooled values make up ``tensor``, in the order of its channels."""
    node = producer.get(tensor)
    if node is None:
        raise GraphError(f"{tensor} is not computed from pooled feature maps")
    if node.op_type in POOLS:
        return [node.input[0]]
    if node.op_type not in PASS_THROUGH:
        raise GraphError(f"the classifier's input passes through {node.op_type} ({node.name}), not only pooling")
    inputs = node.input if node.op_type == "Concat" else node.input[:1]
    return [m for i in inputs for m in _pooled_maps(i, producer)]


def _texture_nodes(last_map: str, opset: int) -> list[onnx.NodeProto]:
    """Nodes computing ``texture`` (N, C): the spatial standard deviation of each channel of ``last_map``.

    In the graph, not in numpy: ONNX Runtime computes it in the model's own thread, and the runtime
    fetches (N, C) numbers instead of the whole (N, C, H, W) map (0.35 ms a batch of 4 in numpy)."""

    def mean(x, y, keep):
        if opset >= 18:  # axes became an input
            return [helper.make_node("ReduceMean", [x, "texture_axes"], [y], keepdims=keep, name=f"texture/{y}")]
        return [helper.make_node("ReduceMean", [x], [y], axes=[2, 3], keepdims=keep, name=f"texture/{y}")]

    return (
        mean(last_map, "texture_mean", 1)
        + [
            helper.make_node("Sub", [last_map, "texture_mean"], ["texture_centred"], name="texture/centre"),
            helper.make_node("Mul", ["texture_centred", "texture_centred"], ["texture_square"], name="texture/square"),
        ]
        + mean("texture_square", "texture_var", 0)
        + [helper.make_node("Sqrt", ["texture_var"], [TEXTURE], name="texture/sqrt")]
    )


def split_head(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """The graph without its classifier, with outputs ``features``, ``texture`` and ``feature_map_0..``;
    and the head as plain data: ``{"weight": (K, F), "bias": (K,), "maps": [output names]}``."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    gemm, w, b = _linear_head(graph, producer)
    features = gemm.input[0]
    maps = _pooled_maps(features, producer)
    graph.node.remove(gemm)
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name in gemm.input[1:] and t.name not in used]:
        graph.initializer.remove(t)
    del graph.output[:]
    names = [FEATURES] + [f"{MAP_PREFIX}_{i}" for i in range(len(maps))]
    for name, source in zip(names, [features, *maps], strict=True):
        graph.node.append(helper.make_node("Identity", [source], [name], name=f"output_{name}"))
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    if opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "texture_axes"))
    graph.node.extend(_texture_nodes(maps[0], opset))  # maps[0]: the last map (the head convolution's)
    graph.output.append(helper.make_tensor_value_info(TEXTURE, onnx.TensorProto.FLOAT, None))
    return proto, {"weight": w, "bias": b, "maps": names[1:]}


def with_metadata(proto: onnx.ModelProto, meta: dict) -> onnx.ModelProto:
    """``proto`` with marsvision's ``metadata_props`` for ``meta`` (replacing any it had)."""
    from ..model_file import metadata_props

    del proto.metadata_props[:]
    for k, v in metadata_props(meta, meta.get("precision", "fp32")).items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = (
        f"marsvision {meta['arch']} classifier ({meta.get('precision', 'fp32')}), {len(meta['class_names'])} classes"
    )
    return proto


def features_model(proto: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, dict]:
    """A marsvision file as a features graph (format /2) and its ``meta``: a logits graph (format /1)
    has its classifier moved into the metadata; a features graph is returned as it is."""
    from ..inference.trust import Head
    from ..model_file import parse_metadata

    meta = parse_metadata({p.key: p.value for p in proto.metadata_props}, where)
    if "head" not in meta:
        proto, head = split_head(proto)
        meta["head"] = {**Head(head["weight"], head["bias"]).to_dict(), "maps": head["maps"]}
        proto = with_metadata(proto, meta)
    return proto, meta
