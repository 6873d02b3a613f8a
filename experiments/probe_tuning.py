"""LP-FT of the probe's last stages on cached maps, then WiSE-FT weight interpolation.

Starts from the frozen multi-level probe (``efficientnet_lite0_multilevel``, linear head fitted by
``marsvision.training.probe.fit_head`` and folded in) and fine-tunes only ``blocks[5]``, ``blocks[6]``, the head
convolution and the classifier, with BatchNorm statistics frozen (Kumar et al., "Fine-Tuning can
Distort Pretrained Features", ICLR 2022). The tuned weights are then interpolated with the probe's,
(1 - alpha) * probe + alpha * tuned (Wortsman et al., "Robust fine-tuning of zero-shot models",
CVPR 2022), optionally after averaging several tunings that differ only in their seed (``average``).
The first five stages stay frozen, so their outputs are computed once per training view and tuning
runs on those cached maps: ~130 img/s on 2 CPU cores against ~25 for full fine-tuning.
experiments/partial_finetune.py chose the settings, on val and forward in time.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from marsvision.nets.device import autocast
from marsvision.training.augment import TrainPreset
from marsvision.training.engine import class_weights, epoch_order, lr_at

FROZEN_STAGES = 5  # blocks[:5] stay frozen; blocks[5], blocks[6] and the head are tuned
CPU = torch.device("cpu")


class ProbeTail(torch.nn.Module):
    """The tuned part of a ``MultiLevelLite``: cached stage-5 maps (N, 112, S/16, S/16) → logits (N, K)."""

    def __init__(self, multilevel, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        net = multilevel.net
        self.stage6, self.stage7 = copy.deepcopy(net.blocks[5]), copy.deepcopy(net.blocks[6])
        self.conv_head, self.bn2 = copy.deepcopy(net.conv_head), copy.deepcopy(net.bn2)
        self.classifier = torch.nn.Linear(weight.shape[1], weight.shape[0])
        self.classifier.weight.data, self.classifier.bias.data = weight.clone(), bias.clone()

    def features(self, h: torch.Tensor) -> torch.Tensor:  # (N, 112, S/16, S/16) → (N, 1792)
        x6 = self.stage6(h)  # (N, 192, S/32, S/32)
        x7 = self.stage7(x6)  # (N, 320, S/32, S/32)
        head = self.bn2(self.conv_head(x7))  # (N, 1280, S/32, S/32)
        # Same order as MultiLevelLite.forward_features: head, then the tapped stages.
        return torch.cat([head.mean((2, 3)), x6.mean((2, 3)), x7.mean((2, 3))], 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # → (N, K) logits
        return self.classifier(self.features(h))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # BatchNorm keeps its ImageNet statistics, so the probe stays valid
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        return self

    def fold_into(self, multilevel) -> None:
        """Copy these weights into ``multilevel`` (its classifier must have this one's shape)."""
        net = multilevel.net
        for dst, src in (
            (net.blocks[5], self.stage6),
            (net.blocks[6], self.stage7),
            (net.conv_head, self.conv_head),
            (net.bn2, self.bn2),
            (multilevel.get_classifier(), self.classifier),
        ):
            dst.load_state_dict(src.state_dict())


@torch.no_grad()
def frozen_stage_maps(backbone, images_u8: torch.Tensor, preset, views: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 → (V, N, 112, S/16, S/16) bf16 outputs of the frozen stages.

    View 0 is the image itself; later views are mild random crops, rotations and colour changes
    (seeded), never mirrored: mirrored copies hurt the probe (probe_ablation.md).
    """
    aug = TrainPreset(preset.mean, preset.std, scale=(0.5, 1.0), degrees=10.0, jitter=0.2, grayscale=0.05, hflip=0.0)
    gens = [torch.Generator().manual_seed(100 + v) for v in range(views)]
    net, out = backbone.net, [[] for _ in range(views)]
    for chunk in images_u8.split(64):
        for v in range(views):
            x = (aug(chunk, generator=gens[v]) if v else preset(chunk)).contiguous(memory_format=torch.channels_last)
            with autocast(CPU):
                x = net.bn1(net.conv_stem(x))
                for block in net.blocks[:FROZEN_STAGES]:
                    x = block(x)
            out[v].append(x.to(torch.bfloat16))
    return torch.stack([torch.cat(o) for o in out])


@torch.no_grad()
def _in_batches(fn, maps: torch.Tensor) -> torch.Tensor:
    out = []
    for chunk in maps.split(256):
        with autocast(CPU):
            out.append(fn(chunk.float()).float())
    return torch.cat(out)


def tail_outputs(model: ProbeTail, maps: torch.Tensor) -> torch.Tensor:
    """(N, 112, S/16, S/16) maps → (N, K) float32 logits."""
    return _in_batches(model.eval(), maps)


def probe_features(multilevel, maps: torch.Tensor) -> np.ndarray:
    """(N, 112, S/16, S/16) maps → the probe's (N, 1792) features, through the untuned stages."""
    frozen = ProbeTail(multilevel, torch.zeros(1, multilevel.num_features), torch.zeros(1)).eval()
    return _in_batches(frozen.features, maps).numpy()


def tune_tail(
    start: ProbeTail,
    maps: torch.Tensor,
    rows: np.ndarray,
    y: np.ndarray,
    lr: float,
    epochs: int,
    balance: str = "sampler",
    seed: int = 0,
    progress: bool = False,
) -> tuple[ProbeTail, float]:
    """Fine-tune a copy of ``start`` on the cached maps (V, N, ...) of images ``rows`` (labels ``y``).

    Square-root-balanced sampling ("sampler", as ``train``) or a fully balanced loss ("loss"), AdamW,
    10 % warm-up then cosine, label smoothing 0.1, batch 64, a random view per image; ``progress``
    shows a bar with loss and img/s. Returns the tuned copy and its img/s.
    """
    model = copy.deepcopy(start).train()
    k = model.classifier.out_features
    sampler = class_weights(y, k, 0.5) if balance == "sampler" else None
    # The loss sees only the classes present in ``y``: an absent class keeps its -1e4 bias, and label
    # smoothing would otherwise push its logit up without end through the tuned features (in a
    # forward fold that cost 40 pt of accuracy).
    present = torch.from_numpy(np.unique(y))
    loss_w = class_weights(y, k, 1.0)[present] if balance == "loss" else None
    to_present = torch.full((k,), -1, dtype=torch.long)
    to_present[present] = torch.arange(len(present))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.02)
    labels, rows, batch = to_present[torch.from_numpy(y)], torch.from_numpy(rows), 64
    per_epoch = max(1, len(y) // batch)
    total, g, t0 = epochs * per_epoch, torch.Generator().manual_seed(seed), time.perf_counter()
    bar = tqdm(total=total, desc="tuning", unit="step", disable=not progress, leave=False)
    for epoch in range(epochs):
        order = epoch_order(y, sampler, epoch, seed)
        for i in range(per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            view = torch.randint(0, maps.shape[0], (len(idx),), generator=g)
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * per_epoch + i, total, total // 10, lr, "cosine")
            with autocast(CPU):
                logits = model(maps[view, rows[idx]].float())[:, present]  # (B, classes present)
            loss = F.cross_entropy(logits.float(), labels[idx], weight=loss_w, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{bar.n * batch / (time.perf_counter() - t0):.0f}")
    bar.close()
    return model, total * batch / max(time.perf_counter() - t0, 1e-9)


def average(models: list[ProbeTail], weights: list[float] | None = None) -> ProbeTail:
    """Every float tensor as the weighted sum over ``models`` (default: uniform, a "model soup" of
    tunings from one start, Wortsman et al., ICML 2022); other tensors come from the last model."""
    weights = weights or [1 / len(models)] * len(models)
    out, states = copy.deepcopy(models[0]), [m.state_dict() for m in models]
    out.load_state_dict(
        {
            k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) if v.is_floating_point() else states[-1][k]
            for k, v in states[0].items()
        }
    )
    return out


def interpolate(start: ProbeTail, tuned: ProbeTail, alpha: float) -> ProbeTail:
    """WiSE-FT: every float tensor (1 - alpha) * start + alpha * tuned."""
    return average([start, tuned], [1 - alpha, alpha])
