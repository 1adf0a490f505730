"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) and its adaptive variant ASAM (Kwon et al., ICML 2021).

SAM wraps any torch optimizer: it moves the weights to the worst point within radius rho, takes the
gradient there, returns to the original weights and lets the wrapped optimizer step with that gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn.modules.batchnorm import _NormBase


class SAM(torch.optim.Optimizer):
    """Two-pass optimizer: `perturb()` after the first backward, `descend()` after the second.

    Typical loop (or call `step(closure)`, which does exactly this)::

        loss_fn(model(x), y).backward()
        sam.perturb()                      # w -> w + e(w)
        sam.zero_grad()
        with preserved_batchnorm_stats(model):
            loss_fn(model(x), y).backward()
        sam.descend()                      # w + e(w) -> w, then the base optimizer steps
        sam.zero_grad()

    With an fp16 GradScaler replace `sam.descend()` by `sam.restore(); scaler.step(sam.base_optimizer)`
    so that the scaler can unscale the gradients and skip the step when they overflowed.

    The param_groups are shared with `base_optimizer`, so an LR scheduler may be attached to either
    object. Attaching it to `sam.base_optimizer` avoids PyTorch's "scheduler.step() before
    optimizer.step()" warning when the loop uses perturb/descend instead of `step`, since the scheduler
    watches the `step` method of the optimizer it was given.
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, eta: float = 0.01, **base_kwargs: Any) -> None:
        if not rho > 0:
            raise ValueError(f"SAM needs a positive rho, got {rho}")
        if eta < 0:
            raise ValueError(f"ASAM needs a non-negative eta, got {eta}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, eta=eta, **base_kwargs))
        # Hand the base optimizer our group dicts (it fills in its own defaults in place) and then adopt
        # its list: both objects see one set of groups, so a scheduler's group["lr"] reaches the step.
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        # A group added later through SAM.add_param_group needs the base optimizer's defaults too
        # (e.g. SGD's dampening), or the base step would fail on the missing keys.
        self.defaults = {**self.base_optimizer.defaults, **self.defaults}

    @torch.no_grad()
    def perturb(self) -> None:
        """First step: move every parameter with a gradient to w + e(w), remembering w.

        SAM: e = rho * g / ||g||.  ASAM: with T = |w| + eta (element-wise),
        e = rho * T^2 g / ||T g||, i.e. a step of length rho measured in the T^-1-scaled weight space,
        which makes the sharpness measure invariant to rescaling of the weights.
        The norm is global, over all parameters, as in both papers.
        """
        entries = []  # (param, group, T*g) for the params that took part in the backward pass
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                scaled = (p.abs() + group["eta"]) * p.grad if group["adaptive"] else p.grad
                entries.append((p, group, scaled))
        if not entries:
            return
        # at least fp32, so that fp16 gradients do not overflow in the sum of squares
        dtype = torch.float32
        for _, _, s in entries:
            dtype = torch.promote_types(dtype, s.dtype)
        device = entries[0][0].device
        norm = torch.linalg.vector_norm(torch.stack([
            torch.linalg.vector_norm(s, dtype=dtype).to(device) for _, _, s in entries]))
        # A zero gradient has no ascent direction; an inf/NaN one (e.g. an fp16 overflow that the
        # GradScaler will skip anyway) would put NaN into the weights. Leave the weights alone then.
        if not torch.isfinite(norm) or norm == 0:
            return
        for p, group, scaled in entries:
            # T^2 g / ||T g|| = T * (T g) / ||T g||; for plain SAM T = 1
            direction = (p.abs() + group["eta"]) * scaled if group["adaptive"] else scaled
            e = direction * (group["rho"] / norm).to(device=p.device, dtype=p.dtype)
            # keep an exact copy rather than subtracting e later: w + e - e need not equal w in floats
            self.state[p]["original"] = p.detach().clone()
            p.add_(e)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by `perturb()`; a no-op for parameters it did not move."""
        for group in self.param_groups:
            for p in group["params"]:
                # pop, so a stray second restore() cannot roll the weights back to an older step
                original = self.state[p].pop("original", None) if p in self.state else None
                if original is not None:
                    p.copy_(original)

    def descend(self) -> None:
        """Second step: restore the weights, then let the base optimizer step with the gradient
        taken at the perturbed point (the gradient currently in p.grad)."""
        self.restore()
        self.base_optimizer.step()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Full SAM step. `closure()` must compute the loss, call backward on it and return it.

        The closure need not zero the gradients: step() zeros them before each of its two calls.
        Batch-norm running statistics are updated by both calls unless the closure guards them with
        `preserved_batchnorm_stats` (the perturb/descend loop can guard just the second pass).
        Returns the loss of the first pass, at the unperturbed weights.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and its gradients")
        closure = torch.enable_grad()(closure)  # step itself runs under no_grad
        self.zero_grad()
        loss = closure()
        self.perturb()
        self.zero_grad()
        closure()
        self.descend()
        return loss

    # SAM's own per-parameter state only lives between perturb() and restore(), so the state worth
    # checkpointing is the base optimizer's (momentum buffers, Adam moments); its param_groups are
    # ours too, so rho/adaptive/eta and the scheduled lr are saved along with them.
    def state_dict(self) -> dict[str, Any]:
        return {"base_optimizer": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        # loading builds new group dicts in the base optimizer; share them again
        self.param_groups = self.base_optimizer.param_groups


@contextlib.contextmanager
def preserved_batchnorm_stats(model: torch.nn.Module) -> Iterator[None]:
    """Keep the running statistics of `model`'s normalization layers unchanged across the block.

    The second SAM pass sees the batch again at perturbed weights; letting it update running_mean /
    running_var / num_batches_tracked would count each batch twice, once with off-trajectory
    activations. Covers every layer with running statistics (_NormBase: BatchNorm*, SyncBatchNorm,
    and InstanceNorm with track_running_stats).
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [(m, {n: getattr(m, n).clone() for n in names if getattr(m, n, None) is not None})
             for m in model.modules() if isinstance(m, _NormBase)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for n, value in buffers.items():
                    getattr(m, n).copy_(value)
