"""Datasets held on the training device, and batches cut from them there.

The uint8 images are moved to the device once per process and kept between trials. A batch is
an index permutation into them; augmentation (random crop with zero padding, horizontal flip)
and normalisation run on whole batches on the device. No DataLoader, no PIL, no per-image
Python in the training loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from util.datasets import load_decoded

CROP_PADDING = 4  # the standard CIFAR recipe (He et al. 2016): pad 4 pixels, crop back
SPLIT_SEED = 0  # the validation split is the same for every run of a study, whatever its seed


@dataclass
class Splits:
    """Train / validation / test tensors on one device, with the train split's statistics."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor  # per channel, on the 0..1 scale
    std: torch.Tensor
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


_ON_DEVICE: dict[tuple, dict[str, torch.Tensor | list]] = {}
_SPLITS: dict[tuple, Splits] = {}


def device_splits(name: str, data_dir: str, device: torch.device, val_split: float) -> Splits:
    """The dataset's splits on `device`, loaded once per process and then reused."""
    key = (name, os.path.abspath(data_dir), str(device))
    split_key = key + (val_split,)
    if split_key in _SPLITS:
        return _SPLITS[split_key]
    if key not in _ON_DEVICE:
        decoded = load_decoded(name, data_dir)
        _ON_DEVICE[key] = {
            "train_x": decoded.train_x.to(device), "train_y": decoded.train_y.to(device),
            "test_x": decoded.test_x.to(device), "test_y": decoded.test_y.to(device),
            "classes": decoded.classes}
    full = _ON_DEVICE[key]
    n = len(full["train_y"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).to(device)
    n_val = int(round(n * val_split))
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    train_x = full["train_x"][train_idx]
    pixels = train_x.float().div_(255).transpose(0, 1).flatten(1)  # (C, N*H*W)
    splits = Splits(train_x, full["train_y"][train_idx], full["train_x"][val_idx],
                    full["train_y"][val_idx], full["test_x"], full["test_y"],
                    pixels.mean(1), pixels.std(1).clamp_min(1e-6), full["classes"])
    del pixels
    _SPLITS[split_key] = splits
    return splits


def forget_device_data() -> None:
    """Drop every cached tensor (tests use it to measure a cold start)."""
    _ON_DEVICE.clear()
    _SPLITS.clear()


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding, and a random horizontal flip, for a uint8 batch
    (N, C, H, W); the draws come from `generator`."""
    return apply_crop_flip(images, *draw_crop_flip(len(images), generator, images.device))


def draw_crop_flip(n: int, generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of `random_crop_flip` for n images: (shifts (2, n, 1), flips (n,))."""
    shift = torch.randint(0, 2 * CROP_PADDING + 1, (2, n, 1), device=device, generator=generator)
    flip = torch.rand(n, device=device, generator=generator) < 0.5
    return shift, flip


def apply_crop_flip(images: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop and flip a uint8 batch (N, C, H, W) as drawn by `draw_crop_flip`.

    The crop is two gathers (rows, then columns) with per-image offsets: about twice as fast
    on a CPU as one four-index gather, and free of Python loops on any device.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (CROP_PADDING,) * 4)
    rows = (shift[0] + torch.arange(h, device=device))[:, None, :, None]  # (n, 1, h, 1)
    cropped = padded.gather(2, rows.expand(n, c, h, w + 2 * CROP_PADDING))
    cols = (shift[1] + torch.arange(w, device=device))[:, None, None, :]  # (n, 1, 1, w)
    cropped = cropped.gather(3, cols.expand(n, c, h, w))
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


class DeviceLoader:
    """Batches of (normalised float images, labels) cut from device tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, batch_size: int, shuffle: bool = False,
                 augment: bool = False, generator: torch.Generator | None = None,
                 drop_last: bool = False, channels_last: bool = False):
        self.images, self.labels = images, labels
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.generator = generator
        # Dropping a ragged last batch keeps batch norm away from a batch of one.
        self.drop_last = drop_last and len(labels) >= batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        device = self.images.device
        order = (torch.randperm(n, device=device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=device))
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.images[index]
            if self.augment:
                images = random_crop_flip(images, self.generator)
            images = images.float().mul_(self.scale).add_(self.shift)
            yield images.contiguous(memory_format=self.memory_format), self.labels[index]


class PackLoader:
    """Each member's own batches of one training split, stacked member-second for a pack.

    Member k shuffles with its own generator and, when `augment[k]`, crops and flips with it,
    drawing exactly what a DeviceLoader with that generator draws: a member's batches inside
    a pack of K are the batches it would see alone. Yields (images (B, K, C, H, W) float,
    normalised; labels (B, K) int64); the ragged last batch is dropped.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, batch_size: int, generators: list[torch.Generator],
                 augment: list[bool]):
        self.images, self.labels = images, labels
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        # Batch norm needs more than one image a batch: a subset smaller than one batch is
        # one batch of all of it.
        self.batch_size = min(batch_size, len(labels))
        self.generators, self.augment = list(generators), list(augment)
        self._orders: torch.Tensor | None = None  # (K, n) this epoch's order of each member

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def select(self, indices: list[int]) -> None:
        """Keep only these members (in this order), with their generators as they are."""
        self.generators = [self.generators[i] for i in indices]
        self.augment = [self.augment[i] for i in indices]
        if self._orders is not None:  # mid-epoch: the running iteration goes on with them
            self._orders = self._orders[indices]

    def __iter__(self):
        n, size, device = len(self.labels), self.batch_size, self.images.device
        self._orders = torch.stack([torch.randperm(n, device=device, generator=g)
                                    for g in self.generators])
        for step in range(len(self)):
            index = self._orders[:, step * size:(step + 1) * size]  # (K, B)
            k = len(index)
            images = self.images[index.reshape(-1)]  # (K*B, C, H, W) uint8
            if any(self.augment):
                images = self._augment(images.view(k, size, *images.shape[1:]))
            images = images.float().mul_(self.scale).add_(self.shift)
            images = images.view(k, size, *images.shape[1:]).transpose(0, 1).contiguous()
            yield images, self.labels[index].t()

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """Crop and flip the augmenting members' images (K, B, C, H, W), each member's draws
        from its own generator, applied to all of them at once."""
        chosen = [k for k, on in enumerate(self.augment) if on]
        draws = [draw_crop_flip(images.shape[1], self.generators[k], images.device)
                 for k in chosen]
        shift = torch.cat([s for s, _ in draws], 1)
        flip = torch.cat([f for _, f in draws])
        picked = images[chosen].flatten(0, 1)
        out = images.clone() if len(chosen) < len(images) else images.flatten(0, 1)
        if len(chosen) < len(images):
            out[chosen] = apply_crop_flip(picked, shift, flip).view(len(chosen), *images.shape[1:])
            return out.flatten(0, 1)
        return apply_crop_flip(picked, shift, flip)
