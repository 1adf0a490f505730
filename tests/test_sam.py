"""Tests for nn/sam.py: SAM/ASAM against hand-computed two-pass steps, plus the training-loop
helpers."""

import copy
import io
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # make `nn` importable however pytest is launched
    sys.path.insert(0, str(ROOT))

from nn.sam import SAM, preserved_batchnorm_stats  # noqa: E402


@pytest.fixture(autouse=True)
def _float64_and_seed():
    # float64 for tight comparisons with the hand computations; restored so other test modules
    # keep their default dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


def _weights(params):
    return [p.detach().clone() for p in params]


def _global_norm(tensors):
    return torch.sqrt(sum((t ** 2).sum() for t in tensors))


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def _backward_closure(loss_fn):
    """A closure for SAM.step: loss, backward, return the loss."""
    def closure():
        loss = loss_fn()
        loss.backward()
        return loss
    return closure


# --- the first step: size and shape of the perturbation -------------------------------------------

@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_sam_perturbation_has_norm_rho(rho):
    model = _mlp()
    params = list(model.parameters())
    model(torch.randn(16, 5)).pow(2).mean().backward()
    sam = SAM(params, torch.optim.SGD, rho=rho, lr=0.1)
    before = _weights(params)
    sam.perturb()
    e = [p.detach() - w for p, w in zip(params, before)]
    assert len(e) == 4 and all(t.abs().sum() > 0 for t in e)  # every tensor moved
    assert abs(_global_norm(e).item() - rho) < 1e-6
    # and it points along the gradient
    g = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(torch.cat([t.flatten() for t in e]), rho * g / g.norm())


@pytest.mark.parametrize("eta", [0.01, 0.1])
def test_asam_perturbation_has_norm_rho_in_scaled_space(eta):
    model = _mlp()
    params = list(model.parameters())
    model(torch.randn(16, 5)).pow(2).mean().backward()
    sam = SAM(params, torch.optim.SGD, rho=0.5, adaptive=True, eta=eta, lr=0.1)
    before = _weights(params)
    sam.perturb()
    scaled_e = [(p.detach() - w) / (w.abs() + eta) for p, w in zip(params, before)]  # T_w^-1 e
    assert abs(_global_norm(scaled_e).item() - 0.5) < 1e-6


def test_zero_or_nonfinite_gradient_does_not_perturb():
    w = torch.nn.Parameter(torch.randn(3))
    sam = SAM([w], torch.optim.SGD, lr=0.1)
    before = w.detach().clone()
    for bad in (torch.zeros(3), torch.tensor([1.0, float("nan"), 0.0]),
                torch.tensor([float("inf"), 0, 0])):
        w.grad = bad
        sam.perturb()
        assert torch.equal(w.detach(), before)
        sam.restore()
        assert torch.equal(w.detach(), before)


def test_restore_returns_exact_original_weights():
    model = _mlp()
    params = list(model.parameters())
    model(torch.randn(16, 5)).pow(2).mean().backward()
    sam = SAM(params, torch.optim.SGD, rho=0.3, adaptive=True, lr=0.1)
    before = _weights(params)
    sam.perturb()
    assert not all(torch.equal(p, w) for p, w in zip(params, before))
    sam.restore()
    assert all(torch.equal(p, w) for p, w in zip(params, before))
    sam.restore()  # a second restore must not move anything
    assert all(torch.equal(p, w) for p, w in zip(params, before))


# --- one full step against a hand-computed two-pass step ------------------------------------------

X = torch.randn(12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _lsq_loss(w, b):
    return ((X @ w + b - Y) ** 2).mean()


def _hand_step(w, b, lr, rho, adaptive=False, eta=0.01):
    g = torch.autograd.grad(_lsq_loss(w, b), [w, b])
    if adaptive:
        t = [w.detach().abs() + eta, b.detach().abs() + eta]
        tg = [ti * gi for ti, gi in zip(t, g)]
        e = [rho * ti * tgi / _global_norm(tg) for ti, tgi in zip(t, tg)]
    else:
        e = [rho * gi / _global_norm(g) for gi in g]
    w_adv = (w.detach() + e[0]).requires_grad_()
    b_adv = (b.detach() + e[1]).requires_grad_()
    g_adv = torch.autograd.grad(_lsq_loss(w_adv, b_adv), [w_adv, b_adv])
    return w.detach() - lr * g_adv[0], b.detach() - lr * g_adv[1]


@pytest.mark.parametrize("adaptive", [False, True])
def test_step_matches_hand_computed_two_pass_step(adaptive):
    lr, rho = 0.1, 0.2 if adaptive else 0.05
    w = torch.nn.Parameter(torch.randn(3))
    b = torch.nn.Parameter(torch.randn(1))
    expected_w, expected_b = _hand_step(w, b, lr, rho, adaptive)
    plain_sgd_w = w.detach() - lr * torch.autograd.grad(_lsq_loss(w, b), w)[0]

    sam = SAM([w, b], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr, momentum=0.0)
    first_loss = _lsq_loss(w, b).item()

    returned = sam.step(_backward_closure(lambda: _lsq_loss(w, b)))
    assert returned.item() == pytest.approx(first_loss)  # first pass, at the unperturbed weights
    torch.testing.assert_close(w.detach(), expected_w)
    torch.testing.assert_close(b.detach(), expected_b)
    # a plain gradient step lands elsewhere, so the comparison above has teeth
    assert not torch.allclose(w.detach(), plain_sgd_w)


def test_step_requires_closure():
    w = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError):
        SAM([w], torch.optim.SGD, lr=0.1).step()


@pytest.mark.parametrize("rho", [0.0, -0.05])
def test_nonpositive_rho_raises(rho):
    with pytest.raises(ValueError):
        SAM([torch.nn.Parameter(torch.randn(3))], torch.optim.SGD, rho=rho, lr=0.1)


# --- batch-norm statistics across the second pass ------------------------------------------------

def _bn_stats(bn):
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


def test_second_pass_leaves_batchnorm_stats_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 1)).train()
    bn = model[1]
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    sam = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    initial = _bn_stats(bn)

    torch.nn.functional.mse_loss(model(x), y).backward()
    after_first = _bn_stats(bn)
    # pass 1 did update them
    assert not any(torch.equal(a, b) for a, b in zip(initial, after_first))

    sam.perturb()
    sam.zero_grad()
    with preserved_batchnorm_stats(model):
        torch.nn.functional.mse_loss(model(x), y).backward()
    assert all(torch.equal(a, b) for a, b in zip(_bn_stats(bn), after_first))

    # the same second pass without the guard would have changed every statistic
    torch.nn.functional.mse_loss(model(x), y).backward()
    assert not any(torch.equal(a, b) for a, b in zip(_bn_stats(bn), after_first))
    sam.descend()


def test_batchnorm_stats_restored_even_if_block_raises():
    bn = torch.nn.BatchNorm1d(3).train()
    before = _bn_stats(bn)
    with pytest.raises(RuntimeError), preserved_batchnorm_stats(bn):
        bn(torch.randn(8, 3))
        raise RuntimeError
    assert all(torch.equal(a, b) for a, b in zip(_bn_stats(bn), before))


# --- checkpoints, schedulers, param groups --------------------------------------------------------

def _classification_data():
    x = torch.randn(64, 5)
    y = (x @ torch.randn(5, 3)).argmax(dim=1)
    return x, y


def _closure(model, x, y):
    return _backward_closure(lambda: torch.nn.functional.cross_entropy(model(x), y))


def test_state_dict_round_trip_keeps_base_momentum():
    x, y = _classification_data()
    model = _mlp()
    sam = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    for _ in range(2):
        sam.step(_closure(model, x, y))
    buffer = io.BytesIO()  # through serialization, as a real checkpoint would
    torch.save(sam.state_dict(), buffer)
    model_resumed, model_fresh = copy.deepcopy(model), copy.deepcopy(model)

    sam_resumed = SAM(model_resumed.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    buffer.seek(0)
    sam_resumed.load_state_dict(torch.load(buffer))
    sam_fresh = SAM(model_fresh.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)

    for m, opt in ((model, sam), (model_resumed, sam_resumed), (model_fresh, sam_fresh)):
        opt.step(_closure(m, x, y))
    for p, q in zip(model.parameters(), model_resumed.parameters()):
        assert torch.equal(p, q)
    # without the momentum buffers the step differs, so the equality above is meaningful
    assert not all(torch.allclose(p, q)
                   for p, q in zip(model.parameters(), model_fresh.parameters()))
    # groups are still shared after loading
    assert sam_resumed.param_groups is sam_resumed.base_optimizer.param_groups


def test_lr_scheduler_on_sam_reaches_base_optimizer():
    w = torch.nn.Parameter(torch.randn(3))
    sam = SAM([w], torch.optim.SGD, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(sam, step_size=1, gamma=0.5)
    sam.step(_backward_closure(lambda: w.pow(2).sum()))
    sched.step()
    assert sam.base_optimizer.param_groups[0]["lr"] == 0.5


def test_param_group_added_later_gets_base_defaults():
    w1, w2 = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    sam = SAM([w1], torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    sam.add_param_group({"params": [w2], "lr": 0.01})
    before = w2.detach().clone()
    sam.step(_backward_closure(lambda: w1.pow(2).sum() + w2.pow(2).sum()))
    assert len(sam.base_optimizer.param_groups) == 2
    assert not torch.equal(w2.detach(), before)


# --- it trains ------------------------------------------------------------------------------------

@pytest.mark.parametrize("base, kwargs", [(torch.optim.SGD, dict(lr=0.5, momentum=0.9)),
                                          (torch.optim.Adam, dict(lr=0.01))])
@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_lowers_the_loss(base, kwargs, adaptive):
    x, y = _classification_data()
    model = _mlp()
    sam = SAM(model.parameters(), base, rho=0.5 if adaptive else 0.05, adaptive=adaptive, **kwargs)
    with torch.no_grad():
        start = torch.nn.functional.cross_entropy(model(x), y).item()
    for _ in range(50):
        sam.step(_closure(model, x, y))
    with torch.no_grad():
        end = torch.nn.functional.cross_entropy(model(x), y).item()
    assert end < 0.5 * start
