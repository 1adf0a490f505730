"""One trial: receive a configuration, train a metered model on device-cached data, report.

`train(config) -> summary` is the whole job, readable top to bottom: set-up, data, model,
training, evaluation. Agents call it many times in one process (the data stays on the device);
`python -m agent.train` calls it once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from agent.trial.checkpoint import load_checkpoint, save_checkpoint
from agent.trial.metering import (GradientMeter, confusion_matrix, peak_memory_mb,
                            per_class_accuracy, weight_histograms, weight_norms)
from agent.ids import new_run_id, path_safe
from agent.params import RunConfig, hyperparameters, validate
from agent.trial.sinks import SINKS, RunInfo
from nn.models import CONV_MODELS, MODELS
from nn.optimizers import OPTIMIZERS
from nn.sam import SAM, preserved_batchnorm_stats
from nn.schedules import build_scheduler
from util.device import autocast_dtype, pick_device
from util.device_cache import Augmentation, DeviceLoader, device_splits

EVAL_BATCH = 1024  # evaluation needs no gradients: bigger batches, fewer kernel launches


class Preempted(Exception):
    """The trial was asked to stop (SIGTERM at walltime); its last checkpoint stands."""


@dataclass
class TrialHooks:
    """How the caller steers a running trial.

    should_stop(epoch, history) runs after every epoch and returns a reason to stop early
    (hyperband) or None. interrupted() is polled every step; True ends the trial with
    Preempted, keeping the checkpoint of the last whole epoch.
    """

    should_stop: Callable[[int, list[dict]], str | None] = lambda epoch, history: None
    interrupted: Callable[[], bool] = lambda: False


@dataclass
class Progress:
    """What a checkpoint carries besides the tensors: enough to continue the run exactly."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_val_acc: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)


def run_identity(cfg: RunConfig) -> RunInfo:
    run_id = cfg.run_id or os.environ.get("WANDB_RUN_ID") or new_run_id()
    group = cfg.group or os.environ.get("WANDB_SWEEP_ID") or "default"
    name = cfg.run_name or run_id
    return RunInfo(id=run_id, name=name, group=group,
                   log_dir=str(Path(cfg.log_dir) / path_safe(group) / path_safe(name)),
                   run_dir=str(Path(cfg.run_dir) / path_safe(run_id)))


def train(config: dict, hooks: TrialHooks | None = None, sweep: dict | None = None) -> dict:
    """Train one configuration and return its summary (also written to run_dir/summary.json).

    `sweep` ({"id", "name", "config"}) tags the run as part of a local sweep. Raises UserError
    for a bad configuration before anything is loaded or written, and Preempted when
    hooks.interrupted() turns true.
    """
    started = time.perf_counter()
    hooks = hooks or TrialHooks()
    cfg = validate(config)
    run = run_identity(cfg)
    run.sweep = sweep
    sinks = {name: SINKS[name]() for name in cfg.sinks}
    started_sinks = []
    state = "failed"
    summary: dict = {}
    try:
        # --- set-up: the W&B sink starts first, because inside a W&B sweep it holds the config
        if "wandb" in sinks:
            sinks["wandb"].start(run, dict(cfg), hyperparameters(cfg))
            started_sinks.append(sinks["wandb"])
            cfg = validate({**cfg, **sinks["wandb"].sweep_overrides()})
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator(device=device).manual_seed(cfg.seed)

        # --- data: on the device once per process
        data = device_splits(cfg.dataset, cfg.data_dir, device, cfg.val_split, cfg.dataset_dir)
        train_x, train_y = data.train_x, data.train_y
        if cfg.train_subset:
            train_x, train_y = train_x[:cfg.train_subset], train_y[:cfg.train_subset]
        channels_last = cfg.channels_last and cfg.model in CONV_MODELS
        loader = DeviceLoader(train_x, train_y, data.mean, data.std, cfg.batch_size,
                              shuffle=True, augment=Augmentation.from_config(cfg),
                              generator=generator,
                              drop_last=True, channels_last=channels_last)
        evaluation = lambda x, y: DeviceLoader(  # noqa: E731
            x, y, data.mean, data.std, EVAL_BATCH, channels_last=channels_last)

        # --- model and optimiser
        model = MODELS[cfg.model](cfg, data.input_shape, len(data.classes)).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        n_params = sum(p.numel() for p in model.parameters())
        optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
        steps_per_epoch = len(loader)
        # SAM's descent is its base optimizer's step(): the scheduler follows that object.
        stepper = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
        scheduler = build_scheduler(stepper, cfg.epochs * steps_per_epoch,
                                    round(cfg.warmup_epochs * steps_per_epoch), cfg.schedule)
        amp_dtype = autocast_dtype(cfg.precision, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        eval_criterion = nn.CrossEntropyLoss()  # reported losses are plain cross-entropy
        forward = torch.compile(model) if cfg.compile else model

        progress = Progress()
        checkpoint = load_checkpoint(run.run_dir) if cfg.checkpoint else None
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            torch.set_rng_state(checkpoint["rng_cpu"])
            generator.set_state(checkpoint["rng_data"])
            if device.type == "cuda" and "rng_cuda" in checkpoint:
                torch.cuda.set_rng_state(checkpoint["rng_cuda"], device)
            progress = Progress(**checkpoint["progress"])
            run.resumed_epoch = progress.epoch

        for name, sink in sinks.items():
            if sink not in started_sinks:
                sink.start(run, dict(cfg), hyperparameters(cfg))
                started_sinks.append(sink)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def autocast():
            if amp_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device.type, dtype=amp_dtype)

        def loss_of(images, labels):
            with autocast():
                logits = forward(images)
                return criterion(logits.float(), labels), logits

        # --- training
        meter = GradientMeter(model)
        check_every = 1 if device.type == "cpu" else cfg.log_interval  # a check syncs a GPU
        diverged = False
        stop_reason = None
        for epoch in range(progress.epoch, cfg.epochs):
            for sink in started_sinks:
                sink.epoch_start(epoch, steps_per_epoch)
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            epoch_started = last_log_time = time.perf_counter()
            last_log_seen = 0
            for step_in_epoch, (images, labels) in enumerate(loader, start=1):
                if hooks.interrupted():
                    raise Preempted(f"run {run.id} interrupted in epoch {epoch + 1}")
                loss, logits = loss_of(images, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if scaler.is_enabled():
                    scaler.unscale_(optimizer)
                log_now = progress.global_step % cfg.log_interval == 0
                step_grad_norm = meter.sample() if log_now else None
                if isinstance(optimizer, SAM):
                    optimizer.perturb()
                    optimizer.zero_grad(set_to_none=True)
                    with preserved_batchnorm_stats(model):
                        scaler.scale(loss_of(images, labels)[0]).backward()
                    optimizer.restore()
                    scaler.step(optimizer.base_optimizer)
                else:
                    scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                progress.global_step += 1

                batch = len(labels)
                seen += batch
                loss_sum += loss.detach() * batch
                hits = logits.argmax(1) == labels
                correct += hits.sum()
                if step_in_epoch % check_every == 0 and not torch.isfinite(loss_sum):
                    diverged = True
                    break
                if log_now:
                    now = time.perf_counter()
                    metrics = {"train/step_loss": loss.item(),
                               "train/step_acc": hits.float().mean().item(),
                               "grad_norm/step_global": float(step_grad_norm),
                               "perf/images_per_s": (seen - last_log_seen) / max(now - last_log_time, 1e-9),
                               "epoch": progress.global_step / steps_per_epoch}
                    last_log_time, last_log_seen = now, seen
                    for sink in started_sinks:
                        sink.log_step(progress.global_step, metrics)
            if not diverged and not torch.isfinite(loss_sum):
                diverged = True
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_seconds = time.perf_counter() - epoch_started
            if diverged:
                break

            # --- evaluation on the validation split, once per epoch
            metrics = {"epoch": epoch + 1, "train/loss": loss_sum.item() / seen,
                       "train/acc": correct.item() / seen, "lr": scheduler.get_last_lr()[0],
                       "batch_size": cfg.batch_size}
            if len(data.val_y):
                val_loss, val_acc, _ = evaluate(model, forward, evaluation(data.val_x, data.val_y),
                                                eval_criterion, autocast)
                if not math.isfinite(val_loss):
                    diverged = True
                    break
                metrics.update({"val/loss": val_loss, "val/acc": val_acc})
                if progress.best_val_acc is None or val_acc > progress.best_val_acc:
                    progress.best_val_acc, progress.best_epoch = val_acc, epoch + 1
            metrics.update(meter.epoch_metrics())
            metrics.update(weight_norms(model))
            metrics.update({"perf/images_per_s": seen / epoch_seconds,
                            "perf/epoch_s": epoch_seconds,
                            "perf/peak_mem_mb": peak_memory_mb(device)})
            progress.epoch = epoch + 1
            progress.history.append(metrics)
            histograms = weight_histograms(model) if cfg.histograms else {}
            for sink in started_sinks:
                sink.log_epoch(progress.global_step, metrics, histograms)
            if cfg.checkpoint:
                save_checkpoint(run.run_dir, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng_cpu": torch.get_rng_state(), "rng_data": generator.get_state(),
                    **({"rng_cuda": torch.cuda.get_rng_state(device)}
                       if device.type == "cuda" else {}),
                    "progress": progress.__dict__})
            stop_reason = hooks.should_stop(epoch + 1, progress.history)
            if stop_reason:
                break

        # --- final evaluation on the test set (skipped for weights that went non-finite)
        last = progress.history[-1] if progress.history else {}
        summary = {
            "run_id": run.id, "run_name": run.name, "group": run.group,
            "optimizer": cfg.optimizer, "model": cfg.model, "dataset": cfg.dataset,
            "val/best_acc": progress.best_val_acc, "val/best_epoch": progress.best_epoch,
            "params": n_params, "diverged": diverged, "epochs_done": progress.epoch,
            "global_step": progress.global_step,
            **{k: last[k] for k in ("train/loss", "train/acc", "val/loss", "val/acc")
               if k in last},
        }
        throughput = [h["perf/images_per_s"] for h in progress.history]
        if throughput:
            summary["perf/images_per_s"] = sum(throughput) / len(throughput)
            summary["perf/train_s"] = sum(h["perf/epoch_s"] for h in progress.history)
        if not diverged:
            test_loss, test_acc, predictions = evaluate(
                model, forward, evaluation(data.test_x, data.test_y), eval_criterion, autocast,
                keep_predictions=True)
            matrix = confusion_matrix(data.test_y, predictions, len(data.classes))
            class_acc = per_class_accuracy(matrix)
            summary.update({"test/loss": test_loss, "test/acc": test_acc})
            summary.update({f"test/class_acc/{name}": acc
                            for name, acc in zip(data.classes, class_acc)})
            for sink in started_sinks:
                sink.log_confusion(progress.global_step, matrix, data.classes)
            _write_json(Path(run.run_dir) / "confusion.json",
                        {"classes": data.classes, "matrix": matrix.tolist()})
        state = "diverged" if diverged else "stopped" if stop_reason else "finished"
        if stop_reason:
            summary["stop_reason"] = stop_reason
        summary["state"] = state
        summary["wall_s"] = time.perf_counter() - started
        _write_json(Path(run.run_dir) / "summary.json", summary)
        return summary
    except Preempted:
        state = "preempted"
        raise
    finally:
        for sink in reversed(started_sinks):
            sink.finish(summary, state)


@torch.no_grad()
def evaluate(model: nn.Module, forward, loader: DeviceLoader, criterion, autocast,
             keep_predictions: bool = False) -> tuple[float, float, torch.Tensor | None]:
    """Mean loss and accuracy over a loader, in eval mode; optionally every prediction."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.labels.device)
    correct = torch.zeros((), device=loader.labels.device, dtype=torch.long)
    predictions = []
    for images, labels in loader:
        with autocast():
            logits = forward(images).float()
        loss_sum += criterion(logits, labels) * len(labels)
        predicted = logits.argmax(1)
        correct += (predicted == labels).sum()
        if keep_predictions:
            predictions.append(predicted)
    n = max(len(loader.labels), 1)
    model.train()
    return (loss_sum.item() / n, correct.item() / n,
            torch.cat(predictions) if keep_predictions else None)


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(partial, path)
