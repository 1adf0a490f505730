"""One training step of a pack, as two strategies: a plain step, and SAM's two-pass step.

Both compute each member's own loss and sum them, so that the gradient reaching a member's
parameters is the gradient it would get alone (members share no parameter), then let the
optimizer update every member at once. Nothing here reads a value back to the host.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nn.sam import preserved_batchnorm_stats


def member_losses(logits: torch.Tensor, labels: torch.Tensor,
                  smoothing: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy with its own label smoothing, shape (K,).

    logits (B, K, classes), labels (B, K), smoothing (K,). With smoothing e the loss is
    (1 - e) * NLL + e * (mean over classes of -log p), as torch's
    `cross_entropy(label_smoothing=e)` defines it (Szegedy et al. 2016).
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, K)
    uniform = -log_probs.mean(-1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean(0)


@dataclass
class StepContext:
    """What every step needs: the fused model, its optimizer, precision and the meter."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile'd form
    optimizer: object  # a packed optimizer (nn/optimizers.py), SAM-wrapped for sam
    scaler: torch.amp.GradScaler
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
        return member_losses(logits, labels, self.smoothing), logits


def plain_step(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor,
               sample_gradients: Callable[[], None] | None = None):
    """Forward, backward, optimizer step. Returns (losses (K,), logits)."""
    losses, logits = ctx.losses(images, labels)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(losses.sum()).backward()
    _unscale(ctx)
    if sample_gradients is not None:
        sample_gradients()
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return losses.detach(), logits.detach()


def sam_step(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor,
             sample_gradients: Callable[[], None] | None = None):
    """SAM (Foret et al., ICLR 2021): gradient at w, move to the worst point w + e(w) within
    each member's rho, gradient there, back to w, base step with that gradient. The second
    pass leaves batch-norm running statistics alone. Returns the first pass's (losses, logits).
    """
    losses, logits = ctx.losses(images, labels)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(losses.sum()).backward()
    _unscale(ctx)
    if sample_gradients is not None:
        sample_gradients()
    ctx.optimizer.perturb()
    ctx.optimizer.zero_grad(set_to_none=True)
    with preserved_batchnorm_stats(ctx.model):
        ctx.scaler.scale(ctx.losses(images, labels)[0].sum()).backward()
    ctx.optimizer.restore()
    ctx.scaler.step(ctx.optimizer.base_optimizer)
    ctx.scaler.update()
    return losses.detach(), logits.detach()


def _unscale(ctx: StepContext) -> None:
    # fp16 only: gradients must be unscaled before they are measured or used to perturb.
    if ctx.scaler.is_enabled():
        ctx.scaler.unscale_(ctx.optimizer)


STEPS = {"plain": plain_step, "sam": sam_step}


def step_for(optimizer_name: str):
    return STEPS["sam" if optimizer_name == "sam" else "plain"]
