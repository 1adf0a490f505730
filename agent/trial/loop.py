"""A trial: K configurations trained together as one fused model, each reported as its own run.

`train_pack(configs) -> summaries` reads top to bottom: set-up (members, data, the pack),
restore, then per epoch: train, validate, record, let members leave (hyperband, divergence);
then test and summaries. `train(config) -> summary` is a pack of one. Agents call them many
times in one process (the data stays on the device); `python -m agent.train` calls `train` once.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace

import torch

from agent.params import hyperparameters, validate
from agent.trial import checkpoint
from agent.trial.evaluation import evaluate
from agent.trial.member import Member, TrialHooks, check_packable, run_identity
from agent.trial.metering import (
    confusion_matrix,
    member_weight_histograms,
    member_weight_norms,
    peak_memory_mb,
    per_class_accuracy,
)
from agent.trial.pack import TrainingPack, build_pack
from agent.trial.preflight import (
    check_batch_of_one,
    check_compilable,
    check_directories,
    check_fits,
    check_training_set,
    precision_note,
)
from agent.trial.sinks import SINKS
from agent.trial.sinks.run_dir_sink import RunDirSink
from nn.schedules import scheduled_lr
from util.device import pick_device
from util.device_cache import Splits, device_splits
from util.errors import one_line, storage_problem

__all__ = ["Preempted", "TrialHooks", "train", "train_pack"]


class Preempted(Exception):
    """The trial was asked to stop (SIGTERM at walltime); its last checkpoint stands, unless
    its summary's `no_checkpoint` says why none is kept, or it ended in its first epoch."""

    def __init__(self, summary: dict):
        super().__init__(f"run {summary['run_id']} interrupted in epoch "
                         f"{summary['epochs_done'] + 1}")
        self.summary = summary


def train(config: dict, hooks: TrialHooks | None = None, sweep: dict | None = None) -> dict:
    """Train one configuration and return its summary (also run_dir/summary.json).

    `sweep` ({"id", "name", "config"}) tags the run as part of a local sweep. Raises UserError
    for a bad configuration before anything is loaded or written, and Preempted when
    hooks.interrupted() turns true (the checkpoint of the last whole epoch stands).
    """
    (summary,) = train_pack([config], [hooks or TrialHooks()], sweep)
    if summary["state"] == "preempted":
        raise Preempted(summary)
    return summary


def train_pack(configs: list[dict], hooks: list[TrialHooks] | None = None,
               sweep: dict | None = None) -> list[dict]:
    """Train K compatible configurations as one packed model; one summary per configuration,
    in order, each with its `state` (finished, stopped, diverged or preempted; failed, with
    its own `error`, for a member refused: its checkpoints trained with other values; a pack
    of which every member is refused trains nothing and returns them all failed).

    Members must agree in agent/trial/member.py's PACK_SHARED (ValueError otherwise). Each is
    its own run everywhere: sinks, checkpoint, history, summary. A member that hyperband stops
    or whose loss goes non-finite leaves the pack; the others go on. interrupted() ends every
    member still training as preempted, also when something fails once it holds (a signal
    to every process of a job stops W&B's service process too): one line, no exception.
    """
    started = time.perf_counter()
    members = _members(configs, hooks or [TrialHooks() for _ in configs], sweep)
    pack = None
    try:
        cfg = members[0].cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        device = pick_device(cfg.device)
        check_fits([m.cfg for m in members], device)  # before any data or memory is taken
        check_compilable(cfg, device)
        check_batch_of_one(cfg)
        note = precision_note(cfg, device)
        if note:
            print(note, file=sys.stderr)
        check_directories([m.cfg for m in members])
        data = device_splits(cfg.dataset, cfg.data_dir, device, cfg.val_split, cfg.dataset_dir)
        check_training_set(cfg, len(data.train_y))
        pack = _built_and_restored(members, data, device)
        if pack is None:  # every member refused, each failed with its own line
            return [m.summary for m in members]
        _start_sinks(members, pack)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if pack.members[0].progress.epoch >= cfg.epochs:
            # every epoch trained before it ended (preempted after its last checkpoint: a
            # full disk at its end, a signal as it tested): tested and summarised now; before,
            # no member ended and the summary had no state (a KeyError; an agent's run stayed
            # running, then was repeated from scratch)
            _end_members(pack, data, {k: ("finished", None) for k in range(pack.size)},
                         started)
        while pack.size and pack.members[0].progress.epoch < cfg.epochs:
            _epoch(pack, data, device, started)
        return [m.summary for m in members]
    except Exception as error:
        if pack is None or not any(m.hooks.interrupted() for m in pack.members):
            _mark_cut_short(members, error)
            raise
        # A signal to stop (a scheduler's walltime, scancel) reaches every process of a job
        # at once, W&B's service process too: a call into it can fail before the loop has
        # seen the signal. The signal meant preempted, and so it ends: at the last checkpoint.
        print(f"run(s) {', '.join(m.run.id for m in pack.members)}: {type(error).__name__} "
              f"({one_line(error)[:120]}) while stopping for a signal; preempted at the last "
              "checkpoint", file=sys.stderr)
        _preempt(pack)
        return [m.summary for m in members]
    except BaseException as error:
        _mark_cut_short(members, error)
        raise
    finally:
        failure = None
        for member in members:  # every member's sinks, whichever member's fail to finish
            try:
                member.close_sinks()
            except Exception as error:  # noqa: BLE001 (raised below, once all are closed)
                failure = failure or error
        if failure is not None:
            raise failure


def _mark_cut_short(members: list[Member], error: BaseException) -> None:
    """An exception: the members still training end without a result; failed, unless the
    storage failed them (a full or read-only disk), which leaves them preempted at their
    last checkpoint for the next agent (agent/sweep/agent_loop.py)."""
    state = "preempted" if storage_problem(error) is not None else "failed"
    for member in members:
        if member.active:
            member.state = state


def _members(configs: list[dict], hooks: list[TrialHooks], sweep: dict | None) -> list[Member]:
    """Validated members with their identities and sinks (nothing is started yet)."""
    validated = [validate(config) for config in configs]
    check_packable(validated)
    members = []
    for cfg, hook in zip(validated, hooks):
        sinks = [SINKS[name]() for name in cfg.sinks] + [RunDirSink()]
        members.append(Member(cfg, run_identity(cfg, sweep), hook, sinks))
    for member in members:
        member.run.pack = len(members)
    return members


def _built_and_restored(members: list[Member], data: Splits,
                        device: torch.device) -> TrainingPack | None:
    """The pack, each member continued from its checkpoint at the newest epoch the members
    whose checkpoints are all sound share (checkpoint.py keeps two; all of them where none
    is), else from scratch. A checkpoint that is damaged, or loads but does not fit the
    model, is passed over (one trained with other values refuses its member,
    _without_refused; None when that refuses every member); a member left without that
    epoch goes back to its sweep (_sent_back), its pack-mates keeping their epochs; each
    member that resumes from less than its newest checkpoint says so on stderr, naming the
    file and the reason."""
    saved = [checkpoint.load_saved(m.run.run_dir, m.cfg.epochs) if m.cfg.checkpoint
             else checkpoint.Saved() for m in members]
    members, saved = _without_refused(members, saved)
    if not members:
        return None
    while True:
        epoch, behind = _resume_epoch(saved)
        kept = [k for k in range(len(members)) if k not in behind]
        # seeded: the same fresh pack every time
        pack = build_pack([members[k] for k in kept], data, device)
        slot = 0
        try:
            for slot, k in enumerate(kept):
                members[k].restore_progress({})  # from scratch, unless restored below
                if epoch:
                    checkpoint.restore(pack, slot, saved[k].state(epoch))
            break
        except Exception as error:  # a checkpoint of another model or optimizer
            saved[kept[slot]].pass_over(epoch, checkpoint.describe(error))
    _sent_back([members[k] for k in behind], [saved[k] for k in behind], epoch)
    for member, runs_saved in zip(members, saved):
        if not member.active:
            continue
        member.earlier_s = member.progress.wall_s
        if member.hooks.repeats and member.run.resumed_epoch:
            member.run.replay = list(member.progress.history)
        newest = max(runs_saved.epochs(), default=0)
        if runs_saved.problems or newest > epoch:
            where = f"resuming from epoch {epoch}" if epoch else "starting from scratch"
            reasons = runs_saved.problems or [f"the pack resumes together at epoch {epoch}"]
            print(f"run {member.run.id}: {'; '.join(reasons)}: {where}", file=sys.stderr)
    return pack


def _resume_epoch(saved: list[checkpoint.Saved]) -> tuple[int, list[int]]:
    """The epoch a pack resumes at, and the slots of the members that have no checkpoint of
    it. The epoch is the newest that every member whose checkpoints all loaded has (all the
    members where none has): one member's damaged file does not take its pack-mates' epochs
    back with it (to 0 where that was its only checkpoint), and a member with no checkpoint at
    all (a new run packed with a resumed one: W&B hands both out) does not take them back to
    scratch: it has nothing to lose by starting in a later claim."""
    sound = [runs_saved for runs_saved in saved if not runs_saved.problems] or saved
    holding = [runs_saved for runs_saved in sound if runs_saved.epochs()]
    epoch = max(set.intersection(*(s.epochs() for s in holding)), default=0) if holding else 0
    return epoch, [k for k, runs_saved in enumerate(saved)
                   if epoch and epoch not in runs_saved.epochs()]


def _sent_back(members: list[Member], saved: list[checkpoint.Saved], epoch: int) -> None:
    """Members that cannot resume at the pack's `epoch` (a damaged checkpoint left them
    behind, or they have none) end preempted before training, their files untouched: the
    sweep gives each to a later claim, which resumes it from what it has (a local agent's
    store: preempted; W&B: a preempted run, handed out again). Each says so on stderr and
    in its summary's `sent_back`."""
    for member, runs_saved in zip(members, saved):
        has = max(runs_saved.epochs(), default=0)
        what = f"its checkpoint of epoch {has}" if has else "scratch"
        line = (f"{'; '.join(runs_saved.problems)}: the pack resumes at epoch {epoch}, which "
                f"it has no checkpoint of; it goes back to the sweep, to resume from {what} "
                "in a later claim") if runs_saved.problems else (
            f"no checkpoint of it, and its pack resumes at epoch {epoch}: it goes back to the "
            "sweep, to start in a later claim")
        print(f"run {member.run.id}: {line}", file=sys.stderr)
        _ended_untrained(member, "preempted", epochs_done=has, sent_back=line)


def _ended_untrained(member: Member, state: str, **summary) -> None:
    """The member ends in `state` before the pack trains (refused, sent back): its summary
    (run id, state, and `summary`), its hooks told; no sink of it has started."""
    member.state = state
    member.summary = {"run_id": member.run.id, "state": state, **summary}
    member.hooks.ended(member.summary)


def _without_refused(members: list[Member], saved: list[checkpoint.Saved]
                     ) -> tuple[list[Member], list[checkpoint.Saved]]:
    """The members that may train, with their checkpoints. A checkpoint trained with other
    values than its member's (checkpoint.check_settings) is passed over; a member left with
    none but such checkpoints, or whose checkpoints go past its epochs (check_epochs), is
    refused: resuming would train on under values its epochs did
    not have, and starting over would write over the run they hold. Refused, it fails alone
    (state failed, its one line as `error`, hooks.ended told) and the others train without it,
    whatever epoch they resume at. A pack of which every member is refused trains nothing,
    each member failed with its own line (none is left: the empty lists); a run alone raises
    its refusal (train's UserError, exit code 2)."""
    refused = []
    for member, runs_saved in zip(members, saved):
        try:
            checkpoint.check_epochs(member.cfg, member.run.id, runs_saved.past_end)
        except checkpoint.SettingsMismatch as error:
            refused.append((member, error))
            continue
        mismatch = None
        for epoch, _, state in list(runs_saved.loaded):
            recorded = state.get(checkpoint.SETTINGS_PART)
            if not isinstance(recorded, dict):  # none recorded (older), or damaged: restore's
                continue
            try:
                checkpoint.check_settings(member.cfg, member.run.id, recorded, epoch)
            except checkpoint.SettingsMismatch as error:
                mismatch = mismatch or error
                runs_saved.pass_over(epoch, "trained with other values")
        if mismatch is not None and not runs_saved.loaded:
            refused.append((member, mismatch))
    if len(members) == 1 and refused:
        raise refused[0][1]
    for member, error in refused:
        _ended_untrained(member, "failed", error=str(error))
    kept = [k for k, member in enumerate(members) if member.active]
    return [members[k] for k in kept], [saved[k] for k in kept]


def _start_sinks(members: list[Member], pack: TrainingPack) -> None:
    """The sinks of the members that train. One refused or sent back before training has
    none: its run is not started again (a console header, TensorBoard's start from scratch,
    which would hide the epochs its event files hold from the step it resumes at later)."""
    for member in members:
        if member.active:
            member.start_sinks(dict(member.cfg), hyperparameters(member.cfg))


def _epoch(pack: TrainingPack, data: Splits, device: torch.device, started: float) -> None:
    """One epoch of every member still in the pack: train, validate, record, let some leave."""
    epoch = pack.members[0].progress.epoch
    for member in pack.members:
        for sink in member.sinks:
            sink.epoch_start(epoch, len(pack.loader))
    sums = _train_epoch(pack, data, device, started)
    if sums is None or not pack.size:
        return  # preempted, or every member diverged
    diverged = {k for k in range(pack.size) if not math.isfinite(sums["loss"][k])}
    validation = None
    if len(data.val_y):
        validation = evaluate(pack.ctx, data.val_x, data.val_y, data.mean, data.std, pack.size)
        diverged |= {k for k in range(pack.size) if not math.isfinite(validation.loss[k])}
    metrics = _epoch_metrics(pack, sums, validation, device)
    leaving = {k: ("diverged", None) for k in diverged}
    histograms = (member_weight_histograms(pack.model)
                  if any(m.cfg.histograms for m in pack.members) else None)
    kept = [k for k in range(pack.size) if k not in diverged]
    for k in kept:
        member = pack.members[k]
        _record_epoch(pack, k, metrics[k],
                      histograms[k] if histograms and member.cfg.histograms else {}, started)
    for k in kept:  # asked once every member's epoch is recorded: each sees all the others
        member = pack.members[k]
        reason = member.hooks.should_stop(member.progress.epoch, member.progress.history) \
            or member.stop_asked()
        if member.progress.epoch >= member.cfg.epochs:
            leaving[k] = ("finished", None)  # all epochs trained: finished, whatever the stop
        elif reason:
            leaving[k] = ("stopped", reason)
    _end_members(pack, data, leaving, started)


def _train_epoch(pack: TrainingPack, data: Splits, device: torch.device,
                 started: float) -> dict | None:
    """The steps of one epoch; per-member sums read back once at its end (None: preempted).

    A member whose running loss goes non-finite is noticed at the next check (every step on a
    CPU; every log_interval steps on a GPU, where each check would stall the device) and
    leaves the pack at once, as diverged; the others go on.
    """
    cfg = pack.members[0].cfg
    loss_sum = torch.zeros(pack.size, device=device)
    correct = torch.zeros(pack.size, device=device, dtype=torch.long)
    seen = last_seen = 0
    epoch_started = last_log = time.perf_counter()
    check_every = 1 if device.type == "cpu" else cfg.log_interval
    final = pack.members[0].progress.epoch + 1 == cfg.epochs  # the run's last epoch
    for step_in_epoch, (images, labels) in enumerate(pack.loader, start=1):
        if any(m.hooks.interrupted() for m in pack.members):
            _preempt(pack)
            return None
        progress = pack.members[0].progress
        pack.optimizer.set_lr(pack.lr[progress.global_step])
        # the steps 1, 1 + log_interval, ... and the run's last: without it a step curve
        # ended up to log_interval - 1 steps short (at 101 of 120: epoch 2.5 of 3)
        log_now = progress.global_step % cfg.log_interval == 0 or (
            final and step_in_epoch == len(pack.loader))
        step = pack.step(pack.ctx, images, labels, pack.meter if log_now else None)
        losses, logits = step.losses, step.logits
        for member in pack.members:
            member.progress.global_step += 1
        seen += len(labels)
        loss_sum += losses * len(labels)
        hits = logits.argmax(-1) == labels  # (B, K)
        correct += hits.sum(0)
        if log_now:
            now = time.perf_counter()
            rate = (seen - last_seen) / max(now - last_log, 1e-9)
            last_log, last_seen = now, seen
            _log_step(pack, losses, hits, step.grad_norm, rate, len(pack.loader))
        if step_in_epoch % check_every == 0:
            finite = torch.isfinite(loss_sum).tolist()
            if not all(finite):
                keep = [k for k, ok in enumerate(finite) if ok]
                _end_members(pack, data, {k: ("diverged", None) for k, ok in enumerate(finite)
                                          if not ok}, started)
                loss_sum, correct = loss_sum[keep], correct[keep]
                if not pack.size:
                    return None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    epoch_s = time.perf_counter() - epoch_started
    return {"loss": (loss_sum / max(seen, 1)).tolist(),
            "acc": (correct.double() / max(seen, 1)).tolist(),
            "seen": seen, "epoch_s": epoch_s}


def _log_step(pack: TrainingPack, losses, hits, grad_norm, rate: float, steps: int) -> None:
    """The logged step's loss, accuracy and gradient norm of every member (one read-back)."""
    values = torch.stack([losses.float(), hits.float().mean(0), grad_norm.float()]).tolist()
    for k, member in enumerate(pack.members):
        step = member.progress.global_step
        metrics = {"train/step_loss": values[0][k], "train/step_acc": values[1][k],
                   "grad_norm/step_global": values[2][k], "perf/step_images_per_s": rate,
                   "epoch": step / steps}
        for sink in member.sinks:
            sink.log_step(step, metrics)


def _epoch_metrics(pack: TrainingPack, sums: dict, validation, device) -> list[dict]:
    """Each member's epoch row: losses, accuracies, lr, norms, speed, memory."""
    gradients = pack.meter.epoch_metrics()
    weights = member_weight_norms(pack.model)
    memory = peak_memory_mb(device)
    rows = []
    for k, member in enumerate(pack.members):
        cfg, progress = member.cfg, member.progress
        # the schedule at the row's step, the epoch's end (the next step's lr): the point
        # TensorBoard and W&B plot against the step; the console shows the epoch's own
        row = {"epoch": progress.epoch + 1, "train/loss": sums["loss"][k],
               "train/acc": sums["acc"][k],
               "lr": scheduled_lr(cfg.lr, progress.global_step, len(pack.loader), cfg.epochs,
                                  cfg.warmup_epochs, cfg.schedule),
               "batch_size": cfg.batch_size}
        if validation is not None:
            row.update({"val/loss": validation.loss[k], "val/acc": validation.acc[k]})
        row.update(gradients[k] if gradients else {})
        row.update(weights[k])
        row.update({"perf/images_per_s": sums["seen"] / sums["epoch_s"],
                    "perf/epoch_s": sums["epoch_s"], "perf/peak_mem_mb": memory})
        rows.append(row)
    return rows


def _record_epoch(pack: TrainingPack, k: int, row: dict, histograms: dict,
                  started: float) -> None:
    """Member k's epoch: progress, history, sinks (with its weight histograms), checkpoint."""
    member = pack.members[k]
    progress = member.progress
    progress.epoch = row["epoch"]
    progress.wall_s = member.earlier_s + time.perf_counter() - started
    progress.history.append(row)
    if "val/acc" in row and (progress.best_val_acc is None
                             or row["val/acc"] > progress.best_val_acc):
        progress.best_val_acc, progress.best_epoch = row["val/acc"], progress.epoch
    for sink in member.sinks:  # every one before any logs the epoch (Sink.ensure_room)
        sink.ensure_room()
    for sink in member.sinks:
        sink.log_epoch(progress.global_step, row, histograms)
    if member.cfg.checkpoint:
        checkpoint.save_checkpoint(member.run.run_dir, checkpoint.capture(pack, k))
    member.hooks.recorded(progress.epoch, progress.history)


def _end_members(pack: TrainingPack, data: Splits, leaving: dict[int, tuple[str, str | None]],
                 started: float) -> None:
    """End the members in slots `leaving` ({slot: (state, stop reason)}): test the ones that
    did not diverge, write their summaries, tell their hooks, and shrink the pack."""
    if not leaving:
        return
    tested = sorted(k for k, (state, _) in leaving.items() if state != "diverged")
    test = _test(pack, data, tested) if tested else None
    for k, (state, reason) in sorted(leaving.items()):
        member = pack.members[k]
        member.state, member.stop_reason = state, reason
        column = tested.index(k) if k in tested else None
        member.summary = _summary(member, pack, data, test, column, started)
        member.close_sinks()
        member.hooks.ended(member.summary)
    pack.select([k for k in range(pack.size) if k not in leaving])


def _test(pack: TrainingPack, data: Splits, slots: list[int]):
    """Test-set evaluation of the members in `slots` (only those: a fused forward costs one
    member's work per member)."""
    ctx = pack.ctx
    if len(slots) < pack.size:
        model = pack.model.select(slots)
        ctx = replace(ctx, model=model, forward=model, smoothing=ctx.smoothing[slots])
    return evaluate(ctx, data.test_x, data.test_y, data.mean, data.std, len(slots),
                    keep_predictions=True)


def _summary(member: Member, pack: TrainingPack, data: Splits, test, column: int | None,
             started: float) -> dict:
    """A member's summary; test metrics and the confusion matrix unless it diverged."""
    cfg, progress = member.cfg, member.progress
    last = progress.history[-1] if progress.history else {}
    summary = {
        "run_id": member.run.id, "run_name": member.run.name, "group": member.run.group,
        "optimizer": cfg.optimizer, "model": cfg.model, "dataset": cfg.dataset,
        "val/best_acc": progress.best_val_acc, "val/best_epoch": progress.best_epoch,
        "params": pack.params_per_member, "diverged": member.state == "diverged",
        "epochs_done": progress.epoch, "global_step": progress.global_step,
        **{key: last[key] for key in ("train/loss", "train/acc", "val/loss", "val/acc")
           if key in last},
    }
    if progress.history:
        speeds = [row["perf/images_per_s"] for row in progress.history]
        summary["perf/images_per_s"] = sum(speeds) / len(speeds)
        summary["perf/train_s"] = sum(row["perf/epoch_s"] for row in progress.history)
        summary["perf/peak_mem_mb"] = max(row["perf/peak_mem_mb"] for row in progress.history)
    if column is not None:
        matrix = confusion_matrix(data.test_y, test.predictions[:, column], len(data.classes))
        summary.update({"test/loss": test.loss[column], "test/acc": test.acc[column]})
        summary.update({f"test/class_acc/{name}": acc
                        for name, acc in zip(data.classes, per_class_accuracy(matrix))})
        for sink in member.sinks:
            sink.log_confusion(progress.global_step, matrix, data.classes)
    if member.stop_reason:
        summary["stop_reason"] = member.stop_reason
    summary["state"] = member.state
    summary["wall_s"] = member.earlier_s + time.perf_counter() - started
    return summary


def _preempt(pack: TrainingPack) -> None:
    """Every member still training ends as preempted; its last checkpoint stands, unless it
    is gone (its folder deleted while it trained) or was never written (checkpoint: false):
    its summary's `no_checkpoint` then says why, which the agent's line repeats."""
    for member in pack.members:
        member.state = "preempted"
        member.summary = {"run_id": member.run.id, "state": "preempted",
                          "epochs_done": member.progress.epoch,
                          "global_step": member.progress.global_step}
        if member.progress.epoch:
            member.summary["no_checkpoint"] = checkpoint.none_kept(member.run.run_dir,
                                                                  member.cfg.checkpoint)
        member.close_sinks()
        member.hooks.ended(member.summary)
    pack.select([])
