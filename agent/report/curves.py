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


def loss_curve(run: RunRecord) -> LossCurve:
    """The run's training loss step by step, from the best source available."""
    points = tensorboard_scalars(run.log_dir, STEP_TAG) if run.log_dir else []
    if points:
        steps = dict(points)  # a resumed run wrote some steps twice: the last value stands
        order = sorted(steps)
        return LossCurve(order, [steps[s] for s in order], "tensorboard")
    if run.steps:
        rows = [r for r in run.steps if isinstance(r.get(STEP_TAG), (int, float))]
        return LossCurve([r.get("_step", i) for i, r in enumerate(rows)],
                         [float(r[STEP_TAG]) for r in rows], "wandb")
    rows = [r for r in run.history if isinstance(r.get("train/loss"), (int, float))]
    return LossCurve([r.get("epoch", i + 1) for i, r in enumerate(rows)],
                     [float(r["train/loss"]) for r in rows], "epoch")


def step_losses(curve: LossCurve) -> list[float]:
    """The curve's losses when they are step-level (the group rule reads them), else []."""
    return list(curve.losses) if curve.source != "epoch" else []


def first_non_finite(curve: LossCurve) -> float | None:
    return next((s for s, v in zip(curve.steps, curve.losses) if not math.isfinite(v)), None)
