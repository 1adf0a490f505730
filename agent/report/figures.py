"""The study report's figures: pure functions from plain numbers to one PNG each.

Each draws with matplotlib's Agg backend, saves at 110 dpi, closes the figure, returns the Path.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110
LOG_SPAN = 100.0  # "more than two decades": the ratio above which an axis goes to log10
BEST, WORST = "tab:blue", "tab:red"


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(values) -> list[float]:
    return [float(v) for v in values if _is_number(v) and math.isfinite(v)]


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _spans_decades(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN


def _log_y_if_wide(ax, values: list[float]) -> None:
    """Losses that blow up, or norms of layers of very different size, read better on log y."""
    if _spans_decades(_finite(values)):
        ax.set_yscale("log")


def _class_ticks(ax, classes: list[str], axis: str = "x") -> None:
    """Class names on an axis; small and rotated when there are many (CIFAR-100)."""
    many = len(classes) > 20
    positions = range(len(classes))
    if axis == "x":
        ax.set_xticks(positions, classes, rotation=90 if many else 45,
                      ha="center" if many else "right", fontsize=6 if many else 9)
    else:
        ax.set_yticks(positions, classes, fontsize=6 if many else 9)


# ---------------------------------------------------------------- the dataset

def class_histograms(train_counts: list[int], test_counts: list[int], classes: list[str],
                     path) -> Path:
    """Images per class, train and test bars side by side."""
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.35 * k + 2), 24.0), 4.0))
    x = np.arange(k)
    ax.bar(x - 0.2, train_counts, width=0.4, label=f"train ({sum(train_counts)})")
    ax.bar(x + 0.2, test_counts, width=0.4, label=f"test ({sum(test_counts)})")
    _class_ticks(ax, classes)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title("images per class")
    ax.legend()
    return _save(fig, path)


# ---------------------------------------------------------------- parallel coordinates

class _Axis:
    """One vertical axis: where each value sits in [0, 1], and ticks in the values' own units."""

    def __init__(self, name: str, values: list):
        present = [v for v in values if _present(v)]
        self.categorical = any(not _is_number(v) for v in present)
        if self.categorical:
            self.categories = sorted({_category(v) for v in present}, key=_category_order)
            self.log = False
            self.label = name
        else:
            numbers_ = [float(v) for v in present]
            self.log = _spans_decades(numbers_)
            scaled = [math.log10(v) for v in numbers_] if self.log else numbers_
            self.low, self.high = (min(scaled), max(scaled)) if scaled else (0.0, 1.0)
            self.label = f"{name} (log)" if self.log else name

    def position(self, value) -> float:
        """Where the value sits on [0, 1]; nan when it is missing."""
        if not _present(value):
            return math.nan
        if self.categorical:
            n = len(self.categories)
            return self.categories.index(_category(value)) / (n - 1) if n > 1 else 0.5
        return self._scale(math.log10(value) if self.log else float(value))

    def _scale(self, t: float) -> float:
        return 0.5 if self.high == self.low else (t - self.low) / (self.high - self.low)

    def ticks(self) -> list[tuple[float, str]]:
        if self.categorical:
            return [(self.position(c), str(c)) for c in self.categories]
        if self.low == self.high:
            return [(0.5, _number_text(10 ** self.low if self.log else self.low))]
        if self.log:
            decades = range(math.ceil(self.low), math.floor(self.high) + 1)
            points = list(decades) if len(decades) >= 2 else [self.low, self.high]
            return [(self._scale(t), _number_text(10 ** t)) for t in points]
        return [(self._scale(t), _number_text(t)) for t in np.linspace(self.low, self.high, 5)]


def _present(value) -> bool:
    """Missing means absent or None, or a number that is nan or infinite."""
    return value is not None and not (_is_number(value) and not math.isfinite(value))


def _category(value):
    """str and bool stay themselves (so they sort naturally); lists and the like become text."""
    return value if isinstance(value, (str, bool, np.bool_)) or _is_number(value) else str(value)


def _category_order(value):
    """Numbers (and bools) first, in numeric order, then text in alphabetical order."""
    if isinstance(value, (numbers.Real, np.bool_)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _number_text(value: float) -> str:
    return f"{value:.3g}"


def parallel_coordinates(rows: list[dict], axes: list[str], metric: str, goal: str, path,
                         title: str) -> Path:
    """One polyline per row across `axes` and a last axis for `metric`, coloured by the metric
    (viridis, brighter = better for either goal).

    A row without a finite metric is skipped (it cannot be coloured). A row missing another
    value (key absent, None, nan) is drawn with a gap at that axis: the segments touching the
    missing axis are left out, each present value still gets a dot.
    """
    names = list(axes) + [metric]
    rows = [r for r in rows if _is_number(r.get(metric)) and math.isfinite(r[metric])]
    fig, ax = plt.subplots(figsize=(min(max(6.0, 1.5 * len(names) + 2), 20.0), 4.8))
    ax.set_title(f"{title} ({len(rows)} run{'s' if len(rows) != 1 else ''})")
    if not rows:
        _note(ax, f"no runs with a value of {metric} to show")
        return _save(fig, path)
    columns = [_Axis(name, [r.get(name) for r in rows]) for name in names]
    scores = [float(r[metric]) for r in rows]
    low, high = min(scores), max(scores)
    if low == high:  # one run, or ties: give the colour scale some width
        pad = max(abs(low) * 0.05, 1e-6)
        low, high = low - pad, high + pad
    norm = Normalize(low, high)
    cmap = plt.get_cmap("viridis" if goal == "maximize" else "viridis_r")
    x = np.arange(len(names))
    # Worst first, so the best lines are drawn on top.
    for row, score in sorted(zip(rows, scores), key=lambda p: p[1], reverse=goal != "maximize"):
        y = [column.position(row.get(name)) for column, name in zip(columns, names)]
        ax.plot(x, y, color=cmap(norm(score)), linewidth=1.2, alpha=0.85, marker="o",
                markersize=2.5)
    for i, column in enumerate(columns):
        ax.axvline(i, color="0.3", linewidth=0.8, zorder=0)
        for y, text in column.ticks():
            ax.text(i + 0.03, y, text, fontsize=7, va="center", ha="left",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.6, pad=0.5))
    ax.set_xticks(x, [c.label for c in columns], rotation=15 if len(names) > 5 else 0)
    ax.set_xlim(-0.2, len(names) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(f"{metric} ({'higher' if goal == 'maximize' else 'lower'} is better)")
    return _save(fig, path)


# ---------------------------------------------------------------- curves

def metric_curves(series: dict[str, list[tuple[list[float], list[float]]]], ylabel: str, path,
                  title: str, xlabel: str = "epoch") -> Path:
    """Thin curves, one colour per group; non-finite points are gaps; log y past 2 decades."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    colours = plt.get_cmap("tab10")
    values = []
    for i, (group, curves) in enumerate(series.items()):
        colour = colours(i % 10)
        ax.plot([], [], color=colour, label=f"{group} ({len(curves)})")
        for xs, ys in curves:
            ys = [float(y) if _is_number(y) and math.isfinite(y) else math.nan for y in ys]
            values += ys
            ax.plot(xs, ys, color=colour, linewidth=0.9, alpha=0.7)
    if not any(curves for curves in series.values()):
        _note(ax, "no curves to show")
    else:
        _log_y_if_wide(ax, values)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if series:
        ax.legend(title="group (curves)", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def training_curves(runs: list[tuple[str, list[dict]]], path) -> Path:
    """Loss and accuracy against epoch: train dashed, validation solid, one colour per run.
    Rows without a metric are skipped; a row without "epoch" uses its 1-based position."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    colours = plt.get_cmap("tab10")
    for ax, kind in ((loss_ax, "loss"), (acc_ax, "acc")):
        values = []
        for i, (label, history) in enumerate(runs):
            for split, style in (("train", "--"), ("val", "-")):
                key = f"{split}/{kind}"
                points = [(row.get("epoch", n + 1), row[key]) for n, row in enumerate(history)
                          if _is_number(row.get(key)) and math.isfinite(row[key])]
                if points:
                    values += [y for _, y in points]
                    ax.plot(*zip(*points), style, color=colours(i % 10), linewidth=1.3,
                            label=f"{label} {split}")
        if not values:
            _note(ax, f"no {kind} recorded")
            continue
        if kind == "loss":
            _log_y_if_wide(ax, values)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if kind == "loss" else "accuracy")
        ax.set_title(f"{'loss' if kind == 'loss' else 'accuracy'} (train dashed, val solid)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------- one run's test results

def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], path,
                            title: str) -> Path:
    """Rates normalised by row (true class); counts written in the cells when k <= 20."""
    counts = np.asarray(matrix, dtype=float).reshape(len(classes), len(classes))
    totals = counts.sum(1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    k = len(classes)
    size = min(max(4.5, 0.5 * k + 2), 16.0)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 20:
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    _class_ticks(ax, classes, "x")
    _class_ticks(ax, classes, "y")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


def per_class_accuracy_figure(accuracies: list[float], classes: list[str], path) -> Path:
    """Horizontal bars, hardest class on top."""
    order = sorted(range(len(classes)), key=lambda i: accuracies[i])
    k = len(classes)
    fig, ax = plt.subplots(figsize=(6.5, min(max(3.0, 0.25 * k + 1), 22.0)))
    values = [accuracies[i] for i in order]
    ax.barh(range(k), values, color="tab:blue")
    _class_ticks(ax, [classes[i] for i in order], "y")
    ax.invert_yaxis()
    if k <= 30:
        for y, value in enumerate(values):
            ax.text(value + 0.01, y, f"{value:.3f}", va="center", fontsize=7)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("test accuracy")
    ax.set_title("accuracy per class (hardest first)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------- weights and Grad-CAM

def weight_norms_figure(best: list[dict[str, float]], worst: list[dict[str, float]],
                        path) -> Path:
    """Box plots of the final weight norm per layer, best runs beside worst runs.
    Layers follow the order they first appear in; a run lacking a layer adds nothing to it."""
    layers = list(dict.fromkeys(name for norms in best + worst for name in norms))
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.7 * len(layers) + 2), 24.0), 4.5))
    if not layers:
        _note(ax, "no weight norms recorded")
        ax.set_title("final weight norm per layer")
        return _save(fig, path)
    values = []
    for offset, group, colour in ((-0.2, best, BEST), (0.2, worst, WORST)):
        data = [(i + offset, _finite(norms.get(name) for norms in group))
                for i, name in enumerate(layers)]
        data = [(x, v) for x, v in data if v]
        values += [v for _, vs in data for v in vs]
        if data:
            boxes = ax.boxplot([v for _, v in data], positions=[x for x, _ in data], widths=0.35,
                               patch_artist=True, manage_ticks=False)
            for box in boxes["boxes"]:
                box.set(facecolor=colour, alpha=0.5)
            for median in boxes["medians"]:
                median.set(color="black")
    _log_y_if_wide(ax, values)
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_xlabel("layer")
    ax.set_ylabel("L2 norm of the layer's weights")
    ax.set_title("final weight norm per layer")
    ax.legend(handles=[Patch(facecolor=BEST, alpha=0.5, label=f"best runs ({len(best)})"),
                       Patch(facecolor=WORST, alpha=0.5, label=f"worst runs ({len(worst)})")])
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _displayable(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> an array imshow takes, and the colormap (gray for 1 channel)."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy(), None
    return image.mean(0).numpy(), "gray"


def gradcam_grid(images: torch.Tensor, cams: torch.Tensor, titles: list[str], path) -> Path:
    """Each image (N, C, H, W in [0, 1]) above its Grad-CAM overlay (N, H, W in [0, 1]);
    at most 8 pairs per row of the grid."""
    n = len(images)
    cols = max(1, min(n, 8))
    pair_rows = max(1, math.ceil(n / cols))
    fig, grid = plt.subplots(2 * pair_rows, cols, figsize=(1.8 * cols + 0.6, 3.8 * pair_rows),
                             squeeze=False)
    for ax in grid.flat:
        ax.axis("off")
    if n == 0:
        _note(grid[0, 0], "no images")
    cams = cams.detach().float().cpu()
    for i in range(n):
        top, bottom = grid[2 * (i // cols), i % cols], grid[2 * (i // cols) + 1, i % cols]
        picture, cmap = _displayable(images[i])
        top.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        top.set_title(textwrap.fill(titles[i] if i < len(titles) else "", 18), fontsize=7)
        bottom.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        heat = bottom.imshow(cams[i].numpy(), cmap="jet", vmin=0, vmax=1, alpha=0.5,
                             interpolation="nearest")
    if n:
        grid[1, 0].set_title("Grad-CAM", fontsize=7)
        fig.colorbar(heat, ax=grid.ravel().tolist(), fraction=0.02, pad=0.02,
                     label="Grad-CAM (1 = most relevant)")
    return _save(fig, path)
