"""The report's figures about the whole study (what a student discusses from): heat maps of
the grid, marginal sensitivity per parameter, values per seed, and the weight distributions
per layer of one architecture. Same conventions as agent/report/figures.py (Agg, 110 dpi,
a `Drawn` back)."""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import ScaledTranslation

from agent.report.figures import (
    BEST,
    INIT,
    WORST,
    Drawn,
    _note,
    _save,
    _untangle_xticks,
    panel_grid,
    value_texts,
)

STOPPED_MARK = "*"  # a heat map cell holding a run stopped early
KDE_POINTS = 20_000  # weights drawn (seeded) for a violin's density; its std uses them all


# ---------------------------------------------------------------- the grid

@dataclass
class HeatPanel:
    title: str  # the fixed values of this panel, e.g. "model=cnn, optimizer=adam"
    values: np.ndarray  # (rows, cols) metric, nan where no run scored
    notes: list[list[str]]  # (rows, cols) text for cells without a value ("div", "")
    # (rows, cols) True where the cell holds a run early termination stopped (a partial value)
    stopped: list[list[bool]] | None = None
    # (rows, cols) the diverged runs left out of a cell's value (the others' mean)
    diverged: list[list[int]] | None = None
    # (rows, cols) the cell's runs the groups put at chance: a run's group ("stuck",
    # "collapsed", "falling") where the cell holds one run, "2 at chance" where several; ""
    at_chance: list[list[str]] | None = None


def cell_digits(values, thresholds, least: int = 2, most: int = 6) -> int:
    """The fewest decimals (from `least`, at most `most`) at which no value of `values`
    prints as any of `thresholds` unless it equals it: a cell of 0.1458 written "0.15"
    read as at a stuck bound of 0.150 that the run counts as below (rounding keeps order,
    so a value apart from a threshold in print is on its own side of it)."""
    finite = [float(v) for v in values if np.isfinite(v)]
    for digits in range(least, most):
        if all(v == t or f"{v:.{digits}f}" != f"{t:.{digits}f}"
               for v in finite for t in thresholds):
            return digits
    return most


def heatmap_grid(panels: list[HeatPanel], row_label: str, row_values: list,
                 col_label: str, col_values: list, metric: str, low: float, high: float,
                 path, title: str, flip_rows: bool = False,
                 lower_is_better: bool = False, digits: int = 2) -> Drawn:
    """One annotated heat map per panel: rows x columns of the metric (viridis from `low`,
    e.g. chance, dark, to `high`, bright; reversed when `lower_is_better`, a loss: the best
    is bright either way), each cell written; a cell without a value shows its note; a
    cell holding a run stopped early is written with a `*`, which the title explains; a
    cell holding runs the groups put at chance says so under its value ("stuck", "2 at
    chance"); a cell whose value left diverged runs out says how many ("1 div").
    `flip_rows` puts the last row value on top; each cell is written to `digits` decimals
    (cell_digits)."""
    if any(any(map(any, p.stopped)) for p in panels if p.stopped):
        title += (f"\n{STOPPED_MARK}: the cell holds a run stopped early (hyperband): "
                  "its value at that epoch")
    width = max(3.0, (0.62 + 0.07 * (digits - 2)) * len(col_values) + 1.6)
    height = max(2.6, 0.42 * len(row_values) + 1.2)
    fig, axes = panel_grid(len(panels), (width, height), (1.0, 0.6), title,
                           layout="constrained")
    if not panels:
        _note(axes[0, 0], "no grid to show")
        return _save(fig, path)
    norm = Normalize(low, high if high > low else low + 1e-6)
    image = None
    for ax, panel in zip(axes.flat, panels):
        image = ax.imshow(np.ma.masked_invalid(panel.values), norm=norm, aspect="auto",
                          cmap="viridis_r" if lower_is_better else "viridis")
        ax.set_facecolor("0.85")  # cells without a value
        for (i, j), value in np.ndenumerate(panel.values):
            text = f"{value:.{digits}f}" if np.isfinite(value) else panel.notes[i][j]
            if panel.stopped and panel.stopped[i][j]:
                text += STOPPED_MARK
            if panel.at_chance and panel.at_chance[i][j] and np.isfinite(value):
                text += f"\n{panel.at_chance[i][j]}"
            if panel.diverged and panel.diverged[i][j] and np.isfinite(value):
                text += f"\n{panel.diverged[i][j]} div"
            level = norm(value) if np.isfinite(value) else 0.0
            bright = np.isfinite(value) and (1 - level if lower_is_better else level) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if bright or not np.isfinite(value) else "white")
        ax.set_xticks(range(len(col_values)), value_texts(col_values), fontsize=8)
        ax.set_yticks(range(len(row_values)), value_texts(row_values), fontsize=8)
        if flip_rows:
            ax.invert_yaxis()  # the largest value (lr 0.1) on top, as tables list it
        ax.set_xlabel(col_label, fontsize=8)
        ax.set_ylabel(row_label, fontsize=8)
        ax.set_title(panel.title, fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.01, label=metric)
    return _save(fig, path)


# ---------------------------------------------------------------- marginals

@dataclass
class MarginalPanel:
    parameter: str
    log: bool  # numeric values over > 2 decades: a log x axis
    categorical: bool
    levels: list  # the parameter's values, in axis order
    # {series label: [(level, mean, low, high, n[, median]) ...]}: low..high is the band
    # drawn, the median a dash beside the mean (stuck runs pull a mean, not a median)
    series: dict[str, list[tuple]] = field(default_factory=dict)
    # {series label: [level ...]}: the values at which every run of the series diverged
    # (no mean: their last values mean nothing), written "div" in the series' colour
    diverged: dict[str, list] = field(default_factory=dict)
    # a parameter a random or bayes search draws from a distribution, a value for each run:
    # its series hold a point per run, drawn as dots alone (a line through single runs
    # would read as a trend), without band or median
    each_run: bool = False


def marginal_figure(panels: list[MarginalPanel], metric: str, chance: float | None, path,
                    title: str) -> Drawn:
    """One panel per parameter: the metric's mean over every other parameter at each of its
    values (line) and a band low..high (error bars on a categorical axis), one colour per
    series (an optimizer), the median a dash where given (one legend entry a panel, under
    the panel's x label); a panel `each_run` draws a dot per run instead. "div" where every
    run of a series diverged, in a band just above the panel (one line per such series),
    so that the y axis spans the values alone (an accuracy's stays within [0, 1])."""
    fig, axes = panel_grid(len(panels), (3.8, 3.2), (0.6, 0.6), title, sharey=True)
    if not panels:
        _note(axes[0, 0], "no parameter varies")
        return _save(fig, path)
    for ax, panel in zip(axes.flat, panels):
        position = ({v: i for i, v in enumerate(panel.levels)} if panel.categorical
                    else {v: v for v in panel.levels})
        shift = 0.12 * (len(panel.series) - 1) / 2
        with_div = [label for label in panel.series if panel.diverged.get(label)]
        for i, (label, points) in enumerate(panel.series.items()):
            gone = panel.diverged.get(label, [])
            if gone and panel.each_run:  # a cross a run: close draws' "div"s ran together
                ax.plot([position[level] for level in gone],
                        [DIV_BOTTOM + DIV_LINE * (with_div.index(label) + 0.5)] * len(gone),
                        "x", color=f"C{i}", markersize=5, clip_on=False,
                        transform=ax.get_xaxis_transform(),
                        label="diverged (x, above)" if label == with_div[0] else "_diverged")
            for level in gone if not panel.each_run else []:
                x = position[level] - shift + 0.12 * i if panel.categorical else position[level]
                ax.text(x, DIV_BOTTOM + DIV_LINE * with_div.index(label), "div",
                        transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        fontsize=7, color=f"C{i}", clip_on=False)
            means = [p[1] for p in points]
            if panel.each_run:  # a dot a run: no line, band or median to read a trend into
                ax.plot([position[p[0]] for p in points], means, "o", color=f"C{i}",
                        markersize=4, alpha=0.8, label=label)
                continue
            if panel.categorical:  # no line between categories: a mean and its band each
                xs = [position[p[0]] - shift + 0.12 * i for p in points]
                # the band as a bar of its own: a mean outside the middle half (one run far
                # from the others) is drawn where it is, not as a negative error bar
                ax.vlines(xs, [p[2] for p in points], [p[3] for p in points], color=f"C{i}",
                          linewidth=5, alpha=0.3)
                ax.plot(xs, means, "o", color=f"C{i}", label=label)
            else:
                xs = [position[p[0]] for p in points]
                ax.plot(xs, means, marker="o", color=f"C{i}", label=label)
                ax.fill_between(xs, [p[2] for p in points], [p[3] for p in points],
                                color=f"C{i}", alpha=0.15, linewidth=0)
            medians = [(x, p[5]) for x, p in zip(xs, points) if len(p) > 5]
            if medians:
                ax.plot([x for x, _ in medians], [m for _, m in medians], linestyle="none",
                        marker="_", markersize=12, markeredgewidth=2, color=f"C{i}",
                        label="median" if i == len(panel.series) - 1 else "_median")
        if chance is not None:
            ax.axhline(chance, color="0.4", linestyle=":", linewidth=1, label="chance")
        _marginal_x_axis(ax, panel)
        ax.set_xlabel(panel.parameter)
        ax.set_ylabel(f"{metric}: one run a dot" if panel.each_run
                      else f"{metric}: mean, median, middle half" if any(
                          len(p) > 5 for points in panel.series.values() for p in points)
                      else f"{metric}: mean, middle half", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)  # placed below
    fig.tight_layout()
    _legends_under_xlabels(fig, list(axes.flat[:len(panels)]))
    return _save(fig, path)


def _marginal_x_axis(ax, panel: MarginalPanel) -> None:
    """A sensitivity panel's x axis: its values' positions and ticks, room for a "div" past
    the last mean."""
    if panel.diverged and not panel.categorical:  # a "div" past the last mean is shown
        low, high = min(panel.levels), max(panel.levels)
        if panel.log:
            pad = (high / low) ** 0.05
            ax.set_xlim(low / pad, high * pad)
        else:
            pad = 0.05 * (high - low) or 0.5
            ax.set_xlim(low - pad, high + pad)
    if panel.categorical:
        ax.set_xticks(range(len(panel.levels)), value_texts(panel.levels))
        ax.set_xlim(-0.5, len(panel.levels) - 0.5)
    elif panel.log:
        ax.set_xscale("log")
        if panel.each_run:  # a search's draws, read on decades, on 1-2-5 ticks
            # under two (matplotlib's own 2x10^-2 3x10^-2... ran into each other)
            narrow = max(panel.levels) < 100 * min(panel.levels)
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow
                                                  else (1.0,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif len(panel.levels) <= 8:  # a grid's values at their places (16 ... 1024)
            ax.set_xticks(panel.levels, value_texts(panel.levels))
            ax.minorticks_off()


DIV_BOTTOM, DIV_LINE = 1.01, 0.07  # of a panel's height: the first "div" line's bottom,
# above the panel's top, and the height of each (a 7-point text and a gap, in a panel ~2.2
# inches high)


def _legends_under_xlabels(fig, axes: list) -> None:
    """Each panel's legend just under its x label, wherever the label ends up: log ticks
    (10^-3) and tilted names are taller than plain numbers, so a legend at a fixed share of
    the panel's height covered the label (lr, optimizer) of some panels. The gap is in
    points, which a new layout keeps; the layout then makes room for the legends."""
    for _ in range(2):  # the second pass sees the ticks as the new layout tilted them
        fig.canvas.draw()
        _untangle_xticks(fig)
        for ax in axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            drop = (ax.get_window_extent().y0 - ax.xaxis.label.get_window_extent().y0) \
                * 72 / fig.dpi + 2  # points from the panel's bottom to under its label
            legend.set_bbox_to_anchor((0.5, 0.0), transform=ax.transAxes + ScaledTranslation(
                0, -drop / 72, fig.dpi_scale_trans))
        fig.tight_layout()


# ---------------------------------------------------------------- seeds

@dataclass
class SeedRow:
    label: str  # the configuration
    values: list[float]  # one per seed
    mean: float
    half: float | None  # half-width of the confidence interval
    selected: float | None = None  # the sweep's value of it (its run, or its seeds' mean)


def seed_figure(rows: list[SeedRow], metric: str, path, title: str) -> Drawn:
    """Per configuration: a dot per seed, the mean with its interval, and a hollow diamond
    for the sweep's value that selected the configuration (not part of the mean)."""
    fig, ax = plt.subplots(figsize=(8.0, 0.55 * max(2, len(rows)) + 1.4))
    ax.set_title(title, fontsize=10, pad=24)
    if not rows:
        _note(ax, "no configuration was repeated")
        return _save(fig, path)
    for y, row in enumerate(rows):
        ax.plot(row.values, [y] * len(row.values), "o", color="tab:blue", alpha=0.6,
                markersize=5, label="one seed" if y == 0 else "_seed")
        ax.errorbar([row.mean], [y], xerr=[[row.half or 0], [row.half or 0]], fmt="|",
                    color="black", markersize=14, capsize=4,
                    label="mean, 95% interval" if y == 0 else "_mean")
        if row.selected is not None:
            ax.plot([row.selected], [y], "D", markerfacecolor="none", color="tab:red",
                    label="the sweep's value (what picked it; not in the mean)"
                    if y == 0 else "_sel")
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
              frameon=False)
    return _save(fig, path)


# ---------------------------------------------------------------- weights

@dataclass
class WeightSet:
    key: str  # short name on the x axis: init, B1, W1...
    kind: str  # "init", "best" or "worst"
    description: str  # its configuration and score, for the legend
    layers: dict[str, np.ndarray]  # layer name -> every weight of that layer


COLOURS = {"init": INIT, "best": BEST, "worst": WORST}
# a set of weights this many times wider than the narrowest one of its panel puts the panel on
# a symlog axis: a digits run at lr 10 (weights of +-2e4) beside the initial and the best
# runs' (+-0.2) drew them as flat lines at 0 on a linear one
WIDE_SPREAD = 20.0


def _wide_scale(ax, scales: list[float], top: float) -> str:
    """Put `ax` on a symlog y axis where the widest of the violins' `scales` (each set's
    99.9% quantile of |weight|) is WIDE_SPREAD times the narrowest one's or more: linear up
    to the widest scale within WIDE_SPREAD of the narrowest (the sets of ordinary width),
    log beyond. Returns the y label's addition (' (linear within +-0.21, log beyond)') or
    ''."""
    narrow = min((v for v in scales if v > 0), default=0.0)
    if not narrow or top < WIDE_SPREAD * narrow:
        return ""
    linear = max(v for v in scales if narrow <= v < WIDE_SPREAD * narrow)
    ax.set_yscale("symlog", linthresh=linear, linscale=2)
    return f" (linear within ±{linear:.2g}, log beyond)"


def weight_distributions(model: str, layers: list[str], sets: list[WeightSet], path) -> Drawn:
    """One panel per layer: a violin of the layer's weights for the initial weights and each
    best and worst run of one architecture, with its standard deviation written above."""
    cols = 2 if len(layers) == 4 else max(1, min(len(layers), 3))
    fig, axes = panel_grid(len(layers), (0.55 * len(sets) + 1.6, 3.0), (0.0, 0.8),
                           f"{model}: weights per layer (biases and norm scales left out)",
                           cols=cols)
    if not layers or not sets:
        _note(axes[0, 0], "no weights to show")
        return _save(fig, path)
    sample = np.random.default_rng(0)
    for ax, layer in zip(axes.flat, layers):
        present = [s for s in sets if layer in s.layers and s.layers[layer].size]
        data = [s.layers[layer] for s in present]
        drawn = [d if d.size <= KDE_POINTS else sample.choice(d, KDE_POINTS, replace=False)
                 for d in data]
        parts = ax.violinplot(drawn, positions=range(len(present)), showextrema=False,
                              widths=0.8, points=200)
        for body, s in zip(parts["bodies"], present):
            body.set_facecolor(COLOURS[s.kind])
            body.set_alpha(0.6)
        # The scale of most weights, not of a few outliers: 99.9% of each set inside it.
        scales = [float(np.quantile(np.abs(d), 0.999)) for d in drawn]
        top = max(scales) or 1.0
        for x, values in enumerate(data):
            ax.text(x, top * 1.08, f"{values.std():.2g}", ha="center", fontsize=6)
        ax.set_ylim(-top * 1.2, top * 1.2)
        ax.set_xticks(range(len(present)), [s.key for s in present], fontsize=7)
        ax.set_title(f"{layer} ({data[0].size:,} weights)", fontsize=9)
        ax.set_ylabel("weight" + _wide_scale(ax, scales, top), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=[Patch(color=COLOURS[s.kind], alpha=0.6,
                              label=f"{s.key}: {s.description}") for s in sets],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=1, fontsize=7,
               frameon=False, title="numbers above the violins: standard deviation",
               title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
