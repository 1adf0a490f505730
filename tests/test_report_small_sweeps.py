"""Reports of small digits sweeps trained here with ./run_sweep.sh. SEEDS: a dense net at lr
1e-5 and 0.1 on seeds 1 and 2, 3 epochs at batch 32 (40 steps an epoch); both seeds at lr
1e-5 never leave chance and their losses go flat: stuck, the heat map's cell of the two.
PART: sgd and adam at lr 0.1 and 0.01, stopped by --count 2 after the two runs at 0.1."""

from __future__ import annotations

import csv
import os
import re
import subprocess

import pytest
import yaml

from agent.report import document
from agent.report.study import load_study
from conftest import ROOT, launch_sweep, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]
SEEDS = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
         "metric": {"name": "val/acc", "goal": "maximize"},
         "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                        "epochs": {"value": 3}, "batch_size": {"value": 32},
                        "sinks": {"value": ["tensorboard"]}, "optimizer": {"value": "sgd"},
                        "lr": {"values": [0.00001, 0.1]}, "seed": {"values": [1, 2]}}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("seeds")
    sweep_id = launch_sweep(work, "seeds", SEEDS)
    here = os.getcwd()
    os.chdir(work)  # the runs' TensorBoard logs are where they ran: data/logs/
    try:
        study = load_study(sweep_id)
        report = document.build_report(study, work / "reports" / sweep_id)
    finally:
        os.chdir(here)
    groups = {row["run_id"]: row["group"] for row in csv.DictReader(
        open(work / "reports" / sweep_id / "runs.csv", encoding="utf-8"))}
    return {"work": work, "study": study, "report": report, "groups": groups,
            "text": report.path.read_text()}


def test_a_cell_of_two_stuck_seeds_says_stuck(sweep):
    """The heat map's cell of lr 1e-5 is the mean of two runs, both stuck: it says "2 stuck"
    under its value, the group they share, where it said "2 at chance", which a reader had
    to look up in the groups below (stuck, collapsed or still falling?)."""
    low = [r for r in sweep["study"].runs if r.config["lr"] == 0.00001]
    assert [sweep["groups"][r.id] for r in low] == ["stuck", "stuck"]
    (ax,) = [ax for ax in sweep["report"].figures["grid_heatmap.png"].axes if ax.images]
    (cell,) = [t for t in ax.texts if "\n" in t]
    assert cell.endswith("\n2 stuck"), ax.texts
    assert '("2 stuck")' in sweep["text"]


PART = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "epochs": {"value": 2}, "batch_size": {"value": 128},
                       "sinks": {"value": ["tensorboard"]},
                       "optimizer": {"values": ["sgd", "adam"]}, "lr": {"values": [0.1, 0.01]}}}


def test_a_partial_sweep_has_no_table_of_one_value(tmp_path, monkeypatch):
    """A sweep stopped by --count 2 after its lr=0.1 runs (sgd and adam): its report has a
    "By optimizer" table of both and no "By lr" table, one sentence saying why, where it
    had a "By lr" table of one lr that ranked the same two runs again."""
    (tmp_path / "part.yaml").write_text(yaml.safe_dump({"name": "part", **PART}))
    launch = subprocess.run([str(ROOT / "run_sweep.sh"), "part.yaml", "--count", "2"],
                            cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-3000:]
    sweep_id = re.search(r"Created local sweep (\w+)", launch.stdout).group(1)
    monkeypatch.chdir(tmp_path)
    study = load_study(sweep_id)
    assert sorted((r.config["optimizer"], r.config["lr"]) for r in study.ended_runs()) == \
        [("adam", 0.1), ("sgd", 0.1)]
    text = document.build_report(study, tmp_path / "report").path.read_text()
    best = text.split("## Best configurations over seeds")[1].split("\n## ")[0]
    assert "### By optimizer" in best and "### By lr" not in best, best
    assert ('No "By lr" table: the 2 runs with a val/acc all hold lr=0.1 (the sweep has 2 '
            "values), and a table of one lr compares nothing.") in best


def test_step_curves_reach_the_runs_last_step(sweep):
    """The converged runs' figure draws their logged step losses to the run's last step,
    120 of 3 epochs of 40 (log_interval 20: 1, 21, ..., 101, then 120), as TensorBoard
    holds them; before, each line ended at step 101, epoch 2.5 of 3."""
    drawn = sweep["report"].figures["loss_converged.png"]
    (panel,) = [ax for ax in drawn.axes if ax.lines]
    lines = [line for line in panel.lines if "=" in line[0] and not line[0].startswith("_")]
    assert panel.xlabel == "training step" and len(lines) == 2
    assert all(list(x) == [1, 21, 41, 61, 81, 101, 120] for _, x, _ in lines), lines
