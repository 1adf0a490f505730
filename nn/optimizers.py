"""The optimizers a sweep can compare, in the OPTIMIZERS registry, for packs of K members.

Each entry builds an optimizer from (parameters of a PackedModel, the K members' run configs);
every hyper-parameter is a (K,) tensor, so members differ in lr, momentum, weight decay... and
each follows torch.optim's documented update rule exactly (TORCH_EQUIVALENTS names the torch
optimizer a member reproduces). `momentum` doubles as Adam's beta1 so that one sweep axis means
"how much of the past gradient to keep" for every optimizer; beta2 stays at the Adam paper's 0.999.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch

from nn.optimizer_base import Optimizer
from nn.sam import SAM


def _views(values: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """A (K,) tensor as one (K, 1, ..., 1) view per parameter, to broadcast over (K, ...)."""
    return [values.view(-1, *([1] * (p.ndim - 1))) for p in params]


class PackedOptimizer(Optimizer):
    """Base of the packed optimizers: K members' parameters stacked member-first (K, ...).

    Every hyper-parameter in `hyper_defaults` (and lr) is held in the param group as a (K,)
    tensor on the parameters' device, so a member's value broadcasts as (K, 1, ...) and step()
    never synchronises with the host. Per-parameter state (`state_names`) is member-first like
    the parameters; `counts_steps` keeps a per-member step count group["step"] (K,).
    Subclasses implement `_update(group, params, grads, states)`.
    """

    packed: ClassVar[bool] = True  # tells SAM to perturb each member on its own
    hyper_defaults: ClassVar[dict[str, float]] = {}
    flag_names: ClassVar[tuple[str, ...]] = ()  # hyper-parameters that are per-member booleans
    state_names: ClassVar[tuple[str, ...]] = ()
    counts_steps: ClassVar[bool] = False

    def __init__(self, params, lr: float | Sequence[float] | torch.Tensor, **hyper: Any) -> None:
        unknown = set(hyper) - set(self.hyper_defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown hyper-parameters {sorted(unknown)}")
        self.members: int | None = None
        super().__init__(params, {"lr": lr, **self.hyper_defaults, **hyper})

    # --- groups hold (K,) tensors -----------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._to_member_tensors(self.param_groups[-1])

    def _to_member_tensors(self, group: dict[str, Any]) -> None:
        params = group["params"]
        if not params:
            raise ValueError("a parameter group without parameters")
        members = params[0].shape[0] if params[0].ndim else 0
        if self.members is None:
            self.members = members
        for p in params:
            if p.ndim == 0 or p.shape[0] != self.members:
                raise ValueError(f"packed parameters have the member dimension first: got "
                                 f"{tuple(p.shape)} in a pack of {self.members}")
        device, dtype = params[0].device, params[0].dtype
        for name in ("lr", *self.hyper_defaults):
            kind = torch.bool if name in self.flag_names else dtype
            group[name] = self._member_tensor(group[name], name, device, kind)
        if self.counts_steps:
            group["step"] = self._member_tensor(group.get("step", 0), "step", device, dtype)
        self._note_zeros(group)

    def _note_zeros(self, group: dict[str, Any]) -> None:
        """group["zero"]: the hyper-parameters that are 0 (or False) for every member, read
        from the device here, when values are set, so that step() skips their passes (a
        weight decay of 0, plain SGD, no Nesterov member) without a host sync."""
        group["zero"] = tuple(name for name in self.hyper_defaults
                              if not bool(group[name].any()))

    def _member_tensor(self, value, name: str, device, dtype) -> torch.Tensor:
        # straight to dtype: a float32 detour would round lr=0.1 before a float64 pack sees it
        tensor = (value.to(device=device, dtype=dtype) if torch.is_tensor(value)
                  else torch.tensor(value, device=device, dtype=dtype))
        if tensor.ndim == 0:
            tensor = tensor.repeat(self.members)
        if tensor.shape != (self.members,):
            raise ValueError(f"{name}: {self.members} members need {self.members} values, got "
                             f"shape {tuple(tensor.shape)}")
        return tensor.clone()

    def member_keys(self, group: dict[str, Any]) -> list[str]:
        """The group's per-member entries: every (K,) tensor (hyper-parameters, step, and the
        entries a wrapper such as SAM keeps in the shared group)."""
        return [name for name, value in group.items()
                if torch.is_tensor(value) and value.shape == (self.members,)]

    def set_lr(self, lr: torch.Tensor | Sequence[float]) -> None:
        """Per-member learning rates (K,) for the following steps, in every group. A device
        tensor is copied without a host sync; a list of floats travels through pinned memory
        (non-blocking), so a schedule can set it every step."""
        for group in self.param_groups:
            target = group["lr"]
            if not torch.is_tensor(lr):
                lr = torch.tensor(lr, dtype=target.dtype,
                                  pin_memory=target.device.type == "cuda")
            if lr.shape != target.shape:
                raise ValueError(f"lr needs shape {tuple(target.shape)}, got {tuple(lr.shape)}")
            target.copy_(lr, non_blocking=True)

    # --- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every member (torch.optim's rule per member). No host sync."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = []
            for p in params:
                state = self.state[p]
                if not state:
                    state.update({name: torch.zeros_like(p) for name in self.state_names})
                states.append(state)
            if self.counts_steps:
                group["step"].add_(1)
            self._update(group, params, [p.grad for p in params], states)
        return loss

    def _update(self, group, params, grads, states) -> None:
        raise NotImplementedError

    def _state_list(self, states: list[dict], name: str) -> list[torch.Tensor]:
        return [state[name] for state in states]

    # --- checkpoints ------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # loaded groups may hold CPU tensors
            device = group["params"][0].device
            for name in self.member_keys(group):
                group[name] = group[name].to(device)
            self._note_zeros(group)

    def _all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict_member(self, k: int) -> dict[str, Any]:
        """Member k's optimizer state: {"groups": [{name: 0-d tensor}], "state": {param
        index: {name: tensor of the plain parameter's shape}}}, copies on the device."""
        if not 0 <= k < self.members:
            raise IndexError(f"member {k} of a pack of {self.members}")
        groups = [{name: group[name][k].clone() for name in self.member_keys(group)}
                  for group in self.param_groups]
        state = {i: {name: value[k].clone() for name, value in self.state[p].items()
                     if torch.is_tensor(value) and value.ndim and value.shape[0] == self.members}
                 for i, p in enumerate(self._all_params()) if self.state.get(p)}
        return {"groups": groups, "state": state}

    @torch.no_grad()
    def load_state_dict_member(self, k: int, member_state: dict[str, Any]) -> None:
        """Write a `state_dict_member` result into member k (of this or another pack with the
        same architecture). Raises ValueError when groups or shapes do not match."""
        if not 0 <= k < self.members:
            raise IndexError(f"member {k} of a pack of {self.members}")
        if len(member_state["groups"]) != len(self.param_groups):
            raise ValueError("member state has a different number of parameter groups")
        for group, saved in zip(self.param_groups, member_state["groups"]):
            for name, value in saved.items():
                if name not in group:
                    raise ValueError(f"member state has an unknown entry {name!r}")
                group[name][k] = value
            self._note_zeros(group)
        params = self._all_params()
        for i, saved in member_state["state"].items():
            p = params[int(i)]
            state = self.state[p]
            for name, value in saved.items():
                if name not in state:
                    state[name] = torch.zeros_like(p)
                if state[name][k].shape != value.shape:
                    raise ValueError(f"state {name} of parameter {i}: shape {tuple(value.shape)}"
                                     f", expected {tuple(state[name][k].shape)}")
                state[name][k] = value

    def select(self, indices: Sequence[int], params: Iterable[torch.Tensor]) -> PackedOptimizer:
        """A new optimizer for the members `indices` over `params`, the parameters of
        `PackedModel.select(indices)` in the same order: hyper-parameters, steps and state are
        copied for those members."""
        groups = _selected_groups(self, indices, params)
        selected = type(self)(groups, lr=groups[0]["lr"])
        _copy_selected_state(self, selected, indices)
        return selected


def _selected_groups(optimizer: PackedOptimizer, indices: Sequence[int],
                     params: Iterable[torch.Tensor]) -> list[dict[str, Any]]:
    new_params = list(params)
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if len(new_params) != sum(sizes):
        raise ValueError(f"select got {len(new_params)} parameters, the optimizer has "
                         f"{sum(sizes)}")
    index = torch.as_tensor(list(indices), dtype=torch.long)
    groups, start = [], 0
    for group, size in zip(optimizer.param_groups, sizes):
        keys = optimizer.member_keys(group)
        selected = {name: value for name, value in group.items()
                    if name not in keys and name not in ("params", "param_names")}
        selected.update({name: group[name][index.to(group[name].device)] for name in keys})
        selected["params"] = new_params[start:start + size]
        groups.append(selected)
        start += size
    return groups


def _copy_selected_state(old: PackedOptimizer, new: PackedOptimizer,
                         indices: Sequence[int]) -> None:
    index = torch.as_tensor(list(indices), dtype=torch.long)
    for p_old, p_new in zip(old._all_params(), new._all_params()):
        for name, value in old.state.get(p_old, {}).items():
            if torch.is_tensor(value) and value.ndim and value.shape[0] == old.members:
                new.state[p_new][name] = value[index.to(value.device)].clone()


class PackedSGD(PackedOptimizer):
    """SGD with momentum, Nesterov and L2 weight decay per member, following torch.optim.SGD
    (torch docs' pseudo-code, dampening 0): g += wd*w; b = mu*b + g (b = g at the first step);
    g = g + mu*b if nesterov else b; w -= lr*g. A member with momentum 0 is plain SGD."""

    hyper_defaults: ClassVar[dict[str, float]] = {"momentum": 0.0, "weight_decay": 0.0,
                                                  "nesterov": False}
    flag_names = ("nesterov",)
    state_names = ("momentum_buffer",)

    def _update(self, group, params, grads, states) -> None:
        lr, momentum, zero = group["lr"], group["momentum"], group["zero"]
        if "weight_decay" not in zero:
            grads = torch._foreach_addcmul(grads, params, _views(group["weight_decay"], params))
        if "momentum" in zero:  # every member plain SGD: w -= lr*g (torch keeps no buffer)
            torch._foreach_addcmul_(params, grads, _views(lr, params), value=-1)
            return
        buffers = self._state_list(states, "momentum_buffer")
        # The buffer starts at zero, so the first step leaves b = g, as torch's clone does.
        torch._foreach_mul_(buffers, _views(momentum, params))
        torch._foreach_add_(buffers, grads)
        if "nesterov" in zero:  # no Nesterov member: w -= lr*b
            torch._foreach_addcmul_(params, buffers, _views(lr, params), value=-1)
            return
        # One rule for both kinds of member, n = 1 for Nesterov, else 0:
        # w -= lr*n*g + lr*(n*mu + 1 - n)*b, i.e. lr*(g + mu*b) or exactly lr*b.
        nesterov = group["nesterov"].to(lr.dtype)
        torch._foreach_addcmul_(params, grads, _views(lr * nesterov, params), value=-1)
        torch._foreach_addcmul_(params, buffers,
                                _views(lr * (nesterov * momentum + 1 - nesterov), params),
                                value=-1)


class PackedAdam(PackedOptimizer):
    """Adam per member (Kingma & Ba, ICLR 2015), following torch.optim.Adam's documented rule
    (no amsgrad): g += wd*w; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g^2;
    w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). The step count t is per member."""

    hyper_defaults: ClassVar[dict[str, float]] = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                                  "weight_decay": 0.0}
    state_names = ("exp_avg", "exp_avg_sq")
    counts_steps = True
    decoupled = False

    def _update(self, group, params, grads, states) -> None:
        step, lr, beta1, beta2 = group["step"], group["lr"], group["beta1"], group["beta2"]
        decay, decays = group["weight_decay"], "weight_decay" not in group["zero"]
        if self.decoupled and decays:  # AdamW: w *= 1 - lr*wd before the Adam step
            torch._foreach_mul_(params, _views(1 - lr * decay, params))
        elif decays:
            grads = torch._foreach_addcmul(grads, params, _views(decay, params))
        exp_avgs = self._state_list(states, "exp_avg")
        exp_avg_sqs = self._state_list(states, "exp_avg_sq")
        torch._foreach_lerp_(exp_avgs, grads, _views(1 - beta1, params))
        if self.decoupled or not decays:  # grads are the p.grad themselves: square anew
            squares = torch._foreach_mul(grads, grads)
        else:  # grads are this step's weight-decayed copies: square them in place
            squares = grads
            torch._foreach_mul_(squares, squares)
        # b2*v + (1-b2)*g^2 as a lerp: one pass fewer than mul and addcmul
        torch._foreach_lerp_(exp_avg_sqs, squares, _views(1 - beta2, params))
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step).sqrt()
        # w -= step_size * m / (sqrt(v)/sqrt(bc2) + eps), as m / (denominator / step_size): no
        # temporary for the quotient, and lr = 0 gives an infinite denominator, not 0 * inf
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, _views(bias_correction2_sqrt, params))
        torch._foreach_add_(denominators, _views(group["eps"], params))
        torch._foreach_div_(denominators, _views(step_size, params))
        torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-1)


class PackedAdamW(PackedAdam):
    """AdamW per member (Loshchilov & Hutter, ICLR 2019), following torch.optim.AdamW: the
    weight decay is decoupled, w *= 1 - lr*wd, then the Adam step without it."""

    hyper_defaults: ClassVar[dict[str, float]] = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                                  "weight_decay": 1e-2}
    decoupled = True


class PackedRMSprop(PackedOptimizer):
    """RMSprop per member (Hinton's lecture 6e), following torch.optim.RMSprop (not centered):
    g += wd*w; v = a*v + (1-a)*g^2; b = mu*b + g/(sqrt(v) + eps); w -= lr*b. With momentum 0
    this is w -= lr*g/(sqrt(v) + eps), torch's branch for that case."""

    hyper_defaults: ClassVar[dict[str, float]] = {"alpha": 0.99, "eps": 1e-8,
                                                  "weight_decay": 0.0, "momentum": 0.0}
    state_names = ("square_avg", "momentum_buffer")
    counts_steps = True

    def _update(self, group, params, grads, states) -> None:
        if "weight_decay" not in group["zero"]:
            grads = torch._foreach_addcmul(grads, params, _views(group["weight_decay"], params))
        square_avgs = self._state_list(states, "square_avg")
        # a*v + (1-a)*g^2 as a lerp: one pass fewer than mul and addcmul
        torch._foreach_lerp_(square_avgs, torch._foreach_mul(grads, grads),
                             _views(1 - group["alpha"], params))
        averages = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(averages, _views(group["eps"], params))
        buffers = self._state_list(states, "momentum_buffer")
        torch._foreach_mul_(buffers, _views(group["momentum"], params))
        torch._foreach_addcdiv_(buffers, grads, averages)
        torch._foreach_addcmul_(params, buffers, _views(group["lr"], params), value=-1)


# name -> (packed optimizer class, its hyper-parameters from one member's run config)
PACKED_OPTIMIZERS = {
    "sgd": (PackedSGD, lambda c: dict(lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                      weight_decay=c.weight_decay)),
    "adam": (PackedAdam, lambda c: dict(lr=c.lr, beta1=c.momentum, beta2=0.999,
                                        weight_decay=c.weight_decay)),
    "adamw": (PackedAdamW, lambda c: dict(lr=c.lr, beta1=c.momentum, beta2=0.999,
                                          weight_decay=c.weight_decay)),
    "rmsprop": (PackedRMSprop, lambda c: dict(lr=c.lr, momentum=c.momentum,
                                              weight_decay=c.weight_decay)),
}

# name -> (torch optimizer, its keyword arguments from a run config): what one member of the
# packed optimizer reproduces (tests/test_packed_optimizers.py checks it), and the optimizer
# for a plain model (plain_optimizer).
TORCH_EQUIVALENTS = {
    "sgd": (torch.optim.SGD, lambda c: dict(lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                            weight_decay=c.weight_decay)),
    "adam": (torch.optim.Adam, lambda c: dict(lr=c.lr, betas=(c.momentum, 0.999),
                                              weight_decay=c.weight_decay)),
    "adamw": (torch.optim.AdamW, lambda c: dict(lr=c.lr, betas=(c.momentum, 0.999),
                                                weight_decay=c.weight_decay)),
    "rmsprop": (torch.optim.RMSprop, lambda c: dict(lr=c.lr, momentum=c.momentum,
                                                    weight_decay=c.weight_decay)),
}


def _per_member(cfgs: Sequence[Any], hyper) -> dict[str, list]:
    values = [hyper(c) for c in cfgs]
    return {name: [v[name] for v in values] for name in values[0]}


def _packed(name: str):
    cls, hyper = PACKED_OPTIMIZERS[name]
    return lambda params, cfgs: cls(params, **_per_member(cfgs, hyper))


def _packed_sam(params, cfgs: Sequence[Any]) -> SAM:
    bases = sorted({c.sam_base for c in cfgs})
    if len(bases) != 1:
        raise ValueError(f"members of one pack need one sam_base, got {bases}")
    cls, hyper = PACKED_OPTIMIZERS[bases[0]]
    return SAM(params, cls, rho=[c.rho for c in cfgs], adaptive=[c.adaptive for c in cfgs],
               **_per_member(cfgs, hyper))


# name -> (parameters of a PackedModel, the K members' run configs) -> optimizer
OPTIMIZERS = {name: _packed(name) for name in PACKED_OPTIMIZERS}
OPTIMIZERS["sam"] = _packed_sam


def plain_optimizer(params, cfg: Any) -> torch.optim.Optimizer:
    """The torch optimizer (or SAM around one) for one plain model and one run config: the
    reference a pack member reproduces."""
    if cfg.optimizer == "sam":
        cls, kwargs = TORCH_EQUIVALENTS[cfg.sam_base]
        return SAM(params, cls, rho=cfg.rho, adaptive=cfg.adaptive, **kwargs(cfg))
    cls, kwargs = TORCH_EQUIVALENTS[cfg.optimizer]
    return cls(params, **kwargs(cfg))
