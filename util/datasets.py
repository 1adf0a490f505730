"""Image sets, decoded once into uint8 tensors, in the DATASETS registry.

Each decoder reads a dataset the way its owner ships it (torchvision's downloaders and on-disk
formats, scikit-learn's bundled digits) and returns a `DecodedSet`. Decoding happens once per
machine: `load_decoded` keeps the result as a cache file under <data_dir>/cache/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from util.errors import UserError

CACHE_VERSION = 1  # bump when the cache layout changes, so stale files are decoded again


@dataclass
class DecodedSet:
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    def to_dict(self) -> dict:
        return {"version": CACHE_VERSION, "train_x": self.train_x, "train_y": self.train_y,
                "test_x": self.test_x, "test_y": self.test_y, "classes": list(self.classes)}


def _torchvision_set(cls_name: str):
    def decode(root: Path) -> DecodedSet:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        try:
            train = cls(str(root), train=True, download=True)
            test = cls(str(root), train=False, download=True)
        except Exception as error:  # no network, corrupt files: a user can fix either
            raise UserError(
                f"dataset={cls_name.lower()!r}: could not load or download it into "
                f"{str(root)!r} ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
                "copy the dataset's files there or use dataset=digits") from None
        return DecodedSet(_images(train.data), torch.as_tensor(np.asarray(train.targets)),
                          _images(test.data), torch.as_tensor(np.asarray(test.targets)),
                          list(train.classes))
    return decode


def _images(data) -> torch.Tensor:
    """torchvision's arrays (N, H, W, C) uint8 or (N, H, W) -> uint8 (N, C, H, W)."""
    tensor = torch.as_tensor(np.asarray(data))
    if tensor.ndim == 3:
        return tensor.unsqueeze(1).contiguous()
    return tensor.permute(0, 3, 1, 2).contiguous()


def _digits(root: Path) -> DecodedSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values run 0..16 in this set; stretch them onto 0..255 like the other image sets.
    images = torch.as_tensor(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))
    labels = torch.as_tensor(bunch.target.astype(np.int64))
    # The set has no official test split: a fixed 20% (seeded, so every machine agrees).
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return DecodedSet(images[train].unsqueeze(1), labels[train], images[test].unsqueeze(1),
                      labels[test], [str(d) for d in range(10)])


DATASETS = {
    "cifar10": _torchvision_set("CIFAR10"),
    "cifar100": _torchvision_set("CIFAR100"),
    "mnist": _torchvision_set("MNIST"),
    "fashion_mnist": _torchvision_set("FashionMNIST"),
    "digits": _digits,
}


def cache_path(name: str, data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "cache" / f"{name}.pt"


def load_decoded(name: str, data_dir: str | os.PathLike) -> DecodedSet:
    """The dataset as uint8 tensors on the CPU: from the cache file, else decoded and cached."""
    path = cache_path(name, data_dir)
    if path.exists():
        stored = torch.load(path, weights_only=True)
        if stored.get("version") == CACHE_VERSION:
            return DecodedSet(stored["train_x"], stored["train_y"], stored["test_x"],
                              stored["test_y"], stored["classes"])
    decoded = DATASETS[name](Path(data_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(decoded.to_dict(), partial)
    os.replace(partial, path)  # atomic: a concurrent agent sees the old file or the whole new one
    return decoded
