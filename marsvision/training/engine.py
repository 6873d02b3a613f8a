"""Helpers shared by the training commands: the run folder, class weights, the learning-rate schedule,
the epoch order (replayable on resume), batched inference on decoded images, and split scoring."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import classification_metrics
from ..nets.device import autocast


def run_folder(root: str | os.PathLike, command: str, name: str) -> Path:
    """Every training command writes ``<root>/<command>/<name>/``: config.json, its results, the model file."""
    return Path(root) / command / name


def class_weights(labels: np.ndarray, num_classes: int, power: float) -> torch.Tensor:
    """(C,) weights ∝ count^-power, normalised so the average training example has weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    w *= len(labels) / (w[labels].sum())
    return torch.tensor(w, dtype=torch.float32)


def lr_at(step: int, total: int, warmup: int, peak: float, schedule: str) -> float:
    """Linear warm-up then cosine (or one-cycle-style cosine annealing to peak/1e4)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    floor = peak * (1e-4 if schedule == "onecycle" else 1e-2)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


def epoch_order(labels: np.ndarray, weights: torch.Tensor | None, epoch: int, seed: int) -> torch.Tensor:
    """This epoch's sample indices; depends only on (seed, epoch), so a resume replays it exactly."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    if weights is None:
        return torch.randperm(len(labels), generator=g)
    return torch.multinomial(weights[labels], len(labels), replacement=True, generator=g)


@torch.no_grad()
def predict_logits(model, images_u8, preset, device, batch_size: int = 64) -> torch.Tensor:
    """(N, S, S, 3) uint8 → (N, C) float32 logits."""
    model.eval()
    out = []
    for chunk in images_u8.split(batch_size):
        x = preset(chunk.to(device)).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out.append(model(x).float().cpu())
    return torch.cat(out)


def evaluate(model, images_u8, labels, preset, device, class_names) -> dict:
    """Loss + accuracy/macro-F1/weighted-F1 on a decoded split."""
    logits = predict_logits(model, images_u8, preset, device)
    m = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), class_names)
    m["loss"] = float(F.cross_entropy(logits, labels).item())
    return m
