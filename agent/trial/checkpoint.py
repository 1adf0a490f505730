"""A trial's checkpoint: everything needed to continue the same run bit for bit.

Written atomically (temporary file, then rename) so a kill mid-write leaves the previous
checkpoint intact; read with weights_only=True, so a checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> Path:
    path = Path(run_dir) / CHECKPOINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".pt.tmp")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, weights_only=True, map_location="cpu")
