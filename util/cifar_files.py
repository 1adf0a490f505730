"""Write image sets in CIFAR-10's own on-disk format (cifar-10-batches-py).

The layout is the real archive's: five pickled `data_batch_N` dicts and a `test_batch`, each
with "data" (rows of 3072 uint8 values, channel-major) and "labels", plus `batches.meta` with
"label_names". (The real files are Python 2 pickles that torchvision loads with latin1, which
yields these str keys.) Tests and benchmarks use it where the real CIFAR-10 cannot be
downloaded; torchvision's own CIFAR10 class reads the result.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def write_cifar10(root: str | Path, per_batch: int, test_size: int, seed: int = 0) -> Path:
    """Write cifar-10-batches-py under `root`: class k images carry a class colour plus noise,
    so a model can learn them. Returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    palette = rng.integers(0, 256, size=(10, 3))

    def batch(n: int, name: str) -> dict:
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(0, 64, size=(n, 3, 32, 32))
        images = np.clip(palette[labels][:, :, None, None] * 0.75 + noise, 0, 255)
        return {"batch_label": name, "labels": labels.tolist(),
                "data": images.astype(np.uint8).reshape(n, 3072),
                "filenames": [f"{name}_{i}.png" for i in range(n)]}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump(batch(per_batch, f"training batch {i} of 5"), handle)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch(test_size, "testing batch 1 of 1"), handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, handle)
    return folder


def checksums(folder: str | Path) -> dict[str, str]:
    """MD5 of each file, in the form torchvision's CIFAR10 tables hold them."""
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest()
            for path in Path(folder).iterdir() if path.is_file()}


def register_with_torchvision(folder: str | Path, setter=setattr) -> None:
    """Make torchvision's CIFAR10 accept these files: it checks each file's MD5 against the
    real archive's, which written files cannot match. Tests pass monkeypatch.setattr as
    `setter`, so the tables are put back afterwards."""
    import torchvision.datasets as tv

    sums = checksums(folder)
    setter(tv.CIFAR10, "train_list",
           [[f"data_batch_{i}", sums[f"data_batch_{i}"]] for i in range(1, 6)])
    setter(tv.CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    setter(tv.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                "md5": sums["batches.meta"]})
