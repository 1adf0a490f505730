"""A member's checkpoint: everything needed to continue the same run bit for bit.

What goes in and how it comes back out is one table (`PARTS`), so saving and restoring cannot
drift apart. A member's weights are stored in the plain model's layout (the model MODELS
builds), whatever pack it trained in, so a checkpoint loads into a pack of any size or into
the plain model (Grad-CAM). Files are written atomically (temporary file, then rename) so a
kill mid-write leaves the previous checkpoint intact, and read with weights_only=True, so a
checkpoint cannot run code. The checkpoint before the newest is kept: a damaged checkpoint
(truncated, empty, another file) is passed over, not fatal, and the run resumes from the one
before it, or from scratch, saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from util.errors import UserError
from util.torch_files import write_torch_file

CHECKPOINT_NAME = "checkpoint.pt"

# name: (capture(pack, k), restore(pack, k, value)) for member k of a training pack
# (agent/trial/pack.py); restoring every part of a capture continues the member exactly.
PARTS: dict[str, tuple[Callable[[Any, int], Any], Callable[[Any, int, Any], None]]] = {
    "model": (lambda pack, k: pack.model.member_state_dict(k),
              lambda pack, k, value: pack.model.load_member_state_dict(k, value)),
    "optimizer": (lambda pack, k: pack.optimizer.state_dict_member(k),
                  lambda pack, k, value: pack.optimizer.load_state_dict_member(k, value)),
    "scaler": (lambda pack, k: pack.scaler.state_dict_member(k),
               lambda pack, k, value: pack.scaler.load_state_dict_member(k, value)),
    "rng_data": (lambda pack, k: pack.generators[k].get_state(),
                 lambda pack, k, value: pack.generators[k].set_state(value)),
    "progress": (lambda pack, k: pack.members[k].progress.state(),
                 lambda pack, k, value: pack.members[k].restore_progress(value)),
}
# What a run was trained with: a start under the same run id with other values would train
# on from the checkpoint under a config its epochs so far did not have.
SETTINGS_PART = "settings"
# precision auto: bf16 on a GPU, fp32 on a CPU, and a run may move between them; epochs: a
# run may be given more epochs to train on
NOT_COMPARED = {"precision", "epochs"}


class SettingsMismatch(UserError):
    """A checkpoint of this run id was trained with other values."""


def settings(cfg) -> dict:
    """The run's hyper-parameters (Param.hyper), as its checkpoint records them."""
    from agent.params import PARAMS

    return {p.name: getattr(cfg, p.name) for p in PARAMS
            if p.hyper and p.name not in NOT_COMPARED}


def check_epochs(cfg, run_id: str, past_end: int) -> None:
    """SettingsMismatch (one line) when the run has a sound checkpoint of epoch `past_end`
    beyond the epochs `cfg` asks for (Saved.past_end; 0: none). More epochs are allowed
    (NOT_COMPARED), not fewer: the run trained past its new end, under a schedule laid out
    for more epochs (its earlier checkpoint too), and starting over would write over it."""
    if past_end > cfg.epochs:
        raise SettingsMismatch(
            f"run {run_id}: its checkpoint is of epoch {past_end}, past epochs={cfg.epochs}: "
            f"resume it with epochs={past_end} or more, or start a new run (another --run_id)")


def check_settings(cfg, run_id: str, saved: dict, epoch: int) -> None:
    """SettingsMismatch (one line) when `cfg` differs from the settings a checkpoint
    recorded."""
    now = settings(cfg)
    changed = [name for name in sorted(saved) if name in now and saved[name] != now[name]]
    if changed:
        shown = ", ".join(f"{name}={saved[name]!r} (now {now[name]!r})" for name in changed[:3])
        raise SettingsMismatch(
            f"run {run_id}: its checkpoint (epoch {epoch}) was trained with {shown}"
            f"{' ...' if len(changed) > 3 else ''}: resume it with the values it had, or start "
            "a new run (another --run_id)")


def capture(pack, k: int) -> dict:
    """Member k's checkpoint as a dict of tensors and plain values."""
    state = {name: take(pack, k) for name, (take, _) in PARTS.items()}
    state[SETTINGS_PART] = settings(pack.members[k].cfg)
    return state


def restore(pack, k: int, state: dict) -> None:
    """Put member k back where `capture` found it. Raises SettingsMismatch when the
    member's config is not the one the checkpoint was trained with (checked before anything
    is restored; a checkpoint written before settings were recorded is not checked)."""
    member = pack.members[k]
    if SETTINGS_PART in state:
        check_settings(member.cfg, member.run.id, state[SETTINGS_PART],
                       state["progress"].get("epoch", 0))
    for name, (_, put) in PARTS.items():
        put(pack, k, state[name])


PREVIOUS_NAME = "checkpoint.prev.pt"  # the one before: where a damaged checkpoint resumes


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> Path:
    """Write `state` as the run's checkpoint, keeping the one it replaces as PREVIOUS_NAME.
    Atomic: a kill or a full disk mid-write leaves both earlier files as they were and no
    partial file behind (the error goes on to the caller)."""
    path = Path(run_dir) / CHECKPOINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".pt.tmp")
    try:
        write_torch_file(state, partial)  # a full disk: an OSError naming the file
        previous = path.with_name(PREVIOUS_NAME)
        for target in (path, previous):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # no checkpoint: loading passed over it, saying so
        if path.exists():
            os.replace(path, previous)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def none_kept(run_dir: str | os.PathLike, enabled: bool = True) -> str | None:
    """Why no checkpoint of a run stands in `run_dir` for it to resume from (`enabled`
    False: the run writes none, checkpoint: false), or None when one does (checkpoint.pt, or
    the one before it, which load_saved falls back on). Files are there or not: whether
    they load is for load_saved to say."""
    if not enabled:
        return "checkpoint: false"
    if any((Path(run_dir) / name).is_file() for name in (CHECKPOINT_NAME, PREVIOUS_NAME)):
        return None
    return f"{Path(run_dir) / CHECKPOINT_NAME} is missing"


class PastEnd(ValueError):
    """A sound checkpoint of an epoch beyond the run's `epochs`: the run was started again
    with fewer epochs than it has trained (check_epochs refuses it)."""

    def __init__(self, epoch: int):
        super().__init__(f"epoch {epoch}")
        self.epoch = epoch


@dataclass
class Saved:
    """A run's checkpoints that load, newest file first, and why any other was passed over."""

    loaded: list[tuple[int, Path, dict]] = field(default_factory=list)  # (epoch, file, state)
    problems: list[str] = field(default_factory=list)
    past_end: int = 0  # the newest sound checkpoint's epoch beyond the run's epochs (PastEnd)

    def epochs(self) -> set[int]:
        return {epoch for epoch, _, _ in self.loaded}

    def state(self, epoch: int) -> dict:
        return next(state for at, _, state in self.loaded if at == epoch)

    def pass_over(self, epoch: int, why: str) -> None:
        """The state of `epoch` loaded but could not be restored: forget it, say why."""
        index = next(i for i, (at, _, _) in enumerate(self.loaded) if at == epoch)
        _, path, _ = self.loaded.pop(index)
        self.problems.append(f"{path} does not fit this run ({why})")


def load_saved(run_dir: str | os.PathLike, epochs: int) -> Saved:
    """The checkpoint and the one before it, each read with weights_only=True (a checkpoint
    runs no code) and checked to hold every part of PARTS and a progress within `epochs`.
    A file that fails (cut short, empty, not a torch file, other keys) is a problem, not an
    error: the run goes on from what did load, or from scratch."""
    saved = Saved()
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
            saved.loaded.append((_checked_epoch(state, epochs), path, state))
        except PastEnd as past:
            saved.past_end = max(saved.past_end, past.epoch)
        except Exception as error:  # whatever a damaged file makes torch.load raise
            saved.problems.append(f"{path} is damaged ({describe(error)})")
    return saved


def _checked_epoch(state: Any, epochs: int) -> int:
    if not isinstance(state, dict) or set(PARTS) - set(state):
        missing = sorted(set(PARTS) - set(state)) if isinstance(state, dict) else list(PARTS)
        raise ValueError(f"no {', '.join(missing)} in it")
    progress = state["progress"]
    epoch = progress.get("epoch") if isinstance(progress, dict) else None
    history = progress.get("history") if isinstance(progress, dict) else None
    if isinstance(epoch, int) and epoch > epochs and isinstance(history, list) \
            and len(history) == epoch:  # a row an epoch: trained that far, not damaged
        raise PastEnd(epoch)
    if not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise ValueError(f"its progress says epoch {epoch!r}, not one of 1..{epochs}")
    return epoch


def describe(error: Exception) -> str:
    """An exception as one short line: its type and message."""
    text = " ".join(str(error).split())[:120]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_checkpoint(run_dir: str | os.PathLike) -> dict | None:
    """The run's newest checkpoint that loads (see load_saved), or None."""
    saved = load_saved(run_dir, epochs=2**31)
    return saved.state(max(saved.epochs())) if saved.loaded else None
