"""The report of a random search, as W&B's documentation teaches one: lr drawn from
log_uniform_values over three decades, optimizer, batch size and dropout from lists. Its
draws spanned 1.94 decades, yet lr is read on a log axis (its distribution is log-scaled);
the heat map gathers the drawn values into ranges rather than a row per value; a best
value cut short by hyperband reads in one pair of parentheses. A real SQLite store
holding finished runs (no training: the report reads summaries and epochs)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from agent.report import document
from agent.report.study import local_study
from agent.sweep.store import create_store

pytestmark = pytest.mark.timeout(300)
SWEEP = {"program": "agent/train.py", "method": "random",
         "metric": {"name": "val/acc", "goal": "maximize"},
         "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
         "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                        "hidden": {"value": 16}, "epochs": {"value": 3},
                        "optimizer": {"values": ["sgd", "adam"]},
                        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
                        "batch_size": {"values": [32, 64, 128, 256]},
                        "dropout": {"values": [0.0, 0.25, 0.5]}}}
# (optimizer, lr, batch_size, dropout, val/acc, epochs trained): lr from 1.2e-4 to 1.05e-2,
# 1.94 decades; sgd's best run (0.9) is one hyperband stopped after its first epoch
RUNS = [("adam", 1.2e-4, 32, 0.0, 0.30, 3), ("adam", 3e-4, 64, 0.25, 0.55, 3),
        ("adam", 8e-4, 64, 0.5, 0.70, 3), ("adam", 2e-3, 32, 0.0, 0.88, 3),
        ("adam", 5e-3, 64, 0.25, 0.92, 3), ("adam", 1.05e-2, 128, 0.5, 0.85, 3),
        ("sgd", 1.5e-4, 256, 0.0, 0.22, 3), ("sgd", 6e-4, 32, 0.25, 0.35, 3),
        ("sgd", 1.5e-3, 64, 0.5, 0.45, 3), ("sgd", 4e-3, 128, 0.0, 0.60, 3),
        ("sgd", 7e-3, 256, 0.25, 0.90, 1), ("sgd", 9e-3, 32, 0.5, 0.80, 3)]
DECADES = ["0.0001–0.001", "0.001–0.01", "0.01–0.1"]


def build(work, runs: list[tuple]):
    """The report of a store holding `runs` (RUNS' shape; a score None: a run whose loss
    went non-finite in its second epoch, as the trainer stops and records it)."""
    store = create_store(work / "data" / "sweeps" / "rand1", "rand1", "rand", SWEEP)
    with store.transaction() as db:
        for k, (optimizer, lr, size, dropout, _, _) in enumerate(runs):
            db.insert_run(f"run{k:02d}", {"dataset": "digits", "model": "dense", "hidden": 16,
                                          "epochs": 3, "optimizer": optimizer, "lr": lr,
                                          "batch_size": size, "dropout": dropout},
                          "running", "host:1")
    for k, (*_, score, epochs) in enumerate(runs):
        if score is None:
            assert store.record_epoch(f"run{k:02d}", "host:1", 1, {
                "epoch": 1, "train/loss": 9.0, "val/loss": 9.0, "val/acc": 0.1,
                "train/acc": 0.1})
            assert store.finish(f"run{k:02d}", "host:1", "finished",
                                {"diverged": True, "epochs_done": 1})
            continue
        for epoch in range(1, epochs + 1):  # a run learning: its loss falls, its accuracy rises
            acc = score * epoch / epochs if epochs == 3 else score
            assert store.record_epoch(f"run{k:02d}", "host:1", epoch, {
                "epoch": epoch, "train/loss": 2.3 - 2 * acc, "val/loss": 2.3 - 2 * acc,
                "val/acc": acc, "train/acc": acc})
        assert store.finish(f"run{k:02d}", "host:1", "finished" if epochs == 3 else "stopped",
                            {"val/acc": score, "test/acc": score, "epochs_done": epochs})
    old = os.getcwd()
    os.chdir(work)  # the report reads ./data, as from the sweep's folder
    try:
        built = document.build_report(local_study(store), work / "report")
    finally:
        os.chdir(old)
    return built, built.path.read_text()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build(tmp_path_factory.mktemp("random"), RUNS)


def section(text: str, title: str) -> str:
    return text.split(title)[1].split("\n## ")[0]


def test_a_log_distributed_lr_is_read_on_a_log_axis_whatever_its_draws_span(report):
    """lr drawn from log_uniform_values over 3 decades, its 12 draws over 1.94: the report
    said 'log axes ...: none here' and drew lr on linear axes, where its draws crowd at
    the low end; it reads lr on log axes and says why, and the correlations are of log10 lr."""
    built, text = report
    rule = "two decades or more, or powers of two spread 8-fold or more (batch sizes): here"
    assert (f"(log axes where they span {rule} lr, batch_size; lr drawn from "
            "log_uniform_values)") in text
    assert (f"(log10 of those spanning {rule} lr, batch_size; lr drawn from "
            "log_uniform_values)") in text
    assert "none here" not in text
    assert "lr (log)" in built.figures["parallel_all.png"].axes[0].xticks
    (lr_panel,) = [ax for ax in built.figures["marginals.png"].axes if ax.xlabel == "lr"]
    assert lr_panel.xscale == "log"
    full = [run for run in RUNS if run[5] == 3]  # the importance table leaves stopped runs out
    r = np.corrcoef(np.log10([run[1] for run in full]), [run[4] for run in full])[0, 1]
    row = next(line for line in section(text, "## Hyper-parameter importance").splitlines()
               if line.startswith("| lr |"))
    assert row.split(" | ")[2] == f"{r:.3f}", row
    assert "- Pearson r(log10 lr, val/acc)" in text


def test_the_heat_map_of_a_random_search_gathers_lr_into_decades(report):
    """A row per drawn lr made a 12 x 4 table per optimizer of almost all empty cells: the
    rows are lr's decades, each cell the mean of its runs, and the text says why."""
    built, text = report
    drawn = built.figures["grid_heatmap.png"]
    panels = {ax.title: ax for ax in drawn.axes if ax.title}
    assert set(panels) == {"optimizer=adam", "optimizer=sgd"}
    sizes = [32, 64, 128, 256]
    for optimizer in ("adam", "sgd"):
        ax = panels[f"optimizer={optimizer}"]
        assert ax.yticks == DECADES and ax.xticks == [str(s) for s in sizes]
        cells = np.ma.filled(ax.images[0].astype(float), np.nan)
        for i, low in enumerate([1e-4, 1e-3, 1e-2]):
            for j, size in enumerate(sizes):
                scores = [run[4] for run in RUNS if run[0] == optimizer and run[2] == size
                          and low <= run[1] < 10 * low]
                want = np.mean(scores) if scores else math.nan
                assert np.isclose(cells[i, j], want, equal_nan=True), (optimizer, i, j)
    assert "over the search (lr in ranges)" in drawn.suptitle
    grid = section(text, "## The whole grid")
    assert ("`lr` is drawn from a distribution, a value for each run, so its rows are ranges "
            "(a decade each; log_uniform_values): one per value would hold one run each.") \
        in grid, grid
    assert "up to 2: runs whose values fall in its ranges" in grid, grid


def test_a_best_value_stopped_early_reads_in_one_pair_of_parentheses(report):
    """'lr within 0.02 of its best (0.1100 (stopped early at epoch 1 of 3))' read as a
    nested aside; the value and the note share one pair of parentheses."""
    _, text = report
    notes = section(text, "## Observations")
    assert "lr within 0.02 of its best (0.9000, stopped early at epoch 1 of 3): " in notes, notes
    assert "((" not in notes and "))" not in notes, notes


def test_the_sensitivity_panel_of_a_drawn_lr_draws_each_run_on_its_own(report):
    """Each run drew its own lr: a mean at a value held one run, and the line through those
    single runs read as a trend (adam's peak at 5e-3 is one run's). Each run is a dot
    at its value, without a line, band or median, and the text says why; the parameters
    from lists keep their means and lines."""
    built, text = report
    drawn = built.figures["marginals.png"]
    panels = {ax.xlabel: ax for ax in drawn.axes if ax.xlabel}
    lr = panels["lr"]
    for optimizer in ("adam", "sgd"):
        runs = sorted((run[1], run[4]) for run in RUNS if run[0] == optimizer)
        (line,) = [(x, y, marker, style) for (label, x, y), marker, style
                   in zip(lr.lines, lr.markers, lr.linestyles)
                   if label == f"optimizer={optimizer}"]
        assert list(line[0]) == [v for v, _ in runs] and list(line[1]) == [s for _, s in runs]
        assert line[2:] == ("o", "None")
    assert lr.collections == 0 and lr.ylabel == "val/acc: one run a dot"
    assert not [m for m in lr.markers if m == "_"]  # no median dashes
    sizes = panels["batch_size"]  # from a list: a mean a value, a line through them
    assert "-" in sizes.linestyles and sizes.collections > 0
    assert "lr: a dot per run (drawn from a distribution)" in drawn.suptitle
    assert ("`lr` is drawn from a distribution, a value for each run: its panel draws each "
            "run as a dot, with no line, band or median") in section(
                text, "## Sensitivity to each parameter")


@pytest.mark.parametrize("adam_size", [128, 256], ids=["crosses only", "crosses and div"])
def test_the_sensitivity_text_names_the_marks_its_panels_draw_for_diverged_runs(
        tmp_path, adam_size):
    """Two runs diverged at lr 0.08 (adam) and 0.09 (sgd): the lr panel, a dot a run,
    draws each as a cross above it, and the text said '"div" marks a value at which every
    run of a line diverged' of a figure without a "div". It names the crosses of the dot
    panel, and "div" only where a panel of means draws one: adam's only run at batch size
    256 diverged (its line has no mean there)."""
    runs = RUNS + [("adam", 0.08, adam_size, 0.0, None, 1), ("sgd", 0.09, 128, 0.25, None, 1)]
    built, text = build(tmp_path, runs)
    drawn = built.figures["marginals.png"]
    panels = {ax.xlabel: ax for ax in drawn.axes if ax.xlabel}
    crosses = [x for (label, x, _), marker in zip(panels["lr"].lines, panels["lr"].markers)
               if marker == "x" for x in x]
    assert sorted(crosses) == [0.08, 0.09] and "div" not in panels["lr"].texts
    divs = {name: ax.texts.count("div") for name, ax in panels.items() if "div" in ax.texts}
    assert divs == ({} if adam_size == 128 else {"batch_size": 1}), divs
    sensitivity = section(text, "## Sensitivity to each parameter")
    assert "Left out: 2 runs that diverged" in sensitivity
    assert ("its panel draws each run as a dot, with no line, band or median (a line "
            "through runs of one value each would read as a trend that one run a value "
            "cannot show; the heat map gathers them into ranges), and a run that diverged "
            "as an x above the panel, at its value (no \"div\").") in sensitivity, sensitivity
    said = "\"div\" marks a value at which every run of a line diverged" in sensitivity
    assert said == bool(divs), sensitivity
