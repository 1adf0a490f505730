"""The report's figures and Grad-CAM on real data: every figure function writes a PNG that
reads back and draws what it is given, checked on the matplotlib objects themselves (titles,
tick labels, legend entries, texts, line and image data), edge cases included; Grad-CAM maps
are well-formed, localise the evidence, and leave the model as they found it."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn

from agent.params import validate
from agent.report import figures
from nn.gradcam import grad_cam, last_conv_layer
from nn.models import MODELS
from util.datasets import DATASETS
from util.device_cache import DeviceLoader

pytestmark = pytest.mark.timeout(60)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: int = 150) -> None:
    assert path.exists() and path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert min_size <= height <= 4000 and min_size <= width <= 4000, pixels.shape
    assert pixels.std() > 0.01  # something was drawn, not a blank canvas


@pytest.fixture(scope="module")
def digits():
    return DATASETS["digits"](Path("unused"))  # scikit-learn's copy: no files, no network


@pytest.fixture(scope="module")
def trained_cnn(digits):
    """A cnn from the registry, trained for a few dozen steps on the digits set."""
    torch.manual_seed(0)
    cfg = validate({"channels": [8, 16]})
    model = MODELS["cnn"](cfg, (1, 8, 8), 10)
    pixels = digits.train_x.float() / 255
    mean, std = pixels.mean().view(1), pixels.std().view(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        for images, labels in DeviceLoader(digits.train_x, digits.train_y, mean, std, 64,
                                           shuffle=True, drop_last=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    test_images, test_labels = next(iter(DeviceLoader(digits.test_x, digits.test_y, mean, std,
                                                      len(digits.test_y))))
    return model, test_images, test_labels


# ---------------------------------------------------------------- figures: what they draw

def test_class_histograms_show_each_split_with_the_legend_off_the_bars(digits, tmp_path):
    k = len(digits.classes)
    counts = {"trained on": [int((digits.train_y[:500] == c).sum()) for c in range(k)],
              "validation": [int((digits.train_y[500:] == c).sum()) for c in range(k)],
              "test": [int((digits.test_y == c).sum()) for c in range(k)]}
    drawn = figures.class_histograms(counts, digits.classes, tmp_path / "hist.png",
                                     "digits: images per class")
    assert drawn.path == tmp_path / "hist.png"
    assert_png(drawn.path)
    (ax,) = drawn.axes
    assert ax.title == "digits: images per class"
    assert ax.legend == [f"trained on ({sum(counts['trained on']):,})",
                         f"validation ({sum(counts['validation']):,})",
                         f"test ({sum(counts['test']):,})"]
    assert ax.xticks == digits.classes and ax.ylabel == "images"
    assert ax.collections == 3 * k  # a bar per class and split
    assert ax.legend_covers == 0  # the legend hides no bar


RUNS = [  # a sweep's rows: categorical (str, bool, list), a log-range lr, a linear one
    {"optimizer": "sgd", "lr": 1e-1, "batch_size": 32, "augment": True, "channels": [8, 16],
     "val/acc": 0.91},
    {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "augment": False,
     "channels": [16, 32], "val/acc": 0.95},
    {"optimizer": "sam", "lr": 1e-5, "batch_size": 64, "augment": True, "channels": [8, 16],
     "val/acc": 0.42},
    {"optimizer": "adam", "lr": 3e-4, "batch_size": None, "val/acc": 0.88},  # missing values
    {"optimizer": "sgd", "lr": 2.0, "batch_size": 256, "augment": False, "channels": [8, 16],
     "val/acc": math.nan},  # no metric: skipped
]
AXES = ["optimizer", "lr", "batch_size", "augment", "channels"]


def test_parallel_axes_scale_categories_and_decades():
    categorical = figures._Axis("optimizer", [r.get("optimizer") for r in RUNS])
    assert categorical.categorical and categorical.categories == ["adam", "sam", "sgd"]
    assert [categorical.position(v) for v in ("adam", "sam", "sgd")] == [0.0, 0.5, 1.0]
    log = figures._Axis("lr", [1e-1, 1e-3, 1e-5])
    assert log.log and log.label == "lr (log)" and log.position(1e-3) == pytest.approx(0.5)
    # a grid's few values: ticks at the values; many: at each decade
    assert [text for _, text in log.ticks()] == ["1e-05", "0.001", "0.1"]
    many = figures._Axis("lr", [10 ** -(k / 3) for k in range(16)])
    assert [text for _, text in many.ticks()] == ["1e-05", "0.0001", "0.001", "0.01", "0.1",
                                                  "1"]
    sizes = figures._Axis("batch_size", [16, 64, 256, 1024])  # powers of two, 64-fold
    assert sizes.log and [text for _, text in sizes.ticks()] == ["16", "64", "256", "1024"]
    assert [round(at, 6) for at, _ in sizes.ticks()] == [0.0, round(1 / 3, 6),
                                                          round(2 / 3, 6), 1.0]
    linear = figures._Axis("batch_size", [32, 128, None, 64])
    assert not linear.log and linear.position(32) == 0 and linear.position(128) == 1
    assert math.isnan(linear.position(None))
    flags = figures._Axis("augment", [True, False, None])
    assert flags.categories == [False, True] and flags.position(True) == 1.0


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_parallel_coordinates_draw_one_line_per_scored_run(tmp_path, goal):
    drawn = figures.parallel_coordinates(RUNS, AXES, "val/acc", goal, tmp_path / "pc.png",
                                         "all runs")
    assert_png(drawn.path)
    ax = drawn.axes[0]
    assert ax.title == "all runs (4 runs)"  # the run without a metric is left out
    assert ax.xticks == ["optimizer", "lr (log)", "batch_size", "augment", "channels",
                         "val/acc"]
    assert len(ax.lines) == 4 + len(AXES) + 1  # a polyline per run, a vertical per axis
    texts = set(ax.texts)  # tick labels in the values' own units
    assert {"adam", "sam", "sgd", "1e-05", "0.1", "[8, 16]", "False", "True"} <= texts
    colourbar = drawn.axes[1]
    assert colourbar.ylabel == "val/acc (" + ("higher" if goal == "maximize" else "lower") \
        + " is better)"


@pytest.mark.parametrize("values, texts", [
    ([0.0001, 0.00012, 0.001], ["0.0001", "0.00012", "0.001"]),  # 3 digits keep them apart
    ([0.12341, 0.12345, 0.5], ["0.1234", "0.1235", "0.5"]),  # 0.123 twice: 4 digits
    ([1.0001e-4, 1.0002e-4], ["0.00010001", "0.00010002"]),
    ([16, 1024, 2.5], ["16", "1024", "2.5"]),  # whole numbers in full
    ([0.5, 0.5], ["0.5", "0.5"]),  # one value twice is one label
])
def test_number_labels_keep_different_values_apart_with_few_digits(values, texts):
    assert figures.number_texts(values) == texts


def test_close_values_get_distinct_tick_labels_in_every_figure(tmp_path):
    """Two learning rates equal to 3 digits: each axis, heat map and legend that shows them
    shows two labels; on a parallel axis, where the two are too close for both to sit at
    their values, the one at the axis's end is named and the other left out, never printed
    over it."""
    from agent.report.study_figures import HeatPanel, MarginalPanel, heatmap_grid, marginal_figure

    lrs = [0.12341, 0.12345, 0.9]
    axis = figures._Axis("lr", lrs)  # linear, few values: a tick at each
    assert [text for _, text in axis.ticks()] == ["0.1234", "0.1235", "0.9"]
    many = figures._Axis("x", [0.10001, 0.10002, 0.10003, 0.10004, 0.10005, 0.10006, 0.10007,
                               0.10008, 0.10009])  # linear, many values: 5 even ticks
    assert [text for _, text in many.ticks()] == ["0.10001", "0.10003", "0.10005",
                                                  "0.10007", "0.10009"]
    rows = [{"lr": lr, "val/acc": 0.5 + i / 10} for i, lr in enumerate(lrs)]
    drawn = figures.parallel_coordinates(rows, ["lr"], "val/acc", "maximize",
                                         tmp_path / "pc.png", "all runs")
    texts = drawn.axes[0].texts
    assert "0.1234" in texts and "0.123" not in texts and drawn.axes[0].overlaps == []
    heat = heatmap_grid([HeatPanel("all runs", np.array([[0.5], [0.6], [0.7]]),
                                   [[""], [""], [""]])], "lr", lrs, "", [""], "val/acc", 0.1,
                        1.0, tmp_path / "heat.png", "grid")
    assert heat.axes[0].yticks == ["0.1234", "0.1235", "0.9"]
    panel = MarginalPanel("lr", False, True, lrs,
                          {"all runs": [(lr, 0.5, 0.4, 0.6, 1) for lr in lrs]})
    marginal = marginal_figure([panel], "val/acc", None, tmp_path / "m.png", "by lr")
    assert marginal.axes[0].xticks == ["0.1234", "0.1235", "0.9"]
    curves = [curve({"lr": lr, "dropout": 0.0}, [2.0, 1.0]) for lr in lrs]
    group = figures.group_loss_figure(curves, [], "lr", None, tmp_path / "g.png", "converged")
    assert group.legends == ["lr=0.1234", "lr=0.1235", "lr=0.9"]


def test_tick_labels_close_on_an_axis_are_spread_apart():
    at = figures.spread([0.0, 0.01, 0.02, 0.5, 1.0], 0.05, -0.05, 1.05)
    assert at == pytest.approx([0.0, 0.05, 0.1, 0.5, 1.0])  # only the crowded ones move
    top = figures.spread([0.98, 0.99, 1.0], 0.05, -0.05, 1.05)
    assert top == pytest.approx([0.95, 1.0, 1.05])  # kept inside the axis: pushed down
    assert all(b - a >= 0.05 - 1e-12 for a, b in zip(top, top[1:]))


def test_runs_stopped_early_are_dashed_and_counted(tmp_path):
    rows = [{"lr": 0.1, "val/acc": 0.9}, {"lr": 0.01, "val/acc": 0.3},
            {"lr": 0.001, "val/acc": math.nan}]  # no metric: left out, its flag with it
    drawn = figures.parallel_coordinates(rows, ["lr"], "val/acc", "maximize",
                                         tmp_path / "pc.png", "all runs", [False, True, True])
    ax = drawn.axes[0]
    assert ax.title == "all runs (2 runs; 1 stopped early, dashed)"
    dashed = [y for (_, _, y), style in zip(ax.lines, ax.linestyles) if style == "--"]
    assert len(dashed) == 1 and dashed[0][-1] == pytest.approx(0.0)  # the 0.3 run's line
    assert ax.legend == ["stopped early (hyperband): val/acc at the epoch it stopped, not a "
                         "final value"]
    plain = figures.parallel_coordinates(rows, ["lr"], "val/acc", "maximize",
                                         tmp_path / "pc2.png", "all runs")
    assert "--" not in plain.axes[0].linestyles and plain.axes[0].legend == []


@pytest.mark.parametrize("rows", [[], [RUNS[0]], [{"lr": 0.1}]], ids=["none", "one", "no-metric"])
def test_parallel_coordinates_with_zero_or_one_row(tmp_path, rows):
    drawn = figures.parallel_coordinates(rows, AXES, "val/acc", "maximize",
                                         tmp_path / "pc.png", "edge")
    assert_png(drawn.path)
    scored = sum(1 for r in rows if "val/acc" in r)
    assert drawn.axes[0].title == f"edge ({scored} run{'s' if scored != 1 else ''})"
    if not scored:
        assert drawn.axes[0].texts == ["no runs with a value of val/acc to show"]


def curve(config: dict, losses: list[float]) -> figures.GroupCurve:
    return figures.GroupCurve(config, list(range(0, 5 * len(losses), 5)), losses)


def test_group_loss_figure_facets_by_model_and_optimizer_and_labels_configurations(tmp_path):
    curves = [curve({"model": "cnn", "optimizer": "adam", "lr": 0.1, "dropout": 0.0},
                    [2.3, 40.0, 900.0, math.inf]),
              curve({"model": "cnn", "optimizer": "adam", "lr": 0.01, "dropout": 0.5},
                    [2.3, 30.0, math.nan]),
              curve({"model": "dense", "optimizer": "sgd", "lr": 0.1, "dropout": 0.0},
                    [2.3, 2.0, 50.0, 60.0])]
    drawn = figures.group_loss_figure(curves, ["model", "optimizer"], "lr", "dropout",
                                      tmp_path / "diverged.png", "diverged runs (3)",
                                      threshold=23.0)
    assert_png(drawn.path)
    assert drawn.suptitle == "diverged runs (3)"
    panels = [ax for ax in drawn.axes if ax.title]
    assert [ax.title for ax in panels] == ["model=cnn, optimizer=adam (2 runs)",
                                           "model=dense, optimizer=sgd (1 run)"]
    # The legend names configurations (colour: lr, style: dropout), never run ids.
    assert drawn.legends == ["lr=0.01", "lr=0.1", "dropout=0", "dropout=0.5",
                             "diverged: ended above 23.0",
                             "loss non-finite (2 runs): on the top edge, at its step"]
    labels = [line[0] for line in panels[0].lines]
    assert "model=cnn optimizer=adam lr=0.1 dropout=0" in labels
    # both cnn runs blew up: a cross each on the panel's top edge (axes fraction 1), at the
    # step of its first non-finite loss (15 and 10)
    crosses = [(list(x), list(y)) for (_, x, y), marker in zip(panels[0].lines,
                                                               panels[0].markers)
               if marker == "x"]
    assert sorted(crosses) == [([10], [1.0]), ([15], [1.0])], crosses
    assert "x" not in panels[1].markers and panels[0].texts == ["23.0"]  # the line's value
    assert panels[0].yscale == "log" and panels[0].xlabel == "training step"
    threshold = [line for line in panels[1].lines if line[0] == "diverged: ended above 23.0"]
    assert threshold and set(threshold[0][2]) == {23.0}


def test_each_line_style_stands_for_one_value(tmp_path):
    """A batch-size study's runs (3 batch sizes x 8 lr values) as runs_section passes them:
    colour by batch_size, style by lr. Four line styles cannot tell 8 lr values apart (the
    legend gave lr=0.02 and lr=0.32 the same dots): lr takes the colours, batch_size the
    styles."""
    sizes, lrs = [32, 128, 512], [0.005 * 2 ** i for i in range(8)]
    curves = [curve({"batch_size": b, "lr": lr}, [2.3, 1.0, 0.5]) for b in sizes for lr in lrs]
    drawn = figures.group_loss_figure(curves, [], "batch_size", "lr",
                                      tmp_path / "converged.png", "converged runs (24)")
    assert drawn.legends == [f"lr={figures._value_text(lr)}" for lr in lrs] + [
        f"batch_size={b}" for b in sizes]
    (panel,) = drawn.axes
    by_style = {}
    for (label, _, _), style in zip(panel.lines, panel.linestyles):
        by_style.setdefault(style, set()).add(label.split()[0])
    assert sorted(by_style.values(), key=str) == [{"batch_size=128"}, {"batch_size=32"},
                                                  {"batch_size=512"}], by_style


def test_empty_group_says_so(tmp_path):
    drawn = figures.group_loss_figure([], ["model"], "lr", None, tmp_path / "stuck.png",
                                      "stuck at chance runs (0): training loss")
    assert drawn.axes[0].texts == ["no run in this group"]


def test_a_group_at_chance_draws_the_loss_of_a_uniform_guess(tmp_path):
    """The collapsed, stuck and still-falling figures draw ln K, where their runs sit or
    came back to (runs_section passes the classes for those groups alone)."""
    curves = [curve({"model": "dense", "lr": 0.5}, [2.3, 1.2, 2.31]),
              curve({"model": "cnn", "lr": 0.5}, [2.3, 2.29, 2.3])]
    label = "chance: ln 10 = 2.30 (the loss of a uniform guess)"
    drawn = figures.group_loss_figure(curves, ["model"], "lr", None,
                                      tmp_path / "collapsed.png", "collapsed", classes=10)
    assert_png(drawn.path)
    panels = [ax for ax in drawn.axes if ax.title]
    assert len(panels) == 2
    for panel in panels:
        (line,) = [y for name, _, y in panel.lines if name == label]
        assert list(line) == pytest.approx([math.log(10)] * 2)
    assert drawn.legends == ["lr=0.5", label]
    plain = figures.group_loss_figure(curves, ["model"], "lr", None,
                                      tmp_path / "converged.png", "converged")
    assert plain.legends == ["lr=0.5"]
    assert not any(name == label for ax in plain.axes for name, _, _ in ax.lines)


def test_training_curves_label_runs_by_configuration(tmp_path):
    def series(label: str, rate: float) -> figures.TrainingSeries:
        steps = list(range(1, 51))
        epochs = [10, 20, 30, 40, 50]
        return figures.TrainingSeries(
            label, {"loss": (steps, [2.3 * math.exp(-rate * s / 10) for s in steps]),
                    "acc": (steps, [1 - math.exp(-rate * s / 10) for s in steps])},
            {"loss": (epochs, [2.3 * math.exp(-rate * e / 10) + 0.1 for e in epochs]),
             "acc": (epochs, [0.95 - math.exp(-rate * e / 10) for e in epochs])})

    runs = [series("lr=0.1 dropout=0 [0.95]", 0.8), series("lr=0.01 dropout=0 [0.90]", 0.4),
            figures.TrainingSeries("no-history", {}, {})]
    drawn = figures.training_curves(runs, tmp_path / "training.png")
    assert_png(drawn.path)
    loss, acc = drawn.axes
    assert loss.title == "loss (training thin, validation thick)"
    assert acc.ylabel == "accuracy" and loss.xlabel == "training step"
    assert drawn.legends == ["lr=0.1 dropout=0 [0.95] (train)", "lr=0.1 dropout=0 [0.95] (val)",
                             "lr=0.01 dropout=0 [0.90] (train)", "lr=0.01 dropout=0 [0.90] (val)"]
    label, xs, ys = acc.lines[1]
    assert label == "lr=0.1 dropout=0 [0.95] (val)" and list(xs) == [10, 20, 30, 40, 50]
    assert ys[-1] == pytest.approx(0.95 - math.exp(-4))
    assert len(loss.lines[0][1]) == 50  # the training loss step by step


def test_confusion_and_per_class_from_a_trained_cnn(trained_cnn, digits, tmp_path):
    model, images, labels = trained_cnn
    predicted = model.eval()(images).argmax(1)
    matrix = [[int(((labels == t) & (predicted == p)).sum()) for p in range(10)]
              for t in range(10)]
    assert sum(map(sum, matrix)) == len(labels)
    accuracies = [row[i] / max(sum(row), 1) for i, row in enumerate(matrix)]
    drawn = figures.confusion_matrix_figure(matrix, digits.classes, tmp_path / "cm.png",
                                            "confusion matrix (test set)")
    assert_png(drawn.path)
    ax = drawn.axes[0]
    rates = ax.images[0]
    for t in range(10):
        assert rates[t, t] == pytest.approx(matrix[t][t] / sum(matrix[t]))
    assert ax.texts == [str(matrix[i][j]) for i in range(10) for j in range(10)]
    assert ax.xlabel == "predicted class" and ax.yticks == digits.classes
    bars = figures.per_class_accuracy_figure(accuracies, digits.classes,
                                             tmp_path / "per_class.png")
    assert_png(bars.path)
    hardest_first = sorted(range(10), key=lambda i: accuracies[i])
    assert bars.axes[0].yticks == [digits.classes[i] for i in hardest_first]
    assert bars.axes[0].texts == [f"{accuracies[i]:.3f}" for i in hardest_first]


def test_confusion_matrix_many_classes_without_counts(tmp_path):
    k = 30
    matrix = [[5 if i == j else (1 if j == (i + 1) % k else 0) for j in range(k)]
              for i in range(k)]
    matrix[3] = [0] * k  # a class absent from the test set: its row stays zero
    drawn = figures.confusion_matrix_figure(matrix, [f"class {i}" for i in range(k)],
                                            tmp_path / "cm.png", "30 classes")
    assert_png(drawn.path)
    assert drawn.axes[0].texts == []  # no counts past 20 classes
    assert not drawn.axes[0].images[0][3].any() and drawn.axes[0].images[0][4, 4] == 5 / 6


def test_weight_distributions_name_the_layers_and_their_spread(trained_cnn, tmp_path):
    from agent.report.study_figures import WeightSet, weight_distributions
    from agent.report.weights_section import layer_weights

    model = trained_cnn[0]
    trained = layer_weights(model)
    fresh = layer_weights(MODELS["cnn"](validate({"channels": [8, 16]}), (1, 8, 8), 10))
    assert list(trained) == ["conv1", "conv2", "head"]  # named layers, no index, no bn scale
    sets = [WeightSet("init", "init", "initial weights", fresh),
            WeightSet("B1", "best", "adam lr=0.01", trained),
            WeightSet("W1", "worst", "sgd lr=1e-05", {k: v * 0.5 for k, v in trained.items()})]
    drawn = weight_distributions("cnn", list(trained), sets, tmp_path / "weights.png")
    assert_png(drawn.path)
    assert drawn.suptitle == "cnn: weights per layer (biases and norm scales left out)"
    panels = [ax for ax in drawn.axes if ax.title]
    assert [ax.title for ax in panels] == [f"{name} ({trained[name].size:,} weights)"
                                           for name in trained]
    for ax, name in zip(panels, trained):
        assert ax.xticks == ["init", "B1", "W1"]
        assert ax.texts == [f"{fresh[name].std():.2g}", f"{trained[name].std():.2g}",
                            f"{(trained[name] * 0.5).std():.2g}"]
        assert ax.collections == 3  # a violin each
    assert drawn.legends == ["init: initial weights", "B1: adam lr=0.01", "W1: sgd lr=1e-05"]


def test_weights_of_a_run_blown_up_leave_the_others_readable(tmp_path):
    """A digits run at lr 10 whose weights reach +-2e4 beside the initial weights and the
    best runs' (+-0.2) drew those as flat lines at 0 on a linear axis: a panel whose widest
    set is WIDE_SPREAD times its narrowest or more is symlog, linear over the ordinary sets'
    scale, and says so; sets of one scale keep a linear axis."""
    from agent.report.study_figures import WeightSet, weight_distributions

    rng = np.random.default_rng(0)
    init, best = rng.normal(0, 0.07, 4096), rng.normal(0, 0.08, 4096)
    for worst, scale in ((rng.normal(0, 6e3, 4096), "symlog"), (best * 0.5, "linear")):
        sets = [WeightSet("init", "init", "initial weights", {"fc1": init}),
                WeightSet("B1", "best", "lr=0.1", {"fc1": best}),
                WeightSet("W1", "worst", "lr=10", {"fc1": worst})]
        drawn = weight_distributions("dense", ["fc1"], sets, tmp_path / f"{scale}.png")
        (ax,) = [ax for ax in drawn.axes if ax.title]
        linear = float(np.quantile(np.abs(best), 0.999))
        assert (ax.yscale, ax.ylabel) == ((scale, f"weight (linear within ±{linear:.2g}, log "
                                           "beyond)") if scale == "symlog"
                                          else (scale, "weight")), (ax.yscale, ax.ylabel)

def test_heatmap_cells_are_the_values_given(tmp_path):
    from agent.report.study_figures import HeatPanel, heatmap_grid

    values = np.array([[0.81, 0.79], [np.nan, 0.12]])
    panels = [HeatPanel("model=cnn, optimizer=adam", values, [["", ""], ["div", ""]]),
              HeatPanel("model=dense, optimizer=sgd", values[::-1].copy(),
                        [["div", ""], ["", ""]])]
    drawn = heatmap_grid(panels, "lr", [0.1, 0.001], "dropout", [0.0, 0.5], "val/acc", 0.1,
                         0.81, tmp_path / "grid.png", "val/acc over the grid", flip_rows=True)
    assert_png(drawn.path)
    first, second = [ax for ax in drawn.axes if ax.title]
    assert first.title == "model=cnn, optimizer=adam"
    cells = np.ma.filled(first.images[0].astype(float), np.nan)
    assert np.allclose(cells, values, equal_nan=True)
    assert first.texts == ["0.81", "0.79", "div", "0.12"]
    assert first.yticks == ["0.1", "0.001"] and first.xticks == ["0", "0.5"]
    assert first.ylabel == "lr" and first.xlabel == "dropout"
    assert second.texts == ["div", "0.12", "0.81", "0.79"]


def test_marginal_lines_are_the_means_given(tmp_path):
    from agent.report.study_figures import MarginalPanel, marginal_figure

    lr = MarginalPanel("lr", True, False, [1e-5, 1e-3, 1e-1],
                       {"optimizer=adam": [(1e-5, 0.3, 0.2, 0.4, 4), (1e-3, 0.85, 0.8, 0.9, 4),
                                           (1e-1, 0.15, 0.1, 0.2, 4)],
                        "optimizer=sgd": [(1e-5, 0.1, 0.1, 0.1, 4), (1e-3, 0.5, 0.4, 0.6, 4),
                                          (1e-1, 0.84, 0.8, 0.88, 4)]})
    model = MarginalPanel("model", False, True, ["cnn", "dense"],
                          {"optimizer=adam": [("cnn", 0.6, 0.1, 0.9, 10),
                                              ("dense", 0.5, 0.1, 0.85, 10)]})
    drawn = marginal_figure([lr, model], "val/acc", 0.1, tmp_path / "m.png", "by parameter")
    assert_png(drawn.path)
    lr_ax, model_ax = [ax for ax in drawn.axes if ax.xlabel]
    assert lr_ax.xscale == "log" and lr_ax.legend == ["optimizer=adam", "optimizer=sgd",
                                                      "chance"]
    adam = next(line for line in lr_ax.lines if line[0] == "optimizer=adam")
    assert list(adam[2]) == [0.3, 0.85, 0.15]
    assert model_ax.xticks == ["cnn", "dense"]


def test_tick_labels_that_would_run_into_each_other_are_thinned_or_tilted(tmp_path):
    """A batch-size study's 8 lr values 2x apart on a log axis (0.00125 beside 0.0025) ran
    into each other: every second number is kept on its tick; names are tilted, each kept;
    labels with room stay as they were."""
    from agent.report.study_figures import MarginalPanel, marginal_figure

    levels = [0.00125 * 2 ** i for i in range(8)]
    lr = MarginalPanel("lr", True, False, levels,
                       {"all runs": [(v, 0.5, 0.4, 0.6, 3) for v in levels]})
    size = MarginalPanel("batch_size", True, False, [32, 128, 512],
                         {"all runs": [(v, 0.5, 0.4, 0.6, 8) for v in (32, 128, 512)]})
    names = ["a_long_category_name", "another_long_category", "a_third_long_category",
             "and_a_fourth_one_too"]
    named = MarginalPanel("augment", False, True, names,
                          {"all runs": [(v, 0.5, 0.4, 0.6, 2) for v in names]})
    drawn = marginal_figure([lr, size, named], "val/acc", 0.1, tmp_path / "m.png", "by")
    assert_png(drawn.path)
    lr_ax, size_ax, named_ax = [ax for ax in drawn.axes if ax.xlabel]
    assert lr_ax.xticks == ["0.00125", "0.005", "0.02", "0.08"]  # every second, on its tick
    assert lr_ax.xtick_rotation == 0
    assert size_ax.xticks == ["32", "128", "512"] and size_ax.xtick_rotation == 0
    assert named_ax.xticks == names and named_ax.xtick_rotation == 35


def test_seed_figure_shows_every_seed_and_the_selected_run(tmp_path):
    from agent.report.study_figures import SeedRow, seed_figure

    rows = [SeedRow("model=cnn lr=0.001", [0.80, 0.82, 0.81], 0.81, 0.02, 0.84),
            SeedRow("model=dense lr=0.01", [0.78, 0.79], 0.785, 0.06, None)]
    drawn = seed_figure(rows, "val/acc", tmp_path / "seeds.png", "val/acc per seed")
    assert_png(drawn.path)
    ax = drawn.axes[0]
    assert ax.yticks == ["model=cnn lr=0.001", "model=dense lr=0.01"]
    assert ax.legend == ["one seed", "the sweep's value (what picked it; not in the mean)",
                         "mean, 95% interval"]
    seeds = [line for line in ax.lines if line[0] in ("one seed", "_seed")]
    assert [list(line[1]) for line in seeds] == [[0.80, 0.82, 0.81], [0.78, 0.79]]


# ---------------------------------------------------------------- Grad-CAM

def test_grad_cam_maps_of_a_trained_cnn(trained_cnn, digits, tmp_path):
    model, images, labels = trained_cnn
    images = images[:6]
    model.train()
    layer = last_conv_layer(model)
    hooks = len(layer._forward_hooks)
    cams = grad_cam(model, images)
    assert cams.shape == (6, 8, 8) and cams.dtype == torch.float32
    assert cams.min() >= 0 and cams.max() <= 1 and torch.isfinite(cams).all()
    assert all(m.max() == 1 or m.max() == 0 for m in cams)
    assert len(layer._forward_hooks) == hooks
    assert model.training and all(m.training for m in model.modules())
    predicted = model.eval()(images).argmax(1)
    titles = [f"true {digits.classes[t]} / pred {digits.classes[p]}"
              for t, p in zip(labels[:6].tolist(), predicted.tolist())]
    drawn = figures.gradcam_grid(digits.test_x[:6].float() / 255, cams, titles,
                                 tmp_path / "gradcam.png")
    assert_png(drawn.path)
    overlays = [ax for ax in drawn.axes if len(ax.images) == 2]  # the image, then its map
    assert len(overlays) == 6
    for ax, cam in zip(overlays, cams):
        assert np.allclose(ax.images[1], cam.numpy())


def test_grad_cam_same_under_channels_last(trained_cnn):
    model, images, _ = trained_cnn
    images = images[:8]
    plain = grad_cam(model, images)
    model_cl = MODELS["cnn"](validate({"channels": [8, 16]}), (1, 8, 8), 10)
    model_cl.load_state_dict(model.state_dict())
    model_cl = model_cl.to(memory_format=torch.channels_last)
    cams = grad_cam(model_cl, images.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(plain, cams, atol=1e-5)


def test_gradcam_grid_colour_images_and_misclassified_titles(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 32, 32, generator=generator)
    cams = torch.rand(10, 32, 32, generator=generator)
    titles = [f"true airplane / pred {'airplane' if i < 5 else 'automobile'}" for i in range(10)]
    wrong = [i >= 5 for i in range(10)]
    drawn = figures.gradcam_grid(images, cams, titles, tmp_path / "colour.png", wrong,
                                 "run x: 5 correct, 5 misclassified (red)")
    assert_png(drawn.path)
    assert drawn.suptitle == "run x: 5 correct, 5 misclassified (red)"
    titled = [ax for ax in drawn.axes if ax.title.startswith("true")]
    red = [ax.title.replace("\n", " ") for ax in titled if ax.title_color[0] > 0.7
           and ax.title_color[1] < 0.3]
    assert len(titled) == 10 and len(red) == 5 and all("automobile" in t for t in red)


class TwoDetectors(nn.Module):
    """Feature k is input channel k (a 1x1 conv with identity weights, then an in-place ReLU);
    class k's score is feature k's spatial mean. So only where channel k is bright drives
    class k, and Grad-CAM for class k must light up exactly there."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x):
        return self.relu(self.conv(x)).mean(dim=(2, 3))


def test_grad_cam_localises_the_class_evidence():
    images = torch.zeros(1, 2, 16, 16)
    images[0, 0, 2:6, 2:6] = 1.0  # class 0's evidence: top left
    images[0, 1, 10:14, 9:15] = 0.5  # class 1's evidence: bottom right, weaker
    top_left = torch.zeros(16, 16, dtype=torch.bool)
    top_left[:8, :8] = True
    model = TwoDetectors()
    predicted = grad_cam(model, images)[0]  # class 0 wins (16 vs 12 on the mean)
    assert predicted[top_left].sum() / predicted.sum() > 0.95
    class_1 = grad_cam(model, images, target=torch.tensor([1]))[0]
    assert class_1[~top_left].sum() / class_1.sum() > 0.95
    assert class_1[10:14, 9:15].min() == 1.0 and predicted[2:6, 2:6].min() == 1.0


def test_grad_cam_without_evidence_is_zero():
    assert grad_cam(TwoDetectors(), torch.zeros(2, 2, 8, 8)).eq(0).all()


def test_grad_cam_removes_its_hook_and_restores_mode_on_error(trained_cnn):
    model, images, _ = trained_cnn
    model.train()
    model[-1].eval()  # a mixed-mode model: each module's own mode comes back
    layer = last_conv_layer(model)
    hooks = len(layer._forward_hooks)
    with pytest.raises((RuntimeError, IndexError)):
        grad_cam(model, images[:2], target=torch.tensor([3, 99]))  # no class 99
    assert len(layer._forward_hooks) == hooks
    assert model.training and not model[-1].training
    model[-1].train()


def test_last_conv_layer_needs_a_convolution():
    cnn = MODELS["cnn"](validate({"channels": [8, 16]}), (1, 8, 8), 10)
    assert last_conv_layer(cnn) is [m for m in cnn if isinstance(m, nn.Conv2d)][-1]
    dense = MODELS["dense"](validate({"hidden": 16}), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv_layer(dense)


def test_a_run_with_one_logged_loss_is_drawn_as_a_dot(tmp_path):
    """A run stopped after its first logged step has one point: a line alone would not show."""
    curves = [curve({"model": "cnn", "lr": 0.1}, [2.3]),
              curve({"model": "cnn", "lr": 0.01}, [2.3, 2.1, 1.9])]
    drawn = figures.group_loss_figure(curves, ["model"], "lr", None, tmp_path / "stuck.png",
                                      "stuck runs (2)")
    (panel,) = [ax for ax in drawn.axes if ax.title]
    by_label = {line[0]: marker for line, marker in zip(panel.lines, panel.markers)}
    assert by_label["model=cnn lr=0.1"] == "o" and by_label["model=cnn lr=0.01"] == "None"


def test_a_metric_on_a_log_axis_is_coloured_on_a_log_scale(tmp_path):
    """Losses from 0.07 to 46 (a grid where lr 30 diverged): the metric's axis is log, and so
    are its colours; linear colours gave every run under 2 the one colour of the best."""
    rows = [{"lr": lr, "val/loss": loss} for lr, loss in
            ((0.05, 0.07), (0.05, 0.08), (0.05, 0.3), (0.05, 2.1), (30.0, 7.3), (30.0, 46.0))]
    drawn = figures.parallel_coordinates(rows, ["lr"], "val/loss", "minimize",
                                         tmp_path / "pc.png", "all runs")
    assert drawn.axes[0].xticks[-1] == "val/loss (log)"
    assert drawn.axes[1].yscale == "log"  # the colour bar, whose norm colours the lines
    linear = figures.parallel_coordinates([{**r, "val/loss": r["val/loss"] / 100 + 0.5}
                                           for r in rows], ["lr"], "val/loss", "minimize",
                                          tmp_path / "pc2.png", "all runs")
    assert linear.axes[0].xticks[-1] == "val/loss" and linear.axes[1].yscale == "linear"


def test_marginal_legends_sit_under_the_axis_labels_and_div_clear_of_the_values(tmp_path):
    """A random search's panels (five optimizer names, tilted; lr on a log axis ticked
    10^-4 ...; batch size; dropout): each legend lies under its panel's x label, not over
    it, and a "div" (every run of a line diverged there) is written above the values, not
    on the mean of another line drawn at the top of the panel."""
    from agent.report.study_figures import MarginalPanel, marginal_figure

    names = ["adam", "adamw", "rmsprop", "sam", "sgd"]
    optimizer = MarginalPanel("optimizer", False, True, names, {
        "model=cnn": [(n, 0.97, 0.95, 0.98, 3, 0.97) for n in names],
        "model=dense": [(n, 0.9, 0.85, 0.92, 3, 0.9) for n in names[2:]]},
        {"model=dense": ["adam", "adamw"]})
    lrs = [1.2e-4, 4e-4, 2e-3, 9e-3, 0.03, 0.09]
    lr = MarginalPanel("lr", True, False, lrs, {
        f"optimizer={n}": [(v, 0.5 + 0.08 * k, 0.4, 0.98, 1, 0.5) for k, v in enumerate(lrs)]
        for n in names[:3]}, {"optimizer=rmsprop": [0.09], "optimizer=adamw": [0.09]})
    sizes = MarginalPanel("batch_size", False, False, [32, 64, 128], {
        f"optimizer={n}": [(v, 0.8, 0.7, 0.9, 2, 0.8) for v in (32, 64, 128)]
        for n in names})
    dropout = MarginalPanel("dropout", False, False, [0.0, 0.25, 0.5], {
        f"optimizer={n}": [(v, 0.7, 0.6, 0.8, 2, 0.7) for v in (0.0, 0.25, 0.5)]
        for n in names[:2]})
    drawn = marginal_figure([optimizer, lr, sizes, dropout], "val/acc", 0.1,
                            tmp_path / "m.png", "val/acc by parameter")
    assert_png(drawn.path)
    panels = [ax for ax in drawn.axes if ax.xlabel]
    assert [ax.xlabel for ax in panels] == ["optimizer", "lr", "batch_size", "dropout"]
    assert panels[1].xscale == "log"
    for ax in panels:
        assert ax.legend and ax.overlaps == [], (ax.xlabel, ax.overlaps)
        assert ax.texts_on_points == [], (ax.xlabel, ax.texts_on_points)
    assert panels[0].texts.count("div") == 2 and panels[1].texts.count("div") == 2


def test_parallel_number_labels_sit_at_their_values_or_are_left_out(tmp_path):
    """lr 0.282, 0.267 and 0.259 drawn nearly at one height: each label printed sits at its
    own value (a label moved to make room sat on the next run's point and read as its
    value), none runs into another, and the axis's ends are named; categories are all
    named."""
    lrs = [0.282, 0.267, 0.259, 0.186, 0.00117]
    losses = [3.25, 0.971, 0.774, 0.493, 2.03]
    rows = [{"optimizer": o, "lr": lr, "val/loss": loss}
            for o, lr, loss in zip(["adam", "sgd", "sgd", "adam", "sam"], lrs, losses)]
    drawn = figures.parallel_coordinates(rows, ["optimizer", "lr"], "val/loss", "minimize",
                                         tmp_path / "pc.png", "all runs")
    ax = drawn.axes[0]
    assert ax.overlaps == []
    lr_axis = figures._Axis("lr", lrs)
    at = {text: y for text, (x, y) in zip(ax.texts, ax.text_xy) if 1 < x < 2}
    assert {"0.282", "0.00117"} <= set(at) and len(at) < len(lrs)
    for text, y in at.items():
        assert y == pytest.approx(lr_axis.position(float(text)), abs=1e-9), text
    assert {"adam", "sam", "sgd"} <= set(ax.texts)


def test_runs_that_logged_fewer_steps_than_epochs_are_drawn_by_their_epochs(tmp_path,
                                                                            monkeypatch):
    """A digits cnn sweep trained here, 10 steps an epoch (batch 128): at log_interval 100 a
    run logs its first step and its last, no more points than its epochs (at log_interval
    20, run for one epoch before the last step was logged, it had one point, its first
    step's loss, drawn as a dot on an x axis from 0.96 to 1.04). It is drawn by its epoch
    means; a run that logged more steps than epochs keeps them, at their share of an epoch;
    the axis runs from 0 to the longest run's planned epochs, from epoch 1 where every run
    is drawn by its epoch means (the first of them is epoch 1's)."""
    from agent.report import document, stats
    from agent.report.runs_section import group_figure
    from agent.report.study import local_study
    from agent.sweep.agent_loop import LocalAgent
    from agent.sweep.pack_size import PackSizer
    from agent.sweep.store import create_store

    monkeypatch.chdir(tmp_path)
    store = create_store(tmp_path / "data" / "sweeps" / "few", "few", "few", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "cnn"},
                       "channels": {"value": [8, 16]}, "batch_size": {"value": 128},
                       "optimizer": {"value": "adam"}, "lr": {"value": 0.01},
                       "sinks": {"value": ["tensorboard"]},
                       "epochs": {"values": [2, 3]}, "log_interval": {"values": [5, 100]}}})
    assert LocalAgent(store, 5.0, 60.0, PackSizer(fixed=1)).run(None) == 0
    study = local_study(store)
    ctx = document.study_context(study, tmp_path / "report", stats.GroupRule())
    runs = {(r.config["epochs"], r.config["log_interval"]): r for r in study.runs}
    assert len(runs) == 4 and all(r.state == "finished" for r in runs.values())
    two = runs[(2, 100)]
    assert ctx.curves[two.id].steps == [1, 20]  # the premise: its first step and its last
    for group in stats.GROUPS:
        members = [r for r in study.runs if ctx.group_of(r) == group]
        if not members:
            continue
        drawn = group_figure(ctx, group, members)
        lines = {label: (x, y) for ax in drawn.axes for label, x, y in ax.lines}
        by_epoch = any(r.config["log_interval"] == 100 for r in members)
        for ax in [ax for ax in drawn.axes if ax.title]:
            assert ax.xlabel == ("epoch" if by_epoch else "training step")
            longest = max(r.config["epochs"] for r in members)
            if all(r.config["log_interval"] == 100 for r in members):  # epoch means alone:
                pad = 0.02 * (longest - 1) or 0.5  # from epoch 1, their first point
                assert ax.xlim == pytest.approx((1 - pad, longest + pad))
                assert drawn.suptitle.endswith("mean training loss of each epoch")
            else:
                assert ax.xlim == pytest.approx((0, longest * (1 if by_epoch else 10) * 1.02))
        for (epochs, interval), run in runs.items():
            if run not in members:
                continue
            x, y = lines[f"epochs={epochs} log_interval={interval}"]
            if interval == 100:  # no more logged steps than epochs: the epoch means
                assert list(x) == list(range(1, epochs + 1))
                assert list(y) == pytest.approx([row["train/loss"] for row in run.history])
            else:  # every 5th step and the last: 5 or 7 points, at their share of an epoch
                steps = ctx.curves[run.id].steps
                assert len(steps) == 2 * epochs + 1 and steps[-1] == 10 * epochs
                assert list(x) == pytest.approx([s / 10 if by_epoch else s for s in steps])
    # the report says which figures mix the two, in words
    from agent.report.runs_section import GROUP_TITLES

    mixed = [group for group in stats.GROUPS
             if {r.config["log_interval"] for r in study.runs if ctx.group_of(r) == group}
             == {5, 100}]
    assert mixed  # the premise: runs of both intervals in one group
    text = document.build_report(study, tmp_path / "built").path.read_text()
    titles = " and ".join(f'"{GROUP_TITLES[group]}"' for group in mixed)
    assert (f"The figure{'s' if len(mixed) > 1 else ''} of the {titles} runs "
            f"{'are' if len(mixed) > 1 else 'is'} drawn against the epoch: a run that logged "
            "no more than one training loss per epoch shows its mean training loss per "
            "epoch, the others their logged steps, each at its fraction of an epoch.") in text


def test_a_group_without_a_run_has_no_figure_and_epoch_means_start_at_epoch_one(
        tmp_path, monkeypatch):
    """A 2-epoch digits sweep trained here at batch 128 (9 steps an epoch, fewer than
    log_interval 20): no run diverged, yet loss_diverged.png was drawn and embedded saying
    "no run in this group"; the stuck and converged figures, titled "training loss" (the
    README said step-level), drew epoch means on an axis from epoch 0, where no line is.
    An empty group has no figure (the text names it), a figure's title says it draws the
    epoch means, and its axis starts at epoch 1."""
    from agent.report import document, stats
    from agent.report.study import local_study
    from agent.sweep.agent_loop import LocalAgent
    from agent.sweep.pack_size import PackSizer
    from agent.sweep.store import create_store

    monkeypatch.chdir(tmp_path)
    store = create_store(tmp_path / "data" / "sweeps" / "two", "two", "two", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "batch_size": {"value": 128}, "optimizer": {"value": "sgd"},
                       "sinks": {"value": ["tensorboard"]}, "epochs": {"value": 2},
                       "lr": {"values": [0.3, 0.0003]}}})
    assert LocalAgent(store, 5.0, 60.0, PackSizer(fixed=1)).run(None) == 0
    study = local_study(store)
    report = document.build_report(study, tmp_path / "report")
    text = report.path.read_text()
    ctx = document.study_context(study, tmp_path / "ctx", stats.GroupRule())
    groups = {r.config["lr"]: ctx.group_of(r) for r in study.runs}
    assert groups == {0.3: stats.CONVERGED, 0.0003: stats.STUCK}  # the premise: none diverged
    for run in study.runs:  # and one logged step an epoch or fewer
        assert len(ctx.curves[run.id].steps) <= 2 and ctx.curves[run.id].source == "tensorboard"
    assert "loss_diverged.png" not in report.figures and "loss_diverged.png" not in text
    assert not (tmp_path / "report" / "loss_diverged.png").exists()
    assert ("No figure for the groups without a run: diverged; collapsed to chance; did not "
            "leave chance, loss still falling.") in text
    assert ('The figures of the "stuck at chance" and "converged" runs show each run\'s mean '
            "training loss per epoch, not its logged steps: none of these runs logged more "
            "than one training loss per epoch (log_interval about an epoch's steps or "
            "more).") in text
    for group, title in (("stuck", "stuck at chance"), ("converged", "converged")):
        drawn = report.figures[f"loss_{group}.png"]
        assert drawn.suptitle == f"{title} (1 run): mean training loss of each epoch"
        (panel,) = [ax for ax in drawn.axes if ax.lines]
        assert panel.xlabel == "epoch" and panel.xlim == pytest.approx((0.98, 2.02))
        assert [list(x) for label, x, _ in panel.lines if not label.startswith("chance")] \
            == [[1, 2]]


def test_a_run_diverged_by_its_epochs_mean_shows_that_mean_above_the_line(tmp_path):
    """A spike between two logged steps raised epoch 1's mean training loss to 27.3 (past
    10 x ln 10 = 23.0) while every logged step stayed near 2: the diverged figure drew
    only the steps, all under the line, so nothing showed why the run counts as diverged.
    Each epoch's mean training loss and validation loss are drawn at the epoch's end."""
    from agent.report.curves import LossCurve
    from agent.report.runs_section import _epoch_points
    from agent.report.study import RunRecord

    history = [{"epoch": 1, "train/loss": 27.3, "val/loss": 1.7},
               {"epoch": 2, "train/loss": 2.1, "val/loss": 1.4},
               {"epoch": 3, "train/loss": 1.6, "val/loss": math.nan}]
    run = RunRecord("r1", "finished", {"lr": 0.126}, None, {}, history, None)
    steps = LossCurve([1, 21, 41, 61, 81, 101], [2.3, 3.2, 2.4, 1.9, 1.7, 1.4], "tensorboard",
                      steps_per_epoch=40)
    means, vals = _epoch_points(run, steps, by_step=True)
    assert means == [(40, 27.3), (80, 2.1), (120, 1.6)]
    assert vals[:2] == [(40, 1.7), (80, 1.4)] and math.isnan(vals[2][1])
    assert _epoch_points(run, steps, by_step=False)[0] == [(1, 27.3), (2, 2.1), (3, 1.6)]
    unknown = LossCurve(steps.steps, steps.losses, "tensorboard")  # steps an epoch unknown
    assert _epoch_points(run, unknown, by_step=True) == ([], [])

    drawn = figures.group_loss_figure(
        [figures.GroupCurve({"lr": 0.126}, steps.steps, steps.losses, means, vals)], [], "lr",
        None, tmp_path / "diverged.png", "diverged runs (1)", threshold=23.0, x_end=120)
    assert_png(drawn.path)
    (panel,) = [ax for ax in drawn.axes if ax.title]
    marked = {marker: list(zip(xs, ys)) for (_, xs, ys), marker
              in zip(panel.lines, panel.markers) if marker in ("o", "s")}
    assert marked["o"] == [(40, 27.3), (80, 2.1), (120, 1.6)]
    assert marked["s"] == [(40, 1.7), (80, 1.4)]  # a non-finite value is not drawn
    assert "epoch's mean training loss" in drawn.legends and "validation loss" in drawn.legends


def test_the_threshold_label_sits_clear_of_the_runs_last_points(tmp_path):
    """adam at lr 10 on digits ended its third epoch at a mean training loss of 25.9 and a
    validation loss of 68.9, just above the line at 23.0 (a run that ends above it
    diverged): the line's label, written inside the panel's right edge, sat on those last
    points. It is written just outside the edge, at the line's height."""
    means = [(1, 3.7e5), (2, 2.6e3), (3, 25.9)]
    vals = [(1, 1.7e4), (2, 93.7), (3, 68.9)]
    curves = [figures.GroupCurve({"lr": 10.0}, [1, 2, 3], [y for _, y in means], means, vals),
              figures.GroupCurve({"lr": 50.0}, [1, 2, 3], [6.2e7, 7.2e3, 98.8],
                                 [(1, 6.2e7), (2, 7.2e3), (3, 98.8)], [(3, 91.9)])]
    drawn = figures.group_loss_figure(curves, [], "lr", None, tmp_path / "diverged.png",
                                      "diverged runs (2)", "epoch", threshold=23.0, x_end=3)
    assert_png(drawn.path)
    (panel,) = [ax for ax in drawn.axes if ax.title]
    (at,) = [xy for text, xy in zip(panel.texts, panel.text_xy) if text == "23.0"]
    assert at[0] > panel.xlim[1] and at[1] == pytest.approx(23.0)  # beside the line, outside
    assert panel.texts_on_points == [] and panel.overlaps == []


def test_a_div_band_leaves_an_accuracy_axis_within_0_and_1(tmp_path):
    """A digits grid whose lr 100 diverged for both optimizers, the others' means up to
    0.97: the band of "div" lines along the panel's top stretched the shared accuracy axis
    to 1.27. The "div"s are written just above the panel; the axis spans the values."""
    from agent.report.study_figures import MarginalPanel, marginal_figure

    lrs = [0.003, 0.03, 0.3, 100.0]
    lr = MarginalPanel("lr", True, False, lrs, {
        "optimizer=adam": [(0.003, 0.85, 0.85, 0.85, 2, 0.85), (0.03, 0.96, 0.95, 0.97, 2, 0.96)],
        "optimizer=sgd": [(0.003, 0.17, 0.17, 0.18, 2, 0.17), (0.03, 0.59, 0.59, 0.59, 2, 0.59),
                          (0.3, 0.95, 0.94, 0.96, 2, 0.95)]},
        {"optimizer=adam": [0.3, 100.0], "optimizer=sgd": [100.0]})
    optimizer = MarginalPanel("optimizer", False, True, ["adam", "sgd"], {
        "all runs": [("adam", 0.9, 0.85, 0.96, 4, 0.9), ("sgd", 0.57, 0.29, 0.85, 6, 0.59)]})
    drawn = marginal_figure([optimizer, lr], "val/acc", 0.1, tmp_path / "m.png", "by")
    assert_png(drawn.path)
    panels = [ax for ax in drawn.axes if ax.xlabel]
    for ax in panels:
        assert 0 <= ax.ylim[0] and ax.ylim[1] <= 1.05, ax.ylim
        assert ax.overlaps == [] and ax.texts_on_points == []
    lr_ax = panels[1]
    assert lr_ax.texts.count("div") == 3
    assert all(y > lr_ax.ylim[1] for text, (_, y) in zip(lr_ax.texts, lr_ax.text_xy)
               if text == "div")


def test_a_panel_of_one_run_a_value_draws_dots_and_crosses(tmp_path):
    """A random search's lr, a value each run: each run is a dot (no line, band or median:
    a line through single runs reads as a trend), and two runs that diverged at lr 34 and
    52 are crosses above the panel at their values (their two "div"s ran together)."""
    from agent.report.study_figures import MarginalPanel, marginal_figure

    lrs = [0.0014, 0.0019, 0.05, 0.087, 0.17, 1.6, 11.0, 34.0, 52.0]
    scores = [0.09, 0.12, 0.9, 0.75, 0.27, 0.15, 0.08]
    lr = MarginalPanel("lr", True, False, lrs, {"optimizer=adam": [
        (v, s, s, s, 1, s, 0) for v, s in zip(lrs, scores)]}, {"optimizer=adam": [34.0, 52.0]},
        each_run=True)
    drawn = marginal_figure([lr], "val/acc", 0.1, tmp_path / "m.png", "by")
    assert_png(drawn.path)
    (ax,) = [ax for ax in drawn.axes if ax.xlabel]
    lines = {label: (x, y, marker, style) for (label, x, y), marker, style
             in zip(ax.lines, ax.markers, ax.linestyles)}
    x, y, marker, style = lines["optimizer=adam"]
    assert list(x) == lrs[:7] and list(y) == scores and (marker, style) == ("o", "None")
    x, _, marker, style = lines["diverged (x, above)"]
    assert list(x) == [34.0, 52.0] and (marker, style) == ("x", "None")
    assert ax.collections == 0 and "div" not in ax.texts  # no band; crosses, not texts
    assert ax.ylabel == "val/acc: one run a dot" and ax.overlaps == []
    # ticked on decades (over two of them), in plain numbers
    assert ax.xticks and all(not t or math.log10(float(t)).is_integer() for t in ax.xticks)
