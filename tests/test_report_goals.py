"""The report reads a sweep's metric by the sweep's goal, for every metric a sweep may
optimise: the values near the best, the heat map's colours, the chance line (accuracies
only); a group whose mean lies outside its middle half is drawn, not a crash; and a report
that fails half-way leaves the previous one whole. Real SQLite stores holding finished runs
(no training: the report reads summaries), written by the report's own code."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from agent import metrics
from agent.report import document, stats
from agent.report.discussion import near_margin
from agent.report.study import local_study
from agent.sweep.controller import claim
from agent.sweep.store import STATES as STORE_STATES
from agent.sweep.store import create_store
from conftest import subprocess_env

pytestmark = pytest.mark.timeout(300)
LRS = [0.0001, 0.0002, 0.0003, 0.0005, 0.5]
# per optimizer, the metric at each lr: sgd is lopsided (one lr works, its mean lies above
# the middle half of its runs), adam rises steadily
SCORES = {"sgd": [0.08, 0.08, 0.08, 0.08, 0.9], "adam": [0.08, 0.3, 0.5, 0.89, 0.7]}
GOAL_METRICS = [m for m in metrics.METRICS if m.goal]


def finished_sweep(tmp_path, metric: metrics.Metric):
    """A finished grid (optimizer x lr on digits) whose runs' summaries hold `metric`:
    SCORES for a maximized one, 2.5 - SCORES (a loss falls as the accuracy rises) for a
    minimized one."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": metric.name, "goal": metric.goal},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 1},
                             "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": LRS}}}
    store = create_store(tmp_path / "data" / "sweeps" / "goals1", "goals1", "goals", config)
    values = {}
    for run in claim(store, "host:1", count=10).runs:
        score = SCORES[run.config["optimizer"]][LRS.index(run.config["lr"])]
        value = score if metric.goal == "maximize" else 2.5 - score
        values[run.run_id] = value
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": score, "test/acc": score, "val/loss": 2.5 - score,
                      "epochs_done": 1, metric.name: value})
    return store, values


@pytest.mark.parametrize("metric", GOAL_METRICS, ids=lambda m: m.name)
def test_the_report_reads_the_metric_by_its_goal(tmp_path, monkeypatch, metric):
    monkeypatch.chdir(tmp_path)
    store, values = finished_sweep(tmp_path, metric)
    report = document.build_report(local_study(store), tmp_path / "report")
    text = report.path.read_text()
    best = (max if metric.goal == "maximize" else min)
    # the values within near_margin of each optimizer's best, by the goal
    for optimizer, scores in SCORES.items():
        mine = [2.5 - s if metric.goal == "minimize" else s for s in scores]
        top = best(mine)
        margin = near_margin(metric.name, list(values.values()), metric.goal)
        near = [lr for lr, v in zip(LRS, mine) if abs(v - top) <= margin]
        line = next(line for line in text.splitlines()
                    if line.startswith(f"- optimizer={optimizer}: lr within"))
        assert f"of its best ({top:.4f}): " in line, line
        listed = line.split("): ", 1)[1].split(";")[0].split(" (it ")[0].rstrip(".")
        assert [float(v) for v in listed.split(", ")] == near, line
        # a window that reaches an end of the lr values tried says so, by the goal too
        assert ("(it reaches the largest lr tried" in line) == (
            LRS[-1] in near and LRS[0] not in near), line
    # the heat map: the best bright, from chance for an accuracy, from the worst otherwise
    shown = list(values.values())
    sentence = next(line for line in text.splitlines() if "The colour runs from" in line)
    bright = re.search(r"to the best cell \(([\d.]+), bright\)", sentence).group(1)
    assert float(bright) == pytest.approx(best(shown), abs=0.005)
    if metric.name.endswith("acc"):
        assert "from chance (0.10, dark)" in sentence
    else:
        worst = max(shown) if metric.goal == "minimize" else min(shown)
        assert f"from the worst ({worst:.2f}, dark)" in sentence
    assert (tmp_path / "report" / "marginals.png").stat().st_size > 0
    # runs.csv holds the metric the study ranks by (val/loss is no summary column)
    with open(tmp_path / "report" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["run_id"]: float(row[metric.name]) for row in rows} == values


def test_a_group_whose_mean_lies_outside_its_middle_half_is_drawn(tmp_path, monkeypatch):
    """sgd's runs: four at 0.08 and one at 0.9, mean 0.244 above its 75th percentile (0.08):
    the band and the mean are drawn apart (a negative error bar made matplotlib raise)."""
    monkeypatch.chdir(tmp_path)
    store, _ = finished_sweep(tmp_path, metrics.BY_NAME["val/acc"])
    scores = SCORES["sgd"]
    assert np.mean(scores) > np.percentile(scores, 75)  # the case this test is about
    report = document.build_report(local_study(store), tmp_path / "report")
    assert "## Sensitivity to each parameter" in report.path.read_text()
    assert (tmp_path / "report" / "marginals.png").stat().st_size > 0


def test_a_report_that_fails_half_way_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    finished_sweep(tmp_path, metrics.BY_NAME["val/acc"])
    assert document.main(["goals1"]) == 0
    out = tmp_path / "reports" / "goals1"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"report.md", "report.html", "runs.csv", "marginals.png"} <= set(before)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # readable as any folder made here

    def broken(report, ctx):
        raise RuntimeError("a section fails")

    sections = list(document.SECTIONS)
    sections[5] = ("training curves", broken)
    monkeypatch.setattr(document, "SECTIONS", tuple(sections))
    with pytest.raises(RuntimeError):
        document.main(["goals1"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    assert sorted(os.listdir(tmp_path / "reports")) == ["goals1"]  # no partial report left


def _read_only_mount_works(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe}"
                           f" && ! touch {probe}/x"], capture_output=True)
    return done.returncode == 0


@pytest.mark.e2e
def test_status_and_report_read_a_sweep_on_read_only_storage(tmp_path):
    """A finished sweep on a read-only mount (an archive, a shared copy): status and the
    report read it; starting agents on it says why it cannot (one line, exit 2)."""
    if shutil.which("unshare") is None or not _read_only_mount_works(tmp_path):
        pytest.skip("needs `unshare -m` and mount (root, or a user namespace) for a "
                    "read-only mount")
    store, values = finished_sweep(tmp_path, metrics.BY_NAME["val/loss"])
    store.close()
    best = min(values, key=values.get)
    script = (f"mount --bind data data && mount -o remount,bind,ro data && "
              f"{sys.executable} -m agent.status goals1 > status.out 2>&1; echo $? > status.rc; "
              f"{sys.executable} -m agent.report goals1 --out {tmp_path}/out > report.out 2>&1;"
              f" echo $? > report.rc; {sys.executable} -m agent.launch goals1 > launch.out "
              "2>&1; echo $? > launch.rc")
    subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, check=True,
                   env=subprocess_env(), timeout=600)
    read = {name: (tmp_path / f"{name}.out").read_text() for name in
            ("status", "report", "launch")}
    codes = {name: int((tmp_path / f"{name}.rc").read_text()) for name in read}
    assert codes == {"status": 0, "report": 0, "launch": 2}, read
    assert f"best: {best} val/loss=" in read["status"]
    assert (tmp_path / "out" / "goals1" / "report.md").is_file()
    (line,) = read["launch"].strip().splitlines()
    assert line.startswith("error: ") and "its directory is read-only" in line


def test_repeating_the_best_runs_of_an_unfinished_sweep_says_so(tmp_path, monkeypatch, capsys):
    from agent.report import repeat

    monkeypatch.chdir(tmp_path)
    finished_sweep(tmp_path, metrics.BY_NAME["val/acc"])
    assert repeat.main(["goals1", "--top", "1"]) == 0
    assert "not finished" not in capsys.readouterr().err  # every run ended: no note
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "lr": {"values": LRS}}}
    store = create_store(tmp_path / "data" / "sweeps" / "half1", "half1", "half", config)
    runs = claim(store, "host:1", count=3).runs  # 3 of 5 claimed, 2 of them ended
    for run, score in zip(runs[:2], (0.5, 0.7)):
        store.finish(run.run_id, "host:1", "finished", {"val/acc": score, "test/acc": score})
    assert repeat.main(["half1", "--top", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: sweep half1 is not finished (2 of 5 runs ended)" in err


def test_a_swept_parameter_no_run_uses_is_left_out_of_the_analysis(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "cnn"},
                             "hidden": {"values": [8, 16, 32]}, "lr": {"values": [0.1, 0.01]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "idle1", "idle1", "idle", config)
    for k, run in enumerate(claim(store, "host:1", count=6).runs):
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": 0.5 + k / 20, "test/acc": 0.5, "epochs_done": 1})
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert ("Swept but used by no run, so left out of the analysis below: `hidden` (only "
            "model=dense uses it).") in text
    intro, analysis = text.split("### The sweep file")[1].split("```", 2)[::2]
    assert "hidden" not in analysis and "lr" in analysis  # after the YAML
    assert "hyperband" not in intro  # no early_terminate: no hyperband defaults were stripped


def test_a_parameter_only_some_runs_use_is_read_from_those_runs(tmp_path, monkeypatch):
    """model {dense, cnn} x hidden {8, 64}: hidden changes the dense runs only, so its
    sensitivity is read from them (the cnn runs would flatten it), and says so."""
    from agent.report.discussion import marginals

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"},
                             "model": {"values": ["dense", "cnn"]},
                             "hidden": {"values": [8, 64]}, "lr": {"values": [0.1, 0.01]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "mix1", "mix1", "mix", config)
    for run in claim(store, "host:1", count=8).runs:
        score = (0.3 if run.config["hidden"] == 8 else 0.9) if run.config["model"] == "dense" \
            else 0.6 + run.config["lr"]
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": score, "test/acc": score, "epochs_done": 1})
    study = local_study(store)
    ctx = document.study_context(study, tmp_path / "report", stats.GroupRule())
    (hidden,) = [p for p in marginals(ctx) if p.parameter.startswith("hidden")]
    assert hidden.parameter == "hidden (model=dense runs)"
    means = {level: mean for series in hidden.series.values()
             for level, mean, *_ in series}
    assert means == {8: pytest.approx(0.3), 64: pytest.approx(0.9)}  # the dense runs only
    (lr,) = [p for p in marginals(ctx) if p.parameter == "lr"]  # every run uses lr
    assert sum(point[4] for series in lr.series.values() for point in series) == 8


def test_the_paired_effect_counts_every_seed_of_a_setting(tmp_path, monkeypatch):
    """batch_size {16, 32} x lr {0.01, 0.1} x seed {0, 1}: each setting's change from lr 0.01
    to 0.1 is the difference of its means over both seeds, not of whichever seed came last
    (ranked best first, the worst seed's value used to stand for the setting)."""
    from agent.report.discussion import observations

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "batch_size": {"values": [16, 32]},
                             "lr": {"values": [0.01, 0.1]}, "seed": {"values": [0, 1]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "pair1", "pair1", "pair", config)
    scores = {(16, 0.01): (0.60, 0.70), (16, 0.1): (0.80, 0.90),
              (32, 0.01): (0.50, 0.70), (32, 0.1): (0.50, 0.90)}
    for run in claim(store, "host:1", count=8).runs:
        c = run.config
        score = scores[c["batch_size"], c["lr"]][c["seed"]]
        store.record_epoch(run.run_id, "host:1", 1,
                           {"train/loss": 1.0, "val/loss": 1.0, "val/acc": score})
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": score, "test/acc": score, "epochs_done": 1})
    ctx = document.study_context(local_study(store), tmp_path / "report", stats.GroupRule())
    (line,) = [o for o in observations(ctx) if "paired settings" in o]
    # means: bs 16: 0.65 -> 0.85 (+0.20); bs 32: 0.60 -> 0.70 (+0.10); mean +0.15 over 2
    assert "changes val/acc by +0.1500 on average" in line, line
    assert "over 2 paired settings" in line, line



def test_a_paired_effect_of_one_pair_names_the_pair_and_no_average(tmp_path, monkeypatch):
    """hidden {16, 64} x lr {0.1, 0.001} on digits, lr 0.001 stuck at hidden 16: one pair of
    converged runs (lr 0.1) is left, whose one difference read "changes val/acc by +0.5000
    on average over 1 paired settings", an average of nothing and no word of which pair.
    It now names the setting and says it is one pair; two pairs keep the average."""
    from agent.report.discussion import observations

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"values": [16, 64]}, "lr": {"values": [0.1, 0.001]}}}
    for name, stuck in (("one", 0.08), ("two", 0.6)):
        store = create_store(tmp_path / "data" / "sweeps" / name, name, name, config)
        scores = {(16, 0.1): 0.4, (64, 0.1): 0.9, (16, 0.001): stuck, (64, 0.001): 0.7}
        for run in claim(store, "host:1", count=4).runs:
            score = scores[run.config["hidden"], run.config["lr"]]
            loss = 2.302 if score < 0.15 else 1.0
            for epoch in (1, 2):
                store.record_epoch(run.run_id, "host:1", epoch,
                                   {"train/loss": loss, "val/loss": loss, "val/acc": score})
            store.finish(run.run_id, "host:1", "finished",
                         {"val/acc": score, "test/acc": score, "epochs_done": 2})
        ctx = document.study_context(local_study(store), tmp_path / name, stats.GroupRule())
        (line,) = [o for o in observations(ctx) if o.startswith("hidden 16 -> 64")]
        if name == "one":
            assert line == ("hidden 16 -> 64 changes val/acc by +0.5000 in the one setting of "
                            "the converged runs at both values (lr=0.1): one pair, no "
                            "average."), line
        else:  # +0.5 at lr 0.1, +0.1 at lr 0.001
            assert "changes val/acc by +0.3000 on average over 2 paired settings" in line, line

@pytest.mark.parametrize("stopped_end", [False, True])
def test_a_run_stopped_early_is_no_evidence_of_a_bend(tmp_path, monkeypatch, stopped_end):
    """lr {0.001, 0.01, 0.1}: the best run is in the middle. With the run at lr 0.1 finished
    at 0.60 the metric bends (a peak inside the range); when that run was stopped by
    hyperband at 0.60, its partial value says nothing of lr 0.1, and the finished runs (0.70
    then 0.90) only rise: no bend is claimed."""
    from agent.report.discussion import observations

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 4}, "lr": {"values": [0.001, 0.01, 0.1]},
                             "hidden": {"values": [16, 32]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "bend1", "bend1", "bend", config)
    scores = {0.001: 0.70, 0.01: 0.90, 0.1: 0.60}
    for run in claim(store, "host:1", count=6).runs:
        lr = run.config["lr"]
        score = scores[lr] + run.config["hidden"] / 10000
        for epoch in (1, 2):
            store.record_epoch(run.run_id, "host:1", epoch,
                               {"train/loss": 1.0, "val/loss": 1.0, "val/acc": score})
        state = "stopped" if stopped_end and lr == 0.1 else "finished"
        store.finish(run.run_id, "host:1", state,
                     {"val/acc": score, "test/acc": score, "epochs_done": 2 if state ==
                      "stopped" else 4})
    ctx = document.study_context(local_study(store), tmp_path / "report", stats.GroupRule())
    (line,) = [o for o in observations(ctx) if o.startswith("Pearson r(")]
    assert ("the best is at lr=0.01" in line) is not stopped_end, line


def test_runs_stopped_early_are_marked_or_left_out_wherever_a_final_value_is_shown(
        tmp_path, monkeypatch):
    """optimizer {sgd, adam} x lr {0.001, 0.01, 0.1} x dropout {0, 0.3}, hyperband stopping
    the two sgd runs at lr 0.001 after 1 of 4 epochs: the parallel coordinates draw them
    dashed, the heat map marks their cells, and the importance table and the correlation
    are computed without them, each saying so."""
    from agent.report.discussion import observations

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 4}, "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": [0.001, 0.01, 0.1]},
                             "dropout": {"values": [0.0, 0.3]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "cut1", "cut1", "cut", config)
    scores, stopped = {}, set()
    for run in claim(store, "host:1", count=12).runs:
        c = run.config
        cut = c["optimizer"] == "sgd" and c["lr"] == 0.001
        score = 0.3 + 2 * c["lr"] + c["dropout"] / 10 + (0.05 if c["optimizer"] == "adam" else 0)
        scores[run.run_id] = score
        for epoch in range(1, 2 if cut else 5):
            store.record_epoch(run.run_id, "host:1", epoch,
                               {"train/loss": 1.0, "val/loss": 1.0, "val/acc": score})
        if cut:
            stopped.add(run.run_id)
        store.finish(run.run_id, "host:1", "stopped" if cut else "finished",
                     {"val/acc": score, "test/acc": score, "epochs_done": 1 if cut else 4})
    study = local_study(store)
    report = document.build_report(study, tmp_path / "report")
    text = report.path.read_text()

    parallel = report.figures["parallel_all.png"].axes[0]
    assert parallel.title == "all runs (12 runs; 2 stopped early, dashed)"
    assert parallel.linestyles.count("--") == 2
    assert "Dashed: the 2 runs the sweep's early termination (hyperband) stopped" in text

    heat = report.figures["grid_heatmap.png"]
    cells = {ax.title: ax.texts for ax in heat.axes if ax.title.startswith("optimizer=")}
    marked = {title: [t for t in texts if t.endswith("*")] for title, texts in cells.items()}
    # rows are lr, largest on top is flipped: the 0.001 row holds both sgd stopped cells
    assert marked == {"optimizer=adam": [], "optimizer=sgd": ["0.30*", "0.33*"]}
    assert "the cell holds a run stopped early (hyperband)" in heat.suptitle
    assert "* marks a cell holding a run the sweep's early termination (hyperband) stopped " \
        "(2 runs in all)" in text

    by_dropout = text.split("### By dropout")[1].split("\n### ")[0]
    assert "\n| 0 | " in by_dropout and "\n| 0.0 | " not in by_dropout  # as other tables
    full = [r for r in study.runs if r.id not in stopped]
    assert ("Left out: 2 runs the sweep's early termination (hyperband) stopped, whose value "
            "is from the epoch each stopped at, not a final one.") in text
    table = text.split("## Hyper-parameter importance")[1]
    (lr_row,) = [line for line in table.splitlines() if line.startswith("| lr |")]
    log_lr = np.log10([r.config["lr"] for r in full])
    r_full = np.corrcoef(log_lr, [scores[r.id] for r in full])[0, 1]
    assert lr_row.split(" | ")[2] == f"{r_full:.3f}"  # r over all runs less the stopped
    sgd = [r for r in full if r.config["optimizer"] == "sgd"]
    r_sgd = np.corrcoef(np.log10([r.config["lr"] for r in sgd]),
                        [scores[r.id] for r in sgd])[0, 1]
    assert lr_row.split(" | ")[4] == f"{r_sgd:.3f} |"
    ctx = document.study_context(study, tmp_path / "ctx", stats.GroupRule())
    (line,) = [o for o in observations(ctx) if o.startswith("Pearson r(")]
    assert line.startswith(f"Pearson r(log10 lr, val/acc) over all runs less the 2 stopped "
                           f"early is {r_full:+.2f}"), line


def test_a_metric_equal_in_every_run_names_no_best_setting(tmp_path, monkeypatch):
    """lr {1e-6 .. 4e-6}, every run at val/acc 0.1319 (too small an lr to move): no setting
    is called best, the importance table gives way to a sentence, and the best run says it
    is one of a tie; the heat map without facets is 'one panel'."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "lr": {"values": [1e-6, 2e-6, 3e-6, 4e-6]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "flat1", "flat1", "flat", config)
    ids = []
    for run in claim(store, "host:1", count=4).runs:
        ids.append(run.run_id)
        store.record_epoch(run.run_id, "host:1", 1,
                           {"train/loss": 2.3, "val/loss": 2.3, "val/acc": 0.1319})
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": 0.1319, "test/acc": 0.117, "epochs_done": 1})
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert "- all runs: every run (4) scores val/acc 0.1319: no setting is better than " \
        "another." in text
    assert "best val/acc" not in text
    assert "`val/acc` is 0.1319 in every one of the 4 runs: no parameter explains" in text
    assert "| lr | 0.000 |" not in text
    assert (f"Tied with it: 3 other runs ({', '.join(ids[1:])}); the one shown is the first "
            "of them in the sweep's order.") in text
    assert "rows are `lr`, one panel; one run a cell" in text


def test_a_sweep_of_one_run_still_tables_its_setting(tmp_path, monkeypatch):
    """One run, nothing varied: the seeds section's promise ("each configuration below") is
    kept with a table by model, the grouping agent.repeat would use; no tie is claimed."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "lr": {"values": [0.01]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "solo1", "solo1", "solo", config)
    (run,) = claim(store, "host:1", count=1).runs
    store.record_epoch(run.run_id, "host:1", 1,
                       {"train/loss": 1.0, "val/loss": 1.0, "val/acc": 0.8})
    store.finish(run.run_id, "host:1", "finished",
                 {"val/acc": 0.8, "test/acc": 0.75, "epochs_done": 1})
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    seeds = text.split("## Best configurations over seeds")[1].split("\n## ")[0]
    assert "### By model" in seeds
    assert f"| dense | lr=0.01 | 0.8000 (n=1) | 0.7500 (n=1) | {run.run_id} |" in seeds
    assert "Tied with it" not in text
    # no repeat sweep, no seed searched: the best run points to no interval that is not there
    best = text.split("## The best run")[1].split("\n## ")[0]
    assert "intervals over seeds are in the section" not in best
    assert ("One run of one seed: no setting has been run over other seeds yet "
            "(`./util/with_venv.sh python -m agent.repeat solo1 --run`)") in best


def test_a_batch_size_read_on_log10_is_said_to_be(tmp_path, monkeypatch):
    """Batch sizes 16, 64, 256 span 1.2 decades, yet the figures and correlations read them
    on log10 (powers of two spread 8-fold): the report said 'log10 of those spanning two
    decades or more' beside an r of log10(batch_size) (-0.216 where the linear r was -0.269
    in a real digits study). Both sentences now give the rule as applied and the names."""
    monkeypatch.chdir(tmp_path)
    sizes, lrs = [16, 64, 256], [0.1, 0.01, 0.001]
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "batch_size": {"values": sizes},
                             "lr": {"values": lrs}}}
    store = create_store(tmp_path / "data" / "sweeps" / "bs", "bs", "bs", config)
    x, y = [], []
    for run in claim(store, "host:1", count=9).runs:
        size, lr = run.config["batch_size"], run.config["lr"]
        score = 0.9 - 0.1 * sizes.index(size) ** 2 - 0.05 * lrs.index(lr)
        x.append(size)
        y.append(score)
        store.finish(run.run_id, "host:1", "finished",
                     {"val/acc": score, "test/acc": score, "epochs_done": 1})
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    rule = "two decades or more, or powers of two spread 8-fold or more (batch sizes): here"
    assert f"(log axes where they span {rule} batch_size, lr)" in text
    assert f"(log10 of those spanning {rule} batch_size, lr)" in text
    importance = text.split("## Hyper-parameter importance")[1]
    row = next(line for line in importance.splitlines() if line.startswith("| batch_size |"))
    r = np.corrcoef(np.log10(x), y)[0, 1]
    assert f"| {r:.3f} |" in row and abs(r - np.corrcoef(x, y)[0, 1]) > 0.001, row


def test_a_run_diverged_by_its_validation_loss_is_said_to_be_off_the_curves(tmp_path,
                                                                            monkeypatch):
    """The diverged runs' figure draws training losses as curves; a run called diverged for
    its final validation loss (67.6 > 10 ln 10) may stay under the figure's line, so the
    report says which runs crossed it by the validation loss, drawn as squares; a run
    diverged by its training loss is not named. (Both end at chance: a run that ends above
    that loss with an accuracy above chance is converged.)"""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "lr": {"values": [0.1, 1.0, 10.0]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "v", "v", "v", config)
    ids = {}
    for run in claim(store, "host:1", count=3).runs:
        lr = run.config["lr"]
        train_loss, val_loss = {0.1: (0.5, 0.6), 1.0: (2.0, 67.6), 10.0: (80.0, 30.0)}[lr]
        acc = 0.5 if lr == 0.1 else 0.1
        store.record_epoch(run.run_id, "host:1", 1, {"train/loss": train_loss,
                                                     "val/loss": val_loss, "val/acc": acc})
        store.finish(run.run_id, "host:1", "finished", {"val/acc": acc, "epochs_done": 1})
        ids[lr] = run.run_id
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    section = text.split("## Diverged, collapsed, stuck and converged runs")[1].split("\n## ")[0]
    assert (f"The curves below are training losses: {ids[1.0]} was called diverged for the "
            "final validation loss (the reason above), drawn as a square at each epoch's "
            "end.") in section, section
    assert "final validation loss 67.6 > 23.0" in section
    assert "final training loss 80 > 23.0" in section and ids[10.0] not in \
        section.split("The curves below")[1]


@pytest.mark.parametrize("state", ["finished", "failed", "crashed", "killed", "running",
                                   "pending", "preempting", "preempted"])
@pytest.mark.parametrize("ours", [None, "finished", "stopped", "preempted", "diverged"])
def test_a_wandb_run_hyperband_stopped_reads_as_stopped_in_the_report(state, ours):
    """W&B has no stopped state (docs.wandb.ai/models/runs/run-states): a run hyperband
    stopped ends finished (exit 0) with our trainer's summary `state: stopped`. The report
    read it finished, its partial value as a full-length one (best-run choices, agent.repeat
    picks); it reads it stopped, as a local sweep's. W&B's preempting run is one that will
    resume."""
    from agent.report.study import OPEN_STATES, wandb_state

    summary = {} if ours is None else {"state": ours}
    read = wandb_state(state, summary)
    if state == "finished" and ours == "stopped":
        assert read == "stopped"
    elif state == "preempting":
        assert read == "preempted" and read in OPEN_STATES
    else:
        assert read == state


@pytest.mark.parametrize("state", sorted(set(STORE_STATES) | {"killed", "preempting"}))
def test_only_runs_that_ended_for_the_studys_reasons_are_scored(state):
    """A run that failed (an exception at epoch 2) or crashed and was given up, or that W&B
    killed, holds the value of the epoch it got to: it was scored with the others, and its
    partial value could be the best run and agent.repeat's pick. Only finished runs and runs
    early termination stopped (marked as such) are scored; open runs are not yet."""
    from agent.report.study import RunRecord, Study, wandb_state

    config = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"}}
    history = [{"epoch": 1, "val/acc": 0.9}]
    runs = [RunRecord("full", "finished", {}, None, {"val/acc": 0.5}, history, None),
            RunRecord("this", wandb_state(state, {}), {}, None, {}, history, None)]
    study = Study("s", "s", "local", config, runs)
    scored = [r.id for r in study.scored_runs()]
    if wandb_state(state, {}) in ("finished", "stopped"):
        assert scored == ["this", "full"]
    else:
        assert scored == ["full"], state


def test_a_packed_sweeps_repeat_hint_trains_its_repeats_packed(tmp_path, monkeypatch):
    """The report's command to repeat the best settings on fresh seeds carries `--pack K`
    where the sweep's runs trained in packs of up to K, as the launcher's closing lines
    say for a packed launch (the report said `--run` alone); a sweep of runs alone none."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "lr": {"values": [0.01, 0.02, 0.03, 0.04]}}}
    for sweep_id, sizes in (("packed1", (3, 1)), ("alone1", (1, 1, 1, 1))):
        store = create_store(tmp_path / "data" / "sweeps" / sweep_id, sweep_id, "s", config)
        for size in sizes:  # claims of two or more runs share a pack id (one packed trial)
            for run in claim(store, "host:1", count=size).runs:
                store.record_epoch(run.run_id, "host:1", 1,
                                   {"train/loss": 1.0, "val/loss": 1.0, "val/acc": 0.8})
                store.finish(run.run_id, "host:1", "finished",
                             {"val/acc": 0.8, "test/acc": 0.75, "epochs_done": 1})
        text = document.build_report(local_study(store), tmp_path / sweep_id).path.read_text()
        pack = " --pack 3" if sweep_id == "packed1" else ""
        hint = f"`./util/with_venv.sh python -m agent.repeat {sweep_id} --run{pack}`"
        best = text.split("## The best run")[1].split("\n## ")[0]
        seeds = text.split("## Best configurations over seeds")[1].split("\n## ")[0]
        assert hint in best and hint in seeds, (best, seeds)


def test_a_heat_map_cell_below_a_named_threshold_never_prints_as_it(tmp_path, monkeypatch):
    """A digits run whose best val/acc is 0.1458 counts as stuck (below chance 1/10 + 0.05 =
    0.150, as the rule says), yet its heat map cell read "0.15", the bound itself. The
    cells are written to the fewest decimals at which none prints as a threshold the report
    names unless it equals it (3 here: "0.146"), and the paragraph says why; a grid whose
    cells stand clear of every threshold keeps 2 decimals."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 2},
                             "lr": {"values": [0.1, 0.01, 0.001, 0.0001]}}}
    for name, near in (("near", 0.1458), ("clear", 0.3)):
        scores = {0.1: 0.9, 0.01: 0.5, 0.001: near, 0.0001: 0.08}
        store = create_store(tmp_path / "data" / "sweeps" / name, name, name, config)
        for run in claim(store, "host:1", count=4).runs:
            score = scores[run.config["lr"]]
            loss = 2.302 if score < 0.2 else 1.0
            for epoch in (1, 2):
                store.record_epoch(run.run_id, "host:1", epoch,
                                   {"train/loss": loss, "val/loss": loss,
                                    "val/acc": score - 0.01 * (2 - epoch)})
            store.finish(run.run_id, "host:1", "finished",
                         {"val/acc": score, "test/acc": score, "epochs_done": 2})
        report = document.build_report(local_study(store), tmp_path / name)
        text = report.path.read_text()
        (ax,) = [ax for ax in report.figures["grid_heatmap.png"].axes if ax.images]
        groups = {row["lr"]: row["group"]
                  for row in csv.DictReader(open(tmp_path / name / "runs.csv"))}
        if name == "near":
            assert groups["0.001"] in (stats.STUCK, stats.FALLING)  # below 0.150
            assert sorted(ax.texts) == ["0.080\nstuck", "0.146\nstuck", "0.500", "0.900"], \
                ax.texts
            assert ("Cells are written to 3 decimals: at 2, 0.146 would read as the stuck "
                    "bound (chance + the stuck margin), 0.150, which it is below.") in text
            assert "The colour runs from chance (0.100, dark) to the best cell (0.900" in text
        else:
            assert sorted(ax.texts) == ["0.08\nstuck", "0.30", "0.50", "0.90"], ax.texts
            assert "Cells are written to" not in text


def test_a_run_hyperband_stopped_is_marked_in_its_groups_figure(tmp_path, monkeypatch):
    """A digits grid with hyperband: the run at the smallest lr stopped after 1 of 4 epochs
    at chance, beside one that trained all 4 and stayed there. The figure of its group drew
    its one point with no mark, as if its setting alone held it at chance; the weight figure
    marks such runs. Its line ends in a bar, the legend says "lr=3e-05: stopped early at
    epoch 1 of 4", and a sentence after the figure names it; the full-length run is not
    marked."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 32}, "epochs": {"value": 4},
                             "lr": {"values": [0.1, 0.03, 0.0001, 0.00003]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "hb1", "hb1", "hb", config)
    ids = {}
    for run in claim(store, "host:1", count=4).runs:
        lr = run.config["lr"]
        ids[lr] = run.run_id
        epochs = 1 if lr == 0.00003 else 4
        for epoch in range(1, epochs + 1):
            learns = lr >= 0.03
            loss = 1.0 / epoch if learns else 2.302
            acc = 0.8 + epoch / 40 if learns else 0.11
            store.record_epoch(run.run_id, "host:1", epoch,
                               {"train/loss": loss, "val/loss": loss, "val/acc": acc})
        store.finish(run.run_id, "host:1", "stopped" if epochs == 1 else "finished",
                     {"val/acc": acc, "test/acc": acc, "epochs_done": epochs})
    report = document.build_report(local_study(store), tmp_path / "report")
    text = report.path.read_text()
    groups = {row["run_id"]: row["group"]
              for row in csv.DictReader(open(tmp_path / "report" / "runs.csv"))}
    group = groups[ids[0.00003]]
    assert group in stats.AT_CHANCE and groups[ids[0.0001]] in stats.AT_CHANCE, groups
    drawn = report.figures[f"loss_{group}.png"]
    marked = [entry for entry in drawn.legends if "stopped" in entry]
    assert marked == ["lr=3e-05: stopped early at epoch 1 of 4"], drawn.legends
    # the bar at the stopped run's one point (epoch 1, ln 10), none at the full-length run's
    (ax,) = [ax for ax in drawn.axes if ax.title]
    bars = [(x.tolist(), y.tolist()) for (label, x, y), marker in zip(ax.lines, ax.markers)
            if label == "_stopped" and marker == "|"]
    assert bars == [([1.0], [2.302])], ax.lines
    title = {stats.STUCK: "stuck at chance", stats.FALLING:
             "did not leave chance, loss still falling"}[group]
    assert (f"In the figure of the \"{title}\" runs, lr=3e-05 ({ids[0.00003]}, stopped early "
            "at epoch 1 of 4) was stopped early by the sweep's early termination: its line "
            "ends in a bar there, and it trained fewer epochs than a full-length run, so it "
            "may have left chance had it trained on.") in text, text
    assert f"lr=0.0001 ({ids[0.0001]}, stopped" not in text


def test_a_heat_map_cell_names_the_group_of_its_run_at_chance(tmp_path, monkeypatch):
    """A heat map cell is a run's last val/acc (its summary, what W&B's charts show), while
    the groups read its best epoch too: a run at 0.16 then 0.146 collapsed (it reached the
    stuck bound 0.150 and ended below it), its cell 0.146, which the paragraph's bound
    alone read as stuck. A cell of a run at chance names its group under its value, also
    where the cell reads above the bound: the same runs swept on val/best_acc (cell 0.16,
    collapsed), and a cell that is the mean of a stuck and a converged seed (0.19)."""
    monkeypatch.chdir(tmp_path)
    base = {"program": "agent/train.py", "method": "grid",
            "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                           "hidden": {"value": 16}, "epochs": {"value": 2},
                           "lr": {"values": [0.1, 0.01, 0.001, 0.0001]}}}
    curves = {0.1: [0.8, 0.9], 0.01: [0.4, 0.5], 0.001: [0.16, 0.146], 0.0001: [0.08, 0.08]}
    seeds = {**base, "parameters": {**base["parameters"], "lr": {"values": [0.1, 0.001]},
                                    "seed": {"values": [0, 1]}}}
    cases = {  # name: (config, metric, run's curve by (lr, seed), the cells' texts)
        "last": (base, "val/acc", lambda lr, seed: curves[lr],
                 ["0.080\nstuck", "0.146\ncollapsed", "0.500", "0.900"]),
        "best": (base, "val/best_acc", lambda lr, seed: curves[lr],
                 ["0.08\nstuck", "0.16\ncollapsed", "0.50", "0.90"]),
        "seeds": (seeds, "val/acc", lambda lr, seed: [0.8, 0.9] if lr == 0.1
                  else [[0.08, 0.08], [0.25, 0.3]][seed], ["0.19\n1 stuck", "0.90"])}
    for name, (config, metric, curve, texts) in cases.items():
        config = {**config, "metric": {"name": metric, "goal": "maximize"}}
        store = create_store(tmp_path / "data" / "sweeps" / name, name, name, config)
        for run in claim(store, "host:1", count=8).runs:
            accs = curve(run.config["lr"], run.config.get("seed", 0))
            for epoch, acc in enumerate(accs, 1):
                loss = 2.302 if max(accs) < 0.2 else 1.0
                store.record_epoch(run.run_id, "host:1", epoch,
                                   {"train/loss": loss, "val/loss": loss, "val/acc": acc})
            store.finish(run.run_id, "host:1", "finished",
                         {"val/acc": accs[-1], "val/best_acc": max(accs),
                          "test/acc": accs[-1], "epochs_done": 2})
        report = document.build_report(local_study(store), tmp_path / name)
        text = report.path.read_text()
        (ax,) = [ax for ax in report.figures["grid_heatmap.png"].axes if ax.images]
        assert sorted(ax.texts) == texts, (name, ax.texts)
        groups = sorted(row["group"] for row in csv.DictReader(open(tmp_path / name / "runs.csv")))
        assert groups == {"seeds": [stats.CONVERGED] * 3 + [stats.STUCK]}.get(
            name, [stats.COLLAPSED, stats.CONVERGED, stats.CONVERGED, stats.STUCK]), name
        grid = text.split("## The whole grid")[1].split("\n## ")[0]
        assert ("A run's value is its last `val/acc`, as its summary holds it (what W&B's "
                "charts show and the report ranks runs by), not its best epoch's.") in grid \
            or name == "best", grid
        assert "The groups read a run's best epoch too: a run whose best stayed below 0.150 " \
            "is stuck (or falling), one that reached it and ended below it collapsed" in grid
