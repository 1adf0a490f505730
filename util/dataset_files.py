"""Read image sets from the files their publishers ship, checking each file by its content.

IDX files (MNIST, Fashion-MNIST; gzip-compressed or not, told apart by their first bytes) and
CIFAR's pickled batches (loose, or read straight out of cifar-*-python.tar.gz). A file that is
not what it should be raises BadFile, whose one-line message names the file and the fault.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from util.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08  # IDX element type "unsigned byte": the only one these image sets use


class BadFile(UserError):
    """A dataset file that is missing, truncated, or holds something else than expected."""

    def __init__(self, where: str | Path, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = str(where), problem


def sha256(array: np.ndarray) -> str:
    """Hex SHA-256 of an array's bytes in C order: the fingerprint of decoded content, which
    does not change when a file is recompressed (Debian's .gz files differ from the originals
    byte for byte, not in what they decode to)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with gzip's magic (whatever the name)."""
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise BadFile(path, f"truncated gzip data (the {len(raw)}-byte file ends before its "
                            "end-of-stream marker)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise BadFile(path, f"corrupt gzip data ({error})") from None


def idx_magic(item_shape: tuple[int, ...]) -> int:
    """The IDX magic number of unsigned-byte data with items of `item_shape` (LeCun's format:
    two zero bytes, the element type, the number of dimensions)."""
    return (IDX_UBYTE << 8) | (1 + len(item_shape))


def read_idx(path: Path, item_shape: tuple[int, ...]) -> np.ndarray:
    """An IDX file of unsigned bytes as a uint8 array (N, *item_shape).

    item_shape is (28, 28) for image files, () for label files. Raises BadFile for a wrong
    magic number, other item dimensions, and data shorter or longer than the header declares.
    """
    data = read_maybe_gzip(path)
    want = idx_magic(item_shape)
    kind = "labels" if not item_shape else "images"
    if len(data) < 4:
        raise BadFile(path, f"truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != want:
        raise BadFile(path, f"IDX magic number 0x{magic:08x}, expected 0x{want:08x} "
                            f"(unsigned-byte {kind}, {1 + len(item_shape)} dimensions)")
    header = 4 + 4 * (1 + len(item_shape))
    if len(data) < header:
        raise BadFile(path, f"truncated: {len(data)} bytes, too short for its {header}-byte "
                            "IDX header")
    dims = struct.unpack(f">{1 + len(item_shape)}I", data[4:header])
    if tuple(dims[1:]) != tuple(item_shape):
        shown = "x".join(map(str, dims[1:]))
        raise BadFile(path, f"{kind} of {shown} pixels, expected "
                            f"{'x'.join(map(str, item_shape))}")
    size = math.prod(dims)
    body = len(data) - header
    if body < size:
        raise BadFile(path, f"truncated: its header declares {dims[0]} {kind} ({size} bytes) "
                            f"but {body} bytes follow it")
    if body > size:
        raise BadFile(path, f"{body - size} bytes past the {dims[0]} {kind} its header "
                            "declares")
    return np.frombuffer(data, np.uint8, size, header).reshape(dims)


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR's batches: dicts, lists, strings, numbers and numpy arrays, and
    nothing else (a pickle can name any callable; these files never need one)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               # Python 3 writes bytes into a protocol-2 pickle as _codecs.encode(text, latin1)
               ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does")


def unpickle_batch(data: bytes, where: str | Path) -> dict:
    """One CIFAR batch or meta file: a dict with str keys. The real files are Python 2
    pickles; latin1 is how their byte strings decode (torchvision reads them the same way)."""
    try:
        loaded = _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:  # UnpicklingError, ValueError, ... from arbitrary bytes
        if isinstance(error, EOFError) or "truncated" in str(error):
            raise BadFile(where, f"truncated: the pickle ends early ({len(data)} "
                                 "bytes)") from None
        raise BadFile(where, f"not a CIFAR batch pickle ({type(error).__name__}: "
                             f"{str(error)[:100]})") from None
    if not isinstance(loaded, dict):
        raise BadFile(where, f"holds a {type(loaded).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in loaded.items()}


def cifar_images(batch: dict, where: str | Path, labels_key: str,
                 classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A decoded batch's images uint8 (N, 3, 32, 32) and labels int64 (N,). CIFAR stores each
    image as one row of 3072 bytes: 1024 red, then green, then blue, each row-major."""
    for key in ("data", labels_key):
        if key not in batch:
            raise BadFile(where, f"no {key!r} entry (it has {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise BadFile(where, f"'data' is {type(data).__name__} {getattr(data, 'dtype', '')} "
                             f"of shape {shape}, expected uint8 rows of 3072 values (3x32x32)")
    labels = np.asarray(batch[labels_key])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise BadFile(where, f"{labels_key!r} is not a list of integers")
    if len(labels) != len(data):
        raise BadFile(where, f"{len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise BadFile(where, f"labels run {labels.min()}..{labels.max()}, expected "
                             f"0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class CifarFolder:
    """The files of an extracted CIFAR archive (cifar-10-batches-py or cifar-100-python)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def where(self, name: str) -> Path:
        return self.folder / name

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def read(self, name: str) -> bytes:
        path = self.folder / name
        if not path.is_file():
            raise BadFile(path, "missing")
        return path.read_bytes()


class CifarArchive:
    """The same files read straight out of cifar-*-python.tar.gz in one pass, without
    extracting it (the archive may sit in a read-only folder); members live under the
    archive's top folder."""

    def __init__(self, path: Path, top: str):
        self.path, self.top = path, top
        self.files: dict[str, bytes] = {}
        try:
            with tarfile.open(path, "r|*") as archive:  # a stream: one pass over the gzip
                for member in archive:
                    # a leading ./ where it was packed from `.` (tar czf x ./folder)
                    folder, _, name = member.name.removeprefix("./").rpartition("/")
                    if member.isfile() and folder == top:
                        self.files[name] = archive.extractfile(member).read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            text = str(error).lower()
            problem = ("truncated" if isinstance(error, EOFError) or "unexpected end" in text
                       or "truncat" in text else "corrupt")
            raise BadFile(path, f"{problem} tar.gz archive ({type(error).__name__}: "
                                f"{str(error)[:100]})") from None

    def where(self, name: str) -> str:
        return f"{self.path}:{self.top}/{name}"

    def has(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise BadFile(self.path, f"the archive has no {self.top}/{name}")
        return self.files[name]
