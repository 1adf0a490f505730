"""The report of a small digits sweep trained here with ./run_sweep.sh: a dense net at lr
1e-5 and 0.1 on seeds 1 and 2, 3 epochs at batch 32 (40 steps an epoch). Both seeds at lr
1e-5 never leave chance and their losses go flat: stuck, the heat map's cell of the two."""

from __future__ import annotations

import csv
import os

import pytest

from agent.report import document
from agent.report.study import load_study
from conftest import launch_sweep

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
