"""Write image sets in the IDX format of MNIST and Fashion-MNIST (LeCun's four files).

Tests use it to make every layout the loader accepts (gzip-compressed or not, flat or in
torchvision's <folder>/raw) and every fault it must name, and to tell util.datasets which
content to expect from the files they wrote.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from util.dataset_files import idx_magic, sha256

IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic, big-endian dimensions, the data in C order."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", idx_magic(array.shape[1:]))
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: str | Path, array: np.ndarray, compress: bool) -> Path:
    """Write `array` (uint8 images (N, H, W) or labels (N,)) as an IDX file at `path`,
    gzip-compressed when `compress`, making its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def clothes_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images and their labels 0..9 (each class a bright band at its own rows,
    plus noise), balanced: class k is every tenth image."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28))
    for k in range(10):
        images[labels == k, 2 * k + 3: 2 * k + 7, 4:24] += 150
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_idx_set(folder: str | Path, train: int, test: int, compress: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """The four files of a generated set in `folder`, named as published (with .gz when
    compressed). Returns the arrays by role, labels as int64 (as util.datasets decodes them)."""
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        images, labels = clothes_like(n, seed + (split == "test"))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    for role, array in arrays.items():
        name = IDX_NAMES[role] + (".gz" if compress else "")
        write_idx(Path(folder) / name, array, compress)
    return {role: (a[:, None] if role.endswith("images") else a.astype(np.int64))
            for role, a in arrays.items()}


def register_idx_set(name: str, arrays: dict[str, np.ndarray], setter=setattr) -> None:
    """Make util.datasets expect the written content for dataset `name` (counts and SHA-256 of
    every array), the way the publisher's files are expected. Tests pass monkeypatch.setattr
    as `setter`, so the real table is put back afterwards."""
    from util.datasets import DATASETS, Expected

    expected = Expected(len(arrays["train_images"]), len(arrays["test_images"]),
                        sha256={role: sha256(a) for role, a in arrays.items()})
    setter(DATASETS[name], "expected", expected)
