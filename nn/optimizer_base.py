"""The base class of this project's optimizers: torch.optim.Optimizer, minus one import.

torch.optim.Optimizer's add_param_group, zero_grad, state_dict and load_state_dict are wrapped
by `torch._disable_dynamo` (so that torch.compile does not trace into them), and that wrapper
imports torch._dynamo on its first call: 1.2 s of a trial process's start on a CPU (half of
torch's own import), paid by every run `wandb agent` starts and by every agent, for code no
trial compiles. This base calls torch's undecorated methods (the wrapper's `__wrapped__`, set
by functools.wraps); where a torch version has no such attribute, torch's method is called as
it is. Nothing else differs from torch.optim.Optimizer.
"""

from __future__ import annotations

from typing import Any

import torch


def _undecorated(method):
    return getattr(method, "__wrapped__", method)


_ADD_PARAM_GROUP = _undecorated(torch.optim.Optimizer.add_param_group)
_ZERO_GRAD = _undecorated(torch.optim.Optimizer.zero_grad)
_STATE_DICT = _undecorated(torch.optim.Optimizer.state_dict)
_LOAD_STATE_DICT = _undecorated(torch.optim.Optimizer.load_state_dict)


class Optimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer whose bookkeeping methods do not import torch._dynamo."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _LOAD_STATE_DICT(self, state_dict)
