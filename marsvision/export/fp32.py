"""torch → ONNX fp32: trace a model with a dynamic batch dimension and write marsvision's metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from .quantize import set_metadata

OPSET = 17


def freeze_same_padding(model, input_size: int) -> int:
    """Replace TF-"SAME" convolutions (timm ``Conv2dSame``) by constant padding + a plain conv.

    Their padding is computed from the input shape at run time, which exports as a dozen shape
    ops per conv that stay in float around the quantised convs; for the model's fixed input size
    the pads are constants. Outputs are bit-identical. Returns the number of convs replaced.
    """
    import math

    from torch import nn

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, a, name=name: sizes.__setitem__(name, tuple(a[0].shape[-2:])))
        for name, m in model.named_modules()
        if type(m).__name__ == "Conv2dSame"
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for h in hooks:
        h.remove()

    def same(i: int, k: int, s: int, d: int) -> int:
        return max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)

    for name, (ih, iw) in sizes.items():
        old = model.get_submodule(name)
        ph = same(ih, old.kernel_size[0], old.stride[0], old.dilation[0])
        pw = same(iw, old.kernel_size[1], old.stride[1], old.dilation[1])
        conv = nn.Conv2d(
            old.in_channels,
            old.out_channels,
            old.kernel_size,
            old.stride,
            0,
            old.dilation,
            old.groups,
            old.bias is not None,
        )
        conv.load_state_dict(old.state_dict())
        parent, _, leaf = name.rpartition(".")
        setattr(
            model.get_submodule(parent) if parent else model,
            leaf,
            nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv),
        )
    return len(sizes)


def export_fp32(model, meta: dict, path: Path) -> None:
    """Trace ``model`` (eval mode) to ONNX with a dynamic batch dimension and marsvision metadata."""
    import warnings

    size = int(meta["input_size"])
    freeze_same_padding(model, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            torch.zeros(2, 3, size, size),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    set_metadata(path, meta, "fp32")
