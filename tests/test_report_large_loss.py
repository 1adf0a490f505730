"""A run whose final loss is large but whose accuracy is real is no diverged run: on a
random digits sweep an adam run at lr 0.86 ended at a training loss of 138 (above the
divergence bound 10 x ln 10 = 23.0) with a val/acc of 0.81 and a test/acc of 0.77, a
cross-entropy made large by a few confident mistakes of large logits, not a model that
predicts garbage. It was called diverged: "div" in the heat map, left out of the "By ..."
tables and the sensitivity means as a run whose last value means nothing. It is converged,
its large loss named beside the group's numbers; a run that ends at chance with a blown-up
loss stays diverged. A real SQLite store of finished runs (no training: the report reads
epochs and summaries)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from agent.report import document, stats
from agent.report.study import local_study
from agent.sweep.store import create_store
from finished_runs import end_every_run

pytestmark = pytest.mark.timeout(300)
LRS, DROPOUTS = [0.001, 0.01, 0.1, 0.86], [0.0, 0.3]
SMALL = [{"train/loss": 1.1, "val/loss": 0.9, "val/acc": 0.70},
         {"train/loss": 0.4, "val/loss": 0.35, "val/acc": 0.90}]
# (lr, dropout): its epochs; lr 0.86 at dropout 0 ends far above 23.0 at a val/acc of 0.81,
# at dropout 0.3 far above it at chance
EPOCHS = {(0.86, 0.0): [{"train/loss": 40.0, "val/loss": 31.0, "val/acc": 0.70},
                        {"train/loss": 138.0, "val/loss": 95.0, "val/acc": 0.81}],
          (0.86, 0.3): [{"train/loss": 60.0, "val/loss": 50.0, "val/acc": 0.10},
                        {"train/loss": 300.0, "val/loss": 250.0, "val/acc": 0.097}]}
TEST_ACC = {(0.86, 0.0): 0.77, (0.86, 0.3): 0.09}


def large_loss_sweep(tmp_path) -> dict:
    """A finished lr x dropout grid of adam on digits, 2 epochs a run; the report built from
    it, its context under the default rule, runs.csv's groups and {(lr, dropout): run id}."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "optimizer": {"value": "adam"}, "epochs": {"value": 2},
                             "sinks": {"value": ["console"]},
                             "lr": {"values": LRS}, "dropout": {"values": DROPOUTS}}}
    store = create_store(tmp_path / "data" / "sweeps" / "large", "large", "large", config)
    def key(config: dict) -> tuple:
        return config["lr"], config["dropout"]

    def epochs(config: dict) -> list[dict]:
        return [{"epoch": e, **row} for e, row in enumerate(EPOCHS.get(key(config), SMALL), 1)]

    ids = {key(config): run_id for run_id, config in end_every_run(
        store, epochs, lambda c: {"test/acc": TEST_ACC.get(key(c), 0.88)}).items()}
    study = local_study(store)
    report = document.build_report(study, tmp_path / "report")
    ctx = document.study_context(study, tmp_path / "ctx", stats.GroupRule())
    groups = {row["run_id"]: row["group"] for row in csv.DictReader(
        open(tmp_path / "report" / "runs.csv", encoding="utf-8"))}
    return {"ids": ids, "report": report, "text": report.path.read_text(), "ctx": ctx,
            "groups": groups}


def section(text: str, title: str) -> str:
    return text.split(title)[1].split("\n## ")[0]


def test_a_large_final_loss_with_a_real_accuracy_is_converged_not_diverged(tmp_path):
    sweep = large_loss_sweep(tmp_path)
    ids, text, ctx = sweep["ids"], sweep["text"], sweep["ctx"]
    large, blown = ids[(0.86, 0.0)], ids[(0.86, 0.3)]
    assert sweep["groups"] == {run_id: "diverged" if run_id == blown else "converged"
                               for run_id in ids.values()}
    assert "Counts: 1 diverged, 0 collapsed, 0 stuck, 0 falling, 7 converged" in text, text
    groups = section(text, "## Diverged, collapsed, stuck and converged runs")
    (diverged,) = [line for line in groups.splitlines() if blown in line]
    assert "final training loss 300 > 23.0" in diverged, diverged
    table = [line for line in section(groups, "### Diverged (1)").splitlines()
             if line.startswith("| ")]
    assert diverged in table and not [line for line in table if large in line], table
    assert "last accuracy 0.097 < 0.150" in diverged, diverged
    assert (f"{large} (final training loss 138 > 23.0, last accuracy 0.810 >= 0.150)"
            in groups), groups
    assert ctx.verdicts[large].reason.startswith("best accuracy 0.810"), ctx.verdicts[large]
    # its value is in the heat map, the "By ..." tables and the sensitivity means
    drawn = sweep["report"].figures["grid_heatmap.png"]
    (ax,) = [ax for ax in drawn.axes if ax.images]
    cells = np.ma.filled(ax.images[0].astype(float), np.nan)
    assert ax.ylabel == "lr" and ax.xlabel == "dropout" and cells.shape == (4, 2)
    assert ax.texts.count("div") == 1, ax.texts
    assert 0.81 in [pytest.approx(v) for v in cells[:, 0]], cells
    assert np.isnan(cells[:, 1]).sum() == 1, cells
    heat = section(text, "## The whole grid")
    assert "\"div\" marks a cell whose every run diverged" in heat
    for by in ("### By lr\n", "### By dropout\n"):
        table = section(text, by).split("\n### ")[0]
        assert "Left out: 1 run that diverged" in table, table
    by_lr = section(text, "### By lr\n").split("\n### ")[0]
    assert [line for line in by_lr.splitlines() if line.startswith("| 0.86 |")
            and large in line and "0.8100" in line], by_lr
    sensitivity = section(text, "## Sensitivity to each parameter")
    assert "Left out: 1 run that diverged" in sensitivity, sensitivity
    (lr_panel,) = [a for a in sweep["report"].figures["marginals.png"].axes
                   if a.xlabel == "lr"]
    assert 0.86 in [x for line in lr_panel.lines for x in line[1]]
