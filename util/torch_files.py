"""torch.save into a file such that a storage fault (a full disk, a quota, a file-size limit)
is an OSError naming the file, which the callers treat as the user's to fix, not a bug.

torch.save given a path writes through C++ streams: a short write comes back as an opaque
RuntimeError ("basic_ios::clear: iostream error", "[enforce fail at inline_container.cc:672]
. unexpected pos 104896 vs 104832"), no errno; given a Python file it raises the same
RuntimeError with the OSError only as its implicit context (both seen on a full tmpfs and
under RLIMIT_FSIZE). Serialised in memory first, the bytes are written by Python's own I/O,
whose failure is the OSError itself (ENOSPC, EDQUOT, EFBIG). The price: the file's size in
memory once more while it is written (a decoded CIFAR is 184 MB).
"""

from __future__ import annotations

import io
import os

from util.errors import naming


def write_torch_file(obj: object, path: str | os.PathLike) -> None:
    """torch.save(obj) into `path` (created or truncated); an OSError names `path`."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with naming(path), open(path, "wb") as handle:
        handle.write(buffer.getbuffer())
