"""Learning-rate schedules, as pure functions of progress, in the SCHEDULES registry.

Each maps t in [0, 1] (the fraction of post-warm-up steps done) to a multiplier of the peak lr.
Warm-up is linear from 0 and applies to every schedule.
"""

from __future__ import annotations

import math

import torch


def _onecycle(t: float) -> float:
    # Smith's one-cycle as a triangle: up to the peak over the first 30% (his suggested
    # fraction), then down to zero.
    return t / 0.3 if t < 0.3 else (1.0 - t) / 0.7


SCHEDULES = {
    "constant": lambda t: 1.0,
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
    "onecycle": _onecycle,
    # The classic step decay: x0.1 at 50% and at 75% of training.
    "step": lambda t: 0.1 ** ((t >= 0.5) + (t >= 0.75)),
}


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / remaining)
    return SCHEDULES[schedule](t)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler; its state_dict holds only the step count, so checkpoints resume."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, warmup_steps, schedule))
