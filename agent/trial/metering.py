"""What a trial measures besides loss and accuracy: norms, histograms, confusion, memory.

Norms are computed on the device with foreach kernels and read back once per epoch, so
metering adds no host-device synchronisation to the training steps in between.
"""

from __future__ import annotations

import resource
import sys
from collections import defaultdict

import torch
from torch import nn


def parameters_by_layer(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Trainable parameters grouped by the module that owns them ("stages.0.conv1", ...)."""
    layers: dict[str, list[torch.Tensor]] = defaultdict(list)
    for name, param in model.named_parameters():
        if param.requires_grad:
            layers[name.rpartition(".")[0] or name].append(param)
    return dict(layers)


def _layer_norms(tensors_by_layer: dict[str, list[torch.Tensor]]) -> torch.Tensor:
    """One L2 norm per layer, as a device tensor."""
    flat = [t for tensors in tensors_by_layer.values() for t in tensors]
    squares = torch.stack(torch._foreach_norm(flat)).float().square()
    sizes = [len(tensors) for tensors in tensors_by_layer.values()]
    return torch.stack([part.sum() for part in squares.split(sizes)]).sqrt()


class GradientMeter:
    """Averages per-layer gradient norms over the steps it is asked to sample."""

    def __init__(self, model: nn.Module):
        self.layers = parameters_by_layer(model)
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | None = None
        self.samples = 0

    def sample(self) -> torch.Tensor:
        """Record the current gradients; returns the global norm (a device scalar)."""
        grads = {name: [p.grad for p in params if p.grad is not None]
                 for name, params in self.layers.items()}
        grads = {name: g for name, g in grads.items() if g}
        if not grads:
            return torch.zeros(())
        norms = _layer_norms(grads)
        global_norm = norms.square().sum().sqrt()
        row = torch.cat([global_norm.view(1), norms])
        self.total = row if self.total is None else self.total + row
        self.samples += 1
        self._names = list(grads)
        return global_norm

    def epoch_metrics(self) -> dict[str, float]:
        if self.total is None:
            return {}
        means = (self.total / self.samples).tolist()
        metrics = {"grad_norm/global": means[0]}
        metrics.update({f"grad_norm/{name}": value for name, value in zip(self._names, means[1:])})
        self.reset()
        return metrics


def weight_norms(model: nn.Module) -> dict[str, float]:
    layers = {name: [p.detach() for p in params]
              for name, params in parameters_by_layer(model).items()}
    norms = _layer_norms(layers)
    values = norms.tolist()
    metrics = {"weight_norm/global": float(norms.square().sum().sqrt())}
    metrics.update({f"weight_norm/{name}": value for name, value in zip(layers, values)})
    return metrics


def weight_histograms(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each layer's weights (biases left out), flattened on the CPU, for histogram sinks."""
    out = {}
    for name, param in model.named_parameters():
        if name.endswith("weight") and param.ndim > 1:
            out[f"weights/{name.rpartition('.')[0]}"] = param.detach().float().flatten().cpu()
    return out


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
