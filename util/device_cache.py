"""Datasets held on the training device, and batches cut from them there.

The uint8 images are moved to the device once per process and kept between trials. A batch is
an index permutation into them; augmentation (random crop with zero padding, horizontal flip,
random erasing) and normalisation run on whole batches on the device. No DataLoader, no PIL,
no per-image Python in the training loop.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from util.datasets import load_decoded

CROP_PADDING = 4  # the standard CIFAR recipe (He et al. 2016): pad 4 pixels, crop back
# Random erasing's ranges as Zhong et al. (2017) give them: a rectangle of 2% to 40% of the
# image, aspect ratio between 0.3 and 1/0.3.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)
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


def device_splits(name: str, data_dir: str, device: torch.device, val_split: float,
                  dataset_dir: str = "") -> Splits:
    """The dataset's splits on `device`, loaded once per process and then reused; files are
    looked for as util.datasets.load_decoded says (dataset_dir: a read-only folder of them)."""
    key = (name, os.path.abspath(data_dir), str(device))
    split_key = key + (val_split,)
    if split_key in _SPLITS:
        return _SPLITS[split_key]
    if key not in _ON_DEVICE:
        decoded = load_decoded(name, data_dir, dataset_dir)
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
    if pixels.shape[1] > 1:
        mean, std = pixels.mean(1), pixels.std(1).clamp_min(1e-6)
    else:  # no training image (the trial's pre-flight check refuses such a split): no scaling
        mean, std = torch.zeros(len(pixels), device=device), torch.ones(len(pixels), device=device)
    splits = Splits(train_x, full["train_y"][train_idx], full["train_x"][val_idx],
                    full["train_y"][val_idx], full["test_x"], full["test_y"],
                    mean, std, full["classes"])
    del pixels
    _SPLITS[split_key] = splits
    return splits


def forget_device_data() -> None:
    """Drop every cached tensor (tests use it to measure a cold start)."""
    _ON_DEVICE.clear()
    _SPLITS.clear()


@dataclass(frozen=True)
class Augmentation:
    """Which whole-batch transforms a training loader applies, and how strongly."""

    crop_padding: int = 0  # random crop after this much zero padding, in pixels (0: none)
    flip: bool = False  # random horizontal flip
    erasing: float = 0.0  # probability of erasing one random rectangle of an image

    @classmethod
    def from_config(cls, cfg) -> Augmentation:
        """From a run config: `augment` switches crop (`crop_padding`) and `flip` on;
        `random_erasing` acts on its own."""
        return cls(cfg.crop_padding if cfg.augment else 0, bool(cfg.augment and cfg.flip),
                   cfg.random_erasing)

    def __bool__(self) -> bool:
        return bool(self.crop_padding or self.flip or self.erasing)


# Each transform is a draw (from one generator, in a fixed order: crop, flip, erasing) and an
# application. A loader draws for its images and applies; a pack draws for each member from
# that member's generator, so its stream is exactly the one it would have alone, then
# applies to all members' images at once.

def draw_crop(n: int, padding: int, generator: torch.Generator,
              device: torch.device) -> torch.Tensor:
    """Per-image (row, column) offsets of a random crop, shape (2, n, 1)."""
    return torch.randint(0, 2 * padding + 1, (2, n, 1), device=device, generator=generator)


def apply_crop(images: torch.Tensor, padding: int, shift: torch.Tensor) -> torch.Tensor:
    """Crop (N, C, H, W) after `padding` pixels of zero padding at the offsets `shift`."""
    return apply_crop_flip(images, padding, shift, None)


def draw_flip(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Which of n images to mirror left-right (probability 1/2 each), bool (n,)."""
    return torch.rand(n, device=device, generator=generator) < 0.5


def apply_flip(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) with the images where `flip` (bool (N,)) is true mirrored left-right."""
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def apply_crop_flip(images: torch.Tensor, padding: int, shift: torch.Tensor | None,
                    flip: torch.Tensor | None) -> torch.Tensor:
    """Crop after `padding` pixels of zero padding at per-image offsets, then mirror the images
    where `flip` is true: apply_flip(apply_crop(...)) bit for bit, as one gather.

    images (N, C, H, W); shift (2, N, 1) row and column offsets, or None when padding is 0;
    flip bool (N,) or None. Pixel (i, j) of image n comes from the padded image's flat index
    (shift_row + i) * (W + 2 padding) + shift_col + j, with j mirrored to W - 1 - j where
    flip: one gather over (N, C, H*W), about twice as fast on a CPU as a row gather and a
    column gather, and free of Python loops on any device.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4) if padding else images
    rows = torch.arange(h, device=device).expand(n, h)
    columns = torch.arange(w, device=device).expand(n, w)
    if flip is not None:
        columns = torch.where(flip[:, None], (w - 1) - columns, columns)
    if shift is not None:
        rows, columns = rows + shift[0], columns + shift[1]
    index = (rows[:, :, None] * (w + 2 * padding) + columns[:, None, :]).view(n, 1, h * w)
    return padded.reshape(n, c, -1).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def draw_erasing(n: int, h: int, w: int, probability: float, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """Random erasing's rectangles (Zhong et al., AAAI 2020, arXiv:1708.04896): bool (n, h, w),
    true inside the rectangle of each image chosen with `probability`.

    Area fraction and aspect ratio are drawn once per image from ERASE_AREA and (log-uniform)
    ERASE_ASPECT; where the paper draws again until the rectangle fits, its sides are clipped
    to the image instead, so all images are handled in one tensor operation.
    """
    draw = torch.rand(4, n, device=device, generator=generator)
    area = (ERASE_AREA[0] + draw[0] * (ERASE_AREA[1] - ERASE_AREA[0])) * h * w
    low, high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(low + draw[1] * (high - low))
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = (draw[2] * (h - eh + 1)).floor()
    left = (draw[3] * (w - ew + 1)).floor()
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (n, h)
    inside_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (n, w)
    chosen = torch.rand(n, device=device, generator=generator) < probability
    return inside_rows[:, :, None] & inside_cols[:, None, :] & chosen[:, None, None]


def apply_erasing(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set the rectangles of a normalised float batch to 0, the dataset's mean after
    normalisation (torchvision's RandomErasing default)."""
    return images.masked_fill(mask[:, None], 0.0)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after `padding` pixels of zero padding, for a batch (N, C, H, W)."""
    return apply_crop(images, padding, draw_crop(len(images), padding, generator,
                                                 images.device))


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of (N, C, H, W) mirrored left-right with probability 1/2."""
    return apply_flip(images, draw_flip(len(images), generator, images.device))


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The CIFAR recipe: crop after 4 pixels of zero padding, then a random flip."""
    return random_flip(random_crop(images, CROP_PADDING, generator), generator)


def random_erasing(images: torch.Tensor, probability: float,
                   generator: torch.Generator) -> torch.Tensor:
    """Random erasing with `probability` on a normalised float batch (N, C, H, W)."""
    n, _, h, w = images.shape
    return apply_erasing(images, draw_erasing(n, h, w, probability, generator, images.device))


class DeviceLoader:
    """Batches of (normalised float images, labels) cut from device tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, batch_size: int, shuffle: bool = False,
                 augment: bool | Augmentation = False, generator: torch.Generator | None = None,
                 drop_last: bool = False, channels_last: bool = False):
        self.images, self.labels = images, labels
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        if not isinstance(augment, Augmentation):  # True: the CIFAR recipe, crop and flip
            augment = Augmentation(CROP_PADDING, True) if augment else Augmentation()
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
            if self.augment.crop_padding:
                images = random_crop(images, self.augment.crop_padding, self.generator)
            if self.augment.flip:
                images = random_flip(images, self.generator)
            images = images.float().mul_(self.scale).add_(self.shift)
            if self.augment.erasing:
                images = random_erasing(images, self.augment.erasing, self.generator)
            yield images.contiguous(memory_format=self.memory_format), self.labels[index]


class PackLoader:
    """Each member's own batches of one training split, stacked member-second for a pack.

    Member k shuffles and augments with its own generator and its own `Augmentation`, drawing
    exactly what a DeviceLoader with that generator draws: a member's batches inside a pack of
    K are the batches it would see alone. The draws are per member; each transform is then
    applied to all members that use it at once. Yields (images (B, K, C, H, W) float,
    normalised; labels (B, K) int64); the ragged last batch is dropped.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, batch_size: int, generators: list[torch.Generator],
                 augmentations: list[Augmentation]):
        self.images, self.labels = images, labels
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        # Batch norm needs more than one image a batch: a subset smaller than one batch is
        # one batch of all of it.
        self.batch_size = min(batch_size, len(labels))
        self.generators, self.augmentations = list(generators), list(augmentations)
        self._orders: torch.Tensor | None = None  # (K, n): this epoch's order of each member
        # members' indices as device tensors, made once: a Python list as an index is copied
        # from the host at every use, which on CUDA waits for the device
        self._indices: dict[tuple[int, ...], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def select(self, indices: list[int]) -> None:
        """Keep only these members (in this order), with their generators as they are."""
        self.generators = [self.generators[i] for i in indices]
        self.augmentations = [self.augmentations[i] for i in indices]
        self._indices.clear()
        if self._orders is not None:  # mid-epoch: the running iteration goes on with them
            self._orders = self._orders[indices]

    def __iter__(self):
        n, size, device = len(self.labels), self.batch_size, self.images.device
        self._orders = torch.stack([torch.randperm(n, device=device, generator=g)
                                    for g in self.generators])
        for step in range(len(self)):
            index = self._orders[:, step * size:(step + 1) * size]  # (K, B)
            k = len(index)
            images = self.images[index.reshape(-1)].view(k, size, *self.images.shape[1:])
            images = self._crop_and_flip(images)
            images = images.float().mul_(self.scale.unsqueeze(0)).add_(self.shift.unsqueeze(0))
            images = self._erase(images)
            yield images.transpose(0, 1).contiguous(), self.labels[index].t()

    def _members(self, wanted) -> list[int]:
        return [k for k, a in enumerate(self.augmentations) if wanted(a)]

    def _index(self, members: list[int]) -> torch.Tensor:
        """`members` as an int64 tensor on the images' device (made on first use)."""
        key = tuple(members)
        if key not in self._indices:
            self._indices[key] = torch.tensor(members, device=self.images.device)
        return self._indices[key]

    def _crop_and_flip(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (K, B, C, H, W): each member's crop, then flip, drawn in that order, applied
        by one apply_crop_flip per crop padding (all members at once when they share it)."""
        size, device = images.shape[1], images.device
        moving = self._members(lambda a: a.crop_padding or a.flip)
        if not moving:
            return images
        shifts, flips = {}, {}
        for k in moving:  # member k's draws, in solo order
            a, g = self.augmentations[k], self.generators[k]
            if a.crop_padding:
                shifts[k] = draw_crop(size, a.crop_padding, g, device)
            flips[k] = (draw_flip(size, g, device) if a.flip
                        else torch.zeros(size, dtype=torch.bool, device=device))
        paddings = sorted({self.augmentations[k].crop_padding for k in moving})
        out = None if len(paddings) == 1 and len(moving) == len(images) else images.clone()
        for padding in paddings:
            chosen = [k for k in moving if self.augmentations[k].crop_padding == padding]
            shift = torch.cat([shifts[k] for k in chosen], 1) if padding else None
            flip = torch.cat([flips[k] for k in chosen])
            if out is None:  # every member, one padding: no copies in and out
                return apply_crop_flip(images.flatten(0, 1), padding, shift,
                                       flip).view(images.shape)
            index = self._index(chosen)
            out[index] = apply_crop_flip(images[index].flatten(0, 1), padding, shift,
                                         flip).view(len(chosen), *images.shape[1:])
        return out

    def _erase(self, images: torch.Tensor) -> torch.Tensor:
        """float (K, B, C, H, W): each erasing member's rectangles, from its generator. No
        list index into the batch: on CUDA a Python list becomes an index tensor copied from
        the host with a stream sync, every step."""
        erasing = self._members(lambda a: a.erasing)
        if not erasing:
            return images
        k, size, _, h, w = images.shape
        masks = [draw_erasing(size, h, w, self.augmentations[j].erasing, self.generators[j],
                              images.device) for j in erasing]
        if len(erasing) == k:
            mask = torch.cat(masks)
        else:  # the others' rectangles are empty: their images stay as they are
            mask = torch.zeros(k * size, h, w, dtype=torch.bool, device=images.device)
            for j, member_mask in zip(erasing, masks):
                mask[j * size:(j + 1) * size] = member_mask
        return apply_erasing(images.flatten(0, 1), mask).view(images.shape)
