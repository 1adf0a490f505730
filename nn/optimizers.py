"""The optimizers a sweep can compare, in the OPTIMIZERS registry.

Each entry builds an optimizer from (parameters, config). `momentum` doubles as Adam's beta1 so
that one sweep axis means "how much of the past gradient to keep" for every optimizer; beta2
stays at the Adam paper's 0.999.
"""

from __future__ import annotations

import torch

from nn.sam import SAM

# name -> (optimizer class, its keyword arguments from a run config)
BASE_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, lambda c: dict(lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                            weight_decay=c.weight_decay)),
    "adam": (torch.optim.Adam, lambda c: dict(lr=c.lr, betas=(c.momentum, 0.999),
                                              weight_decay=c.weight_decay)),
    "adamw": (torch.optim.AdamW, lambda c: dict(lr=c.lr, betas=(c.momentum, 0.999),
                                                weight_decay=c.weight_decay)),
    "rmsprop": (torch.optim.RMSprop, lambda c: dict(lr=c.lr, momentum=c.momentum,
                                                    weight_decay=c.weight_decay)),
}


def _plain(name):
    cls, kwargs = BASE_OPTIMIZERS[name]
    return lambda params, cfg: cls(params, **kwargs(cfg))


def _sam(params, cfg):
    cls, kwargs = BASE_OPTIMIZERS[cfg.sam_base]
    return SAM(params, cls, rho=cfg.rho, adaptive=cfg.adaptive, **kwargs(cfg))


OPTIMIZERS = {name: _plain(name) for name in BASE_OPTIMIZERS}
OPTIMIZERS["sam"] = _sam
