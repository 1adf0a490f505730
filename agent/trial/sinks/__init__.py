"""Where a trial's metrics go, in the SINKS registry.

Every sink receives the same metric names (`train/loss`, `val/acc`, ...) through the same calls,
in this order: start, then per epoch epoch_start / log_step... / ensure_room / log_epoch, then
log_confusion
and finish. A run parameter (`sinks`) switches each one on or off.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from util.disk_room import room_refused

# Set by the launcher in the environment of each agent it starts when it starts more than one:
# how many agents write to its terminal. Their lines interleave there, so a run's epoch lines
# name it (as a pack's members' do) and no process draws a live progress bar over the others'.
AGENTS_SHARING_OUTPUT = "SWEEP_AGENTS_SHARING_OUTPUT"


def agents_sharing_output() -> int:
    """The agents writing to this process's terminal (AGENTS_SHARING_OUTPUT; 1 where it is
    not set or not a positive integer: an agent started by hand has its terminal alone)."""
    text = os.environ.get(AGENTS_SHARING_OUTPUT, "")
    return int(text) if text.isdigit() and int(text) >= 1 else 1


@dataclass
class RunInfo:
    id: str
    name: str
    group: str
    log_dir: str  # TensorBoard event files of this run
    run_dir: str  # checkpoint, summary, traceback of this run
    resumed_epoch: int = 0  # epochs already done before this start (resume)
    resumed_step: int = 0  # the steps those epochs took (global_step at the checkpoint)
    sweep: dict | None = None  # {"id", "name", "config"} when the run belongs to a local sweep
    pack: int = 1  # members of the pack the run trains in (1: alone)
    # The epoch rows a new record of this run starts with: this start continues a crashed
    # run's checkpoint as its repeat (agent/trial/member.py continue_crashed), and a sink that
    # keeps a record per run id (W&B) has none of those epochs yet. Empty otherwise.
    replay: list[dict] = field(default_factory=list)


def given_values(run: RunInfo, config: dict) -> dict:
    """The run's values as its sweep gave them, where its agent passed them on (the sweep's
    progress, "params" by run id), over the trial's `config`: a null stays None, which is
    what W&B's ${args} writes (`--run_name=None`) and the status table and closing lines
    show; the trial's config holds the default ("") instead."""
    progress = (run.sweep or {}).get("progress") or {}
    return {**config, **((progress.get("params") or {}).get(run.id) or {})}


class Sink:
    """The calls a trial makes; a sink overrides the ones it uses."""

    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        pass

    def epoch_start(self, epoch: int, steps: int) -> None:
        pass

    def log_step(self, step: int, metrics: dict) -> None:
        pass

    def ensure_room(self) -> None:
        """OSError (check_room) when the disk this sink writes to lacks the room its epoch's
        records want. The trial asks every sink of a run before any logs the epoch: a sink
        refusing after another had logged it left that epoch in the other one twice once the
        run resumed from the epoch before."""

    def log_epoch(self, step: int, metrics: dict, histograms: dict) -> None:
        pass

    def log_confusion(self, step: int, matrix, classes: list[str]) -> None:
        pass

    def finish(self, summary: dict, state: str) -> None:
        """state: finished, diverged, stopped, preempted or failed."""

    def stop_asked(self) -> str | None:
        """Why the service behind this sink asked the run to stop (a user's Stop in W&B's
        UI), else None; read after each epoch, the member then ends as stopped."""
        return None


# The room a sink that writes files wants left on their disk at each epoch's end. Both
# writers hold records in memory before they reach the disk: wandb's service up to 15 s of
# them (x_transaction_log_flush_interval), and fails to write them without a word to the
# trial (its own log says so); TensorBoard's writer thread up to FLUSH_S, and its failure
# reaches the trial only at the next write, after the checkpoint of their epoch, which a
# resume continues from without logging them again. Stopped while the disk still holds them,
# the run is preempted at its last checkpoint (the epoch's before this one) and a resume logs
# this epoch again: nothing it trained is missing from the sink. A MiB holds dozens of
# epochs of a small run's rows and histograms (12 kB an epoch for a digits run's W&B file).
ROOM_BYTES = 1 << 20


def check_room(path: str | os.PathLike, what: str) -> None:
    """OSError (ENOSPC, or EDQUOT past a disk quota; naming `path`) when the file system of
    `path` (or of its nearest existing parent) has less than ROOM_BYTES for this process:
    the trial then ends as a full disk ends it, one line and the run preempted at its last
    checkpoint. The room is asked of the disk's free space and, as that knows no quota,
    also set aside for a moment (util.disk_room)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    refused = errno.ENOSPC if shutil.disk_usage(folder).free < ROOM_BYTES else \
        room_refused(folder if folder.is_dir() else folder.parent, ROOM_BYTES)
    if refused is not None:
        where = "within its disk quota" if refused == errno.EDQUOT else "on its disk"
        raise OSError(refused, f"less than {ROOM_BYTES >> 20} MiB left {where} for {what}",
                      str(path))


def _wandb():
    from agent.trial.sinks.wandb_sink import WandbSink
    return WandbSink()


def _tensorboard():
    from agent.trial.sinks.tensorboard_sink import TensorBoardSink
    return TensorBoardSink()


def _console():
    from agent.trial.sinks.console_sink import ConsoleSink
    return ConsoleSink()


# Constructors import their library only when chosen: a run without W&B never imports wandb.
SINKS = {
    "wandb": _wandb,
    "tensorboard": _tensorboard,
    "console": _console,
}
