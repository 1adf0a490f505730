"""One training step of a pack, as two strategies: a plain step, and SAM's two-pass step.

Both compute each member's own loss and sum them, so that the gradient reaching a member's
parameters is the gradient it would get alone (members share no parameter), then let the
optimizer update every member at once. Nothing here reads a value back to the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from agent.trial.metering import GradientMeter
from nn.loss_scale import PackedGradScaler
from nn.packed import packed_cross_entropy
from nn.sam import preserved_batchnorm_stats


@dataclass
class StepResult:
    losses: torch.Tensor  # (K,) each member's mean loss on the batch
    logits: torch.Tensor  # (B, K, classes)
    grad_norm: torch.Tensor | None  # (K,) global gradient norms, when the step was metered


@dataclass
class StepContext:
    """What every step needs: the fused model, its optimizer, precision and the meter."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile'd form
    optimizer: object  # a packed optimizer (nn/optimizers.py), SAM-wrapped for sam
    scaler: PackedGradScaler  # per-member fp16 loss scaling (disabled otherwise)
    amp_dtype: torch.dtype | None
    smoothing: torch.Tensor  # (K,) label smoothing per member

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        device_type = self.smoothing.device.type
        return torch.autocast(device_type, dtype=self.amp_dtype)

    def losses(self, images: torch.Tensor, labels: torch.Tensor):
        """(per-member losses (K,), logits (B, K, classes))."""
        with self.autocast():
            logits = self.forward(images)
        return packed_cross_entropy(logits.float(), labels, self.smoothing), logits


def plain_step(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor,
               meter: GradientMeter | None = None) -> StepResult:
    """Forward, backward, optimizer step; the gradients go to `meter` when one is given."""
    losses, logits = ctx.losses(images, labels)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(losses).backward()
    ctx.scaler.unscale_(ctx.optimizer)  # fp16: before the gradients are measured or used
    grad_norm = meter.sample() if meter is not None else None
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return StepResult(losses.detach(), logits.detach(), grad_norm)


def sam_step(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor,
             meter: GradientMeter | None = None) -> StepResult:
    """SAM (Foret et al., ICLR 2021): gradient at w, move to the worst point w + e(w) within
    each member's rho, gradient there, back to w, base step with that gradient. The second
    pass leaves batch-norm running statistics alone. Reports the first pass (at w).
    """
    losses, logits = ctx.losses(images, labels)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(losses).backward()
    ctx.scaler.unscale_(ctx.optimizer)
    grad_norm = meter.sample() if meter is not None else None
    ctx.optimizer.perturb()
    ctx.optimizer.zero_grad(set_to_none=True)
    with preserved_batchnorm_stats(ctx.model):
        ctx.scaler.scale(ctx.losses(images, labels)[0]).backward()
    ctx.scaler.unscale_(ctx.optimizer)  # a member whose either pass overflowed skips the step
    ctx.optimizer.restore()
    ctx.scaler.step(ctx.optimizer.base_optimizer)
    ctx.scaler.update()
    return StepResult(losses.detach(), logits.detach(), grad_norm)


STEPS = {"plain": plain_step, "sam": sam_step}


def step_for(optimizer_name: str):
    return STEPS["sam" if optimizer_name == "sam" else "plain"]
