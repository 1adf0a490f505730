"""The report of a val/loss sweep on digits where the largest learning rates diverge:
optimizer {sgd, adam} x dropout {0, 0.3} x lr {0.001 .. 100}, dense net, 3 epochs, run with
./run_sweep.sh, once with hyperband and once without. A diverged run's last value means
nothing (the heat map writes "div" for it): it is no best setting in a "By ..." table and no
point of the sensitivity plot's means; the sentences read the metric by the sweep's goal and
say what they pool over; every "±" says what interval it is."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from agent.report import document, stats
from agent.report.study import load_study
from conftest import launch_sweep

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LRS = [0.001, 0.01, 0.1, 1.0, 100.0]
SWEEP = {"program": "agent/train.py",
         "command": ["${env}", "python", "-m", "agent.train", "${args}"],
         "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
         "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                        "hidden": {"value": 16}, "epochs": {"value": 3},
                        "optimizer": {"values": ["sgd", "adam"]},
                        "dropout": {"values": [0.0, 0.3]}, "lr": {"values": LRS}}}
HYPERBAND = {"type": "hyperband", "min_iter": 1, "eta": 2}


def run_sweep(work, name: str, config: dict) -> dict:
    """The sweep through ./run_sweep.sh, then its report and context built here."""
    sweep_id = launch_sweep(work, name, config)
    study = load_study(str(work / "data" / "sweeps" / sweep_id))
    report = document.build_report(study, work / "reports" / sweep_id)
    ctx = document.study_context(study, work / "ctx" / sweep_id, stats.GroupRule())
    return {"study": study, "report": report, "text": report.path.read_text(), "ctx": ctx}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    work = tmp_path_factory.mktemp("diverged")
    return {"hyperband": run_sweep(work, "hb", {**SWEEP, "early_terminate": HYPERBAND}),
            "plain": run_sweep(work, "plain", SWEEP)}


def diverged_ids(ctx) -> set[str]:
    return {r.id for r in ctx.scored if ctx.group_of(r) == stats.DIVERGED}


def section(text: str, title: str) -> str:
    return text.split(title)[1].split("\n#")[0]


def test_every_run_at_lr_100_diverged(sweeps):
    """The premise, from the store itself: each lr 100 run ended with a loss above 10 x ln 10
    or went non-finite (the report's rule), in both sweeps. (At lr 30 most runs spiked past
    it and came back near chance: stuck, not diverged.)"""
    for sweep in sweeps.values():
        at_100 = [r for r in sweep["study"].runs if r.config["lr"] == 100.0]
        assert len(at_100) == 4
        for run in at_100:
            last = [run.history[-1][key] for key in ("train/loss", "val/loss")] \
                if run.history else []
            assert run.summary.get("diverged") or not all(map(math.isfinite, last)) \
                or max(last) > 10 * math.log(10), run.history
        assert {r.id for r in at_100} <= diverged_ids(sweep["ctx"])


@pytest.mark.parametrize("kind", ["hyperband", "plain"])
def test_a_diverged_run_is_no_best_setting_in_the_by_tables(sweeps, kind):
    """lr 100 diverged in every run: the "By lr" table gives it no row (it listed a loss of
    24 as the best at lr 30, when that diverged), and every table says how many diverged
    runs it left out."""
    sweep = sweeps[kind]
    text, diverged = sweep["text"], diverged_ids(sweep["ctx"])
    count = len(diverged)
    for by in ("optimizer", "dropout", "lr"):
        table = section(text, f"### By {by}\n")
        rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
        assert rows, table
        assert not any(run_id in row for row in rows for run_id in diverged), table
        assert (f"Left out: {count} runs that diverged (a diverged run's last value means "
                "nothing: \"div\" in the heat map)") in table, table
    by_lr = section(text, "### By lr\n")
    assert not [row for row in by_lr.splitlines() if row.startswith("| 100 |")]
    assert "every run at lr=100 diverged: no row" in by_lr, by_lr


@pytest.mark.parametrize("kind", ["hyperband", "plain"])
def test_the_sensitivity_means_leave_diverged_runs_out(sweeps, kind):
    """The lr panel's means are those of the runs that did not diverge (the diverged
    losses of 24 to 100 made every other mean a flat line near 0), lr 100 is marked "div"
    for each optimizer, and the text says what was left out."""
    sweep = sweeps[kind]
    ctx, text = sweep["ctx"], sweep["text"]
    kept = [r for r in ctx.scored if ctx.group_of(r) != stats.DIVERGED]
    drawn = sweep["report"].figures["marginals.png"]
    (lr_panel,) = [ax for ax in drawn.axes if ax.xlabel == "lr"]
    for optimizer in ("sgd", "adam"):
        (line,) = [line for line in lr_panel.lines if line[0] == f"optimizer={optimizer}"]
        mine = [r for r in kept if r.config["optimizer"] == optimizer]
        levels = sorted({r.config["lr"] for r in mine})
        assert list(line[1]) == levels
        assert list(line[2]) == pytest.approx(
            [np.mean([r.metric("val/loss") for r in mine if r.config["lr"] == lr])
             for lr in levels])
    assert 100.0 not in [x for line in lr_panel.lines for x in line[1]]
    # "div" where every run of an optimizer at that lr diverged: lr 100 for both, and more
    every = sum(1 for optimizer in ("sgd", "adam") for lr in LRS
                if (runs := [r for r in ctx.scored if r.config["optimizer"] == optimizer
                             and r.config["lr"] == lr])
                and all(ctx.group_of(r) == stats.DIVERGED for r in runs))
    assert every >= 2 and lr_panel.texts.count("div") == every
    sensitivity = section(text, "## Sensitivity to each parameter\n")
    assert (f"Left out: {len(ctx.scored) - len(kept)} runs that diverged (a diverged run's "
            "last value means nothing: \"div\" in the heat map)") in sensitivity
    assert "\"div\" marks a value at which every run of a line diverged" in sensitivity
    assert "diverged runs left out" in drawn.suptitle


def test_a_minimized_metric_is_read_by_its_goal_in_every_sentence(sweeps):
    """val/loss: a run hyperband cut short scores higher than it would have, not lower;
    a correlation's caveat and the heat map's cell means speak of better, not higher."""
    text = sweeps["hyperband"]["text"]
    assert "scores lower than it would have" not in text
    assert "(a cut-short run scores higher than it would have; val/loss is minimized, so " \
        "higher is worse)" in section(text, "## Sensitivity to each parameter\n")
    for sweep in sweeps.values():
        assert "\"higher is better\"" not in sweep["text"]
        assert "peaks at" not in sweep["text"]


@pytest.mark.parametrize("kind", ["hyperband", "plain"])
def test_the_paired_effect_says_what_its_interval_is(sweeps, kind):
    """dropout 0 -> 0.3 over the paired settings: its "±" is the half-width of a 95%
    Student-t interval over the pairs' differences, and says so."""
    text = sweeps[kind]["text"]
    (line,) = [line for line in text.splitlines() if "paired settings" in line]
    assert re.search(r"on average over \d+ paired settings of the converged runs "
                     r"\(± [\d.]+: half-width of the 95% Student-t interval of that mean\)\.$",
                     line), line


def test_a_bend_says_that_it_pools_over_the_other_parameters(sweeps):
    """Without hyperband, each optimizer's best run lies inside the lr range (lr 100
    diverged): the sentence names the best run's dropout and says it pools over dropout,
    not that the optimizer peaks there at every dropout."""
    ctx, text = sweeps["plain"]["ctx"], sweeps["plain"]["text"]
    (line,) = [line for line in text.splitlines() if line.startswith("- Pearson r(")]
    claims = re.findall(r"optimizer=(\w+) is best at lr=([\d.]+) \(its best run pooled over "
                        r"dropout, which has dropout=([\d.]+)\)", line)
    assert claims, line
    for optimizer, lr, dropout in claims:
        best = next(r for r in ctx.scored if r.config["optimizer"] == optimizer)
        assert (float(lr), float(dropout)) == (best.config["lr"], best.config["dropout"])
    windows = [line for line in text.splitlines() if "lr within" in line]
    assert windows and all("(pooled over dropout)" in line for line in windows), windows


def test_the_importance_and_the_correlation_leave_diverged_runs_out(sweeps):
    """The importance table's r and the Pearson sentence are over the runs that did not
    diverge, as the tables and the sensitivity plot: with the lr 100 losses of 30 and more in,
    r(log10 lr, val/loss) was dominated by them (positive, though the loss falls with lr
    up to where runs diverge)."""
    ctx, text = sweeps["plain"]["ctx"], sweeps["plain"]["text"]
    kept = [r for r in ctx.scored if ctx.group_of(r) != stats.DIVERGED]
    left_out = len(ctx.scored) - len(kept)
    assert left_out >= 4
    r = stats.correlation(np.log10([run.config["lr"] for run in kept]),
                          np.asarray([run.metric("val/loss") for run in kept]))
    importance = section(text, "## Hyper-parameter importance\n")
    assert f"Left out: {left_out} runs that diverged" in importance
    (row,) = [line for line in importance.splitlines() if line.startswith("| lr |")]
    assert float(row.split("|")[3]) == pytest.approx(r, abs=1e-3)
    (line,) = [line for line in text.splitlines() if line.startswith("- Pearson r(")]
    assert line.startswith(f"- Pearson r(log10 lr, val/loss) over all runs less the "
                           f"{left_out} that diverged is {r:+.2f}"), line


def test_a_heat_map_cell_leaves_its_diverged_runs_out(tmp_path):
    """A cell pools the runs that differ in no axis (here lr, the third numeric parameter):
    where lr 60 diverged and lr 1 did not, the cell is the mean of the lr 1 run alone and
    says "1 div" (a loss of 24 or more was averaged in, a colour scale set by it), and
    where both diverged it is "div"."""
    sweep = run_sweep(tmp_path, "pooled", {
        **SWEEP, "parameters": {**SWEEP["parameters"], "optimizer": {"value": "sgd"},
                                "dropout": {"values": [0.0, 0.15, 0.3]},
                                "hidden": {"values": [16, 24, 32]},
                                "lr": {"values": [1.0, 60.0]}}})
    ctx = sweep["ctx"]
    drawn = sweep["report"].figures["grid_heatmap.png"]
    (ax,) = [ax for ax in drawn.axes if ax.images]
    cells = np.ma.filled(ax.images[0].astype(float), np.nan)
    rows, cols = ax.ylabel, ax.xlabel
    assert {rows, cols} == {"dropout", "hidden"}
    levels = {name: sorted({r.config[name] for r in ctx.study.runs}) for name in (rows, cols)}
    partly = 0
    for i, row in enumerate(levels[rows]):
        for j, col in enumerate(levels[cols]):
            cell = [r for r in ctx.scored if r.config[rows] == row and r.config[cols] == col]
            kept = [r.metric("val/loss") for r in cell if ctx.group_of(r) != stats.DIVERGED]
            if kept:
                assert cells[i, j] == pytest.approx(np.mean(kept))
            else:
                assert np.isnan(cells[i, j])
            partly += 0 < len(kept) < len(cell)
    assert partly >= 1
    assert sum(text.endswith("\n1 div") for text in ax.texts) == partly
    assert "A cell where only some did is the mean of the others" in sweep["text"]


def test_a_sweep_whose_every_run_diverged_names_no_best_run(tmp_path):
    """adam at lr 30 and 60 on digits: every run ends with its loss far above ln 10
    (180 to 16,500 here) and diverges (checked from the report's own
    rule). No section names a best run or a best setting, the heat map says no cell has a
    value, and no weight figure is drawn from garbage weights."""
    config = {**SWEEP, "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {**SWEEP["parameters"], "epochs": {"value": 2},
                             "optimizer": {"value": "adam"},
                             "lr": {"values": [30.0, 60.0]}}}
    swept = run_sweep(tmp_path, "alldiv", config)
    ctx, text = swept["ctx"], swept["text"]
    assert ctx.scored and diverged_ids(ctx) == {r.id for r in ctx.scored}  # the premise
    assert "## The best run\n" in text  # no run id in its title
    best = section(text, "## The best run")
    assert "None: every run with a value of val/acc diverged (4)" in best, best
    assert not any(r.id in best for r in ctx.scored)
    observations = section(text, "## Observations")
    assert "every run (4) diverged: no setting is best" in observations, observations
    assert "best val/acc" not in observations and "within 0.02" not in observations
    assert "No cell has a value" in section(text, "## The whole grid")
    assert "every run with a value of val/acc diverged" in section(
        text, "## Weight distributions per layer")
    assert not list((tmp_path / "reports").glob("*/weights_*.png"))


@pytest.mark.parametrize("sinks", [["tensorboard"], []], ids=["steps", "epochs"])
def test_a_run_non_finite_in_its_first_epoch_is_a_cross_where_it_diverged(tmp_path,
                                                                           monkeypatch, sinks):
    """sgd without momentum at lr 30 and 100 on digits goes non-finite within its first
    epoch (at steps 8 and 9 of 45), after the one step it logged (log_interval 20): the
    diverged runs' figure drew that step's loss as a lone dot at step 1 and no x, where
    every other run whose loss went non-finite has one. Each is an x on the top edge at
    the step its summary gives (the trainer stops it there: a CPU checks every step);
    drawn by epoch (no step logged: no TensorBoard), at the end of the epoch it did not
    finish. Read from the figure's data; the sweep through ./run_sweep.sh."""
    from agent.report.curves import loss_curve

    monkeypatch.chdir(tmp_path)  # the report reads ./data/logs, as from the sweep's folder
    sweep = run_sweep(tmp_path, "first", {**SWEEP, "parameters": {
        **SWEEP["parameters"], "hidden": {"value": 512}, "batch_size": {"value": 32},
        "epochs": {"value": 2}, "optimizer": {"value": "sgd"}, "momentum": {"value": 0.0},
        "dropout": {"value": 0.0}, "sinks": {"value": sinks}, "lr": {"values": [0.05, 30.0,
                                                                             100.0]}}})
    gone = [r for r in sweep["study"].runs if r.summary.get("diverged")]
    assert len(gone) == 2 and all(r.summary["epochs_done"] == 0 for r in gone)
    for run in gone:  # the premise: no logged point holds the non-finite loss
        curve = loss_curve(run)
        assert all(map(math.isfinite, curve.losses)), curve
        assert curve.steps == ([1] if sinks else [])
    drawn = sweep["report"].figures["loss_diverged.png"]
    (panel,) = [ax for ax in drawn.axes if ax.title]
    crosses = sorted((list(x), list(y)) for (_, x, y), marker
                     in zip(panel.lines, panel.markers) if marker == "x")
    at = sorted([r.summary["global_step"]] if sinks else [1] for r in gone)
    assert crosses == [(x, [1.0]) for x in at], crosses  # on the top edge
    assert f"loss non-finite (2 runs): on the top edge, at its {'step' if sinks else 'epoch'}" \
        in drawn.legends
    if sinks:  # each run's one logged loss stays a dot, as a line of one point
        dots = [(list(x), marker) for (label, x, y), marker in zip(panel.lines, panel.markers)
                if "lr=" in label]
        assert sorted(dots) == [([1, step], "o") for step in sorted(
            r.summary["global_step"] for r in gone)], dots
