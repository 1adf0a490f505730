"""Learning-rate schedules, as pure functions of progress, in the SCHEDULES registry.

Each maps t in [0, 1] (the fraction of post-warm-up steps done; a float or a tensor of them)
to a multiplier of the peak lr. Warm-up is linear and applies to every schedule: step s of W
warm-up steps takes (s + 1) / W of the peak lr (gradual warm-up, Goyal et al., "Accurate,
Large Minibatch SGD", 2017). Sources: cosine is SGDR's annealing without restarts (Loshchilov
& Hutter, ICLR 2017); step is the ResNet schedule, lr / 10 at 50% and 75% of training (He et
al., CVPR 2016, CIFAR: at 32k and 48k of 64k iterations); onecycle is Smith's one-cycle
policy (Smith, "A disciplined approach to neural network hyper-parameters", arXiv:1803.09820,
2018) as a triangle.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a table is made: the names are read without it
    import torch


def _cos(t):
    return math.cos(t) if isinstance(t, (int, float)) else t.cos()


def _onecycle(t):
    # Smith's one-cycle as a triangle: up to the peak over the first 30% (the default of
    # torch's OneCycleLR, pct_start; Smith's own cycle rises and falls in equal halves and
    # then anneals further), then down to zero.
    if isinstance(t, (int, float)):
        return t / 0.3 if t < 0.3 else (1.0 - t) / 0.7
    return (t / 0.3).where(t < 0.3, (1.0 - t) / 0.7)


SCHEDULES = {
    "constant": lambda t: 1.0 + 0.0 * t,
    "cosine": lambda t: 0.5 * (1.0 + _cos(math.pi * t)),
    "onecycle": _onecycle,
    # The classic step decay: x0.1 at 50% and at 75% of training.
    "step": lambda t: 0.1 ** ((t >= 0.5) * 1.0 + (t >= 0.75) * 1.0),
}


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the peak lr at optimizer step `step` (0-based) of `total_steps`, of
    which the first `warmup_steps` warm up linearly; `schedule` names a SCHEDULES entry
    (KeyError for another name: the run parameter's check refuses it first)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / remaining)
    return SCHEDULES[schedule](t)


def scheduled_lr(peak_lr: float, step: int, steps_per_epoch: int, epochs: int,
                 warmup_epochs: float, schedule: str) -> float:
    """The lr of optimizer step `step` (0-based) of a run of `epochs` epochs of
    `steps_per_epoch` steps each, its first `warmup_epochs` (rounded to whole steps) warming
    up: the row of `lr_table` that step trains with."""
    total = epochs * steps_per_epoch
    return peak_lr * lr_multiplier(step, total, round(warmup_epochs * steps_per_epoch),
                                   schedule)


def lr_table(base_lr: list[float], total_steps: int, warmup_steps: list[int],
             schedule: str) -> torch.Tensor:
    """Every member's learning rate at every step, shape (total_steps + 1, K), float64.

    Row s is what `lr_multiplier(s, ...)` times the member's peak lr gives; the last row is
    the rate after the final step (what a scheduler reports at the end).
    """
    import torch

    steps = torch.arange(total_steps + 1, dtype=torch.float64).unsqueeze(1)  # (S, 1)
    warmup = torch.tensor(warmup_steps, dtype=torch.float64).unsqueeze(0)  # (1, K)
    t = ((steps - warmup) / (total_steps - warmup).clamp_min(1)).clamp(0.0, 1.0)
    after = SCHEDULES[schedule](t)
    during = (steps + 1) / warmup.clamp_min(1)
    multiplier = torch.where(steps < warmup, during, after)
    return multiplier * torch.tensor(base_lr, dtype=torch.float64).unsqueeze(0)
