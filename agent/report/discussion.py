"""What a student discusses from: a heat map of the whole grid (the log-distributed numeric
parameter against the other numeric one, one panel per combination of the categorical
ones; ranges of a parameter a random or bayes search draws from a distribution), marginal
sensitivity per parameter and per optimizer, observations stated with their numbers, and
hyper-parameter importance with its limits."""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

import numpy as np

from agent import metrics
from agent.params import BY_NAME
from agent.report import stats
from agent.report.markdown import (
    Context,
    Report,
    config_text,
    diverged_left_out,
    fmt,
    log_axis,
    log_distribution,
    log_text,
    stopped_note,
    stopped_text,
)
from agent.report.study import RunRecord
from agent.report.study_figures import (
    STOPPED_MARK,
    HeatPanel,
    MarginalPanel,
    cell_digits,
    heatmap_grid,
    marginal_figure,
)
from agent.sweep_space import log_scaled, short_number, spans_decades, swept_parameters

NEAR_BEST = 0.02  # an accuracy's window of good values: within 2 points of the best
# any other metric's (a loss, or a metric of any sign): within 2% of the gap between the
# best run and the median one (near_margin). On the Fashion-MNIST course grid
# (docs/example_report) that is 0.024 of test/loss (best 0.54, median 1.75), as wide a
# window as 2 points of its val/acc: each holds the best 5 to 7 of its 76 runs
NEAR_SPREAD_SHARE = 0.02
FAILED = (stats.DIVERGED, *stats.AT_CHANCE)


def _spread(values: list[float], goal: str) -> tuple[float, str]:
    """(the gap the margin of a metric other than an accuracy is a share of, what it is):
    between the best of `values` (by `goal`) and their median; where the median is at the
    best (half the values or more are), between the best and the worst; 0 when every value
    is the same."""
    if not values:
        return 0.0, ""
    best = max(values) if goal == "maximize" else min(values)
    median = float(np.median(values))
    if median != best:
        return abs(median - best), "median"
    return max(abs(v - best) for v in values), "worst"


def near_margin(metric: str, values: list[float], goal: str) -> float:
    """How far from a best value of `metric` a value still counts as near it, given the
    `values` of the runs it is read over (those that did not diverge) and the sweep's
    `goal`: NEAR_BEST for an accuracy (a share of images in [0, 1]: 2 points), else
    NEAR_SPREAD_SHARE of the gap between the best of `values` and their median (_spread):
    a share of the range the sweep's own runs span, so that it scales with the metric and
    holds whatever its sign or its distance from 0 (a share of the best value itself was
    nothing for a loss near 0 and meaningless for a metric that can be negative). The
    median, not the worst, so that one run far off (a stuck or a nearly diverged one) does
    not set it; the worst where half the runs or more tie at the best."""
    if metric.endswith("acc"):
        return NEAR_BEST
    return NEAR_SPREAD_SHARE * _spread(values, goal)[0]


def margin_text(metric: str, values: list[float], goal: str) -> str:
    """The margin near a best value as the text gives it: '0.02' for an accuracy, '0.024
    (2% of the gap between the best run and the median one, 1.2)' otherwise."""
    if metric.endswith("acc"):
        return f"{NEAR_BEST:g}"
    gap, which = _spread(values, goal)
    if not gap:
        return "0 (every run scores the same)"
    return (f"{NEAR_SPREAD_SHARE * gap:.2g} ({NEAR_SPREAD_SHARE:.0%} of the gap between the "
            f"best run and the {which} one, {gap:.2g}"
            + (", the median run being at the best)" if which == "worst" else ")"))


def margin_rule(metric: str, values: list[float], goal: str) -> str:
    """The margin near a best value, in words, before what it is counted from: '0.02 of',
    '0.024 (2% of the gap between the best run and the median one, 1.2) of'."""
    return f"{margin_text(metric, values, goal)} of"


def _margin_values(ctx: Context) -> list[float]:
    """The values the margin near a best is read over (near_margin): the sweep's metric of
    every run with one that did not diverge (a diverged run's last value means nothing)."""
    return [r.metric(ctx.study.metric) for r in ctx.not_diverged(ctx.scored)]


def value(run: RunRecord, name: str):
    return run.config.get(name, run.params.get(name))


def axis_values(ctx: Context, name: str, values: list) -> np.ndarray | None:
    """`values` of `name` as the correlations read them: log10 where the figures draw
    `name` on a log axis (markdown.log_axis: a log distribution, whatever its draws span;
    stats.numeric_values: values over two decades), else as they are; None when any is not
    a number."""
    x = stats.numeric_values(values)
    if x is not None and len(x) and log_axis(ctx, name) \
            and not log_scaled(sorted(set(values))) and min(values) > 0:
        return np.log10(np.asarray(values, dtype=float))
    return x


def using(runs: list[RunRecord], name: str) -> list[RunRecord]:
    """The runs in which parameter `name` changes anything (Param.used_when): for `hidden`
    the dense runs of a sweep over model; all of them for a parameter every model uses. Each
    parameter's sensitivity is read from these: cnn runs, where hidden does nothing, would
    flatten its curve."""
    param = BY_NAME.get(name)
    return runs if param is None else [r for r in runs if param.used_by(r.params)]


def used_in(runs: list[RunRecord], name: str) -> str:
    """` (model=dense runs)` when only some of `runs` use `name`, else ``."""
    if len(using(runs, name)) == len(runs):
        return ""
    return f" ({BY_NAME[name].where_used()} runs)"


def _levels(runs: list[RunRecord], name: str) -> list:
    found = {repr(value(r, name)): value(r, name) for r in runs}
    items = list(found.values())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return sorted(items)
    return sorted(items, key=str)


def split_axes(ctx: Context) -> tuple[list[str], list[str]]:
    """(categorical, numeric) swept parameters, numeric ones with more levels first and a
    log-distributed one before the others; seeds are not a study axis."""
    runs = ctx.study.runs
    swept = [a for a in ctx.swept if a != "seed"]
    # anything but numbers is a category: text, booleans, lists, and a null (`values:
    # [null]`, the default), which a numeric axis cannot place
    categorical = [a for a in swept if any(not isinstance(value(r, a), (int, float))
                                           or isinstance(value(r, a), bool) for r in runs)]
    numeric = [a for a in swept if a not in categorical]
    numeric.sort(key=lambda a: (not (spans_decades(_levels(runs, a))
                                     or log_distribution(ctx, a)), -len(_levels(runs, a))))
    return categorical, numeric


MAX_BINS = 4  # of a parameter drawn from a linear distribution, in the heat map
MAX_DECADES = 6  # a log-distributed one's bins are decades up to this many, then wider


@dataclass
class HeatAxis:
    """The heat map's rows or columns for one parameter: its values, or for one a random or
    bayes search draws from a distribution, ranges of them (`bins`)."""

    labels: list  # a row's or column's value, or its range as text ('0.001–0.01')
    edges: list[float] | None = None  # the bins' bounds, ascending; None: one value a row

    def index(self, x) -> int | None:
        """The row (column) holding value `x`; a bin holds its lower bound, the last bin
        its upper one too."""
        if self.edges is None:
            return next((i for i, v in enumerate(self.labels) if v == x), None)
        if not isinstance(x, (int, float)) or not self.edges[0] <= x <= self.edges[-1]:
            return None
        return min(bisect.bisect_right(self.edges, x) - 1, len(self.labels) - 1)

    @property
    def binned(self) -> bool:
        return self.edges is not None


def heat_axis(ctx: Context, name: str) -> HeatAxis:
    """The rows or columns of `name` in the grid's heat map: one per value, except for a
    parameter the sweep draws from a distribution (no `values` list) with more than
    MAX_BINS values: a random or bayes search draws each run's value anew, so a row per value
    held one run and the table of lr x batch size per optimizer was nearly all empty cells
    (10 x 4 for 12 runs), none comparable with another. Ranges gather runs into cells as
    a grid's values do: a decade each for a log-distributed parameter (markdown.log_axis;
    wider ones past MAX_DECADES), MAX_BINS of equal width for another."""
    levels = _levels(ctx.study.runs, name)
    drawn = any(p.name == name and p.values is None
                for p in swept_parameters(ctx.study.sweep_config))
    numbers = [float(v) for v in levels if isinstance(v, (int, float))
               and not isinstance(v, bool)]
    if not drawn or len(levels) <= MAX_BINS or len(numbers) != len(levels):
        return HeatAxis(levels)
    low, high = numbers[0], numbers[-1]
    if log_axis(ctx, name):
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        last = max(last, first + 1)
        step = math.ceil((last - first) / MAX_DECADES)
        edges = [10.0 ** e for e in range(first, last + step, step)]
    else:
        edges = [float(x) for x in np.linspace(low, high, MAX_BINS + 1)]
    return HeatAxis([f"{short_number(a)}–{short_number(b)}" for a, b in zip(edges, edges[1:])],
                    edges)


def _bins_text(ctx: Context, name: str, axis: HeatAxis) -> str:
    """How `name`'s ranges were cut: 'a decade each; log_uniform_values'."""
    if log_axis(ctx, name):
        decades = round(math.log10(axis.edges[1] / axis.edges[0]))
        cut = "a decade each" if decades == 1 else f"{decades} decades each"
    else:
        cut = f"{len(axis.labels)} of equal width"
    kind = ((ctx.study.sweep_config or {}).get("parameters") or {}).get(name, {})
    kind = kind.get("distribution") if isinstance(kind, dict) else None
    return cut + (f"; {kind}" if kind else "")


def heatmap_section(report: Report, ctx: Context) -> None:
    study, metric = ctx.study, ctx.study.metric
    categorical, numeric = split_axes(ctx)
    report.add("## The whole grid", "")
    if not numeric:
        report.add("The sweep varies no numeric parameter: no heat map.", "")
        return
    row = numeric[0]
    col = numeric[1] if len(numeric) > 1 else (categorical[-1] if categorical else None)
    facets = [a for a in categorical if a != col]
    row_axis = heat_axis(ctx, row)
    col_axis = heat_axis(ctx, col) if col else HeatAxis([""])
    rows, cols = row_axis.labels, col_axis.labels
    binned = [name for name, axis in ((row, row_axis), (col, col_axis)) if axis.binned]
    panels, most, cut_short = _heat_panels(ctx, facets, (row, row_axis), (col, col_axis))
    shown = [v for p in panels for v in p.values.ravel() if np.isfinite(v)]
    partly = sum(n for p in panels for line in p.diverged for n in line)
    low, high = (min(shown), max(shown)) if shown else (0.0, 1.0)
    minimize = study.goal == "minimize"
    chance = _chance(ctx)
    if chance is not None and not minimize:
        low = chance  # an accuracy's colours start at chance (below it: as dark)
    worst, best = (high, low) if minimize else (low, high)
    named = named_thresholds(ctx)
    digits = cell_digits(shown, named.values())
    where = (f"chance ({worst:.{digits}f}, dark)" if chance is not None and not minimize
             else f"the worst ({worst:.{digits}f}, dark)")
    axes = f"rows are `{row}`" + (f", columns `{col}`" if col else "")
    ranges = "".join(  # a range a row: what a range is, and why
        f" `{name}` is drawn from a distribution, a value for each run, so its "
        + ("rows" if name == row else "columns") + f" are ranges ({_bins_text(ctx, name, axis)})"
        ": one per value would hold one run each." for name, axis in ((row, row_axis),
                                                                     (col, col_axis))
        if axis.binned)
    alike = ("the sweep's seeds" if "seed" in ctx.swept
             else "runs whose values fall in its ranges" if binned
             else "runs that differ in no axis")
    cells = (f"each cell is the mean of its runs (up to {most}: {alike}; a cell's best "
             "single run can be better)" if most > 1 else "one run a cell")
    colours = (f"The colour runs from {where} to the best cell ({best:.{digits}f}, bright)"
               if shown else "No cell has a value")
    report.add(f"`{metric}` of the runs: {axes}, "
               + ("one panel per " + " x ".join(f"`{f}`" for f in facets) if facets
                  else "one panel") + f"; {cells}.{ranges} {colours}; \"div\" marks a "
               "cell whose every run diverged (a diverged run's last value means nothing)."
               + (f" A cell where only some did is the mean of the others, its diverged "
                  f"runs counted under it (\"1 div\"; {partly} run"
                  f"{'s' if partly != 1 else ''} in all)." if partly else "")
               + (f" {STOPPED_MARK} marks a cell holding a run the sweep's early termination "
                  f"(hyperband) stopped ({len(cut_short)} run"
                  f"{'s' if len(cut_short) != 1 else ''} in all): its value is the one at the "
                  "epoch it stopped at, not a final one." if cut_short else "")
               + _value_text(ctx) + _digits_text(shown, named, digits)
               + _chance_text(ctx, panels), "")
    title = (f"{metric} over the search ({' and '.join(binned)} in ranges)" if binned
             else f"{metric} over the grid")
    report.figure(heatmap_grid(panels, row, rows, col or "", cols, metric, low, high,
                               ctx.out_dir / "grid_heatmap.png", title,
                               flip_rows=bool(log_distribution(ctx, row)) or spans_decades(rows),
                               lower_is_better=minimize, digits=digits),
                  "heat map of the grid")


def named_thresholds(ctx: Context) -> dict[str, float]:
    """{how the report names it: value} of the levels it reads the sweep's metric against:
    for an accuracy, chance and the stuck bound (stats.GroupRule), and for the test
    accuracy the chance bound of the runs better than random, which reads it; for a loss,
    ln K and the divergence bound."""
    metric, classes = ctx.study.metric, ctx.classes
    if classes is None:
        return {}
    if metric.endswith("acc") and ctx.base is not None:
        named = {"chance": ctx.base.chance,
                 "the stuck bound (chance + the stuck margin)": ctx.rule.stuck_below(classes)}
        if metric == "test/acc":
            named["the chance bound of the runs better than random"] = ctx.base.chance_bound
        return named
    if metric.endswith("loss"):
        return {f"ln {classes} (a uniform guess)": math.log(classes),
                "the divergence bound": ctx.rule.explode_at(classes)}
    return {}


def _digits_text(shown: list[float], named: dict[str, float], digits: int) -> str:
    """' Cells are written to 3 decimals: at 2, 0.1458 would read as the stuck bound ...
    0.150, which it is below.', or '' at 2 decimals."""
    if digits == 2:
        return ""
    value, (name, level) = next((v, (n, t)) for v in shown for n, t in named.items()
                                if v != t and f"{v:.2f}" == f"{t:.2f}")
    side = "below" if value < level else "above"
    return (f" Cells are written to {digits} decimals: at 2, {value:.{digits}f} would read "
            f"as {name}, {level:.{digits}f}, which it is {side}.")


def _value_text(ctx: Context) -> str:
    """' A run's value is its last `val/acc` ...' for a metric logged every epoch (its
    summary holds the last epoch's, stats.GroupRule reads the best one's too), else ''."""
    metric = ctx.study.metric
    if getattr(metrics.find(metric), "when", None) != metrics.EPOCH:
        return ""
    return (f" A run's value is its last `{metric}`, as its summary holds it (what W&B's "
            "charts show and the report ranks runs by), not its best epoch's.")


def _chance_text(ctx: Context, panels: list[HeatPanel]) -> str:
    """Where a heat map cell holds a run the groups put at chance: what the note under its
    value says, and why the value alone cannot say it (the groups read the best epoch
    too); '' where none does."""
    if not any(note for p in panels for line in p.at_chance or [] for note in line):
        return ""
    bound = f" {ctx.rule.stuck_below(ctx.classes):.3f}" if ctx.classes else ""
    return (" A cell whose runs the groups below put at chance says so under its value: its "
            "run's group (stuck, collapsed or falling); in a cell of several runs, whose "
            "mean may lie above the bound, how many and their group (\"2 stuck\"), or "
            "\"2 at chance\" where their groups differ. The groups read a run's best "
            f"epoch too: a run whose best stayed below{bound} is stuck (or falling), one that "
            "reached it and ended below it collapsed, which a cell's value alone does not "
            "tell apart.")


def _heat_panels(ctx: Context, facets: list[str], rows: tuple[str, HeatAxis],
                 cols: tuple[str | None, HeatAxis]) -> tuple[list[HeatPanel], int, list]:
    """(one panel per combination of the `facets` values, the most runs in one cell, the runs
    early termination stopped in any cell): each cell the mean of its ended runs'
    metric where the (name, axis) pairs `rows` and `cols` place them, its diverged runs
    counted apart (a diverged run's last value means nothing)."""
    study, metric = ctx.study, ctx.study.metric
    (row, row_axis), (col, col_axis) = rows, cols
    shape = (len(row_axis.labels), len(col_axis.labels))
    most = 1  # the most runs in one cell (seeds, parameters that are no axis)
    cut_short = []  # runs the sweep's early termination stopped, in any cell
    panels = []
    for key in itertools.product(*(_levels(study.runs, f) for f in facets)):
        # ended runs only: a running run's value is not its last (as the header says)
        mine = [r for r in study.ended_runs()
                if all(value(r, f) == v for f, v in zip(facets, key))]
        values = np.full(shape, np.nan)
        notes = [["" for _ in range(shape[1])] for _ in range(shape[0])]
        stopped = [[False for _ in range(shape[1])] for _ in range(shape[0])]
        left_out = [[0 for _ in range(shape[1])] for _ in range(shape[0])]
        chance = [["" for _ in range(shape[1])] for _ in range(shape[0])]
        for i, j in itertools.product(range(shape[0]), range(shape[1])):
            cell = [r for r in mine if row_axis.index(value(r, row)) == i
                    and (col is None or col_axis.index(value(r, col)) == j)]
            most = max(most, len(cell))
            diverged = [r for r in cell if ctx.diverged(r)]
            valued = [r for r in cell if r not in diverged and r.metric(metric) is not None]
            scores = [r.metric(metric) for r in valued]
            chance[i][j] = _chance_note(ctx, valued)
            if scores:
                values[i, j] = float(np.mean(scores))
            notes[i][j] = "div" if diverged else ("–" if not cell else "no value")
            left_out[i][j] = len(diverged) if scores else 0
            stopped[i][j] = any(stats.stopped_early(r) for r in cell)
            cut_short += [r for r in cell if stats.stopped_early(r)]
        title = ", ".join(f"{f}={short_number(v)}" for f, v in zip(facets, key)) or "all runs"
        panels.append(HeatPanel(title, values, notes, stopped, left_out, chance))
    return panels, most, cut_short


def _chance_note(ctx: Context, runs: list[RunRecord]) -> str:
    """What a heat map cell of `runs` says of those the groups put at chance (stuck,
    collapsed, falling): the run's group where the cell is one run; in a mean of several,
    how many and their group where they share one ("2 stuck"), else "2 at chance"; "" where
    none is. The cell's value is each run's last one (its summary); the groups read the
    best epoch's too, which the cell does not show."""
    groups = [ctx.group_of(r) for r in runs if ctx.group_of(r) in stats.AT_CHANCE]
    if not groups:
        return ""
    if len(runs) == 1:
        return groups[0]
    # one group names what the runs did ("2 stuck"); "at chance" only where they differ
    return f"{len(groups)} {groups[0] if len(set(groups)) == 1 else 'at chance'}"


def _chance(ctx: Context) -> float | None:
    """Chance level of the sweep's metric when it is an accuracy (val/acc, test/acc, ...),
    else None: a loss has no chance line."""
    return ctx.base.chance if ctx.base and ctx.study.metric.endswith("acc") else None


def marginals(ctx: Context) -> list[MarginalPanel]:
    """Per swept parameter: the metric at each value, its mean, 25th / 75th percentiles,
    median and stuck runs over every other parameter, one series per optimizer (per model
    for the optimizer's own panel); for a parameter the search draws from a distribution,
    a value for each run (heat_axis bins it), each run's own value (`each_run`): a mean
    over one run is no mean, and a line through single runs no trend. Diverged runs are
    left out, as the heat map leaves out their values (a loss of 40 would outweigh every
    other run's); a value at which every run of a series diverged is in the series'
    `diverged`. Stuck runs are in: their values are real (marginal_section says so)."""
    study, metric = ctx.study, ctx.study.metric
    categorical, numeric = split_axes(ctx)
    panels = []
    for name in categorical + numeric:
        runs, scored = using(study.runs, name), using(ctx.scored, name)
        diverged = {r.id for r in scored if ctx.diverged(r)}
        levels = _levels(runs, name)
        split = next((s for s in ("optimizer", "model") if s in ctx.swept and s != name), None)
        groups = _levels(runs, split) if split else [None]
        panel = MarginalPanel(name + used_in(study.runs, name),
                              log_axis(ctx, name) or log_scaled(levels),
                              name in categorical, levels,
                              each_run=name in numeric and heat_axis(ctx, name).binned)
        for group in groups:
            points = []
            label = f"{split}={group}" if split else "all runs"
            for level in levels:
                here = [r for r in scored if value(r, name) == level
                        and (split is None or value(r, split) == group)]
                scores = [r.metric(metric) for r in here if r.id not in diverged]
                if here and not scores:
                    panel.diverged.setdefault(label, []).append(level)
                if scores and panel.each_run:  # a point a run, its own value
                    points += [(level, s, s, s, 1, s, 0) for s in scores]
                elif scores:
                    low, high = np.percentile(scores, [25, 75])
                    stuck = sum(1 for r in here if ctx.group_of(r) in stats.AT_CHANCE)
                    points.append((level, float(np.mean(scores)), float(low), float(high),
                                   len(scores), float(np.median(scores)), stuck))
            if points or label in panel.diverged:
                panel.series[label] = points
        panels.append(panel)
    return panels


def _colours_text(ctx: Context) -> str:
    """What the marginal panels' colours stand for, as marginals splits them: the optimizer,
    in its own panel the model (the text said 'one colour per optimizer' over a panel of
    optimizers coloured by model)."""
    if "optimizer" in ctx.swept:
        return ", one colour per optimizer" + (
            " (per model in the optimizer's own panel)" if "model" in ctx.swept else "")
    return ", one colour per model" if "model" in ctx.swept else ""


def marginal_section(report: Report, ctx: Context) -> None:
    panels = marginals(ctx)
    if not panels:
        return
    metric = ctx.study.metric
    kept = ctx.not_diverged(ctx.scored)
    diverged = len(ctx.scored) - len(kept)
    stuck = sum(1 for r in kept if ctx.group_of(r) in stats.AT_CHANCE)
    report.add("## Sensitivity to each parameter", "",
               f"For each parameter: `{metric}` at each of its values, averaged over every "
               "other parameter (line) with the middle half of those runs (band: 25th to 75th "
               "percentile) and their median (dash)" + _colours_text(ctx)
               + ". A flat line: the parameter hardly matters here; a bend: it has a "
               "best value." + (f" {diverged_left_out(diverged)}." if diverged else "")
               # what the figure draws for them, by panel kind: "div" where a line has no
               # mean, a cross a run in a panel of dots (_each_run_text)
               + (" \"div\" marks a value at which every run of a line diverged (it has no "
                  "mean there)." if any(p.diverged for p in panels if not p.each_run) else "")
               + _each_run_text(panels)
               + _stuck_included(stuck, ctx, panels)
               + _stopped_included(kept, ctx.study.goal, metric), "")
    title = f"{metric} by parameter (mean; dash: median; band: middle half of the runs)"
    each = [p.parameter for p in panels if p.each_run]
    if each:
        title += f"\n{', '.join(each)}: a dot per run (drawn from a distribution)"
    if stuck:
        title += (f"\nthe means include {stuck} run{'s' if stuck != 1 else ''} that ended "
                  "at chance: a mean can lie apart from its median and band")
    if diverged:
        marks = [mark for mark, shown in (
            ("\"div\": every run of a line there diverged",
             any(p.diverged for p in panels if not p.each_run)),
            ("x: a run that diverged", any(p.diverged for p in panels if p.each_run)))
            if shown]
        title += (f"\n{diverged} diverged run{'s' if diverged != 1 else ''} left out"
                  + (f" ({'; '.join(marks)})" if marks else ""))
    report.figure(marginal_figure(panels, metric, _chance(ctx),
                                  ctx.out_dir / "marginals.png", title),
                  "marginal sensitivity")


def observations(ctx: Context) -> list[str]:
    """A few sentences a discussion can start from, each with its numbers."""
    categorical, numeric = split_axes(ctx)
    out = _best_per_combination(ctx, categorical, numeric)
    if numeric:
        out += _windows_and_failures(ctx, numeric[0])
        out += _correlation_caveat(ctx, numeric[0])
    if len(numeric) > 1:
        out += _paired_effect(ctx, numeric[1], categorical)
    out += _lr_against_batch_size(ctx)
    return out


MIN_BATCH_SIZES = 3  # batch sizes a scaling exponent is fitted over


def _lr_against_batch_size(ctx: Context) -> list[str]:
    """A batch-size study's question: how the best lr moves with the batch size. Per
    optimizer (where the sweep varies it), the lr of the best run at each batch size (runs
    that diverged left out; a batch size tried at one lr only has no best lr and is named
    as left out) and the exponent k of best lr ~ batch_size^k, a least-squares
    line through log lr against log batch size. The linear scaling rule predicts k = 1
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 2.1), the square-root rule
    k = 0.5 (Krizhevsky 2014, "One weird trick", sec. 5; Hoffer et al. 2017). Nothing when
    the sweep does not vary both or has fewer than MIN_BATCH_SIZES batch sizes."""
    if not {"lr", "batch_size"} <= set(ctx.swept):
        return []
    metric, out, values = ctx.study.metric, [], _margin_values(ctx)
    split = "optimizer" if "optimizer" in ctx.swept else None
    for group in (_levels(ctx.study.runs, split) if split else [None]):
        at: dict[int, list[RunRecord]] = {}  # batch size -> its runs, best first (scored)
        for run in ctx.not_diverged(ctx.scored):
            if split is None or value(run, split) == group:
                at.setdefault(value(run, "batch_size"), []).append(run)
        # a batch size tried at one lr (a random search draws one for each run) has no best
        # lr: its only one would read as an optimum and pull the fitted exponent
        lone = sorted(b for b, runs in at.items() if len(_lrs(runs)) < 2)
        best = {b: runs[0] for b, runs in at.items() if b not in lone}
        if len(best) < MIN_BATCH_SIZES:
            continue
        sizes = sorted(best)
        lrs = [float(value(best[b], "lr")) for b in sizes]
        exponent = float(np.polyfit(np.log(sizes), np.log(lrs), 1)[0])
        windows = [_near_best(at[b], metric, values, ctx.study.goal) + _tied_lr(at[b], metric)
                   for b in sizes]
        others = [a for a in _others(ctx, "lr", split) if a != "batch_size"]
        who = ((f"{split}={group}" if split else "all runs")
               + (f" (pooled over {', '.join(others)})" if others else ""))
        out.append(
            f"{who}: the best run's lr at each batch_size: "
            + ", ".join(f"{b}: {short_number(lr)}{stopped_text(best[b])}{window}"
                        for b, lr, window in zip(sizes, lrs, windows))
            + f"; best lr ~ batch_size^{exponent:.2f} (a least-squares line through log lr "
            f"against log batch_size over {len(sizes)} batch sizes"
            + (f", leaving out {len(lone)} tried at one lr only ("
               + ", ".join(map(short_number, lone[:5])) + (", ..." if len(lone) > 5 else "")
               + ")" if lone else "")
            + "; the linear scaling rule, "
            "Goyal et al. 2017, predicts an exponent of 1, the square-root rule, Krizhevsky "
            f"2014, 0.5). One run per batch size (by {metric}, not a mean over seeds), on "
            "the sweep's lr values: their spacing limits how finely the exponent reads, and "
            f"where other lr values score within {margin_rule(metric, values, ctx.study.goal)}"
            " a batch size's best (in brackets) the best one among them may be chance."
            + _best_at_range_ends(ctx, split, group, best))
        out.append(_cost_of_larger_batches(ctx, who, sizes, best))
    return out


def _best_at_range_ends(ctx: Context, split: str | None, group,
                        best: dict[int, RunRecord]) -> str:
    """' At batch_size 128, 512 the best run's lr is the largest tried there (0.16): ...'
    where a batch size's best run is at the end of the lr values its runs tried (any run of
    the group, a diverged one too: an lr above that diverged bounds the best from inside),
    else ''. Such a best lr is the range's end, not an optimum the runs found: the best may
    lie beyond it, and the exponent fitted through it reads the range (a grid of lr up to
    0.16 whose batch sizes 64 to 512 all peak at 0.16 gave batch_size^0.46)."""
    ends: dict[str, list[tuple[int, float]]] = {"largest": [], "smallest": []}
    for size, run in sorted(best.items()):
        tried = _lrs([r for r in ctx.study.runs if value(r, "batch_size") == size
                      and (split is None or value(r, split) == group)])
        lr = float(value(run, "lr"))
        if len(tried) > 1 and lr in (tried[0], tried[-1]):
            ends["largest" if lr == tried[-1] else "smallest"].append((size, lr))
    parts = [f"at batch_size {', '.join(str(b) for b, _ in at)} the best run's lr is the "
             f"{end} tried there ({', '.join(sorted({short_number(lr) for _, lr in at}))})"
             for end, at in ends.items() if at]
    if not parts:
        return ""
    return (" " + "; ".join(parts)[0].upper() + "; ".join(parts)[1:] + ": the best lr may "
            "lie beyond the values tried, so the exponent is bounded by their range, not read "
            "from it (lr values beyond it would tell).")


def _cost_of_larger_batches(ctx: Context, who: str, sizes: list[int],
                            best: dict[int, RunRecord]) -> str:
    """What a larger batch costs with the epochs fixed, each batch size at its own best lr
    (at one lr for all, the paired effect, a larger batch is also under-stepped)."""
    metric = ctx.study.metric
    low, high = sizes[0], sizes[-1]
    change = best[high].metric(metric) - best[low].metric(metric)
    return (f"{who}: each batch_size at its own best lr scores {metric} "
            + ", ".join(f"{b}: {best[b].metric(metric):.4f}" for b in sizes)
            + f"; batch_size {low} -> {high} changes it by {change:+.4f} with the epochs "
            f"fixed, in {high / low:g}x fewer steps (one run each, not a mean over seeds).")


def _lrs(runs: list[RunRecord]) -> list[float]:
    """The lr values `runs` tried, in increasing order, each once."""
    return sorted({float(value(r, "lr")) for r in runs})


def _tied_lr(runs: list[RunRecord], metric: str) -> str:
    """' (tied with lr 0.16: the first in the sweep's order is fitted)' where other lr
    values of one batch size's `runs` (best first) score exactly as its best."""
    tied = _top_ties(runs, metric, "lr")
    if not tied:
        return ""
    return (f" (tied with lr {', '.join(short_number(v) for v in tied)}: the first in the "
            "sweep's order is the one fitted)")


def _near_best(runs: list[RunRecord], metric: str, values: list[float], goal: str) -> str:
    """' (lr 0.02-0.16 within 0.02)': the range of lr values of `runs` (one batch size's,
    best first) that score within near_margin (read over `values`) of the first, when there
    are others; ''."""
    top, margin = runs[0].metric(metric), near_margin(metric, values, goal)
    near = _lrs([r for r in runs if abs(r.metric(metric) - top) <= margin])
    if len(near) < 2:
        return ""
    return (f" (lr {short_number(near[0])}-{short_number(near[-1])} within "
            f"{margin_text(metric, values, goal)})")


def _best_per_combination(ctx: Context, categorical: list[str], numeric: list[str]) -> list:
    metric, out = ctx.study.metric, []
    for key in itertools.product(*(_levels(ctx.study.runs, c) for c in categorical)):
        every = [r for r in ctx.scored if all(value(r, c) == v for c, v in zip(categorical, key))]
        mine = ctx.not_diverged(every)
        name = ", ".join(f"{c}={v}" for c, v in zip(categorical, key)) or "all runs"
        if every and not mine:
            out.append(f"{name}: every run ({len(every)}) diverged: no setting is best.")
        if not mine:
            continue
        top = mine[0].metric(metric)
        tied = [r for r in mine[1:] if r.metric(metric) == top]
        if tied and len(tied) == len(mine) - 1:  # one value in every run: no setting is best
            out.append(f"{name}: every run ({len(mine)}) scores {metric} {top:.4f}: no "
                       "setting is better than another.")
            continue
        # in a sweep over seed a tied run may be another seed of the best's own setting
        # ("at lr=0.01 (tied with 1 other run: lr=0.01 ...)"): the seed tells them apart
        names = numeric + (["seed"] if tied and "seed" in ctx.swept else [])
        out.append(f"{name}: best {metric} {top:.4f}{stopped_text(mine[0])} at "
                   f"{config_text(mine[0], names) or 'its only setting'}"
                   + (f" (tied with {len(tied)} other run{'s' if len(tied) != 1 else ''}: "
                      + _run_names(tied, names) + "; the one named is the first of them "
                      "in the sweep's order)" if tied else "") + ".")
    return out


def _run_names(runs: list[RunRecord], names: list[str], most: int = 5) -> str:
    """'lr=0.16, batch_size=32; lr=0.32, batch_size=128': the runs by their values of `names`
    (by id where that names none), the first `most` of them."""
    shown = [config_text(r, names) or r.id for r in runs[:most]]
    return "; ".join(shown) + ("; ..." if len(runs) > most else "")


def _top_ties(runs: list[RunRecord], metric: str, name: str) -> list:
    """The values of `name` other than the first run's at which another of `runs` (best
    first) scores exactly as the first: which of them is 'the best' is the sweep's order."""
    top = runs[0].metric(metric)
    return sorted({value(r, name) for r in runs[1:] if r.metric(metric) == top}
                  - {value(runs[0], name)}, key=float)


def _windows_and_failures(ctx: Context, name: str) -> list[str]:
    """Per optimizer: the values of `name` within near_margin of its best, and those where
    every run diverged or ended at chance (stuck, collapsed, or not off it yet)."""
    metric, out, goal = ctx.study.metric, [], ctx.study.goal
    values = _margin_values(ctx)
    split = "optimizer" if "optimizer" in ctx.swept else None
    for group in (_levels(ctx.study.runs, split) if split else [None]):
        runs = [r for r in using(ctx.study.runs, name)
                if split is None or value(r, split) == group]
        if not any(r in runs for r in ctx.scored):
            continue
        # a diverged run's last value means nothing: the best and its window are the others'
        scored = ctx.not_diverged([r for r in ctx.scored if r in runs])
        # runs the sweep stopped early (hyperband) were cut short: no verdict on a setting
        full = [r for r in runs if r.state != "stopped"]
        failed = [lv for lv in _levels(full, name)
                  if all(ctx.group_of(r) in FAILED for r in full if value(r, name) == lv)]
        who = ((f"{split}={group}" if split else "all runs") + used_in(ctx.study.runs, name)
               + _pooled(ctx, name, split))
        parts = []
        if scored:
            top = scored[0].metric(metric)  # scored runs are best first, by the sweep's goal
            good = sorted({value(r, name) for r in scored
                           if abs(r.metric(metric) - top) <= near_margin(metric, values, goal)})
            cut = stopped_note(scored[0])
            parts.append(f"{name} within {margin_text(metric, values, goal)} of its best ({top:.4f}"
                         + (f", {cut}" if cut else "") + "): "
                         + ", ".join(short_number(v) for v in good)
                         + _window_at_range_end(name, good, _levels(runs, name)))
        if failed:
            count = sum(1 for r in full if value(r, name) in failed)
            parts.append(f"at {name}=" + ", ".join(short_number(v) for v in failed)
                         + f" every run diverged or ended at chance ({count} run"
                         + ("s)" if count != 1 else ")"))
        if parts:
            out.append(f"{who}: " + "; ".join(parts) + ".")
    return out


def _window_at_range_end(name: str, good: list, tried: list) -> str:
    """' (it reaches the largest lr tried: the best may lie above it)' where the values near
    the best include an end of the 3 or more numeric values the group's runs tried (a
    diverged run's too: an lr above that diverged closes the range), else ''. A best at the
    end of the range is no optimum found: sgd on the course grid was best at lr 0.1, the
    largest it tried, and the sentence read as if 0.1 were sgd's best lr."""
    if len(tried) < 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 for v in tried):
        return ""
    ends = [end for end, value in (("smallest", tried[0]), ("largest", tried[-1]))
            if value in good]
    if len(ends) == 2:
        return f" (it spans every {name} tried, from the smallest to the largest)"
    if ends:
        side = "below" if ends[0] == "smallest" else "above"
        return f" (it reaches the {ends[0]} {name} tried: the best may lie {side} it)"
    return ""


def _others(ctx: Context, name: str, split: str | None) -> list[str]:
    """The swept parameters other than `name` and `split` (and the seed): what a
    statement about `name` within each `split` pools its runs over."""
    return [a for a in ctx.swept if a not in (name, split, "seed")]


def _pooled(ctx: Context, name: str, split: str | None) -> str:
    """' (pooled over dropout)' when runs of other values of other parameters are read
    together, else ''."""
    others = _others(ctx, name, split)
    return f" (pooled over {', '.join(others)})" if others else ""


def _correlation_caveat(ctx: Context, name: str) -> list[str]:
    metric = ctx.study.metric
    margin = near_margin(metric, _margin_values(ctx), ctx.study.goal)
    numeric = [r for r in using(ctx.scored, name) if isinstance(value(r, name), (int, float))]
    # as in the importance table: a stopped run's value is not a final one, nor a diverged one's
    full = stats.full_length(numeric)
    runs = ctx.not_diverged(full)
    cut_short, diverged = len(numeric) - len(full), len(full) - len(runs)
    x = axis_values(ctx, name, [value(r, name) for r in runs])
    if x is None or len(runs) < 4:
        return []
    r_all = stats.correlation(x, np.asarray([r.metric(metric) for r in runs]))
    split = "optimizer" if "optimizer" in ctx.swept else None
    bends = []
    for group in (_levels(ctx.study.runs, split) if split else [None]):
        # (`runs` has no run hyperband stopped early: a partial value is no evidence of a bend)
        mine = [r for r in runs if split is None or value(r, split) == group]
        # the range tried: a best run below the values that diverged is inside it, where
        # the relation bends (worse to one side, diverged to the other)
        levels = _levels([r for r in full if split is None or value(r, split) == group], name)
        top = mine[0].metric(metric) if mine else None
        # a peak inside the range: the best run is inside, and no run at either end comes
        # within near_margin of it (a tie at an end is a rise to that end, not a bend)
        ends_near = any(abs(r.metric(metric) - top) <= margin for r in mine
                        if value(r, name) in (levels[0], levels[-1])) if mine else True
        if mine and len(levels) > 2 and not ends_near \
                and value(mine[0], name) not in (levels[0], levels[-1]):
            at = f"{name}={short_number(value(mine[0], name))}"
            # the best run over every value of the other parameters: say so and name its
            # values (at another dropout the best lr may be another)
            pooled = _others(ctx, name, split)
            where = (f" (its best run pooled over {', '.join(pooled)}, which has "
                     f"{config_text(mine[0], pooled)})" if pooled else "")
            tied = _top_ties(mine, metric, name)
            if tied:  # tied inside the range too (a tie at an end is no bend, above)
                where += (f" (tied with {name}=" + ", ".join(map(short_number, tied))
                          + ": the first in the sweep's order is named)")
            bends.append((f"{split}={group} is best at {at}" if split else
                          f"the best is at {at}") + where)
    axis = f"log10 {name}" if log_axis(ctx, name) or log_scaled(_levels(runs, name)) else name
    if r_all is None:
        return []
    over = "the runs that use it" if used_in(ctx.scored, name) else "all runs"
    less = ([f"{cut_short} stopped early"] if cut_short else []) \
        + ([f"{diverged} that diverged"] if diverged else [])
    if less:
        over += " less the " + " and the ".join(less)
    text = f"Pearson r({axis}, {metric}) over {over} is {r_all:+.2f}"
    if bends:
        return [text + ", yet " + "; ".join(bends) + ": inside the range, so the relation "
                f"bends and one correlation (a straight line in {axis}) misleads."]
    return [text + "."]


def _paired_effect(ctx: Context, name: str, categorical: list[str]) -> list[str]:
    """The metric's change from the lowest to the highest value of `name`, paired over
    every other setting (converged runs only; a setting's seeds by their mean), per model."""
    metric, out = ctx.study.metric, []
    levels = _levels(ctx.study.runs, name)
    low, high = levels[0], levels[-1]
    if repr(low) == repr(high):
        return []
    others = [a for a in ctx.swept if a not in (name, "seed")]
    split = "model" if "model" in categorical else None
    for group in (_levels(ctx.study.runs, split) if split else [None]):
        runs = [r for r in using(ctx.scored, name) if ctx.group_of(r) == stats.CONVERGED
                and (split is None or value(r, split) == group)]
        # A setting is a configuration less its seed: the runs of its seeds at one value of
        # `name` count by their mean (keeping only the last of them dropped the others)
        by_setting: dict[tuple, dict[str, list[float]]] = {}
        named: dict[tuple, RunRecord] = {}  # a run of each setting, to name it by
        for r in runs:
            key = tuple(repr(value(r, a)) for a in others)
            named.setdefault(key, r)
            by_setting.setdefault(key, {}).setdefault(
                repr(value(r, name)), []).append(r.metric(metric))
        pairs = [key for key, s in by_setting.items() if repr(high) in s and repr(low) in s]
        diffs = [float(np.mean(s[repr(high)]) - np.mean(s[repr(low)]))
                 for s in (by_setting[key] for key in pairs)]
        if not diffs:
            continue
        mean, half, n = stats.t_interval(diffs, ctx.level)
        if n == 1:  # one difference: no average to speak of; which pair it is instead
            over = ("in the one setting of the converged runs at both values"
                    + (f" ({config_text(named[pairs[0]], others)})" if others else "")
                    + ": one pair, no average")
        else:
            over = (f"on average over {n} paired settings of the converged runs"
                    + (f" (± {half:.4f}: half-width of the {ctx.level:.0%} Student-t "
                       "interval of that mean)" if half else "")
                    + (", each pair at one lr (a larger batch usually wants a larger lr: "
                       "the line on each batch_size at its own best lr compares them so)"
                       if name == "batch_size" and "lr" in others else ""))
        out.append(f"{split + '=' + str(group) + ': ' if split else ''}{name} "
                   f"{short_number(low)} -> {short_number(high)} changes {metric} by "
                   f"{mean:+.4f} {over}.")
    return out


def discussion_section(report: Report, ctx: Context) -> None:
    heatmap_section(report, ctx)
    marginal_section(report, ctx)
    notes = observations(ctx)
    report.add("## Observations", "", "Generated from the runs above, each run on its own "
               "(seeds are not averaged here: a best value is one run's; the seeds section "
               "gives means over seeds); starting points for a discussion, not "
               "conclusions:", "")
    report.add(*(f"- {line}" for line in notes), "")
    importance_section(report, ctx)


def _each_run_text(panels: list[MarginalPanel]) -> str:
    """' lr is drawn ...: a dot per run ...' for the panels that draw each run on its own."""
    each = [f"`{p.parameter}`" for p in panels if p.each_run]
    if not each:
        return ""
    one = len(each) == 1
    crossed = any(p.diverged for p in panels if p.each_run)
    return (f" {' and '.join(each)} {'is' if one else 'are'} drawn from a distribution, a "
            f"value for each run: {'its panel draws' if one else 'their panels draw'} each "
            "run as a dot, with no line, band or median (a line through runs of one value "
            "each would read as a trend that one run a value cannot show; the heat map "
            "gathers them into ranges)" + (", and a run that diverged as an x above the "
                                          "panel, at its value (no \"div\")" if crossed
                                          else "") + ".")


def _stuck_included(count: int, ctx: Context, panels: list[MarginalPanel]) -> str:
    """' Included: N runs at chance ...' when `count` of the runs in the means ended at
    chance (stats.AT_CHANCE: stuck, collapsed, or not off it yet), with the values where
    they pull the mean to the worse side of the middle half of its runs."""
    if not count:
        return ""

    def pulled(point: tuple) -> bool:  # (level, mean, low, high, n, median, stuck)
        mean, edge = (point[1], point[3] if ctx.study.goal == "minimize" else point[2])
        worse = mean > edge if ctx.study.goal == "minimize" else mean < edge
        # a mean of equal values differs from them in its last bit: that is no pull
        return bool(point[6]) and worse and not math.isclose(mean, edge, abs_tol=1e-12)

    outside = [f"{panel.parameter.split(' ')[0]}={short_number(point[0])}"
               + (f" ({label})" if len(panel.series) > 1 else "")
               for panel in panels for label, points in panel.series.items()
               for point in points if pulled(point)]
    classes = ctx.classes
    bound = (f", {'its' if count == 1 else 'their'} last accuracy below "
             f"{ctx.rule.stuck_below(classes):.3f}") if classes else ""
    side = "above" if ctx.study.goal == "minimize" else "below"
    return (f" The means include {count} run{'s' if count != 1 else ''} at chance (stuck, "
            f"collapsed or not off it yet{bound}): unlike a diverged run's, such a run's value "
            "is real (a setting that did not learn), "
            "and it pulls its value's mean toward chance, not the median"
            + (f"; here the mean lies {side} the middle half of its runs at "
               + ", ".join(outside[:8]) + (", ..." if len(outside) > 8 else "")
               if outside else "") + ".")


def _stopped_included(runs: list[RunRecord], goal: str, metric: str) -> str:
    """' Included: N runs ... stopped ...' when some of `runs` were stopped early; a run cut
    short scores worse than it would have: lower for a maximized metric, higher for a
    minimized one."""
    count = len(runs) - len(stats.full_length(runs))
    if not count:
        return ""
    worse = ("lower than it would have" if goal == "maximize" else
             f"higher than it would have; {metric} is minimized, so higher is worse")
    return (f" Included: {count} run{'s' if count != 1 else ''} the sweep's early termination "
            "(hyperband) stopped, at the value of the epoch "
            + ("it" if count == 1 else "each") + f" stopped at (a cut-short run scores {worse}).")


def _stopped_left_out(count: int) -> str:
    """The sentence saying that `count` runs stopped early were left out, and why."""
    return (f"Left out: {count} run{'s' if count != 1 else ''} the sweep's early termination "
            "(hyperband) stopped, whose value is from the epoch "
            + ("it" if count == 1 else "each") + " stopped at, not a final one.")


def importance_section(report: Report, ctx: Context) -> None:
    study = ctx.study
    axes = [a for a in ctx.swept if a != "seed"]
    # a run early termination stopped holds its value at that epoch, not a final one; a
    # diverged run's last value means nothing (a loss of 90 would set every correlation)
    full = stats.full_length(ctx.scored)
    cut_short = len(ctx.scored) - len(full)
    kept = ctx.not_diverged(full)
    diverged = len(full) - len(kept)
    full = kept
    left_out = (f" {_stopped_left_out(cut_short)}" if cut_short else "") \
        + (f" {diverged_left_out(diverged)}." if diverged else "")
    rows = stats.importance(full, axes, study.metric)
    scored = [r for r in full if r.metric(study.metric) is not None]
    for row in rows:  # stats reads log10 by the values alone: a log distribution's too
        x = axis_values(ctx, row["parameter"], [r.params.get(row["parameter"]) for r in scored])
        if x is not None and log_axis(ctx, row["parameter"]):
            row["correlation"] = stats.correlation(
                x, np.asarray([r.metric(study.metric) for r in scored]))
    report.add("## Hyper-parameter importance", "")
    if not rows:
        report.add("Needs at least 4 ended runs with a metric (not stopped early, not "
                   "diverged) and one varying parameter." + left_out, "")
        return
    values = {r.metric(study.metric) for r in full}
    if len(values) == 1:
        report.add(f"`{study.metric}` is {values.pop():.4f} in every one of the {len(full)} "
                   "runs: no parameter explains any of its variation (there is none)."
                   + left_out, "")
        return
    split = "optimizer" if "optimizer" in axes else None
    groups = _levels(study.runs, split) if split else []
    report.add(f"Against `{study.metric}`: a random forest's impurity importance (200 trees; "
               "categorical parameters one-hot encoded, their columns summed) and the "
               f"Pearson correlation of numeric parameters (log10 of those spanning "
               f"{log_text(ctx, axes)}), as in W&B's parameter-importance panel, over all runs"
               + (" that did not diverge" if diverged else "")
               + (" and within each optimizer" if split else "") + ". A correlation only "
               "measures a straight-line trend: read it beside the sensitivity plot."
               + left_out, "")
    header = ["parameter", "importance", "r (all runs)"] + [f"r ({split}={g})" for g in groups]
    table = []
    for row in rows:
        within = []
        for group in groups:
            mine = [r for r in full if value(r, split) == group]
            x = axis_values(ctx, row["parameter"], [r.params.get(row["parameter"]) for r in mine])
            corr = None if x is None else stats.correlation(
                x, np.asarray([r.metric(study.metric) for r in mine]))
            within.append(fmt(corr, 3))
        table.append([row["parameter"], fmt(row["importance"], 3), fmt(row["correlation"], 3),
                      *within])
    report.table(header, table)



