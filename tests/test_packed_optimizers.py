"""Packed optimizers (nn/optimizers.py) and SAM around them (nn/sam.py): each member of a pack,
trained on its own batches with its own hyper-parameters, ends where its plain model trained
alone with torch.optim (or our SAM around torch.optim) ends; checkpoints and select keep it so."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from nn.optimizers import OPTIMIZERS, PackedOptimizer, plain_optimizer
from nn.packed import pack_models, packed_cross_entropy
from nn.sam import SAM, preserved_batchnorm_stats
from packed_cases import MODEL_CASES, OPTIMIZER_CASES, build, member_batches, member_configs

BATCH = 16


def _warmup_lr(cfg, k: int, step: int) -> float:
    # members warm up over 1, 2, 3 steps: the lr differs per member and changes every step
    return cfg.lr * min(1.0, (step + 1) / (k + 1))


def _step(model, optimizer, loss) -> None:
    """One training step of `model` (a pack or a plain model) on loss(): SAM's two passes
    (batch-norm statistics kept from the first), or the optimizer's step."""
    optimizer.zero_grad()
    loss().backward()
    if isinstance(optimizer, SAM):
        optimizer.perturb()
        optimizer.zero_grad()
        with preserved_batchnorm_stats(model):
            loss().backward()
        optimizer.descend()
    else:
        optimizer.step()


def _pack_step(pack, optimizer, x, y) -> None:
    _step(pack, optimizer, lambda: packed_cross_entropy(pack(x), y).sum())


def _train_pack(pack, optimizer, cfgs, steps, first_step=0, offset=0, dtype=torch.float64,
                member_index=None):
    """`steps` steps of the pack; with `member_index`, position j trains on the batches and
    warm-up of member member_index[j] of the original pack."""
    index = list(range(len(cfgs))) if member_index is None else member_index
    for step in range(first_step, first_step + steps):
        optimizer.set_lr([_warmup_lr(c, k, step) for c, k in zip(cfgs, index)])
        x, y = member_batches(max(index) + 1, BATCH, step, dtype, offset)
        x, y = x[:, index], y[:, index]
        _pack_step(pack, optimizer, x, y)


def _train_plain(model, optimizer, cfg, k, members, steps, first_step=0, offset=0,
                 dtype=torch.float64):
    for step in range(first_step, first_step + steps):
        for group in optimizer.param_groups:
            group["lr"] = _warmup_lr(cfg, k, step)
        x, y = member_batches(members, BATCH, step, dtype, offset)
        x, y = x[:, k], y[:, k]
        _step(model, optimizer, lambda x=x, y=y: F.cross_entropy(model(x), y))


def _assert_member_equals(pack, k, model, **tolerance):
    expected = model.state_dict()
    got = pack.member_state_dict(k)
    assert set(got) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, msg=f"member {k}: {name}", **tolerance)


def _pack_and_references(model_kind, optimizer_case, dtype=torch.float64):
    cfgs = member_configs(model_kind, optimizer_case)
    plain = [build(c, seed=10 + k, dtype=dtype) for k, c in enumerate(cfgs)]
    pack = pack_models(plain)
    references = [build(c, seed=10 + k, dtype=dtype) for k, c in enumerate(cfgs)]
    optimizer = OPTIMIZERS[cfgs[0].optimizer](pack.parameters(), cfgs)
    return cfgs, pack, optimizer, references


def test_every_optimizer_has_a_case():
    names = {c[0]["optimizer"] for c in OPTIMIZER_CASES.values()}
    assert names == set(OPTIMIZERS)
    assert {c[0].get("sam_base") for c in OPTIMIZER_CASES.values()} - {None} == \
        set(OPTIMIZERS) - {"sam"}


# --- the contract: a member trains as its plain model trains alone -------------------------------

@pytest.mark.parametrize("optimizer_case", sorted(OPTIMIZER_CASES))
@pytest.mark.parametrize("model_kind", sorted(MODEL_CASES))
def test_member_trains_as_its_plain_model_alone(model_kind, optimizer_case):
    cfgs, pack, optimizer, references = _pack_and_references(model_kind, optimizer_case)
    before = [pack.member_state_dict(k) for k in range(len(cfgs))]
    _train_pack(pack, optimizer, cfgs, steps=3)
    for k, (cfg, model) in enumerate(zip(cfgs, references)):
        _train_plain(model, plain_optimizer(model.parameters(), cfg), cfg, k, len(cfgs), 3)
        _assert_member_equals(pack, k, model, rtol=1e-7, atol=1e-9)
        # the weights moved, so the equality says something about the update
        assert not torch.allclose(pack.member_state_dict(k)["fc1.weight" if model_kind == "dense"
                                                          else "head.weight"],
                                  before[k]["fc1.weight" if model_kind == "dense"
                                            else "head.weight"])


@pytest.mark.parametrize("optimizer_case", ["sgd", "adam", "sam_adamw"])
def test_member_trains_as_its_plain_model_in_float32(optimizer_case):
    cfgs, pack, optimizer, references = _pack_and_references("cnn", optimizer_case,
                                                             torch.float32)
    _train_pack(pack, optimizer, cfgs, steps=3, dtype=torch.float32)
    for k, (cfg, model) in enumerate(zip(cfgs, references)):
        _train_plain(model, plain_optimizer(model.parameters(), cfg), cfg, k, len(cfgs), 3,
                     dtype=torch.float32)
        _assert_member_equals(pack, k, model, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer_case", ["sgd", "adam", "rmsprop", "sam_sgd"])
def test_nan_in_one_member_leaves_the_others_alone(optimizer_case):
    cfgs, pack, optimizer, references = _pack_and_references("cnn", optimizer_case)
    with torch.no_grad():
        pack.conv1.weight[1].fill_(float("nan"))
    _train_pack(pack, optimizer, cfgs, steps=2)
    for k in (0, 2):
        model = references[k]
        _train_plain(model, plain_optimizer(model.parameters(), cfgs[k]), cfgs[k], k,
                     len(cfgs), 2)
        _assert_member_equals(pack, k, model, rtol=1e-7, atol=1e-9)
    assert not torch.isfinite(pack.member_state_dict(1)["head.weight"]).all()


# --- checkpoints and select ----------------------------------------------------------------------

def _through_bytes(obj):
    buffer = io.BytesIO()  # through serialization, as a real checkpoint would
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("optimizer_case", sorted(OPTIMIZER_CASES))
def test_member_checkpoint_resumes_in_another_pack(optimizer_case):
    cfgs, pack, optimizer, _ = _pack_and_references("cnn", optimizer_case)
    _train_pack(pack, optimizer, cfgs, steps=2)
    # member 0 has momentum (nesterov for sgd): its optimizer state shapes the next steps
    model_state = _through_bytes(pack.member_state_dict(0))
    optimizer_state = _through_bytes(optimizer.state_dict_member(0))
    _train_pack(pack, optimizer, cfgs, steps=2, first_step=2)  # the original goes on

    # member 0 resumes at position 1 of a new pack of 2 whose members start fresh, with
    # member 2's hyper-parameters in its slot until the checkpoint is loaded
    other = [cfgs[2], cfgs[2]]
    resumed = pack_models([build(c, seed=50 + k) for k, c in enumerate(other)])
    resumed_optimizer = OPTIMIZERS[cfgs[0].optimizer](resumed.parameters(), other)
    resumed.load_member_state_dict(1, model_state)
    resumed_optimizer.load_state_dict_member(1, optimizer_state)
    _train_pack_shifted(resumed, resumed_optimizer, [cfgs[2], cfgs[0]], member_index=[2, 0],
                        first_step=2, steps=2)
    for name, value in pack.member_state_dict(0).items():
        torch.testing.assert_close(resumed.member_state_dict(1)[name], value, rtol=1e-9,
                                   atol=1e-12, msg=name)


def _train_pack_shifted(pack, optimizer, cfgs, member_index, first_step, steps):
    _train_pack(pack, optimizer, cfgs, steps, first_step, member_index=member_index)


@pytest.mark.parametrize("optimizer_case", ["sgd", "adam", "rmsprop", "sam_adam"])
def test_member_checkpoint_without_optimizer_state_differs(optimizer_case):
    # the resume test above has teeth: the optimizer state changes the next steps
    cfgs, pack, optimizer, _ = _pack_and_references("cnn", optimizer_case)
    _train_pack(pack, optimizer, cfgs, steps=2)
    model_state = pack.member_state_dict(0)
    _train_pack(pack, optimizer, cfgs, steps=1, first_step=2)
    fresh = pack_models([build(cfgs[0], seed=3)])
    fresh_optimizer = OPTIMIZERS[cfgs[0].optimizer](fresh.parameters(), [cfgs[0]])
    fresh.load_member_state_dict(0, model_state)
    _train_pack_shifted(fresh, fresh_optimizer, [cfgs[0]], [0], first_step=2, steps=1)
    assert not torch.allclose(fresh.member_state_dict(0)["head.weight"],
                              pack.member_state_dict(0)["head.weight"])


@pytest.mark.parametrize("optimizer_case", sorted(OPTIMIZER_CASES))
def test_select_keeps_members_exactly(optimizer_case):
    cfgs, pack, optimizer, _ = _pack_and_references("cnn", optimizer_case)
    _train_pack(pack, optimizer, cfgs, steps=2)
    smaller = pack.select([2, 0])
    smaller_optimizer = optimizer.select([2, 0], smaller.parameters())
    assert smaller.members == smaller_optimizer.members == 2
    _train_pack(pack, optimizer, cfgs, steps=2, first_step=2)
    _train_pack_shifted(smaller, smaller_optimizer, [cfgs[2], cfgs[0]], [2, 0],
                        first_step=2, steps=2)
    for new, old in ((0, 2), (1, 0)):
        for name, value in pack.member_state_dict(old).items():
            torch.testing.assert_close(smaller.member_state_dict(new)[name], value,
                                       rtol=1e-9, atol=1e-12, msg=name)


def test_whole_pack_state_dict_round_trip():
    cfgs, pack, optimizer, _ = _pack_and_references("dense", "adam")
    _train_pack(pack, optimizer, cfgs, steps=2)
    saved_model, saved = _through_bytes(pack.state_dict()), _through_bytes(optimizer.state_dict())
    twin_cfgs, twin, twin_optimizer, _ = _pack_and_references("dense", "adam")
    twin.load_state_dict(saved_model)
    twin_optimizer.load_state_dict(saved)
    _train_pack(pack, optimizer, cfgs, steps=1, first_step=2)
    _train_pack(twin, twin_optimizer, twin_cfgs, steps=1, first_step=2)
    for (name, a), b in zip(pack.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


# --- the optimizer's own rules -------------------------------------------------------------------

def test_hyper_parameters_are_member_tensors_and_lr_is_settable():
    cfgs, _, optimizer, _ = _pack_and_references("dense", "sgd")
    group = optimizer.param_groups[0]
    assert group["lr"].shape == group["momentum"].shape == (3,)
    assert group["nesterov"].dtype == torch.bool
    assert group["nesterov"].tolist() == [c.nesterov for c in cfgs]
    optimizer.set_lr(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert group["lr"].tolist() == [1.0, 2.0, 3.0]
    optimizer.set_lr([0.5, 0.25, 0.125])
    assert group["lr"].tolist() == [0.5, 0.25, 0.125]
    with pytest.raises(ValueError):
        optimizer.set_lr([0.1, 0.2])


def test_plain_parameters_are_refused():
    with pytest.raises(ValueError, match="member dimension first"):
        OPTIMIZERS["sgd"]([torch.nn.Parameter(torch.randn(3, 4)),
                           torch.nn.Parameter(torch.randn(5))], member_configs("dense", "sgd"))


def test_members_of_one_sam_pack_share_their_base():
    cfgs = member_configs("dense", "sam_sgd")
    cfgs[1] = member_configs("dense", "sam_adam")[1]
    pack = pack_models([build(c, seed=k) for k, c in enumerate(cfgs)])
    with pytest.raises(ValueError, match="sam_base"):
        OPTIMIZERS["sam"](pack.parameters(), cfgs)


def test_packed_sam_perturbs_each_member_by_its_own_radius():
    cfgs, pack, optimizer, _ = _pack_and_references("cnn", "sam_sgd")
    x, y = member_batches(3, BATCH, 0)
    packed_cross_entropy(pack(x), y).sum().backward()
    with torch.no_grad():  # member 2 has no ascent direction: it must stay put
        for p in pack.parameters():
            p.grad[2] = 0
    params = list(pack.parameters())
    before = [p.detach().clone() for p in params]
    optimizer.perturb()
    moved = [p.detach() - w for p, w in zip(params, before)]
    eta = optimizer.param_groups[0]["eta"]
    for k, cfg in enumerate(cfgs):
        if k == 2:
            assert all(torch.equal(e[k], torch.zeros_like(e[k])) for e in moved)
            continue
        # ASAM measures the step in the T^-1 scaled space (Kwon et al., eq. 7)
        steps = [e[k] / (w[k].abs() + eta) if cfg.adaptive else e[k]
                 for e, w in zip(moved, before)]
        length = torch.sqrt(sum(s.square().sum() for s in steps))
        assert length.item() == pytest.approx(cfg.rho, rel=1e-9)
    optimizer.restore()
    assert all(torch.equal(p, w) for p, w in zip(params, before))


def test_every_packed_optimizer_derives_from_the_base():
    pack = pack_models([build(member_configs("dense", "sgd")[0], seed=0)])
    for name, cfgs in OPTIMIZER_CASES.items():
        optimizer = OPTIMIZERS[cfgs[0]["optimizer"]](pack.parameters(),
                                                     member_configs("dense", name)[:1])
        base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
        assert isinstance(base, PackedOptimizer), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs exist on CUDA only")
@pytest.mark.parametrize("optimizer_case", sorted(OPTIMIZER_CASES))
def test_training_steps_never_wait_for_the_gpu(optimizer_case):
    cfgs = member_configs("cnn", optimizer_case, dropout=0.1)
    pack = pack_models([build(c, seed=k, dtype=torch.float32) for k, c in enumerate(cfgs)])
    pack = pack.cuda()
    pack.set_generators([torch.Generator("cuda").manual_seed(k) for k in range(3)])
    optimizer = OPTIMIZERS[cfgs[0].optimizer](pack.parameters(), cfgs)
    x, y = member_batches(3, BATCH, 0, torch.float32)
    x, y = x.cuda(), y.cuda()
    peak = optimizer.param_groups[0]["lr"]
    schedule = torch.linspace(0.1, 1.0, 5, device="cuda", dtype=peak.dtype).view(-1, 1) * peak
    host_schedule = schedule.tolist()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(5):  # the lr from the device and from the host, in turn
            optimizer.set_lr(schedule[step] if step % 2 else host_schedule[step])
            _pack_step(pack, optimizer, x, y)
            pack.weight_norms(), pack.grad_norms()
    finally:
        torch.cuda.set_sync_debug_mode("default")
