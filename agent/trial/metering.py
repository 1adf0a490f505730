"""What a trial measures besides loss and accuracy: norms, histograms, confusion, memory.

Norms are computed per member of the pack on the device and read back once per epoch, so
metering adds no host-device synchronisation to the training steps in between.
"""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn


def parameters_by_layer(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """A plain model's trainable parameters grouped by the module that owns them ("conv2",
    "stage1.block1.bn1"): the layers every per-layer metric is named after."""
    layers: dict[str, list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            layers.setdefault(name.rpartition(".")[0] or name, []).append(param)
    return layers


def weight_norms(model: nn.Module) -> dict[str, float]:
    """A plain model's weight_norm/global and weight_norm/<layer> (e.g. from a checkpoint)."""
    layers = {name: [p.detach() for p in params]
              for name, params in parameters_by_layer(model).items()}
    flat = [t for tensors in layers.values() for t in tensors]
    squares = torch.stack(torch._foreach_norm(flat)).float().square()
    norms = torch.stack([part.sum() for part in squares.split([len(v) for v in layers.values()])])
    norms = norms.sqrt()
    return {"weight_norm/global": float(norms.square().sum().sqrt()),
            **{f"weight_norm/{name}": value for name, value in zip(layers, norms.tolist())}}


class GradientMeter:
    """Averages each member's per-layer gradient norms over the steps it is asked to sample.

    Sampling stays on the device (a (layers + 1, K) running sum); `epoch_metrics` reads it
    back once per epoch.
    """

    def __init__(self, model):
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | None = None
        self.samples = 0
        self.names: list[str] = []

    def sample(self) -> torch.Tensor:
        """Record the current gradients; returns each member's global norm, shape (K,)."""
        self.names, norms = list(self.model.layers()), self.model.grad_norms()  # (L, K)
        global_norm = norms.square().sum(0).sqrt()
        row = torch.cat([global_norm.unsqueeze(0), norms])
        self.total = row if self.total is None else self.total + row
        self.samples += 1
        return global_norm

    def select(self, indices: list[int]) -> None:
        """Keep only these members' sums (a member left the pack)."""
        if self.total is not None:
            self.total = self.total[:, indices]

    def epoch_metrics(self) -> list[dict[str, float]]:
        """One dict per member: grad_norm/global and grad_norm/<layer>, means of the epoch."""
        if self.total is None:
            return []
        means = (self.total / self.samples).t().tolist()  # (K, L + 1)
        names = self.names
        self.reset()
        return [{"grad_norm/global": row[0],
                 **{f"grad_norm/{name}": value for name, value in zip(names, row[1:])}}
                for row in means]


def member_weight_norms(model) -> list[dict[str, float]]:
    """One dict per member of a PackedModel: weight_norm/global and weight_norm/<layer>."""
    names, norms = list(model.layers()), model.weight_norms()  # (L, K)
    global_norm = norms.square().sum(0).sqrt()
    rows = torch.cat([global_norm.unsqueeze(0), norms]).t().tolist()
    return [{"weight_norm/global": row[0],
             **{f"weight_norm/{name}": value for name, value in zip(names, row[1:])}}
            for row in rows]


def member_weight_histograms(model, member: int) -> dict[str, torch.Tensor]:
    """A member's weights per layer (biases left out), flattened on the CPU, for histograms."""
    return {f"weights/{name}": values[member].cpu()
            for name, values in model.layer_weights().items()}


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted ones (int64, on the CPU)."""
    counts = torch.bincount(y_true * classes + y_pred, minlength=classes * classes)
    return counts.view(classes, classes).cpu()


def per_class_accuracy(matrix: torch.Tensor) -> list[float]:
    totals = matrix.sum(1).clamp_min(1)
    return (matrix.diag().float() / totals).tolist()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the training device: allocator peak on CUDA, process RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB
