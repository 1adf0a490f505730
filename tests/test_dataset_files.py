"""Datasets from the files users already have: every layout and format the loader accepts,
the order it looks in, and every fault it must name, on generated files written in the
publishers' own formats (IDX, CIFAR's pickled batches and .tar.gz archives)."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from util.cifar_files import (
    expected_content,
    register_expected,
    write_archive,
    write_cifar10,
    write_cifar100,
)
from util.dataset_files import sha256
from util.datasets import cache_path, load_decoded
from util.errors import UserError
from util.idx_files import IDX_NAMES, idx_bytes, register_idx_set, write_idx, write_idx_set

IDX_SETS = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}  # name -> torchvision's folder


def assert_same(decoded, arrays: dict[str, np.ndarray]) -> None:
    assert decoded.train_x.dtype == torch.uint8 and decoded.train_y.dtype == torch.int64
    assert np.array_equal(decoded.train_x.numpy(), arrays["train_images"])
    assert np.array_equal(decoded.train_y.numpy(), arrays["train_labels"])
    assert np.array_equal(decoded.test_x.numpy(), arrays["test_images"])
    assert np.array_equal(decoded.test_y.numpy(), arrays["test_labels"])


def fails(name: str, data_dir: Path, *fragments: str, dataset_dir: str = "") -> str:
    """load_decoded raises one line naming each fragment, and caches nothing."""
    with pytest.raises(UserError) as caught:
        load_decoded(name, data_dir, dataset_dir)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"dataset={name!r}: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not cache_path(name, data_dir).exists()
    assert not (data_dir / "cache").exists() or not any((data_dir / "cache").iterdir())
    return message


# --- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------

@pytest.mark.parametrize("name", IDX_SETS)
@pytest.mark.parametrize("layout", ["torchvision-raw", "torchvision-gz", "flat-gz", "flat-raw",
                                    "dataset_dir-gz", "dataset_dir-torchvision"])
def test_every_idx_layout_decodes_to_the_written_arrays(tmp_path, monkeypatch, name, layout):
    data_dir, shelf = tmp_path / "data", tmp_path / "shelf"
    folder = {"torchvision-raw": data_dir / IDX_SETS[name] / "raw",
              "torchvision-gz": data_dir / IDX_SETS[name] / "raw",
              "flat-gz": data_dir, "flat-raw": data_dir, "dataset_dir-gz": shelf,
              "dataset_dir-torchvision": shelf / IDX_SETS[name] / "raw"}[layout]
    arrays = write_idx_set(folder, train=120, test=40, compress=not layout.endswith("raw"))
    register_idx_set(name, arrays, monkeypatch.setattr)
    written = sorted(p.name for p in folder.iterdir())
    decoded = load_decoded(name, data_dir, str(shelf) if "dataset_dir" in layout else "")
    assert_same(decoded, arrays)
    assert decoded.source == str(folder) and len(decoded.classes) == 10
    if "dataset_dir" in layout:  # a read-only folder: nothing is written there
        assert sorted(p.name for p in folder.iterdir()) == written
    cached = load_decoded(name, data_dir)  # from the cache now, whatever the files
    assert cached.source == str(folder) and torch.equal(cached.train_x, decoded.train_x)


@pytest.mark.parametrize("name", IDX_SETS)
@pytest.mark.parametrize("given", ["dataset_dir", "data_dir"])
def test_torchvisions_own_folder_of_the_set_is_found(tmp_path, monkeypatch, name, given):
    """A torchvision user names the folder torchvision made for the set (data/FashionMNIST,
    data/MNIST, holding raw/): it was searched for <folder>/<folder>/raw and the folder
    itself only, so as dataset_dir it was 'holds no ... files' (exit 2) and as data_dir the
    set was taken elsewhere (Debian's copy) or downloaded again into it. Its raw/ is read."""
    own = tmp_path / "data" / IDX_SETS[name]
    arrays = write_idx_set(own / "raw", train=30, test=10, compress=name == "mnist")
    register_idx_set(name, arrays, monkeypatch.setattr)
    if given == "dataset_dir":
        decoded = load_decoded(name, tmp_path / "elsewhere", str(own))
    else:
        decoded = load_decoded(name, own)
    assert decoded.source == str(own / "raw")
    assert_same(decoded, arrays)


def test_gzip_is_told_by_content_not_by_name(tmp_path, monkeypatch):
    arrays = write_idx_set(tmp_path / "made", train=50, test=20, compress=True)
    register_idx_set("fashion_mnist", arrays, monkeypatch.setattr)
    folder = tmp_path / "data"
    folder.mkdir()
    for role, name in IDX_NAMES.items():
        source = tmp_path / "made" / f"{name}.gz"
        if role.endswith("images"):  # compressed bytes under the unpacked name
            shutil.copy(source, folder / name)
        else:  # unpacked bytes under the .gz name
            (folder / f"{name}.gz").write_bytes(gzip.decompress(source.read_bytes()))
    assert_same(load_decoded("fashion_mnist", folder), arrays)


def test_places_are_searched_in_the_documented_order(tmp_path, monkeypatch):
    """torchvision's layout in data_dir, then the published files in data_dir, then
    dataset_dir; each place holds other images, and only the expected ones pass the check."""
    data_dir, shelf = tmp_path / "data", tmp_path / "shelf"
    places = [data_dir / "FashionMNIST" / "raw", data_dir, shelf]
    contents = [write_idx_set(place, train=30, test=10, seed=10 * i)
                for i, place in enumerate(places)]
    for place, arrays in zip(places, contents):
        register_idx_set("fashion_mnist", arrays, monkeypatch.setattr)
        decoded = load_decoded("fashion_mnist", data_dir, str(shelf))
        assert decoded.source == str(place)
        assert_same(decoded, arrays)
        os.remove(cache_path("fashion_mnist", data_dir))
        for name in IDX_NAMES.values():
            os.remove(place / f"{name}.gz")


def test_the_cache_comes_first_even_before_damaged_files(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    arrays = write_idx_set(data_dir, train=30, test=10)
    register_idx_set("mnist", arrays, monkeypatch.setattr)
    load_decoded("mnist", data_dir)
    (data_dir / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert_same(load_decoded("mnist", data_dir), arrays)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _rewrite(path: Path, change) -> None:
    """Replace an IDX file by change(decoded array) -> bytes, unpacked."""
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(change(data))


IDX_FAULTS = {
    # fault: (file it is done to, what to do, the words the error must say)
    "truncated-gz": ("train_images", lambda p: _truncate(p, 0.5), "truncated gzip data"),
    "truncated-raw": ("test_images", lambda p: _rewrite(p, lambda d: d[:-100]),
                      "truncated: its header declares 10 images (7840 bytes) but 7740"),
    "corrupt-gz": ("train_labels", lambda p: p.write_bytes(
        p.read_bytes()[:20] + bytes(b ^ 0xFF for b in p.read_bytes()[20:40])
        + p.read_bytes()[40:]), "corrupt gzip data"),
    "empty": ("test_labels", lambda p: p.write_bytes(b""), "truncated: 0 bytes"),
    "html-page": ("train_images", lambda p: p.write_bytes(b"<html><body>404</body></html>"),
                  "IDX magic number 0x3c68746d, expected 0x00000803"),
    "labels-as-images": ("train_images", lambda p: p.write_bytes(
        idx_bytes(np.zeros(30, np.uint8))), "IDX magic number 0x00000801, expected 0x00000803"),
    "other-element-type": ("test_labels", lambda p: _rewrite(
        p, lambda d: d[:2] + b"\x0c" + d[3:]), "IDX magic number 0x00000c01"),
    "wrong-shape": ("train_images", lambda p: p.write_bytes(idx_bytes(
        np.zeros((30, 32, 32), np.uint8))), "images of 32x32 pixels, expected 28x28"),
    "extra-bytes": ("train_labels", lambda p: _rewrite(p, lambda d: d + b"\0" * 7),
                    "7 bytes past the 30 labels its header declares"),
    "count-mismatch": ("test_labels", lambda p: p.write_bytes(
        idx_bytes(np.zeros(9, np.uint8))), "9 labels for the 10 images"),
    "label-out-of-range": ("train_labels", lambda p: p.write_bytes(
        idx_bytes(np.full(30, 10, np.uint8))), "labels run 10..10, expected 0..9"),
    "one-pixel-changed": ("test_images", lambda p: _rewrite(
        p, lambda d: d[:500] + bytes([d[500] ^ 1]) + d[501:]),
        "decodes to other images than Fashion-MNIST's"),
    "missing": ("test_labels", lambda p: p.unlink(),
                "holds train-images-idx3-ubyte.gz but not t10k-labels-idx1-ubyte[.gz]"),
}


@pytest.mark.parametrize("fault", IDX_FAULTS)
def test_every_idx_fault_is_one_line_naming_the_file(tmp_path, monkeypatch, fault):
    data_dir = tmp_path / "data"
    register_idx_set("fashion_mnist", write_idx_set(data_dir, train=30, test=10),
                     monkeypatch.setattr)
    role, damage, words = IDX_FAULTS[fault]
    path = data_dir / f"{IDX_NAMES[role]}.gz"
    damage(path)
    named = str(data_dir) if fault == "missing" else str(path)
    fails("fashion_mnist", data_dir, named, words)


def test_files_of_another_size_than_the_publishers_are_refused(tmp_path):
    data_dir = tmp_path / "data"
    write_idx_set(data_dir, train=30, test=10)  # the real table expects 60000 + 10000
    fails("fashion_mnist", data_dir, "train-images-idx3-ubyte.gz",
          "30 images, but Fashion-MNIST's train set has 60000")
    fails("mnist", data_dir, "30 images, but MNIST's train set has 60000")


def test_dataset_dir_that_is_missing_or_empty_is_named(tmp_path):
    data_dir = tmp_path / "data"
    fails("fashion_mnist", data_dir, "dataset_dir=", "is not a folder",
          dataset_dir=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    fails("mnist", data_dir, "holds no MNIST files", "train-images-idx3-ubyte[.gz]",
          dataset_dir=str(tmp_path / "empty"))


def test_missing_dataset_without_network_names_where_it_looked(tmp_path):
    message = fails("mnist", tmp_path / "nothing-here", "no MNIST files in",
                    "the download failed", "dataset_dir=FOLDER")
    assert str(tmp_path / "nothing-here") in message
    # the cause, not torchvision's headline alone ("Error downloading ...gz:" said none)
    assert "urlopen error" in message, message
    assert not (tmp_path / "nothing-here").exists()  # the download made it: nothing is left


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_a_failed_download_leaves_data_dir_as_it_was(tmp_path, name):
    """Offline, torchvision makes its folder (MNIST/raw) before fetching: an empty one was
    left in data_dir by every failed download of MNIST."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "keep.txt").write_text("the user's")
    fails(name, data_dir, "the download failed")
    assert sorted(p.name for p in data_dir.iterdir()) == ["keep.txt"]


# --- CIFAR ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["folder", "archive", "archive-in-dataset_dir",
                                    "loose-in-dataset_dir"])
def test_every_cifar10_layout_decodes_to_the_written_arrays(tmp_path, monkeypatch, layout):
    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    content = expected_content(made)
    register_expected("cifar10", made, monkeypatch.setattr)
    data_dir, shelf = tmp_path / "data", tmp_path / "shelf"
    shelf.mkdir()
    data_dir.mkdir()
    if layout == "folder":
        shutil.copytree(made, data_dir / made.name)
    elif layout == "archive":
        write_archive(made, data_dir / "cifar-10-python.tar.gz")
    elif layout == "archive-in-dataset_dir":
        write_archive(made, shelf / "cifar-10-python.tar.gz")
    else:
        for path in made.iterdir():
            shutil.copy(path, shelf / path.name)
    decoded = load_decoded("cifar10", data_dir, str(shelf))
    assert decoded.train_x.shape == (100, 3, 32, 32) and decoded.test_x.shape == (30, 3, 32, 32)
    assert decoded.classes[0] == "airplane"
    assert content["sha256"]["train_images"] == sha256(decoded.train_x.numpy())


@pytest.mark.parametrize("packed", [False, True])
def test_batches_pickled_by_python_2_decode_as_torchvision_reads_them(tmp_path, monkeypatch,
                                                                      packed):
    """The real CIFAR-10 files are Python 2 cPickles (byte strings, numpy 1's _reconstruct),
    which the other tests' files (this Python's pickle) are not: the loader and torchvision's
    CIFAR10 read the same pixels, labels and class names from them, folder or archive."""
    import torchvision

    from util.cifar_files import register_with_torchvision

    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30, python2=True)
    assert b"\x80\x02}(U\x0bbatch_label" in (made / "data_batch_1").read_bytes()[:20]
    register_with_torchvision(made, monkeypatch.setattr)
    register_expected("cifar10", made, monkeypatch.setattr)
    data_dir = tmp_path / "data"
    if packed:
        write_archive(made, data_dir / "cifar-10-python.tar.gz")
    else:
        shutil.copytree(made, data_dir / made.name)
    decoded = load_decoded("cifar10", data_dir)
    for train, images, labels in ((True, decoded.train_x, decoded.train_y),
                                  (False, decoded.test_x, decoded.test_y)):
        real = torchvision.datasets.CIFAR10(str(made.parent), train=train)
        assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), real.data)
        assert labels.tolist() == list(real.targets) and decoded.classes == real.classes


def test_an_archive_packed_from_dot_holds_the_set(tmp_path, monkeypatch):
    """cifar-10-python.tar.gz packed again as `tar czf ... ./cifar-10-batches-py` (members
    ./cifar-10-batches-py/...), which torchvision's extraction reads: 'the archive has no
    cifar-10-batches-py/batches.meta', exit 2. A member's leading ./ is dropped."""
    import tarfile

    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    register_expected("cifar10", made, monkeypatch.setattr)
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(made, arcname=f"./{made.name}")
    decoded = load_decoded("cifar10", tmp_path / "data")
    assert sha256(decoded.test_x.numpy()) == expected_content(made)["sha256"]["test_images"]


@pytest.mark.parametrize("packed", [False, True])
def test_cifar100_folder_and_archive(tmp_path, monkeypatch, packed):
    made = write_cifar100(tmp_path / "made", train=60, test=20)
    register_expected("cifar100", made, monkeypatch.setattr)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if packed:
        write_archive(made, data_dir / "cifar-100-python.tar.gz")
    else:
        shutil.copytree(made, data_dir / made.name)
    decoded = load_decoded("cifar100", data_dir)
    raw = pickle.loads((made / "test").read_bytes(), encoding="latin1")
    assert decoded.test_y.tolist() == raw["fine_labels"] and len(decoded.classes) == 100
    assert torch.equal(decoded.test_x.flatten(1), torch.from_numpy(raw["data"]))


def _batch(folder: Path, name: str) -> dict:
    return pickle.loads((folder / name).read_bytes(), encoding="latin1")


def _write_batch(folder: Path, name: str, change) -> None:
    batch = _batch(folder, name)
    change(batch)
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


class _Escape:
    """A pickle that would run a shell command when loaded by a plain unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


CIFAR_FAULTS = {
    "truncated-batch": ("data_batch_2", lambda f: _truncate(f / "data_batch_2", 0.6),
                        "truncated: the pickle ends early"),
    "not-a-pickle": ("test_batch", lambda f: (f / "test_batch").write_bytes(b"<html>"),
                     "not a CIFAR batch pickle"),
    "wrong-shape": ("data_batch_1", lambda f: _write_batch(f, "data_batch_1", lambda b: b.update(
        data=b["data"][:, :1024].copy())), "expected uint8 rows of 3072 values"),
    "count-mismatch": ("data_batch_4", lambda f: _write_batch(f, "data_batch_4", lambda b: b.update(
        labels=b["labels"][:-1])), "20 images but 19 labels"),
    "label-out-of-range": ("test_batch", lambda f: _write_batch(f, "test_batch", lambda b: b.update(
        labels=[12] * len(b["labels"]))), "labels run 12..12, expected 0..9"),
    "missing-batch": ("data_batch_5", lambda f: (f / "data_batch_5").unlink(), "missing"),
    "meta-classes": ("batches.meta", lambda f: _write_batch(f, "batches.meta", lambda b: b.update(
        label_names=["cat", "dog"])), "'label_names' should list 10 class names"),
    # One checksum covers the five training batches: the error names them together.
    "changed-pixel": ("data_batch_1..data_batch_5", lambda f: _write_batch(
        f, "data_batch_3", lambda b: b["data"].__setitem__((0, 0), b["data"][0, 0] ^ 1)),
        "decodes to other images than CIFAR-10's"),
}


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("fault", CIFAR_FAULTS)
def test_every_cifar_fault_is_one_line_naming_the_file(tmp_path, monkeypatch, fault, packed):
    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    register_expected("cifar10", made, monkeypatch.setattr)
    name, damage, words = CIFAR_FAULTS[fault]
    damage(made)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if packed:
        archive = write_archive(made, data_dir / "cifar-10-python.tar.gz")
        named = f"{archive}" if fault == "missing-batch" else \
            f"{archive}:cifar-10-batches-py/{name}"
        if fault == "missing-batch":
            words = "the archive has no cifar-10-batches-py/data_batch_5"
    else:
        shutil.move(made, data_dir / made.name)
        named = str(data_dir / made.name / name)
    fails("cifar10", data_dir, named, words)


FOLDER_CUT_SHORT = {
    # how torchvision's extraction of cifar-10-python.tar.gz beside it was cut short
    "batch-missing": (lambda f: (f / "data_batch_5").unlink(), "data_batch_5: missing"),
    "batch-truncated": (lambda f: _truncate(f / "test_batch", 0.3),
                        "test_batch: truncated: the pickle ends early"),
    "folder-empty": (lambda f: [p.unlink() for p in f.iterdir()], "batches.meta: missing"),
}


@pytest.mark.parametrize("cut", FOLDER_CUT_SHORT)
def test_an_extracted_folder_cut_short_beside_its_archive_reads_the_archive(
        tmp_path, monkeypatch, capsys, cut):
    """torchvision's own layout after its extraction was interrupted: data_dir holds the whole
    cifar-10-python.tar.gz and a cifar-10-batches-py short of files. torchvision finds the
    folder damaged and extracts the archive again; this loader refused the set (exit 2)
    over the folder's first fault. It now reads the archive beside it, with one note naming
    the folder's fault; the set is the archive's, and it is cached."""
    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    content = expected_content(made)
    register_expected("cifar10", made, monkeypatch.setattr)
    data_dir = tmp_path / "data"
    archive = write_archive(made, data_dir / "cifar-10-python.tar.gz")
    folder = Path(shutil.copytree(made, data_dir / made.name))
    damage, words = FOLDER_CUT_SHORT[cut]
    damage(folder)
    decoded = load_decoded("cifar10", data_dir)
    assert decoded.source == str(archive)
    assert {role: sha256(array.numpy()) for role, array in zip(
        ("train_images", "train_labels", "test_images", "test_labels"),
        (decoded.train_x, decoded.train_y, decoded.test_x, decoded.test_y))} == \
        content["sha256"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: dataset='cifar10': {folder}/{words}"), err
    assert err[0].endswith(f"; read from {archive} beside it instead"), err
    assert cache_path("cifar10", data_dir).is_file()


def test_a_folder_cut_short_beside_a_damaged_archive_names_the_archive(tmp_path, monkeypatch):
    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    register_expected("cifar10", made, monkeypatch.setattr)
    data_dir = tmp_path / "data"
    archive = write_archive(made, data_dir / "cifar-10-python.tar.gz")
    _truncate(archive, 0.5)
    shutil.copytree(made, data_dir / made.name)
    (data_dir / made.name / "data_batch_2").unlink()
    fails("cifar10", data_dir, f"{data_dir / made.name / 'data_batch_2'}: missing", str(archive),
          "truncated tar.gz archive")


def test_a_truncated_cifar_archive_is_named(tmp_path, monkeypatch):
    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    register_expected("cifar10", made, monkeypatch.setattr)
    archive = write_archive(made, tmp_path / "data" / "cifar-10-python.tar.gz")
    _truncate(archive, 0.5)
    fails("cifar10", tmp_path / "data", str(archive), "truncated tar.gz archive")


def test_a_pickle_that_names_a_callable_is_refused_unrun(tmp_path, monkeypatch):
    made = write_cifar10(tmp_path / "made", per_batch=20, test_size=30)
    register_expected("cifar10", made, monkeypatch.setattr)
    marker = tmp_path / "ran"
    (made / "test_batch").write_bytes(pickle.dumps({"data": _Escape(marker)}, protocol=2))
    fails("cifar10", made.parent, "test_batch", "which a CIFAR batch never does")
    assert not marker.exists()


def test_cifar_of_another_size_than_the_publishers_is_refused(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=20, test_size=30)  # the real table: 50000
    fails("cifar10", tmp_path / "data", "100 images, but CIFAR-10's train set has 50000")


def test_write_idx_round_trips_through_torchvision_reader(tmp_path):
    """Our writer and torchvision's own IDX reader agree on the format."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    arrays = write_idx_set(tmp_path, train=12, test=4, compress=False)
    images = read_image_file(str(tmp_path / IDX_NAMES["train_images"]))
    labels = read_label_file(str(tmp_path / IDX_NAMES["train_labels"]))
    assert np.array_equal(images.numpy(), arrays["train_images"][:, 0])
    assert np.array_equal(labels.numpy(), arrays["train_labels"])
    write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8), compress=True)
    assert (tmp_path / "x").read_bytes()[:2] == b"\x1f\x8b"


# --- the decoded cache ---------------------------------------------------------------------

CACHE_DAMAGE = {
    # damage: what is done to <data_dir>/cache/<name>.pt (a copy cut short, a disk error,
    # something else saved under its name)
    "truncated": lambda p: _truncate(p, 0.5),
    "empty": lambda p: p.write_bytes(b""),
    "not-a-torch-file": lambda p: p.write_bytes(b"<html><body>502</body></html>"),
    "keys-missing": lambda p: torch.save({"version": 2, "train_x": torch.zeros(3)}, p),
    "not-a-dict": lambda p: torch.save([1, 2, 3], p),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE)
def test_a_damaged_cache_is_decoded_again_from_the_files(tmp_path, monkeypatch, capsys, damage):
    """A cache file cut short or replaced (an interrupted copy of data/ to a node, a disk
    error): torch.load's RuntimeError or EOFError, or a KeyError, failed every run with a
    traceback. Now one note names the file, the set is decoded again from its files and the
    cache written whole again, read by the next call without a note."""
    data_dir = tmp_path / "data"
    arrays = write_idx_set(data_dir, train=30, test=10)
    register_idx_set("mnist", arrays, monkeypatch.setattr)
    load_decoded("mnist", data_dir)
    cache = cache_path("mnist", data_dir)
    CACHE_DAMAGE[damage](cache)
    capsys.readouterr()
    assert_same(load_decoded("mnist", data_dir), arrays)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: dataset='mnist': the cache {cache} "), err
    assert err[0].endswith("decoded again from the files"), err
    assert_same(load_decoded("mnist", data_dir), arrays)
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in cache.parent.iterdir()) == ["mnist.pt"]


def test_a_damaged_cache_without_its_files_is_the_usual_line_and_is_removed(tmp_path,
                                                                          monkeypatch):
    """With the files gone too, the usual line for a set that is not there (one line, exit
    2 from the command line), not the cache's traceback; the damaged file is removed, so
    nothing half-written stays where a later run looks first."""
    data_dir, empty = tmp_path / "data", tmp_path / "empty"
    empty.mkdir()
    arrays = write_idx_set(data_dir, train=30, test=10)
    register_idx_set("mnist", arrays, monkeypatch.setattr)
    load_decoded("mnist", data_dir)
    for name in IDX_NAMES.values():
        (data_dir / f"{name}.gz").unlink()
    _truncate(cache_path("mnist", data_dir), 0.5)
    fails("mnist", data_dir, "holds no MNIST files", dataset_dir=str(empty))
