"""Run and sweep ids, and the names they become on disk. No torch here: the controller,
the store and the launcher import it.

Ids follow W&B's shape (8 characters of [a-z0-9]), so a local run's id is also a valid W&B
run id and `wandb sync` keeps it.
"""

from __future__ import annotations

import re
import secrets
import string

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 8


def new_run_id() -> str:
    """A fresh random id, e.g. 'k3x9q0ab' (also used for local sweep ids)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def path_safe(text: str) -> str:
    """`text` as one path component: runs of anything but [A-Za-z0-9._-] become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
