"""Shared cases for the packed-model tests: small models of every kind on the digits set, each
member with its own batch order, and the per-member configurations of every optimizer."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from agent.params import validate
from nn.models import MODELS
from util.datasets import DATASETS

# Every model kind of the registry, small enough for CPU tests on 8x8 digits.
MODEL_CASES = {
    "dense": dict(model="dense", hidden=32),
    "skip_mlp": dict(model="skip_mlp", widths=[32, 16]),  # block2 has a projection skip
    "cnn": dict(model="cnn", channels=[8, 16]),
    "resnet": dict(model="resnet", width=4),
}
assert set(MODEL_CASES) == set(MODELS), "a new model needs its packed test case"

# Per optimizer, three members that differ in every hyper-parameter the optimizer reads.
_BASE_MEMBERS = {
    "sgd": [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
            dict(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0),
            dict(lr=0.02, momentum=0.5, nesterov=False, weight_decay=1e-2)],
    "adam": [dict(lr=1e-2, momentum=0.9, weight_decay=5e-4),
             dict(lr=3e-3, momentum=0.5, weight_decay=0.0),
             dict(lr=2e-2, momentum=0.0, weight_decay=1e-2)],
    "rmsprop": [dict(lr=1e-3, momentum=0.9, weight_decay=5e-4),
                dict(lr=3e-3, momentum=0.0, weight_decay=0.0),
                dict(lr=1e-2, momentum=0.5, weight_decay=1e-2)],
}
_BASE_MEMBERS["adamw"] = [dict(m, weight_decay=w) for m, w in
                          zip(_BASE_MEMBERS["adam"], (5e-2, 0.0, 1e-1))]
# SAM around each base: SAM, ASAM and SAM again with other radii (ASAM's rho is larger, as
# Kwon et al. advise).
_SAM_MEMBERS = [dict(rho=0.05, adaptive=False), dict(rho=0.5, adaptive=True),
                dict(rho=0.2, adaptive=False)]

OPTIMIZER_CASES = {name: [dict(optimizer=name, **m) for m in members]
                   for name, members in _BASE_MEMBERS.items()}
# A hyper-parameter that is 0 (False) for every member lets the step skip its passes
# (PackedOptimizer's group["zero"]): each such case, for every optimizer that reads it.
OPTIMIZER_CASES.update({
    f"{name}_no_{hyper}": [{"optimizer": name, **m, hyper: 0,
                            **({"nesterov": False} if hyper == "momentum" else {})}
                           for m in members]
    for name, members in _BASE_MEMBERS.items()
    for hyper in ("weight_decay", "momentum", "nesterov") if hyper in members[0]})
OPTIMIZER_CASES.update({
    f"sam_{base}": [dict(optimizer="sam", sam_base=base, **m, **s)
                    for m, s in zip(members, _SAM_MEMBERS)]
    for base, members in _BASE_MEMBERS.items()})


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits training images standardised, float64 (N, 1, 8, 8), and labels (N,)."""
    data = DATASETS["digits"](Path("unused"))  # scikit-learn's copy: no files, no network
    x = data.train_x.double() / 255
    return (x - x.mean()) / x.std(), data.train_y


def member_configs(model: str, optimizer: str, **extra) -> list:
    return [validate({**MODEL_CASES[model], **member, **extra})
            for member in OPTIMIZER_CASES[optimizer]]


def build(cfg, seed: int, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS[cfg.model](cfg, (1, 8, 8), 10).to(dtype)


def member_batches(members: int, batch: int, step: int, dtype=torch.float64,
                   offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s batch of each member, each from its own order (seed offset + k):
    images (batch, K, 1, 8, 8), labels (batch, K)."""
    x, y = digits()
    xs, ys = [], []
    for k in range(members):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(offset + k))
        rows = order[step * batch:(step + 1) * batch]
        xs.append(x[rows].to(dtype))
        ys.append(y[rows])
    return torch.stack(xs, 1), torch.stack(ys, 1)
