"""The classifier architectures a sweep can pick, in the MODELS registry.

Each constructor takes (config, input shape (C, H, W), number of classes) and returns an
nn.Module mapping a float batch (N, C, H, W) to logits.
"""

from __future__ import annotations

import torch
from torch import nn


class Dense(nn.Sequential):
    """Three linear layers with ReLU: the plain MLP baseline."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float):
        super().__init__(
            nn.Flatten(),
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )


class ResidualMLPBlock(nn.Module):
    """x -> proj(x) + Linear(ReLU(Linear(LayerNorm(x)))); proj is identity when widths agree."""

    def __init__(self, width_in: int, width_out: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width_in)
        self.body = nn.Sequential(
            nn.Linear(width_in, width_out), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width_out, width_out),
        )
        self.skip = (nn.Identity() if width_in == width_out
                     else nn.Linear(width_in, width_out, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(self.norm(x))


class SkipMLP(nn.Module):
    def __init__(self, in_features: int, widths: list[int], classes: int, dropout: float):
        super().__init__()
        self.stem = nn.Linear(in_features, widths[0])
        self.blocks = nn.Sequential(*(
            ResidualMLPBlock(w_in, w_out, dropout)
            for w_in, w_out in zip(widths[:1] + widths[:-1], widths)))
        self.head = nn.Sequential(nn.LayerNorm(widths[-1]), nn.ReLU(inplace=True),
                                  nn.Linear(widths[-1], classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x.flatten(1))))


class ConvNet(nn.Sequential):
    """Conv blocks (conv, batch norm, ReLU, 2x2 max-pool, dropout), global pool, linear head."""

    def __init__(self, in_channels: int, channels: list[int], kernel_size: int,
                 batch_norm: bool, classes: int, dropout: float, image_size: int):
        layers: list[nn.Module] = []
        size = image_size
        for c_in, c_out in zip([in_channels] + channels[:-1], channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2,
                                 bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if size >= 2:  # stop pooling once the map is 1x1 (8x8 digits with many blocks)
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers.append(nn.Dropout(dropout))
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels[-1], classes)]
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 conv) shortcut (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-18 laid out for 32x32 inputs: a 3x3 stem (no 7x7 conv, no max-pool), four stages
    of two blocks. With SGD momentum 0.9, lr 0.1, weight decay 5e-4, augmentation, cosine over
    ~50+ epochs this layout is known to pass 93% on CIFAR-10 (the README gives the command)."""

    def __init__(self, in_channels: int, width: int, classes: int, dropout: float):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, c_in = [], width
        for stage, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if stage == 0 else 2
            stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _flat(shape: tuple[int, int, int]) -> int:
    return shape[0] * shape[1] * shape[2]


MODELS = {
    "dense": lambda cfg, shape, classes: Dense(_flat(shape), cfg.hidden, classes, cfg.dropout),
    "skip_mlp": lambda cfg, shape, classes: SkipMLP(_flat(shape), cfg.widths, classes,
                                                    cfg.dropout),
    "cnn": lambda cfg, shape, classes: ConvNet(shape[0], cfg.channels, cfg.kernel_size,
                                               cfg.batch_norm, classes, cfg.dropout,
                                               min(shape[1], shape[2])),
    "resnet": lambda cfg, shape, classes: CifarResNet(shape[0], cfg.width, classes,
                                                      cfg.dropout),
}

# Models whose inputs are images rather than flat vectors (channels_last applies to them).
CONV_MODELS = {"cnn", "resnet"}
