"""The study report's figures: pure functions from plain numbers to one PNG each.

Each draws with matplotlib's Agg backend, saves at 110 dpi, closes the figure and returns a
`Drawn`: the PNG's path and what the figure holds (titles, axis labels, tick labels, legend
entries, texts, lines and images), read back from matplotlib's own objects before saving.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox, ScaledTranslation  # noqa: E402

from agent.sweep_space import log_scaled, spans_decades  # noqa: E402

DPI = 110
FEW_VALUES = 8  # a linear axis with at most this many distinct values is ticked at them
BEST, WORST, INIT = "tab:blue", "tab:red", "0.6"
WRONG = "tab:red"  # titles of misclassified images


@dataclass
class AxesContent:
    """What one matplotlib Axes shows, as text and numbers."""

    title: str
    xlabel: str
    ylabel: str
    xscale: str
    yscale: str
    xticks: list[str]  # the labels shown (_untangle_xticks may leave some out)
    yticks: list[str]
    legend: list[str]
    texts: list[str]
    lines: list[tuple[str, np.ndarray, np.ndarray]]  # (label, x, y) of each line ("_..." when
    # it has no label of its own)
    images: list[np.ndarray]  # the data arrays of imshow images (heat maps)
    collections: int  # bars' and violins' patches and collections drawn
    title_color: tuple = (0.0, 0.0, 0.0, 1.0)  # RGBA
    legend_covers: int = 0  # bars and texts the axes' legend overlaps
    markers: list[str] = field(default_factory=list)  # each line's marker ("None": none)
    linestyles: list[str] = field(default_factory=list)  # each line's style ("-", "--"...)
    xtick_rotation: float = 0.0  # degrees: tilted where the labels ran into each other
    # where the texts sit, from matplotlib's renderer once the figure is laid out:
    text_xy: list[tuple[float, float]] = field(default_factory=list)  # each text's anchor,
    # in data coordinates (a label placed at its value sits at it)
    # pairs of the axes' texts, axis labels and legend ("legend") whose boxes overlap
    overlaps: list[tuple[str, str]] = field(default_factory=list)
    texts_on_points: list[str] = field(default_factory=list)  # texts over a line's marker
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)


@dataclass
class Drawn:
    """A saved figure and its content (tests assert on the content, the report links the
    path)."""

    path: Path
    suptitle: str = ""
    axes: list[AxesContent] = field(default_factory=list)
    legends: list[str] = field(default_factory=list)  # figure-level legend entries

    def __fspath__(self) -> str:
        return str(self.path)

    def all_text(self) -> str:
        """Every string the figure shows, one per line (for assertions)."""
        parts = [self.suptitle, *self.legends]
        for ax in self.axes:
            parts += [ax.title, ax.xlabel, ax.ylabel, *ax.xticks, *ax.yticks, *ax.legend,
                      *ax.texts]
        return "\n".join(p for p in parts if p)


def _covered(ax, legend) -> int:
    """How many of the axes' bars and texts lie (partly) under its legend (a line's box
    spans the plot, so lines are not counted)."""
    if legend is None:
        return 0
    box = legend.get_window_extent()
    artists = [a for a in ax.patches + ax.texts if a.get_visible()]
    return sum(1 for a in artists if a.get_window_extent().overlaps(box))


def _box(artist):
    """An artist's box on the canvas, a text's with its background patch where it has one."""
    patch = artist.get_bbox_patch() if hasattr(artist, "get_bbox_patch") else None
    if patch is not None:
        artist.update_bbox_position_size(artist.figure.canvas.get_renderer())
        return Bbox.union([patch.get_window_extent(), artist.get_window_extent()])
    return artist.get_window_extent()


def _overlaps(ax, legend) -> list[tuple[str, str]]:
    """Pairs of the axes' texts, its axis labels and its legend whose boxes overlap (texts
    nobody could read apart, or a legend over a label)."""
    named = [(t.get_text(), _box(t)) for t in ax.texts if t.get_visible() and t.get_text()]
    named += [(label.get_text(), label.get_window_extent())
              for label in (ax.xaxis.label, ax.yaxis.label)
              if label.get_visible() and label.get_text()]
    if legend is not None:
        named.append(("legend", legend.get_window_extent()))
    return [(a, b) for i, (a, box_a) in enumerate(named) for b, box_b in named[i + 1:]
            if box_a.overlaps(box_b)]


def _texts_on_points(ax) -> list[str]:
    """The axes' texts whose box covers a marker of one of its lines (a value drawn)."""
    points = []
    for line in ax.get_lines():
        if not line.get_visible() or str(line.get_marker()) in ("None", "", " ", "none"):
            continue
        xy = np.column_stack([np.asarray(line.get_xdata(), dtype=float),
                              np.asarray(line.get_ydata(), dtype=float)])
        xy = xy[np.isfinite(xy).all(1)]
        if len(xy):
            radius = line.get_markersize() / 2 * ax.figure.dpi / 72
            points.append((line.get_transform().transform(xy), radius))
    covered = []
    for text in ax.texts:
        if not (text.get_visible() and text.get_text()):
            continue
        box = _box(text)
        if any(((p[:, 0] >= box.x0 - r) & (p[:, 0] <= box.x1 + r) & (p[:, 1] >= box.y0 - r)
                & (p[:, 1] <= box.y1 + r)).any() for p, r in points):
            covered.append(text.get_text())
    return covered


def _text_xy(ax) -> list[tuple[float, float]]:
    to_data = ax.transData.inverted()
    return [tuple(float(c) for c in to_data.transform(t.get_transform().transform(
        t.get_position()))) for t in ax.texts]


def _content(ax) -> AxesContent:
    from matplotlib.colors import to_rgba

    legend = ax.get_legend()
    return AxesContent(
        ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale(),
        [t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()],
        [t.get_text() for t in legend.get_texts()] if legend else [],
        [t.get_text() for t in ax.texts],
        [(line.get_label(), np.asarray(line.get_xdata(), dtype=float),
          np.asarray(line.get_ydata(), dtype=float))
         for line in ax.get_lines()],
        [np.asarray(image.get_array()) for image in ax.get_images()],
        len(ax.patches) + len(ax.collections), to_rgba(ax.title.get_color()),
        _covered(ax, legend), [str(line.get_marker()) for line in ax.get_lines()],
        [str(line.get_linestyle()) for line in ax.get_lines()],
        max((t.get_rotation() for t in ax.get_xticklabels()), default=0.0),
        _text_xy(ax), _overlaps(ax, legend), _texts_on_points(ax),
        tuple(float(x) for x in ax.get_xlim()), tuple(float(y) for y in ax.get_ylim()))


def _crowded(labels) -> bool:
    """Whether any two of the drawn, non-empty tick `labels` overlap (text boxes in pixels)."""
    boxes = [t.get_window_extent() for t in labels if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _numeric_text(text: str) -> bool:
    try:
        float(text.replace("\N{MINUS SIGN}", "-"))
    except ValueError:
        return False
    return True


def _untangle_xticks(fig) -> None:
    """Where the x tick labels of an axes run into each other: numbers (values close on a
    log axis, 0.00125 beside 0.0025) keep every second label (every third...) on its tick,
    which a reader reads between as on any scale; names are tilted instead, each kept."""
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        if not _crowded(labels):
            continue
        if all(_numeric_text(t.get_text()) for t in labels):
            for step in range(2, len(labels)):
                for i, label in enumerate(labels):
                    label.set_visible(i % step == 0)
                if not _crowded(labels):
                    break
        else:
            for label in labels:
                label.set_rotation(35)
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
    fig.canvas.draw()


def _save(fig, path) -> Drawn:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()  # tick labels exist only once drawn
    _untangle_xticks(fig)
    suptitle = fig._suptitle.get_text() if fig._suptitle else ""
    legends = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    drawn = Drawn(path, suptitle, [_content(ax) for ax in fig.axes], legends)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return drawn


def panel_grid(count: int, panel: tuple[float, float], margin: tuple[float, float],
               title: str, cols: int | None = None, **subplots):
    """(fig, axes (rows, cols)) for `count` panels in rows of `cols` (at most 4 when not
    given), each `panel` inches (width, height) plus `margin` inches for the whole figure;
    the panels left over are off."""
    cols = cols or max(1, min(count, 4))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols + margin[0],
                                                  panel[1] * rows + margin[1]),
                             squeeze=False, **subplots)
    fig.suptitle(title)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, axes


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(values) -> list[float]:
    return [float(v) for v in values if _is_number(v) and math.isfinite(v)]


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _log_y_if_wide(ax, values: list[float]) -> None:
    """Losses that blow up read better on a log y axis."""
    if spans_decades(_finite(values)):
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


def _number_text(value: float, digits: int = 3) -> str:
    """`digits` significant digits; a whole number below a million in full (batch 1024, not
    1.02e+03)."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.{digits}g}"


def number_texts(values) -> list[str]:
    """Each number as _number_text writes it, with as few significant digits (3 at least) as
    keep different values apart: 0.0001 and 0.00012 stay as they are, 0.12341 and 0.12345
    become 0.1234 and 0.1235, not twice 0.123."""
    distinct = len(set(float(v) for v in values))
    for digits in range(3, 18):
        texts = [_number_text(v, digits) for v in values]
        if len(set(texts)) == distinct:
            return texts
    return [repr(float(v)) for v in values]


def value_texts(values) -> list[str]:
    """Tick or legend labels of `values`: floats by number_texts (distinct labels for
    different values), everything else as str()."""
    floats = [v for v in values if _is_number(v) and isinstance(v, float)]
    shown = dict(zip(floats, number_texts(floats)))
    return [shown[v] if v in shown and isinstance(v, float) else str(v) for v in values]


# ---------------------------------------------------------------- the dataset

def class_histograms(counts: dict[str, list[int]], classes: list[str], path,
                     title: str = "images per class") -> Drawn:
    """Images per class, one bar per split side by side ({split label: counts}, e.g. the
    training images a run used, validation, test); the legend sits above the bars."""
    k, n = len(classes), max(1, len(counts))
    fig, ax = plt.subplots(figsize=(min(max(7.0, 0.45 * k * n / 2 + 2), 24.0), 4.2))
    width = 0.8 / n
    x = np.arange(k)
    for i, (label, values) in enumerate(counts.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, values, width=width,
               label=f"{label} ({sum(values):,})")
    _class_ticks(ax, classes)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title(title, pad=28)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=n, frameon=False,
              fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------- parallel coordinates

class _Axis:
    """One vertical axis: where each value sits in [0, 1], and ticks in the values' own units."""

    def __init__(self, name: str, values: list, log: bool = False):
        """`log`: a log axis where the values allow one (all positive), whatever they span."""
        present = [v for v in values if _present(v)]
        self.categorical = any(not _is_number(v) for v in present)
        if self.categorical:
            self.categories = sorted({_category(v) for v in present}, key=_category_order)
            self.log = False
            self.label = name
        else:
            numbers_ = [float(v) for v in present]
            self.log = log_scaled(numbers_) or (log and bool(numbers_)
                                                and min(numbers_) > 0)
            scaled = [math.log10(v) for v in numbers_] if self.log else numbers_
            self.low, self.high = (min(scaled), max(scaled)) if scaled else (0.0, 1.0)
            self.label = f"{name} (log)" if self.log else name
            self.values = sorted(set(numbers_))

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
        """(position in [0, 1], label) of each tick; different values get different labels."""
        if self.categorical:
            return [(self.position(c), str(c)) for c in self.categories]
        if self.low == self.high:
            values = [10 ** self.low if self.log else self.low]
        elif self.log and len(self.values) <= FEW_VALUES:  # a grid's choices, at their places
            values = self.values
        elif self.log:
            decades = range(math.ceil(self.low), math.floor(self.high) + 1)
            values = [10.0 ** t for t in decades] if len(decades) >= 2 else \
                [10 ** self.low, 10 ** self.high]
        elif len(self.values) <= FEW_VALUES:  # a grid's choices: ticks at the choices
            values = self.values
        else:
            values = [float(t) for t in np.linspace(self.low, self.high, 5)]
        return list(zip((self.position(v) for v in values), number_texts(values)))


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


STOPPED_STYLE = "--"  # a run early termination stopped: its value is from that epoch


TICK_GAP = 0.045  # of an axis's height: a 7-point label's height at the figure's 4.8 inches


def spread(ys: list[float], gap: float, low: float, high: float) -> list[float]:
    """Positions for labels wanted at `ys` (ascending) that keep at least `gap` apart and
    stay within [low, high] where there is room: each label moves as little as that takes
    (0.0063 and 0.0070 on one log axis would print over each other)."""
    out = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else max(y, low))
    for i in reversed(range(len(out))):
        out[i] = min(out[i], high if i == len(out) - 1 else out[i + 1] - gap)
    return out


def thin_ticks(ticks: list[tuple[float, str]], gap: float) -> list[tuple[float, str]]:
    """The (position, label) `ticks` of a numeric axis that keep at least `gap` apart, each
    at its own position: both ends first (the best and the worst value of a metric), then
    the others in order where they fit. A label moved off its value to make room sat beside
    another run's point and read as its value (lr 0.267 printed where 0.282 was drawn); a
    reader reads an unlabelled point between its labelled neighbours, as on any axis."""
    order = ([ticks[0], ticks[-1]] if len(ticks) > 1 else list(ticks)) + list(ticks[1:-1])
    kept: list[tuple[float, str]] = []
    for at, text in order:
        if all(abs(at - other) >= gap for other, _ in kept):
            kept.append((at, text))
    return sorted(kept)


def parallel_coordinates(rows: list[dict], axes: list[str], metric: str, goal: str, path,
                         title: str, stopped: list[bool] | None = None,
                         log_axes: frozenset[str] = frozenset()) -> Drawn:
    """One polyline per row across `axes` and a last axis for `metric`, coloured by the metric
    (viridis, brighter = better for either goal). `stopped[i]`: row i is a run the sweep's
    early termination stopped, its metric the value at that epoch: drawn dashed, counted in
    the title and named in a legend. `log_axes`: parameters read on a log axis whatever
    their values span (drawn from a log distribution: markdown.log_axis); the others are
    log where sweep_space.log_scaled says so.

    A row without a finite metric is skipped (it cannot be coloured). A row missing another
    value (key absent, None, nan) is drawn with a gap at that axis: the segments touching the
    missing axis are left out, each present value still gets a dot.
    """
    names = list(axes) + [metric]
    stopped = list(stopped) if stopped is not None else [False] * len(rows)
    kept = [(r, s) for r, s in zip(rows, stopped)
            if _is_number(r.get(metric)) and math.isfinite(r[metric])]
    rows, stopped = [r for r, _ in kept], [s for _, s in kept]
    fig, ax = plt.subplots(figsize=(min(max(6.0, 1.5 * len(names) + 2), 20.0), 4.8))
    cut = sum(stopped)
    ax.set_title(f"{title} ({len(rows)} run{'s' if len(rows) != 1 else ''}"
                 + (f"; {cut} stopped early, dashed" if cut else "") + ")")
    if not rows:
        _note(ax, f"no runs with a value of {metric} to show")
        return _save(fig, path)
    columns = [_Axis(name, [r.get(name) for r in rows], name in log_axes) for name in names]
    scores = [float(r[metric]) for r in rows]
    low, high = min(scores), max(scores)
    if low == high:  # one run, or ties: give the colour scale some width
        pad = max(abs(low) * 0.05, 1e-6)
        low, high = low - pad, high + pad
    # the colours read the metric as its axis does: on a log axis (a loss from 0.07 to 46),
    # linear colours would make every run but the worst few one colour
    norm = LogNorm(low, high) if columns[-1].log and low > 0 else Normalize(low, high)
    cmap = plt.get_cmap("viridis" if goal == "maximize" else "viridis_r")
    x = np.arange(len(names))
    # Worst first, so the best lines are drawn on top; of equal scores, the dashed ones.
    sign = 1 if goal == "maximize" else -1
    for row, score, cut_short in sorted(zip(rows, scores, stopped),
                                        key=lambda p: (sign * p[1], p[2])):
        y = [column.position(row.get(name)) for column, name in zip(columns, names)]
        ax.plot(x, y, color=cmap(norm(score)), linewidth=1.2, alpha=0.85, marker="o",
                markersize=2.5, linestyle=STOPPED_STYLE if cut_short else "-")
    for i, column in enumerate(columns):
        ax.axvline(i, color="0.3", linewidth=0.8, zorder=0)
        ticks = sorted(column.ticks())
        if column.categorical:  # every category is named, moved apart where crowded
            placed = list(zip(spread([y for y, _ in ticks], TICK_GAP, -0.05, 1.05),
                              (text for _, text in ticks)))
        else:  # a number sits at its value, or is left out (thin_ticks)
            placed = thin_ticks(ticks, TICK_GAP)
        for at, text in placed:
            ax.text(i + 0.03, at, text, fontsize=7, va="center", ha="left",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.6, pad=0.5))
    ax.set_xticks(x, [c.label for c in columns], rotation=15 if len(names) > 5 else 0)
    ax.set_xlim(-0.2, len(names) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if cut:
        ax.legend(handles=[Line2D([], [], color="0.3", linestyle=STOPPED_STYLE,
                                  label=f"stopped early (hyperband): {metric} at the epoch "
                                  "it stopped, not a final value")],
                  loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=7, frameon=False)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(f"{metric} ({'higher' if goal == 'maximize' else 'lower'} is better)")
    return _save(fig, path)


# ---------------------------------------------------------------- curves

@dataclass
class GroupCurve:
    """One run's training loss in a group figure."""

    config: dict  # the swept parameters' values: the legend and the facets come from here
    steps: list[float]
    losses: list[float]  # inf / nan where the run blew up (drawn as a cross, not a line)
    # (x, loss) at each epoch's end, where the figure shows why a run counts as diverged:
    # the epoch's mean training loss and its validation loss (a spike between two logged
    # steps raises the epoch's mean past the rule while every logged step stays low)
    epoch_means: list[tuple[float, float]] = field(default_factory=list)
    val_losses: list[tuple[float, float]] = field(default_factory=list)
    # 'stopped early at epoch 1 of 4' for a run the sweep's early termination cut short
    # (its line ends there, marked), else ''
    stopped: str = ""
    # where such a run stopped on the figure's x (its last epoch's end), where that is known:
    # its last logged step can lie before it; None: at its last point
    stopped_at: float | None = None


LINE_STYLES = ("-", "--", ":", "-.")
# ln K in the figures of runs at chance: wide, pale and behind the runs, so that it reads as
# a level apart from every run's line style (a dotted line read as dropout=0.3's)
CHANCE_LOSS = {"color": "0.55", "linestyle": "-", "linewidth": 4, "alpha": 0.35, "zorder": 0}


def _config_label(config: dict) -> str:
    return " ".join(f"{k}={_value_text(v)}" for k, v in config.items())


def _value_text(value) -> str:
    return _number_text(value) if _is_number(value) and isinstance(value, float) else str(value)


def _colour_and_style(curves: list[GroupCurve], colour: str | None, style: str | None):
    """(colour, style) such that each line style stands for one value: a style parameter
    with more values than LINE_STYLES (a batch-size study's 8 lr values against 3 batch
    sizes) swaps with the colour one when that one has few enough, else is not drawn."""
    def count(key):
        return len({repr(c.config.get(key)) for c in curves})

    if style is None or count(style) <= len(LINE_STYLES):
        return colour, style
    if colour is not None and count(colour) <= len(LINE_STYLES):
        return style, colour
    return colour, None


def _encodings(curves: list[GroupCurve], colour: str | None, style: str | None):
    """{value: colour} for the colour parameter and {value: line style} for the style one
    (ordered numbers get an ordered colour map, the rest tab10)."""
    def values(key):
        present = {c.config.get(key) for c in curves}
        return sorted(present, key=lambda v: (not _is_number(v), v if _is_number(v) else str(v)))

    colours, styles = {}, {}
    if colour:
        levels = values(colour)
        cmap = plt.get_cmap("viridis" if all(_is_number(v) for v in levels) else "tab10")
        colours = {v: cmap(i / max(1, len(levels) - 1) * 0.9 if cmap.name == "viridis" else i)
                   for i, v in enumerate(levels)}
    if style:
        styles = {v: LINE_STYLES[i % len(LINE_STYLES)] for i, v in enumerate(values(style))}
    return colours, styles


def group_loss_figure(curves: list[GroupCurve], facets: list[str], colour: str | None,
                      style: str | None, path, title: str, xlabel: str = "training step",
                      threshold: float | None = None, x_end: float | None = None,
                      x_start: float = 0.0, classes: int | None = None) -> Drawn:
    """Training loss against step, one panel per value of the `facets` parameters (model x
    optimizer), colour by `colour` (lr), line style by `style` (dropout); the figure legend
    names those values, each line is labelled with its whole configuration. A point where
    the loss went non-finite is a cross on the top edge of its panel, at its step (the
    legend counts them). Log y from two decades on.
    `threshold`: a loss level drawn as a dashed line in every panel (the divergence
    rule: a run that ends above it diverged).
    `classes`: K, where given: the loss of a uniform guess over K classes, ln K, drawn as a
    wide grey band in every panel (where a run at chance sits, or comes back to).
    `x_end`: the x axis runs from `x_start` to it (the runs' planned length: one point is
    not centred on an axis of its own 4% either side), 2% of that span clear of each end
    (half an epoch where they are one); `x_start` is 0, the start of training, for
    logged steps, and 1 for epoch means, whose first point is the first epoch's (an axis
    from epoch 0 had no line over its first epoch); whole epochs are ticked as such."""
    keys = sorted({tuple(c.config.get(f) for f in facets) for c in curves}, key=str)
    fig, axes = panel_grid(len(keys), (3.6, 3.0), (2.2, 0.6), title, sharex=True)
    colour, style = _colour_and_style(curves, colour, style)
    if not curves:
        _note(axes[0, 0], "no run in this group")
        return _save(fig, path)
    colours, styles = _encodings(curves, colour, style)
    for ax, key in zip(axes.flat, keys):
        mine = [c for c in curves if tuple(c.config.get(f) for f in facets) == key]
        _draw_group_panel(ax, mine, colour, style, colours, styles)
        if classes:  # a wide pale band behind the runs: no line style of theirs
            ax.axhline(math.log(classes), label=_chance_loss_label(classes), **CHANCE_LOSS)
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1,
                       label=f"diverged: ended above {threshold:.1f}")
            # its value just outside the panel's right edge, where the runs' last points
            # (what the rule reads) cannot run into it, as they did at the edge inside
            ax.text(1.0, threshold, f"{threshold:.1f}", color="tab:red", fontsize=7,
                    ha="left", va="center", clip_on=False,
                    transform=ax.get_yaxis_transform() + ScaledTranslation(
                        2 / 72, 0, fig.dpi_scale_trans))
        ax.set_title(", ".join(f"{f}={_value_text(v)}" for f, v in zip(facets, key))
                     + f" ({len(mine)} run{'s' if len(mine) != 1 else ''})", fontsize=9,
                     pad=10)  # clear of a non-finite loss's x on the top edge
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelbottom=True)  # shared x: a panel with none below keeps its ticks
        if x_end:  # the last point (and a first one off 0) clear of the frame
            pad = 0.02 * (x_end - x_start) or 0.5
            ax.set_xlim(x_start - pad if x_start else 0.0, x_end + pad)
        if xlabel == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=c, label=f"{colour}={text}")
               for (v, c), text in zip(colours.items(), value_texts(list(colours)))]
    handles += [Line2D([], [], color="0.3", linestyle=s, label=f"{style}={text}")
                for (v, s), text in zip(styles.items(), value_texts(list(styles)))]
    if any(c.epoch_means for c in curves):
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none",
                              linestyle="none", label="epoch's mean training loss"))
    if any(c.val_losses for c in curves):
        handles.append(Line2D([], [], color="0.3", marker="s", markerfacecolor="none",
                              linestyle="none", label="validation loss"))
    handles += _stopped_handles(curves, colour, colours)
    if classes:
        handles.append(Line2D([], [], label=_chance_loss_label(classes), **CHANCE_LOSS))
    if threshold is not None:
        handles.append(Line2D([], [], color="tab:red", linestyle="--",
                              label=f"diverged: ended above {threshold:.1f}"))
    blown = sum(1 for c in curves if not all(_is_number(y) and math.isfinite(y)
                                             for y in c.losses))
    if blown:
        handles.append(Line2D([], [], color="0.3", marker="x", markersize=8, linestyle="none",
                              label=f"loss non-finite ({blown} run{'s' if blown != 1 else ''}"
                                    f"): on the top edge, at its {xlabel.split()[-1]}"))
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


# A line that ends where early termination stopped its run: a bar across its last point
# (a line ending short of the others read as a run that was simply shorter, or failed)
STOPPED_END = {"marker": "|", "markersize": 11, "markeredgewidth": 2, "linestyle": "none"}
MAX_STOPPED_NAMED = 6  # stopped runs named one by one in a group figure's legend


def _stopped_handles(curves: list[GroupCurve], colour: str | None, colours: dict) -> list:
    """The legend's entries for the runs early termination stopped, each drawn ending in a
    bar: one per run ('lr=0.0001: stopped early at epoch 1 of 4', as the weight figure
    marks such runs), or one for them all past MAX_STOPPED_NAMED."""
    stopped = [c for c in curves if c.stopped]
    if len(stopped) > MAX_STOPPED_NAMED:
        return [Line2D([], [], color="0.3", **STOPPED_END,
                       label=f"{len(stopped)} runs stopped early (hyperband): at the bar")]
    return [Line2D([], [], color=colours.get(c.config.get(colour), "0.3"), **STOPPED_END,
                   label=f"{_config_label(c.config) or 'the run'}: {c.stopped}")
            for c in stopped]


def _chance_loss_label(classes: int) -> str:
    return f"chance: ln {classes} = {math.log(classes):.2f} (the loss of a uniform guess)"


def _draw_group_panel(ax, curves: list[GroupCurve], colour, style, colours, styles) -> None:
    values = []
    blow_ups = []
    for i, curve in enumerate(curves):
        ys = [float(y) if _is_number(y) and math.isfinite(y) else math.nan for y in curve.losses]
        values += ys
        ax.plot(curve.steps, ys, color=colours.get(curve.config.get(colour), f"C{i % 10}"),
                linestyle=styles.get(curve.config.get(style), "-"), linewidth=1.1, alpha=0.85,
                label=_config_label(curve.config),  # one finite point: a dot (no line shows)
                marker="o" if sum(map(math.isfinite, ys)) == 1 else None, markersize=4)
        for points, marker in ((curve.epoch_means, "o"), (curve.val_losses, "s")):
            shown = [(x, y) for x, y in points if _is_number(y) and math.isfinite(y)]
            if shown:
                values += [y for _, y in shown]
                ax.plot([x for x, _ in shown], [y for _, y in shown], marker=marker,
                        markerfacecolor="none", markersize=5, linestyle="none",
                        color=colours.get(curve.config.get(colour), f"C{i % 10}"),
                        label=f"_{_config_label(curve.config)} {marker}")
        ends = [(x, y) for x, y in zip(curve.steps, ys) if math.isfinite(y)]
        if curve.stopped and ends:
            x = ends[-1][0] if curve.stopped_at is None else max(curve.stopped_at, ends[-1][0])
            tint = colours.get(curve.config.get(colour), f"C{i % 10}")
            if x > ends[-1][0]:  # its steps after the last logged one: dotted, to its bar
                ax.plot([ends[-1][0], x], [ends[-1][1]] * 2, color=tint, linestyle=":",
                        linewidth=0.9, alpha=0.7, label="_unlogged")
            ax.plot(x, ends[-1][1], color=tint, **STOPPED_END, label="_stopped")
        bad = [s for s, y in zip(curve.steps, curve.losses)
               if not (_is_number(y) and math.isfinite(y))]
        if bad:
            blow_ups.append((bad[0], colours.get(curve.config.get(colour), f"C{i % 10}")))
    _log_y_if_wide(ax, values)
    # on the panel's top edge, at the step: a non-finite loss is past any scale, and drawn
    # at the highest finite value a run that blew up after its first loss had an x beside
    # its own dot at 2.3, with a note inside the panel that the threshold's line crossed
    for step, colour_ in blow_ups:
        ax.plot([step], [1.0], marker="x", markersize=8, color=colour_, linestyle="none",
                transform=ax.get_xaxis_transform(), clip_on=False, label="_non-finite")
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)


@dataclass
class TrainingSeries:
    """One run's curves: {"loss": (x, y), "acc": (x, y)} for training and for validation."""

    label: str
    train: dict[str, tuple[list[float], list[float]]]
    val: dict[str, tuple[list[float], list[float]]]


def training_curves(runs: list[TrainingSeries], path, xlabel: str = "training step") -> Drawn:
    """Loss and accuracy against `xlabel`: training as a thin line (step by step when the
    runs logged steps), validation as a thick line with a dot per epoch; one colour per run
    (labelled by its configuration); the legend below the panels. Log y for a loss past two
    decades; non-finite values are left out."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    for ax, kind in ((loss_ax, "loss"), (acc_ax, "acc")):
        values = []
        for i, run in enumerate(runs):
            for split, style in (("train", dict(linewidth=0.9, alpha=0.7)),
                                 ("val", dict(linewidth=2.0, marker="o", markersize=4))):
                xs, ys = getattr(run, split).get(kind, ([], []))
                points = [(x, y) for x, y in zip(xs, ys) if _is_number(y) and math.isfinite(y)]
                if points:
                    values += [y for _, y in points]
                    ax.plot(*zip(*points), color=f"C{i % 10}", label=f"{run.label} ({split})",
                            **style)
        if not values:
            _note(ax, f"no {kind} recorded")
            continue
        if kind == "loss":
            _log_y_if_wide(ax, values)
        if xlabel == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss" if kind == "loss" else "accuracy")
        ax.set_title(f"{'loss' if kind == 'loss' else 'accuracy'} (training thin, "
                     "validation thick)")
        ax.grid(alpha=0.3)
    handles, labels = loss_ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                   fontsize=7, frameon=False)
    return _save(fig, path)


# ---------------------------------------------------------------- one run's test results

def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], path,
                            title: str) -> Drawn:
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


def per_class_accuracy_figure(accuracies: list[float], classes: list[str], path,
                              title: str = "test accuracy per class (hardest first)") -> Drawn:
    """Horizontal bars, hardest class on top, each bar's value written beside it."""
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
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------- Grad-CAM

def _displayable(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> an array imshow takes, and the colormap (gray for 1 channel)."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy(), None
    return image.mean(0).numpy(), "gray"


def gradcam_grid(images: torch.Tensor, cams: torch.Tensor, titles: list[str], path,
                 wrong: list[bool] | None = None, title: str = "") -> Drawn:
    """Each image (N, C, H, W in [0, 1]) above its Grad-CAM overlay (N, H, W in [0, 1]);
    at most 8 pairs per row of the grid; titles of misclassified images (`wrong`) in red."""
    n = len(images)
    wrong = wrong or [False] * n
    cols = max(1, min(n, 8))
    pair_rows = max(1, math.ceil(n / cols))
    fig, grid = plt.subplots(2 * pair_rows, cols, figsize=(1.8 * cols + 0.6, 3.8 * pair_rows),
                             squeeze=False)
    if title:
        fig.suptitle(title, fontsize=9)
    for ax in grid.flat:
        ax.axis("off")
    if n == 0:
        _note(grid[0, 0], "no images")
    cams = cams.detach().float().cpu()
    for i in range(n):
        top, bottom = grid[2 * (i // cols), i % cols], grid[2 * (i // cols) + 1, i % cols]
        picture, cmap = _displayable(images[i])
        top.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        top.set_title(textwrap.fill(titles[i] if i < len(titles) else "", 18), fontsize=7,
                      color=WRONG if wrong[i] else "black")
        bottom.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        heat = bottom.imshow(cams[i].numpy(), cmap="jet", vmin=0, vmax=1, alpha=0.5,
                             interpolation="nearest")
    if n:
        grid[1, 0].set_title("Grad-CAM", fontsize=7)
        fig.colorbar(heat, ax=grid.ravel().tolist(), fraction=0.02, pad=0.02,
                     label="Grad-CAM (1 = most relevant)")
    return _save(fig, path)
