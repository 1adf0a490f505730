"""The report's view of the runs themselves: all runs and those better than random in
parallel coordinates, the groups (diverged, collapsed, stuck, still falling, converged) with
their loss curves, the training curves of the best runs, and the best run's test results."""

from __future__ import annotations

import json

from agent.commands import module_command, script
from agent.report import figures, stats
from agent.report.curves import (
    drawn_curve,
    epoch_curve,
    in_epochs,
    tensorboard_scalars,
    with_divergence,
)
from agent.report.markdown import (
    Context,
    Report,
    config_text,
    fmt,
    fmt_value,
    log_axis,
    log_text,
    stopped_note,
    stopped_text,
)
from agent.report.study import OPEN_STATES, RunRecord, Study
from agent.sweep.status import BestRun, ahead_of_best

GROUP_TITLES = {stats.DIVERGED: "diverged", stats.COLLAPSED: "collapsed to chance",
                stats.STUCK: "stuck at chance",
                stats.FALLING: "did not leave chance, loss still falling",
                stats.CONVERGED: "converged"}


def parallel_section(report: Report, ctx: Context) -> None:
    study = ctx.study
    rows = [{**{a: r.config.get(a, r.params.get(a)) for a in ctx.swept},
             study.metric: r.metric(study.metric)} for r in ctx.scored]
    stopped = [stats.stopped_early(r) for r in ctx.scored]
    report.add("## All runs in parallel coordinates", "",
               f"One line per run with a value of `{study.metric}`; the axes are the "
               f"parameters the sweep varies (log axes where they span "
               f"{log_text(ctx, ctx.swept)}); colour is the metric (brighter is better)."
               + (f" Dashed: the {sum(stopped)} run{'s' if sum(stopped) != 1 else ''} the "
                  "sweep's early termination (hyperband) stopped, at the value of the epoch "
                  "it stopped at, not a final one." if any(stopped) else ""), "")
    logged = frozenset(name for name in ctx.swept if log_axis(ctx, name))
    report.figure(figures.parallel_coordinates(
        rows, ctx.swept, study.metric, study.goal, report.out_dir / "parallel_all.png",
        "all runs", stopped, logged), "parallel coordinates, all runs")
    base = ctx.base
    if base is None:
        return
    kept, left = stats.better_than_random(study.ended_runs(), base)
    report.add("### Runs better than random", "",
               f"Kept: a run whose test accuracy is above {base.chance_bound:.4f}, the "
               f"accuracy that uniform guessing on the {base.test_size:,} test images stays "
               f"at or below in {base.level:.0%} of draws (chance is {base.chance:.4f}; "
               f"binomial quantile; a run without a test accuracy, as one whose loss went "
               f"non-finite, does not pass). **{len(kept)} of {len(kept) + len(left)}** runs "
               "pass; "
               f"{len(left)} {'does' if len(left) == 1 else 'do'} not"
               + _count_groups(ctx, left) + ". This "
               "tests against guessing, not for learning: a run just above "
               f"{base.chance_bound:.1%} passes it, yet one whose best validation accuracy "
               f"stays below {base.chance + ctx.rule.stuck_margin:.1%} counts as stuck "
               "below.", "")
    kept_rows = [(row, cut) for row, cut, run in zip(rows, stopped, ctx.scored) if run in kept]
    report.figure(figures.parallel_coordinates(
        [row for row, _ in kept_rows], ctx.swept, study.metric, study.goal,
        report.out_dir / "parallel_better.png",
        f"runs better than random (test accuracy > {base.chance_bound:.4f})",
        [cut for _, cut in kept_rows], logged), "parallel coordinates, better than random")


def _group_heading(group: str, runs: list[RunRecord]) -> str:
    """A group's table heading: its title, with the epochs of its runs where the group is
    of runs that did not leave chance in them ('in 2 epochs')."""
    if group != stats.FALLING:
        return GROUP_TITLES[group].capitalize()
    epochs = sorted({stats.epochs_done(r) for r in runs})
    return ("Did not leave chance in " + (f"{epochs[0]} epoch{'s' if epochs[0] != 1 else ''}"
                                          if len(epochs) == 1 else "their epochs")
            + ", loss still falling")


def _figures_of(groups: list[str]) -> str:
    """'The figure of the "converged" runs', 'The figures of the "stuck at chance" and
    "converged" runs' (the titles quoted: one of them holds a comma)."""
    titles = [f'"{GROUP_TITLES[g]}"' for g in groups]
    named = titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]
    return f"The figure{'s' if len(groups) > 1 else ''} of the {named} runs"


# A group's runs counted in a sentence ("2 stuck at chance"): its title, less the comma that
# ran into the list's ("2 did not leave chance, loss still falling, 1 diverged")
COUNTED = {**GROUP_TITLES, stats.FALLING: "did not leave chance (loss still falling)"}


def _count_groups(ctx: Context, runs: list[RunRecord]) -> str:
    """': 2 stuck at chance and 1 did not leave chance (loss still falling)' for `runs`
    (', among them ...' where some are in no group, '' where none is in one)."""
    counts = {g: sum(ctx.group_of(r) == g for r in runs) for g in stats.GROUPS}
    parts = [f"{n} {COUNTED[g]}" for g, n in counts.items() if n]
    if not parts:
        return ""
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (": " if sum(counts.values()) == len(runs) else ", among them ") + listed


def groups_section(report: Report, ctx: Context) -> None:
    classes = ctx.classes
    report.add("## Diverged, collapsed, stuck and converged runs", "")
    if classes is None:
        report.add("The number of classes is unknown here (no dataset files), so the rule "
                   "cannot be applied.", "")
        return
    members = {g: [r for r in ctx.study.runs if ctx.group_of(r) == g] for g in stats.GROUPS}
    ended, grouped = ctx.study.ended_runs(), sum(map(len, members.values()))
    sources = {ctx.curves[r.id].source for r in ctx.study.runs if r.id in ctx.curves}
    report.add(f"Rule: {ctx.rule.describe(classes)}. The thresholds are parameters: "
               f"`{module_command('agent.report')} {ctx.study.sweep_id} "
               f"--explode-factor "
               f"{ctx.rule.explode_factor:g} --stuck-margin {ctx.rule.stuck_margin:g}`.", "",
               "Counts: " + ", ".join(f"{len(members[g])} {g}" for g in stats.GROUPS)
               + f" ('falling': {GROUP_TITLES[stats.FALLING]}; ended runs without an epoch "
               f"or a loss: {len(ended) - grouped}"
               + (f"; not ended, so in no group: {len(ctx.study.runs) - len(ended)}"
                  if len(ended) < len(ctx.study.runs) else "")
               + "). Each run's group is the `group` column of runs.csv.", "")
    if sources - {"tensorboard", "wandb"}:
        report.add("Some runs have no step-level losses (no TensorBoard or W&B history): "
                   "their curves and the rule use the epoch means instead.", "")
    # groups drawn by epoch means though their runs logged steps (log_interval against the
    # steps an epoch): all of their runs so, or some, the others' steps against the epoch
    logged = [g for g in stats.GROUPS if members[g] and _drawn_by(ctx, members[g]) != "steps"
              and any(ctx.curves[r.id].source != "epoch" for r in members[g]
                      if r.id in ctx.curves)]
    for drawn, verbs, rest in (
            ("means", ("shows", "show"), "each run's mean training loss per epoch, not its "
             "logged steps: none of these runs logged more than one training loss per epoch "
             "(log_interval about an epoch's steps or more)."),
            ("mixed", ("is", "are"), "drawn against the epoch: a run that logged no more than "
             "one training loss per epoch shows its mean training loss per epoch, the others "
             "their logged steps, each at its fraction of an epoch.")):
        groups = [g for g in logged if _drawn_by(ctx, members[g]) == drawn]
        if groups:
            report.add(f"{_figures_of(groups)} {verbs[len(groups) > 1]} {rest}", "")
    for group in (stats.DIVERGED, *stats.AT_CHANCE):
        if members[group]:
            report.add(f"### {_group_heading(group, members[group])} ({len(members[group])})",
                       "")
            report.table(ctx.swept + ["why", "run"], [
                [fmt_value(r, a) for a in ctx.swept]
                + [ctx.verdicts[r.id].reason + _cut_short(r), r.id] for r in members[group]])
    spiked = [r for r in members[stats.CONVERGED] if ctx.verdicts[r.id].spike]
    if spiked:  # the stuck table names its own runs' spikes
        report.add("Converged though their loss rose above "
                   f"{ctx.rule.explode_at(classes):.1f} and came back (no divergence: the "
                   "rule reads where a run ended): " + "; ".join(
                       f"{r.id} ({ctx.verdicts[r.id].spike})" for r in spiked) + ".", "")
    large = [r for r in members[stats.CONVERGED] if ctx.verdicts[r.id].large_loss]
    if large:  # called diverged before: "div" in the heat map, left out of every mean
        report.add(f"Converged though their final loss is above "
                   f"{ctx.rule.explode_at(classes):.1f} (no divergence: their last accuracy "
                   "is above chance + the stuck margin, so they predict, and so large a "
                   "cross-entropy comes from a few confident mistakes, as the large logits "
                   "of a high lr give; their values are real, in every table and mean): "
                   + "; ".join(f"{r.id} ({ctx.verdicts[r.id].large_loss})" for r in large)
                   + ".", "")
    elsewhere = [r.id for r in members[stats.DIVERGED]
                 if ctx.verdicts[r.id].reason.startswith("final validation loss")]
    if elsewhere:  # the figure's curves are training losses
        report.add("The curves below are training losses: "
                   + ", ".join(elsewhere) + (" was" if len(elsewhere) == 1 else " were")
                   + " called diverged for the final validation loss (the reason above), "
                   "drawn as a square at each epoch's end.", "")
    empty = [GROUP_TITLES[g] for g in stats.GROUPS if not members[g]]
    if empty:  # a figure saying "no run in this group" tells nothing the counts do not
        report.add("No figure for the groups without a run: " + "; ".join(empty) + ".", "")
    for group in stats.GROUPS:
        if members[group]:
            report.figure(group_figure(ctx, group, members[group]), f"{group} runs")
            report.add(*_stopped_in_figure(ctx, group, members[group]))


def _stopped_in_figure(ctx: Context, group: str, runs: list[RunRecord]) -> list[str]:
    """The sentence after a group's figure naming its runs that the sweep's early
    termination stopped, each line ending in a bar there (a run stopped after 1 of 4 epochs
    among the stuck ones had no mark: it read as stuck for its setting alone); [] if none."""
    cut = [f"{config_text(r, ctx.swept, ' ') or r.id} ({r.id}, {stopped_note(r)})"
           for r in runs if stopped_note(r)]
    if not cut:
        return []
    one = len(cut) == 1
    chance = group in stats.AT_CHANCE
    return [f"In the figure of the \"{GROUP_TITLES[group]}\" runs, {', '.join(cut)} "
            f"{'was' if one else 'were'} stopped early by the sweep's early termination: "
            f"{'its line ends' if one else 'their lines end'} in a bar there, and "
            f"{'it' if one else 'they'} trained fewer epochs than a full-length run"
            + (f", so {'it' if one else 'they'} may have left chance had "
               f"{'it' if one else 'they'} trained on" if chance else "") + ".", ""]


FAILED_STATES = ("failed", "crashed")
REASON_CHARS = 300  # of a failure's reason in its table cell (the store keeps it whole)


def failed_section(report: Report, ctx: Context) -> None:
    """The runs that failed or crashed, each with its reason from the sweep store: the agent
    that gives up after failures in a row points here for them."""
    runs = [r for r in ctx.study.runs if r.state in FAILED_STATES]
    if not runs:
        return
    report.add(f"## Failed and crashed runs ({len(runs)})", "",
               "They ended before their last epoch; the epochs they finished and their "
               "reason as the sweep store holds it (the traceback of a trial that raised is "
               "in its run directory, traceback.txt).", "")
    report.table(ctx.swept + ["state", "epochs", "why", "run"], [
        [fmt_value(r, a) for a in ctx.swept]
        + [r.state, f"{len(r.history)} of {r.params.epochs}", _reason(r.error), r.id]
        for r in runs])


def _reason(error: str | None) -> str:
    """A failure's reason in one table cell: its last non-empty line (a traceback's names the
    exception), cut short, its pipes escaped."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "no reason recorded"
    text = lines[-1] if len(lines) > 1 else lines[0]
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS - 3] + "..."
    return text.replace("|", "\\|")


def _cut_short(run: RunRecord) -> str:
    """'; stopped early (hyperband) after 1 of 4 epochs' for a run the sweep stopped."""
    if not stats.stopped_early(run):
        return ""
    done = stats.epochs_done(run)
    return f"; stopped early (hyperband) after {done} of {run.params.epochs} epochs"


def group_curves(runs: list[RunRecord], ctx: Context) -> tuple[dict, bool, float | None]:
    """({run id: the LossCurve drawn}, whether against the training step, the length of the
    x axis): each run's logged steps or its epoch means (curves.drawn_curve); where any run
    is drawn by its epochs, every run is, a step curve at its share of an epoch (one x axis
    cannot be both). The axis runs to the planned end of the longest run, so a run stopped
    early ends where it stopped, not at the right edge."""
    drawn = {r.id: drawn_curve(r, ctx.curves[r.id]) for r in runs if r.id in ctx.curves}
    by_step = all(curve.source != "epoch" for curve in drawn.values())
    if not by_step:
        drawn = {r.id: in_epochs(drawn[r.id]) or with_divergence(r, epoch_curve(r))
                 for r in runs if r.id in drawn}
    ends = []
    for run in runs:
        curve = drawn.get(run.id)
        if curve is None:
            continue
        if not by_step:
            ends.append(run.params.epochs)
        elif curve.steps_per_epoch:
            ends.append(run.params.epochs * curve.steps_per_epoch)
        ends += [max(curve.steps)] if curve.steps else []
    return drawn, by_step, max(ends) if ends else None


def _drawn_by(ctx: Context, runs: list[RunRecord]) -> str:
    """How a group's figure draws `runs` (group_curves): "steps" (every run's logged
    training steps), "means" (every run's epoch means) or "mixed" (against the epoch, some
    runs' logged steps at their share of an epoch)."""
    drawn, by_step, _ = group_curves(runs, ctx)
    if by_step:
        return "steps"
    return "mixed" if any(curve.steps_per_epoch for curve in drawn.values()) else "means"


DRAWN_TITLES = {"steps": "training loss at each logged step",
                "means": "mean training loss of each epoch",
                "mixed": "training loss (epoch means; logged steps at their share of an "
                         "epoch)"}


def group_figure(ctx: Context, group: str, runs: list[RunRecord]) -> figures.Drawn:
    """The group's training losses, faceted by the categorical swept parameters and
    coloured / styled by the numeric ones (group_curves: what is drawn, against what)."""
    categorical = [a for a in ctx.swept if any(
        isinstance(r.config.get(a), (str, bool, list)) for r in ctx.study.runs)]
    numeric = [a for a in ctx.swept if a not in categorical]
    drawn, by_step, end = group_curves(runs, ctx)
    curves = [figures.GroupCurve({a: r.config.get(a, r.params.get(a)) for a in ctx.swept},
                                 drawn[r.id].steps, drawn[r.id].losses,
                                 *(_epoch_points(r, drawn[r.id], by_step)
                                   if group == stats.DIVERGED else ([], [])),
                                 stopped=stopped_note(r),
                                 stopped_at=_stopped_at(r, drawn[r.id], by_step))
              for r in runs if r.id in drawn]
    kind = _drawn_by(ctx, runs)
    return figures.group_loss_figure(
        curves, categorical[:2], numeric[0] if numeric else None,
        numeric[1] if len(numeric) > 1 else None,
        ctx.out_dir / f"loss_{group}.png",
        f"{GROUP_TITLES[group]} ({len(curves)} run{'s' if len(curves) != 1 else ''}): "
        + DRAWN_TITLES[kind],
        "training step" if by_step else "epoch",
        ctx.rule.explode_at(ctx.classes) if group == stats.DIVERGED else None,
        x_end=end, x_start=1.0 if kind == "means" else 0.0,
        classes=ctx.classes if group in stats.AT_CHANCE else None)


def _stopped_at(run: RunRecord, curve, by_step: bool) -> float | None:
    """Where a run the sweep's early termination stopped ended on its group figure's x: the
    end of the epoch it stopped at, on the epoch axis or at that epoch's last step. Its last
    logged step can lie well before it (a digits run of batch 32, 40 steps an epoch, logging
    every 20 steps, last logged step 21, at 0.53 of an epoch, stopped after epoch 1), where
    its bar read as stopped mid-epoch. None for another run, or where the steps an epoch
    are unknown on a step axis."""
    if not stats.stopped_early(run):
        return None
    done = stats.epochs_done(run)
    if not by_step:
        return float(done)
    return float(done * curve.steps_per_epoch) if curve.steps_per_epoch else None


def _epoch_points(run: RunRecord, curve, by_step: bool) -> tuple[list, list]:
    """(the epoch's mean training loss, the validation loss) of each of `run`'s epochs at
    its end on the figure's x (the epoch, or its last step), which the divergence rule reads
    besides the logged steps; none where the steps an epoch are unknown on a step axis."""
    if by_step and not curve.steps_per_epoch:
        return [], []
    scale = curve.steps_per_epoch if by_step else 1
    rows = [(row.get("epoch", i + 1), row) for i, row in enumerate(run.history)]
    return tuple([(epoch * scale, float(row[key])) for epoch, row in rows
                  if isinstance(row.get(key), (int, float))]
                 for key in ("train/loss", "val/loss"))


BEST_CURVES = 3  # runs whose training curves are drawn


def curves_section(report: Report, ctx: Context) -> None:
    metric = ctx.study.metric
    best = ctx.scored[:BEST_CURVES]
    steps = all(ctx.curves[r.id].source != "epoch" for r in best)
    drawn, left = stats.tied_at_cut(ctx.scored, BEST_CURVES, lambda r: r.metric(metric))
    report.add("## Training curves of the best runs", "",
               ("Training loss and accuracy step by step (the logged steps), validation after "
                "each epoch." if steps else "Per epoch (no step-level record was found).")
               + (f" Tied at {metric} {fmt(drawn[0].metric(metric))} with the last run drawn "
                  f"({', '.join(r.id for r in drawn)}): {', '.join(r.id for r in left[:5])}"
                  f"{', ...' if len(left) > 5 else ''}, not drawn; the runs drawn are the "
                  "first of them in the sweep's order." if left else ""), "")
    report.figure(figures.training_curves(
        [training_series(ctx, r, steps) for r in best], ctx.out_dir / "training_curves.png",
        "training step" if steps else "epoch"), "training curves")


def training_series(ctx: Context, run: RunRecord, steps: bool) -> figures.TrainingSeries:
    """A run's curves: training per logged step (TensorBoard or W&B) when `steps`, else per
    epoch; validation per epoch, placed at the epoch's last step."""
    label = (f"{config_text(run, ctx.swept, ' ') or run.id} "
             f"[{fmt(run.metric(ctx.study.metric))}]")
    rows = [r for r in run.history if "epoch" in r]
    per_epoch = (run.summary.get("global_step", 0) / run.summary["epochs_done"]
                 if steps and run.summary.get("epochs_done") else 1)
    at = [row["epoch"] * per_epoch for row in rows]
    val = {k: (at, [row.get(f"val/{k}") for row in rows]) for k in ("loss", "acc")}
    if not steps:
        return figures.TrainingSeries(label, {k: (at, [row.get(f"train/{k}") for row in rows])
                                              for k in ("loss", "acc")}, val)
    curve = ctx.curves[run.id]
    accuracy = tensorboard_scalars(run.log_dir, "train/step_acc") if curve.source == \
        "tensorboard" else [(r.get("_step", i), r["train/step_acc"])
                            for i, r in enumerate(run.steps or []) if "train/step_acc" in r]
    return figures.TrainingSeries(label, {"loss": (curve.steps, curve.losses),
                                          "acc": tuple(map(list, zip(*accuracy))) or ([], [])},
                                  val)


def ahead_sentence(study: Study, run: RunRecord, value: float,
                   lead: str = "Ahead at its last epoch") -> str:
    """'<lead>: <run> val/acc=0.5000, epoch 3 of 20, preempted (a value of an epoch on the
    way, not a result: the run has not ended).' for an open run at `value` (its last epoch's
    value of the sweep's metric), with the command that goes on where a run of the sweep is
    preempted or silent (not while its agents train it)."""
    state = "silent" if run.silent_after is not None else run.state
    epoch = run.history[-1].get("epoch", len(run.history))  # a resumed run's own count
    text = (f"{lead}: {run.id} {study.metric}={value:.4f}, epoch {epoch} of "
            f"{run.params.epochs}, {state} (a value of an epoch on the way, not a result: "
            "the run has not ended).")
    if any(r.state == "preempted" or r.silent_after is not None for r in study.runs):
        text += (" Go on where the sweep stopped: "
                 f"`{script('run_sweep.sh')} {study.sweep_id}` (its agents resume a "
                 "preempted run from its last checkpoint).")
    return text


def best_run_section(report: Report, ctx: Context) -> None:
    study = ctx.study
    # a diverged run's last value means nothing: it is no best run, whatever it reads
    ranked = ctx.not_diverged(ctx.scored)
    if not ranked:
        report.add("## The best run", "",
                   f"None: every run with a value of {study.metric} diverged "
                   f"({len(ctx.scored)}), and a diverged run's last value means nothing; "
                   "they are listed under the diverged runs above.", "")
        return
    top = ranked[0]
    tied = [r.id for r in ranked[1:] if r.metric(study.metric) == top.metric(study.metric)]
    # repeating the best of a sweep that has runs left is premature: one of them may beat it
    left = study.runs_left()
    report.add(f"## The best run: {top.id}", "",
               f"{study.metric} = {fmt(top.metric(study.metric))}{stopped_text(top)}, "
               "test/acc = "
               f"{fmt(top.metric('test/acc'))}; configuration: "
               f"{config_text(top, ctx.swept) or 'the only one (the sweep varies no parameter)'}"
               ". One run of one seed: "
               + ("the intervals over seeds are in the section on seeds above."
                  if ctx.repeated or "seed" in ctx.swept else
                  f"no setting has been run over other seeds yet (`{study.repeat_command()}`"
                  + (", once the sweep has ended: a run it has left may still beat this one"
                     if left else "") + "), so nothing here says how much of it is luck.")
               + (f" Tied with it: {len(tied)} other run{'s' if len(tied) != 1 else ''} "
                  f"({', '.join(tied[:5])}{', ...' if len(tied) > 5 else ''}); the one shown "
                  "is the first of them in the sweep's order." if tied else ""), "")
    # the status's rule (a pack preempted after hyperband stopped some of its members
    # leaves the better ones open): the best ended run is not the run ahead
    ahead = ahead_of_best([r for r in study.runs if r.state in OPEN_STATES],
                          BestRun(top, study.metric, top.metric(study.metric), goal=study.goal))
    if ahead is not None:
        report.add(ahead_sentence(study, *ahead, lead="The best of the ended runs; ahead of "
                                  "it at its last epoch"), "")
    classes = ctx.data.classes if ctx.data else None
    confusion = top.run_dir / "confusion.json" if top.run_dir else None
    if confusion is not None and confusion.exists():
        saved = json.loads(confusion.read_text())
        classes, matrix = saved["classes"], saved["matrix"]
        report.figure(figures.confusion_matrix_figure(
            matrix, classes, ctx.out_dir / "confusion.png",
            f"confusion matrix of {top.id} (test set)"), "confusion matrix")
        accuracies = [row[i] / max(sum(row), 1) for i, row in enumerate(matrix)]
    elif classes and all(f"test/class_acc/{c}" in top.summary for c in classes):
        accuracies = [top.summary[f"test/class_acc/{c}"] for c in classes]
    else:
        report.add("No confusion matrix or per-class accuracy was recorded for this run.", "")
        return
    report.figure(figures.per_class_accuracy_figure(
        accuracies, classes, ctx.out_dir / "per_class.png",
        f"test accuracy per class of {top.id} (hardest first)"), "per-class accuracy")
    report.add("Hardest classes: " + ", ".join(stats.hardest_classes(accuracies, classes))
               + ".", "")
