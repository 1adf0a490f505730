"""The report's runs that end at chance, on digits sweeps trained here with ./run_sweep.sh.
A run that left chance and ended back at it is collapsed, not converged (dense + adam at lr
0.5, constant schedule: 0.43 after epoch 1, at chance with a loss near ln 10 from epoch 3);
a run that never left chance is stuck only where its loss went flat, and "did not leave
chance in 2 epochs" where its loss was still falling (2 epochs at batch 128: a cnn at lr
0.0003 fell 2.96 -> 2.82, a dense net at that lr 2.32 -> 2.31). A group without a run has
no figure; a figure of epoch means starts its axis at epoch 1 and says that it draws them."""

from __future__ import annotations

import csv
import math
import os

import pytest

from agent.report import document, stats
from agent.report.study import load_study
from conftest import launch_sweep

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]
BOUND = 0.1 + 0.05  # chance 1/10 plus the stuck margin
FEW = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
       "metric": {"name": "val/acc", "goal": "maximize"},
       "parameters": {"dataset": {"value": "digits"}, "model": {"values": ["dense", "cnn"]},
                      "channels": {"value": [16, 32]}, "epochs": {"value": 2},
                      # 9 steps an epoch: at log_interval 20 no run logs more steps than epochs
                      "batch_size": {"value": 128}, "sinks": {"value": ["tensorboard"]},
                      "optimizer": {"value": "sgd"}, "lr": {"values": [0.3, 0.0003]}}}
COLLAPSE = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
            "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                           "epochs": {"value": 4}, "batch_size": {"value": 32},
                           "schedule": {"value": "constant"}, "seed": {"value": 1},
                           "sinks": {"value": ["tensorboard"]},
                           "optimizer": {"value": "adam"}, "lr": {"values": [0.5, 0.01]}}}


def run_sweep(work, name: str, config: dict) -> dict:
    """The sweep through ./run_sweep.sh, then its report and context built here."""
    sweep_id = launch_sweep(work, name, config)
    here = os.getcwd()
    os.chdir(work)  # the runs' TensorBoard logs are where they ran: data/logs/
    try:
        study = load_study(sweep_id)
        report = document.build_report(study, work / "reports" / sweep_id)
        ctx = document.study_context(study, work / "ctx" / sweep_id, stats.GroupRule())
    finally:
        os.chdir(here)
    runs = {(r.config.get("model"), r.config["lr"]): r for r in study.runs}
    assert all(r.state == "finished" for r in study.runs)
    return {"id": sweep_id, "work": work, "study": study, "report": report, "ctx": ctx,
            "text": report.path.read_text(), "runs": runs,
            "csv": {row["run_id"]: row["group"] for row in csv.DictReader(
                open(work / "reports" / sweep_id / "runs.csv", encoding="utf-8"))}}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    work = tmp_path_factory.mktemp("chance")
    return {"few": run_sweep(work, "few", FEW), "collapse": run_sweep(work, "collapse", COLLAPSE)}


CHANCE = "chance: ln 10 = 2.30 (the loss of a uniform guess)"  # the at-chance figures' line


def chance_lines(ax) -> list:
    """The panel's horizontal lines at ln 10 labelled CHANCE."""
    return [(label, y) for label, _, y in ax.lines
            if label == CHANCE and list(y) == pytest.approx([math.log(10)] * 2)]


def run_lines(ax) -> list:
    """The panel's lines of runs (labelled with their configuration)."""
    return [line for line in ax.lines
            if "=" in line[0] and not line[0].startswith("_") and line[0] != CHANCE]


def column(run, key: str) -> list[float]:
    return [row[key] for row in run.history]


def section(text: str, heading: str) -> str:
    return text.split(heading)[1].split("\n#")[0]


def test_a_run_that_left_chance_and_ended_at_it_is_collapsed(sweeps):
    sweep = sweeps["collapse"]
    ctx, text = sweep["ctx"], sweep["text"]
    run, other = sweep["runs"][("dense", 0.5)], sweep["runs"][("dense", 0.01)]
    accuracy = column(run, "val/acc")
    # the premise: it left chance, then sat at it, its losses near ln 10, to its last epoch
    assert max(accuracy) >= BOUND and accuracy[-1] < BOUND and accuracy[-2] < BOUND, accuracy
    last = run.history[-1]
    assert abs(last["train/loss"] - math.log(10)) < 0.15 * math.log(10), last
    assert abs(last["val/loss"] - math.log(10)) < 0.05 * math.log(10), last
    assert min(column(other, "val/acc")[1:]) > 0.9
    assert ctx.group_of(run) == stats.COLLAPSED and ctx.group_of(other) == stats.CONVERGED
    assert sweep["csv"] == {run.id: "collapsed", other.id: "converged"}
    assert "Counts: 0 diverged, 1 collapsed, 0 stuck, 0 falling, 1 converged" in text, text
    table = section(text, "### Collapsed to chance (1)\n")
    top = accuracy.index(max(accuracy)) + 1
    since = next(i + 1 for i in range(len(accuracy))
                 if all(a < BOUND for a in accuracy[i:]))
    (row,) = [line for line in table.splitlines() if run.id in line]
    assert (f"left chance (best accuracy {max(accuracy):.3f} at epoch {top}), back at it from "
            f"epoch {since}: last accuracy {accuracy[-1]:.3f} < 0.150, training loss "
            f"{last['train/loss']:#.3g}, validation loss {last['val/loss']:#.3g} "
            "(ln 10 = 2.30)") in row, row
    # its figure is the collapsed group's, drawn by its logged steps (34 steps an epoch)
    figures = sweep["report"].figures
    assert {name for name in figures if name.startswith("loss_")} == {
        "loss_collapsed.png", "loss_converged.png"}
    drawn = figures["loss_collapsed.png"]
    assert drawn.suptitle == "collapsed to chance (1 run): training loss at each logged step"
    (panel,) = [ax for ax in drawn.axes if ax.lines]
    assert panel.xlabel == "training step" and panel.xlim[0] == 0.0
    # ln 10, where its loss came back to, drawn as the stuck and falling figures draw it
    assert chance_lines(panel) and CHANCE in drawn.legends
    assert [label for label, _, _ in run_lines(panel)] == ["lr=0.5"]
    assert "No figure for the groups without a run: diverged; stuck at chance; did not leave " \
           "chance, loss still falling." in text
    # the sensitivity caption counts it among the runs at chance in its means
    assert "The means include 1 run at chance (stuck, collapsed or not off it yet" in text


def test_few_epochs_tell_a_falling_loss_from_a_flat_one(sweeps, monkeypatch, capsys):
    from agent.report.repeat import planned

    sweep = sweeps["few"]
    ctx, text, runs = sweep["ctx"], sweep["text"], sweep["runs"]
    falling, flat = runs[("cnn", 0.0003)], runs[("dense", 0.0003)]
    for run in (falling, flat):  # the premise: neither left chance in its 2 epochs
        assert max(column(run, "val/acc")) < BOUND and len(run.history) == 2
    first, last = column(falling, "train/loss")
    assert last < 0.98 * first, (first, last)
    first, last = column(flat, "train/loss")
    assert abs(last - first) < 0.02 * first, (first, last)
    assert ctx.group_of(falling) == stats.FALLING and ctx.group_of(flat) == stats.STUCK
    assert {ctx.group_of(runs[(model, 0.3)]) for model in ("dense", "cnn")} == {
        stats.CONVERGED}
    assert sweep["csv"][falling.id] == "falling" and sweep["csv"][flat.id] == "stuck"
    assert "Counts: 0 diverged, 0 collapsed, 1 stuck, 1 falling, 2 converged" in text, text
    table = section(text, "### Did not leave chance in 2 epochs, loss still falling (1)\n")
    first, last = column(falling, "train/loss")
    assert (f"| cnn | 0.0003 | best accuracy {max(column(falling, 'val/acc')):.3f} < 0.150; "
            f"its training loss still falling ({first:#.3g} at epoch 1, {last:#.3g} at epoch "
            f"2) | {falling.id} |") in table, table
    assert "its training loss flat" in section(text, "### Stuck at chance (1)\n")
    # a group's best two name it beside its value
    by_model = section(text, "### By model\n")
    (row,) = [line for line in by_model.splitlines() if falling.id in line]
    assert row.endswith(f"{falling.id}; did not leave chance in 2 epochs |"), row
    (row,) = [line for line in by_model.splitlines() if flat.id in line]
    assert row.endswith(f"{flat.id}; stuck at chance |"), row
    # agent.repeat passes over both, saying why
    monkeypatch.chdir(sweep["work"])
    _, _, configs = planned([sweep["id"], "--by", "model", "--top", "2"])
    assert len(configs) == 2 and all(c["parameters"]["lr"] == {"values": [0.3]}
                                      for _, c in configs), configs
    raw = capsys.readouterr().err
    assert max(map(len, raw.splitlines())) <= 80, raw  # wrapped, read as text below
    err = " ".join(raw.split())
    assert ("model=cnn: passed over lr=0.0003: did not leave chance in its epochs, its loss "
            "still falling (its accuracy, see the report): not repeated") in err, err
    assert "model=dense: passed over lr=0.0003: stuck near chance (its best accuracy, see " \
           "the report): not repeated" in err, err


def test_an_empty_group_has_no_figure_and_epoch_means_start_at_epoch_one(sweeps):
    """No run diverged or collapsed: no loss_diverged.png (drawn as "no run in this group"),
    none embedded; each group's figure draws epoch means, says so, and starts at epoch 1
    (its axis started at epoch 0, where no line is)."""
    sweep = sweeps["few"]
    ctx, text, report = sweep["ctx"], sweep["text"], sweep["report"]
    for run in sweep["study"].runs:  # the premise: logged steps, no more than the epochs
        assert ctx.curves[run.id].source == "tensorboard"
        assert len(ctx.curves[run.id].steps) <= len(run.history)
    assert "No figure for the groups without a run: diverged; collapsed to chance." in text
    out = sweep["work"] / "reports" / sweep["id"]
    for group in ("diverged", "collapsed"):
        assert f"loss_{group}.png" not in report.figures and f"loss_{group}.png" not in text
        assert not (out / f"loss_{group}.png").exists()
    assert ('The figures of the "stuck at chance", "did not leave chance, loss still '
            'falling" and "converged" runs show each run\'s mean training loss per epoch, not '
            "its logged steps: none of these runs logged more than one training loss per "
            "epoch (log_interval about an epoch's steps or more).") in text
    for group, title, count in (("stuck", "stuck at chance", 1),
                                ("falling", "did not leave chance, loss still falling", 1),
                                ("converged", "converged", 2)):
        drawn = report.figures[f"loss_{group}.png"]
        assert drawn.suptitle == (f"{title} ({count} run{'s' if count > 1 else ''}): mean "
                                  "training loss of each epoch")
        panels = [ax for ax in drawn.axes if ax.lines]
        assert sum(len(run_lines(ax)) for ax in panels) == count
        for ax in panels:
            assert ax.xlabel == "epoch"
            assert ax.xlim == pytest.approx((0.98, 2.02))
            for _, x, _ in run_lines(ax):
                assert list(x) == [1, 2]
            # the runs at chance are drawn against ln 10, the converged ones are not
            assert bool(chance_lines(ax)) == (group != "converged")
        assert (CHANCE in drawn.legends) == (group != "converged")
