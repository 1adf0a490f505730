"""Dynamic loss scaling for fp16 training, one scale per member of a pack.

torch.amp.GradScaler (Micikevicius et al., "Mixed Precision Training", ICLR 2018; torch docs,
"Automatic Mixed Precision") keeps one scale for a model: a step whose gradients hold an inf or
NaN is skipped and the scale halved; after `growth_interval` good steps in a row it doubles.
In a pack, one member's overflow would then skip every member's step and shrink every
member's scale, so a member would not train as it trains alone. PackedGradScaler applies the
same rule to each member on its own: member k's loss is multiplied by its scale s_k, its
gradients are divided by s_k, and only the members whose gradients overflowed skip the step
(their weights, optimizer state and step count are put back exactly, from a copy taken
before each fp16 step: one pass over the parameters and optimizer state). Nothing reads a
value back to the host (torch's GradScaler.step does, every step).
"""

from __future__ import annotations

from typing import Any

import torch

INIT_SCALE = 2.0**16  # torch.amp.GradScaler's defaults
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 2000


def _member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) values as (K, 1, ..., 1) to broadcast over a member-first (K, ...) tensor."""
    return values.to(like.device).view(-1, *([1] * (like.ndim - 1)))


class PackedGradScaler:
    """Per-member dynamic loss scaling for a pack of `members` (fp16 autocast).

    Use, per step (SAM: unscale_ after each backward, step on the base optimizer)::

        scaler.scale(losses).backward()   # losses (K,): each member's loss times its scale
        scaler.unscale_(optimizer)        # gradients / scale; notes which members overflowed
        scaler.step(optimizer)            # those members keep their weights and state
        scaler.update()                   # per member: halve after an overflow, else grow

    Disabled (`enabled=False`, any precision but fp16), scale() is losses.sum() and step() is
    optimizer.step(). scale, growth_tracker: (K,) tensors on `device`.
    """

    def __init__(self, members: int, device: torch.device, enabled: bool = True,
                 init_scale: float = INIT_SCALE, growth_interval: int = GROWTH_INTERVAL):
        self.enabled = enabled
        self.growth_interval = growth_interval
        self.scale_values = torch.full((members,), init_scale, device=device)
        self.growth_tracker = torch.zeros(members, dtype=torch.int64, device=device)
        self.found_inf = torch.zeros(members, dtype=torch.bool, device=device)

    def is_enabled(self) -> bool:
        return self.enabled

    @property
    def members(self) -> int:
        return len(self.scale_values)

    def scale(self, losses: torch.Tensor) -> torch.Tensor:
        """The pack's loss to differentiate: sum over members of loss_k * scale_k."""
        if not self.enabled:
            return losses.sum()
        return (losses * self.scale_values.to(losses.dtype)).sum()

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every member's gradients by its scale, and note (found_inf) the members
        with an inf or NaN among them. Call once after each backward pass."""
        if not self.enabled:
            return
        inverse = self.scale_values.double().reciprocal().float()
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                grad.mul_(_member_view(inverse, grad).to(grad.dtype))
                finite = torch.isfinite(grad).flatten(1).all(1) if grad.ndim > 1 \
                    else torch.isfinite(grad)
                self.found_inf |= ~finite.to(self.found_inf.device)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step() for the members whose gradients were finite; the others keep
        their parameters, per-member optimizer state and hyper-parameter entries exactly."""
        if not self.enabled:
            optimizer.step()
            return
        kept = _member_tensors(optimizer)
        saved = {id(t): t.clone() for t in kept}
        optimizer.step()
        with torch.no_grad():
            for tensor in _member_tensors(optimizer):
                skip = _member_view(self.found_inf, tensor)
                # state made by this first step started at zeros (nn/optimizers.py)
                before = saved.get(id(tensor))
                tensor.copy_(torch.where(skip, 0 if before is None else before, tensor))

    @torch.no_grad()
    def update(self) -> None:
        """Per member, as torch's GradScaler: an overflow halves the scale and restarts the
        count of good steps; growth_interval good steps in a row double it."""
        if not self.enabled:
            return
        inf = self.found_inf
        tracker = torch.where(inf, 0, self.growth_tracker + 1)
        grow = tracker >= self.growth_interval
        factor = torch.where(inf, BACKOFF_FACTOR, torch.where(grow, GROWTH_FACTOR, 1.0))
        scaled = self.scale_values * factor
        # a scale that would grow past the largest float stays where it is (as torch's)
        self.scale_values.copy_(torch.where(torch.isfinite(scaled), scaled, self.scale_values))
        self.growth_tracker.copy_(torch.where(grow, 0, tracker))
        self.found_inf.zero_()

    # --- members ----------------------------------------------------------------------------

    def state_dict_member(self, k: int) -> dict[str, Any]:
        """Member k's scale and count of good steps, as plain numbers ({} when disabled)."""
        if not self.enabled:
            return {}
        return {"scale": float(self.scale_values[k]),
                "growth_tracker": int(self.growth_tracker[k])}

    def load_state_dict_member(self, k: int, state: dict[str, Any]) -> None:
        """Member k from state_dict_member, or from a torch.amp.GradScaler state_dict (a
        checkpoint written before scales were per member: "scale", "_growth_tracker")."""
        if not self.enabled or not state:
            return
        self.scale_values[k] = float(state["scale"])
        self.growth_tracker[k] = int(state.get("growth_tracker",
                                               state.get("_growth_tracker", 0)))

    def select(self, keep: list[int]) -> PackedGradScaler:
        """The scaler of the members `keep`, in that order, each as it was."""
        index = torch.as_tensor(keep, dtype=torch.long, device=self.scale_values.device)
        selected = PackedGradScaler(len(keep), self.scale_values.device, self.enabled,
                                    growth_interval=self.growth_interval)
        selected.scale_values.copy_(self.scale_values[index])
        selected.growth_tracker.copy_(self.growth_tracker[index])
        selected.found_inf.copy_(self.found_inf[index])
        return selected


def _member_tensors(optimizer) -> list[torch.Tensor]:
    """What a step of a packed optimizer (or SAM over one) changes, member-first: parameters,
    per-parameter state and the groups' per-member entries (Adam's step counts)."""
    members = optimizer.members
    tensors: list[torch.Tensor] = []
    for group in optimizer.param_groups:
        tensors += [p for p in group["params"] if p.grad is not None]
        tensors += [value for value in group.values()
                    if torch.is_tensor(value) and value.shape == (members,)]
    state = getattr(optimizer, "state", {})
    for group in optimizer.param_groups:
        for p in group["params"]:
            tensors += [value for value in state.get(p, {}).values()
                        if torch.is_tensor(value) and value.ndim and value.shape[0] == members]
    return tensors
