"""Torch-side presets for training (as in torchvision's reference ``presets.py``): batched augmentation
of uint8 tensors and the eval normalisation. Images arrive already decoded and resized by
``marsvision.preprocess.decode``, the path every runtime shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class EvalPreset:
    """uint8 (N, H, W, 3) tensor → normalised float (N, 3, H, W); images were already resized by ``decode``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, batch_u8):
        import torch

        x = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class TrainPreset(EvalPreset):
    """Batched augmentation for rover images, then the eval normalisation.

    Per image: random scale/aspect crop, small rotation and shift (one affine warp, one
    ``grid_sample`` for the whole batch), horizontal flip (measured on val: neutral to helpful for
    fine-tuning; no vertical flip, "horizon" and "ground" depend on up/down), brightness, contrast
    and saturation jitter (exposure and dust vary between sols), occasional grayscale
    (some products are single-band).
    """

    def __init__(
        self,
        mean,
        std,
        scale=(0.35, 1.0),
        ratio=(3 / 4, 4 / 3),
        degrees=15.0,
        hflip=0.5,
        jitter=0.3,
        grayscale=0.1,
        out_size: int | None = None,
    ):
        super().__init__(mean, std)
        # Training below the eval size is cheaper, and random crops enlarge objects, so a lower
        # train size matches the apparent object size at eval time ("FixRes" effect).
        self.out_size = out_size
        self.scale, self.ratio, self.degrees = scale, ratio, degrees
        self.hflip, self.jitter, self.grayscale = hflip, jitter, grayscale

    def __call__(self, batch_u8, generator=None):
        import torch
        import torch.nn.functional as F

        n = batch_u8.shape[0]
        dev = batch_u8.device
        x = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W) in [0, 1]

        def rand(*shape):
            return torch.rand(*shape, generator=generator).to(dev)

        # Random-resized-crop as an affine map of the output grid onto the input ([-1, 1] coords).
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * rand(n)
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * rand(n)
        aspect = torch.exp(log_r)
        sx = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width as a fraction of the image
        sy = torch.sqrt(area / aspect).clamp(max=1.0)
        tx = (1 - sx) * (2 * rand(n) - 1)  # keep the crop inside the frame
        ty = (1 - sy) * (2 * rand(n) - 1)
        angle = math.radians(self.degrees) * (2 * rand(n) - 1)
        flip = torch.where(rand(n) < self.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([sx * cos * flip, -sy * sin, tx], 1),
                torch.stack([sx * sin * flip, sy * cos, ty], 1),
            ],
            1,
        )  # (N, 2, 3)
        size = self.out_size or x.shape[-1]
        grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # Colour jitter, one factor per image: (N, 1, 1, 1).
        j = self.jitter
        b = (1 + j * (2 * rand(n) - 1)).view(n, 1, 1, 1)
        c = (1 + j * (2 * rand(n) - 1)).view(n, 1, 1, 1)
        s = (1 + j * (2 * rand(n) - 1)).view(n, 1, 1, 1)
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (N, 1, H, W)
        x = x * b
        x = (x - gray.mean(dim=(2, 3), keepdim=True) * b) * c + gray.mean(dim=(2, 3), keepdim=True) * b
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        s = torch.where(rand(n).view(n, 1, 1, 1) < self.grayscale, torch.zeros_like(s), s)
        x = (gray + (x - gray) * s).clamp_(0, 1)

        mean = torch.tensor(self.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=dev).view(1, 3, 1, 1)
        return (x - mean) / std
