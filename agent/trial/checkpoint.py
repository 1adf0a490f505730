"""A member's checkpoint: everything needed to continue the same run bit for bit.

What goes in and how it comes back out is one table (`PARTS`), so saving and restoring cannot
drift apart. A member's weights are stored in the plain model's layout (the model MODELS
builds), whatever pack it trained in, so a checkpoint loads into a pack of any size or into
the plain model (Grad-CAM). Files are written atomically (temporary file, then rename) so a
kill mid-write leaves the previous checkpoint intact, and read with weights_only=True, so a
checkpoint cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"

# name: (capture(pack, k), restore(pack, k, value)) for member k of a training pack
# (agent/trial/pack.py); restoring every part of a capture continues the member exactly.
PARTS: dict[str, tuple[Callable[[Any, int], Any], Callable[[Any, int, Any], None]]] = {
    "model": (lambda pack, k: pack.model.member_state_dict(k),
              lambda pack, k, value: pack.model.load_member_state_dict(k, value)),
    "optimizer": (lambda pack, k: pack.optimizer.state_dict_member(k),
                  lambda pack, k, value: pack.optimizer.load_state_dict_member(k, value)),
    "scaler": (lambda pack, k: pack.scaler.state_dict(),
               lambda pack, k, value: pack.scaler.load_state_dict(value)),
    "rng_data": (lambda pack, k: pack.generators[k].get_state(),
                 lambda pack, k, value: pack.generators[k].set_state(value)),
    "progress": (lambda pack, k: asdict(pack.members[k].progress),
                 lambda pack, k, value: pack.members[k].restore_progress(value)),
}


def capture(pack, k: int) -> dict:
    """Member k's checkpoint as a dict of tensors and plain values."""
    return {name: take(pack, k) for name, (take, _) in PARTS.items()}


def restore(pack, k: int, state: dict) -> None:
    """Put member k back where `capture` found it."""
    for name, (_, put) in PARTS.items():
        put(pack, k, state[name])


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
