"""What a trial measures besides loss and accuracy: norms, histograms, confusion, memory.

Norms are computed per member of the pack on the device and read back once per epoch, so
metering adds no host-device synchronisation to the training steps in between.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

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


HISTOGRAM_BINS = 64  # wandb.Histogram's default; TensorBoard draws any bins it is given


@dataclass(frozen=True)
class Histogram:
    """One member's values of one layer in equal bins from their smallest to their largest
    value (np.histogram's rule; a constant layer gets the bins of [v - 0.5, v + 0.5], as
    np.histogram does). Non-finite values are counted in no bin and left out of every
    statistic. What TensorBoard's histogram summary and wandb.Histogram(np_histogram=...)
    take."""

    edges: list[float]  # bins + 1 edges, ascending
    counts: list[int]  # values per bin; the last bin includes its right edge
    min: float
    max: float
    num: int  # finite values
    sum: float
    sum_squares: float


@torch.no_grad()
def member_weight_histograms(model, bins: int = HISTOGRAM_BINS) -> list[dict[str, Histogram]]:
    """Per member of a PackedModel: {`weights/<layer>`: Histogram} of each layer's weights
    (biases and norm scales left out). Computed for every member at once on the device (one
    bucketing per layer, not one per member and layer) and read back in one copy; a member
    whose layer has no finite value has no histogram of that layer."""
    layers = model.layer_weights()  # name -> (K, n) float32 on the device
    if not layers:
        return [{} for _ in range(model.members)]
    stats = []
    for values in layers.values():
        finite = torch.isfinite(values)
        low = torch.where(finite, values, torch.inf).amin(1)
        high = torch.where(finite, values, -torch.inf).amax(1)
        num = finite.sum(1)
        flat = high <= low  # constant (or no finite value): np.histogram's +-0.5 range
        start, end = torch.where(flat, low - 0.5, low), torch.where(flat, high + 0.5, high)
        width = (end - start) / bins
        index = ((values - start[:, None]) / width[:, None]).floor().clamp(0, bins - 1)
        index = torch.where(finite, index, bins).long()  # non-finite: a bin dropped below
        counts = torch.zeros(values.shape[0], bins + 1, device=values.device)
        counts.scatter_add_(1, index, torch.ones_like(values))
        kept = torch.where(finite, values, 0.0).double()
        stats.append(torch.cat([low[:, None].double(), high[:, None].double(),
                                start[:, None].double(), end[:, None].double(),
                                num[:, None].double(), kept.sum(1, keepdim=True),
                                kept.square().sum(1, keepdim=True),
                                counts[:, :bins].double()], 1))
    rows = torch.stack(stats, 1).cpu().tolist()  # (K, layers, 7 + bins): one copy
    histograms = []
    for member_rows in rows:
        member = {}
        for name, (low, high, start, end, num, total, squares, *counts) in zip(
                layers, member_rows):
            if not num:
                continue
            member[f"weights/{name}"] = Histogram(
                edges=[start + i * (end - start) / bins for i in range(bins)] + [end],
                counts=[int(c) for c in counts], min=low, max=high, num=int(num), sum=total,
                sum_squares=squares)
        histograms.append(member)
    return histograms


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
