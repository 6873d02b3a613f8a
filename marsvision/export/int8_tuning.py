"""Quantisation-aware weight tuning before int8 export: nudge conv weights so that their int8 rounding
reproduces the fp32 model (distillation with a straight-through estimator).

ONNX Runtime's static quantiser rounds each conv's BN-folded weights to int8 per output channel, with
the symmetric scale max|w|/127. BN multiplies each output channel by one number, and per-channel
rounding commutes with that, so rounding the unfolded torch weights the same way yields the very int8
weights the quantiser will write. On the bundled model's train-only twin, tuning halves the int8 RMS logit
error on val, 0.261 → 0.132 (benchmarks/results/quantization_multilevel.md; docs/edge-runtime.md).

The tuned float weights are only the quantiser's input: the fp32 files keep the original weights, and the
teacher is the original model, so the int8 file is judged against exactly what it replaces. No labels
are used, only images.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.utils.parametrize as parametrize
from tqdm import tqdm

from ..data.msl import decode_many
from ..preprocess import normalize


class _RoundInt8(torch.autograd.Function):
    """Per-output-channel symmetric int8 rounding of a conv weight (O, I, kh, kw); identity gradient."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        scale = (w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127).clamp_min(1e-12)  # (O, 1, 1, 1)
        return (w / scale).round().clamp(-127, 127) * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class RoundInt8(torch.nn.Module):
    """A parametrisation: the conv sees its weight as int8 would store it."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _RoundInt8.apply(w)


def round_int8(w: torch.Tensor) -> torch.Tensor:
    """What the quantiser stores for ``w``, back in float."""
    return _RoundInt8.apply(w)


def quantised_convs(model: torch.nn.Module, float_convs: Sequence[int]) -> list[torch.nn.Conv2d]:
    """The model's convs in execution order (timm EfficientNets define them in that order), without the
    ones kept in float (indices into that order, as ``--keep-float`` resolves them in the ONNX graph)."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return [c for i, c in enumerate(convs) if i not in set(float_convs)]


def tune_for_int8(
    model: torch.nn.Module,
    paths: Sequence[Path],
    size: int,
    mean,
    std,
    float_convs: Sequence[int],
    epochs: int = 2,
    lr: float = 2e-5,
    batch_size: int = 32,
    threads: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Tune ``model``'s quantised conv weights in place; returns a summary (steps, losses, img/s).

    Loss: mean squared difference of the logits of the classes the model can predict, between the
    original model (teacher, fp32) and the model with int8-rounded weights. BatchNorm stays in eval mode,
    so its statistics (folded into the convs at export) do not move. Images are flipped at random.
    """
    teacher = copy.deepcopy(model).eval()
    model.eval()
    convs = quantised_convs(model, float_convs)
    for p in model.parameters():
        p.requires_grad_(False)
    for conv in convs:
        parametrize.register_parametrization(conv, "weight", RoundInt8())
    params = [conv.parametrizations.weight.original for conv in convs]
    for p in params:
        p.requires_grad_(True)
    rng = np.random.default_rng(seed)
    per_epoch = max(1, len(paths) // batch_size)
    steps = epochs * per_epoch
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc="int8 weight tuning", unit="batch", disable=not progress, leave=False)
    try:
        for _ in range(epochs):
            order = rng.permutation(len(paths))
            for i in range(per_epoch):
                # Decoded per batch (again each epoch): a few % of the step time, and no ~400 MB array
                # of every train image held beside the calibration and check sets.
                batch = decode_many(
                    [paths[j] for j in order[i * batch_size : (i + 1) * batch_size]], size, workers=threads or None
                )  # (B, S, S, 3) uint8
                flip = rng.random(len(batch)) < 0.5
                batch[flip] = batch[flip, :, ::-1]
                x = torch.from_numpy(normalize(batch, mean, std))  # (B, 3, S, S)
                with torch.no_grad():
                    target = teacher(x)  # (B, C)
                live = target.amax(0) > -1e3  # (C,) a probe's absent classes sit at -1e4: leave them out
                loss = ((model(x)[:, live] - target[:, live]) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        bar.close()
        for conv in convs:  # keep the tuned float weights; the quantiser rounds them itself
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)
        for p in model.parameters():
            p.requires_grad_(False)
    seconds = time.perf_counter() - t0
    k = max(1, min(len(losses), per_epoch) // 10)
    return {
        "epochs": epochs,
        "lr": lr,
        "images": len(paths),
        "steps": steps,
        "tuned_convs": len(convs),
        "loss_first": float(np.mean(losses[:k])) if losses else None,
        "loss_last": float(np.mean(losses[-k:])) if losses else None,
        "seconds": round(seconds, 1),
        "img_per_s": round(steps * batch_size / max(seconds, 1e-9), 1),
    }
