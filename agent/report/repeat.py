"""`python -m agent.repeat <sweep> --top 2 --by model --seeds 5`: repeat a sweep's best runs.

For each value of `--by` (model, optimizer, ...) the best `--top` runs by the sweep's metric
each get a repeat sweep: a grid over `seed` with every other parameter fixed at that run's
value, local or on W&B like the sweep itself. A setting is a configuration less its seed: when
the sweep itself searched `seed`, its runs of one setting are that setting's seeds, and the
settings are ranked by their mean over them. The seeds are fresh: every seed the sweep gave
the setting is left out (it was picked for being best; running them again would only repeat
their luck).
The parameters the original sweep searched stay `values: [x]` (the HPARAMS columns of the
repeats' TensorBoard logs, which go to <log_dir>/<sweep name>-<sweep id>-repeats/, apart
from the sweep's). The report finds the repeats by their description and turns them into means with
confidence intervals. `--run` runs local repeat sweeps right away.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.commands import module_command, script, wrapped
from agent.ids import new_run_id
from agent.metrics import STOPPED_IN_WANDB, STOPPED_IN_WANDB_OR_FATAL
from agent.report import stats
from agent.report.markdown import Context, config_text
from agent.report.stats import (
    AT_CHANCE,
    COLLAPSED,
    DIVERGED,
    FALLING,
    STUCK,
    GroupRule,
    best_settings_per_group,
    default_by,
    ranked_settings_per_group,
    setting_key,
    settings_of,
    varying_parameters,
)
from agent.report.study import (
    OPEN_STATES,
    RunRecord,
    Study,
    check_our_trainer,
    load_study,
    local_repeat_sweeps,
    repeat_description,
    wandb_repeat_sweeps,
)
from agent.sweep.status import ENDED, current_runs, planned_runs
from agent.sweep.store import SWEEPS_DIR, SweepStore, create_store
from agent.sweep_space import swept_parameters
from util.errors import CommandParser, UserError, brief, int_option, interrupted_code

COPIED_KEYS = ("program", "command", "metric")  # what a repeat keeps of the original sweep


def fresh_seeds(used: set[int], count: int) -> list[int]:
    """`count` seeds from 0 up, without the seeds the sweep gave the setting (the picked
    run's own, and its other seeds when the sweep searched `seed`: of runs not ended yet
    too, and while it is unfinished those its `seed` parameter lists)."""
    return [s for s in range(count + len(used)) if s not in used][:count]


def repeat_configs(study: Study, top: int, by: str, seeds: int,
                   failed: Callable[[RunRecord], bool] = lambda run: False
                   ) -> list[tuple[str, dict]]:
    """(run id, sweep config) for each setting to repeat: the best `top` settings of each
    value of `by` (a setting is a configuration less its seed: runs of a sweep that searched
    `seed` are its repeats, not settings of their own), each named by its best run. Runs
    for which `failed` holds (the report's diverged runs, and the runs of settings stuck
    near chance on every seed) are no setting's value (a diverged run is none in the
    report's "By ..." tables either); their seeds are still not fresh."""
    swept = {p.name: p for p in swept_parameters(study.sweep_config)}
    searched = set(swept)
    scored = study.scored_runs()
    # every seed the sweep gave a setting, to a run not ended yet too, and while the sweep
    # is unfinished every seed its `seed` parameter lists (it may give the setting those
    # yet); a failed run's seed picked nothing and is fresh
    listed = set((swept["seed"].values or []) if "seed" in swept and unfinished_note(study)
                 else [])
    spent = {s.key: s.seeds | listed for s in settings_of(
        scored + [r for r in study.runs if r.state in OPEN_STATES])}
    out = []
    groups = best_settings_per_group([r for r in scored if not failed(r)], by, top,
                                     study.metric, study.goal, study.runs)
    for settings in groups.values():
        for setting in settings:
            run = setting.best
            fixed = {name: ({"values": [value]} if name in searched else {"value": value})
                     for name, value in run.config.items() if name not in ("seed", "sweep")}
            if by not in fixed:  # the grouping parameter stays visible in the repeat
                fixed[by] = {"value": run.params[by]}
            fixed["log_dir"] = {"value": f"{run.params.log_dir}/{study.log_group}-repeats"}
            config = {key: study.sweep_config[key] for key in COPIED_KEYS
                      if key in study.sweep_config}
            config.update({"name": f"{study.name}-repeat-{run.id}", "method": "grid",
                           "description": repeat_description(study.sweep_id, run.id),
                           "parameters": {**fixed, "seed": {
                               "values": fresh_seeds(spent[setting.key], seeds)}}})
            out.append((run.id, config))
    return out


def setting_namer(study: Study, by: str) -> Callable:
    """A setting's name in agent.repeat's lines: its searched values but seed and `by`
    ('lr=0.01, dropout=0'), or its best run's id where it has none."""
    searched = [p.name for p in swept_parameters(study.sweep_config)
                if p.name not in ("seed", by)]
    return lambda setting: config_text(setting.best, searched) or f"run {setting.best.id}"


def tie_lines(study: Study, top: int, by: str,
              failed: Callable[[RunRecord], bool] = lambda run: False) -> list[str]:
    """A line for each value of `by` whose best `top` settings end in a tie that the cut
    splits: the order, not the metric, chose which of the tied settings is repeated."""
    metric, lines, name = study.metric, [], setting_namer(study, by)
    ranked = ranked_settings_per_group([r for r in study.scored_runs() if not failed(r)],
                                       by, metric, study.goal, study.runs)
    for group, settings in ranked.items():
        kept, left = stats.settings_tied_at_cut(settings, top, metric)
        if not kept:
            continue
        value = float(np.mean(kept[0].values(metric)))
        lines.append(f"{by}={group}: {len(kept) + len(left)} settings tie at {metric} "
                     f"{value:.4f} for the last of its best {top}: repeating "
                     + "; ".join(map(name, kept)) + ", not " + "; ".join(map(name, left))
                     + f" (ties go by the sweep's order of their first run; --top "
                     f"{top + len(left)} repeats them all)")
    return lines


def create_local(study: Study, configs: list[tuple[str, dict]],
                 running: bool) -> list[SweepStore]:
    """The local repeat sweeps, each announced in one line that says what happens next: run
    now (`--run`) or the command that runs it. Existing ones are reused; where they hold
    fewer seeds than asked (`--seeds` raised since), a repeat sweep of the seeds they lack
    is added beside them (the report reads a run's repeat sweeps as one)."""
    existing = setting_repeats(study, local_repeat_sweeps(study))
    stores = []

    def go(sweep_id: str) -> str:
        return "; running it now" if running else f"; run it: {script('run_sweep.sh')} {sweep_id}"

    for run_id, config in configs:
        have = _seeds_held([repeat for _, repeat in existing(run_id)])
        for repeated, repeat in existing(run_id):
            store = SweepStore(SWEEPS_DIR / repeat.sweep_id / "sweep.db")
            own = f"(seeds {_listed(_seeds_of(repeat.sweep_config))}{_of(repeated, run_id)})"
            if _finished(store):
                print(f"run {run_id}: repeat sweep {repeat.sweep_id} {own} exists already, "
                      "every run ended")
                store.close()
                continue
            stores.append(store)
            print(f"run {run_id}: repeat sweep {repeat.sweep_id} {own} exists "
                  f"already{go(repeat.sweep_id)}")
        config = _lacking(run_id, config, have)
        if config is None:
            continue
        sweep_id = new_run_id()
        stores.append(create_store(SWEEPS_DIR / sweep_id, sweep_id, config["name"], config))
        print(f"run {run_id}: repeat sweep {sweep_id} created ({_made(config, have)})"
              f"{go(sweep_id)}")
    return stores


def setting_repeats(study: Study, found: dict[str, list[Study]]
                    ) -> Callable[[str], list[tuple[str, Study]]]:
    """For a picked run's id, the repeat sweeps (`found`: by the id of the run each repeats)
    of every run of its setting, as (repeated run's id, repeat sweep), the picked run's
    first. A setting's best run can change while a sweep that searched `seed` goes on (a
    seed ends better than the one picked before): its repeats so far are still the
    setting's, and a new repeat sweep holds only the seeds they lack."""
    by_run = {run.id: [r.id for r in setting.runs]
              for setting in settings_of(study.scored_runs()) for run in setting.runs}

    def of_setting(run_id: str) -> list[tuple[str, Study]]:
        ids = [run_id] + [rid for rid in by_run.get(run_id, []) if rid != run_id]
        return [(rid, repeat) for rid in ids for repeat in found.get(rid, [])]
    return of_setting


def _of(repeated: str, run_id: str) -> str:
    """', made for run X of the same setting' where a repeat sweep repeats another run."""
    return "" if repeated == run_id else f", made for run {repeated} of the same setting"


def _lacking(run_id: str, config: dict, have: list[int]) -> dict | None:
    """The repeat config `config` over the seeds it asks for that the run's repeat sweeps
    so far (`have`: their seeds) lack, as many as those lack; None, said, when none."""
    seeds = config["parameters"]["seed"]["values"]
    lacking = [seed for seed in seeds if seed not in have][:max(0, len(seeds) - len(have))]
    if not lacking:
        if len(have) > len(seeds):
            print(f"run {run_id}: its repeat sweeps hold {len(have)} seeds, more than "
                  f"--seeds {len(seeds)}: the report reads them all")
        return None
    return {**config, "parameters": {**config["parameters"], "seed": {"values": lacking}}}


def _made(config: dict, have: list[int]) -> str:
    """'seeds 5, 6, beside 2 in the repeat sweeps before: 4 in all' of a new repeat sweep."""
    lacking = config["parameters"]["seed"]["values"]
    return f"seeds {_listed(lacking)}" + (
        f", beside {len(have)} in the repeat sweeps before: {len(have) + len(lacking)} in all"
        if have else "")


def _seeds_held(repeats: list[Study]) -> list[int]:
    """The seeds a run's repeat sweeps run, each once, in their order."""
    return list(dict.fromkeys(seed for repeat in repeats
                              for seed in _seeds_of(repeat.sweep_config)))


def _seeds_of(repeat_config: dict) -> list[int]:
    """The seeds a repeat sweep's grid runs (its `seed` values)."""
    spec = (repeat_config.get("parameters") or {}).get("seed") or {}
    return list(spec.get("values", [spec["value"]] if "value" in spec else []))


def _listed(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _finished(store: SweepStore) -> bool:
    """Every planned run of the (grid) repeat sweep has ended."""
    runs = current_runs(store.runs())
    planned = planned_runs(store.sweep().config) or len(runs)
    return sum(r.state in ENDED for r in runs) >= planned


def create_on_wandb(study: Study, configs: list[tuple[str, dict]]) -> None:
    """The W&B repeat sweeps, as `create_local` makes local ones: those of the project that
    repeat a run are reused, and a sweep of the seeds they lack is added (`--seeds` raised
    since); each announced with the command that runs it."""
    import wandb

    entity, project, _ = study.wandb_path.split("/")
    existing = setting_repeats(study, wandb_repeat_sweeps(study))
    for run_id, config in configs:
        have = _seeds_held([repeat for _, repeat in existing(run_id)])
        for repeated, repeat in existing(run_id):
            own = f"(seeds {_listed(_seeds_of(repeat.sweep_config))}{_of(repeated, run_id)})"
            path = f"{entity}/{project}/{repeat.sweep_id}"
            ended = sum(r.state not in OPEN_STATES for r in repeat.runs) >= (
                planned_runs(repeat.sweep_config) or len(repeat.runs))
            print(f"run {run_id}: W&B repeat sweep {path} {own} exists "
                  "already" + (", every run ended" if ended else
                               f"; run it: {script('run_sweep.sh')} {path}"))
        config = _lacking(run_id, config, have)
        if config is None:
            continue
        try:
            sweep_id = wandb.sweep(config, entity=entity, project=project)
        except Exception as error:
            raise UserError(f"sweep={study.wandb_path!r}: W&B refused the repeat sweep "
                            f"({type(error).__name__}: {str(error).splitlines()[0][:100]})"
                            ) from None
        print(f"run {run_id}: created W&B repeat sweep ({_made(config, have)}); run it: "
              f"{script('run_sweep.sh')} {entity}/{project}/{sweep_id}")


def parse_options(argv: list[str] | None):
    """The command's options, checked (UserError, one line)."""
    parser = CommandParser(prog="python -m agent.repeat", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="local sweep id or directory, or entity/project/id")
    parser.add_argument("--top", type=int_option(1, 1000), default=2,
                        help="best runs per group (default 2)")
    parser.add_argument("--by", default=None,
                        help="parameter that forms the groups, one the sweep varies (default: "
                        "model where the sweep varies it, else optimizer where it does, else "
                        "batch_size where each of its values has more than one run, else "
                        "model: the best overall)")
    parser.add_argument("--seeds", type=int_option(2, 1000), default=5,
                        help="N fresh seeds for each setting (default 5; 2 or more: an interval "
                        "needs two): 0, 1, ... without those the sweep gave it")
    parser.add_argument("--run", action="store_true",
                        help="run the local repeat sweeps now, with one agent in this process")
    parser.add_argument("--pack", default="1",
                        help="with --run: runs trained together as one fused model, as "
                        "./run_sweep.sh --pack: K or auto (a repeat sweep's runs differ only "
                        "in seed, so they always pack)")
    args = parser.parse_args(argv)
    from agent.sweep.pack_size import parse_pack

    args.pack_size = parse_pack(args.pack)  # None: auto
    from agent.params import BY_NAME

    if args.by is not None and args.by not in BY_NAME:
        raise UserError(f"--by={brief(args.by)}: not a run parameter")
    return args



def unfinished_note(study) -> str | None:
    """A line when the sweep has runs still to end: the best runs picked now may not be its
    best (the report says the same of its numbers)."""
    from agent.sweep.status import planned_runs

    ended = len(study.ended_runs())
    total = max(planned_runs(study.sweep_config) or 0, len(study.runs))
    if ended >= total:
        return None
    return (f"note: sweep {study.sweep_id} is not finished ({ended} of {total} runs ended): "
            "the best runs picked now may not be its best; run this again when it is done "
            "(repeat sweeps made now are reused)")


def planned(argv: list[str] | None):
    """(options, study, repeat configs) for the command line `argv`, every check made
    before anything is written (UserError, one line): what `main` then creates."""
    args = parse_options(argv)
    study = load_study(args.sweep)
    check_our_trainer(study, "python -m agent.repeat")
    args.by_given = args.by is not None
    args.by = args.by or default_by(study)
    scored = study.scored_runs()
    if not scored:
        raise UserError(f"sweep={args.sweep!r}: no run has a value of its metric "
                        f"{study.metric!r} yet: nothing to repeat")
    if args.by_given:
        check_by(study, args.by)
    # the report's groups (diverged, collapsed, stuck, still falling, converged), without
    # reading the dataset: a diverged run's last value means nothing, and a setting at
    # chance on every seed (stuck, collapsed, or not off it yet) learnt nothing that more
    # seeds would measure; neither is repeated. A setting at chance on some seeds only is
    # ranked by all of them, as the report's "By ..." tables rank it: left out, its seeds
    # at chance would leave it the mean of its lucky ones
    ctx = Context(study, Path("."), GroupRule(), [], scored)
    ctx.classify(study.ended_runs())
    stuck = {s.key for s in settings_of(ctx.not_diverged(scored))
             if all(ctx.group_of(r) in AT_CHANCE for r in s.runs)}

    def unrepeatable(run: RunRecord) -> bool:
        return ctx.diverged(run) or setting_key(run) in stuck

    cut_short, cut_lines = passed_cut_short(study, args.by, unrepeatable)

    def failed(run: RunRecord) -> bool:
        return unrepeatable(run) or setting_key(run) in cut_short

    configs = repeat_configs(study, args.top, args.by, args.seeds, failed)
    if not configs:
        raise UserError(f"sweep={args.sweep!r}: every run with a value of its metric "
                        f"{study.metric!r} {_failure_words(ctx, scored)} (see its report): "
                        "nothing to repeat")
    for line in tie_lines(study, args.top, args.by, failed) + stuck_lines(
            study, args.top, args.by, ctx) + cut_lines:
        say(line)
    # a group with no setting left would otherwise be missing without a word
    groups: dict[str, list[RunRecord]] = {}
    for run in scored:
        groups.setdefault(str(run.params.get(args.by)), []).append(run)
    for group, runs in sorted(groups.items()):
        if all(unrepeatable(r) for r in runs):
            say(f"{args.by}={group}: every run with a value of {study.metric} "
                f"{_failure_words(ctx, runs)} (see the report): no setting of it to repeat")
    return args, study, configs


def say(note: str) -> None:
    """A note on stderr, wrapped within 80 columns as the launcher's and the agents' are:
    a setting passed over with its reason was one line of up to 190 characters, which a
    terminal breaks mid-word."""
    print(wrapped(note), file=sys.stderr)


def varied_parameters(study: Study) -> list[str]:
    """The parameters that `agent.repeat` can group by: those the sweep searches (more than
    one value, or a distribution) or its runs take more than one value of, seed left out,
    in the sweep file's order."""
    searched = [p.name for p in swept_parameters(study.sweep_config)
                if p.values is None or len(set(map(repr, p.values))) > 1]
    names = list(dict.fromkeys(searched + varying_parameters(study.runs)))
    return [name for name in names if name not in ("seed", "sweep")]


def check_by(study: Study, by: str) -> None:
    """A --by given that forms no groups refused (UserError, one line naming the parameters
    the sweep varies): `seed`, which every repeat draws afresh (a setting is a configuration
    less its seed), and a parameter the sweep never varied (all its runs would be one group,
    the best overall, which leaving out --by already gives where nothing else varies)."""
    varied = varied_parameters(study)
    if by in varied:
        return
    what = ("each repeat runs its setting over fresh seeds, so seed forms no group"
            if by == "seed" else
            f"the sweep never varies it (every run has {by}="
            f"{brief(study.runs[0].params.get(by), 40, quote=False)}, one group)")
    allowed = (f"the sweep varies: {', '.join(varied)}" if varied else
               "the sweep varies nothing else: leave out --by (the best overall)")
    raise UserError(f"--by={brief(by)}: {what}; {allowed}")


def passed_cut_short(study: Study, by: str, failed: Callable[[RunRecord], bool]
                     ) -> tuple[set[str], list[str]]:
    """(setting keys, lines): the settings of each value of `by` that the sweep's early
    termination (hyperband) stopped on every seed, passed over (stats.cut_short_passed, the
    rule the report's "By ..." tables follow): none is among its group's best while the
    group has a setting that ran its full length; in a group where none did, the furthest
    is repeated, at its full length. Settings `failed` (diverged, stuck) are the caller's
    to pass over."""
    name = setting_namer(study, by)
    ranked = ranked_settings_per_group([r for r in study.scored_runs() if not failed(r)],
                                       by, study.metric, study.goal, study.runs)
    keys, lines = set(), []
    for group, settings in ranked.items():
        passed, furthest = stats.cut_short_passed(settings, study.metric, study.goal)
        if furthest is None and passed:
            by_whom = _stopped_by(study, passed)
            lines.append(f"{by}={group}: passed over {_named(passed, name)}: stopped early "
                         f"{by_whom}"
                         + (" (below others at the same epoch)" if by_whom.startswith("by")
                            else " (its value is from that epoch)")
                         + ", not among its best: not repeated")
        elif furthest is not None:
            count = sum(len(s.runs) for s in [furthest, *passed])
            lines.append(f"{by}={group}: "
                         + ("its one run was" if count == 1 else f"all {count} of its runs were")
                         + f" stopped early {_stopped_by(study, [furthest, *passed])}: repeating "
                         f"the furthest, {name(furthest)} "
                         f"(epoch {max(stats.epochs_done(r) for r in furthest.runs)} of "
                         f"{furthest.best.params.epochs}), at its full length"
                         + (f"; passed over {_named(passed, name)}" if passed else ""))
        keys.update(s.key for s in passed)
    return keys, lines


def _named(settings: list, name: Callable) -> str:
    return "; ".join(map(name, settings))


def _stopped_by(study: Study, settings: list) -> str:
    """Who stopped the runs of `settings` early: 'by the sweep's hyperband', 'in W&B (a
    user's Stop)' (the W&B sink's stop_reason), or both."""
    reasons = {r.summary.get("stop_reason") in (STOPPED_IN_WANDB, STOPPED_IN_WANDB_OR_FATAL)
               for s in settings for r in s.runs}
    sweep = f"by the sweep's {_terminator(study)}"
    if reasons == {True}:
        return "in W&B (a user's Stop)"
    return sweep if reasons == {False} else f"{sweep} or in W&B (a user's Stop)"


def _terminator(study: Study) -> str:
    """The sweep's early termination, by its W&B type ('hyperband')."""
    return str((study.sweep_config.get("early_terminate") or {}).get("type", "early "
                                                                        "termination"))


def _failure_words(ctx: Context, runs: list[RunRecord]) -> str:
    """'diverged', 'stayed stuck near chance' or several of these and the other groups
    at chance, as `runs` (all failed) did."""
    groups = {ctx.group_of(r) for r in runs}
    return " or ".join(words for group, words in FAILURE_WORDS.items() if group in groups)


FAILURE_WORDS = {DIVERGED: "diverged", STUCK: "stayed stuck near chance",
                 COLLAPSED: "collapsed to chance",
                 FALLING: "did not leave chance in its epochs, its loss still falling"}


def stuck_lines(study: Study, top: int, by: str, ctx: Context) -> list[str]:
    """A line for each value of `by` whose best `top` settings (diverged runs left out, as
    the report's "By ..." tables rank them) hold one at chance on every seed (stuck,
    collapsed or not off it yet): passed over, so that group gets another setting or
    fewer."""
    name = setting_namer(study, by)
    ranked = ranked_settings_per_group(ctx.not_diverged(study.scored_runs()), by,
                                       study.metric, study.goal, study.runs)
    lines = []
    for group, settings in ranked.items():
        stuck = [s for s in settings[:top]
                 if all(ctx.group_of(r) in AT_CHANCE for r in s.runs)]
        if stuck:
            names = "; ".join(map(name, stuck))
            groups = {ctx.group_of(r) for s in stuck for r in s.runs}
            why = ("stuck near chance (its best accuracy" if groups == {STUCK} else
                   " or ".join(FAILURE_WORDS[g] for g in AT_CHANCE if g in groups)
                   + " (its accuracy")
            lines.append(f"{by}={group}: passed over {names}: {why}, see the report): not "
                         "repeated")
    return lines


def again_command(args, study) -> str:
    """The command that goes on with these repeats: the same --top, --by and --seeds (a
    hint without them would pick other settings and leave these unrun), then --run."""
    import shlex

    shown = {"top": args.top != 2, "by": args.by_given, "seeds": args.seeds != 5,
             "pack": args.pack != "1"}
    options = [f"--{name} {shlex.quote(str(getattr(args, name)))}"
               for name, show in shown.items() if show]
    return " ".join([module_command("agent.repeat"), study.sweep_id, *options, "--run"])


def main(argv: list[str] | None = None) -> int:
    args, study, configs = planned(argv)
    unfinished = unfinished_note(study)
    if unfinished:
        say(unfinished)
    if study.source == "wandb":
        create_on_wandb(study, configs)
        return 0
    stores = create_local(study, configs, args.run)
    code = 0
    if args.run:
        from agent.sweep.agent_loop import pack_sizer, run_local_agent

        sizer = pack_sizer(args.pack_size)  # one for all: --pack auto measures a kind once
        signalled: list[int] = []  # the stop signals the agent had: a Ctrl-C ends it as 130
        for store in stores:
            code = max(code, run_local_agent(store, sizer=sizer, signalled=signalled))
            if not _finished(store):  # interrupted (Ctrl-C, SIGTERM), or runs failed
                print(f"Repeat sweep {store.sweep().id} stopped unfinished (its ended runs "
                      f"are kept): go on with\n  {again_command(args, study)}")
                return interrupted_code(code, signalled)
        print(f"Next: {module_command('agent.report')} {study.sweep_id}")
    else:
        print(f"Or all now: {again_command(args, study)}")
        print(f"Then: {module_command('agent.report')} {study.sweep_id}")
    return code

