"""Where the report and agent.repeat rank runs or settings by the sweep's metric, an exact
tie decided by the sweep's order is said, with the runs it concerns (the digits set's 144
validation images make equal accuracies common); the window of values near a best is 2
points of an accuracy but, for any other metric (a loss), a share of the gap between the
best run and the median one, whatever the metric's scale or sign, and the text gives the
margin and its rule; a "By ..." table marks a stuck run among a group's best. Real
SQLite stores holding finished runs (no training: the report reads summaries and epochs),
and one small cnn sweep trained here for the figures drawn from checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from agent.report import document
from agent.report.repeat import planned
from agent.report.study import local_study
from agent.sweep.controller import claim
from agent.sweep.store import create_store
from finished_runs import end_every_run

pytestmark = pytest.mark.timeout(300)
SIZES, LRS = [32, 128, 512], [0.01, 0.02, 0.04, 0.08]
# val/acc by (batch_size, lr): batch 32's best two tie at the top (0.95), batch 128's second
# and third tie at the cut of a "By batch_size" table (0.90), and batch 32's lr 0.02 ties
# with batch 128's best at the third place of the training curves (0.93); batch 512 is stuck
# at chance at its three smallest lr values, so its second best is a stuck run
SCORES = {(32, 0.01): 0.80, (32, 0.02): 0.93, (32, 0.04): 0.95, (32, 0.08): 0.95,
          (128, 0.01): 0.60, (128, 0.02): 0.90, (128, 0.04): 0.90, (128, 0.08): 0.93,
          (512, 0.01): 0.11, (512, 0.02): 0.12, (512, 0.04): 0.13, (512, 0.08): 0.85}


def grid(tmp_path, metric: str = "val/acc", goal: str = "maximize", scores=None):
    """A finished batch_size x lr grid on digits, each run's one epoch and summary at its
    score; (store, {(batch_size, lr): run id}, run ids in the sweep's order)."""
    scores = scores or SCORES
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": metric, "goal": goal},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "sinks": {"value": ["console"]},
                             "batch_size": {"values": SIZES}, "lr": {"values": LRS}}}
    store = create_store(tmp_path / "data" / "sweeps" / "ties", "ties", "ties", config)

    def epoch(config: dict) -> dict:
        score = scores[(config["batch_size"], config["lr"])]
        acc = score if metric.endswith("acc") else 0.9
        return {"train/loss": 0.5, "val/loss": 0.5, "val/acc": acc, metric: score}

    ids = {(config["batch_size"], config["lr"]): run_id for run_id, config in end_every_run(
        store, lambda c: [epoch(c)], lambda c: {"test/acc": epoch(c)["val/acc"]}).items()}
    order = [run.id for run in local_study(store).runs]
    return store, ids, order


def first(order: list[str], *ids: str) -> str:
    return min(ids, key=order.index)


def section(text: str, title: str) -> str:
    return text.split(title)[1].split("\n## ")[0]


def test_ties_that_the_sweeps_order_decides_are_said(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store, ids, order = grid(tmp_path)
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    notes = section(text, "## Observations")
    # the best of all runs: batch 32 at lr 0.04 and 0.08, the first in the sweep's order named
    top = first(order, ids[(32, 0.04)], ids[(32, 0.08)])
    top_lr, other_lr = (0.04, 0.08) if top == ids[(32, 0.04)] else (0.08, 0.04)
    assert (f"- all runs: best val/acc 0.9500 at lr={top_lr:g}, batch_size=32 (tied with 1 "
            f"other run: lr={other_lr:g}, batch_size=32; the one named is the first of them "
            "in the sweep's order).") in notes, notes
    # batch 32's best lr, which the exponent is fitted to, is one of two
    (line,) = [line for line in notes.splitlines() if "best lr ~ batch_size^" in line]
    assert (f"32: {top_lr:g} (lr 0.02-0.08 within 0.02) (tied with lr {other_lr:g}: the first "
            "in the sweep's order is the one fitted)") in line, line
    # the training curves: the third place is a tie of batch 32 at lr 0.02 and batch 128 at
    # lr 0.08 (0.93); one is drawn
    third = first(order, ids[(32, 0.02)], ids[(128, 0.08)])
    fourth = ({ids[(32, 0.02)], ids[(128, 0.08)]} - {third}).pop()
    curves = section(text, "## Training curves of the best runs")
    assert (f"Tied at val/acc 0.9300 with the last run drawn ({third}): {fourth}, not drawn; "
            "the runs drawn are the first of them in the sweep's order.") in curves, curves
    # By batch_size: batch 128's second best is one of lr 0.02 and 0.04 (0.90)
    shown = first(order, ids[(128, 0.02)], ids[(128, 0.04)])
    shown_lr, left_lr = (0.02, 0.04) if shown == ids[(128, 0.02)] else (0.04, 0.02)
    table = section(text, "### By batch_size")
    assert (f"Tied at a group's last row: batch_size=128: lr={shown_lr:g} shown, "
            f"lr={left_lr:g} not, all at 0.9000 (tied settings go in the sweep's order of "
            "their first run, as agent.repeat picks them).") in table, table
    rows = [line for line in table.splitlines() if line.startswith("| 128 |")]
    assert [row.split(" | ")[1] for row in rows] == ["lr=0.08", f"lr={shown_lr:g}"], rows
    # agent.repeat picks the same and says which it leaves out
    args, _, configs = planned(["ties"])
    assert args.by == "batch_size"
    assert ids[(128, 0.02) if shown_lr == 0.02 else (128, 0.04)] in dict(configs)
    assert ids[(128, 0.04) if shown_lr == 0.02 else (128, 0.02)] not in dict(configs)
    raw = capsys.readouterr().err
    assert max(map(len, raw.splitlines())) <= 80, raw  # wrapped, read as text below
    err = " ".join(raw.split())
    assert (f"batch_size=128: 2 settings tie at val/acc 0.9000 for the last of its best 2: "
            f"repeating lr={shown_lr:g}, not lr={left_lr:g} (ties go by the sweep's order of "
            "their first run; --top 3 repeats them all)") in err, err
    # a stuck run among a group's best two is marked so in its row
    (stuck,) = [line for line in table.splitlines() if ids[(512, 0.04)] in line]
    assert stuck.endswith(f"{ids[(512, 0.04)]}; stuck at chance |"), stuck
    assert "stuck" not in next(line for line in table.splitlines()
                               if ids[(512, 0.08)] in line)


def test_a_best_run_tied_with_its_own_other_seed_names_the_seeds(tmp_path, monkeypatch):
    """optimizer x lr x seed {0, 1} on digits, both seeds of adam at lr 0.01 at 0.9583: the
    observation read "best val/acc 0.9583 at lr=0.01 (tied with 1 other run: lr=0.01; the
    one named is the first ...)", two names alike for two runs. In a sweep over seed the
    tied runs are named with their seed; a run tied with none keeps its setting alone."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": [0.3, 0.01]}, "seed": {"values": [0, 1]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "seedtie", "seedtie", "s", config)
    scores = {("adam", 0.01): (0.9583, 0.9583), ("adam", 0.3): (0.7, 0.8),
              ("sgd", 0.3): (0.95, 0.92), ("sgd", 0.01): (0.66, 0.67)}
    ids = {}
    for run in claim(store, "host:1", count=8).runs:
        c = run.config
        ids[c["optimizer"], c["lr"], c["seed"]] = run.run_id
        score = scores[c["optimizer"], c["lr"]][c["seed"]]
        epoch = {"train/loss": 0.5, "val/loss": 0.5, "val/acc": score}
        store.record_epoch(run.run_id, "host:1", 1, epoch)
        store.finish(run.run_id, "host:1", "finished",
                     {**epoch, "test/acc": score, "epochs_done": 1})
    order = [run.id for run in local_study(store).runs]
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    notes = section(text, "## Observations")
    top = first(order, ids["adam", 0.01, 0], ids["adam", 0.01, 1])
    seed, other = (0, 1) if top == ids["adam", 0.01, 0] else (1, 0)
    assert (f"- optimizer=adam: best val/acc 0.9583 at lr=0.01, seed={seed} (tied with 1 other "
            f"run: lr=0.01, seed={other}; the one named is the first of them in the sweep's "
            "order).") in notes, notes
    assert "- optimizer=sgd: best val/acc 0.9500 at lr=0.3.\n" in notes, notes

def test_a_loss_near_zero_is_near_its_best_within_a_share_of_the_runs_gap(tmp_path,
                                                                          monkeypatch):
    """val/loss, minimized, its best 0.0100 (batch 32, lr 0.04): 2% of the best was 0.0002,
    so nothing but the best was ever near it. The margin is 2% of the gap between the best
    run and the median one (0.3550): 0.0069, which holds lr 0.02 (0.0160) and not lr 0.08
    (0.0300); the text says the rule and its numbers, in the windows and the batch-size line."""
    monkeypatch.chdir(tmp_path)
    losses = {(32, 0.01): 0.31, (32, 0.02): 0.016, (32, 0.04): 0.010, (32, 0.08): 0.030,
              (128, 0.01): 0.60, (128, 0.02): 0.40, (128, 0.04): 0.20, (128, 0.08): 0.10,
              (512, 0.01): 1.50, (512, 0.02): 1.20, (512, 0.04): 0.90, (512, 0.08): 0.60}
    store, _, _ = grid(tmp_path, "val/loss", "minimize", losses)
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    notes = section(text, "## Observations")
    rule = "0.0069 (2% of the gap between the best run and the median one, 0.34)"
    assert f"- all runs (pooled over batch_size): lr within {rule} of its best (0.0100): " \
        "0.02, 0.04." in notes, notes
    (line,) = [line for line in notes.splitlines() if "best lr ~ batch_size^" in line]
    assert f"32: 0.04 (lr 0.02-0.04 within {rule})," in line, line
    assert f"where other lr values score within {rule} of a batch size's best" in line, line


SHIFTS = [0.0, "best at 0", -0.5, -1000.0, 7.0]  # added to every value: 0, negative, far off


def generated(seed: int, n: int, tied: int = 0) -> np.ndarray:
    """`n` values of a loss-like metric (log-normal: a few good runs, a long worse tail), the
    best of them repeated `tied` times (more than half of them: the median at the best)."""
    values = np.random.default_rng(seed).lognormal(-1.0, 1.0, n)
    return np.concatenate([values, np.full(tied, values.min())])


@pytest.mark.parametrize("seed, n, tied", [(0, 2, 0), (1, 3, 0), (2, 12, 0), (3, 80, 0),
                                           (4, 9, 10)])
@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_the_margin_near_a_best_scales_with_the_runs_whatever_the_metrics_zero(seed, n, tied,
                                                                               goal):
    """For a metric other than an accuracy, which runs are near the best does not depend on
    where the metric's 0 is nor on its unit: shifted (the best at 0, every value negative,
    far from 0) and scaled (1e-4 to 300), the margin moves with the values and the same runs
    stay near the best (2% of the best's own value made it 0 at a best of 0); where the
    median run is at the best
    (half the runs tie there) the worst sets the gap. The text's numbers are the margin's.
    An accuracy keeps its 2 points."""
    from agent.report.discussion import margin_rule, margin_text, near_margin

    base = generated(seed, n, tied)
    base = base if goal == "minimize" else -base  # a maximized metric: the mirror image
    best = base.min() if goal == "minimize" else base.max()
    reference = near_margin("val/loss", list(base), goal)
    near = np.abs(base - best) <= reference
    gap = np.abs(np.median(base) - best) if not tied else np.abs(base - best).max()
    assert reference == pytest.approx(0.02 * gap, rel=1e-12) and reference > 0
    for scale in (1e-4, 1e-2, 1.0, 300.0):
        for shift in SHIFTS:
            values = scale * base + (-scale * best if shift == "best at 0" else shift)
            top = values.min() if goal == "minimize" else values.max()
            margin = near_margin("val/loss", list(values), goal)
            assert margin == pytest.approx(scale * reference, rel=1e-6), (scale, shift)
            assert ((np.abs(values - top) <= margin) == near).all(), (scale, shift)
            text = margin_text("val/loss", list(values), goal)
            which = "median" if not tied else "worst"
            assert text == (f"{margin:.2g} (2% of the gap between the best run and the "
                            f"{which} one, {margin / 0.02:.2g}"
                            + (", the median run being at the best)" if tied else ")")), text
            assert margin_rule("val/loss", list(values), goal) == f"{text} of"
            assert near_margin("val/acc", list(values), goal) == 0.02
    assert margin_text("val/loss", [0.3] * 4, goal) == "0 (every run scores the same)"


# accuracies on digits' 144 validation images: sgd's repeats spread around adam's constant
# 130 of 144, the same mean, though in floats the two means differ in their last bit
REPEATS = {("sgd", 0.1): [128 / 144, 130 / 144, 132 / 144], ("adam", 0.01): [130 / 144] * 3,
           ("sgd", 0.01): [0.80, 0.82, 0.81], ("adam", 0.1): [0.70, 0.75, 0.72]}


def test_settings_tied_at_the_best_mean_over_fresh_seeds_are_named(tmp_path, monkeypatch):
    """The best 2 settings of each optimizer repeated over 3 fresh seeds: sgd at lr 0.1 and
    adam at lr 0.01 both average 130/144 = 0.9028 (np.mean reads 0.9027777777777777 and
    0.9027777777777778). The report named the one whose float was larger as having "the
    best mean"; it names both as tied at it, the two below them in neither, and bolds none."""
    from agent.report import stats
    from agent.report.repeat import repeat_configs

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "sinks": {"value": ["console"]},
                             "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": [0.1, 0.01]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "tied", "tied", "tied", config)

    def finish(store, score) -> None:
        end_every_run(store, lambda c: [{"epoch": 1, "val/acc": score(c), "train/loss": 0.5,
                                         "val/loss": 0.5}],
                      lambda c: {"test/acc": score(c)})

    finish(store, lambda c: np.mean(REPEATS[(c["optimizer"], c["lr"])]))
    configs = repeat_configs(local_study(store), top=2, by="optimizer", seeds=3)
    assert len(configs) == 4
    for n, (_, repeat) in enumerate(configs):
        seeds = repeat["parameters"]["seed"]["values"]
        made = create_store(tmp_path / "data" / "sweeps" / f"rep{n}", f"rep{n}", "r", repeat)
        finish(made, lambda c, seeds=seeds: REPEATS[(c["optimizer"], c["lr"])][
            seeds.index(c["seed"])])
    means = [np.mean(REPEATS[("sgd", 0.1)]), np.mean(REPEATS[("adam", 0.01)])]
    assert means[0] != means[1] and stats.same_mean(*means)  # the premise: a tie, in floats
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    # (the rows in the order of the table's groups: their best settings tie at the mean of
    # the sweep's runs too, so the groups go in the sweep's order, sgd's first)
    for by in ("optimizer", "lr"):
        table = section(text, f"### By {by}").split("\n### ")[0]
        assert ("Nothing is bold: optimizer=sgd, lr=0.1 and optimizer=adam, lr=0.01 tie at "
                "the best mean, 0.9028: neither is better than the other.") in table, table
        assert "has the best mean" not in table and "**" not in table, table


def test_weight_figures_and_grad_cam_say_which_tied_runs_they_draw(tmp_path, monkeypatch):
    """A cnn trained here on digits for one epoch at 4 lr values, each twice: at
    log_interval 5 and 10, which changes what is logged, not what is trained, so the two
    runs of an lr tie exactly. The weight figure draws the best 3 (both lr 0.2 runs and the
    first lr 0.05 one) and the worst 3 (both lr 0.005 runs and the first lr 0.02 one): it
    names the second run of lr 0.05 and of lr 0.02 as tied with B3 and W3 and not drawn, and
    draws the first of a tie among the worst too (it drew the last); Grad-CAM draws the
    first lr 0.2 run and names the second as tied with it."""
    from agent.sweep.agent_loop import run_local_agent

    monkeypatch.chdir(tmp_path)
    lrs = [0.005, 0.02, 0.05, 0.2]
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "cnn"},
                             "channels": {"value": [8, 16]}, "epochs": {"value": 1},
                             "optimizer": {"value": "sgd"}, "sinks": {"value": ["console"]},
                             "log_interval": {"values": [5, 10]}, "lr": {"values": lrs}}}
    store = create_store(tmp_path / "data" / "sweeps" / "twins", "twins", "twins", config)
    assert run_local_agent(store) == 0
    study = local_study(store)
    runs = {lr: [r for r in study.runs if r.config["lr"] == lr] for lr in lrs}  # sweep order
    # the premise: each lr's two runs tie, the four lr values do not
    assert all(len({r.metric("val/acc") for r in pair}) == 1 for pair in runs.values())
    assert len({pair[0].metric("val/acc") for pair in runs.values()}) == 4
    assert [r.config["lr"] for r in study.scored_runs()][::2] == lrs[::-1]
    report = document.build_report(study, tmp_path / "report")
    text = report.path.read_text()
    legends = report.figures["weights_cnn.png"].legends
    drawn = [runs[0.2][0], runs[0.2][1], runs[0.05][0], runs[0.005][0], runs[0.005][1],
             runs[0.02][0]]
    assert legends == ["init: initial weights (seed 0)"] + [
        f"{key}: log_interval={r.config['log_interval']} lr={r.config['lr']:g} "
        f"(val/acc {r.metric('val/acc'):.3f})"
        for key, r in zip(["B1", "B2", "B3", "W1", "W2", "W3"], drawn)], legends
    weights = section(text, "## Weight distributions per layer")
    value = {lr: f"{runs[lr][0].metric('val/acc'):.4f}" for lr in lrs}
    assert (f"`cnn`: tied at val/acc {value[0.05]} with the last best run drawn, B3 "
            f"({runs[0.05][0].id}): {runs[0.05][1].id}, not drawn; tied at val/acc "
            f"{value[0.02]} with the last worst run drawn, W3 ({runs[0.02][0].id}): "
            f"{runs[0.02][1].id}, not drawn; the runs drawn are the first of them in the "
            "sweep's order.") in weights, weights
    gradcam = section(text, "## Grad-CAM of the best convolutional run")
    assert f"Run {runs[0.2][0].id}: " in gradcam, gradcam
    assert (f"Tied with it at val/acc {value[0.2]}: 1 other cnn or resnet run with a "
            f"checkpoint ({runs[0.2][1].id}); the one shown is the first of them in the "
            "sweep's order.") in gradcam, gradcam


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_settings_whose_means_differ_by_rounding_tie_in_the_sweeps_order(tmp_path,
                                                                         monkeypatch, capsys,
                                                                         goal):
    """A sweep over optimizer x lr x seed: sgd's best setting (lr 0.1) is clear, its next
    two tie at 130/144 over the sweep's 3 seeds, one as 128, 130 and 132 of 144 and the
    other as 130 three times, whose float means differ in their last bit. They were ranked
    by that bit, so the "By optimizer" table and agent.repeat took the second of them in
    the sweep's order and named no tie at the cut; they take the first and name the other
    as tied, as for ties that are exact. (val/loss, minimized, takes the same values.)"""
    from agent.report import stats

    monkeypatch.chdir(tmp_path)
    metric = "val/acc" if goal == "maximize" else "val/loss"
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": metric, "goal": goal},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "sinks": {"value": ["console"]},
                             "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": [0.1, 0.03, 0.01]}, "seed": {"values": [0, 1, 2]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "bits", "bits", "bits", config)
    spread, constant = [128 / 144, 130 / 144, 132 / 144], [130 / 144] * 3
    # the first of the tied pair in the sweep's order gets the float mean that ranked it
    # second: the smaller one (...777 < ...778) where the metric is maximized
    first_gets, second_gets = (spread, constant) if goal == "maximize" else (constant, spread)
    clear = 0.95 if goal == "maximize" else 0.5
    adam = {0.1: 0.6, 0.03: 0.55, 0.01: 0.52}
    scores, order = {}, []
    while (work := claim(store, "host:1", count=64)).kind == "run":
        for run in work.runs:
            optimizer, lr, seed = (run.config[k] for k in ("optimizer", "lr", "seed"))
            if (optimizer, lr) not in scores:
                order.append((optimizer, lr))
                scores[(optimizer, lr)] = (
                    [adam[lr]] * 3 if optimizer == "adam" else [clear] * 3 if lr == 0.1
                    else second_gets if ("sgd", 0.03) in scores or ("sgd", 0.01) in scores
                    else first_gets)
            row = {"epoch": 1, "val/acc": 0.9, "train/loss": 0.5, "val/loss": 0.5,
                   metric: scores[(optimizer, lr)][seed]}
            assert store.record_epoch(run.run_id, "host:1", 1, row)
            assert store.finish(run.run_id, "host:1", "finished",
                                {**row, "test/acc": 0.9, "epochs_done": 1})
    first, second = [key for key in order if key in (("sgd", 0.03), ("sgd", 0.01))]
    means = {key: float(np.mean(scores[key])) for key in (first, second)}
    # the premise: equal but for rounding, and the float order against the sweep's
    assert stats.same_mean(means[first], means[second]) and means[first] != means[second]
    assert (means[first] < means[second]) == (goal == "maximize"), means
    study = local_study(store)
    text = document.build_report(study, tmp_path / "report").path.read_text()
    table = section(text, "### By optimizer").split("\n### ")[0]
    rows = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| sgd |")]
    assert rows == ["lr=0.1", f"lr={first[1]:g}"], table
    assert (f"Tied at a group's last row: optimizer=sgd: lr={first[1]:g} shown, "
            f"lr={second[1]:g} not, all at 0.9028 (tied settings go in the sweep's order of "
            "their first run, as agent.repeat picks them).") in table, table
    _, _, configs = planned(["bits", "--top", "2"])
    picked = {(r.config["optimizer"], r.config["lr"]) for r in study.runs
              if r.id in dict(configs)}
    best_adam = [0.1, 0.03] if goal == "maximize" else [0.01, 0.03]
    assert picked == {("sgd", 0.1), first, *(("adam", lr) for lr in best_adam)}, picked
    raw = capsys.readouterr().err
    assert max(map(len, raw.splitlines())) <= 80, raw  # wrapped, read as text below
    err = " ".join(raw.split())
    assert (f"optimizer=sgd: 2 settings tie at {metric} 0.9028 for the last of its best 2: "
            f"repeating lr={first[1]:g}, not lr={second[1]:g} (ties go by the sweep's order "
            "of their first run; --top 3 repeats them all)") in err, err


def test_grad_cam_passes_over_a_run_that_diverged(tmp_path, monkeypatch):
    """A cnn trained here on digits for 6 epochs at lr 0.00001 and 100 (SGD, 3 epochs of
    warm-up): lr 100 diverges (it ends at a training loss of 2e19 > 10 x ln 10, the
    report's rule) at a val/acc of 0.083, above the stuck lr 0.00001 run's 0.056. Grad-CAM
    drew it as "the best convolutional run"; it draws the lr 0.00001 run, as the best-run
    section names it, and says it left a diverged run out. (A run whose loss spiked and came
    back, as lr 1.0's did here, is no divergence, and may well be the best run.)"""
    from agent.report.markdown import diverged_left_out
    from agent.sweep.agent_loop import run_local_agent

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "cnn"},
                             "channels": {"value": [8, 16]}, "epochs": {"value": 6},
                             "optimizer": {"value": "sgd"}, "sinks": {"value": ["console"]},
                             "lr": {"values": [0.00001, 100.0]},
                             "warmup_epochs": {"value": 3.0}}}
    store = create_store(tmp_path / "data" / "sweeps" / "blowup", "blowup", "blowup", config)
    assert run_local_agent(store) == 0
    study = local_study(store)
    from agent.report import stats

    ctx = document.study_context(study, tmp_path / "ctx", stats.GroupRule())
    high, low = ctx.scored  # the premise: the diverged run ranks first
    assert high.config["lr"] == 100.0 and ctx.diverged(high), ctx.verdicts
    assert low.config["lr"] == 0.00001 and not ctx.diverged(low), ctx.verdicts
    text = document.build_report(study, tmp_path / "report").path.read_text()
    assert f"## The best run: {low.id}" in text
    gradcam = section(text, "## Grad-CAM of the best convolutional run")
    assert f"Run {low.id}: " in gradcam and high.id not in gradcam, gradcam
    assert f"{diverged_left_out(1)}." in gradcam, gradcam


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_the_furthest_of_settings_all_stopped_early_ties_by_rounding_in_the_sweeps_order(
        tmp_path, monkeypatch, capsys, goal):
    """Hyperband stopped every run of sgd at epoch 2 of 3: agent.repeat repeats the furthest
    setting, ties by its mean, then the sweep's order. Its two settings tie at 130/144 over
    3 seeds (128, 130, 132 of 144 and 130 three times): the one whose float mean was larger
    in its last bit was taken; the first in the sweep's order is."""
    from agent.report.repeat import passed_cut_short

    monkeypatch.chdir(tmp_path)
    metric = "val/acc" if goal == "maximize" else "val/loss"
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": metric, "goal": goal},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 3}, "optimizer": {"value": "sgd"},
                             "lr": {"values": [0.03, 0.01]}, "seed": {"values": [0, 1, 2]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "cut", "cut", "cut", config)
    spread, constant = [128 / 144, 130 / 144, 132 / 144], [130 / 144] * 3
    # the first lr in the sweep's order gets the float mean that lost: the smaller one
    # (...777 < ...778) where the metric is maximized
    gets = [spread, constant] if goal == "maximize" else [constant, spread]
    assert np.mean(spread) < np.mean(constant)  # the premise: in their last bit
    lrs: list[float] = []
    for run in claim(store, "host:1", count=6).runs:
        lrs += [run.config["lr"]] if run.config["lr"] not in lrs else []
        score = gets[lrs.index(run.config["lr"])][run.config["seed"]]
        assert store.finish(run.run_id, "host:1", "stopped",
                            {metric: score, "test/acc": 0.9, "epochs_done": 2})
    _, lines = passed_cut_short(local_study(store), "optimizer", lambda run: False)
    assert lines == [f"optimizer=sgd: all 6 of its runs were stopped early by the sweep's "
                     f"hyperband: repeating the furthest, lr={lrs[0]:g} (epoch 2 of 3), at its "
                     f"full length; passed over lr={lrs[1]:g}"], lines
