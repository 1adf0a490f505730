"""Per-member fp16 loss scaling (nn/loss_scale.py): each member of a pack follows the rule of
torch.amp.GradScaler on its own: scale, unscale, skip a step that overflowed, halve, grow."""

from __future__ import annotations

import pytest
import torch

from nn.loss_scale import PackedGradScaler
from nn.optimizers import OPTIMIZERS
from nn.packed import pack_models, packed_cross_entropy
from packed_cases import build, member_batches, member_configs

BATCH = 16


def _pack_run(cfgs, inits, steps, growth, scaler_kind, first=0):
    """A pack of `cfgs` (members first, first + 1, ... of a larger pack: their seeds and
    batches) trained `steps` steps in fp16 autocast (CPU) with our per-member scaler
    ("packed") or torch's GradScaler ("torch", one scale: for a pack of one):
    (the pack, the scales before each update)."""
    pack = pack_models([build(c, 10 + first + k, dtype=torch.float32)
                        for k, c in enumerate(cfgs)])
    optimizer = OPTIMIZERS[cfgs[0].optimizer](pack.parameters(), cfgs)
    if scaler_kind == "torch":
        scaler = torch.amp.GradScaler("cpu", init_scale=inits[0], growth_interval=growth)
    else:
        scaler = PackedGradScaler(len(cfgs), torch.device("cpu"), growth_interval=growth)
        scaler.scale_values.copy_(torch.tensor(inits))
    scales = []
    for step in range(steps):
        x, y = member_batches(len(cfgs), BATCH, step, torch.float32, offset=first)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            logits = pack(x)
        losses = packed_cross_entropy(logits.float(), y)
        if scaler_kind == "torch":
            scaler.scale(losses.sum()).backward()
            scales.append([scaler.get_scale()])
        else:
            scaler.scale(losses).backward()
            scaler.unscale_(optimizer)
            scales.append(scaler.scale_values.tolist())
        scaler.step(optimizer)
        scaler.update()
    return pack, scales


# member 0 starts at a scale that overflows fp16 gradients for a few steps (each skipped and
# halved), member 1 at torch's default; growth every 3 good steps
INITS, GROWTH, STEPS = (2.0**30, 2.0**16), 3, 14


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("init", INITS)
def test_a_member_alone_scales_skips_and_grows_exactly_as_with_torchs_grad_scaler(optimizer,
                                                                                 init):
    cfgs = member_configs("cnn", optimizer)[:1]
    ours, our_scales = _pack_run(cfgs, [init], STEPS, GROWTH, "packed")
    theirs, their_scales = _pack_run(cfgs, [init], STEPS, GROWTH, "torch")
    assert our_scales == their_scales
    assert min(s[0] for s in our_scales) < init or init == INITS[1]
    for name, value in theirs.member_state_dict(0).items():
        assert torch.equal(ours.member_state_dict(0)[name], value), name


# RMSprop's first steps move each weight by about lr * sign(gradient): the last-bit
# differences of a pack of two against a pack of one (3.5e-6 after one step on an AMD EPYC)
# grow through fp16's rounding to 0.05 by step 14, so its weights are compared after 3
# steps; its scales over all 14. SGD's weights stay within rounding: all 14.
COMPARED_STEPS = {"sgd": STEPS, "rmsprop": 3}


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_each_member_of_a_pack_follows_its_own_scale(optimizer):
    cfgs, growth = member_configs("dense", optimizer)[:2], GROWTH
    pack, scales = _pack_run(cfgs, INITS, STEPS, growth, "packed")
    early, _ = _pack_run(cfgs, INITS, COMPARED_STEPS[optimizer], growth, "packed")
    for k in range(2):
        _, alone_scales = _pack_run(cfgs[k:k + 1], INITS[k:k + 1], STEPS, growth, "torch",
                                    first=k)
        assert [s[k] for s in scales] == [s[0] for s in alone_scales]
        alone, _ = _pack_run(cfgs[k:k + 1], INITS[k:k + 1], COMPARED_STEPS[optimizer], growth,
                             "torch", first=k)
        for name, value in alone.member_state_dict(0).items():
            torch.testing.assert_close(early.member_state_dict(k)[name], value, rtol=1e-3,
                                       atol=1e-4, msg=name)
    assert scales[-1][0] < INITS[0] and scales[-1][1] > INITS[1]  # backed off; grew


def test_a_member_that_overflows_leaves_the_others_steps_alone():
    cfgs = member_configs("dense", "adam")
    pack = pack_models([build(c, 10 + k, dtype=torch.float32) for k, c in enumerate(cfgs)])
    optimizer = OPTIMIZERS["adam"](pack.parameters(), cfgs)
    scaler = PackedGradScaler(3, torch.device("cpu"))
    x, y = member_batches(3, BATCH, 0, torch.float32)
    before = [pack.member_state_dict(k) for k in range(3)]
    optimizer.zero_grad()
    scaler.scale(packed_cross_entropy(pack(x), y)).backward()
    next(pack.parameters()).grad[1].view(-1)[0] = float("inf")  # member 1 overflowed
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
    assert scaler.scale_values.tolist() == [2.0**16, 2.0**15, 2.0**16]
    assert scaler.growth_tracker.tolist() == [1, 0, 1]
    for name, value in before[1].items():  # member 1 exactly as it was
        assert torch.equal(pack.member_state_dict(1)[name], value), name
    assert optimizer.param_groups[0]["step"].tolist() == [1.0, 0.0, 1.0]
    state = optimizer.state_dict_member(1)["state"]
    assert all(torch.count_nonzero(v) == 0 for s in state.values() for v in s.values())
    for k in (0, 2):  # the others stepped
        assert not torch.equal(pack.member_state_dict(k)["fc1.weight"], before[k]["fc1.weight"])


def test_member_state_select_and_a_torch_scaler_checkpoint():
    scaler = PackedGradScaler(3, torch.device("cpu"))
    scaler.scale_values.copy_(torch.tensor([8.0, 16.0, 32.0]))
    scaler.growth_tracker.copy_(torch.tensor([1, 2, 3]))
    assert scaler.state_dict_member(2) == {"scale": 32.0, "growth_tracker": 3}
    chosen = scaler.select([2, 0])
    assert chosen.scale_values.tolist() == [32.0, 8.0]
    assert chosen.growth_tracker.tolist() == [3, 1]
    other = PackedGradScaler(2, torch.device("cpu"))
    other.load_state_dict_member(1, scaler.state_dict_member(1))
    old = torch.amp.GradScaler("cpu", init_scale=4.0).state_dict()  # before per-member scales
    other.load_state_dict_member(0, old)
    assert other.scale_values.tolist() == [4.0, 16.0]
    assert other.growth_tracker.tolist() == [0, 2]
    disabled = PackedGradScaler(2, torch.device("cpu"), enabled=False)
    assert disabled.state_dict_member(0) == {}
    disabled.load_state_dict_member(0, {"scale": 2.0})  # ignored: fp32 or bf16 runs
    losses = torch.tensor([1.0, 2.0])
    assert disabled.scale(losses) == 3.0
