"""Evaluation of every member of a pack on one split: losses, accuracies, predictions.

All members see the same images (the validation or test split), so a batch is cut once and
shown to the fused model as K copies. Values stay on the device until the split is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agent.trial.steps import StepContext
from util.device_cache import DeviceLoader

EVAL_IMAGES = 1024  # images per fused forward pass (split between the members)


@dataclass
class Evaluation:
    loss: list[float]  # per member: mean plain cross-entropy (no label smoothing)
    acc: list[float]  # per member
    predictions: torch.Tensor | None  # (N, K) on the device, when asked for


@torch.no_grad()
def evaluate(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
             std: torch.Tensor, members: int, keep_predictions: bool = False) -> Evaluation:
    """Mean loss and accuracy of each of `members` over (images uint8 (N, C, H, W), labels (N,)),
    in eval mode; reads back to the host once."""
    ctx.model.eval()
    batch = max(32, EVAL_IMAGES // members)
    loader = DeviceLoader(images, labels, mean, std, batch)
    loss_sum = torch.zeros(members, device=labels.device)
    correct = torch.zeros(members, device=labels.device, dtype=torch.long)
    predictions = []
    for x, y in loader:
        packed = x.unsqueeze(1).expand(-1, members, *x.shape[1:])  # (B, K, C, H, W)
        with ctx.autocast():
            logits = ctx.forward(packed).float()  # (B, K, classes)
        targets = y.unsqueeze(1).expand(-1, members)
        loss_sum += F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(0)
        predicted = logits.argmax(-1)
        correct += (predicted == targets).sum(0)
        if keep_predictions:
            predictions.append(predicted)
    ctx.model.train()
    n = max(len(labels), 1)
    return Evaluation((loss_sum / n).tolist(), (correct.double() / n).tolist(),
                      torch.cat(predictions) if keep_predictions else None)
