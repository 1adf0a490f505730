"""How fast packs of one configuration train, by size: what `--pack auto` sizes packs by.

`measure_pack(config, size)` builds a pack of `size` copies of the configuration on the
dataset cached on the device and times a few of the trial's own training steps (the fused
model and optimizer, the pack loader with each member's shuffling, augmentation and dropout),
without sinks, checkpoints or any file: a fraction of a second a size for the small models
packing is for (`--pack auto` used to learn each size from whole runs). The measured pack is
discarded; a trial builds its own from its members' seeds, so measuring changes no run's
result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from agent.params import validate
from agent.trial.member import Member, TrialHooks, run_identity
from agent.trial.pack import build_pack
from agent.trial.preflight import check_training_set
from util.device import pick_device
from util.device_cache import device_splits

WARMUP_STEPS = 2  # not timed: first-call allocations, kernel choices
FIRST_WARMUP_STEPS = 8  # the process's first measurement: its first training steps ever
MIN_STEPS = 3
MAX_STEPS = 10
MIN_SECONDS = 0.05  # timed steps run at least this long (or MAX_STEPS)


_first = True  # no measurement in this process yet


@dataclass(frozen=True)
class PackSpeed:
    images_per_s: float  # training images a second, all members together
    peak_memory_mb: float | None  # the pack's device memory at its peak (CUDA), else None
    run_images: int = 0  # training images one run goes through (all its epochs)


class Interrupted(Exception):
    """The agent was asked to stop (SIGTERM, Ctrl-C) while it measured."""


def measure_pack(config: dict, size: int,
                 interrupted: Callable[[], bool] = lambda: False) -> PackSpeed | None:
    """Train `size` copies of `config` as one pack for WARMUP_STEPS steps (FIRST_WARMUP_STEPS
    the first time in a process: its first steps also pay for thread pools, the allocator
    and first kernels, which would make a run alone look slow), then time at least MIN_STEPS
    and MIN_SECONDS (at most MAX_STEPS) more: (images/s of the whole pack, from the median
    step on a CPU and the synchronised stretch on CUDA; peak CUDA memory in MiB above what
    was allocated before). None when the pack does not fit the device (out of memory).
    Raises UserError for a configuration the trial would refuse (its checks of the training
    set included), Interrupted once `interrupted()`, asked before every step, is true.
    `compile` is left off: compiling every size would cost more than the probe measures.
    """
    cfg = validate({**config, "compile": False})
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    data = device_splits(cfg.dataset, cfg.data_dir, device, cfg.val_split, cfg.dataset_dir)
    check_training_set(cfg, len(data.train_y))
    members = [Member(cfg, run_identity(cfg), TrialHooks()) for _ in range(size)]
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    global _first
    warmup, _first = (FIRST_WARMUP_STEPS if _first else WARMUP_STEPS), False
    try:
        pack = build_pack(members, data, device)
        pack.optimizer.set_lr(pack.lr[0])
        batches = _endless(pack.loader)
        images, steps = 0, []  # steps: each timed step's seconds (CPU)
        for done in range(warmup + MAX_STEPS):
            if done == warmup:
                if cuda:
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            elif done >= warmup + MIN_STEPS and time.perf_counter() - started >= MIN_SECONDS:
                break
            if interrupted():
                raise Interrupted(f"measuring packs of {size}")
            x, y = next(batches)
            step_started = time.perf_counter()
            pack.step(pack.ctx, x, y, None)
            if done >= warmup:
                images += y.numel()
                steps.append(time.perf_counter() - step_started)
        if cuda:  # the device runs ahead of the host: the whole timed stretch, synchronised
            torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
        else:  # the median step: a step slowed by another process on the cores is not typical
            seconds = statistics.median(steps) * len(steps)
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if cuda else None
        run_images = cfg.epochs * len(pack.loader) * pack.loader.batch_size
        return PackSpeed(images / max(seconds, 1e-9), peak, run_images)
    except torch.OutOfMemoryError:
        return None
    finally:
        pack = batches = None  # noqa: F841 (freed before the next size is built)
        if cuda:
            torch.cuda.empty_cache()


def _endless(loader):
    while True:
        yield from loader
