"""A member of a pack: one run's configuration, identity, hooks, sinks and progress.

A trial trains K members at once as one fused model (K = 1 for a single run). Members share
what the fused model and the batch stream need (`PACK_SHARED`) and may differ in everything
else a sweep varies: lr, momentum, weight decay, dropout, label smoothing, rho, warm-up, seed,
augmentation, and where their results go.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.ids import new_run_id, path_safe, run_directory
from agent.params import PARAMS, RunConfig
from agent.trial.sinks import RunInfo, Sink

# Run parameters that do not change what is trained (where results go, how often they are
# logged): members may differ in them too. Not `checkpoint`: a pack resumes at the newest
# epoch every member has a checkpoint of, so a member without them would restart them all.
RUN_IDENTITY = ("group", "run_name", "run_id", "log_dir", "run_dir", "sinks", "histograms")
# What a member may differ in besides its identity: the per-member hyper-parameters of the
# fused model (dropout), its optimizer (per-member tensors) and its own data stream.
PER_MEMBER = ("lr", "momentum", "nesterov", "weight_decay", "rho", "adaptive", "dropout",
              "label_smoothing", "warmup_epochs", "seed", "augment", "crop_padding", "flip",
              "random_erasing")
PACK_SHARED = tuple(p.name for p in PARAMS if p.name not in RUN_IDENTITY + PER_MEMBER)


def pack_key(config: dict) -> tuple:
    """Configurations with equal keys can train together as one packed trial.

    `config` is a validated RunConfig or a sweep's raw {name: value} (missing names take their
    defaults, so equal meanings give equal keys). Pure and torch-free: the controller groups
    claims with it.
    """
    from agent.params import validate

    full = config if isinstance(config, RunConfig) else validate(
        {k: v for k, v in config.items() if v is not None})
    return tuple((name, _hashable(full[name])) for name in PACK_SHARED)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass
class TrialHooks:
    """How the caller steers a running member.

    recorded(epoch, history) runs after every epoch, once the member's row is in its sinks
    and checkpoint (the caller stores it; False: the run is no longer the caller's, which
    its interrupted() then says). should_stop(epoch, history) runs after every member of the
    pack has recorded that epoch, so an early_terminate rule (hyperband) compares each member
    with all of its pack-mates, and returns a reason to stop early or None. interrupted() is
    polled every step; True ends the whole pack as preempted, keeping each member's
    checkpoint of its last whole epoch. ended(summary) is called once when the member ends
    (finished, stopped, diverged or preempted), so the caller can record it at once.
    `repeats` names the crashed run whose checkpoint this start continues, when it does.
    """

    recorded: Callable[[int, list[dict]], bool] = lambda epoch, history: True
    should_stop: Callable[[int, list[dict]], str | None] = lambda epoch, history: None
    interrupted: Callable[[], bool] = lambda: False
    ended: Callable[[dict], None] = lambda summary: None
    # the crashed run whose checkpoint this start continues (its files just copied: the
    # run's first start as that run's repeat), else None
    repeats: str | None = None


@dataclass
class Progress:
    """What a checkpoint carries besides the tensors: enough to continue the run exactly."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_val_acc: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    # seconds of the run's trials up to this checkpoint: a resumed run's wall_s counts the
    # stretches before it too (not the time it waited to be resumed)
    wall_s: float = 0.0

    def state(self) -> dict:
        """The progress as plain values for a checkpoint: `dataclasses.asdict` would copy
        every history row recursively at every epoch (a third of a small member's
        checkpoint time in a pack of 24); the rows hold plain values, a shallow copy each."""
        return {"epoch": self.epoch, "global_step": self.global_step,
                "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                "history": [dict(row) for row in self.history], "wall_s": self.wall_s}


@dataclass
class Member:
    """One run inside a pack. `index` is its slot in the fused model while it trains."""

    cfg: RunConfig
    run: RunInfo
    hooks: TrialHooks
    sinks: list[Sink] = field(default_factory=list)
    started_sinks: list[Sink] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    state: str = "running"  # then finished, stopped, diverged, preempted or failed
    stop_reason: str | None = None
    summary: dict = field(default_factory=dict)
    earlier_s: float = 0.0  # progress.wall_s when this trial began (a resumed run's past)

    @property
    def active(self) -> bool:
        return self.state == "running"

    def start_sinks(self, config: dict, hparams: dict) -> None:
        for sink in self.sinks:
            sink.start(self.run, config, hparams)
            self.started_sinks.append(sink)

    def stop_asked(self) -> str | None:
        """The first reason a started sink gives to stop this run (Sink.stop_asked)."""
        return next((reason for sink in self.started_sinks
                     if (reason := sink.stop_asked())), None)

    def close_sinks(self) -> None:
        """Finish every started sink with the member's summary and state (once).

        A preempted member stays preempted when a sink cannot finish: a batch scheduler
        (scancel, qdel, PBS's or SLURM's walltime) signals every process of the job at once,
        W&B's own service process included, so its run can no longer be closed; the
        checkpoint stands and the next agent resumes the run. Otherwise the first sink's
        failure is raised once every other sink has finished (W&B's service gone must not
        leave TensorBoard's last events unwritten)."""
        failure = None
        while self.started_sinks:
            sink = self.started_sinks.pop()
            try:
                sink.finish(self.summary, self.state)
            except Exception as error:
                if self.state != "preempted":
                    failure = failure or error
                    continue
                print(f"run {self.run.id}: {type(sink).__name__} could not finish "
                      f"({type(error).__name__}: {' '.join(str(error).split())[:120]}); "
                      "the run stays preempted", file=sys.stderr)
        if failure is not None:
            raise failure

    def restore_progress(self, saved: dict) -> None:
        """Continue from a checkpoint's progress (agent/trial/checkpoint.py)."""
        self.progress = Progress(**saved)
        self.run.resumed_epoch = self.progress.epoch
        self.run.resumed_step = self.progress.global_step


def run_identity(cfg: RunConfig, sweep: dict | None = None) -> RunInfo:
    """Where a run's results go: its id, name, group, TensorBoard and run directories."""
    # Under `wandb agent` a program run gets its id and sweep from the environment.
    run_id = cfg.run_id or os.environ.get("WANDB_RUN_ID") or new_run_id()
    group = cfg.group or os.environ.get("WANDB_SWEEP_ID") or "default"
    name = cfg.run_name or run_id
    return RunInfo(id=run_id, name=name, group=group,
                   log_dir=str(Path(cfg.log_dir) / path_safe(group) / path_safe(name)),
                   run_dir=str(run_directory(cfg.run_dir, run_id)), sweep=sweep)


def continue_crashed(config: dict, crashed_id: str, epoch: int = 0,
                     crashed_epoch: int = 0) -> tuple[str, str | None]:
    """Before run `config['run_id']`, the repeat of the crashed run `crashed_id`, resumes from
    that run's checkpoint (agent/sweep/controller.py repeats a crashed run from its last
    recorded epoch): the crashed run's checkpoint files and TensorBoard event files are copied
    into the repeat's run and log directories, and the trial resumes from them as from its own
    (the TensorBoard sink's purge_step hides what the crashed run logged after its
    checkpoint). Each file is copied whole, then renamed, the checkpoint last: a kill midway
    leaves no partial file, and the next start copies again. Nothing is copied when the repeat
    has a checkpoint already (an earlier start of it). `epoch`: the repeat's last epoch in
    the store, `crashed_epoch` the crashed run's: a repeat that got further on its own
    (preempted) and whose checkpoint is gone (its folder deleted) resumes from the crashed
    run's older checkpoint, and the line says so. Returns a line for the console, and what
    the trial resumes from: "crashed" (the files just copied), "own" (the repeat's own
    checkpoint) or None (no checkpoint of either: it starts over)."""
    from agent.params import validate
    from agent.trial.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, none_kept

    repeat = run_identity(validate(config))
    crashed = run_identity(validate({**config, "run_id": crashed_id}))
    own, theirs = Path(repeat.run_dir), Path(crashed.run_dir)
    if none_kept(own) is None:
        return f"run {repeat.id} (repeating crashed run {crashed_id}) resumes from its own " \
               "checkpoint", "own"
    # the epochs this repeat trained past the crashed run's, whose checkpoint is gone
    own_lost = f"its own checkpoint of epoch {epoch} is missing ({own / CHECKPOINT_NAME})" \
        if epoch > crashed_epoch else ""
    if not (theirs / CHECKPOINT_NAME).exists():
        return f"run {repeat.id} repeats crashed run {crashed_id} from scratch: no checkpoint " \
               f"of it in {theirs}" + (f", and {own_lost}" if own_lost else ""), None
    copies = []
    if Path(crashed.log_dir) != Path(repeat.log_dir):
        copies += [(event, Path(repeat.log_dir) / event.name)
                   for event in sorted(Path(crashed.log_dir).glob("events.out.tfevents.*"))]
    copies += [(theirs / name, own / name) for name in (PREVIOUS_NAME, CHECKPOINT_NAME)
               if (theirs / name).is_file()]
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        # not named like the file: TensorBoard reads every file with "tfevents" in its name
        partial = target.parent / ".copying.partial"
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    if own_lost:
        return (f"run {repeat.id} (repeating crashed run {crashed_id}) resumes from the crashed "
                f"run's older checkpoint ({theirs}): {own_lost}, so the epochs it trained "
                "after that checkpoint are trained again"), "crashed"
    return (f"run {repeat.id} repeats crashed run {crashed_id} from its checkpoint ({theirs})",
            "crashed")


def resume_preempted(config: dict, epoch: int) -> str | None:
    """Before run `config['run_id']`, preempted after `epoch` epochs (the store's), resumes
    from its checkpoint: a line for the console when none is left to resume from (its folder
    deleted; checkpoint: false), so that it starts over from scratch, else None (the trial
    resumes, and says so where it resumes from less than the newest checkpoint)."""
    from agent.params import validate
    from agent.trial.checkpoint import CHECKPOINT_NAME, none_kept

    cfg = validate(config)
    run_dir = Path(run_identity(cfg).run_dir)
    if none_kept(run_dir, cfg.checkpoint) is None:
        return None
    what = "it keeps no checkpoint (checkpoint: false)" if not cfg.checkpoint else \
        f"its checkpoint of epoch {epoch} is missing ({run_dir / CHECKPOINT_NAME})"
    return f"run {cfg.run_id} (preempted after epoch {epoch}) starts over from scratch: {what}"


def check_packable(configs: list[RunConfig]) -> None:
    """ValueError unless every configuration shares the first one's PACK_SHARED values."""
    first = configs[0]
    for cfg in configs[1:]:
        differing = [n for n in PACK_SHARED if cfg[n] != first[n]]
        if differing:
            raise ValueError("these configurations cannot share one packed model: they "
                             f"differ in {', '.join(differing)}")
    ids = [c.run_id for c in configs if c.run_id]
    if len(ids) != len(set(ids)):
        raise ValueError(f"two members of one pack have the same run_id: {ids}")

