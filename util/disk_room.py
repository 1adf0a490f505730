"""Whether a folder's disk, and the user's quota on it, leave room to write. The disk's free
space (statvfs, shutil.disk_usage) knows no quota, which a cluster's home and storage have
(writes past it fail with EDQUOT, "Disk quota exceeded", on a disk with room to spare), so
the room is set aside for a moment instead, and given back."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the refusals that say there is no room


def room_refused(folder: str | os.PathLike, size: int) -> int | None:
    """ENOSPC or EDQUOT when a file of `size` bytes cannot be allocated in the existing
    folder `folder` now, else None. fallocate charges the blocks to the disk and the user's
    quota at once without writing them (well under a millisecond on a local disk); the file,
    hidden, is removed at once. Other refusals (a read-only folder, no permission, a
    file-size limit, a file system that allocates nothing ahead) say nothing about the room:
    None, and the writes themselves tell."""
    try:
        fd, name = tempfile.mkstemp(prefix=".room-", dir=Path(folder))
    except OSError as error:
        return error.errno if error.errno in ROOM_ERRNOS else None
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        return error.errno if error.errno in ROOM_ERRNOS else None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return None
