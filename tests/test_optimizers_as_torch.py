"""The optimizers a study compares are the ones their users know: a trial trains as a plain
torch loop with torch.optim does, and SAM as Foret et al.'s Algorithm 1 (ICLR 2021) does.

The cases come from the documented flags of torch.optim.SGD, Adam, AdamW and RMSprop (each
edge a sweep can reach: momentum 0 and > 0, Nesterov, weight decay 0 and > 0, coupled or
decoupled, Adam's beta1 at 0 and near 1) and from the papers of SAM and ASAM (Kwon et al.,
ICML 2021: T_w = |w| + eta), with the schedules, warm-up, label smoothing and precisions a
sweep sets beside them. The reference here is written from those documents alone: the digits
split, its batch order and the two passes of SAM, each step taken by torch.optim. Compared:
the weights of the trial's last checkpoint, to float32 rounding.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import optim
from torch.optim import lr_scheduler

from agent.params import validate
from agent.trial import train, train_pack
from nn.models import MODELS
from nn.optimizers import PackedAdam, PackedAdamW, PackedRMSprop, PackedSGD
from util.datasets import DATASETS

BASE = {"dataset": "digits", "model": "dense", "hidden": 16, "sinks": [], "histograms": False,
        "num_threads": 1, "train_subset": 256, "epochs": 2, "batch_size": 64,
        "device": "cpu", "precision": "fp32", "schedule": "constant", "weight_decay": 0.0}
CNN = {"model": "cnn", "channels": [4, 8]}  # batch norm on: SAM's second pass keeps its stats
# float32 rounding in another order (a fused kernel, a lerp for Adam's moments) over 8-12
# steps moves a weight by ~1e-6; a wrong flag moves it by 1e-3 or more (see _assert_equal)
ATOL, RTOL = 1e-5, 1e-4


def _warm_cosine(warmup_steps: int):
    # torch's own pieces: a linear rise to the peak over the warm-up, then cosine to 0
    return lambda opt, total: lr_scheduler.SequentialLR(opt, [
        lr_scheduler.LinearLR(opt, 1 / warmup_steps, 1.0, total_iters=warmup_steps - 1),
        lr_scheduler.CosineAnnealingLR(opt, total - warmup_steps)], milestones=[warmup_steps])


# name: (run values, the torch optimizer a user would write for them, its lr scheduler)
CASES = {
    # torch.optim.SGD(lr, momentum=0, dampening=0, weight_decay=0, nesterov=False)
    "sgd": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.0},
            lambda p: optim.SGD(p, lr=0.1), None),
    "sgd_weight_decay": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.01},
                         lambda p: optim.SGD(p, lr=0.1, weight_decay=0.01), None),
    "sgd_momentum": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
                     lambda p: optim.SGD(p, lr=0.05, momentum=0.9), None),
    "sgd_momentum_weight_decay": (
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "weight_decay": 5e-4},
        lambda p: optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=5e-4), None),
    "sgd_nesterov": (
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
         "weight_decay": 1e-3},
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), None),
    "sgd_momentum_0.99": ({"optimizer": "sgd", "lr": 0.01, "momentum": 0.99},
                          lambda p: optim.SGD(p, lr=0.01, momentum=0.99), None),
    # torch.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0): momentum is beta1
    "adam": ({"optimizer": "adam", "lr": 0.01, "momentum": 0.9},
             lambda p: optim.Adam(p, lr=0.01), None),
    "adam_beta1_0": ({"optimizer": "adam", "lr": 0.01, "momentum": 0.0},
                     lambda p: optim.Adam(p, lr=0.01, betas=(0.0, 0.999)), None),
    "adam_beta1_0.99": ({"optimizer": "adam", "lr": 0.01, "momentum": 0.99},
                        lambda p: optim.Adam(p, lr=0.01, betas=(0.99, 0.999)), None),
    "adam_l2": ({"optimizer": "adam", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.01},
                lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01), None),
    # torch.optim.AdamW(lr, betas, eps, weight_decay=0.01): the decay decoupled
    "adamw": ({"optimizer": "adamw", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.1},
              lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1), None),
    "adamw_no_decay": ({"optimizer": "adamw", "lr": 0.01, "momentum": 0.9},
                       lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.0), None),
    "adamw_beta1_0.5": ({"optimizer": "adamw", "lr": 0.01, "momentum": 0.5, "weight_decay": 0.01},
                        lambda p: optim.AdamW(p, lr=0.01, betas=(0.5, 0.999)), None),
    # torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)
    "rmsprop": ({"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.0},
                lambda p: optim.RMSprop(p, lr=1e-3), None),
    "rmsprop_momentum": ({"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.9},
                         lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.9), None),
    "rmsprop_momentum_weight_decay": (
        {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.5, "weight_decay": 0.01},
        lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.5, weight_decay=0.01), None),
    # SAM and ASAM around each base optimizer (the base is the torch optimizer)
    "sam_sgd": ({"optimizer": "sam", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                 "rho": 0.05},
                lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4), None),
    "asam_sgd": ({"optimizer": "sam", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                  "rho": 0.5, "adaptive": True},
                 lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4), None),
    "sam_sgd_nesterov": ({"optimizer": "sam", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                          "rho": 0.1},
                         lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True), None),
    "sam_adam": ({"optimizer": "sam", "sam_base": "adam", "lr": 0.01, "momentum": 0.9,
                  "rho": 0.1},
                 lambda p: optim.Adam(p, lr=0.01), None),
    "asam_adamw": ({"optimizer": "sam", "sam_base": "adamw", "lr": 0.01, "momentum": 0.9,
                    "weight_decay": 0.05, "rho": 1.0, "adaptive": True},
                   lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.05), None),
    "sam_rmsprop_label_smoothing": (
        {"optimizer": "sam", "sam_base": "rmsprop", "lr": 1e-3, "momentum": 0.5, "rho": 0.1,
         "label_smoothing": 0.1},
        lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.5), None),
    # schedules and warm-up as torch's schedulers step them, label smoothing as torch's loss
    "sgd_cosine_warmup": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 3,
                           "schedule": "cosine", "warmup_epochs": 0.5},
                          lambda p: optim.SGD(p, lr=0.1, momentum=0.9), _warm_cosine(2)),
    "adam_onecycle": ({"optimizer": "adam", "lr": 0.01, "momentum": 0.9, "epochs": 3,
                       "schedule": "onecycle"},
                      lambda p: optim.Adam(p, lr=0.01),
                      lambda opt, total: lr_scheduler.OneCycleLR(opt, 0.01, total_steps=total,
                                                      anneal_strategy="linear",
                                                      cycle_momentum=False)),
    "rmsprop_step": ({"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.0, "epochs": 4,
                      "schedule": "step"},
                     lambda p: optim.RMSprop(p, lr=1e-3),
                     lambda opt, total: lr_scheduler.MultiStepLR(
                         opt, [total // 2, 3 * total // 4])),
    "sam_adamw_cosine": ({"optimizer": "sam", "sam_base": "adamw", "lr": 0.01, "momentum": 0.9,
                          "weight_decay": 0.01, "rho": 0.05, "schedule": "cosine",
                          "epochs": 3},
                         lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.01),
                         lambda opt, total: lr_scheduler.CosineAnnealingLR(opt, total)),
    "sgd_label_smoothing": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                             "label_smoothing": 0.2},
                            lambda p: optim.SGD(p, lr=0.1, momentum=0.9), None),
    # precisions: torch.autocast on the CPU, fp16 with torch's GradScaler
    "sgd_bf16": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "precision": "bf16"},
                 lambda p: optim.SGD(p, lr=0.1, momentum=0.9), None),
    "sgd_fp16": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "precision": "fp16"},
                 lambda p: optim.SGD(p, lr=0.1, momentum=0.9), None),
    # a conv model with batch norm: SAM's second pass leaves its running statistics alone
    "cnn_sgd": ({**CNN, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
                lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4), None),
    "cnn_sam": ({**CNN, "optimizer": "sam", "lr": 0.05, "momentum": 0.9, "rho": 0.05},
                lambda p: optim.SGD(p, lr=0.05, momentum=0.9), None),
    "cnn_asam_adam": ({**CNN, "optimizer": "sam", "sam_base": "adam", "lr": 0.01,
                       "momentum": 0.9, "rho": 1.0, "adaptive": True},
                      lambda p: optim.Adam(p, lr=0.01), None),
}
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def _digits_train() -> tuple[torch.Tensor, torch.Tensor]:
    """The training split a trial of val_split 0.1 trains on: a seed-0 permutation's first
    tenth held out (the same for every run), the rest in order, standardised by its own pixel
    mean and std. Images (N, 1, 8, 8) float32, labels (N,)."""
    data = DATASETS["digits"](Path("unused"))  # scikit-learn's copy: no files, no network
    n = len(data.train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    kept = order[round(n * 0.1):].sort().values
    images = data.train_x[kept].float() / 255
    return (images - images.mean()) / images.std(), data.train_y[kept]


def _sam_gradient(model: torch.nn.Module, loss, rho: float, adaptive: bool,
                  eta: float = 0.01) -> None:
    """Algorithm 1 of Foret et al.: g at w; e = rho g / ||g|| (ASAM: rho T^2 g / ||T g||,
    T = |w| + eta, Kwon et al.); leaves in p.grad the gradient at w + e, at w again.
    The norm is over all parameters. Batch-norm statistics of the second pass are dropped."""
    params = list(model.parameters())
    loss().backward()
    with torch.no_grad():
        scale = [p.abs() + eta if adaptive else torch.ones_like(p) for p in params]
        norm = torch.sqrt(sum(((t * p.grad) ** 2).sum() for t, p in zip(scale, params)))
        ascent = [rho * t * t * p.grad / norm for t, p in zip(scale, params)]
        for p, e in zip(params, ascent):
            p.add_(e)
            p.grad = None
    stats = {name: b.clone() for name, b in model.named_buffers()}
    loss().backward()
    with torch.no_grad():
        for p, e in zip(params, ascent):
            p.sub_(e)
        for name, b in model.named_buffers():
            b.copy_(stats[name])


def _torch_loop(values: dict, make_optimizer, make_scheduler) -> tuple[dict, dict]:
    """The run of `values` as a plain torch loop: (initial weights, final weights)."""
    cfg = validate({**BASE, **values})
    x, y = (t[:cfg.train_subset] for t in _digits_train())
    torch.manual_seed(cfg.seed)
    model = MODELS[cfg.model](cfg, (1, 8, 8), 10)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model.parameters())
    steps = len(y) // cfg.batch_size  # the ragged last batch is dropped
    scheduler = make_scheduler(optimizer, cfg.epochs * steps) if make_scheduler else None
    scaler = torch.amp.GradScaler("cpu", enabled=cfg.precision == "fp16")
    order_generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=order_generator)
        for step in range(steps):
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]

            def loss(rows=rows):
                with torch.autocast("cpu", dtype=AUTOCAST.get(cfg.precision),
                                    enabled=cfg.precision in AUTOCAST):
                    logits = model(x[rows])
                return F.cross_entropy(logits.float(), y[rows],
                                       label_smoothing=cfg.label_smoothing)

            optimizer.zero_grad()
            if cfg.optimizer == "sam":
                _sam_gradient(model, loss, cfg.rho, cfg.adaptive)
                optimizer.step()
            else:
                scaler.scale(loss()).backward()
                scaler.step(optimizer)
                scaler.update()
            if scheduler is not None:
                scheduler.step()
    return initial, model.state_dict()


def _trained(tmp_path: Path, values: dict, run_id: str) -> dict:
    """The weights of the trial's last checkpoint."""
    train({**BASE, **_dirs(tmp_path), **values, "run_id": run_id})
    return _weights(tmp_path, run_id)


def _dirs(tmp_path: Path) -> dict:
    return {"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "logs"),
            "run_dir": str(tmp_path / "runs")}


def _weights(tmp_path: Path, run_id: str) -> dict:
    return torch.load(tmp_path / "runs" / run_id / "checkpoint.pt", weights_only=True)["model"]


def _assert_equal(got: dict, expected: dict, initial: dict, what: str) -> None:
    assert set(got) == set(expected), what
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=ATOL, rtol=RTOL,
                                   msg=lambda m, name=name: f"{what}: {name}: {m}")
    # the comparison can fail: training moved the weights far beyond the tolerance
    moved = max((expected[n].double() - initial[n].double()).abs().max().item()
                for n in expected if expected[n].is_floating_point())
    assert moved > 100 * ATOL, f"{what}: the weights barely moved ({moved:.1e})"


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_trial_trains_as_a_torch_loop_with_torch_optim(workdir, case):
    values, make_optimizer, make_scheduler = CASES[case]
    initial, expected = _torch_loop(values, make_optimizer, make_scheduler)
    _assert_equal(_trained(workdir, values, case), expected, initial, case)


# A pack's members differ in every per-member value of their optimizer, each edge beside the
# other: momentum 0 and > 0, Nesterov or not, weight decay 0 and > 0, beta1 0 and near 1,
# SAM and ASAM, radii, label smoothing and warm-up.
PACKS = {
    "sgd": [{"lr": 0.1, "momentum": 0.0},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
            {"lr": 0.2, "momentum": 0.5, "weight_decay": 0.0, "warmup_epochs": 1.0}],
    "adam": [{"lr": 0.01, "momentum": 0.0},
             {"lr": 3e-3, "momentum": 0.9, "weight_decay": 0.01},
             {"lr": 0.02, "momentum": 0.99, "label_smoothing": 0.1}],
    "adamw": [{"lr": 0.01, "momentum": 0.0}, {"lr": 3e-3, "momentum": 0.9, "weight_decay": 0.5}],
    "rmsprop": [{"lr": 1e-3, "momentum": 0.0},
                {"lr": 3e-3, "momentum": 0.9, "weight_decay": 0.01}],
    "sam": [{"lr": 0.1, "momentum": 0.9, "rho": 0.05, "label_smoothing": 0.1,
             "warmup_epochs": 1.0},
            {"lr": 0.05, "momentum": 0.0, "rho": 1.0, "adaptive": True, "weight_decay": 1e-3},
            {"lr": 0.1, "momentum": 0.5, "nesterov": True, "rho": 0.3}],
    "sam_adamw": [{"lr": 0.01, "momentum": 0.9, "rho": 0.05, "adaptive": True},
                  {"lr": 1e-3, "momentum": 0.0, "rho": 2.0, "adaptive": True,
                   "weight_decay": 0.01},
                  {"lr": 3e-3, "momentum": 0.5, "rho": 0.1}],
}


@pytest.mark.parametrize("case", sorted(PACKS))
def test_each_member_of_a_pack_trains_as_it_does_alone(workdir, case):
    optimizer = {"optimizer": "sam", "sam_base": "adamw"} if case == "sam_adamw" else \
        {"optimizer": case}
    configs = [{**BASE, **_dirs(workdir), **optimizer, "schedule": "cosine", **member,
                "seed": 3 + k, "run_id": f"p{k}"} for k, member in enumerate(PACKS[case])]
    summaries = train_pack(configs)
    assert [s["state"] for s in summaries] == ["finished"] * len(configs)
    for k, config in enumerate(configs):
        torch.manual_seed(config["seed"])
        cfg = validate(config)
        initial = MODELS[cfg.model](cfg, (1, 8, 8), 10).state_dict()
        alone = _trained(workdir, {**config, "run_id": f"a{k}"}, f"a{k}")
        _assert_equal(_weights(workdir, f"p{k}"), alone, initial, f"{case} member {k}")


# The packed optimizers' own hyper-parameters that no sweep sets (beta2, eps, alpha: fixed at
# torch's defaults for a run), at torch's documented edges, per member, against torch.optim.
FLAG_CASES = {
    "adam": (PackedAdam, optim.Adam, [
        ({"beta1": 0.9, "beta2": 0.0, "eps": 1e-12}, {"betas": (0.9, 0.0), "eps": 1e-12}),
        ({"beta1": 0.0, "beta2": 0.5, "eps": 1.0}, {"betas": (0.0, 0.5), "eps": 1.0}),
        ({"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1},
         {"weight_decay": 0.1})]),
    "adamw": (PackedAdamW, optim.AdamW, [
        ({"beta1": 0.9, "beta2": 0.0, "eps": 1e-12, "weight_decay": 0.0},
         {"betas": (0.9, 0.0), "eps": 1e-12, "weight_decay": 0.0}),
        ({"beta1": 0.0, "beta2": 0.5, "eps": 1.0, "weight_decay": 0.1},
         {"betas": (0.0, 0.5), "eps": 1.0, "weight_decay": 0.1}),
        ({}, {})]),  # both defaults: torch's weight_decay 0.01
    "rmsprop": (PackedRMSprop, optim.RMSprop, [
        ({"alpha": 0.0, "eps": 1e-12}, {"alpha": 0.0, "eps": 1e-12}),
        ({"alpha": 0.5, "eps": 1.0, "momentum": 0.9}, {"alpha": 0.5, "eps": 1.0, "momentum": 0.9}),
        ({"weight_decay": 0.1, "momentum": 0.5}, {"weight_decay": 0.1, "momentum": 0.5})]),
    "sgd": (PackedSGD, optim.SGD, [
        ({}, {}), ({"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "nesterov": True}),
        ({"momentum": 0.9, "weight_decay": 0.1}, {"momentum": 0.9, "weight_decay": 0.1})]),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_packed_optimizer_members_follow_torch_at_the_edges_of_every_flag(case):
    packed_class, torch_class, members = FLAG_CASES[case]
    names = set().union(*(packed for packed, _ in members))
    defaults = packed_class.hyper_defaults
    hyper = {name: [packed.get(name, defaults[name]) for packed, _ in members] for name in names}
    start = torch.randn(len(members), 5, 4, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))
    pack = start.clone().requires_grad_()
    optimizer = packed_class([pack], lr=[0.01, 0.02, 0.005], **hyper)
    plain = [start[k].clone().requires_grad_() for k in range(len(members))]
    references = [torch_class([p], lr=lr, **kwargs)
                  for p, lr, (_, kwargs) in zip(plain, [0.01, 0.02, 0.005], members)]
    gradients = torch.Generator().manual_seed(1)
    for _ in range(6):
        # each member's gradients of another size: 1e-3, 1e-2, 1e-1 (eps matters at 1e-3)
        grad = torch.randn(start.shape, dtype=torch.float64, generator=gradients) * \
            torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64).view(-1, 1, 1)
        pack.grad = grad.clone()
        optimizer.step()
        for k, (p, reference) in enumerate(zip(plain, references)):
            p.grad = grad[k].clone()
            reference.step()
    for k, p in enumerate(plain):
        torch.testing.assert_close(pack[k].detach(), p.detach(), atol=1e-12, rtol=1e-10,
                                   msg=lambda m, k=k: f"{case} member {k}: {m}")


@pytest.mark.parametrize("packed_class, flag", [
    (PackedSGD, "dampening"), (PackedSGD, "maximize"), (PackedAdam, "amsgrad"),
    (PackedAdamW, "amsgrad"), (PackedRMSprop, "centered")])
def test_torch_flags_a_packed_optimizer_does_not_implement_are_refused(packed_class, flag):
    """A flag torch has and the packed step does not follow must not be taken silently."""
    with pytest.raises(TypeError, match=flag):
        packed_class([torch.zeros(2, 3, requires_grad=True)], lr=0.1, **{flag: True})
