"""The best configurations over seeds: means with confidence intervals from the repeat
sweeps (`python -m agent.repeat`), every seed's value (also in seeds.csv), bold only where
Welch's t-test supports it, and single runs (n = 1) kept apart."""

from __future__ import annotations

import csv
from dataclasses import dataclass

from agent.report import stats
from agent.report.markdown import Context, Report, ci_text, config_text, fmt
from agent.report.study import RunRecord, Study, repeats_of
from agent.report.study_figures import SeedRow, seed_figure

ALPHA = 0.05
BEST_PER_GROUP = 2  # runs of each group a "By ..." table shows (agent.repeat --top defaults to it)


@dataclass
class Repeated:
    """A configuration selected from the sweep and run again over seeds."""

    selected: RunRecord  # the sweep's run that was picked
    sweep_id: str  # its repeat sweep
    runs: list[RunRecord]  # the repeat's runs with a metric, the selection's seed left out
    dropped: int  # repeat runs left out for having the selection's seed

    def values(self, metric: str) -> list[float]:
        return [r.metric(metric) for r in self.runs if r.metric(metric) is not None]


def repeated_configurations(study: Study, repeats: dict[str, Study]) -> dict[str, Repeated]:
    """By the id of the repeated run: its repeat's scored runs other than the selection's
    own seed (that run was picked for being best; counting it again biases the mean)."""
    by_id = {r.id: r for r in study.runs}
    out = {}
    for run_id, repeat in repeats.items():
        selected = by_id.get(run_id)
        if selected is None:
            continue
        seed = selected.params.seed
        scored = [r for r in repeat.runs if r.metric(study.metric) is not None]
        fresh = [r for r in scored if r.params.seed != seed]
        out[run_id] = Repeated(selected, repeat.sweep_id, fresh, len(scored) - len(fresh))
    return out


def seeds_section(report: Report, ctx: Context) -> None:
    study, metric = ctx.study, ctx.study.metric
    repeated = repeated_configurations(study, repeats_of(study))
    report.add("## Best configurations over seeds", "")
    if repeated:
        seeds = sorted({r.params.seed for rep in repeated.values() for r in rep.runs})
        picked = sorted({rep.selected.params.seed for rep in repeated.values()})
        dropped = sum(rep.dropped for rep in repeated.values())
        report.add(
            "Each configuration below was picked from the sweep as one of the best of its "
            "group, then run again in a repeat sweep (`python -m agent.repeat`): a grid over "
            f"`seed` with every other parameter fixed. Seeds used: {_seed_list(seeds)}. The "
            f"picked run's own seed ({_seed_list(picked)}) is not among them"
            + (f" ({dropped} repeat runs with that seed were left out)" if dropped else "")
            + ": it was picked for being the best, so counting it again would bias the mean "
            "upward (the winner's curse); its value is shown as \"sweep run\". Mean ± "
            f"half-width of the {ctx.level:.0%} Student-t interval over n seeds. Every "
            "seed's value: [seeds.csv](seeds.csv).", "")
        write_seeds_csv(ctx, repeated, ctx.out_dir / "seeds.csv")
    else:
        report.add("No repeat sweep exists yet, so each configuration below has one run and "
                   "no interval, and none is marked best: "
                   f"`python -m agent.repeat {study.sweep_id} --run` creates and runs them "
                   "(the best 2 per model, 5 seeds each).", "")
    for by in ("model", "optimizer"):
        if by in ctx.swept or len({str(r.params.get(by)) for r in study.runs}) > 1:
            by_table(report, ctx, by, repeated)
    rows = [SeedRow(f"{config_text(rep.selected, ctx.swept, ' ')}", rep.values(metric),
                    *stats.t_interval(rep.values(metric), ctx.level)[:2],
                    rep.selected.metric(metric))
            for rep in repeated.values() if len(rep.values(metric)) >= 2]
    if rows:
        report.figure(seed_figure(rows, metric, ctx.out_dir / "seeds.png",
                                  f"{metric} per seed of each repeated configuration"),
                      "values per seed")
        report.add(winners_curse(rows, metric), "")


def winners_curse(rows: list[SeedRow], metric: str) -> str:
    """How far the picked runs sit above their configurations' means over fresh seeds."""
    excess = [r.selected - r.mean for r in rows if r.selected is not None]
    if not excess:
        return ""
    mean = sum(excess) / len(excess)
    above = sum(1 for e in excess if e > 0)
    verdict = ("a sweep's best run is partly a lucky seed, which is why it is not counted in "
               "the mean" if mean > 0 else "here the picks were not luckier than their "
               "configurations; the fresh seeds keep the estimate fair either way")
    return (f"The picked run scored above its configuration's mean over fresh seeds in "
            f"{above} of {len(excess)} configurations ({metric} {mean:+.4f} on average): "
            f"{verdict}.")


def _seed_list(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def by_table(report: Report, ctx: Context, by: str, repeated: dict[str, Repeated]) -> None:
    study, metric = ctx.study, ctx.study.metric
    others = [a for a in ctx.swept if a != by]
    with_seeds, single = [], []
    for group, runs in stats.best_per_group(ctx.scored, by, BEST_PER_GROUP).items():
        for run in runs:
            (with_seeds if run.id in repeated and len(repeated[run.id].values(metric)) >= 2
             else single).append((group, run))
    report.add(f"### By {by}", "", f"The best {BEST_PER_GROUP} runs of each {by} by "
               f"{metric}, with their repeats where `python -m agent.repeat` made some.", "")
    if with_seeds:
        samples = {run.id: repeated[run.id].values(metric) for _, run in with_seeds}
        leader, adjusted = stats.supported_best(samples, study.goal, ALPHA)
        rows = [_repeated_row(ctx, group, run, repeated[run.id], others, run.id == leader)
                for group, run in with_seeds]
        report.table([by, "configuration", f"{metric} over seeds", f"{metric} per seed",
                      "test/acc over seeds", "sweep run", "repeat sweep"], rows)
        report.add(_bold_sentence(samples, leader, adjusted, with_seeds, ctx, study.goal), "")
    if single:
        report.add(f"Single runs (n = 1: no repeat sweep; not compared, never bold; "
                   f"{metric} and test/acc of the sweep's one run):", "")
        report.table([by, "configuration", metric, "test/acc", "run"], [
            [group, config_text(run, others), fmt(run.metric(metric)),
             fmt(run.metric("test/acc")), run.id] for group, run in single])
    if ctx.base is not None:
        report.add(f"Baselines on the test set: chance {ctx.base.chance:.4f}, majority class "
                   f"{ctx.base.majority:.4f}.", "")


def _repeated_row(ctx: Context, group: str, run: RunRecord, rep: Repeated, others: list[str],
                  bold: bool) -> list[str]:
    metric = ctx.study.metric
    values = rep.values(metric)
    tests = rep.values("test/acc")
    cell = ci_text(values, ctx.level)
    return [group, config_text(run, others), f"**{cell}**" if bold else cell,
            " ".join(f"{v:.4f}" for v in values), ci_text(tests, ctx.level) if tests else "–",
            f"{fmt(run.metric(metric))} ({run.id})", rep.sweep_id]


def _bold_sentence(samples: dict, leader: str | None, adjusted: dict,
                   rows: list[tuple[str, RunRecord]], ctx: Context, goal: str) -> str:
    names = {run.id: config_text(run, ctx.swept) for group, run in rows}
    if len(samples) < 2:
        return "One repeated configuration: nothing to compare, nothing bold."
    test = (f"Welch's t-test (two-sided, unequal variances) of the best mean against every "
            f"other row, Holm-corrected over those {len(adjusted)} comparisons, at "
            f"{ALPHA:g}")
    if leader is not None:
        worst = max(adjusted.values())
        return (f"Bold: {names[leader]}, better than every other row by {test} (largest "
                f"adjusted p = {worst:.3g}). Test accuracy is reported, never used to pick.")
    import numpy as np

    pick = max if goal == "maximize" else min
    best = pick(samples, key=lambda k: np.mean(samples[k]))
    closest = max(adjusted, key=adjusted.get)
    return (f"Nothing is bold: {names[best]} has the best mean, but {test} does not separate "
            f"it from {names[closest]} (adjusted p = {adjusted[closest]:.3g}).")


def write_seeds_csv(ctx: Context, repeated: dict[str, Repeated], path) -> None:
    metric = ctx.study.metric
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["selected_run", "repeat_sweep", *ctx.swept, "seed", "run_id",
                         metric, "test/acc"])
        for run_id, rep in repeated.items():
            for run in rep.runs:
                writer.writerow([run_id, rep.sweep_id,
                                 *(rep.selected.config.get(a, rep.selected.params.get(a))
                                   for a in ctx.swept),
                                 run.params.seed, run.id, run.metric(metric),
                                 run.metric("test/acc")])
