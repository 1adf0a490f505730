"""Step-level training losses of a run, wherever they were recorded: the run's TensorBoard
event files (local runs), W&B's per-step history rows (W&B runs), or failing both the
epoch means of the store's history (said so in the report)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from agent.report.study import RunRecord

STEP_TAG = "train/step_loss"


@dataclass
class LossCurve:
    steps: list[float]  # x: the training step (or the epoch, when source == "epoch")
    losses: list[float]  # may hold inf / nan where the run blew up
    source: str  # "tensorboard", "wandb" or "epoch"
    steps_per_epoch: int | None = None  # training steps an epoch, where the rows say it


def tensorboard_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar tag in every event file of a TensorBoard run directory
    (not its sub-directories), in file then write order; [] when there is none."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    if log_dir is None or not log_dir.is_dir():
        return []
    points = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    number = (value.simple_value if value.HasField("simple_value")
                              else float(value.tensor.float_val[0]))
                    points.append((event.step, number))
    return points


def _steps_per_epoch(points: list[tuple[float, float]]) -> int | None:
    """Training steps an epoch from (step, epoch) pairs: the trainer logs the epoch as
    step / steps an epoch beside each step's loss, and the epoch's number at its last step;
    read at the latest pair (the least rounded)."""
    points = [(s, e) for s, e in points if isinstance(s, (int, float))
              and isinstance(e, (int, float)) and e > 0 and s > 0]
    if not points:
        return None
    step, epoch = max(points)
    return max(1, round(step / epoch))


def loss_curve(run: RunRecord) -> LossCurve:
    """The run's training loss step by step, from the best source available."""
    points = tensorboard_scalars(run.log_dir, STEP_TAG) if run.log_dir else []
    if points:
        steps = dict(points)  # a resumed run wrote some steps twice: the last value stands
        order = sorted(steps)
        return LossCurve(order, [steps[s] for s in order], "tensorboard",
                         _steps_per_epoch(tensorboard_scalars(run.log_dir, "epoch")))
    if run.steps:
        rows = [r for r in run.steps if isinstance(r.get(STEP_TAG), (int, float))]
        return LossCurve([r.get("_step", i) for i, r in enumerate(rows)],
                         [float(r[STEP_TAG]) for r in rows], "wandb",
                         _steps_per_epoch([(r.get("_step"), r.get("epoch"))
                                           for r in run.steps]))
    return epoch_curve(run)


def epoch_curve(run: RunRecord) -> LossCurve:
    """The run's training loss by epoch: the epoch means of the store's history."""
    rows = [r for r in run.history if isinstance(r.get("train/loss"), (int, float))]
    return LossCurve([r.get("epoch", i + 1) for i, r in enumerate(rows)],
                     [float(r["train/loss"]) for r in rows], "epoch")


def drawn_curve(run: RunRecord, curve: LossCurve) -> LossCurve:
    """What a figure of training losses draws for `run`, whose loss_curve is `curve`: its
    logged steps where they are more points than its epochs or hold the non-finite loss
    that ended it, else its epoch means. With log_interval 20 and 11 steps an epoch a run
    logs one step an epoch or fewer: stopped after its first epoch it had one point, its
    first step's loss, drawn as a dot on an axis from step 0.96 to 1.04; its epoch's mean
    loss says more."""
    if curve.source == "epoch":
        return with_divergence(run, curve)
    epochs = epoch_curve(run)
    if len(curve.steps) > len(epochs.steps) or not all(map(math.isfinite, curve.losses)):
        return with_divergence(run, curve)
    return with_divergence(run, epochs)


def with_divergence(run: RunRecord, curve: LossCurve) -> LossCurve:
    """`curve` with a non-finite loss where the trainer stopped `run` on one, when none of
    its points holds it: the step the summary gives (global_step: where the trainer noticed
    it, every step on a CPU, up to log_interval steps later on a GPU), or on a curve of
    epoch means the end of the epoch it did not finish. The trainer logs every
    log_interval-th step only, so a run that went non-finite between two (within its first
    epoch, after its one logged step) was drawn as a lone dot at step 1, with none of the
    x that marks where the other diverged runs blew up."""
    if not run.summary.get("diverged") or not all(map(math.isfinite, curve.losses)):
        return curve
    at = (run.summary.get("epochs_done") or 0) + 1 if curve.source == "epoch" else \
        run.summary.get("global_step")
    if not isinstance(at, (int, float)) or (curve.steps and at <= max(curve.steps)):
        return curve
    return LossCurve([*curve.steps, at], [*curve.losses, math.inf], curve.source,
                     curve.steps_per_epoch)


def in_epochs(curve: LossCurve) -> LossCurve | None:
    """A step curve against the epoch (step / steps an epoch, as the trainer logs the epoch),
    to share an axis with curves of epoch means; None where the steps an epoch are unknown."""
    if curve.source == "epoch":
        return curve
    if not curve.steps_per_epoch:
        return None
    return LossCurve([s / curve.steps_per_epoch for s in curve.steps], list(curve.losses),
                     "epoch", curve.steps_per_epoch)


def step_losses(curve: LossCurve) -> list[float]:
    """The curve's losses when they are step-level (the group rule reads them), else []."""
    return list(curve.losses) if curve.source != "epoch" else []


def first_non_finite(curve: LossCurve) -> float | None:
    return next((s for s, v in zip(curve.steps, curve.losses) if not math.isfinite(v)), None)
