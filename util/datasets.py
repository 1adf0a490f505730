"""Image sets, decoded once into uint8 tensors, in the DATASETS registry.

A set is looked for, in order: the decoded cache (<data_dir>/cache/<name>.pt); data_dir in
torchvision's layout; the publisher's files in data_dir, then in `dataset_dir`; a known system
copy (Debian's); only then a download through torchvision. Files are checked by what they
decode to (util.dataset_files), and nothing is cached from a file that fails a check.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from util.dataset_files import (
    BadFile,
    CifarArchive,
    CifarFolder,
    cifar_images,
    read_idx,
    sha256,
    unpickle_batch,
)
from util.errors import UserError, brief, one_line
from util.torch_files import write_torch_file

if TYPE_CHECKING:
    import torch

CACHE_VERSION = 2  # 2: files checked by content; bump when the layout changes
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass
class DecodedSet:
    """An image set decoded once: uint8 images, int64 labels, class names, its source."""

    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str = ""  # where the files were read from

    def to_dict(self) -> dict:
        return {"version": CACHE_VERSION, "train_x": self.train_x, "train_y": self.train_y,
                "test_x": self.test_x, "test_y": self.test_y, "classes": list(self.classes),
                "source": self.source}


@dataclass
class Expected:
    """What a publisher's files decode to, recorded once from the real files.

    train / test: image counts; per_class: images of each class, (train list, test list);
    sha256: util.dataset_files.sha256 of each decoded array by role (images uint8
    (N, C, H, W), labels int64), None where the real files were not at hand.
    """

    train: int
    test: int
    per_class: tuple[list[int], list[int]] | None = None
    sha256: dict[str, str] | None = None


def _fail_unless_expected(title: str, expected: Expected, arrays: dict[str, np.ndarray],
                          where: dict[str, str], classes: int) -> None:
    """Raise BadFile for decoded arrays that are not the publisher's set."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise BadFile(where[f"{split}_labels"], f"{len(labels)} labels for the "
                          f"{len(images)} images of {where[f'{split}_images']}")
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise BadFile(where[f"{split}_labels"], f"labels run {labels.min()}.."
                          f"{labels.max()}, expected 0..{classes - 1}")
        want = getattr(expected, split)
        if len(images) != want:
            raise BadFile(where[f"{split}_images"], f"{len(images)} images, but {title}'s "
                          f"{split} set has {want}")
        if expected.per_class is not None:
            counts = np.bincount(labels, minlength=classes).tolist()
            per_class = list(expected.per_class[split == "test"])
            if counts != per_class:
                raise BadFile(where[f"{split}_labels"], f"class counts {counts}, but "
                              f"{title}'s {split} set has {per_class}")
    for role, want in (expected.sha256 or {}).items():
        got = sha256(arrays[role])
        if got != want:
            raise BadFile(where[role], f"decodes to other {role.split('_')[1]} than {title}'s "
                          f"(sha256 {got[:12]}..., expected {want[:12]}...): the file is "
                          "damaged or from another dataset")


def _decoded(arrays: dict[str, np.ndarray], classes: list[str], source: str) -> DecodedSet:
    import torch

    images = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    return DecodedSet(images["train_images"], images["train_labels"], images["test_images"],
                      images["test_labels"], list(classes), source)


@dataclass
class FileSet:
    """A downloadable image set; subclasses know its files and their format.

    Calling it with (data_dir, dataset_dir) finds the files in the documented order, decodes
    and checks them, and returns a DecodedSet; a missing, damaged or foreign file raises
    UserError (BadFile) with one line naming the file and the fault.
    """

    title: str  # as its publisher writes it
    torchvision_class: str  # the torchvision.datasets class that downloads it
    expected: Expected
    system_dirs: tuple[str, ...] = ()  # copies an OS package installs

    def __call__(self, data_dir: str | os.PathLike, dataset_dir: str = "",
                 download: bool = True) -> DecodedSet | None:
        """The set decoded and checked; None where no files are found and `download` is
        False (a dry run, which fetches nothing)."""
        data_dir = Path(data_dir)
        found = self.find_in(data_dir)
        if found is None and dataset_dir:
            if not Path(dataset_dir).is_dir():
                raise UserError(f"dataset_dir={dataset_dir!r} is not a folder")
            found = self.find_in(Path(dataset_dir))
            if found is None:  # named on purpose: a download would hide the mistake
                raise UserError(f"dataset_dir={dataset_dir!r} holds no {self.title} files "
                                f"({self.file_names()})")
        for system_dir in self.system_dirs:
            if found is None:
                found = self.find_in(Path(system_dir))
        if found is None:
            if not download:
                return None
            found = self.download(data_dir)
        return self.decode(found)

    def download(self, data_dir: Path):
        """Files fetched by torchvision into data_dir (its MD5 checks of the archives apply)."""
        import torchvision

        cls = getattr(torchvision.datasets, self.torchvision_class)
        new = [data_dir / name for name in self.download_entries()
               if not (data_dir / name).exists()]
        new_dir = not data_dir.exists()
        try:
            for train in (True, False):
                cls(str(data_dir), train=train, download=True)
        except Exception as error:  # offline, a proxy, a full disk: the user can act on each
            _remove_made(new, data_dir if new_dir else None)
            looked = ", ".join([str(data_dir), *self.system_dirs])
            # torchvision's MNIST puts the cause after a headline ("Error downloading
            # x.gz:", then each mirror's error): the headline alone named none
            cause = brief(one_line(error), 200, quote=False)
            raise UserError(
                f"no {self.title} files in {looked} and the download failed "
                f"({type(error).__name__}: {cause}); put the "
                f"publisher's files ({self.file_names()}) in data_dir, or give their folder as "
                "dataset_dir=FOLDER") from None
        found = self.find_in(data_dir)
        if found is None:
            raise UserError(f"torchvision's download left no {self.title} files in {data_dir}")
        return found

    def download_entries(self) -> tuple[str, ...]:
        """The names torchvision's download of this set makes in data_dir."""
        raise NotImplementedError

    def find_in(self, place: Path):
        """The set's files in `place` (torchvision's layout first, then as published), None
        when there are none; BadFile when only some are there."""
        raise NotImplementedError

    def decode(self, found) -> DecodedSet:
        raise NotImplementedError

    def file_names(self) -> str:
        raise NotImplementedError


IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _remove_made(made: list[Path], data_dir: Path | None) -> None:
    """What a failed download made (torchvision's folder of the set, an archive cut short)
    removed, and data_dir where the download made it and it is left empty: an empty
    MNIST/raw was left behind. Only this set's names: another set may be downloading
    into the same data_dir."""
    for path in made:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if data_dir is not None:
        try:
            data_dir.rmdir()
        except OSError:
            pass  # not empty: something else is in it now


@dataclass
class IdxSet(FileSet):
    """MNIST and Fashion-MNIST: four IDX files, each gzip-compressed (as published) or not
    (as torchvision unpacks them into <data_dir>/<folder>/raw), found in a place's
    <folder>/raw, in its raw/ where the place is torchvision's <folder> itself, or in it."""

    folder: str = ""  # torchvision's folder under data_dir
    classes: list[str] = field(default_factory=list)

    def file_names(self) -> str:
        return ", ".join(f"{name}[.gz]" for name in IDX_FILES.values())

    def download_entries(self) -> tuple[str, ...]:
        return (self.folder,)  # <folder>/raw, made before the first file is fetched

    def find_in(self, place: Path) -> dict[str, Path] | None:
        # place may be torchvision's folder of the set itself (data/FashionMNIST): its raw/
        own = (place / "raw",) if place.name == self.folder else ()
        for folder in (place / self.folder / "raw", *own, place):
            found = {}
            for role, name in IDX_FILES.items():
                for candidate in (folder / name, folder / f"{name}.gz"):
                    if candidate.is_file():
                        found[role] = candidate
                        break
            if len(found) == len(IDX_FILES):
                return found
            if found:
                missing = [IDX_FILES[r] for r in IDX_FILES if r not in found]
                raise BadFile(folder, f"holds {found[next(iter(found))].name} but not "
                              f"{missing[0]}[.gz]")
        return None

    def decode(self, found: dict[str, Path]) -> DecodedSet:
        arrays = {}
        for role, path in found.items():
            if role.endswith("images"):
                arrays[role] = read_idx(path, (28, 28))[:, None]  # (N, 1, 28, 28)
            else:
                arrays[role] = read_idx(path, ()).astype(np.int64)
        _fail_unless_expected(self.title, self.expected, arrays,
                              {role: str(path) for role, path in found.items()},
                              len(self.classes))
        return _decoded(arrays, self.classes, str(found["train_images"].parent))


@dataclass
class CifarSet(FileSet):
    """CIFAR-10 and CIFAR-100 in their python version: pickled batches in `top`, shipped as
    <top>.tar.gz's `archive`; torchvision keeps the archive and the extracted folder in
    data_dir itself."""

    top: str = ""  # the archive's folder: cifar-10-batches-py, cifar-100-python
    archive: str = ""
    train_files: tuple[str, ...] = ()
    test_file: str = ""
    meta_file: str = ""
    labels_key: str = ""  # "labels"; CIFAR-100's "fine_labels"
    names_key: str = ""  # in the meta file
    classes: int = 10
    name: str = ""  # its key in DATASETS, for notes

    def file_names(self) -> str:
        return f"{self.archive}, or its folder {self.top}"

    def download_entries(self) -> tuple[str, ...]:
        return (self.archive, self.top)

    def find_in(self, place: Path) -> CifarFolder | CifarArchive | None:
        if (place / self.top).is_dir():
            return CifarFolder(place / self.top)
        if (place / self.archive).is_file():
            return CifarArchive(place / self.archive, self.top)
        loose = CifarFolder(place)  # the folder's files copied without the folder
        if loose.has(self.meta_file) and loose.has(self.test_file):
            return loose
        return None

    def decode(self, found: CifarFolder | CifarArchive) -> DecodedSet:
        """The set from `found`; from the archive beside an extracted folder that fails
        (torchvision's layout after an interrupted extraction, which torchvision repairs by
        extracting again), with a note naming the folder's fault."""
        try:
            return self._decode(found)
        except BadFile as fault:
            beside = found.folder.parent / self.archive if isinstance(found, CifarFolder) \
                else None
            if beside is None or found.folder.name != self.top or not beside.is_file():
                raise
            try:
                decoded = self._decode(CifarArchive(beside, self.top))
            except BadFile as archive_fault:
                raise BadFile(fault.where, f"{fault.problem}; and {archive_fault} (the archive "
                                           "beside it)") from None
            print(f"note: dataset={self.name!r}: {fault}; read from {beside} beside it "
                  "instead", file=sys.stderr)
            return decoded

    def _decode(self, found: CifarFolder | CifarArchive) -> DecodedSet:
        meta = unpickle_batch(found.read(self.meta_file), found.where(self.meta_file))
        names = meta.get(self.names_key)
        if not isinstance(names, list) or len(names) != self.classes:
            raise BadFile(found.where(self.meta_file), f"{self.names_key!r} should list "
                          f"{self.classes} class names")
        arrays, where = {}, {}
        for split, files in (("train", self.train_files), ("test", (self.test_file,))):
            parts = [cifar_images(unpickle_batch(found.read(name), found.where(name)),
                                  found.where(name), self.labels_key, self.classes)
                     for name in files]
            arrays[f"{split}_images"] = np.concatenate([p[0] for p in parts])
            arrays[f"{split}_labels"] = np.concatenate([p[1] for p in parts])
            shown = found.where(files[0]) if len(files) == 1 else \
                f"{found.where(files[0])}..{files[-1]}"
            where[f"{split}_images"] = where[f"{split}_labels"] = shown
        _fail_unless_expected(self.title, self.expected, arrays, where, self.classes)
        source = str(found.path if isinstance(found, CifarArchive) else found.folder)
        return _decoded(arrays, [str(n) for n in names], source)


def _digits(root: Path, dataset_dir: str = "") -> DecodedSet:
    """scikit-learn's bundled 8x8 digits: no files to find, no network."""
    import torch
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
                      labels[test], [str(d) for d in range(10)], "sklearn.datasets.load_digits")


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]

def _balanced(train: int, test: int, classes: int) -> tuple[list[int], list[int]]:
    return [train] * classes, [test] * classes


DATASETS = {
    # Counts from the publishers' pages. No checksums: the real CIFAR files were not at hand
    # when this table was written (no download here); per-class counts are the published ones.
    "cifar10": CifarSet(
        "CIFAR-10", "CIFAR10", Expected(50000, 10000, per_class=_balanced(5000, 1000, 10)),
        top="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch",
        meta_file="batches.meta", labels_key="labels", names_key="label_names", classes=10,
        name="cifar10"),
    "cifar100": CifarSet(
        "CIFAR-100", "CIFAR100", Expected(50000, 10000, per_class=_balanced(500, 100, 100)),
        top="cifar-100-python", archive="cifar-100-python.tar.gz", train_files=("train",),
        test_file="test", meta_file="meta", labels_key="fine_labels",
        names_key="fine_label_names", classes=100, name="cifar100"),
    # MNIST's real files were not at hand: no checksums. Its class counts are the widely
    # published ones (they sum to 60,000 and 10,000); they also tell Fashion-MNIST's files,
    # which share MNIST's file names, from MNIST's.
    "mnist": IdxSet("MNIST", "MNIST", Expected(60000, 10000, per_class=(
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])), folder="MNIST",
                    classes=[f"{d} - {w}" for d, w in enumerate(
                        "zero one two three four five six seven eight nine".split())]),
    # Recorded from Debian's dataset-fashion-mnist (files of 2020-06-05, recompressed by
    # Debian; what they decode to is Zalando's release).
    "fashion_mnist": IdxSet(
        "Fashion-MNIST", "FashionMNIST", Expected(60000, 10000, per_class=_balanced(
            6000, 1000, 10), sha256={
            "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "train_labels": "e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b",
            "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "test_labels": "d51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae"}),
        system_dirs=("/usr/share/datasets/fashion-mnist",), folder="FashionMNIST",
        classes=FASHION_CLASSES),
    "digits": _digits,
}


def class_count(name: str) -> int | None:
    """How many classes the dataset `name` has, from the table above (no file is read);
    None for a name it does not hold."""
    entry = DATASETS.get(name)
    if entry is _digits:
        return 10
    classes = getattr(entry, "classes", None)
    return classes if isinstance(classes, int) else (len(classes) if classes else None)


def cache_path(name: str, data_dir: str | os.PathLike) -> Path:
    """Where the decoded set `name` is cached: <data_dir>/cache/<name>.pt."""
    return Path(data_dir) / "cache" / f"{name}.pt"


def found_without_download(name: str, data_dir: str | os.PathLike,
                           dataset_dir: str = "") -> bool:
    """Whether load_decoded would read the set `name` without a download, writing nothing:
    True for its cache, or for its files found (data_dir, dataset_dir, an OS package's copy)
    and decoded and checked as load_decoded checks them; False where none are found (load_decoded
    would download them). Raises UserError for missing or bad files, as load_decoded does."""
    if name == "digits" or is_cached(name, data_dir):
        return True  # digits comes with scikit-learn
    try:
        return DATASETS[name](Path(data_dir), dataset_dir, download=False) is not None
    except UserError as error:
        raise UserError(f"dataset={name!r}: {error}") from None


def is_cached(name: str, data_dir: str | os.PathLike) -> bool:
    """Whether the cache of `name` is there and whole: a zip file (torch.save's format) whose
    end record reads, the tensors not loaded. A file cut short, or of another format, is not
    cached: load_decoded decodes the set again over it."""
    path = cache_path(name, data_dir)
    return path.is_file() and zipfile.is_zipfile(path)


def _cached_set(stored) -> DecodedSet | None:
    """The DecodedSet a loaded cache file holds; None for an older CACHE_VERSION's (decoded
    again, as its layout may differ). ValueError where it is not the dict to_dict writes."""
    import torch

    if not isinstance(stored, dict):
        raise ValueError(f"it holds a {type(stored).__name__}, not a dict")
    if stored.get("version") != CACHE_VERSION:
        return None
    x_y = [stored.get(key) for key in ("train_x", "train_y", "test_x", "test_y")]
    for x, y in (x_y[:2], x_y[2:]):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                and x.dtype == torch.uint8 and x.dim() == 4 and y.dtype == torch.int64
                and y.dim() == 1 and len(x) == len(y)):
            raise ValueError("its images or labels are missing or of another shape")
    if not isinstance(stored.get("classes"), list):
        raise ValueError("it lists no class names")
    return DecodedSet(*x_y, stored["classes"], stored.get("source", ""))


def _read_cache(name: str, path: Path) -> DecodedSet | None:
    """The set from its cache file; None where there is none, or an older layout, or the file
    is damaged: then one note says so and the file is removed, so that nothing half-written
    is left where the next run looks first (the caller decodes the files again)."""
    import torch  # here, not with the module: the dataset names are read without torch

    if not path.exists():
        return None
    try:
        return _cached_set(torch.load(path, weights_only=True))
    except Exception as error:  # a copy cut short, a disk error, another file under its name
        reason = brief(one_line(error), 80, quote=False)
        print(f"note: dataset={name!r}: the cache {path} is unreadable ("
              f"{type(error).__name__}{': ' + reason if reason else ''}): decoded again "
              "from the files", file=sys.stderr)
        try:
            path.unlink(missing_ok=True)
        except OSError:  # read-only storage: a later run reads it, notes it, passes it by
            pass
        return None


def load_decoded(name: str, data_dir: str | os.PathLike, dataset_dir: str = "") -> DecodedSet:
    """The dataset as uint8 tensors on the CPU: from the cache file, else found, checked,
    decoded and cached. Raises UserError (nothing cached) for missing or bad files; a damaged
    cache file is one note on stderr, removed, and the set decoded from its files again."""
    path = cache_path(name, data_dir)
    cached = _read_cache(name, path)
    if cached is not None:
        return cached
    try:
        decoded = DATASETS[name](Path(data_dir), dataset_dir)
    except UserError as error:
        raise UserError(f"dataset={name!r}: {error}") from None
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a full disk is an OSError here, not torch.save's own RuntimeError (util.torch_files)
        write_torch_file(decoded.to_dict(), partial)
        os.replace(partial, path)  # atomic: a concurrent agent sees no file or a whole one
    except OSError as error:  # read-only storage, a full disk: the data itself is fine
        print(f"note: dataset={name!r} not cached in {path.parent} "
              f"({error.strerror or error}); it is decoded again next time", file=sys.stderr)
    finally:
        partial.unlink(missing_ok=True)  # a full disk leaves no half-written cache behind
    return decoded
