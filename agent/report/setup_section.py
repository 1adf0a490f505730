"""The report's opening: whether the sweep is finished, the set-up as it was actually run
(the images used, every fixed parameter, hardware, wall time, the sweep file), the class
counts of what was trained on, and the baselines of a model that learnt nothing."""

from __future__ import annotations

import datetime
import os
import platform
from collections import Counter

import yaml

from agent.commands import script
from agent.params import PARAMS
from agent.report import figures
from agent.report.markdown import Context, DataUsed, Report, fmt
from agent.report.study import OPEN_STATES, RunRecord, Study
from agent.sweep.status import planned_runs, target_text
from agent.sweep_space import duration_text, short_number, swept_parameters
from util.errors import UserError

ENDED = ("finished", "stopped", "failed", "crashed")
# What the sweep engine adds to a sweep's metric when it stores the sweep.
ENGINE_DEFAULTS = (("impute", "worst"), ("impute_while_running", "false"),
                   ("impute_while_running", False))
# What it adds to hyperband's early_terminate (sweeps/config/schema.json's defaults).
HYPERBAND_DEFAULTS = (("eta", 3), ("strict", True))


def header_section(report: Report, study: Study) -> None:
    # a run left `running` by an agent that was killed is silent, as agent.status says
    states = Counter("silent" if r.silent_after is not None else r.state for r in study.runs)
    report.add(f"# Study report: {study.name}", "",
               f"Sweep `{study.sweep_id}` ({study.source}), method "
               f"`{study.sweep_config.get('method')}`, metric `{study.metric}` "
               f"({study.goal}). Generated {datetime.date.today().isoformat()}.", "",
               f"Runs: {len(study.runs)} (" + (", ".join(f"{n} {s}" for s, n in
                                                       sorted(states.items())) or "none")
               + "). One row per run: [runs.csv](runs.csv).", "")
    if study.repeated:
        pairs = ", ".join(f"{crashed} by {repeat}" for crashed, repeat in study.repeated)
        report.add(f"Crashed and repeated ({len(study.repeated)}, not counted above: each "
                   f"repeat stands for its run): {pairs}.", "")
    planned = planned_runs(study.sweep_config)
    ended = sum(states[s] for s in ENDED)
    open_runs = len(study.runs) - ended
    # by state: a preempted run waits for an agent to resume it, it is not running
    waiting = [f"{n} {s}" + (_silent_text(study) if s == "silent" else "")
               for s, n in sorted(states.items()) if s not in ENDED]
    if planned and planned > len(study.runs):
        waiting.append(f"{planned - len(study.runs)} not proposed")
    reached = target_text(study.sweep_config, study.runs)
    if reached and not open_runs:
        report.add(f"**The sweep stopped early**: {reached} (as W&B stops a sweep), after "
                   f"{ended} of {planned or len(study.runs)} planned runs.", "")
    elif (planned and ended < planned) or open_runs:
        report.add(f"**This sweep is not finished**: {ended} of "
                   f"{planned or len(study.runs)} planned runs have ended"
                   + (f" ({', '.join(waiting)})" if waiting else "")
                   + ". Every number below covers the ended runs only; run the report "
                   "again when the sweep is done.", "")


def untaken_values(ctx: Context) -> str:
    """The sentence naming each value a `values:` list of the sweep file offers that no run
    took (a bayes search that kept to one optimizer, a grid stopped part-way), else '':
    the sections below, a "By optimizer" table or a panel per optimizer, then say nothing
    of it, and nothing else says that it was never tried."""
    study = ctx.study
    if not study.runs:
        return ""
    parts, count = [], 0
    for param in swept_parameters(study.sweep_config):
        if param.values is None or param.name in ctx.idle:
            continue
        taken = [r.config.get(param.name, r.params.get(param.name)) for r in study.runs]
        missing = [v for v in param.values if not any(v == t for t in taken)]
        if missing:
            count += len(missing)
            took = [v for v in param.values if v not in missing]
            parts.append(f"`{param.name}` {', '.join(short_number(v) for v in missing)} ("
                         + (f"the runs took {', '.join(short_number(v) for v in took)} only)"
                            if took else "no run took any value of its list)"))
    if not parts:
        return ""
    open_runs = any(r.state in OPEN_STATES for r in study.runs) or \
        (planned_runs(study.sweep_config) or 0) > len(study.runs)
    return ("Listed in the sweep file, yet taken by no run" + (" so far" if open_runs else "")
            + ": " + "; ".join(parts) + ". Nothing below says anything of "
            + ("this value: it was" if count == 1 else "these values: they were")
            + " never tried.")


def _silent_text(study: Study) -> str:
    """Why the runs counted silent are not running, and what ends them."""
    silent = [r.silent_after for r in study.runs if r.silent_after is not None]
    one = len(silent) == 1
    return (f": {'its agent has' if one else 'their agents have'} sent no heartbeat for over "
            f"{max(silent):g} s, so {'it has' if one else 'they have'} stopped, killed or "
            f"the machine gone, and nothing trains {'the run' if one else 'them'}; the next "
            f"agent on the sweep marks {'it' if one else 'them'} crashed and repeats "
            f"{'it' if one else 'them'} from the last checkpoint: "
            f"`{script('run_sweep.sh')} {study.sweep_id}`")


def load_data_used(run: RunRecord) -> DataUsed | None:
    """The split the trials made (util/device_cache.py): validation carved out of the
    training set with a fixed seed, then the first `train_subset` of the rest trained on."""
    import torch

    from util.datasets import load_decoded
    from util.device_cache import device_splits

    p = run.params
    try:
        decoded = load_decoded(p.dataset, p.data_dir, p.dataset_dir)
        splits = device_splits(p.dataset, p.data_dir, torch.device("cpu"), p.val_split,
                               p.dataset_dir)
    except UserError:
        return None
    train = splits.train_y[:p.train_subset] if p.train_subset else splits.train_y
    return DataUsed(p.dataset, str(decoded.source), list(splits.classes), len(decoded.train_y),
                    p.val_split, p.train_subset, train.tolist(), splits.val_y.tolist(),
                    splits.test_y.tolist())


def setup_section(report: Report, ctx: Context) -> None:
    study, data = ctx.study, ctx.data
    report.add("## Set-up", "")
    if data is None:
        report.add("The dataset's files are not on this machine, so the data actually used "
                   "cannot be counted here.", "")
    else:
        report.add(*data_lines(data, study), "")
    report.add("### Fixed parameters", "",
               "Every hyper-parameter that is the same in all runs, with where its value "
               "came from (parameters of a model or optimizer the study does not use are "
               "left out).", "")
    report.table(["parameter", "value", "from", "what it does"], fixed_rows(study, ctx.swept))
    if ctx.idle:
        report.add("Swept but used by no run, so left out of the analysis below: "
                   + ", ".join(f"`{name}` ({why})" for name, why in ctx.idle.items()) + ".",
                   "")
    untaken = untaken_values(ctx)
    if untaken:
        report.add(untaken, "")
    report.add("### Hardware and time", "", *hardware_lines(study), "")
    hyperband = ", hyperband's `eta: 3` and `strict: true`" \
        if "early_terminate" in study.sweep_config else ""
    report.add("### The sweep file", "", "As stored with the sweep, less the defaults the sweep "
               f"engine adds (`distribution: constant` / `categorical`, `impute`{hyperband}):",
               "",
               "```yaml",
               sweep_yaml(study.sweep_config).rstrip(), "```", "")


def data_lines(data: DataUsed, study: Study) -> list[str]:
    varying = [k for k in ("dataset", "val_split", "train_subset")
               if len({repr(r.params.get(k)) for r in study.runs}) > 1]
    n_val, n_test = len(data.val_labels), len(data.test_labels)
    used = len(data.train_labels)
    lines = [f"- Data: `{data.dataset}`, read from `{data.source}`: {data.full_train:,} "
             f"training and {n_test:,} test images, {len(data.classes)} classes.",
             f"- Validation: {n_val:,} images (`val_split={data.val_split:g}`), carved out "
             "of the training set with a fixed seed: the same images for every run.",
             f"- Trained on: {used:,} images"
             + (f" (`train_subset={data.train_subset}`: the first {used:,} of the "
                f"{data.full_train - n_val:,} left after the validation split)."
                if data.train_subset else " (all that is left after the validation split)."),
             f"- Tested on: all {n_test:,} test images; the test set chose nothing (runs "
             f"are ranked by `{study.metric}`).",
             "- Per-class counts of the images trained on: "
             + ", ".join(f"{c} {n}" for c, n in zip(data.classes, class_counts(
                 data.train_labels, len(data.classes)))) + "."]
    if varying:
        lines.append(f"- Runs differ in {', '.join(varying)}: the counts above are the best "
                     "run's; runs.csv has each run's values.")
    sizes = sorted({r.params.batch_size for r in study.runs})
    steps = [(size, used // size) for size in sizes]
    lines.append("- An epoch is the whole batches of the images trained on (a last partial "
                 "batch is left out, a new order each epoch): "
                 + "; ".join(f"batch {size}: {count:,} steps, {count * size:,} images"
                             for size, count in steps) + "."
                 + (" Runs of different batch sizes take different numbers of steps at "
                    "the same lr; the learning curves are drawn against steps."
                    if len(sizes) > 1 else ""))
    return lines


def class_counts(labels: list[int], classes: int) -> list[int]:
    counts = Counter(labels)
    return [counts[i] for i in range(classes)]


def fixed_rows(study: Study, swept: list[str]) -> list[list[str]]:
    runs = study.runs
    in_file = study.sweep_config.get("parameters") or {}
    in_command = study.command  # `--epochs=1` beside ${args}
    rows = []
    for param in PARAMS:
        values = {repr(r.params.get(param.name)) for r in runs}
        if not param.hyper or len(values) != 1 or param.name in swept \
                or not used_by_any(param, runs):
            continue
        value = runs[0].params.get(param.name)
        shown = (", ".join(map(str, value)) if isinstance(value, list)
                 else short_number(value))
        where = "sweep file" if param.name in in_file else \
            "command" if param.name in in_command else "default"
        rows.append([f"`{param.name}`", shown, where, param.help])
    return rows


def used_by_any(param, runs: list[RunRecord]) -> bool:
    """Whether `param` changes anything in some run (Param.used_by: `hidden` only where
    model=dense)."""
    return any(param.used_by(r.params) for r in runs)


def hardware_lines(study: Study) -> list[str]:
    hosts = sorted({r.host for r in study.runs if r.host})
    here = platform.node()
    lines = []
    if hosts:
        lines.append(f"- Ran on host{'s' if len(hosts) > 1 else ''} {', '.join(hosts)} "
                     "(the agents' names in the sweep store).")
    if hosts == [here]:
        lines.append(f"- That host, where this report was written: {machine_text()}.")
    elif study.source == "wandb":
        lines.append("- Hardware: see each run's System tab on W&B.")
    else:
        lines.append(f"- This report was written on {here} ({machine_text()}), not where "
                     "the runs trained.")
    ended = [r for r in study.runs if r.duration]
    # a run's first start: its creation (a claim makes it running); `started` moves when a
    # preempted run resumes
    starts = [r.created or r.started for r in study.runs if r.started]
    ends = [r.ended for r in study.runs if r.ended]
    if starts and ends:
        lines.append(f"- Wall time of the sweep: {duration_text(max(ends) - min(starts))} "
                     "from the first run's start to the last run's end.")
    if ended:
        lines += run_time_lines(ended)
    return lines


def run_time_lines(ended: list[RunRecord]) -> list[str]:
    """The device time the runs took. The runs of a packed trial trained together, each
    over the whole trial's time: a trial counts once, with its longest member. A run that
    failed before its first epoch ended (a configuration the trial refused: a member of a
    pack fails so alone, the others train) trained nothing: it is named apart, not counted
    as a run trained nor as a trial of about 0 s in the means."""
    failed = [r for r in ended if r.state == "failed" and not r.history]
    ended = [r for r in ended if r not in failed]
    lines = [f"- {len(failed)} run{'s' if len(failed) != 1 else ''} failed before a first "
             "epoch ended (not counted below): " + ", ".join(r.id for r in failed[:6])
             + (", ..." if len(failed) > 6 else "") + "."] if failed else []
    if not ended:
        return lines
    trials = _trial_times(ended)
    packs = {r.pack for r in ended if r.pack}
    per = "trial" if packs else "run"
    plural = "s" if len(trials) != 1 else ""
    if packs:
        largest = max(sum(r.pack == p for r in ended) for p in packs)
        lines.append(f"- Packed trials (`--pack`): {len(ended)} runs trained as {len(trials)} "
                     f"trial{plural} of up to {largest} runs each, a pack's runs in one fused "
                     "model on one device.")
    means = {}
    # by optimizer too where it varies: an optimizer study weighs time (sam takes two
    # gradients a step); a pack's members share their optimizer, so a trial has one
    for key in ("model", "optimizer"):
        groups = _by(ended, key)
        if key == "model" or len(groups) > 1:
            parts = []
            for name, runs in groups.items():
                times = list(_trial_times(runs).values())
                parts.append(f"{name} {duration_text(sum(times) / len(times))}")
            means[key] = ", ".join(parts)
    lines.append(f"- Run time: {duration_text(sum(trials.values()))} summed over "
                 f"{len(trials)} {per}{plural}; per {per}, mean by "
                 + "; by ".join(f"{key}: {text}" for key, text in means.items()) + ".")
    return lines


def _trial_times(runs: list[RunRecord]) -> dict[str, float]:
    """Seconds of each trial the runs trained in: a packed trial's longest member, else the
    run's own."""
    trials: dict[str, float] = {}
    for run in runs:
        key = run.pack or f"run {run.id}"
        trials[key] = max(trials.get(key, 0.0), run.duration)
    return trials


def _by(runs: list[RunRecord], key: str) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for run in runs:
        out.setdefault(str(run.params.get(key)), []).append(run)
    return out


def machine_text() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU")
    return f"{cpu}, {os.cpu_count()} CPU threads, {gpu}, torch {torch.__version__}"


def sweep_yaml(config: dict) -> str:
    parameters = {}
    for name, spec in (config.get("parameters") or {}).items():
        if isinstance(spec, dict) and spec.get("distribution") in ("constant", "categorical") \
                and ("value" in spec or "values" in spec):
            spec = {k: v for k, v in spec.items() if k != "distribution"}
        parameters[name] = spec
    metric = {k: v for k, v in (config.get("metric") or {}).items()
              if (k, v) not in ENGINE_DEFAULTS}
    shown = {**config, "metric": metric, "parameters": parameters}
    if isinstance(config.get("early_terminate"), dict):
        shown["early_terminate"] = {k: v for k, v in config["early_terminate"].items()
                                    if (k, v) not in HYPERBAND_DEFAULTS}
    return yaml.safe_dump(shown,
                          sort_keys=False,
                          default_flow_style=None, width=88)


def dataset_section(report: Report, ctx: Context) -> None:
    """Class histograms of what was trained on, and the baselines."""
    data, base = ctx.data, ctx.base
    report.add("## Dataset and baselines", "")
    if data is None or base is None:
        report.add("The dataset's files are not on this machine: no class counts or "
                   "baselines.", "")
        return
    k = len(data.classes)
    drawn = figures.class_histograms(
        {"trained on": class_counts(data.train_labels, k),
         "validation": class_counts(data.val_labels, k),
         "test": class_counts(data.test_labels, k)},
        data.classes, report.out_dir / "class_histograms.png",
        f"{data.dataset}: images per class, as used by the runs")
    report.figure(drawn, "class histograms")
    names = [data.classes[c] for c in base.majority_classes]
    tie = (f" Classes {', '.join(names)} are tied at {base.majority_count} training images "
           f"each; the baseline predicts the first, {names[0]} (any of them scores "
           f"{base.majority_range[0]:.4f}-{base.majority_range[1]:.4f})."
           if base.tied else "")
    report.add("Computed on the real test set: a random model guessing each class with equal "
               f"probability, and a majority-class model that always predicts the most "
               f"frequent class of the images trained on (`{names[0]}`, "
               f"{base.majority_count} images).{tie}", "")
    report.table(["model", "test accuracy", "how"], [
        ["random (expected)", fmt(base.chance), f"1/{k}"],
        ["random (one seeded draw)", fmt(base.random_draw), f"{base.test_size:,} guesses"],
        [f"random, {base.level:.0%} upper bound", fmt(base.chance_bound),
         f"binomial({base.test_size:,}, 1/{k}) quantile {base.level:g} / {base.test_size:,}"],
        ["majority class" + (" (tied)" if base.tied else ""), fmt(base.majority),
         f"always `{names[0]}`"]])
