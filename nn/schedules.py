"""Learning-rate schedules, as pure functions of progress, in the SCHEDULES registry.

Each maps (s, n), step s (0-based; a float or a tensor of them) of the n steps after warm-up,
to a multiplier of the peak lr; s = n is the rate after the last step. Warm-up is linear and
comes before every schedule, which then runs over the steps left: step s of W warm-up steps
takes (s + 1) / W of the rate the schedule starts at (gradual warm-up, Goyal et al.,
"Accurate, Large Minibatch SGD", 2017): the peak lr, but for onecycle, which starts at a 25th
of it and has its own rise (warming up to the peak would drop 25-fold where it starts).
Sources: cosine is SGDR's annealing without restarts (Loshchilov & Hutter, ICLR 2017); step
is the ResNet schedule, lr / 10 at 50% and 75% of training (He et al., CVPR 2016, CIFAR: at
32k and 48k of 64k iterations); onecycle is Smith's one-cycle policy (Smith, "A disciplined
approach to neural network hyper-parameters", arXiv:1803.09820, 2018) as torch's OneCycleLR
computes it with its defaults and anneal_strategy="linear", three_phase=False
(torch/optim/lr_scheduler.py; tests/test_schedules.py checks it against torch step by step).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a table is made: the names are read without it
    import torch


def _cos(t):
    return math.cos(t) if isinstance(t, (int, float)) else t.cos()


def _of_fraction(schedule):
    """A schedule of the fraction of steps done, t = s / n in [0, 1], as one of (s, n)."""
    return lambda s, n: schedule(s / n)


def _step(t):
    # The classic step decay: x0.1 at 50% and at 75% of training, in t's precision (a
    # tensor's comparisons times 1.0 are float32: a float64 table's rows were float32's)
    drops = (t >= 0.5) * 1.0 + (t >= 0.75) * 1.0
    return 0.1 ** (drops if isinstance(t, (int, float)) else drops.to(t.dtype))


# torch's OneCycleLR defaults: the peak at 30% of the steps (pct_start), from max_lr /
# div_factor (25) up, then down to that start / final_div_factor (1e4)
ONECYCLE_RISE = 0.3
ONECYCLE_START = 1 / 25
ONECYCLE_END = ONECYCLE_START / 1e4


def _onecycle(s, n):
    # torch's two phases: linear from the start to the peak up to step 0.3 n - 1 (a float),
    # then linear down to the end at step n - 1; after the last step the rate stays at the
    # end (torch would extrapolate past it, below zero)
    peak_step, last = ONECYCLE_RISE * n - 1, n - 1
    rise = ONECYCLE_START + (1 - ONECYCLE_START) * s / peak_step
    fall = 1 + (ONECYCLE_END - 1) * (s - peak_step) / (last - peak_step)
    if isinstance(s, (int, float)):
        return rise if s <= peak_step else (fall if s <= last else ONECYCLE_END)
    import torch

    return torch.where(s <= peak_step, rise, torch.where(s <= last, fall, ONECYCLE_END))


SCHEDULES = {
    "constant": _of_fraction(lambda t: 1.0 + 0.0 * t),
    "cosine": _of_fraction(lambda t: 0.5 * (1.0 + _cos(math.pi * t))),
    "onecycle": _onecycle,
    "step": _of_fraction(_step),
}

# The rate a warm-up rises to: where the schedule starts, the peak but for onecycle. A
# constant, not the schedule at step 0 of the steps left: a onecycle of 1 to 3 steps (a
# warm-up over all but those, or the whole run) starts past its peak, torch's 1-step cycle
# at lr / 2.5e5, and a warm-up to that trained the whole run at about 0
WARMUP_TARGET = {"onecycle": ONECYCLE_START}


def warmup_target(schedule: str) -> float:
    """The multiplier of the peak lr that a warm-up before `schedule` ends at (KeyError for
    a name SCHEDULES lacks)."""
    if schedule not in SCHEDULES:
        raise KeyError(schedule)
    return WARMUP_TARGET.get(schedule, 1.0)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the peak lr at optimizer step `step` (0-based) of `total_steps`, of
    which the first `warmup_steps` warm up linearly to the schedule's first rate; `schedule`
    names a SCHEDULES entry (KeyError for another name: the run parameter's check refuses it
    first)."""
    remaining = max(1, total_steps - warmup_steps)
    if step < warmup_steps:  # up to the rate the schedule starts at
        return (step + 1) / warmup_steps * warmup_target(schedule)
    return SCHEDULES[schedule](float(min(step - warmup_steps, remaining)), remaining)


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
    remaining = (total_steps - warmup).clamp_min(1)
    after = SCHEDULES[schedule](torch.minimum(steps - warmup, remaining).clamp_min(0),
                                remaining)
    during = (steps + 1) / warmup.clamp_min(1) * warmup_target(schedule)
    multiplier = torch.where(steps < warmup, during, after)
    return multiplier * torch.tensor(base_lr, dtype=torch.float64).unsqueeze(0)
