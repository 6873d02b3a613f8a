"""Run a torch model file (``.pt``, written by ``marsvision train``/``probe``); needs the ``[train]`` extra.

torch and the architectures (``marsvision.nets``) are imported only when such a file is loaded, so
the ONNX path of inference never imports them.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..model_file import ModelFileError
from ..preprocess import normalize
from .classifier import Classifier
from .trust import Head


class TorchClassifier(Classifier):
    """A torch model (from a ``.pt`` checkpoint); bf16 autocast where the CPU supports it, as in training."""

    runtime = "torch"
    batch_size = 32
    autocast = True  # bf16 where the CPU has it (AVX512-BF16/AMX), as in training; False: plain fp32

    def __init__(self, model, meta: dict, device: str = "cpu", threads: int | None = None):
        import torch

        from ..nets.models import last_map_channels, linear_head

        super().__init__(meta, threads)
        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.last_map_channels = last_map_channels(self.model)
        layer = linear_head(self.model)
        self.head = Head(layer.weight.detach().float().cpu().numpy(), layer.bias.detach().float().cpu().numpy())

    def _maps(self, batch_u8: np.ndarray):
        from ..nets.device import autocast
        from ..nets.models import feature_maps

        x = self.torch.from_numpy(normalize(batch_u8, self.mean, self.std)).to(self.device)
        with self.torch.inference_mode(), autocast(self.device) if self.autocast else contextlib.nullcontext():
            return feature_maps(self.model, x.contiguous(memory_format=self.torch.channels_last)).float()

    def feature_maps(self, batch_u8: np.ndarray) -> np.ndarray:
        return self._maps(batch_u8).cpu().numpy()

    def _pooled(self, maps) -> tuple[np.ndarray, np.ndarray]:
        from ..nets.models import pooled_and_texture

        return tuple(t.cpu().numpy() for t in pooled_and_texture(maps, self.last_map_channels))

    def embed(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._pooled(self._maps(batch_u8))  # the maps themselves stay on the device

    def embed_with_maps(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        maps = self._maps(batch_u8)
        return (*self._pooled(maps), maps.cpu().numpy())


def load_torch_model(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> TorchClassifier:
    """A torch checkpoint written by ``marsvision train``/``probe`` (needs the ``[train]`` extra)."""
    try:
        import torch

        from ..nets.checkpoint import build_model, read_model_file
    except ImportError as e:
        raise ModelFileError(
            f"{path}: torch checkpoints need {e.name or 'torch'}; install it with "
            "`pip install 'marsvision[train]'` or use an .onnx model"
        ) from None

    if threads:
        torch.set_num_threads(threads)
    ckpt = read_model_file(path)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return TorchClassifier(build_model(ckpt), meta, device=device, threads=threads)
