"""The learning-rate schedules (nn/schedules.py): onecycle against torch's own OneCycleLR step
by step, and the three ways a run reads a schedule (lr_multiplier, scheduled_lr for the
console and the logged lr, lr_table for training) agreeing for every schedule and warm-up."""

import pytest
import torch

from nn.schedules import SCHEDULES, lr_multiplier, lr_table, scheduled_lr


def torch_onecycle(max_lrs: list[float], total_steps: int) -> list[list[float]]:
    """The lr of each of torch's steps 0 .. total_steps - 1 under its OneCycleLR with its
    defaults and linear annealing, per param group (one a peak lr): what an optimizer on a
    dummy parameter trains with, read before each step."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in max_lrs]
    optimizer = torch.optim.SGD(groups, lr=max(max_lrs))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lrs, total_steps=total_steps, anneal_strategy="linear",
        three_phase=False, cycle_momentum=False)
    rows = []
    for step in range(total_steps):
        rows.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        if step < total_steps - 1:  # torch refuses, or extrapolates, past its last step
            scheduler.step()
    return rows


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 7, 10, 33, 100, 1000])
def test_onecycle_is_torchs_onecycle_lr_step_by_step(total_steps):
    """Every step's lr of a onecycle run without warm-up is torch's OneCycleLR's (pct_start
    0.3, div_factor 25, final_div_factor 1e4, linear): from max_lr / 25 up to max_lr, then
    down to max_lr / 2.5e5 at the last step, which the rate after it keeps. The schedule was
    a triangle from 0 (the first step trained with lr 0) down to 0."""
    peaks = [0.1, 0.003]
    expected = torch_onecycle(peaks, total_steps)
    table = lr_table(peaks, total_steps, [0, 0], "onecycle")
    for step, row in enumerate(expected):
        assert table[step].tolist() == pytest.approx(row, rel=1e-9, abs=0), step
        assert lr_multiplier(step, total_steps, 0, "onecycle") == pytest.approx(
            row[0] / peaks[0], rel=1e-9, abs=0), step
    assert table[-1].tolist() == pytest.approx([p / 25 / 1e4 for p in peaks], rel=1e-9, abs=0)
    if total_steps >= 4:  # fewer start past the peak, as torch's do
        assert table[0].tolist() == pytest.approx([p / 25 for p in peaks], rel=1e-12)


@pytest.mark.parametrize("warmup_steps", [1, 5, 20])
def test_onecycle_after_a_warm_up_is_torchs_over_the_steps_left(warmup_steps):
    """With warm-up, a linear warm-up to onecycle's starting rate comes first, then onecycle
    runs, as torch's OneCycleLR, over the steps left."""
    total = 60
    table = lr_table([0.2], total, [warmup_steps], "onecycle")[:, 0].tolist()
    # up to onecycle's own start, a 25th of the peak (to the peak, the rate fell 25-fold
    # where onecycle began)
    assert table[:warmup_steps] == pytest.approx(
        [0.2 / 25 * (s + 1) / warmup_steps for s in range(warmup_steps)], rel=1e-12)
    after = [row[0] for row in torch_onecycle([0.2], total - warmup_steps)]
    assert table[warmup_steps:total] == pytest.approx(after, rel=1e-9, abs=0)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("warmup_epochs", [0.0, 0.5, 1.0, 2.5])
def test_the_multiplier_the_console_lr_and_the_training_table_agree(schedule, warmup_epochs):
    """lr_multiplier, scheduled_lr (the console's and the logged lr) and lr_table (what the
    trial trains with) give the same lr at every step, the rate after the last included, for
    a pack whose members warm up for different lengths too (the step schedule's float64
    table held float32 numbers)."""
    steps_per_epoch, epochs, peak = 7, 3, 0.05
    total = steps_per_epoch * epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    table = lr_table([peak, 2 * peak], total, [warmup, 0], schedule)
    alone = lr_table([peak], total, [warmup], schedule)
    for step in range(total + 1):
        lr = scheduled_lr(peak, step, steps_per_epoch, epochs, warmup_epochs, schedule)
        assert lr == pytest.approx(peak * lr_multiplier(step, total, warmup, schedule),
                                   rel=1e-12, abs=1e-15), step
        assert table[step, 0].item() == pytest.approx(lr, rel=1e-12, abs=1e-15), step
        assert alone[step, 0].item() == table[step, 0].item(), step
        assert table[step, 1].item() == pytest.approx(
            2 * peak * lr_multiplier(step, total, 0, schedule), rel=1e-12, abs=1e-15), step
    assert all(0 <= lr <= 2 * peak for lr in table.flatten().tolist())


@pytest.mark.parametrize("left", [0, 1, 2, 3])
def test_a_warm_up_over_all_but_a_few_steps_still_rises_to_onecycles_start(left):
    """A warm-up that leaves onecycle 0 to 3 steps (warmup_epochs as long as epochs, or
    nearly): torch's cycle of so few steps starts past its peak, at lr / 2.5e5 for one step,
    and the warm-up rose to that: the whole run trained at about 0. It rises to lr / 25 as
    every longer warm-up does, and the steps left are still torch's cycle."""
    total, peak = 40, 0.2
    warmup = total - left
    table = lr_table([peak], total, [warmup], "onecycle")[:, 0].tolist()
    assert table[:warmup] == pytest.approx(
        [peak / 25 * (s + 1) / warmup for s in range(warmup)], rel=1e-12)
    for step in range(warmup):
        assert lr_multiplier(step, total, warmup, "onecycle") * peak == pytest.approx(
            table[step], rel=1e-12)
    if left:
        after = [row[0] for row in torch_onecycle([peak], left)]
        assert table[warmup:total] == pytest.approx(after, rel=1e-9, abs=0)
