"""The best configurations over seeds: means with confidence intervals from the repeat
sweeps (`python -m agent.repeat`), every seed's value (also in seeds.csv), bold only where
Welch's t-test supports it, and settings without repeats kept apart. A setting is a
configuration less its seed: a sweep that searched `seed` gives each setting several runs,
its repeats, never settings of their own."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent.report import stats
from agent.report.markdown import (
    Context,
    Report,
    ci_text,
    config_text,
    diverged_left_out,
    fmt,
    fmt_value,
)
from agent.report.study import RunRecord, Study, repeats_of
from agent.report.study_figures import SeedRow, seed_figure
from agent.sweep_space import swept_parameters

ALPHA = 0.05
BEST_PER_GROUP = 2  # runs of each group a "By ..." table shows (agent.repeat --top defaults to it)


@dataclass
class Repeated:
    """A setting (a configuration less its seed) picked from the sweep and run again over
    fresh seeds."""

    setting: stats.Setting  # its runs in the sweep (one, or one per seed the sweep searched)
    sweep_id: str  # its repeat sweep(s), comma-separated
    runs: list[RunRecord]  # the repeats' scored runs of seeds the sweep did not give it
    dropped: int  # repeat runs left out for a seed the sweep gave it (or given twice)
    # fresh seeds whose repeat diverged: named beside the mean, never in it (a diverged
    # run's last value means nothing: a loss of 1e4 among losses near 0.3)
    diverged: list[RunRecord] = field(default_factory=list)
    sweep_seeds: set[int] = field(default_factory=set)  # the sweep's, diverged runs' too

    @property
    def selected(self) -> RunRecord:
        return self.setting.best

    def values(self, metric: str) -> list[float]:
        return [r.metric(metric) for r in self.runs if r.metric(metric) is not None]


def repeated_configurations(study: Study, repeats: dict[str, Study],
                            diverged: Callable[[RunRecord], bool] = lambda run: False
                            ) -> dict[str, Repeated]:
    """By setting (stats.setting_key): its repeats' scored runs of fresh seeds only. The
    seeds the sweep gave the setting picked it for being best; counting them again would
    bias the mean. Two repeat sweeps of one setting are read as one, each seed once.
    Runs for which `diverged` holds (Context.diverged) count in no mean: the sweep's own
    are left out of the setting's "sweep" value, the repeats' go to Repeated.diverged."""
    by_run = {run.id: setting for setting in stats.settings_of(study.scored_runs())
              for run in setting.runs}
    out: dict[str, Repeated] = {}
    for run_id, repeat in sorted(repeats.items()):
        setting = by_run.get(run_id)
        if setting is None:
            continue
        kept = [r for r in setting.runs if not diverged(r)]
        rep = out.setdefault(setting.key, Repeated(stats.Setting(kept or setting.runs), "",
                                                   [], 0, sweep_seeds=setting.seeds))
        rep.sweep_id = ", ".join(filter(None, [rep.sweep_id, repeat.sweep_id]))
        # every seed the sweep gave the setting is spent, a diverged one too
        seen = rep.sweep_seeds | {r.params.seed for r in rep.runs + rep.diverged}
        for run in repeat.runs:
            if run.metric(study.metric) is None and not diverged(run):
                continue
            if run.params.seed in seen:
                rep.dropped += 1
            else:
                (rep.diverged if diverged(run) else rep.runs).append(run)
                seen.add(run.params.seed)
    return out


def seeds_section(report: Report, ctx: Context) -> None:
    study, metric = ctx.study, ctx.study.metric
    repeats = repeats_of(study)
    for repeat in repeats.values():
        ctx.classify(repeat.ended_runs())
    repeated = repeated_configurations(study, repeats, ctx.diverged)
    ctx.repeated = len(repeated)
    searched = "seed" in ctx.swept
    report.add("## Best configurations over seeds", "")
    sweep_seeds = ("The sweep itself searched `seed`: a setting's runs that differ only in "
                   "their seed are its repeats, and settings are ranked by their mean over "
                   "them. " if searched else "")
    if repeated:
        seeds = sorted({r.params.seed for rep in repeated.values()
                        for r in rep.runs + rep.diverged})
        picked = sorted({s for rep in repeated.values() for s in rep.sweep_seeds})
        dropped = sum(rep.dropped for rep in repeated.values())
        if set(seeds) & set(picked):  # the sweep searched seeds: each setting its own
            used = (f"Fresh seeds: {_seed_list(seeds)} over all settings, a setting's own being "
                    "those the sweep did not give it (seeds.csv lists both for each setting)"
                    f". The sweep's seeds of a setting (of the picked settings: "
                    f"{_seed_list(picked)}) are not among its fresh ones")
        else:
            used = (f"Seeds used: {_seed_list(seeds)}. The seeds the sweep gave the picked "
                    f"settings ({_seed_list(picked)}) are not among a setting's own")
        report.add(
            sweep_seeds + "Each setting below was picked from the sweep as one of the best of "
            "its group, then run again in a repeat sweep (`python -m agent.repeat`): a grid "
            f"over `seed` with every other parameter fixed. {used}"
            + (f" ({dropped} repeat runs were left out: a seed the sweep gave the setting, "
               "or one a repeat of it counted already)" if dropped else "")
            + ": they picked it for being the best, so counting them again would bias the "
            f"mean {'upward' if study.goal == 'maximize' else 'downward'} (toward better: "
            "the winner's curse); their value is shown as \"sweep\" (their "
            f"mean when the sweep gave several). Mean ± half-width of the {ctx.level:.0%} "
            "Student-t interval over n fresh seeds. Every seed's value: "
            "[seeds.csv](seeds.csv).", "")
        write_seeds_csv(ctx, repeated, ctx.out_dir / "seeds.csv")
    elif searched:
        report.add(
            sweep_seeds + "No repeat sweep exists yet: the tables below give each setting's "
            "mean over the sweep's seeds, but those seeds also picked it, so its mean is "
            "optimistic and none is marked best: "
            f"`{study.repeat_command()}` runs {_repeat_picks(ctx, 'settings')} on 5 fresh "
            f"seeds each{_once_ended(study)}.", "")
    else:
        report.add("No repeat sweep exists yet, so each configuration below has one run and "
                   "no interval, and none is marked best: "
                   f"`{study.repeat_command()}` creates and runs them{_once_ended(study)} "
                   f"({_repeat_picks(ctx)}, 5 seeds each).", "")
    # seeds.png keeps the first table's order (its groups together, each by its mean over
    # fresh seeds): drawn by the means alone, a group's rows interleaved with another's
    # under a heading that said "as seeds.png orders them"
    figure: tuple[str, list[str]] | None = None
    for by in _tables(report, ctx):
        order = by_table(report, ctx, by, repeated, figure)
        figure = figure or (by, order)
    place = {key: n for n, key in enumerate(figure[1] if figure else [])}
    # a setting whose sweep run hyperband stopped has no full-length sweep value to set
    # against its fresh seeds (no diamond, not in the winner's-curse figure)
    keyed = [(key, SeedRow(config_text(rep.selected, _shown(ctx), " "), rep.values(metric),
                           *stats.t_interval(rep.values(metric), ctx.level)[:2],
                           None if _stopped(rep.setting.runs) else
                           float(np.mean(rep.setting.values(metric)))))
             for key, rep in repeated.items() if len(rep.values(metric)) >= 2]
    keyed.sort(key=lambda pair: pair[1].mean, reverse=study.goal == "maximize")
    keyed.sort(key=lambda pair: place.get(pair[0], len(place)))  # stable: means break ties
    rows = [row for _, row in keyed]
    short = [config_text(rep.selected, _shown(ctx)) or "the setting"
             for rep in repeated.values() if len(rep.values(metric)) < 2]
    if rows:
        report.figure(seed_figure(rows, metric, ctx.out_dir / "seeds.png",
                                  f"{metric} per seed of each repeated setting"
                                  + (" (2 or more fresh seeds)" if short else "")),
                      "values per seed")
        report.add(winners_curse(rows, metric, study.goal), "")
    if short and repeated:
        report.add("Not in the figure of seeds (fewer than 2 fresh seeds with a value that "
                   "did not diverge): " + "; ".join(short) + ".", "")


MAX_GROUP_VALUES = 8  # a swept parameter with more values gets no "By ..." table
MAX_GROUP_TABLES = 4


def _once_ended(study) -> str:
    """' once the sweep has ended: ...' where it has runs to come (Study.runs_left), as the
    launcher's closing lines and the best-run section say: one of them may beat the picks."""
    return (" once the sweep has ended: a run it has left may still beat those picked now"
            if study.runs_left() else "")


def _repeat_picks(ctx: Context, noun: str = "") -> str:
    """What `agent.repeat` picks without --by, by what the sweep varies: 'the best 2 per
    optimizer'; 'the best 2 overall' where it varies none of model, optimizer and a batch
    size tried more than once (stats.default_by then names the model, one group: "per
    model" read as two runs of each model in a sweep of one)."""
    by = stats.default_by(ctx.study)
    # default_by's fallback names the model, varied or not
    grouped = by != "model" or "model" in stats.varying_parameters(ctx.study.runs)
    return f"the best 2 {noun + ' ' if noun else ''}" + (f"per {by}" if grouped else "overall")


def group_parameters(ctx: Context) -> list[str]:
    """The parameters the "By ..." tables group by: model and optimizer where they vary,
    then the other swept parameters with a few values (a batch-size study's batch_size).
    Where batch_size is one of them, lr is not: it is what each batch size tunes (its best
    lr is in the By batch_size table), and grouping by it pairs batch sizes at one lr, the
    grid over again (3 batch sizes, 8 lr values: 16 of the 24 runs as "best settings",
    stuck runs among them at the lr values too small for the larger batches)."""
    study = ctx.study
    varied = {p.name: p.values for p in swept_parameters(study.sweep_config)}
    names = [by for by in ("model", "optimizer")
             if by in ctx.swept or len({str(r.params.get(by)) for r in study.runs}) > 1]
    names += [name for name in ctx.swept if name not in names and name != "seed"
              and varied.get(name) is not None and 1 < len(varied[name]) <= MAX_GROUP_VALUES]
    if "batch_size" in names:
        names = [name for name in names if name != "lr"]
    # a sweep part-way (or a value whose runs all failed) can leave one value among the
    # scored runs: a table of one group ranks them all again, under a heading that
    # promises a comparison (held_values says so where the table would have been)
    names = [name for name in names if len(_held(ctx, name)) > 1]
    # nothing to group by (one run, one value each): the groups agent.repeat would form
    return names[:MAX_GROUP_TABLES] or [stats.default_by(study)]


def _tables(report: Report, ctx: Context) -> list[str]:
    """The parameters of the "By ..." tables (group_parameters), the sentence on those left
    out for holding one value (held_values) added to `report` first."""
    tables = group_parameters(ctx)
    if note := held_values(ctx, tables):
        report.add(note, "")
    return tables


def _held(ctx: Context, name: str) -> list[str]:
    """The values of `name` the scored runs hold (those the "By ..." tables rank), as text,
    in first-seen order."""
    return list(dict.fromkeys(str(r.params.get(name)) for r in ctx.scored))


def held_values(ctx: Context, shown: list[str]) -> str:
    """'No "By lr" table: ...' for each swept parameter of a few values that would have
    had a table (`shown`: the tables made) but whose scored runs hold one value of it:
    a table of one row per setting, all in one group, compares no value with another."""
    varied = {p.name: p.values for p in swept_parameters(ctx.study.sweep_config)}
    notes = []
    for name in ctx.swept:
        held = _held(ctx, name)
        values = varied.get(name)
        if (name in shown or name == "seed" or len(held) != 1 or values is None
                or not 1 < len(values) <= MAX_GROUP_VALUES
                or (name == "lr" and "batch_size" in shown)):
            continue
        count = len(ctx.scored)
        notes.append(f'No "By {name}" table: the {count} run{"s" if count != 1 else ""} '
                     f"with a {ctx.study.metric} all hold {name}={held[0]} (the sweep has "
                     f"{len(values)} values), and a table of one {name} compares nothing.")
    return " ".join(notes)


def _shown(ctx: Context) -> list[str]:
    """The swept parameters that name a setting (its seed does not)."""
    return [name for name in ctx.swept if name != "seed"]


def winners_curse(rows: list[SeedRow], metric: str, goal: str) -> str:
    """How far the picked settings' sweep values sit on the better side of their means over
    fresh seeds, better by the sweep's goal (a loss's lucky pick lies below its mean)."""
    pairs = [(r.selected, r.mean) for r in rows if r.selected is not None]
    if not pairs:
        return ""
    sign = 1 if goal == "maximize" else -1
    # a sweep value equal to its mean (the same k/n accuracy) is no luck, whatever the
    # last bit of the mean's rounding says
    luckier = sum(1 for s, m in pairs if sign * (s - m) > 0 and not math.isclose(s, m))
    equal = sum(1 for s, m in pairs if math.isclose(s, m))
    mean = sum(s - m for s, m in pairs) / len(pairs)
    verdict = ("a sweep's best is partly lucky seeds, which is why they are not counted in "
               "the mean" if sign * mean > 0 and not math.isclose(mean, 0, abs_tol=1e-12) else
               "here the picks were not luckier than their settings; the fresh seeds keep "
               "the estimate fair either way")
    side = "above" if goal == "maximize" else f"below (better: {metric} is minimized)"
    stopped = len(rows) - len(pairs)
    left_out = (f"; {_settings(stopped)} whose sweep run early termination stopped "
                + ("is left out, its sweep value being partial" if stopped == 1 else
                   "are left out, their sweep values being partial") if stopped else "")
    return (f"The picked setting's sweep value scored {side} its mean over fresh seeds "
            f"in {luckier} of {_settings(len(pairs))}"
            + (f", equal to it in {equal}" if equal else "")
            + f" ({metric} {mean:+.4f} on average){left_out}: {verdict}.")


def _settings(count: int) -> str:
    return f"{count} setting{'' if count == 1 else 's'}"


def _stopped(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs the sweep's early termination stopped: their values are partial."""
    return [r for r in runs if r.state == "stopped"]


def _stopped_note(runs: list[RunRecord]) -> str:
    """'; abc stopped early at epoch 2 of 4' for each run early termination cut short."""
    notes = []
    for run in _stopped(runs):
        done = run.summary.get("epochs_done")
        notes.append(f"; {run.id} stopped early"
                     + (f" at epoch {done} of {run.params.epochs}" if done is not None else ""))
    return "".join(notes)


def _seed_list(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def by_table(report: Report, ctx: Context, by: str, repeated: dict[str, Repeated],
             figure: tuple[str, list[str]] | None = None) -> list[str]:
    """The "By `by`" table. `figure`: the parameter of the table whose order seeds.png
    keeps and that order (setting keys); None for the first table, whose order it is.
    Returns the keys of the rows with fresh seeds, in the table's order."""
    study, metric = ctx.study, ctx.study.metric
    others = [a for a in _shown(ctx) if a != by]
    with_seeds, single = [], []
    # a diverged run's last value means nothing (the heat map's "div"): it is no one's best
    diverged = [r for r in ctx.scored if ctx.diverged(r)]
    kept = ctx.not_diverged(ctx.scored)
    ranked = stats.ranked_settings_per_group(kept, by, metric, study.goal, study.runs)
    # the settings with fresh seeds that trained (a repeat sweep not run yet has none)
    tried = frozenset(key for key, rep in repeated.items() if rep.runs or rep.diverged)
    ranked, cut_short = _pass_over_cut_short(ctx, ranked, tried)
    # a group's best two, and any other setting repeated (agent.repeat --top 3, or grouped
    # by another parameter): its fresh seeds are the study's best evidence, never left out
    groups = {group: settings[:BEST_PER_GROUP] + [s for s in settings[BEST_PER_GROUP:]
                                                  if s.key in tried]
              for group, settings in ranked.items()}
    for group, settings in groups.items():
        for setting in settings:
            rep = repeated.get(setting.key)
            (with_seeds if rep and len(rep.values(metric)) + len(rep.diverged) >= 2
             else single).append((group, setting))
    with_seeds = _by_fresh_mean(with_seeds, repeated, metric, study.goal)
    keys = [s.key for _, s in with_seeds]
    same = figure is None or keys == [key for key in figure[1] if key in keys]
    report.add(f"### By {by}", "", _by_heading(ctx, by, groups, repeated, with_seeds,
                                                None if same else figure[0]), "")
    if with_seeds:
        samples = {s.key: repeated[s.key].values(metric) for _, s in with_seeds}
        leader, adjusted = stats.supported_best(samples, study.goal, ALPHA)
        names = {s.key: config_text(s.best, _shown(ctx)) for _, s in with_seeds}
        unstable = leader is not None and repeated[leader].diverged
        rows = [_repeated_row(ctx, fmt_value(s.best, by), repeated[s.key], others,
                              s.key == leader and not unstable) for _, s in with_seeds]
        report.table([by, "configuration", f"{metric} over fresh seeds", f"{metric} per seed",
                      "test/acc over fresh seeds", "sweep", "repeat sweep"], rows)
        if unstable:  # better on the seeds that trained, but not a setting to recommend
            rep = repeated[leader]
            report.add(f"Not bold: {names[leader]} has the best mean and Welch's t-test "
                       f"separates it from every other row at {ALPHA:g}, but "
                       f"{_diverged_seeds(rep)} diverged: its mean is over the seeds that "
                       "did not.", "")
        else:
            report.add(_bold_sentence(samples, leader, adjusted, names, study.goal), "")
        shaky = [(names[s.key], repeated[s.key]) for _, s in with_seeds
                 if repeated[s.key].diverged]
        if shaky:
            report.add("Diverged on fresh seeds (in no mean, interval or test; \"div\" per "
                       "seed): " + "; ".join(f"{name or 'the setting'}: {_diverged_seeds(rep)}"
                                             for name, rep in shaky) + ".", "")
    if single:
        several = any(len(s.values(metric)) > 1 for _, s in single)
        report.add("Settings without a repeat sweep (never compared, never bold): "
                   + (f"{metric} and test/acc over the sweep's own seeds (mean ± half-width "
                      f"of the {ctx.level:.0%} Student-t interval), which also ranked them, "
                      "so these means are optimistic" if several else
                      f"n = 1, {metric} and test/acc of the sweep's one run") + ":", "")
        report.table([by, "configuration", metric, "test/acc", "runs"], [
            [fmt_value(s.best, by), config_text(s.best, others) or "–",
             ci_text(s.values(metric), ctx.level),
             ci_text(s.values("test/acc"), ctx.level) if s.values("test/acc") else "–",
             " ".join(r.id for r in s.runs) + _stopped_note(s.runs)
             + _stuck_note(ctx, s.runs) + _diverged_seeds_note(s, diverged)]
            for group, s in single])
    ties = _cut_ties(ctx, by, ranked, groups)
    if ties:
        report.add(ties, "")
    if cut_short:
        report.add(_cut_short_note(ctx, by, cut_short), "")
    if diverged:
        report.add(_diverged_note(diverged, by, groups), "")
    if ctx.base is not None:
        report.add(f"Baselines on the test set: chance {ctx.base.chance:.4f}, majority class "
                   f"{ctx.base.majority:.4f}.", "")
    return keys


def _by_heading(ctx: Context, by: str, groups: dict[str, list[stats.Setting]],
                repeated: dict[str, Repeated], with_seeds: list,
                figure_by: str | None = None) -> str:
    """What a "By ..." table shows: the best BEST_PER_GROUP settings of each group by the
    sweep, and which of them agent.repeat ran again on how many fresh seeds (its --top is
    no record of the repeats: it is read from the settings repeated, the best 1 of each
    group where each group's first setting is, and no other). `figure_by`: the parameter of
    the table whose order seeds.png keeps, where this table's rows go otherwise."""
    metric = ctx.study.metric
    text = f"The best {BEST_PER_GROUP} settings of each {by} by {metric} in the sweep"
    shown = {s.key for settings in groups.values() for s in settings[:BEST_PER_GROUP]}
    tried = [s for settings in groups.values() for s in settings if s.key in repeated
             and (repeated[s.key].runs or repeated[s.key].diverged)]
    if not tried:
        return text + "; `python -m agent.repeat` has repeated none of them yet."
    seeds = sorted({len(repeated[s.key].runs) + len(repeated[s.key].diverged) for s in tried})
    fresh = f"{seeds[0]}{f' to {seeds[-1]}' if len(seeds) > 1 else ''} fresh " \
            f"seed{'s' if seeds[-1] != 1 else ''}"
    keys = {s.key for s in tried}
    # the best k of every group, and nothing else: what agent.repeat --top k --by <by> ran
    top = max(sum(1 for s in settings if s.key in keys) for settings in groups.values())
    prefix = all({s.key for s in settings if s.key in keys} == {s.key for s in settings[:top]}
                 for settings in groups.values())
    others = [s for s in tried if s.key not in shown]
    text += ("; `python -m agent.repeat` ran " + (
        f"the best {'setting' if top == 1 else f'{top} settings'} of each {by}" if prefix else
        f"{len(tried) - len(others)} of them" + (f" and {len(others)} other setting"
                                                 f"{'s' if len(others) != 1 else ''}"
                                                 if others else ""))
        + f" again on {fresh}")
    if with_seeds:
        text += (": the first table, its rows in the order of their mean over those seeds "
                 "(a group's best mean first), " + (
                     "as seeds.png orders them" if figure_by is None else
                     f"while seeds.png keeps the order of the table by {figure_by}"))
    if len(tried) < sum(map(len, groups.values())):
        text += "; the settings not repeated are in the table after it"
    return text + "."


def _by_fresh_mean(rows: list[tuple[str, stats.Setting]], repeated: dict[str, Repeated],
                   metric: str, goal: str) -> list[tuple[str, stats.Setting]]:
    """`rows` ((group, setting), each group's in the sweep's ranking) in the order of the
    mean over fresh seeds each row leads with, as seeds.png orders them: each group's
    settings by it, and the groups by that of their first row (the group's best mean). The
    sweep's ranking put a setting whose sweep run was lucky above one with the better mean,
    and the groups in the order of their best sweep runs (with agent.repeat --top 1, one
    row a group, the table ran in the sweep's order while seeds.png ran by the means).
    Means equal but for rounding keep the sweep's order (mean_ranking, as the bold test's
    best_means reads ties); a setting whose every fresh seed diverged (no mean) comes after
    those of its group with one, a group without any mean after the others."""
    place = {id(row): i for i, row in enumerate(rows)}

    def mean(row) -> float:
        return float(np.mean(repeated[row[1].key].values(metric)))

    ranked = {}
    for group in dict.fromkeys(group for group, _ in rows):
        mine = [row for row in rows if row[0] == group]
        measured = [row for row in mine if repeated[row[1].key].values(metric)]
        ranked[group] = (stats.mean_ranking(measured, mean, goal, lambda row: place[id(row)])
                         + [row for row in mine if not repeated[row[1].key].values(metric)])
    leaders = [group for group, mine in ranked.items()
               if repeated[mine[0][1].key].values(metric)]
    order = stats.mean_ranking(leaders, lambda group: mean(ranked[group][0]), goal,
                               lambda group: place[id(ranked[group][0])])
    order += [group for group in ranked if group not in leaders]
    return [row for group in order for row in ranked[group]]


CutShort = dict[str, tuple[list[stats.Setting], stats.Setting | None]]


def _pass_over_cut_short(ctx: Context, ranked: dict[str, list[stats.Setting]],
                         repeated: frozenset[str]
                         ) -> tuple[dict[str, list[stats.Setting]], CutShort]:
    """`ranked` less the settings the sweep's early termination stopped on every seed that
    are none of their group's best (stats.cut_short_passed: agent.repeat passes over the
    same, so that a table's rows are the settings it repeats, not partial values ranked
    above them); and, by group, (those passed over, the furthest kept where every setting
    was stopped). A setting at chance on every seed (stats.AT_CHANCE) counts as no full-length one
    of its group, as agent.repeat counts it; a `repeated` one (setting keys) is never passed
    over, and counts as a full-length one (its fresh seeds ran the full length)."""
    metric, goal = ctx.study.metric, ctx.study.goal
    passed: CutShort = {}
    for group, settings in ranked.items():
        counted = [s for s in settings
                   if not all(ctx.group_of(r) in stats.AT_CHANCE for r in s.runs)]
        off, furthest = stats.cut_short_passed(counted, metric, goal, repeated)
        if off:
            passed[group] = (off, furthest)
    off = {s.key for settings, _ in passed.values() for s in settings}
    return {group: [s for s in settings if s.key not in off]
            for group, settings in ranked.items()}, passed


def _cut_short_note(ctx: Context, by: str, passed: CutShort) -> str:
    """The sentence naming the settings a table passed over as stopped early."""
    others = [a for a in _shown(ctx) if a != by]

    def named(setting: stats.Setting) -> str:
        done = max(stats.epochs_done(r) for r in setting.runs)
        return (f"{config_text(setting.best, others) or setting.best.id} (epoch {done} of "
                f"{setting.best.params.epochs})")

    parts = []
    for settings, furthest in passed.values():
        group = f"{by}={fmt_value(settings[0].best, by)}"
        parts.append(f"{group}: " + "; ".join(map(named, settings)) + (
            f" (every setting of it was stopped: {named(furthest)} stands for it)"
            if furthest is not None else ""))
    return (f"Passed over as none of a group's best (as agent.repeat passes them over when "
            f"it groups by {by}): "
            "settings the sweep's early termination (hyperband) stopped on every seed, their "
            "value from the epoch they stopped at, in a group with a setting that ran the full "
            "length or, where every setting was stopped, one that went further: "
            + "; ".join(parts) + ".")


def _cut_ties(ctx: Context, by: str, ranked: dict[str, list[stats.Setting]],
              shown: dict[str, list[stats.Setting]]) -> str:
    """The sentence naming, for each value of `by`, the settings tied with its last row
    that the table leaves out (`shown`: its rows): the sweep's order, not the metric, chose
    the row."""
    metric, others = ctx.study.metric, [a for a in _shown(ctx) if a != by]

    def names(settings: list[stats.Setting]) -> str:
        return ", ".join(config_text(s.best, others) or s.best.id for s in settings)

    parts = []
    for group, settings in ranked.items():
        kept, left = stats.settings_tied_at_cut(settings, BEST_PER_GROUP, metric)
        left = [s for s in left if s.key not in {r.key for r in shown[group]}]
        if kept and left:
            parts.append(f"{by}={fmt_value(kept[0].best, by)}: {names(kept)} shown, "
                         f"{names(left)} not, all at {np.mean(kept[0].values(metric)):.4f}")
    if not parts:
        return ""
    return ("Tied at a group's last row: " + "; ".join(parts) + " (tied settings go in the "
            "sweep's order of their first run, as agent.repeat picks them).")


def _stuck_note(ctx: Context, runs: list[RunRecord]) -> str:
    """'; stuck at chance' (or '; abc stuck at chance', one of several seeds; 'collapsed to
    chance', 'did not leave chance in 2 epochs': stats.at_chance_label) for the runs of a
    setting that ended at chance: among a group's best two, a run that learnt nothing is
    still no setting to recommend, and a reader of its value alone may not know chance."""
    labels = {r.id: stats.at_chance_label(ctx.group_of(r), r) for r in runs}
    stuck = [r for r in runs if labels[r.id]]
    if not stuck:
        return ""
    if len(runs) == 1:
        return f"; {labels[runs[0].id]}"
    return "".join(f"; {r.id} {labels[r.id]}" for r in stuck)


def _diverged_seeds_note(setting: stats.Setting, diverged: list[RunRecord]) -> str:
    """'; seed 1 diverged (abc)' for the sweep's runs of `setting` that diverged: its value
    is over the others, which a reader must know of a setting that diverges on some seeds."""
    mine = [r for r in diverged if stats.setting_key(r) == setting.key]
    if not mine:
        return ""
    seeds = ", ".join(str(r.params.seed) for r in mine)
    return (f"; seed{'s' if len(mine) > 1 else ''} {seeds} diverged "
            f"({' '.join(r.id for r in mine)}), not in its value")


def _diverged_note(diverged: list[RunRecord], by: str, groups: dict) -> str:
    """How many diverged runs a "By ..." table left out, and the values of `by` that have
    no row for it (every run there diverged)."""
    empty: dict[str, int] = {}  # a value of `by` without a row -> its diverged runs
    for run in diverged:
        if str(run.params.get(by)) not in groups:
            empty[fmt_value(run, by)] = empty.get(fmt_value(run, by), 0) + 1
    return diverged_left_out(len(diverged)) + "".join(
        f"; every run at {by}={text} diverged: no row ({n} run{'s' if n != 1 else ''})"
        for text, n in empty.items()) + "."


def _diverged_seeds(rep: Repeated) -> str:
    """'2 of its 5 fresh seeds (3, 6)': the repeat runs of `rep` that diverged."""
    total = len(rep.runs) + len(rep.diverged)
    seeds = ", ".join(str(r.params.seed) for r in rep.diverged)
    return f"{len(rep.diverged)} of its {total} fresh seeds ({seeds})"


def _repeated_row(ctx: Context, group: str, rep: Repeated, others: list[str],
                  bold: bool) -> list[str]:
    metric = ctx.study.metric
    values = rep.values(metric)
    tests = rep.values("test/acc")
    cell = ci_text(values, ctx.level) if values else "–"
    if rep.diverged:
        cell += f"; {len(rep.diverged)} of {len(values) + len(rep.diverged)} diverged"
    per_seed = sorted([(r.params.seed, f"{r.metric(metric):.4f}") for r in rep.runs]
                      + [(r.params.seed, "div") for r in rep.diverged])
    picked = rep.setting.values(metric)
    sweep = (f"{np.mean(picked):.4f} (mean of {len(picked)}: "
             if len(picked) > 1 else f"{fmt(picked[0])} (") \
        + " ".join(r.id for r in rep.setting.runs) + ")"
    sweep += _stopped_note(rep.setting.runs)
    return [group, config_text(rep.selected, others) or "–", f"**{cell}**" if bold else cell,
            " ".join(text for _, text in per_seed), ci_text(tests, ctx.level) if tests else "–",
            sweep, rep.sweep_id]


def _bold_sentence(samples: dict, leader: str | None, adjusted: dict, names: dict,
                   goal: str) -> str:
    if len(samples) < 2:
        return "One repeated configuration: nothing to compare, nothing bold."
    # a row with fewer than 2 fresh seeds that trained (the others diverged) takes no part
    # in the tests (stats.supported_best): it is named, never set against the others
    apart = [k for k, v in samples.items() if len(v) < 2]
    samples = {k: v for k, v in samples.items() if k not in apart}
    unused = (f" Not compared, fewer than 2 fresh seeds that did not diverge: "
              f"{'; '.join(names[k] or 'the setting' for k in apart)}." if apart else "")
    if len(samples) < 2:
        return ("Fewer than two rows have 2 fresh seeds that did not diverge: nothing to "
                "compare, nothing bold." + unused)
    compared = ("the other row" if len(adjusted) == 1 else
                f"every other row, Holm-corrected over those {len(adjusted)} comparisons,")
    test = (f"Welch's t-test (two-sided, unequal variances) of the best mean against "
            f"{compared} at {ALPHA:g}")
    if leader is not None:
        worst = max(adjusted.values())
        return (f"Bold: {names[leader]}, better than every other row"
                f"{' compared' if apart else ''} by {test} (largest "
                f"adjusted p = {worst:.3g}). Test accuracy is reported, never used to pick."
                + unused)
    tied = stats.best_means(samples, goal)
    best, level = tied[0], np.mean(samples[tied[0]])
    if len(tied) > 1:  # equal means: naming one as "the best" would be the table's order
        named = [names[k] or "the setting" for k in tied]
        return (f"Nothing is bold: {' and '.join(named) if len(named) == 2 else '; '.join(named)}"
                f" tie at the best mean, {level:.4f}: "
                + ("neither is better than the other" if len(tied) == 2 else
                   f"none of these {len(tied)} is better than another") + "." + unused)
    # of the rows it is not separated from, the nearest mean (Holm's p often ties at 1)
    closest = min((k for k in adjusted if adjusted[k] >= ALPHA),
                  key=lambda k: abs(np.mean(samples[k]) - level))
    return (f"Nothing is bold: {names[best]} has the best mean, but {test} does not separate "
            f"it from {names[closest]} (adjusted p = {adjusted[closest]:.3g})." + unused)


def write_seeds_csv(ctx: Context, repeated: dict[str, Repeated], path) -> None:
    metric = ctx.study.metric
    shown = _shown(ctx)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["selected_run", "repeat_sweep", *shown, "sweep_seeds", "seed",
                         "run_id", metric, "test/acc", "diverged"])
        for rep in repeated.values():
            diverged = {r.id for r in rep.diverged}
            for run in sorted(rep.runs + rep.diverged, key=lambda r: r.params.seed):
                writer.writerow([rep.selected.id, rep.sweep_id,
                                 *(rep.selected.config.get(a, rep.selected.params.get(a))
                                   for a in shown),
                                 " ".join(map(str, sorted(rep.sweep_seeds))),
                                 run.params.seed, run.id, run.metric(metric),
                                 run.metric("test/acc"), run.id in diverged])
