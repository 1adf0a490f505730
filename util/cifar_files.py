"""Write image sets in CIFAR's own on-disk formats (cifar-10-batches-py, cifar-100-python,
and the .tar.gz archives they ship in).

The layout is the real archive's: five pickled `data_batch_N` dicts and a `test_batch`, each
with "data" (rows of 3072 uint8 values, channel-major) and "labels", plus `batches.meta` with
"label_names"; CIFAR-100 has `train`, `test` ("fine_labels", "coarse_labels") and `meta`.
(The real files are protocol-2 pickles from Python 2, which torchvision loads with latin1 and
which yield these str keys.) Tests and benchmarks use it where the real CIFAR cannot be
downloaded; torchvision's own CIFAR10 class reads the result.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def write_cifar10(root: str | Path, per_batch: int, test_size: int, seed: int = 0,
                  python2: bool = False) -> Path:
    """Write cifar-10-batches-py under `root`: class k images carry a class colour plus noise,
    so a model can learn them. python2: each file pickled as the real ones are, by Python 2's
    cPickle (python2_pickle), not by this Python's pickle. Returns the folder."""
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
        _dump(folder / f"data_batch_{i}", batch(per_batch, f"training batch {i} of 5"), python2)
    _dump(folder / "test_batch", batch(test_size, "testing batch 1 of 1"), python2)
    _dump(folder / "batches.meta", {"label_names": CIFAR10_CLASSES,
                                    "num_cases_per_batch": per_batch, "num_vis": 3072}, python2)
    return folder


def _dump(path: Path, payload: dict, python2: bool = False) -> None:
    if python2:
        path.write_bytes(python2_pickle(payload))
        return
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=2)  # the protocol of the Python 2 originals


def python2_pickle(payload) -> bytes:
    """`payload` (dicts, lists, str, int, 2-d uint8 arrays) pickled as Python 2's cPickle
    wrote CIFAR's batches (protocol 2): strings as byte strings (SHORT_BINSTRING, BINSTRING),
    which Python 3 reads back as str through latin1, and an array as numpy 1's
    numpy.core.multiarray._reconstruct with its data one byte string. Python 3's pickle
    writes neither (BINUNICODE; bytes through _codecs.encode)."""
    out = bytearray(b"\x80\x02")

    def text(value: str | bytes) -> None:
        raw = value.encode("latin1") if isinstance(value, str) else value
        out.extend(b"U" + bytes([len(raw)]) if len(raw) < 256 else
                   b"T" + struct.pack("<i", len(raw)))
        out.extend(raw)

    def number(value: int) -> None:
        out.extend(b"K" + bytes([value]) if 0 <= value < 256 else
                   b"M" + struct.pack("<H", value) if 0 <= value < 65536 else
                   b"J" + struct.pack("<i", value))

    def item(value) -> None:
        if isinstance(value, dict):
            out.extend(b"}(")
            for key, inner in value.items():
                text(key)
                item(inner)
            out.extend(b"u")
        elif isinstance(value, list):
            out.extend(b"](")
            for inner in value:
                item(inner)
            out.extend(b"e")
        elif isinstance(value, (str, bytes)):
            text(value)
        elif isinstance(value, np.ndarray):  # (N, 3072) uint8: the only array these hold
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")
            text(b"b")
            out.extend(b"\x87R(K\x01")
            for size in value.shape:
                number(size)
            out.extend(b"\x86cnumpy\ndtype\n")
            text(b"u1")
            out.extend(b"K\x00K\x01\x87R(K\x03")
            text(b"|")
            out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            text(np.ascontiguousarray(value, np.uint8).tobytes())
            out.extend(b"tb")
        else:
            number(int(value))

    item(payload)
    return bytes(out + b".")


def write_cifar100(root: str | Path, train: int, test: int, seed: int = 0) -> Path:
    """Write cifar-100-python under `root` (one `train` and one `test` pickle, `meta`); fine
    label k is coarse label k // 5. Returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        fine = rng.integers(0, 100, size=n)
        data = rng.integers(0, 256, size=(n, 3072)).astype(np.uint8)
        _dump(folder / name, {"batch_label": f"{name}ing batch 1 of 1", "data": data,
                              "fine_labels": fine.tolist(),
                              "coarse_labels": (fine // 5).tolist(),
                              "filenames": [f"{name}_{i}.png" for i in range(n)]})
    _dump(folder / "meta", {"fine_label_names": [f"fine_{k}" for k in range(100)],
                            "coarse_label_names": [f"coarse_{k}" for k in range(20)]})
    return folder


def write_archive(folder: str | Path, archive: str | Path) -> Path:
    """Pack an extracted CIFAR folder as its .tar.gz: members under the folder's name, as in
    cifar-10-python.tar.gz (cifar-10-batches-py/data_batch_1, ...)."""
    folder, archive = Path(folder), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"{folder.name}/{path.name}")
    return archive


def expected_content(folder: str | Path) -> dict:
    """What a written folder decodes to, read back with plain pickle: counts and the SHA-256
    of each array by role (images uint8 (N, 3, 32, 32), labels int64), as util.datasets
    records the publisher's sets."""
    from util.dataset_files import sha256

    folder = Path(folder)
    cifar100 = (folder / "meta").exists()
    splits = ({"train": ["train"], "test": ["test"]} if cifar100 else
              {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]})
    key = "fine_labels" if cifar100 else "labels"
    arrays = {}
    for split, names in splits.items():
        batches = [pickle.loads((folder / name).read_bytes(), encoding="latin1")
                   for name in names]
        arrays[f"{split}_images"] = np.concatenate(
            [b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        arrays[f"{split}_labels"] = np.concatenate(
            [np.asarray(b[key], dtype=np.int64) for b in batches])
    return {"train": len(arrays["train_labels"]), "test": len(arrays["test_labels"]),
            "sha256": {role: sha256(array) for role, array in arrays.items()}}


def register_expected(name: str, folder: str | Path, setter=setattr) -> None:
    """Make util.datasets expect a written folder's content for dataset `name` ("cifar10",
    "cifar100") where it expects the real set's counts. Tests pass monkeypatch.setattr as
    `setter`, so the real table is put back afterwards."""
    from util.datasets import DATASETS, Expected

    content = expected_content(folder)
    setter(DATASETS[name], "expected",
           Expected(content["train"], content["test"], sha256=content["sha256"]))


def register_fixture(folder: str | Path, setter=setattr) -> None:
    """Make both readers accept a written CIFAR-10 folder: torchvision's CIFAR10 (its MD5
    table names the real files) and util.datasets (see register_expected)."""
    register_with_torchvision(folder, setter)
    register_expected("cifar10", folder, setter)


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
