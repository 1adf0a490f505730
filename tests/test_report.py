"""The study report on a real course sweep: Fashion-MNIST (2,000 training images), model
{dense, cnn} x optimizer {sgd, adam} x lr {1, 1e-3, 1e-5} x dropout {0, 0.5}, 2 epochs, run
with ./run_sweep.sh at 80 columns, then repeat sweeps of the best run per model (3 seeds) and
the report. Every point is checked against the store, the TensorBoard files and the dataset
computed here independently: the groups and their thresholds, the layer names in the weight
figures, the runs kept by the "better than random" filter, the set-up values, the per-seed
values and the test behind any bold, the heat-map cells, and the terminal's lines. Also the
cases with nothing (or not everything) to report."""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from agent.sweep.controller import claim
from agent.sweep.store import create_store
from agent.sweep.target import open_store
from agent.sweep_space import short_number
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.e2e  # every test runs the commands (launcher, agents, report)
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]
LRS = [1.0, 0.001, 0.00001]
DROPOUTS = [0.0, 0.5]
CHANCE = "chance: ln 10 = 2.30 (the loss of a uniform guess)"  # the at-chance figures' line
TRAIN_IMAGES = 2000
COURSE = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
          "name": "course", "metric": {"name": "val/acc", "goal": "maximize"},
          "parameters": {"dataset": {"value": "fashion_mnist"},
                         "train_subset": {"value": TRAIN_IMAGES}, "epochs": {"value": 2},
                         "batch_size": {"value": 64}, "hidden": {"value": 64},
                         "channels": {"value": [8, 16]}, "log_interval": {"value": 2},
                         "sinks": {"value": ["tensorboard", "console"]},
                         "model": {"values": ["dense", "cnn"]},
                         "optimizer": {"values": ["sgd", "adam"]},
                         "lr": {"values": LRS}, "dropout": {"values": DROPOUTS}}}
SWEPT = ["model", "optimizer", "lr", "dropout"]


def run_module(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd,
                          env=subprocess_env(OMP_NUM_THREADS="2"), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The sweep (through ./run_sweep.sh, COLUMNS=80), its repeats and the report, built in
    this process so that the tests can read what each figure holds."""
    from agent.report.document import build_report
    from agent.report.study import load_study
    from util.datasets import cache_path, load_decoded

    work = tmp_path_factory.mktemp("course")
    scratch = tmp_path_factory.mktemp("decoded") / "data"
    load_decoded("fashion_mnist", scratch)  # Debian's files, decoded once
    (work / "data" / "cache").mkdir(parents=True)
    shutil.copy(cache_path("fashion_mnist", scratch), work / "data" / "cache")
    (work / "course.yaml").write_text(yaml.safe_dump(COURSE, sort_keys=False))
    launch = subprocess.run([str(ROOT / "run_sweep.sh"), "course.yaml"], cwd=work,
                            env=subprocess_env(COLUMNS="80", OMP_NUM_THREADS="2"),
                            capture_output=True, text=True, timeout=1200)
    assert launch.returncode == 0, launch.stderr[-3000:]
    (work / "launch.out").write_text(launch.stdout)  # kept for a look after a failure
    sweep_id = re.search(r"Created local sweep (\w+)", launch.stdout).group(1)
    repeat = run_module(work, "agent.repeat", sweep_id, "--top", "1", "--by", "model",
                        "--seeds", "3", "--run")
    assert repeat.returncode == 0, repeat.stderr[-3000:]
    (work / "repeat.out").write_text(repeat.stdout)
    here = os.getcwd()
    os.chdir(work)
    try:
        report = build_report(load_study(sweep_id), work / "reports" / sweep_id)
    finally:
        os.chdir(here)
    return {"work": work, "id": sweep_id, "store": open_store(str(work / "data" / "sweeps" /
                                                                  sweep_id)),
            "report": report, "text": report.path.read_text(), "launch": launch.stdout,
            "repeat": repeat.stdout, "out": work / "reports" / sweep_id}


def step_losses(work: Path, run_id: str) -> list[float]:
    """train/step_loss from the run's TensorBoard files, read with TensorBoard's own
    accumulator (the report reads the files with another reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (group,) = [p for p in (work / "data" / "logs").glob("course-*")  # the sweep's own
                if not p.name.endswith("-repeats")]
    events = EventAccumulator(str(group / run_id),
                              size_guidance={"scalars": 0, "histograms": 1})
    events.Reload()
    return [e.value for e in events.Scalars("train/step_loss")]


def expected_group(run, losses: list[float], explode: float, stuck: float,
                   falling: float = 0.02) -> str:
    """The rule exactly as the report writes it, applied here to the raw records."""
    epoch = [row[k] for row in run.history for k in ("train/loss", "val/loss") if k in row]
    if run.summary.get("diverged") or not all(math.isfinite(v) for v in losses + epoch):
        return "diverged"
    last = [v for k, v in run.history[-1].items() if k in ("train/loss", "val/loss")] \
        if run.history else losses[-1:]
    accuracies = [row["val/acc"] for row in run.history]
    if max(last, default=0.0) > explode and (not accuracies or accuracies[-1] < stuck):
        return "diverged"  # above it with an accuracy above chance: it predicts
    if max(accuracies) >= stuck:  # it left chance: did it end back at it?
        return "collapsed" if accuracies[-1] < stuck else "converged"
    train = [row["train/loss"] for row in run.history]
    spiked = max(losses + epoch) > explode
    if spiked or len(train) < 2 or not train[-1] < train[(len(train) - 1) // 2] * (1 - falling):
        return "stuck"
    second_half = losses[len(losses) // 2:]  # at ln 10, the loss of a uniform guess
    if len(losses) >= 8 and all(abs(v - math.log(10)) <= 0.02 * math.log(10)
                                for v in second_half):
        return "stuck"
    return "falling"


def rows_of(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path, encoding="utf-8")))


def configuration(run) -> dict:
    return {name: run.config[name] for name in SWEPT}


def cnn_and_dense_figures(course) -> dict:
    return course["report"].figures


# ---------------------------------------------------------------- 1. groups

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_groups_follow_the_written_rule_and_its_thresholds(course):
    text, work = course["text"], course["work"]
    rule = re.search(r"validation loss above 10 x ln 10 = ([\d.]+) .*chance 1/10 \+ 0.05 = "
                     r"([\d.]+)", text)
    assert rule, "the rule and its thresholds are stated"
    explode, stuck = float(rule.group(1)), float(rule.group(2))
    assert explode == pytest.approx(10 * math.log(10), abs=0.05) and stuck == 0.15
    runs = course["store"].runs()
    groups = {r["run_id"]: r["group"] for r in rows_of(course["out"] / "runs.csv")}
    expected = {r.id: expected_group(r, step_losses(work, r.id), explode, stuck) for r in runs}
    assert groups == expected
    counts = Counter(expected.values())
    assert counts["stuck"] and counts["converged"], counts  # diverged ones may be none
    assert (f"Counts: {counts['diverged']} diverged, {counts['collapsed']} collapsed, "
            f"{counts['stuck']} stuck, {counts['falling']} falling, "
            f"{counts['converged']} converged") in text
    # A run that barely moves is slow, not divergent (the cnn runs at lr 1e-5).
    assert all(expected[r.id] != "diverged" for r in runs if r.config["lr"] == 0.00001)
    headings = {"diverged": "Diverged", "collapsed": "Collapsed to chance",
                "stuck": "Stuck at chance", "falling": "Did not leave chance in 2 epochs"}
    for group, heading in headings.items():
        if not counts[group]:
            assert f"### {heading}" not in text
            continue
        section = text.split(f"### {heading}")[1]
        table = re.split(r"\n(?:###|!\[)", section, maxsplit=1)[0]
        listed = set(re.findall(r"\| (\w{8}) \|\n", table))
        assert listed == {i for i, g in expected.items() if g == group}
    for group in ("diverged", "collapsed", "stuck", "falling", "converged"):
        members = [r for r in runs if expected[r.id] == group]
        # a group without a run has no figure (it said "no run in this group")
        assert (f"loss_{group}.png" in course["report"].figures) == bool(members), group
        if not members:
            continue
        drawn = course["report"].figures[f"loss_{group}.png"]
        assert f"({len(members)} run{'s' if len(members) != 1 else ''}): training loss at " \
            "each logged step" in drawn.suptitle
        labels = {line[0] for ax in drawn.axes for line in ax.lines
                  if line[0].startswith("model=")}
        assert labels == {" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in configuration(r).items()) for r in members}
        assert not any(r.id in drawn.all_text() for r in runs)  # configurations, not run ids
        marks = {"epoch's mean training loss", "validation loss"}  # why a run diverged
        blown = sum(1 for r in members if r.summary.get("diverged"))  # non-finite: an x each
        assert set(drawn.legends) <= {f"lr={v:.3g}" for v in LRS} | {
            f"dropout={v:.3g}" for v in DROPOUTS} | {
            f"diverged: ended above {explode:.1f}"} | (
            marks | {f"loss non-finite ({blown} run{'s' if blown != 1 else ''}): on the "
                     "top edge, at its step"} if group == "diverged" else set()) | {CHANCE}
        assert (group == "diverged") == (marks <= set(drawn.legends))
        # the groups at chance draw ln 10, where their runs sit or came back to
        assert (CHANCE in drawn.legends) == (group in ("collapsed", "stuck", "falling"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_group_thresholds_are_parameters(course):
    from agent.report.document import study_context
    from agent.report.stats import GroupRule
    from agent.report.study import load_study

    here = os.getcwd()
    os.chdir(course["work"])
    try:
        ctx = study_context(load_study(course["id"]), course["work"] / "other",
                            GroupRule(explode_factor=1.05, stuck_margin=0.6))
    finally:
        os.chdir(here)
    for run in course["store"].runs():
        losses = step_losses(course["work"], run.id)
        assert ctx.verdicts[run.id].group == expected_group(run, losses, 1.05 * math.log(10),
                                                            0.7), run.config


# ---------------------------------------------------------------- 2. weights

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_weight_figures_compare_named_layers_within_one_architecture(course):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, runs = course["work"], course["store"].runs()
    groups = {r["run_id"]: r["group"] for r in rows_of(course["out"] / "runs.csv")}
    layers = {"dense": ["fc1", "fc2", "fc3"], "cnn": ["conv1", "conv2", "head"]}
    for model, names in layers.items():
        drawn = course["report"].figures[f"weights_{model}.png"]
        panels = [ax for ax in drawn.axes if ax.title]
        assert [ax.title.split(" (")[0] for ax in panels] == names
        usable = sorted((r for r in runs if r.config["model"] == model
                         and groups[r.id] != "diverged"),
                        key=lambda r: -r.summary["val/acc"])
        # worst first, a tie in the sweep's order as among the best
        best, worst = usable[:3], sorted(usable, key=lambda r: r.summary["val/acc"])[:3]
        assert panels[0].xticks == ["init", "B1", "B2", "B3", "W1", "W2", "W3"]
        for key, run in zip(["B1", "B2", "B3", "W1", "W2", "W3"], best + worst):
            entry = next(e for e in drawn.legends if e.startswith(f"{key}: "))
            assert f"({run.summary['val/acc']:.3f})" in entry.replace("val/acc ", "")
            saved = torch.load(work / "data" / "runs" / run.id / "checkpoint.pt",
                               weights_only=True)["model"]
            column = panels[0].xticks.index(key)
            for ax, name in zip(panels, names):
                assert ax.texts[column] == f"{saved[name + '.weight'].std(unbiased=False):.2g}"
    # TensorBoard's histograms carry the same names.
    events = EventAccumulator(str(work / "data" / "logs" / course["store"].sweep().group /
                                  runs[-1].id),
                              size_guidance={"histograms": 0})
    events.Reload()
    assert {f"weights/{n}" for n in layers[runs[-1].config["model"]]} <= set(
        events.Tags()["histograms"])


# ---------------------------------------------------------------- 3. better than random

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_better_than_random_keeps_runs_above_the_chance_bound(course):
    n = 10000  # Fashion-MNIST's test set
    bound = next(k for k in range(n) if scipy_stats.binom.cdf(k, n, 0.1) >= 0.95) / n
    runs = course["store"].runs()
    kept = [r for r in runs if (r.summary.get("test/acc") or 0) > bound]
    text = course["text"]
    assert f"above {bound:.4f}, the accuracy that uniform guessing on the 10,000 test" in text
    assert f"**{len(kept)} of {len(runs)}** runs pass" in text
    drawn = course["report"].figures["parallel_better.png"]
    assert drawn.axes[0].title == (f"runs better than random (test accuracy > {bound:.4f}) "
                                   f"({len(kept)} runs)")
    # One polyline per kept run (the rest of the lines are the figure's axes).
    assert len(drawn.axes[0].lines) == len(kept) + len(SWEPT) + 1
    at_chance = [r for r in runs if r.summary.get("test/acc") is not None
                 and r.summary["test/acc"] <= bound]
    assert at_chance and f"{len(runs) - len(kept)} do not" in text  # chance is filtered out
    # and the groups of those left out, counted: each run of them is in one
    named = re.search(r"\*\* runs pass; \d+ do(?:es)? not: (.+?)\. This tests", text)
    assert named, text
    counted = {"diverged", "collapsed to chance", "stuck at chance",
               "did not leave chance (loss still falling)", "converged"}
    parts = [re.fullmatch(r"(\d+) (.+)", part).groups()
             for part in re.split(r", | and ", named.group(1))]
    assert all(phrase in counted for _, phrase in parts), parts
    assert sum(int(n) for n, _ in parts) == len(runs) - len(kept)


# ---------------------------------------------------------------- 4. set-up

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_setup_states_the_data_and_every_fixed_parameter_used(course):
    import torch

    from util.device_cache import device_splits

    text = course["text"]
    here = os.getcwd()
    os.chdir(course["work"])
    try:
        splits = device_splits("fashion_mnist", "data", torch.device("cpu"), 0.1)
    finally:
        os.chdir(here)
    trained = Counter(splits.train_y[:TRAIN_IMAGES].tolist())
    assert len(splits.val_y) == 6000
    assert ("Trained on: 2,000 images (`train_subset=2000`: the first 2,000 of the 54,000 "
            "left after the validation split)") in text
    assert "Validation: 6,000 images (`val_split=0.1`)" in text
    assert "training and 10,000 test images" in text and "60,000 training" in text
    assert "Per-class counts of the images trained on: " + ", ".join(
        f"{c} {trained[i]}" for i, c in enumerate(splits.classes)) in text
    table = text.split("### Fixed parameters")[1].split("###")[0]
    for row in ("| `momentum` | 0.9 | default |", "| `weight_decay` | 0.0005 | default |",
                "| `schedule` | cosine | default |", "| `batch_size` | 64 | sweep file |",
                "| `hidden` | 64 | sweep file |", "| `channels` | 8, 16 | sweep file |",
                "| `train_subset` | 2000 | sweep file |", "| `epochs` | 2 | sweep file |"):
        assert row in table, row
    for absent in SWEPT + ["rho", "width", "widths"]:  # swept, or for a model not studied
        assert f"| `{absent}` |" not in table, absent
    assert re.search(r"Wall time of the sweep: \d+ (s|min)", text)
    assert "lr:\n    values: [1.0, 0.001, 1.0e-05]" in text
    drawn = course["report"].figures["class_histograms.png"]
    (ax,) = drawn.axes
    assert ax.legend == ["trained on (2,000)", "validation (6,000)", "test (10,000)"]
    assert ax.legend_covers == 0


# ---------------------------------------------------------------- 5. seeds and bold

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_seeds_are_fresh_listed_and_bold_only_when_welch_supports_it(course):
    work, text = course["work"], course["text"]
    seeds = rows_of(course["out"] / "seeds.csv")
    by_selected: dict[str, list[dict]] = {}
    for row in seeds:
        by_selected.setdefault(row["selected_run"], []).append(row)
    assert len(by_selected) == 2  # the best run of each model
    samples, picked = {}, {}
    for selected, rows in by_selected.items():
        assert sorted(int(r["seed"]) for r in rows) == [1, 2, 3]  # never the picked seed 0
        store = open_store(str(work / "data" / "sweeps" / rows[0]["repeat_sweep"]))
        values = {r.id: r.summary["val/acc"] for r in store.runs()}
        assert {r["run_id"]: float(r["val/acc"]) for r in rows} == values
        ordered = [values[r["run_id"]] for r in rows]
        mean, sd = np.mean(ordered), np.std(ordered, ddof=1)
        half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert f"{mean:.4f} ± {half:.4f} (n=3)" in text
        assert " ".join(f"{v:.4f}" for v in ordered) in text  # per-seed values shown
        samples[selected] = ordered
        picked[selected] = course["store"].run(selected).summary["val/acc"] - mean
    (a, b) = samples.values()
    p = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    section = text.split("### By model")[1].split("### By optimizer")[0]
    if p < 0.05:
        assert section.count("**") == 2 and "Bold:" in section
    else:
        assert "**" not in section and f"adjusted p = {p:.3g}" in section
    assert "Settings without a repeat sweep" in text.split("### By optimizer")[1]
    assert "winner's curse" in text and "Seeds used: 1-3" in text
    above = sum(1 for excess in picked.values() if excess > 0)
    assert (f"The picked setting's sweep value scored above its mean over fresh seeds in "
            f"{above} of 2 settings (val/acc {np.mean(list(picked.values())):+.4f}") in text


# ---------------------------------------------------------------- 6. discussion

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_heatmap_cells_are_each_runs_metric(course):
    runs = course["store"].runs()
    groups = {r["run_id"]: r["group"] for r in rows_of(course["out"] / "runs.csv")}
    drawn = course["report"].figures["grid_heatmap.png"]
    panels = [ax for ax in drawn.axes if ax.images]
    assert len(panels) == 4
    for ax in panels:
        facets = dict(part.split("=") for part in ax.title.split(", "))
        assert set(facets) == {"model", "optimizer"}
        cells = np.ma.filled(ax.images[0].astype(float), np.nan)
        assert cells.shape == (len(LRS), len(DROPOUTS))
        assert ax.ylabel == "lr" and ax.xlabel == "dropout"
        for i, lr in enumerate(sorted(LRS)):
            for j, dropout in enumerate(DROPOUTS):
                (run,) = [r for r in runs if r.config["model"] == facets["model"]
                          and r.config["optimizer"] == facets["optimizer"]
                          and r.config["lr"] == lr and r.config["dropout"] == dropout]
                if groups[run.id] == "diverged":
                    assert np.isnan(cells[i, j])
                else:
                    assert cells[i, j] == pytest.approx(run.summary["val/acc"])
        assert ax.texts.count("div") == sum(
            1 for r in runs if groups[r.id] == "diverged" and r.config["model"] ==
            facets["model"] and r.config["optimizer"] == facets["optimizer"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sensitivity_and_observations_state_their_numbers(course):
    runs, text = course["store"].runs(), course["text"]
    groups = {r["run_id"]: r["group"] for r in rows_of(course["out"] / "runs.csv")}
    drawn = course["report"].figures["marginals.png"]
    lr_panel = next(ax for ax in drawn.axes if ax.xlabel == "lr")
    assert lr_panel.xscale == "log"
    for optimizer in ("sgd", "adam"):
        (line,) = [line for line in lr_panel.lines if line[0] == f"optimizer={optimizer}"]
        # the means of the runs that did not diverge (a diverged value means nothing)
        scored = {lr: [r.summary["val/acc"] for r in runs if r.config["lr"] == lr
                       and r.config["optimizer"] == optimizer
                       and r.summary.get("val/acc") is not None
                       and groups[r.id] != "diverged"] for lr in sorted(LRS)}
        assert list(line[1]) == [lr for lr in sorted(LRS) if scored[lr]]
        assert np.allclose(line[2], [np.mean(v) for v in scored.values() if v])
    # the text names the colours as the panels draw them: the optimizer's own, by model
    optimizer_panel = next(ax for ax in drawn.axes if ax.xlabel == "optimizer")
    assert {label for label, _, _ in optimizer_panel.lines
            if label.startswith("model=")} == {"model=cnn", "model=dense"}
    assert "one colour per optimizer (per model in the optimizer's own panel)." in text
    notes = text.split("## Observations")[1].split("##")[0]
    for model in ("cnn", "dense"):
        for optimizer in ("adam", "sgd"):
            best = max((r for r in runs if r.config["model"] == model
                        and r.config["optimizer"] == optimizer
                        and r.summary.get("val/acc") is not None),
                       key=lambda r: r.summary["val/acc"])
            assert (f"model={model}, optimizer={optimizer}: best val/acc "
                    f"{best.summary['val/acc']:.4f}") in notes


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gradcam_shows_correct_and_misclassified_images(course):
    drawn = course["report"].figures["gradcam.png"]
    titled = [ax for ax in drawn.axes if ax.title.startswith("true")]
    assert titled
    for ax in titled:
        true, predicted = re.match(r"true (.+) / ?pred (.+)", ax.title.replace("\n", " ")
                                   ).groups()
        red = ax.title_color[0] > 0.7 and ax.title_color[1] < 0.3
        assert red == (true.strip() != predicted.strip()), ax.title
    assert any(ax.title_color[0] > 0.7 for ax in titled)  # some misclassified are shown


# ---------------------------------------------------------------- 8. the terminal

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_terminal_lines_fit_80_columns_and_end_with_the_next_commands(course):
    out, sweep_id = course["launch"], course["id"]
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    headers = [line for line in lines if re.match(r"run \d+/24 \w{8}  model=", line)]
    assert len(headers) == 24
    shown = {tuple(re.search(r"model=(\S+) optimizer=(\S+) lr=(\S+) dropout=(\S+)", h).groups())
             for h in headers}
    assert len(shown) == 24  # every run's header differs: all swept parameters are in it
    assert {s[2] for s in shown} == {"1", "0.001", "1e-05"}
    assert any("left" in line for line in lines if line.startswith("  sweep course"))
    assert "…" not in out and "{" not in out  # nothing cut, no Python dict
    assert "W&B offline runs" not in out  # the sweep's sinks leave W&B out
    tail = lines[-4:]
    # launched as <project>/run_sweep.sh from the sweep's own folder: the hints name the
    # scripts by a path that works there (agent/commands.py)
    relative = os.path.relpath(ROOT, course["work"])
    root = relative if relative.split(os.sep).count(os.pardir) <= 2 else str(ROOT)
    assert tail == ["Next: repeat the best runs over 5 seeds, write the report, open TensorBoard:",
                    f"  {root}/util/with_venv.sh python -m agent.repeat {sweep_id} --run",
                    f"  {root}/util/with_venv.sh python -m agent.report {sweep_id}",
                    f"  {root}/run_tensorboard.sh --logdir data/logs/course-{sweep_id}"]
    assert "running it now" in course["repeat"]
    assert "run it: ./run_sweep.sh" not in course["repeat"]  # --run runs, it does not ask
    assert course["repeat"].splitlines()[-1] == (
        f"Next: ./util/with_venv.sh python -m agent.report {sweep_id}")
    # asked again, the repeats are there and done: nothing to run
    again = run_module(course["work"], "agent.repeat", sweep_id, "--top", "1", "--by", "model",
                       "--seeds", "3")
    assert again.returncode == 0, again.stderr[-2000:]
    done = [line for line in again.stdout.splitlines() if "exists already" in line]
    assert len(done) == 2 and all(line.endswith("every run ended") for line in done)
    assert "run it: ./run_sweep.sh" not in again.stdout


# ---------------------------------------------------------------- nothing (yet) to report

@pytest.mark.timeout(300)
def test_unfinished_sweep_says_so(tmp_path):
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1},
                             "model": {"value": "dense"}, "hidden": {"value": 16},
                             "sinks": {"value": []}, "lr": {"values": [0.1, 0.01, 0.001]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "half", "half", "half", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory), "--count", "1")
    assert agent.returncode == 0, agent.stderr[-2000:]
    result = run_module(tmp_path, "agent.report", "half")
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "reports" / "half" / "report.md").read_text()
    assert "**This sweep is not finished**: 1 of 3 planned runs have ended" in text


@pytest.mark.timeout(300)
def test_a_preempted_run_is_named_preempted_not_pending_or_running(tmp_path):
    """An agent stopped by SIGTERM (as a batch job's walltime stops it) during the third of
    4 planned runs, not resumed: the report names the run preempted (no agent runs it), the
    run never started, and keeps the preempted run, which has epochs, apart from the runs
    without one."""
    import signal
    import time

    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 256}, "batch_size": {"value": 8},
                             "sinks": {"value": []}, "epochs": {"values": [1, 500]},
                             "lr": {"values": [0.01, 0.001]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "cut", "cut", "cut", config)
    agent = subprocess.Popen([sys.executable, "-m", "agent.sweep.agent_loop",
                              str(store.directory)], cwd=tmp_path,
                             env=subprocess_env(OMP_NUM_THREADS="1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 200
    while not any(r.epoch >= 1 and r.config["epochs"] == 500 for r in store.runs()):
        assert time.time() < deadline and agent.poll() is None, "no long run got an epoch"
        time.sleep(0.2)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, agent.stderr.read()[-2000:]
    assert sorted(r.state for r in store.runs()) == ["finished", "finished", "preempted"]
    result = run_module(tmp_path, "agent.report", "cut")
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "reports" / "cut" / "report.md").read_text()
    assert ("**This sweep is not finished**: 2 of 4 planned runs have ended (1 preempted, "
            "1 not proposed).") in text
    assert ("ended runs without an epoch or a loss: 0; not ended, so in no group: 1)"
            in text)
    # the same sweep before any run ended: the preempted run has values, no ended run has
    only = create_store(tmp_path / "data" / "sweeps" / "cut0", "cut0", "cut0", config)
    (run,) = claim(only, "host:1").runs
    assert only.record_epoch(run.run_id, "host:1", 1, {"val/acc": 0.5})
    assert only.finish(run.run_id, "host:1", "preempted")
    assert run_module(tmp_path, "agent.report", "cut0").returncode == 0
    text = (tmp_path / "reports" / "cut0" / "report.md").read_text()
    assert "0 of 4 planned runs have ended (1 preempted, 3 not proposed)" in text
    assert "**No ended run has a value of `val/acc`**" in text


@pytest.mark.timeout(300)
def test_a_run_whose_agent_was_killed_is_silent_not_running(tmp_path):
    """An agent killed with SIGKILL mid-run (the OOM killer, a node lost) leaves its run
    `running` in the store with nothing training it: the report said "Runs: 3 (2 finished,
    1 running)" and "(1 running)" while agent.status showed the run silent, its agent
    stopped. Past the agent's heartbeat timeout the report counts it silent, and says that
    nothing trains it and what repeats it."""
    import signal
    import time

    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 256}, "batch_size": {"value": 8},
                             "sinks": {"value": []}, "epochs": {"values": [1, 500]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "kill", "kill", "kill", config)
    agent = subprocess.Popen([sys.executable, "-m", "agent.sweep.agent_loop",
                              str(store.directory), "--heartbeat", "0.3",
                              "--heartbeat-timeout", "3"], cwd=tmp_path,
                             env=subprocess_env(OMP_NUM_THREADS="1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 200
    while not any(r.epoch >= 1 and r.config["epochs"] == 500 for r in store.runs()):
        assert time.time() < deadline and agent.poll() is None, "no long run got an epoch"
        time.sleep(0.2)
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=30)
    time.sleep(4)  # past its agent's heartbeat timeout
    assert sorted(r.state for r in store.runs()) == ["finished", "running"]
    result = run_module(tmp_path, "agent.report", "kill")
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "reports" / "kill" / "report.md").read_text()
    assert "Runs: 2 (1 finished, 1 silent)." in text, text
    assert ("**This sweep is not finished**: 1 of 2 planned runs have ended (1 silent: its "
            "agent has sent no heartbeat for over 3 s, so it has stopped, killed or the "
            "machine gone, and nothing trains the run; the next agent on the sweep marks it "
            "crashed and repeats it from the last checkpoint: ") in text, text
    assert "running" not in text.split("## Set-up")[0], text


@pytest.mark.timeout(300)
def test_weights_of_one_model_with_other_layer_shapes_are_not_drawn_together(tmp_path,
                                                                              monkeypatch):
    """A cnn sweep over channels [4] and [8]: two architectures of one model. Each gets its
    own figure, with its own initial weights, each violin of a panel being that layer's
    weights (one figure per model drew a [4] run's 36 conv1 weights in the [8] init's
    '72 weights' panel)."""
    from agent.report.document import build_report
    from agent.report.study import load_study

    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "cnn"},
                             "epochs": {"value": 1}, "sinks": {"value": []},
                             "channels": {"values": [[4], [8]]},
                             "lr": {"values": [0.05, 0.01]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "arch", "arch", "arch", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    assert [r.state for r in store.runs()] == ["finished"] * 4
    monkeypatch.chdir(tmp_path)
    report = build_report(load_study("arch"), tmp_path / "report")
    text = report.path.read_text()
    assert "weights_cnn.png" not in text
    drawings = [d for name, d in report.figures.items() if name.startswith("weights_")]
    assert sorted(d.path.name for d in drawings) == ["weights_cnn_1.png", "weights_cnn_2.png"]
    for channels in (4, 8):  # one figure per architecture (numbered best first)
        drawn = next(d for d in drawings
                     if d.suptitle.startswith(f"cnn (channels=[{channels}]): weights per"))
        mine = [r for r in store.runs() if r.config["channels"] == [channels]]
        assert (f"![weight distributions, cnn (channels=[{channels}])]({drawn.path.name})"
                in text)
        titles = [ax.title for ax in drawn.axes if ax.title]
        # conv1: channels x 1 x 3 x 3; the head: channels pooled features x 10 classes
        assert titles == [f"conv1 ({channels * 9:,} weights)",
                          f"head ({channels * 10:,} weights)"], titles
        legend = " ".join(drawn.legends)
        assert all(f"channels=[{channels}]" in entry for entry in drawn.legends[1:]), legend
        assert len(drawn.legends) == 1 + len(mine)  # init, then each run: B1, B2


@pytest.mark.timeout(300)
def test_a_sweep_that_varies_no_parameter_names_its_run_by_its_id(tmp_path, monkeypatch):
    """One run of a sweep that varies nothing (a student's first try, one cnn at one lr):
    the report named it by its values of the swept parameters, none, so its best run read
    'configuration: .', Grad-CAM's title 'ir1y6kpi (): 4 correct', the weights' legend
    'B1:  (val/acc 0.944)' and the training curves' '[0.9444] (train)'. Each names the run
    by its id now, and the paragraph says that the sweep varies no parameter."""
    from agent.report.document import build_report
    from agent.report.study import load_study

    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "cnn"},
                             "channels": {"value": [4]}, "epochs": {"value": 2},
                             "lr": {"value": 0.05}, "sinks": {"value": []}}}
    store = create_store(tmp_path / "data" / "sweeps" / "one", "one", "one", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    (run,) = store.runs()
    monkeypatch.chdir(tmp_path)
    report = build_report(load_study("one"), tmp_path / "report")
    text = report.path.read_text()
    value = f"{run.summary['val/acc']:.4f}"
    assert ("; configuration: the only one (the sweep varies no parameter). One run of one "
            "seed:") in text, text
    assert "configuration: ." not in text
    assert report.figures["gradcam.png"].suptitle.startswith(f"{run.id}: "), \
        report.figures["gradcam.png"].suptitle
    weights = report.figures["weights_cnn.png"].legends
    assert weights[1:] == [f"B1: {run.id} (val/acc {run.summary['val/acc']:.3f})"], weights
    curves = [entry for ax in report.figures["training_curves.png"].axes for entry in ax.legend]
    curves += report.figures["training_curves.png"].legends
    assert f"{run.id} [{value}] (train)" in curves, curves
    assert not any(entry.startswith(("[", " ")) for entry in curves + weights), curves


def hyperband_report(tmp_path, monkeypatch, sweep_id: str, fixed: dict):
    """(store, {stopped run id: its epoch}, report) of a digits grid with hyperband (min_iter
    1, eta 2), dense 32, 4 epochs, its good lr values first, plus the `fixed` parameters,
    trained by one agent process; at least one run was stopped (the premise)."""
    from agent.report.document import build_report
    from agent.report.study import load_study

    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 32}, "epochs": {"value": 4},
                             **{name: {"value": value} for name, value in fixed.items()},
                             "lr": {"values": [0.1, 0.03, 0.0001, 0.00003]}}}
    store = create_store(tmp_path / "data" / "sweeps" / sweep_id, sweep_id, sweep_id, config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    stopped = {r.id: r.epoch for r in store.runs() if r.state == "stopped"}
    assert stopped, [(r.config["lr"], r.state) for r in store.runs()]  # the premise
    monkeypatch.chdir(tmp_path)
    return store, stopped, build_report(load_study(sweep_id), tmp_path / "report")


@pytest.mark.timeout(300)
def test_weights_of_runs_hyperband_stopped_are_marked_stopped(tmp_path, monkeypatch):
    """A digits grid with hyperband, its good lr values first: the runs at the tiny lr
    values are stopped after their first epoch, and the weight figure drew them as its
    worst runs, "W1: lr=0.0001 (val/acc 0.125)", their weights near the initial ones for
    training one epoch of four, not only for their setting, nothing said. Each such run's
    label says where it stopped, and a sentence says what that means beside the others."""
    store, stopped, report = hyperband_report(tmp_path, monkeypatch, "hb", {"sinks": []})
    text = report.path.read_text()
    legends = report.figures["weights_dense.png"].legends[1:]
    assert len(legends) == 4, legends  # B1 to B3, then the last as W1
    lrs = {short_number(r.config["lr"]): r.id for r in store.runs()}
    marked = []
    for entry in legends:
        key, lr = entry.split(": lr=")[0], entry.split("lr=")[1].split(" ")[0]
        run_id = lrs[lr]
        if run_id in stopped:
            assert entry.endswith(f", stopped early at epoch {stopped[run_id]} of 4)"), entry
            marked.append(f"{key} (stopped early at epoch {stopped[run_id]} of 4)")
        else:
            assert "stopped" not in entry, entry
    assert marked, legends
    one = len(marked) == 1
    assert (f"`dense`: {', '.join(marked)} {'was' if one else 'were'} stopped early by the "
            "sweep's early termination: ") in text, text
    # its group's loss figure marks it too (the stuck figure drew it unmarked)
    groups = {row["run_id"]: row["group"] for row in rows_of(tmp_path / "report" / "runs.csv")}
    for run in store.runs():
        entry = (f"lr={short_number(run.config['lr'])}: stopped early at epoch {run.epoch} "
                 "of 4")
        legends = report.figures[f"loss_{groups[run.id]}.png"].legends
        assert (entry in legends) == (run.id in stopped), (entry, legends)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_stopped_runs_bar_stands_at_the_epoch_it_stopped_not_its_last_logged_step(
        tmp_path, monkeypatch):
    """A digits grid with hyperband, batch 32 (40 steps an epoch) and a training loss
    logged every 20 steps to TensorBoard: a run stopped after epoch 1 last logged step 21,
    and its group figure put its bar there, at 0.53 of an epoch, beside a legend entry
    "stopped early at epoch 1 of 4". The bar stands at the end of the epoch it stopped at
    (step 40), reached by a dotted line from its last logged step."""
    _, stopped, report = hyperband_report(tmp_path, monkeypatch, "hbs", {
        "batch_size": 32, "log_interval": 20, "sinks": ["tensorboard"]})
    groups = {row["run_id"]: row["group"] for row in rows_of(tmp_path / "report" / "runs.csv")}
    for group in {groups[run_id] for run_id in stopped}:
        (ax,) = [ax for ax in report.figures[f"loss_{group}.png"].axes if ax.title]
        assert ax.xlabel == "training step", ax.xlabel  # every run's logged steps
        bars = sorted(float(x[0]) for (label, x, _), marker in zip(ax.lines, ax.markers)
                      if label == "_stopped" and marker == "|")
        assert bars == sorted(40.0 * stopped[r] for r in stopped if groups[r] == group), bars
        dotted = [x.tolist() for label, x, _ in ax.lines if label == "_unlogged"]
        assert sorted(x[1] for x in dotted) == bars and all(x[0] < x[1] for x in dotted)

@pytest.mark.timeout(300)
def test_values_of_the_sweep_file_that_no_run_took_are_named(tmp_path, monkeypatch):
    """A search over optimizer [sgd, adam, sam] whose runs took one of them (a bayes study
    of 10 runs on digits kept to adam throughout: sgd was never tried): the report gave a
    "By optimizer" table of adam alone and a panel of one optimizer, and nowhere said that
    sgd had no run, so the study read as if it covered both. A random search of one run
    takes one of three; the report names the two it never tried."""
    from agent.report.document import build_report
    from agent.report.study import load_study

    config = {"program": "agent/train.py", "command": COMMAND, "method": "random",
              "run_cap": 1, "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 1},
                             "sinks": {"value": []}, "lr": {"value": 0.01},
                             "optimizer": {"values": ["sgd", "adam", "sam"]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "took", "took", "took", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    (run,) = store.runs()
    took = run.config["optimizer"]
    never = [o for o in ("sgd", "adam", "sam") if o != took]
    monkeypatch.chdir(tmp_path)
    text = build_report(load_study("took"), tmp_path / "report").path.read_text()
    assert (f"Listed in the sweep file, yet taken by no run: `optimizer` {', '.join(never)} "
            f"(the runs took {took} only). Nothing below says anything of these values: they "
            "were never tried.") in text, text
    # the same sweep's grid, stopped after its first run: named so far
    grid = {**config, "method": "grid"}
    grid.pop("run_cap")
    store = create_store(tmp_path / "data" / "sweeps" / "part", "part", "part", grid)
    assert run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory), "--count",
                      "1").returncode == 0
    text = build_report(load_study("part"), tmp_path / "report2").path.read_text()
    (first,) = store.runs()
    rest = [o for o in ("sgd", "adam", "sam") if o != first.config["optimizer"]]
    assert (f"Listed in the sweep file, yet taken by no run so far: `optimizer` "
            f"{', '.join(rest)} (the runs took {first.config['optimizer']} only).") in text, text


@pytest.mark.timeout(300)
def test_an_lr_window_that_reaches_an_end_of_the_lr_values_tried_says_so(tmp_path,
                                                                        monkeypatch):
    """SGD vs Adam on digits over lr {0.001, 0.01, 0.1}, trained here: sgd's best lr is the
    largest tried. The report read "optimizer=sgd: lr within 0.02 of its best (0.9444): 0.1."
    (on the course grid too, sgd at 0.1 of 1e-5..0.1), as if 0.1 were sgd's best lr, where
    the runs cannot tell whether a larger one is better; a window that reaches an end of
    the values tried now says so, a window inside them says nothing more."""
    from agent.report.document import build_report
    from agent.report.study import load_study

    lrs = [0.001, 0.01, 0.1]
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 32}, "epochs": {"value": 2},
                             "sinks": {"value": []}, "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": lrs}}}
    store = create_store(tmp_path / "data" / "sweeps" / "ends", "ends", "ends", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    text = build_report(load_study("ends"), tmp_path / "report").path.read_text()
    reached = []
    for optimizer in ("sgd", "adam"):
        scores = {r.config["lr"]: r.summary["val/acc"] for r in store.runs()
                  if r.config["optimizer"] == optimizer}
        good = [lr for lr in lrs if scores[lr] >= max(scores.values()) - 0.02]
        (line,) = [line for line in text.splitlines()
                   if line.startswith(f"- optimizer={optimizer}: lr within 0.02 of its best")]
        window = ", ".join(f"{lr:g}" for lr in good)
        if good == lrs:
            ending = " (it spans every lr tried, from the smallest to the largest)"
        elif lrs[-1] in good:
            ending = " (it reaches the largest lr tried: the best may lie above it)"
        elif lrs[0] in good:
            ending = " (it reaches the smallest lr tried: the best may lie below it)"
        else:
            ending = ""
        reached += [optimizer] if ending else []
        # then the end of the line, or where every run of an lr failed, that clause
        assert f"): {window}{ending}." in line or f"): {window}{ending}; at lr=" in line, line
    assert "sgd" in reached, text  # the premise: sgd is best at 0.1, the largest lr tried


@pytest.mark.timeout(300)
def test_an_optimizer_study_gives_each_optimizers_run_time(tmp_path, monkeypatch):
    """SGD vs SAM on digits, trained here: SAM takes two gradients a step, and a student
    weighs its accuracy against its time, but the set-up gave the run time by model only
    ("per run, mean by model: cnn 9 s" for 3 optimizers whose runs took 7 s and 14 s). It
    gives the mean by optimizer too where the optimizer varies."""
    from agent.report.document import build_report
    from agent.report.study import load_study
    from agent.sweep_space import duration_text

    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 256}, "batch_size": {"value": 8},
                             "epochs": {"value": 6}, "sinks": {"value": []},
                             "optimizer": {"values": ["sgd", "sam"]}, "lr": {"value": 0.01}}}
    store = create_store(tmp_path / "data" / "sweeps" / "sam", "sam", "sam", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    text = build_report(load_study("sam"), tmp_path / "report").path.read_text()
    means = {o: np.mean([r.summary["wall_s"] for r in store.runs()
                         if r.config["optimizer"] == o]) for o in ("sgd", "sam")}
    assert max(means.values()) > 1, means  # not all "0 s": the line gives whole seconds
    assert ("; per run, mean by model: dense "
            f"{duration_text(np.mean(list(means.values())))}; by optimizer: sgd "
            f"{duration_text(means['sgd'])}, sam {duration_text(means['sam'])}.") in text, text


@pytest.mark.timeout(120)
def test_empty_sweep_gives_a_report_that_says_so(tmp_path):
    create_store(tmp_path / "data" / "sweeps" / "empty", "empty", "empty",
                 {"method": "grid", "parameters": {"lr": {"value": 0.1}}})
    result = run_module(tmp_path, "agent.report", "empty")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "reports" / "empty" / "report.md").read_text()
    assert "This sweep has no runs yet" in text


@pytest.mark.timeout(120)
def test_empty_sweep_that_searches_parameters_gives_a_report(tmp_path):
    """A sweep with swept parameters and no run yet (a repeat sweep made without --run, a
    sweep whose job is queued): a report that says so, not a traceback."""
    create_store(tmp_path / "data" / "sweeps" / "empty", "empty", "empty",
                 {"method": "grid", "parameters": {"lr": {"values": [0.1, 0.01]},
                                                   "seed": {"values": [1, 2]}}})
    result = run_module(tmp_path, "agent.report", "empty")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    text = (tmp_path / "reports" / "empty" / "report.md").read_text()
    assert "This sweep has no runs yet" in text


@pytest.mark.timeout(300)
def test_a_sweep_stopped_by_its_metric_target_is_not_called_unfinished(tmp_path):
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize", "target": 0.05},
              "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1},
                             "model": {"value": "dense"}, "hidden": {"value": 16},
                             "sinks": {"value": []}, "lr": {"values": [0.1, 0.01, 0.001]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "tgt", "tgt", "tgt", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    assert [r.state for r in store.runs()] == ["finished"]  # the target stopped the sweep
    result = run_module(tmp_path, "agent.report", "tgt")
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "reports" / "tgt" / "report.md").read_text()
    assert ("**The sweep stopped early**: metric.target val/acc >= 0.05 reached: no new runs"
            in text) and "after 1 of 3 planned runs" in text
    assert "not finished" not in text


@pytest.mark.timeout(240)
def test_only_failed_runs_give_a_report_that_says_so(tmp_path):
    store = create_store(tmp_path / "data" / "sweeps" / "failing", "failing", "failing",
                         {"method": "grid", "parameters": {
                             "dataset": {"value": "mnist"}, "sinks": {"value": []},
                             "lr": {"values": [0.1, 0.2, 0.3]}}})
    assert run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory)).returncode == 1
    result = run_module(tmp_path, "agent.report", "failing")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "reports" / "failing" / "report.md").read_text()
    assert "all 3 runs failed" in text
    # each run's reason is its one-line refusal (no traceback was kept for it)
    reasons = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(reasons) == 3 and all("no MNIST files" in line for line in reasons)
    assert "Traceback" not in text


@pytest.mark.timeout(300)
def test_a_failed_run_beside_finished_ones_is_listed_with_its_reason(tmp_path):
    """One run trains, one is refused (a split that leaves 1 training image): the agent says
    each failure's reason is in the report, so it is there, not only in a count."""
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1},
                             "model": {"value": "dense"}, "hidden": {"value": 16},
                             "sinks": {"value": []}, "train_subset": {"values": [0, 1]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "some", "some", "some", config)
    agent = run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    failed = next(r for r in store.runs() if r.state == "failed")
    assert {r.state for r in store.runs()} == {"finished", "failed"}
    result = run_module(tmp_path, "agent.report", "some")
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "reports" / "some" / "report.md").read_text()
    section = text.split("## Failed and crashed runs (1)")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.endswith(f"| {failed.id} |"))
    assert row.startswith("| 1 | failed | 0 of 1 | ") and "a trial needs 2 or more" in row, row
    assert failed.error.strip() in row


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["someone/project/abc123", "no-such-sweep"])
def test_unreachable_or_unknown_sweep_is_one_line_exit_2(tmp_path, target):
    result = run_module(tmp_path, "agent.report", target)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("option", [["--explode-factor", "1"], ["--stuck-margin", "1.5"]])
def test_bad_thresholds_are_one_line_exit_2(tmp_path, option):
    result = run_module(tmp_path, "agent.report", "no-such-sweep", *option)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and option[0] in result.stderr


@pytest.mark.parametrize("written, shown", [
    ({"type": "hyperband", "min_iter": 1}, {"type": "hyperband", "min_iter": 1}),
    ({"type": "hyperband", "min_iter": 1, "eta": 2, "strict": False},
     {"type": "hyperband", "min_iter": 1, "eta": 2, "strict": False}),
])
def test_the_reports_sweep_file_leaves_out_what_the_engine_fills_in(tmp_path, written, shown):
    """The report shows the sweep as its author wrote it: the engine's filling (hyperband's
    eta 3 and strict true, a parameter's distribution, the metric's impute) is left out; what
    the author chose, even where it differs from a default, stays."""
    from agent.report.setup_section import sweep_yaml
    from agent.sweep.config import load_sweep_config

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "early_terminate": written, "parameters": {"lr": {"values": [0.1, 0.01]}}}))
    filled = load_sweep_config(path)
    assert filled["early_terminate"]["strict"] is shown.get("strict", True)
    back = yaml.safe_load(sweep_yaml(filled))
    assert back["early_terminate"] == shown
    assert back["parameters"] == {"lr": {"values": [0.1, 0.01]}}
    assert back["metric"] == {"name": "val/acc", "goal": "maximize"}


def test_resumed_runs_count_their_whole_training_and_their_first_packed_trial():
    """Two members of one packed trial, preempted after 100 s, resumed an hour later alone
    (each for 50 s more): the report counts one trial of two runs, of the members' own
    training time (wall_s, carried over the resumption: 150 s), and the sweep's wall time
    from the pack's first start; a run's latest start is only where its last stretch began."""
    from agent.report.setup_section import hardware_lines
    from agent.report.study import RunRecord, Study, _params
    from agent.sweep_space import duration_text

    first, resumed = 1_000_000.0, 1_000_000.0 + 3600
    runs = [RunRecord(run_id, "finished", {"lr": lr}, _params({"lr": lr}),
                      {"wall_s": 150.0, "val/acc": 0.5}, [], None, None,
                      started=resumed, ended=resumed + 50, host="somewhere", pack="p1",
                      created=first)
            for run_id, lr in (("a", 0.1), ("b", 0.01))]
    text = "\n".join(hardware_lines(Study("s", "s1", "local", {"method": "grid"}, runs)))
    assert "2 runs trained as 1 trial of up to 2 runs each" in text, text
    assert f"Run time: {duration_text(150.0)} summed over 1 trial" in text, text
    assert f"Wall time of the sweep: {duration_text(3650.0)} from" in text, text
    assert duration_text(150.0) != duration_text(50.0)  # the last stretch alone
