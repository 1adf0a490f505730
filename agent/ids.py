"""Run and sweep ids, and the names they become on disk. No torch here: the controller,
the store and the launcher import it.

Ids follow W&B's shape (8 characters of [a-z0-9]), so a local run's id is also a valid W&B
run id and `wandb sync` keeps it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import string
from pathlib import Path

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 8


def new_run_id() -> str:
    """A fresh random id, e.g. 'k3x9q0ab' (also used for local sweep ids)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


MAX_COMPONENT = 100  # characters of a directory named after a run or group


def path_safe(text: str) -> str:
    """`text` as one path component that stays inside its directory: runs of anything but
    [A-Za-z0-9._-] become '_', and so does a leading dot (never '.', '..' or a hidden name);
    never empty; a name longer than MAX_COMPONENT is cut and ends in a hash of the whole, so
    two long names that share a beginning stay apart. 'a/b' -> 'a_b', '..' -> '_.'."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    safe = "_" + safe[1:] if safe.startswith(".") else safe or "_"
    if len(safe) > MAX_COMPONENT:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[:MAX_COMPONENT - 9]}-{digest}"
    return safe


def run_directory(run_dir: str | os.PathLike, run_id: str) -> Path:
    """Where a run's checkpoint, summary and traceback go: run_dir/<run id as one path
    component> (agent/trial/member.py and the agent agree through this)."""
    return Path(run_dir) / path_safe(run_id)
