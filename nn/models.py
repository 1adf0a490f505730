"""The classifier architectures a sweep can pick, in the MODELS registry.

Each constructor takes (config, input shape (C, H, W), number of classes) and returns an
nn.Sequential of named layers (`fc1`, `conv2`, `bn2`, `drop1`, `head`...) mapping a float batch
(N, C, H, W) to logits (N, classes). Forward passes call modules only (no tensor-shape calls),
so that nn.packed can swap every leaf for its fused K-member version.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class Dense(nn.Sequential):
    """Three linear layers with ReLU: the plain MLP baseline.

    Layers: flatten, fc1, relu1, drop1, fc2, relu2, drop2, fc3.
    """

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float):
        super().__init__(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(in_features, hidden)), ("relu1", nn.ReLU(inplace=True)),
            ("drop1", nn.Dropout(dropout)),
            ("fc2", nn.Linear(hidden, hidden)), ("relu2", nn.ReLU(inplace=True)),
            ("drop2", nn.Dropout(dropout)),
            ("fc3", nn.Linear(hidden, classes)),
        ]))


class ResidualMLPBlock(nn.Module):
    """x -> skip(x) + fc2(drop(relu(fc1(norm(x))))); skip is identity when widths agree, else
    a bias-free linear projection."""

    def __init__(self, width_in: int, width_out: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width_in)
        self.fc1 = nn.Linear(width_in, width_out)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width_out, width_out)
        self.skip = (nn.Identity() if width_in == width_out
                     else nn.Linear(width_in, width_out, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.fc2(self.drop(self.relu(self.fc1(self.norm(x)))))


class SkipMLP(nn.Sequential):
    """A linear stem, pre-norm residual MLP blocks, then LayerNorm, ReLU and a linear head.

    Layers: flatten, stem, block1..blockN (each norm, fc1, relu, drop, fc2, skip), norm, relu,
    head.
    """

    def __init__(self, in_features: int, widths: list[int], classes: int, dropout: float):
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten()),
                                               ("stem", nn.Linear(in_features, widths[0]))]
        for i, (w_in, w_out) in enumerate(zip(widths[:1] + widths[:-1], widths), start=1):
            layers.append((f"block{i}", ResidualMLPBlock(w_in, w_out, dropout)))
        layers += [("norm", nn.LayerNorm(widths[-1])), ("relu", nn.ReLU(inplace=True)),
                   ("head", nn.Linear(widths[-1], classes))]
        super().__init__(OrderedDict(layers))


class ConvNet(nn.Sequential):
    """Conv blocks (conv, batch norm, ReLU, 2x2 max-pool, dropout), global pool, linear head.

    Layers: conv1, bn1, relu1, pool1, drop1, conv2, ..., global_pool, flatten, head (bnI is
    absent without batch norm, poolI once the map is 1x1).
    """

    def __init__(self, in_channels: int, channels: list[int], kernel_size: int,
                 batch_norm: bool, classes: int, dropout: float, image_size: int):
        layers: list[tuple[str, nn.Module]] = []
        size = image_size
        for i, (c_in, c_out) in enumerate(zip([in_channels] + channels[:-1], channels), start=1):
            layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, kernel_size,
                                                 padding=kernel_size // 2, bias=not batch_norm)))
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
            layers.append((f"relu{i}", nn.ReLU(inplace=True)))
            if size >= 2:  # stop pooling once the map is 1x1 (8x8 digits with many blocks)
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
                size //= 2
            layers.append((f"drop{i}", nn.Dropout(dropout)))
        layers += [("global_pool", nn.AdaptiveMaxPool2d(1)), ("flatten", nn.Flatten()),
                   ("head", nn.Linear(channels[-1], classes))]
        super().__init__(OrderedDict(layers))


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 conv) shortcut (He et al. 2016).

    Layers: conv1, bn1, relu1, conv2, bn2, shortcut (empty, or conv and bn), relu2.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c_in, c_out, 1, stride, bias=False)),
                ("bn", nn.BatchNorm2d(c_out))]))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Sequential):
    """ResNet-18 laid out for 32x32 inputs: a 3x3 stem (no 7x7 conv, no max-pool), four stages
    of two blocks. With SGD momentum 0.9, lr 0.1, weight decay 5e-4, augmentation, cosine over
    ~50+ epochs this layout is known to pass 93% on CIFAR-10 (the README gives the command).

    Layers: conv1, bn1, relu1, stage1..stage4 (each block1, block2), global_pool, flatten,
    drop, head.
    """

    def __init__(self, in_channels: int, width: int, classes: int, dropout: float):
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)),
            ("bn1", nn.BatchNorm2d(width)), ("relu1", nn.ReLU(inplace=True))]
        c_in = width
        for stage, c_out in enumerate([width, 2 * width, 4 * width, 8 * width], start=1):
            stride = 1 if stage == 1 else 2
            layers.append((f"stage{stage}", nn.Sequential(OrderedDict([
                ("block1", BasicBlock(c_in, c_out, stride)),
                ("block2", BasicBlock(c_out, c_out, 1))]))))
            c_in = c_out
        layers += [("global_pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
                   ("drop", nn.Dropout(dropout)), ("head", nn.Linear(c_in, classes))]
        super().__init__(OrderedDict(layers))


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
