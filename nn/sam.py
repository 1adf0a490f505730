"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) and its adaptive variant ASAM
(Kwon et al., ICML 2021).

SAM wraps a torch optimizer or a packed one (nn.optimizers): it moves the weights to the worst point
within radius rho, takes the gradient there, returns to the original weights and lets the wrapped
optimizer step with that gradient. Around a packed optimizer every member has its own rho, its own
adaptive flag and its own perturbation norm.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.nn.modules.batchnorm import _NormBase

from nn.optimizer_base import Optimizer


class SAM(Optimizer):
    """Two-pass optimizer: `perturb()` after the first backward, `descend()` after the second.

    Typical loop (or call `step(closure)`, which does exactly this)::

        loss_fn(model(x), y).backward()
        sam.perturb()                      # w -> w + e(w)
        sam.zero_grad()
        with preserved_batchnorm_stats(model):
            loss_fn(model(x), y).backward()
        sam.descend()                      # w + e(w) -> w, then the base optimizer steps
        sam.zero_grad()

    With an fp16 GradScaler replace `sam.descend()` by
    `sam.restore(); scaler.step(sam.base_optimizer)` so that the scaler can unscale the gradients
    and skip the step when they overflowed.

    The param_groups are shared with `base_optimizer`, so an LR scheduler may be attached to either
    object. Attaching it to `sam.base_optimizer` avoids PyTorch's "scheduler.step() before
    optimizer.step()" warning when the loop uses perturb/descend instead of `step`, since the
    scheduler watches the `step` method of the optimizer it was given.

    Packed: when `base_optimizer` is a packed optimizer class (nn.optimizers.PackedOptimizer), the
    parameters are a PackedModel's (K, ...) tensors, rho is (K,) floats and adaptive (K,) booleans;
    member k's perturbation is computed from its slice of every parameter only, so members do not
    interact and a member with a zero or non-finite gradient is left unperturbed. Such a SAM also
    offers the base's packed methods: members, set_lr, state_dict_member, load_state_dict_member and
    select. No host sync in perturb/restore/descend.
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer],
                 rho: float | Sequence[float] = 0.05, adaptive: bool | Sequence[bool] = False,
                 eta: float = 0.01, **base_kwargs: Any) -> None:
        self._packed = bool(getattr(base_optimizer, "packed", False))
        if not bool((torch.as_tensor(rho) > 0).all()):
            raise ValueError(f"SAM needs a positive rho, got {rho}")
        if eta < 0:
            raise ValueError(f"ASAM needs a non-negative eta, got {eta}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, eta=eta, **base_kwargs))
        # Hand the base optimizer our group dicts (it fills in its own defaults in place) and
        # then adopt its list: both objects see one set of groups, so a scheduler's group["lr"]
        # reaches the step.
        self._adopt(base_optimizer(self.param_groups, **base_kwargs))

    def _adopt(self, base: torch.optim.Optimizer) -> None:
        self.base_optimizer = base
        self.param_groups = base.param_groups
        # A group added later through SAM.add_param_group needs the base optimizer's defaults too
        # (e.g. SGD's dampening), or the base step would fail on the missing keys.
        self.defaults = {**base.defaults, **self.defaults}
        for group in self.param_groups:
            self._member_entries(group)

    def _member_entries(self, group: dict[str, Any]) -> None:
        """Packed: rho and adaptive as (K,) tensors in the group, beside the base's entries."""
        if not self._packed:
            return
        device, dtype = group["params"][0].device, group["params"][0].dtype
        base = self.base_optimizer
        group["rho"] = base._member_tensor(group["rho"], "rho", device, dtype)
        group["adaptive"] = base._member_tensor(group["adaptive"], "adaptive", device, torch.bool)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):  # still in __init__, before the base exists
            super().add_param_group(param_group)
            return
        for name in ("rho", "adaptive", "eta"):
            param_group.setdefault(name, self.defaults[name])
        self.base_optimizer.add_param_group(param_group)  # appends to the shared list
        self._member_entries(param_group)

    def _members_first(self, t: torch.Tensor) -> torch.Tensor:
        """A parameter-shaped tensor seen as (K, ...): itself when packed, else (1, ...)."""
        return t if self._packed else t.unsqueeze(0)

    def _asam_scale(self, group: dict[str, Any], w: torch.Tensor) -> torch.Tensor | None:
        """ASAM's T_w = |w| + eta for adaptive members, 1 for the others; None when no member
        of the group is adaptive (plain SAM with a Python flag)."""
        adaptive = group["adaptive"]
        if not torch.is_tensor(adaptive):
            return w.abs() + group["eta"] if adaptive else None
        return torch.where(adaptive.view(-1, *([1] * (w.ndim - 1))), w.abs() + group["eta"], 1.0)

    @torch.no_grad()
    def perturb(self) -> None:
        """First step: move every parameter with a gradient to w + e(w), remembering w.

        SAM: e = rho * g / ||g||.  ASAM: with T = |w| + eta (element-wise),
        e = rho * T^2 g / ||T g||, i.e. a step of length rho measured in the T^-1-scaled weight
        space, which makes the sharpness measure invariant to rescaling of the weights.
        The norm is global, over all parameters, as in both papers; in a pack it is global over
        each member's slices, one norm per member. T scales every parameter, biases and batch
        norm's included, as the paper's element-wise T_w is written; the authors' code
        (SamsungLabs/ASAM) leaves parameters without "weight" in their name at T = 1.
        """
        entries = []  # (param, group, w as (K, ...), T or None, T*g as (K, ...))
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                w, g = self._members_first(p), self._members_first(p.grad)
                scale = self._asam_scale(group, w)
                entries.append((p, group, w, scale, g if scale is None else scale * g))
        if not entries:
            return
        # at least fp32, so that fp16 gradients do not overflow in the sum of squares
        dtype = torch.float32
        for *_, s in entries:
            dtype = torch.promote_types(dtype, s.dtype)
        device = entries[0][0].device
        norm = torch.stack([_member_square_norm(s, dtype).to(device)
                            for *_, s in entries]).sum(0).sqrt()  # (K,)
        # A zero gradient has no ascent direction; an inf/NaN one (e.g. an fp16 overflow that the
        # GradScaler will skip anyway) would put NaN into the weights: such a member stays put.
        usable = torch.isfinite(norm) & (norm > 0)
        for p, group, w, scale, scaled in entries:
            # T^2 g / ||T g|| = T * (T g) / ||T g||; for plain SAM T = 1
            direction = scaled if scale is None else scale * scaled
            factor = torch.where(usable, group["rho"] / norm, 0.0)
            factor = factor.to(device=p.device, dtype=p.dtype)
            e = direction * factor.view(-1, *([1] * (w.ndim - 1)))
            e = torch.where(usable.to(p.device).view(-1, *([1] * (w.ndim - 1))), e, 0.0)
            # keep an exact copy rather than subtracting e later: w + e - e need not equal w in
            # floats
            self.state[p]["original"] = p.detach().clone()
            w.add_(e)

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

    # --- packed only: the base's per-member methods (rho and adaptive live in the shared groups,
    # so the base's member state carries them too) ---------------------------------------------

    @property
    def members(self) -> int:
        return self.base_optimizer.members

    def set_lr(self, lr: torch.Tensor | Sequence[float]) -> None:
        self.base_optimizer.set_lr(lr)

    def state_dict_member(self, k: int) -> dict[str, Any]:
        return self.base_optimizer.state_dict_member(k)

    def load_state_dict_member(self, k: int, member_state: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict_member(k, member_state)

    def select(self, indices: Sequence[int], params: Iterable[torch.Tensor]) -> SAM:
        """A SAM over the base's `select(indices, params)`: the members `indices` with their
        rho, adaptive flags, hyper-parameters and base state."""
        base = self.base_optimizer.select(indices, params)
        selected = SAM.__new__(SAM)
        selected._packed = self._packed
        first = base.param_groups[0]  # the selected members' values, for groups added later
        torch.optim.Optimizer.__init__(selected, base.param_groups, {
            name: first[name] for name in ("rho", "adaptive", "eta")})
        selected._adopt(base)
        return selected


def _member_square_norm(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Squared L2 norm of each member's slice of a (K, ...) tensor: (K,) in `dtype`."""
    if t.ndim == 1:
        return t.to(dtype).square()
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), dtype=dtype).square()


@contextlib.contextmanager
def preserved_batchnorm_stats(model: torch.nn.Module) -> Iterator[None]:
    """Keep the running statistics of `model`'s normalization layers unchanged across the block.

    The second SAM pass sees the batch again at perturbed weights; letting it update running_mean /
    running_var / num_batches_tracked would count each batch twice, once with off-trajectory
    activations. Covers every layer with running statistics (_NormBase: BatchNorm*, SyncBatchNorm,
    and InstanceNorm with track_running_stats) and any other module holding such buffers, as the
    packed batch norm of nn.packed does with its (K, C) statistics.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = []
    for m in model.modules():
        own = dict(m.named_buffers(recurse=False))
        if isinstance(m, _NormBase) or any(n in own for n in names):
            saved.append((m, {n: getattr(m, n).clone() for n in names
                              if getattr(m, n, None) is not None}))
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for n, value in buffers.items():
                    getattr(m, n).copy_(value)
