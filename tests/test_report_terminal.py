"""What the terminal and TensorBoard show of a sweep, without training: the search space
read from every distribution the sweep engine knows, numbers that stay distinct in short
form, the 80-column status table of a real SQLite store holding the course grid, the sweep's
progress and ETA, a run's header and the closing lines of ./run_sweep.sh."""

from __future__ import annotations

import io
import itertools
import json
import math
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from agent.sweep.controller import HEARTBEAT_TIMEOUT_S, claim
from agent.sweep.status import closing_lines, planned_runs, render_status, sweep_progress
from agent.sweep.store import create_store
from agent.sweep_space import short_number, spans_decades, swept_parameters
from agent.trial.sinks import RunInfo
from agent.trial.sinks.console_sink import end_line, epoch_line, header_lines

pytestmark = pytest.mark.timeout(120)
COURSE = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
          "parameters": {"dataset": {"value": "fashion_mnist"}, "epochs": {"value": 2},
                         "model": {"values": ["dense", "cnn"]},
                         "optimizer": {"values": ["sgd", "adam"]},
                         "lr": {"values": [0.1, 0.01, 0.001, 0.0001, 0.00001]},
                         "dropout": {"values": [0.0, 0.1, 0.3, 0.5]}}}


def engine_distributions() -> list[str]:
    """Every `distribution` the sweeps engine's own JSON schema allows."""
    import sweeps

    schema = json.loads((Path(sweeps.__file__).parent / "config" / "schema.json").read_text())
    found = set()

    def walk(node):
        if isinstance(node, dict):
            spec = node.get("distribution")
            if isinstance(spec, dict) and "enum" in spec:
                found.update(spec["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return sorted(found)


@pytest.mark.parametrize("distribution", engine_distributions())
def test_every_engine_distribution_is_read(distribution):
    spec = {"distribution": distribution, "min": 0.001, "max": 0.1, "mu": 0.0, "sigma": 1.0}
    if distribution in ("categorical", "categorical_w_probabilities"):
        spec = {"distribution": distribution, "values": [0.1, 0.001, 0.00001]}
    if distribution == "constant":
        spec = {"distribution": distribution, "value": 0.1}
    found = swept_parameters({"parameters": {"lr": spec, "epochs": {"value": 2}}})
    if distribution == "constant":
        assert found == []
        return
    (lr,) = found
    assert lr.name == "lr"
    # Log-distributed: the log_* families, or choices spread over two decades or more.
    assert lr.log == ("log_" in distribution or "values" in spec)


def test_values_are_log_from_two_decades_on():
    assert spans_decades([0.1, 0.00001]) and spans_decades([0.1, 0.01, 0.001])
    assert not spans_decades([0.1, 0.01]) and not spans_decades([0.1, 0.0011])
    assert not spans_decades([0.0, 0.5]) and not spans_decades(["sgd", "adam"])
    assert not spans_decades([True, 1000])


@pytest.mark.parametrize("low, high", [(1, 8), (16, 1024), (32, 512), (2, 4096)])
def test_the_reports_figures_read_powers_of_two_spread_8_fold_on_a_log_scale(low, high):
    """Batch sizes and widths 16 ... 1024 crowd a linear axis: the report's figures and its
    correlations read them log; decades stay log; anything else stays linear."""
    from agent.report.stats import numeric_values
    from agent.sweep_space import log_scaled

    powers = [2 ** k for k in range(low.bit_length() - 1, high.bit_length())]
    assert log_scaled(powers) and log_scaled([float(v) for v in powers])
    assert list(numeric_values(powers)) == pytest.approx([math.log10(v) for v in powers])
    assert not log_scaled(powers[:2]) or powers[1] / powers[0] >= 8
    assert not log_scaled([low, high - 1]) or spans_decades([low, high - 1])
    assert log_scaled([0.1, 0.01, 0.001]) and not log_scaled([0.0, 16, 1024])
    assert not log_scaled([16, 32, 64]) and not log_scaled([True, 1024])
    assert list(numeric_values([16, 32, 64])) == [16, 32, 64]


def test_short_numbers_keep_the_course_values_apart_in_seven_characters():
    values = [1.0, 0.1, 0.01, 0.001, 0.0001, 0.00001, 0.000001, 0.3, 0.5, 0.0005, 128, 5e-4]
    texts = [short_number(v) for v in values]
    assert texts[:7] == ["1", "0.1", "0.01", "0.001", "0.0001", "1e-05", "1e-06"]
    assert len(set(texts[:-1])) == len(values) - 1 and texts[-1] == texts[-3]
    assert all(len(t) <= 7 for t in texts)
    assert short_number("adam") == "adam" and short_number(True) == "True"


@pytest.fixture
def course_store(tmp_path):
    """The course grid in a real store: every run claimed, most finished with a summary."""
    store = create_store(tmp_path / "course", "course1", "course", COURSE)
    work = claim(store, "host:1", count=80)
    assert len(work.runs) == planned_runs(COURSE) == 80
    for i, run in enumerate(work.runs[:-3]):
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": 0.1 + i / 100, "test/acc": 0.09 + i / 100})
    return store


def test_status_table_fits_80_columns_with_distinct_values(course_store):
    out = io.StringIO()
    render_status(course_store, Console(file=out, width=80, color_system=None))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out.getvalue()
    rows = [line.split() for line in lines if line.strip()[:8] in
            {r.id for r in course_store.runs()}]
    assert len(rows) == 80
    assert {row[-2] for row in rows} == {"0.1", "0.01", "0.001", "0.0001", "1e-05"}
    assert {row[-1] for row in rows} == {"0", "0.1", "0.3", "0.5"}
    header = next(line for line in lines if "optimizer" in line).split()
    assert header[-4:] == ["model", "optimizer", "lr", "dropout"]


def test_a_status_table_wider_than_80_columns_keeps_every_run_id_in_a_file(tmp_path):
    """Into a file or a pipe (a log, a batch job's output, `| tee`), a table of many swept
    parameters is printed at its full width: at 80 columns rich cut the run ids, states and
    numbers to `4u1l63…`, `finish…`, `0.03…`."""
    config = {"method": "random", "metric": {"name": "val/acc", "goal": "maximize"},
              "run_cap": 4, "parameters": {
                  "optimizer": {"values": ["sgd", "adam", "adamw", "rmsprop"]},
                  "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.3},
                  "batch_size": {"values": [16, 64, 256]},
                  "weight_decay": {"distribution": "uniform", "min": 0, "max": 0.01},
                  "rho": {"distribution": "uniform", "min": 0.01, "max": 0.5}}}
    store = create_store(tmp_path / "wide", "wide1", "wide", config)
    for i in range(4):
        run = claim(store, "host:1").runs[0]
        store.finish(run.run_id, "host:1", "finished", {"val/acc": 0.5 + i / 100})
    out = io.StringIO()
    render_status(store, Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert "…" not in text, text
    assert all(run.id in text for run in store.runs()), text
    assert "finished" in text and "weight_decay" in text and "rho" in text


def test_closing_lines_name_the_next_commands(course_store, monkeypatch):
    monkeypatch.chdir(course_store.directory.parent)  # where ./run_sweep.sh ran
    for run in course_store.runs():  # the sweep ends: its best runs can be repeated
        if run.state == "running":
            course_store.finish(run.id, "host:1", "finished", {"val/acc": 0.2})
    lines = closing_lines(course_store)
    assert lines[:4] == ["Results: course/sweep.db",
                         "  TensorBoard logs: data/logs/course-course1/",
                         "  W&B offline runs: wandb/, uploaded to W&B by",
                         "    ./util/with_venv.sh wandb sync wandb/offline-run-*"]
    assert all(len(line) <= 80 for line in lines)
    assert "{" not in "".join(lines)  # no Python dict
    best = lines.index(next(line for line in lines if line.startswith("Best run:")))
    assert "val/acc=0.8600" in lines[best]
    # The setting goes on the next line when both would pass 80 columns.
    assert lines[best + 1] == "  model=dense optimizer=sgd lr=1e-05 dropout=0.5"
    assert lines[-3:] == ["  ./util/with_venv.sh python -m agent.repeat course1 --run",
                          "  ./util/with_venv.sh python -m agent.report course1",
                          "  ./run_tensorboard.sh --logdir data/logs/course-course1"]


def tie_the_best(store, count: int):
    """(the best finished run, the runs that were running): `count` of them end at exactly
    the best value."""
    running = [r for r in store.runs() if r.state == "running"]
    first = max((r for r in store.runs() if r.state == "finished"),
                key=lambda r: r.summary["val/acc"])
    for run in running[:count]:
        assert store.finish(run.id, "host:1", "finished",
                            {"val/acc": first.summary["val/acc"], "test/acc": 0.5})
    return first, running


def test_a_best_run_tied_with_others_names_them_in_the_closing_lines_and_the_status(
        course_store, monkeypatch):
    """Two more runs end at exactly the best value: the best named is the first of them in
    the sweep's order, and both the closing lines and agent.status say it is tied, with
    whom (the report's best-run paragraph does too)."""
    monkeypatch.chdir(course_store.directory.parent)
    first, running = tie_the_best(course_store, 2)
    lines = closing_lines(course_store)
    best = lines.index(next(line for line in lines if line.startswith("Best run:")))
    assert lines[best].startswith(f"Best run: {first.id} val/acc=0.8600")
    tie = next(line for line in lines[best + 1:] if "tied" in line)
    assert tie == (f"  (tied with 2 other runs: {running[0].id}, {running[1].id}; the first "
                   "in the sweep's order)")
    assert max(len(line) for line in lines) <= 80
    assert f"best so far: {first.id} val/acc=0.8600 (tied with {running[0].id}, " \
        f"{running[1].id})" in status_text(course_store)


def test_a_best_run_tied_with_three_others_keeps_the_closing_lines_under_80_columns(
        course_store, monkeypatch):
    """Three more runs at exactly the best value (the digits set's 144 validation images make
    such ties common): the tie's line, 88 columns with its three ids, is cut in two."""
    monkeypatch.chdir(course_store.directory.parent)
    first, running = tie_the_best(course_store, 3)
    lines = closing_lines(course_store)
    tie = lines.index(next(line for line in lines if "(tied with" in line))
    ids = ", ".join(r.id for r in running[:3])
    assert lines[tie:tie + 2] == [f"  (tied with 3 other runs: {ids};",
                                  "   the first in the sweep's order)"], lines
    assert max(len(line) for line in lines) <= 80, lines


def test_progress_counts_runs_and_paces_the_eta(course_store):
    runs = course_store.runs()
    first = min(r.started for r in runs)
    progress = sweep_progress(runs, COURSE, [runs[5].id, runs[6].id], now=first + 770.0)
    assert progress["index"] == {runs[5].id: 6, runs[6].id: 7}
    assert progress["total"] == 80 and progress["done"] == 77
    # 77 runs ended in 770 s: 0.1 run/s, 3 left
    assert progress["eta_s"] == pytest.approx(3 / (77 / 770.0))
    assert sweep_progress(runs, {**COURSE, "method": "random"}, [])["eta_s"] is None


def test_the_eta_paces_the_runs_by_the_time_they_trained_not_a_pause_between(course_store):
    """A sweep stopped (Ctrl-C, an agent killed) and taken up again the next day: the ETA
    paced the runs ended by the time since the first run started, the pause included, so
    that ten runs of 10 s and a day's pause read 'about 168 h left' for 70 more such runs
    (and 'about 2 min' for 4 runs of 11 s after a Ctrl-C and 20 s before going on with
    agent.repeat). The pace is that of the time some run trained: the union of the runs'
    spans, a crashed run's up to its last heartbeat (its agent went silent there; the claim
    that marked it crashed came a day later), a running one's up to now."""
    runs = course_store.runs()
    t0, day = 1_000_000.0, 86_400.0
    ended = [replace(run, state="finished", started=t0 + 10 * k, ended=t0 + 10 * (k + 1),
                     heartbeat=t0 + 10 * (k + 1)) for k, run in enumerate(runs[:10])]
    crashed = replace(runs[10], state="crashed", started=t0 + 100, heartbeat=t0 + 103,
                      ended=t0 + 100 + day)
    again = t0 + 100 + day
    running = replace(runs[11], state="running", started=again, heartbeat=again + 5,
                      ended=None)
    pending = [replace(run, state="pending", started=None, ended=None, heartbeat=None)
               for run in runs[12:]]
    progress = sweep_progress([*ended, crashed, running, *pending], COURSE, [running.id],
                              now=again + 5)
    assert progress["done"] == 10 and progress["index"] == {running.id: 12}
    # 10 runs ended in 108 s of training (100 + 3 + 5), 70 left
    assert progress["eta_s"] == pytest.approx(70 / (10 / 108))
    info = RunInfo(running.id, running.id, "course", "logs", "runs", sweep={
        "id": "course1", "name": "course", "config": COURSE, "progress": progress})
    assert "10 done, about 13 min left" in header_lines(info, running.config)[1]


def test_run_header_shows_every_swept_parameter_and_the_sweep_pace():
    info = RunInfo("k3x9q0ab", "k3x9q0ab", "course", "logs", "runs", sweep={
        "id": "course1", "name": "course", "config": COURSE,
        "progress": {"index": {"k3x9q0ab": 12}, "total": 80, "done": 11, "eta_s": 1500.0}})
    config = {"dataset": "fashion_mnist", "epochs": 2, "batch_size": 128, "model": "cnn",
              "optimizer": "adam", "lr": 0.0001, "dropout": 0.3}
    first, second = header_lines(info, config)
    assert first == "run 12/80 k3x9q0ab  model=cnn optimizer=adam lr=0.0001 dropout=0.3"
    assert second == ("  sweep course (course1): 11 done, about 25 min left; epochs=2 "
                      "batch_size=128")
    assert len(second) <= 80
    # runs of a fraction of a second: the last run's header says so, not 'about 0 s left'
    quick = RunInfo("k3x9q0ab", "k3x9q0ab", "course", "logs", "runs", sweep={
        "id": "course1", "name": "course", "config": COURSE,
        "progress": {"index": {"k3x9q0ab": 80}, "total": 80, "done": 79, "eta_s": 0.3}})
    assert header_lines(quick, config)[1].startswith(
        "  sweep course (course1): 79 done, under a second left;")
    line = end_line(info, {"val/acc": 0.8123, "test/acc": 0.805, "wall_s": 45.2}, "finished")
    assert line == "run 12/80 k3x9q0ab finished: val/acc 0.8123 test/acc 0.8050 (45 s)"
    lone = RunInfo("abc", "abc", "default", "logs", "runs")
    (only,) = header_lines(lone, config)
    assert only == ("run abc  dataset=fashion_mnist model=cnn optimizer=adam lr=0.0001 "
                    "batch_size=128 dropout=0.3 epochs=2")
    assert math.isfinite(len(only))


def test_run_header_shows_the_swept_leaves_of_nested_parameters():
    """Another program's sweep of nested parameters (the config: block of
    Axelisme/NN_TEMPLATE configs/sweep.yaml: lr and batch_size deep inside conf, each run
    getting --conf={...}): the header named no parameter, 'run 1/? 6hmjoyzb  ', for runs
    that differ by lr and batch_size; it now names each swept leaf as W&B names a nested key,
    as the status table and the closing lines do."""
    nested = {"method": "random", "program": "train.py", "parameters": {"conf": {"parameters": {
        "runner": {"parameters": {"total_steps": {"value": 100}}},
        "optimizer": {"parameters": {"kwargs": {"parameters": {
            "lr": {"values": [0.0001, 0.0003]}}}}},
        "loader": {"parameters": {"batch_size": {"values": [16, 32, 64]}}}}}}}
    info = RunInfo("6hmjoyzb", "6hmjoyzb", "nested", "logs", "runs", sweep={
        "id": "nest1", "name": "nested", "config": nested,
        "progress": {"index": {"6hmjoyzb": 1}, "total": None, "done": 0}})
    config = {"conf": {"runner": {"total_steps": 100}, "optimizer": {"kwargs": {"lr": 0.0003}},
                       "loader": {"batch_size": 64}}}
    first, _ = header_lines(info, config)
    assert first == ("run 1/? 6hmjoyzb  conf.optimizer.kwargs.lr=0.0003 "
                     "conf.loader.batch_size=64")


def test_an_unfinished_sweep_ends_with_how_to_go_on(course_store, monkeypatch):
    """Stopped by Ctrl-C or SIGTERM (3 of 80 runs still open): the last lines say so and name
    the command that goes on with the same sweep, before the next steps; no command repeats
    the best runs over seeds yet (the best of 77 ended runs; one of the 3 left may beat it),
    only that it comes once the sweep has ended. Ended, the repeat command is back."""
    monkeypatch.chdir(course_store.directory.parent)
    lines = closing_lines(course_store)
    at = lines.index("Not finished (77 of 80 runs ended): go on where it stopped with")
    assert lines[at + 1] == "  ./run_sweep.sh course1"
    # a launch with agent options goes on with the same ones (a packed sweep stays packed)
    packed = closing_lines(course_store, " --pack 4 --agents 2")
    assert packed[packed.index(lines[at]) + 1] == "  ./run_sweep.sh course1 --pack 4 --agents 2"
    assert not any("agent.repeat course1" in line or line.startswith("Next:") for line in lines)
    assert lines[at + 2:] == [
        "Once the sweep has ended: repeat its best runs over 5 seeds (agent.repeat)",
        "Meanwhile: the report so far, and TensorBoard:",
        "  ./util/with_venv.sh python -m agent.report course1",
        "  ./run_tensorboard.sh --logdir data/logs/course-course1"], lines
    assert all(len(line) <= 80 for line in lines)
    for run in course_store.runs():
        if run.state == "running":
            course_store.finish(run.id, "host:1", "finished", {"val/acc": 0.2})
    lines = closing_lines(course_store)
    assert not any(line.startswith(("Not finished", "Once the sweep")) for line in lines)
    assert "  ./util/with_venv.sh python -m agent.repeat course1 --run" in lines


def test_a_sweep_stopped_by_its_metric_target_says_so(tmp_path, monkeypatch):
    """W&B makes no new runs once a run reaches metric.target: status and the closing lines
    say that, not 'not finished'."""
    config = {**COURSE, "metric": {"name": "val/acc", "goal": "maximize", "target": 0.5}}
    store = create_store(tmp_path / "t", "tgt1", "tgt", config)
    (run,) = claim(store, "host:1", count=1).runs
    store.finish(run.run_id, "host:1", "finished", {"val/acc": 0.6})
    monkeypatch.chdir(tmp_path)
    lines = closing_lines(store)
    assert "metric.target val/acc >= 0.5 reached: no new runs" in lines
    assert not any(line.startswith("Not finished") for line in lines)
    out = io.StringIO()
    render_status(store, Console(file=out, width=80, color_system=None))
    assert "metric.target val/acc >= 0.5 reached: no new runs" in out.getvalue()
    assert claim(store, "host:1", count=1).runs == []  # and indeed nothing more is proposed


def status_text(store) -> str:
    """What `python -m agent.status` prints for `store` on an 80-column terminal."""
    out = io.StringIO()
    render_status(store, Console(file=out, width=80, color_system=None))
    return out.getvalue()


def shown_in_row(text: str, run_id: str) -> str:
    """The state column of the run's row in a status table."""
    return next(line for line in text.splitlines() if line.strip().startswith(run_id)).split()[1]


def test_a_diverged_run_is_counted_and_shown_as_diverged(course_store):
    run = next(r for r in course_store.runs() if r.state == "running")
    course_store.finish(run.id, "host:1", "finished", {"diverged": True, "val/acc": 0.1})
    text = status_text(course_store)
    assert "2 running, 77 finished, 1 diverged" in " ".join(text.split())
    assert shown_in_row(text, run.id) == "diverged"


@pytest.mark.parametrize("epochs", [3, 100])
def test_a_packs_epoch_lines_name_their_run_within_80_columns(epochs):
    metrics = {"epoch": epochs, "train/loss": 12345.6, "train/acc": 0.1, "val/loss": 0.4311,
               "val/acc": 0.872, "lr": 0.0, "perf/images_per_s": 123456.0,
               "perf/epoch_s": 123.4}
    alone = RunInfo("k3x9q0ab", "k3x9q0ab", "g", "logs", "runs")
    member = RunInfo("k3x9q0ab", "k3x9q0ab", "g", "logs", "runs", pack=16)
    assert epoch_line(alone, epochs, metrics, lr=0.0001).startswith(
        f"epoch {epochs}/{epochs} train")
    line = epoch_line(member, epochs, metrics, lr=0.0001)
    assert line.startswith(f"k3x9q0ab {epochs}/{epochs} train 1.2e4 ") and len(line) <= 80
    assert " lr 0.0001 " in line  # the epoch's own lr, not the row's (its end's)
    # a run alone whose agent shares the terminal with others: named the same way
    assert epoch_line(alone, epochs, metrics, lr=0.0001, named=True) == line


def test_a_crashed_run_that_was_repeated_leaves_the_sweep_open_only_until_its_repeat_ends(
        course_store, monkeypatch):
    """A repeat stands for its crashed run: the sweep is not finished while the repeat is
    open, and finished (no hint to go on, which would train nothing) once it has ended."""
    monkeypatch.chdir(course_store.directory.parent)
    later = time.time() + HEARTBEAT_TIMEOUT_S + 1  # the 3 running runs have gone silent
    repeats = claim(course_store, "host:2", count=3, now=later).runs
    assert [r.state for r in course_store.runs()].count("crashed") == 3 and len(repeats) == 3
    assert "Not finished (77 of 80 runs ended): go on where it stopped with" in \
        closing_lines(course_store)
    for run in repeats:
        course_store.finish(run.run_id, "host:2", "finished", {"val/acc": 0.3})
    lines = closing_lines(course_store)
    assert not any(line.startswith("Not finished") for line in lines)
    assert "80 finished, 3 crashed (repeated)" in " ".join(status_text(course_store).split())


def test_a_resumed_runs_eta_is_its_epochs_left_at_its_own_pace(tmp_path):
    """A run resumed at epoch 12 of 30 (preempted, or a crashed run's repeat) started a
    moment ago but counts the 12 epochs trained before: its ETA is the 18 epochs left at its
    trainer's seconds an epoch (perf/epoch_s, 2 s here), not 18 x (a moment / 12)."""
    config = {**COURSE, "parameters": {**COURSE["parameters"], "epochs": {"value": 30},
                                       "lr": {"value": 0.1}, "dropout": {"value": 0.0},
                                       "model": {"value": "dense"},
                                       "optimizer": {"value": "sgd"}}}
    store = create_store(tmp_path / "resumed", "resumed1", "resumed", config)
    (run,) = claim(store, "host:1").runs
    for epoch in range(1, 13):
        assert store.record_epoch(run.run_id, "host:1", epoch,
                                  {"epoch": epoch, "val/acc": 0.5, "perf/epoch_s": 2.0})
    row = next(line for line in status_text(store).splitlines()
               if line.strip().startswith(run.run_id)).split()
    assert row[2] == "12/30" and " ".join(row[4:6]) == "36 s", row


@pytest.mark.parametrize("further", [False, True])
def test_a_repeat_crashed_without_an_epoch_more_ends_its_run_and_the_hint_to_go_on(
        tmp_path, monkeypatch, further):
    """A crashed run's repeat that crashes too is repeated again only when it got an epoch
    further (controller.repeatable). If not, nothing would train that run any more: the
    closing lines name it, and do not tell the user to go on (it would train nothing)."""
    monkeypatch.chdir(tmp_path)
    config = {**COURSE, "parameters": {**COURSE["parameters"], "epochs": {"value": 10},
                                       "lr": {"value": 0.1}, "dropout": {"value": 0.0},
                                       "model": {"value": "dense"},
                                       "optimizer": {"value": "sgd"}}}
    store = create_store(tmp_path / "data" / "sweeps" / "twice1", "twice1", "twice", config)
    (first,) = claim(store, "host:1").runs
    for epoch in (1, 2):
        assert store.record_epoch(first.run_id, "host:1", epoch, {"epoch": epoch})
    (repeat,) = claim(store, "host:2", now=time.time() + 10 ** 6).runs
    assert repeat.repeats == first.run_id and repeat.epoch == 2
    if further:
        assert store.record_epoch(repeat.run_id, "host:2", 3, {"epoch": 3})
    assert claim(store, "host:3", now=time.time() + 2 * 10 ** 6).kind == \
        ("run" if further else "done")  # the repeat went silent too
    lines = closing_lines(store)
    if further:
        assert "Not finished (0 of 1 runs ended): go on where it stopped with" in lines
        assert not any(line.startswith("Crashed again") for line in lines)
    else:
        assert f"Crashed again, not repeated: {repeat.run_id} (epoch 2)" in lines
        assert not any(line.startswith("Not finished") for line in lines), lines
    assert max(len(line) for line in lines) <= 80


def test_a_crashed_repeat_without_checkpoints_is_named_with_its_own_reason(tmp_path,
                                                                          monkeypatch):
    """Under checkpoint: false a crashed run's repeat starts over (nothing to continue), and
    a repeat that crashes too is not repeated again however far it got: the closing lines
    say so, not that it got no epoch further (this one got to epoch 3, the first to 2)."""
    monkeypatch.chdir(tmp_path)
    config = {**COURSE, "parameters": {**COURSE["parameters"], "epochs": {"value": 10},
                                       "lr": {"value": 0.1}, "dropout": {"value": 0.0},
                                       "model": {"value": "dense"},
                                       "optimizer": {"value": "sgd"},
                                       "checkpoint": {"value": False}}}
    store = create_store(tmp_path / "data" / "sweeps" / "nockpt1", "nockpt1", "nockpt", config)
    (first,) = claim(store, "host:1").runs
    for epoch in (1, 2):
        assert store.record_epoch(first.run_id, "host:1", epoch, {"epoch": epoch})
    (repeat,) = claim(store, "host:2", now=time.time() + 10 ** 6).runs
    assert repeat.repeats == first.run_id and repeat.epoch == 0  # from scratch
    for epoch in (1, 2, 3):
        assert store.record_epoch(repeat.run_id, "host:2", epoch, {"epoch": epoch})
    assert claim(store, "host:3", now=time.time() + 2 * 10 ** 6).kind == "done"
    lines = closing_lines(store)
    at = lines.index(f"Crashed again, not repeated: {repeat.run_id} (epoch 3)")
    assert lines[at + 1] == ("  (checkpoint: false: a repeat starts over, and is not repeated "
                             "again)"), lines
    assert not any("no epoch further" in line for line in lines), lines
    assert max(len(line) for line in lines) <= 80


def test_a_running_run_without_heartbeats_is_shown_silent_with_what_repairs_it(course_store):
    run = next(r for r in course_store.runs() if r.state == "running")
    with sqlite3.connect(course_store.path) as db:  # its agent was killed a while ago
        db.execute("UPDATE runs SET heartbeat=? WHERE id=?",
                   (time.time() - HEARTBEAT_TIMEOUT_S - 5, run.id))
    text = status_text(course_store)
    assert "2 running, 1 silent, 77 finished" in " ".join(text.split())
    assert shown_in_row(text, run.id) == "silent"
    assert "./run_sweep.sh course1" in " ".join(text.split())


def test_counts_tell_runs_proposed_and_waiting_from_runs_not_proposed_yet(tmp_path):
    """A random sweep of run_cap 10 with two runs running and the proposal --pack auto
    measured kept as a pending run (controller.keep_proposal): its counts read '2 running, 1
    pending, 7 not started', two words for runs that have not started, which a newcomer
    running `agent.status` beside --agents 2 --pack auto cannot tell apart. The runs the
    engine has not proposed are now 'not proposed'; 'pending' is a run proposed and
    waiting for an agent (its row in the table)."""
    from agent.sweep.controller import keep_proposal
    from agent.sweep.engine import proposed_params

    config = {**COURSE, "method": "random", "run_cap": 10}
    store = create_store(tmp_path / "r", "rnd10", "rnd", config)
    claim(store, "host:1", count=2)
    assert keep_proposal(store, proposed_params(config, store.runs())) == 1
    text = " ".join(status_text(store).split())
    assert "10 runs planned): 1 pending, 2 running, 7 not proposed" in text, text
    assert "not started" not in text


def test_counts_say_how_many_planned_runs_have_not_started_and_no_next_steps_before_a_result(
        tmp_path, monkeypatch):
    store = create_store(tmp_path / "r", "rnd1", "rnd", {**COURSE, "method": "random",
                                                         "run_cap": 4})
    claim(store, "host:1", count=3)
    assert "4 runs planned): 3 running, 1 not proposed" in " ".join(status_text(store).split())
    monkeypatch.chdir(tmp_path)
    lines = closing_lines(store)
    assert "Not finished (0 of 4 runs ended): go on where it stopped with" in lines
    assert not any(line.startswith("Next:") for line in lines)  # nothing to repeat yet


def test_the_runs_of_an_agent_that_ended_mid_trial_are_crashed_and_repeated_at_once(
        course_store):
    from agent.sweep.controller import repair_ended_agents

    with course_store.transaction() as tx:  # another agent's run, alive
        tx.insert_run("other001", {"lr": 0.1}, "running", owner="host:9")
    left = {r.id for r in course_store.runs() if r.owner == "host:1" and r.state == "running"}
    assert set(repair_ended_agents(course_store, {"host:1"})) == left and len(left) == 3
    runs = course_store.runs()
    crashed = [r for r in runs if r.state == "crashed"]
    assert {r.id for r in crashed} == left and course_store.run("other001").state == "running"
    assert sorted(r.requeued_from for r in runs if r.requeued_from) == sorted(
        r.id for r in crashed)
    assert repair_ended_agents(course_store, {"host:1"}) == []  # once
    assert len([r for r in course_store.runs() if r.requeued_from]) == 3


def test_the_report_leaves_a_repeated_crashed_run_out_and_names_it(course_store):
    """Its partial history would count its configuration twice beside its repeat's result."""
    from agent.report.study import local_study

    later = time.time() + HEARTBEAT_TIMEOUT_S + 1
    repeats = claim(course_store, "host:2", count=3, now=later).runs
    for run in repeats:
        course_store.finish(run.run_id, "host:2", "finished", {"val/acc": 0.3})
    study = local_study(course_store)
    crashed = sorted(r.id for r in course_store.runs() if r.state == "crashed")
    assert len(study.runs) == 80 and not {r.id for r in study.runs} & set(crashed)
    assert sorted(c for c, _ in study.repeated) == crashed
    assert {r for _, r in study.repeated} == {r.run_id for r in repeats}


def _one_finished_run(tmp_path, sweep_id: str, config: dict):
    store = create_store(tmp_path / sweep_id, sweep_id, sweep_id, config)
    (run,) = claim(store, "host:1", count=1).runs
    store.finish(run.run_id, "host:1", "finished", {"val/acc": 0.5, "score": 3.0})
    return store


def test_closing_lines_of_a_program_sweep_name_no_logs_and_no_report(tmp_path, monkeypatch):
    """Another program writes neither our TensorBoard logs nor our trainer's files: no
    folder that would stay empty, no repeat or report that would refuse it."""
    monkeypatch.chdir(tmp_path)
    store = _one_finished_run(tmp_path, "prog1", {
        "method": "grid", "program": "score.py", "metric": {"name": "score", "goal": "maximize"},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        "parameters": {"a": {"values": [1]}}})
    lines = closing_lines(store)
    assert lines[0] == "Results: prog1/sweep.db" and any(line.startswith("Best run:")
                                                          for line in lines)
    assert not any("TensorBoard" in line or "agent.re" in line or "W&B offline" in line
                   for line in lines)


def test_closing_lines_of_a_repeat_sweep_name_its_real_folder_and_the_repeated_report(
        tmp_path, monkeypatch):
    from agent.sweep.status import repeat_description

    monkeypatch.chdir(tmp_path)
    store = _one_finished_run(tmp_path, "rep1", {
        "method": "grid", "description": repeat_description("orig1", "run7"),
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.1]}, "seed": {"values": [1]},
                       "log_dir": {"value": "data/logs/course-orig1-repeats"}}})
    lines = closing_lines(store)
    assert "  TensorBoard logs: data/logs/course-orig1-repeats/rep1-rep1/" in lines
    assert lines[-3:] == ["Next: the report of the sweep it repeats, and TensorBoard:",
                          "  ./util/with_venv.sh python -m agent.report orig1",
                          "  ./run_tensorboard.sh --logdir data/logs/course-orig1-repeats/"
                          "rep1-rep1"]


@pytest.mark.parametrize("pack, named", [(1, False), (16, False), (1, True)])
def test_epoch_lines_fit_80_columns_over_the_course_values(pack, named):
    """Every lr of the course grid and a schedule's small ones, losses from 0 to a blow-up,
    accuracies up to 100%, a CPU's to a GPU's rates (an epoch of 54,000 images at that
    rate), 2 to 999 epochs: one line within 80 columns."""
    run = RunInfo("k3x9q0ab", "k3x9q0ab", "g", "logs", "runs", pack=pack)
    for lr, loss, acc, rate, epochs in itertools.product(
            (0.1, 0.01, 0.001, 0.0001, 0.00001, 9.71e-05, 0.0349, 1.23456e-07),
            (0.4123, 2.3026, 12345.6, float("inf")), (0.8765, 1.0),
            (123.0, 12345.0, 999999.0, 4.2e6), (2, 100, 999)):
        line = epoch_line(run, epochs, {
            "epoch": epochs, "train/loss": loss, "train/acc": acc, "val/loss": loss,
            "val/acc": acc, "lr": lr, "perf/images_per_s": rate,
            "perf/epoch_s": 54000 / rate}, lr=lr, named=named)
        assert len(line) <= 80, (len(line), line)


def test_the_status_of_a_program_sweep_shows_its_metric_and_the_rows_it_logged(tmp_path):
    store = create_store(tmp_path / "prog2", "prog2", "prog2", {
        "method": "grid", "program": "score.py", "metric": {"name": "score", "goal": "maximize"},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        "parameters": {"a": {"values": [1, 2]}}})
    for run, value in zip(claim(store, "host:1", count=2).runs, (3.0, 6.5)):
        for epoch in (1, 2, 3):
            store.record_epoch(run.run_id, "host:1", epoch, {"score": value * epoch / 3})
        store.finish(run.run_id, "host:1", "finished", {"score": value})
    text = status_text(store)
    header = next(line for line in text.splitlines() if "state" in line).split()
    assert header == ["run", "state", "rows", "score", "a"]
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.strip()[:8] in {r.id for r in store.runs()}}
    assert sorted((row[2], row[3]) for row in rows.values()) == [("3", "3"), ("3", "6.5")]
    assert "/10" not in text and "val/acc" not in text


@pytest.mark.parametrize("sinks,board", [([], False), (["wandb"], False),
                                         (["tensorboard"], True), (None, True)])
def test_closing_lines_offer_tensorboard_only_where_runs_logged_to_it(tmp_path, monkeypatch,
                                                                       sinks, board):
    monkeypatch.chdir(tmp_path)
    parameters = {"lr": {"values": [0.1]}}
    if sinks is not None:  # None: the trainer's default sinks (TensorBoard among them)
        parameters["sinks"] = {"value": sinks}
    store = _one_finished_run(tmp_path, "tb1", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": parameters})
    text = "\n".join(closing_lines(store))
    assert ("TensorBoard" in text) == board and ("run_tensorboard.sh" in text) == board
    assert "agent.report tb1" in text


@pytest.mark.parametrize("command,parameters,shown", [
    (["${env}", "python", "-m", "agent.train", "--epochs=3", "${args}"], {}, "0/3"),
    (["${env}", "python", "-m", "agent.train", "--epochs=3", "${args}"],
     {"epochs": {"value": 4}}, "0/4"),  # the run's own value wins, as in the trial
    (["${env}", "python", "-m", "agent.train", "${args}"], {}, "0/10"),  # the default
    (["${env}", "python", "-m", "agent.train", "--epochs", "2", "${args_no_equals}"], {},
     "0/2"),
    (["${env}", "python", "-m", "agent.train", "--epochs=1", "${args_json_file}"], {}, "0/1"),
])
def test_the_status_counts_the_epochs_a_commands_fixed_argument_gives(tmp_path, command,
                                                                      parameters, shown):
    store = create_store(tmp_path / "ep1", "ep1", "ep1", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "command": command, "parameters": {"lr": {"values": [0.1]}, **parameters}})
    (run,) = claim(store, "host:1", count=1).runs
    row = [line for line in status_text(store).splitlines() if run.run_id in line]
    assert row and row[0].split()[2] == shown, row


def test_the_status_counts_are_never_broken_inside_a_phrase(tmp_path):
    store = create_store(tmp_path / "long1", "long1", "a-rather-long-sweep-name-for-a-course",
                         {**COURSE, "method": "random", "run_cap": 40})
    claim(store, "host:1", count=3)
    work = claim(store, "host:1", count=2)
    store.finish(work.runs[0].run_id, "host:1", "finished", {"val/acc": 0.5})
    store.finish(work.runs[1].run_id, "host:1", "failed", error="boom")
    lines = status_text(store).splitlines()
    assert max(map(len, lines)) <= 80
    counts = next(i for i, line in enumerate(lines) if "planned)" in line)
    assert lines[counts].endswith("runs planned):")  # the counts go on a line of their own
    assert lines[counts + 1] == "  3 running, 1 finished, 1 failed, 35 not proposed"


@pytest.mark.parametrize("macro", ["${args}", "${args_json_file}", "${args_no_hyphens}"])
def test_the_reports_fixed_parameters_hold_what_the_command_fixes(tmp_path, macro):
    from agent.report.setup_section import fixed_rows
    from agent.report.study import local_study

    store = create_store(tmp_path / "fx1", "fx1", "fx1", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "command": ["${env}", "python", "-m", "agent.train", "--epochs=3", "--model=dense",
                    "--hidden=64", macro],
        "parameters": {"lr": {"values": [0.1, 0.01]}, "batch_size": {"value": 32}}})
    for run in claim(store, "host:1", count=2).runs:
        store.finish(run.run_id, "host:1", "finished", {"val/acc": 0.5})
    rows = {row[0]: row[1:3] for row in fixed_rows(local_study(store), ["lr"])}
    assert rows["`epochs`"] == ["3", "command"] and rows["`hidden`"] == ["64", "command"]
    assert rows["`model`"] == ["dense", "command"]
    assert rows["`batch_size`"] == ["32", "sweep file"]
    assert rows["`momentum`"][1] == "default"


def table_ids(text: str, store) -> list[str]:
    ids = {r.id for r in store.runs()}
    return [line.split()[0] for line in text.splitlines() if line.split()[:1]
            and line.split()[0] in ids]


@pytest.mark.parametrize("metric", [m for m in __import__("agent.metrics").metrics.METRICS
                                    if m.goal], ids=lambda m: m.name)
def test_the_closing_table_lists_the_best_runs_first_by_the_sweeps_goal(tmp_path, metric):
    """Every metric a sweep may optimise, with its goal: the `limit` runs shown are the best
    by that goal (the best first, runs without a value last), and the metric has a column."""
    config = {**COURSE, "metric": {"name": metric.name, "goal": metric.goal}}
    store = create_store(tmp_path / "g", "goal1", "goal", config)
    runs = claim(store, "host:1", count=12).runs
    values = [0.31, 0.05, 0.77, 0.42, 0.9, 0.13, 0.66, 0.58, 0.24, 0.85, 0.5]
    for run, v in zip(runs, values):
        store.finish(run.run_id, "host:1", "finished", {"val/acc": 0.5, "test/acc": 0.5,
                                                          metric.name: v})
    store.finish(runs[-1].run_id, "host:1", "failed", {})  # no value: shown last, if at all
    out = io.StringIO()
    render_status(store, Console(file=out, width=120, color_system=None), limit=5)
    text = out.getvalue()
    order = sorted(zip(values, [r.run_id for r in runs]),
                   reverse=metric.goal == "maximize")
    assert table_ids(text, store) == [run_id for _, run_id in order[:5]]
    best_value, best_id = order[0]
    assert f"best so far: {best_id} {metric.name}={best_value:.4f}" in text
    assert metric.name in text.splitlines()[next(i for i, line in enumerate(text.splitlines())
                                                 if line.split()[:1] == ["run"])]


def test_the_closing_table_lists_runs_with_a_result_and_counts_the_rest(tmp_path):
    """A launch stopped by SIGTERM (--pack auto): 2 runs finished, 2 preempted mid-training
    (an epoch in their history, no result), 8 parked pending. The table of the best 10 listed
    the 8 pending as rows of blanks (`pending 0/15`); it lists the finished ones, and one
    line counts the others by state. With no result at all, that line alone."""
    store = create_store(tmp_path / "s", "stop1", "stopped", COURSE)
    first = claim(store, "host:1", count=4).runs
    for run, value in zip(first[:2], (0.61, 0.83)):
        store.finish(run.run_id, "host:1", "finished", {"val/acc": value, "test/acc": 0.5})
    for run in first[2:]:
        assert store.record_epoch(run.run_id, "host:1", 1, {"val/acc": 0.3})
        store.finish(run.run_id, "host:1", "preempted")
    with store.transaction() as tx:  # as a claim parks the runs of another pack
        for i in range(8):
            tx.insert_run(f"park{i}", {**first[0].config, "lr": 0.5 + i}, "pending")
    assert len(store.runs()) == 12

    def closing() -> str:
        out = io.StringIO()
        render_status(store, Console(file=out, width=200, color_system=None), limit=10)
        return out.getvalue()

    text = closing()
    assert table_ids(text, store) == [first[1].run_id, first[0].run_id], text
    assert "pending" not in [line.split()[1] for line in text.splitlines()
                             if line.split()[:1] == [first[0].run_id]]
    assert text.splitlines()[-1] == ("(the best 2 of 12 runs; without a result: 8 pending, 2 "
                                     "preempted; all of them: ./util/with_venv.sh python -m "
                                     "agent.status stop1)")
    none = create_store(tmp_path / "n", "none1", "none", COURSE)
    (run,) = claim(none, "host:1", count=1).runs
    none.finish(run.run_id, "host:1", "failed", error="out of memory")
    out = io.StringIO()
    render_status(none, Console(file=out, width=200, color_system=None), limit=10)
    assert table_ids(out.getvalue(), none) == []
    assert out.getvalue().splitlines()[-1] == (
        "no run has a result (val/acc) yet: 1 failed; all of them: ./util/with_venv.sh "
        "python -m agent.status none1")
    # every run preempted mid-training: no result, but where their last epochs are is said
    # (as the table's val/acc column reads it: the epoch a resumed run goes on from)
    preempted = create_store(tmp_path / "p", "pre1", "preempted", COURSE)
    runs = claim(preempted, "host:1", count=2).runs
    for run, values in zip(runs, ((0.31, 0.45), (0.52, 0.48))):
        for epoch, value in enumerate(values, 1):
            assert preempted.record_epoch(run.run_id, "host:1", epoch, {"val/acc": value})
        preempted.finish(run.run_id, "host:1", "preempted")
    out = io.StringIO()
    render_status(preempted, Console(file=out, width=200, color_system=None), limit=10)
    assert table_ids(out.getvalue(), preempted) == []
    assert out.getvalue().splitlines()[-1] == (
        "no run has a result (val/acc) yet: 2 preempted; the best so far at its last epoch: "
        f"{runs[1].run_id} val/acc=0.4800 (epoch 2); all of them: ./util/with_venv.sh "
        "python -m agent.status pre1"), out.getvalue()
    # in 80 columns: wrapped between words, the rest indented, the command whole on a line
    for store_, sweep_id in ((store, "stop1"), (none, "none1"), (preempted, "pre1")):
        out = io.StringIO()
        render_status(store_, Console(file=out, width=80, color_system=None), limit=10)
        closing_lines = out.getvalue().splitlines()
        last = next(i for i, line in enumerate(closing_lines)
                    if line.startswith(("(the best", "no run has")))
        tail = closing_lines[last:]
        assert all(len(line) <= 80 for line in tail) and len(tail) > 1, tail
        assert all(line.startswith("  ") for line in tail[1:]), tail
        command = f"./util/with_venv.sh python -m agent.status {sweep_id}"
        assert any(command in line for line in tail), tail


def test_another_programs_sweep_without_a_goal_is_minimized_as_wandb_does(tmp_path):
    """W&B's default goal is minimize: a sweep of another program that names none lists its
    lowest values first."""
    config = {"program": "train.py", "command": ["python", "train.py", "${args}"],
              "method": "grid", "metric": {"name": "score"},
              "parameters": {"x": {"values": list(range(6))}}}
    store = create_store(tmp_path / "p", "prog1", "prog", config)
    runs = claim(store, "host:1", count=6).runs
    values = [0.518, 0.517, 0.223, 0.9, 0.1, 0.4]
    for run, v in zip(runs, values):
        store.finish(run.run_id, "host:1", "finished", {"score": v})
    out = io.StringIO()
    render_status(store, Console(file=out, width=100, color_system=None), limit=3)
    order = [run.run_id for _, run in sorted(zip(values, runs), key=lambda pair: pair[0])]
    assert table_ids(out.getvalue(), store) == order[:3]


def test_a_sweep_without_a_metric_ranks_our_trainers_runs_by_val_acc_best_high(tmp_path):
    """No `metric:` optimises nothing on W&B; the status (and the report, which reads the
    same metric_of) then rank by val/acc, highest first, never the worst run as the best."""
    from agent.sweep.status import best_run

    config = {"program": "agent/train.py", "method": "grid",
              "parameters": {"lr": {"values": [0.1, 0.01, 0.001]}}}
    store = create_store(tmp_path / "p", "nometric", "nometric", config)
    runs = claim(store, "host:1", count=3).runs
    values = [0.8542, 0.2014, 0.1181]
    for run, v in zip(runs, values):
        store.finish(run.run_id, "host:1", "finished", {"val/acc": v})
    best = best_run(store)
    assert best.run.id == runs[0].run_id and best.value == 0.8542
    out = io.StringIO()
    render_status(store, Console(file=out, width=100, color_system=None), limit=3)
    assert table_ids(out.getvalue(), store) == [r.run_id for r in runs]


def test_the_tensorboard_hint_is_one_command_when_log_dir_holds_spaces(tmp_path, monkeypatch):
    """A sweep that logs to `log_dir: my logs` (a folder with a space, as a laptop's often
    are): the closing TensorBoard command pastes into a shell as one --logdir."""
    import shlex

    config = {**COURSE, "parameters": {**COURSE["parameters"],
                                       "log_dir": {"value": "my logs"}}}
    store = create_store(tmp_path / "s", "spc1", "spaced", config)
    (run,) = claim(store, "host:1", count=1).runs
    store.finish(run.run_id, "host:1", "finished", {"val/acc": 0.6})
    monkeypatch.chdir(tmp_path)
    board = closing_lines(store)[-1]
    assert shlex.split(board) == ["./run_tensorboard.sh", "--logdir", "my logs/spaced-spc1"]


# Every case of the repeat rule (controller.crash_repairs, _repeat): (program ours,
# checkpoint kept, the run that crashes is a repeat, its last epoch past the run it repeats)
# -> the words an agent prints of it when its agent is found ended.
def _expected_outcome(ours: bool, checkpoint: bool, is_repeat: bool, further: bool,
                      epoch: int) -> str:
    resumes = ours and checkpoint
    if is_repeat and not (resumes and further):
        return "not repeated (" + ("a repeat of another program's run" if not ours else
                                   "checkpoint: false" if not checkpoint else
                                   "no epoch further than before")
    return "repeated from its last checkpoint" if resumes and epoch else "repeated from scratch"


@pytest.mark.parametrize("ours, checkpoint, is_repeat, further, epoch", [
    case for case in itertools.product([True, False], [True, False], [True, False],
                                       [True, False], [0, 2])
    if not (case[2] and case[4] == 0) and (case[2] or case[3])])
def test_a_crash_found_at_once_is_said_repeated_only_when_the_rule_repeats_it(
        tmp_path, ours, checkpoint, is_repeat, further, epoch):
    """The line of an agent that finds another's agent ended (`crash_outcome`) says what
    the repeat rule did: repeated from the checkpoint, from scratch, or not repeated and why;
    it used to say "repeated" of every run."""
    from agent.sweep.controller import crash_outcome, repair_ended_agents

    config = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"lr": {"values": [0.1]}, "epochs": {"value": 4},
                             "checkpoint": {"value": checkpoint}},
              **({} if ours else {"program": "other.py"})}
    store = create_store(tmp_path / "s", "out1", "out", config)
    (first,) = claim(store, "host:1").runs
    if not is_repeat:
        if epoch:
            assert store.record_epoch(first.run_id, "host:1", epoch, {"val/acc": 0.5})
        crashed = first.run_id
    else:  # the first run crashed at epoch 1; its repeat crashes now
        assert store.record_epoch(first.run_id, "host:1", 1, {"val/acc": 0.5})
        assert repair_ended_agents(store, {"host:1"}) == [first.run_id]
        (repeat,) = claim(store, "host:2").runs
        if further:
            assert store.record_epoch(repeat.run_id, "host:2", epoch, {"val/acc": 0.6})
        crashed = repeat.run_id
    owner = "host:2" if is_repeat else "host:1"
    assert repair_ended_agents(store, {owner}) == [crashed]
    words = crash_outcome(store, [crashed])
    assert words.startswith(_expected_outcome(ours, checkpoint, is_repeat, further, epoch)), words
    assert words.startswith("repeated") == any(r.requeued_from == crashed
                                               for r in store.runs())


@pytest.mark.parametrize("ours", [True, False])
def test_the_waiting_line_says_from_scratch_for_runs_that_keep_no_checkpoint(tmp_path, ours):
    """A waiting agent says how a run it waits on would be repeated if it crashed: from its
    last checkpoint only for our trainer's runs that keep one (checkpoint: false, or another
    program, start over), per the runs it waits on."""
    from agent.sweep.agent_loop import _repeated_how

    config = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"lr": {"values": [0.1, 0.01]},
                             "checkpoint": {"values": [True, False]}},
              **({} if ours else {"program": "other.py"})}
    store = create_store(tmp_path / "s", "wait1", "wait", config)
    claim(store, "host:1", count=4)
    runs = store.runs()
    kept = [r for r in runs if r.config["checkpoint"]]
    lost = [r for r in runs if not r.config["checkpoint"]]
    assert len(kept) == len(lost) == 2
    for running in (kept, lost, runs):
        words = _repeated_how(running, ours)
        if ours and running is kept:
            assert words.startswith("from its last checkpoint (a repeat again"), words
        elif ours and running is runs:
            assert words.startswith("from its last checkpoint, or from scratch for a run "
                                    "with checkpoint: false"), words
        else:
            assert words.startswith("from scratch (") and (
                "checkpoint: false" in words) == ours, words



def three_lr_store(tmp_path, monkeypatch, sweep_id: str, name: str):
    """A new local store in tmp_path (the working directory) of a digits grid over three lrs,
    20 epochs a run, no run claimed yet."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 20},
                             "lr": {"values": [0.1, 0.01, 0.001]}}}
    return create_store(tmp_path / "data" / "sweeps" / sweep_id, sweep_id, name, config)

def test_the_report_of_a_sweep_whose_runs_were_all_preempted_names_the_run_ahead(
        tmp_path, monkeypatch):
    """A launch stopped by Ctrl-C before any run ended: two runs preempted mid-training, one
    planned run not started. The launcher's closing lines name the best so far at its last
    epoch; the report said "No ended run has a value of `val/acc`" and nothing more. It
    names the same run with its value, its epoch of the planned ones and its state, and the
    command that goes on; while a run is still training (its agent alive), no command."""
    from agent.report import document
    from agent.report.study import local_study

    store = three_lr_store(tmp_path, monkeypatch, "cut1", "cut")
    runs = claim(store, "host:1", count=2).runs
    for run, values in zip(runs, ((0.31, 0.45, 0.5), (0.52, 0.48))):
        for epoch, value in enumerate(values, 1):
            assert store.record_epoch(run.run_id, "host:1", epoch, {"val/acc": value})
        store.finish(run.run_id, "host:1", "preempted")
    out = io.StringIO()
    render_status(store, Console(file=out, width=200, color_system=None), limit=10)
    leader = runs[0].run_id
    assert (f"the best so far at its last epoch: {leader} val/acc=0.5000 (epoch 3)"
            in out.getvalue()), out.getvalue()
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert "**No ended run has a value of `val/acc`**." in text
    assert (f"Ahead at its last epoch: {leader} val/acc=0.5000, epoch 3 of 20, preempted (a "
            "value of an epoch on the way, not a result: the run has not ended). Go on where "
            "the sweep stopped: `./run_sweep.sh cut1` (its agents resume a preempted run "
            "from its last checkpoint).") in text, text
    # a sweep whose one run is training now: named, no command
    live = three_lr_store(tmp_path, monkeypatch, "live1", "live")
    (run,) = claim(live, "host:2", count=1).runs
    assert live.record_epoch(run.run_id, "host:2", 1, {"val/acc": 0.7})
    text = document.build_report(local_study(live), tmp_path / "again").path.read_text()
    assert (f"Ahead at its last epoch: {run.run_id} val/acc=0.7000, epoch 1 of 20, running"
            in text), text
    assert "Go on where the sweep stopped" not in text


def test_the_reports_repeat_hints_wait_for_runs_not_proposed_yet(tmp_path, monkeypatch):
    """`./run_sweep.sh x.yaml --count 1` on a grid of three lrs: one run ended, two not
    proposed yet (no row). The closing lines say the repeats come once the sweep has ended;
    the report's best-run section and its seeds section gave `agent.repeat ... --run` as
    the next step without a word, since only a pending, running or preempted run counted
    as one left. Both now wait for the sweep's end, as with a run open."""
    from agent.report import document
    from agent.report.study import local_study

    store = three_lr_store(tmp_path, monkeypatch, "count1", "count")
    (run,) = claim(store, "host:1", count=1).runs
    assert store.record_epoch(run.run_id, "host:1", 1, {"train/loss": 1.0, "val/loss": 1.0,
                                                        "val/acc": 0.6})
    store.finish(run.run_id, "host:1", "finished",
                 {"val/acc": 0.6, "test/acc": 0.58, "epochs_done": 20})
    assert len(store.runs()) == 1  # the grid's other two points have no row yet
    lines = closing_lines(store)
    assert "Once the sweep has ended: repeat its best runs over 5 seeds (agent.repeat)" in lines
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert "2 not proposed" in text.split("## Set-up")[0]
    best = text[text.index(f"## The best run: {run.run_id}"):]
    best = best[:best.find("\n## ", 1)]
    assert ("(`./util/with_venv.sh python -m agent.repeat count1 --run`, once the sweep has "
            "ended: a run it has left may still beat this one)") in best, best
    seeds = text[text.index("## Best configurations over seeds"):]
    seeds = seeds[:seeds.find("\n## ", 1)]
    assert ("`./util/with_venv.sh python -m agent.repeat count1 --run` creates and runs them "
            "once the sweep has ended") in seeds, seeds


def test_the_reports_best_run_names_a_preempted_run_ahead_of_it(tmp_path, monkeypatch):
    """A launch stopped by Ctrl-C after one run ended: the run at lr 0.1 finished at val/acc
    0.6, the one at 0.01 was preempted at 0.8 in its epoch 3 of 20, the one at 0.001 at 0.4.
    The closing lines and agent.status say the best is of the ended runs and name the run
    ahead of it; the report's best-run section named the finished run alone. It now says so
    in the same words (status.ahead_of_best), with the command that goes on; a run behind
    the best is not named."""
    from agent.report import document
    from agent.report.study import local_study

    store = three_lr_store(tmp_path, monkeypatch, "part1", "part")
    runs = {run.config["lr"]: run.run_id for run in claim(store, "host:1", count=3).runs}
    for lr, values in ((0.1, (0.3, 0.5, 0.6)), (0.01, (0.4, 0.7, 0.8)), (0.001, (0.2, 0.4))):
        for epoch, value in enumerate(values, 1):
            loss = 2.3 - 2 * value
            assert store.record_epoch(runs[lr], "host:1", epoch, {
                "train/loss": loss, "val/loss": loss, "val/acc": value})
    store.finish(runs[0.1], "host:1", "finished",
                 {"val/acc": 0.6, "test/acc": 0.58, "epochs_done": 3})
    for lr in (0.01, 0.001):
        store.finish(runs[lr], "host:1", "preempted")
    lines = closing_lines(store)
    assert f"  {runs[0.01]} val/acc=0.8000, epoch 3, preempted)" in lines, lines
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    best = text[text.index(f"## The best run: {runs[0.1]}"):]
    best = best[:best.find("\n## ", 1)]
    assert (f"The best of the ended runs; ahead of it at its last epoch: {runs[0.01]} "
            "val/acc=0.8000, epoch 3 of 20, preempted (a value of an epoch on the way, not a "
            "result: the run has not ended). Go on where the sweep stopped: "
            "`./run_sweep.sh part1` (its agents resume a preempted run from its last "
            "checkpoint).") in best, best
    assert runs[0.001] not in best, best
    # the seeds' hint waits for the sweep's end (the closing lines say so too)
    assert ("no setting has been run over other seeds yet (`./util/with_venv.sh python -m "
            "agent.repeat part1 --run --pack 3`, once the sweep has ended: a run it has left "
            "may still beat this one), so nothing") in best, best
