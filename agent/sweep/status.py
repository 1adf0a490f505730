"""`python -m agent.status <sweep>`: a local sweep's runs by state, the best so far, and the
running runs with their epoch and an ETA (without a sweep: every local sweep); also the
sweep's progress ("run k/N", ETA) that agents hand to the console, and the closing lines
(best run, next commands) of a sweep."""

from __future__ import annotations

import math
import re
import shlex
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.commands import module_command, script, whole, wrapped
from agent.ids import path_safe
from agent.params import BY_NAME
from agent.sweep.controller import HEARTBEAT_TIMEOUT_S, not_repeated_why, repeatable
from agent.sweep.engine import planned_runs
from agent.sweep.program import runs_our_trainer
from agent.sweep.store import (
    STATES,
    SWEEPS_DIR,
    Run,
    SweepStore,
    agents_heartbeat_settings,
    heartbeat_settings,
    store_paths,
)
from agent.sweep.target import open_store
from agent.sweep_space import duration_text, leaf_value, short_number, swept_leaves
from util.errors import CommandParser, UserError

ENDED = ("finished", "failed", "stopped")  # states that count as a run done
# What the console shows: a finished run whose loss went non-finite is a result (finished in
# the store, diverged=true in its summary), shown as diverged.
# A running run silent past the default heartbeat timeout is shown as silent: its agent has
# stopped (killed, or its machine gone) and the next agent to claim work repairs it.
SHOWN_STATES = (*STATES[:STATES.index("running") + 1], "silent",
                *STATES[STATES.index("running") + 1:STATES.index("finished") + 1], "diverged",
                *STATES[STATES.index("finished") + 1:])


def shown_state(run: Run, now: float | None = None,
                silent_after: float = HEARTBEAT_TIMEOUT_S) -> str:
    """The run's state as the console shows it: `silent` for a running run whose last
    heartbeat is over `silent_after` seconds old (silent_after_s)."""
    if run.state == "finished" and (run.summary or {}).get("diverged") is True:
        return "diverged"
    if run.state == "running" and (run.heartbeat or 0) < (time.time() if now is None else now) \
            - silent_after:
        return "silent"
    return run.state


def silent_after_s(settings: dict[str, float]) -> float:
    """After how many seconds without a heartbeat in the store a running run is silent, by
    its agent's heartbeat settings (AgentHeartbeats): its timeout (the default where none is
    known), and where a PBS job's merges bring its heartbeats, the time between two merges
    on top: a beat reaches the store only with the next merge."""
    return settings.get("timeout_s", HEARTBEAT_TIMEOUT_S) + settings.get("merged_every_s", 0.0)


def silent_text(settings: dict[str, float]) -> str:
    """How silent_after_s came about, for the console: '60 s', '120 s (its
    --heartbeat-timeout)', '150 s (its --heartbeat-timeout 120, and 30 s between a PBS
    job's merges)'."""
    after = f"{silent_after_s(settings):g} s"
    if "merged_every_s" in settings:
        return (f"{after} (its --heartbeat-timeout "
                f"{settings.get('timeout_s', HEARTBEAT_TIMEOUT_S):g}, and "
                f"{settings['merged_every_s']:g} s between a PBS job's merges)")
    return f"{after} (its --heartbeat-timeout)" if "timeout_s" in settings else after


@dataclass(frozen=True)
class AgentHeartbeats:
    """The heartbeat settings of a sweep's agents: each agent's own by its id (host:pid,
    a run's owner; store.agents_heartbeat_settings), and for an agent without a file of its
    own, the one file older agents shared (store.heartbeat_settings)."""

    by_agent: dict[str, dict[str, float]]
    shared: dict[str, float]

    @classmethod
    def read(cls, directory: str | Path) -> AgentHeartbeats:
        return cls(agents_heartbeat_settings(directory), heartbeat_settings(directory))

    def settings(self, owner: str | None) -> dict[str, float]:
        return self.by_agent.get(owner or "", self.shared)

    def silent_after(self, run: Run) -> float:
        """silent_after_s of the run's own agent."""
        return silent_after_s(self.settings(run.owner))


def agent_lines(runs: list[Run], heartbeats: AgentHeartbeats,
                now: float | None = None) -> list[str]:
    """One line per agent with a running run, in the order of its first run: how many of
    its runs run and how many are silent, which, and after how long a run of its is silent
    ('agent node7:4242: 1 running, 1 silent (ab12cd34, ef56gh78); silent after 150 s (its
    --heartbeat-timeout 120, and 30 s between a PBS job's merges)')."""
    now = time.time() if now is None else now
    agents: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.seq):
        if run.state == "running":
            agents.setdefault(run.owner or "?", []).append(run)
    lines = []
    for owner, theirs in agents.items():
        settings = heartbeats.settings(owner)
        silent = sum(shown_state(r, now, silent_after_s(settings)) == "silent" for r in theirs)
        counted = ", ".join([f"{len(theirs) - silent} running"] * (len(theirs) > silent)
                            + [f"{silent} silent"] * bool(silent))
        ids = ", ".join(r.id for r in theirs[:3]) + (", ..." if len(theirs) > 3 else "")
        lines.append(f"agent {owner}: {counted} ({ids}); silent after {silent_text(settings)}")
    return lines


def repeat_description(sweep_id: str, run_id: str) -> str:
    """The description of a repeat sweep (`python -m agent.repeat`) of run `run_id` of
    sweep `sweep_id`: how the report finds the repeats, and a repeat names its sweep."""
    return f"repeat of {sweep_id}: run {run_id}"


def repeats_sweep(sweep_config: dict) -> str | None:
    """The id of the sweep whose run this sweep repeats, else None."""
    found = re.fullmatch(repeat_description(r"(\S+)", r"\S+"),
                         str(sweep_config.get("description") or ""))
    return found.group(1) if found else None


def repeated_runs(runs: list[Run]) -> dict[str, str]:
    """{crashed run id: id of the run that repeats it}: a crashed run an agent re-queued is
    settled, its repeat stands for it (it does not count as a run still to end)."""
    return {r.requeued_from: r.id for r in runs if r.requeued_from}


def current_runs(runs: list[Run]) -> list[Run]:
    """The runs without the crashed ones a repeat stands for."""
    repeated = repeated_runs(runs)
    return [r for r in runs if r.id not in repeated]


def given_up_runs(runs: list[Run], ours: bool) -> list[Run]:
    """The crashed repeats no agent repeats again (controller.repeatable): the end of their
    run's attempts, which counts as ended (no agent would train anything for it)."""
    epochs = {r.id: r.epoch for r in runs}
    return [r for r in current_runs(runs) if r.state == "crashed" and r.requeued_from
            and not repeatable(r, epochs, ours)]


@dataclass(frozen=True)
class BestRun:
    run: Run
    metric: str  # the sweep's metric name
    value: float
    tied: tuple[str, ...] = ()  # other runs of exactly this value, after it in the sweep
    goal: str = "maximize"  # the metric's goal: maximize or minimize

    def tie_text(self, why: bool = True) -> str:
        """' (tied with 1 other run: ab12cd34; the first in the sweep's order)' (without
        `why`: ' (tied with ab12cd34)'), or ''."""
        if not self.tied:
            return ""
        shown = ", ".join(self.tied[:3]) + (", ..." if len(self.tied) > 3 else "")
        if not why:
            return f" (tied with {shown})"
        return (f" (tied with {len(self.tied)} other run{'s' * (len(self.tied) > 1)}: "
                f"{shown}; the first in the sweep's order)")


def metric_of(sweep_config: dict) -> tuple[str, str]:
    """(the sweep's metric name, its goal). A named metric without a goal is minimized, as
    W&B's engine fills it (creation notes a goal against our trainer's metric). A sweep
    with no metric optimises nothing on W&B; the status and the report then rank its runs
    by our trainer's val/acc, best high."""
    metric = sweep_config.get("metric") or {}
    if not metric.get("name"):
        return "val/acc", "maximize"
    return metric["name"], metric.get("goal") or "minimize"


def best_run(store: SweepStore) -> BestRun | None:
    """The best finished or stopped run by the sweep's metric and goal."""
    name, goal = metric_of(store.sweep().config)
    scored = []
    for run in store.runs():
        value = (run.summary or {}).get(name)
        if run.state in ("finished", "stopped") and isinstance(value, (int, float)) \
                and math.isfinite(value):
            scored.append((value, run))
    if not scored:
        return None
    value, run = (max if goal == "maximize" else min)(scored, key=lambda pair: pair[0])
    return BestRun(run, name, value, tuple(other.id for score, other in scored
                                           if score == value and other is not run), goal)


def target_text(sweep_config: dict, runs: list) -> str | None:
    """`metric.target val/acc >= 0.5 reached: no new runs` once a run has reached the sweep's
    metric.target (W&B's server then creates no new runs; engine.target_reached), else
    None. `runs`: the store's runs or the report's records."""
    from agent.sweep.engine import target_reached

    metric = sweep_config.get("metric") or {}
    if metric.get("target") is None or not target_reached(sweep_config, runs):
        return None
    sign = ">=" if metric.get("goal") == "maximize" else "<="
    return f"metric.target {metric.get('name')} {sign} {metric['target']} reached: no new runs"


def sweep_progress(runs: list[Run], sweep_config: dict, run_ids: list[str],
                   now: float | None = None) -> dict:
    """{"index": {run id: k}, "total": N or None, "done": runs ended, "eta_s": seconds or
    None}: the run is the k-th of the sweep to start (by its latest start, a resumed run's
    resumption; runs not started yet follow in creation order; a re-queued copy of a crashed
    run keeps its original's number); the ETA is the runs left at the pace of the runs ended
    so far (all agents and packs together) over the time runs trained (trained_seconds: a
    pause between is not counted), None before the first ends or when N is open.

    Not creation order: --pack auto keeps a random sweep's next draws as pending runs, kinds
    interleaved, and a pack of one kind then took the runs made 1st, 3rd and 5th, whose
    headers read 'run 5/6' with the sweep a third through."""
    now = time.time() if now is None else now
    numbers: dict[str, int] = {}
    count = 0
    for run in sorted((r for r in runs if not r.requeued_from),
                      key=lambda r: (r.started is None, r.started or 0.0, r.seq)):
        count += 1
        numbers[run.id] = count
    for run in sorted((r for r in runs if r.requeued_from), key=lambda r: r.seq):
        if run.requeued_from in numbers:
            numbers[run.id] = numbers[run.requeued_from]
        else:
            count += 1
            numbers[run.id] = count
    total = planned_runs(sweep_config)
    ended = [r for r in runs if r.state in ENDED]
    busy = trained_seconds(runs, now)
    eta = None
    if total is not None and ended and busy > 0:
        pace = len(ended) / busy  # runs ended per second of training so far
        eta = max(0, total - len(ended)) / pace
    return {"index": {run_id: numbers.get(run_id) for run_id in run_ids}, "total": total,
            "done": len(ended), "eta_s": eta}


def trained_seconds(runs: list[Run], now: float) -> float:
    """Seconds up to `now` in which some run of the sweep was training: the union of the
    runs' spans from their (latest) start to their end, a running run's to `now`, a crashed
    one's to its last heartbeat (the claim that marks it crashed may come a day later).
    A pause with no run training (a Ctrl-C, the sweep taken up again the next day) is no
    part of it: paced by the time since the first start, ten runs of 10 s and a day's
    pause read 'about 168 h left' for 70 more."""
    spans = []
    for run in runs:
        if run.started is None:
            continue
        end = (now if run.state == "running" else
               run.heartbeat if run.state == "crashed" else run.ended or run.heartbeat)
        spans.append((run.started, max(run.started, min(end or run.started, now))))
    busy, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:  # a span after a gap
            busy, reach = busy + end - start, end
        elif end > reach:  # overlaps the spans before it (another agent, a pack)
            busy, reach = busy + end - reach, end
    return busy


def render_status(store: SweepStore, console: Console | None = None,
                  limit: int | None = None) -> None:
    """The sweep's counts, best run and a table of its runs (the best `limit` first when a
    limit is given, else all in creation order), sized for an 80-column terminal; a line
    saying no run started yet where the sweep has none."""
    console = console or Console()
    sweep = store.sweep()
    runs = store.runs()
    heartbeats = AgentHeartbeats.read(store.directory)
    counts = Counter(shown_state(run, silent_after=heartbeats.silent_after(run)) for run in runs)
    total = planned_runs(sweep.config)
    repeated = repeated_runs(runs)
    # runs of the plan the engine has not proposed yet: 'not proposed', not 'not started',
    # which a pending run (proposed, waiting for an agent) is too
    unstarted = max(0, (total or 0) - (len(runs) - len(repeated)))
    again = sum(r.state == "crashed" and r.id in repeated for r in runs)
    note = {"crashed": " (repeated)" if again == counts["crashed"] else f" ({again} repeated)"}
    parts = [f"{counts[s]} {s}" + (note.get(s, "") if again else "") for s in SHOWN_STATES
             if counts[s]] + ([f"{unstarted} not proposed"] if unstarted else [])
    # a Text, not markup: names and values are the user's text ("[/x]" is shown, not parsed)
    head = Text.assemble((f"sweep {sweep.id}", "bold"), f" ({sweep.name}, "
                         f"{sweep.config.get('method')}"
                         + (f", {total} run{'' if total == 1 else 's'} planned" if total else "")
                         + "):")
    counted = ", ".join(parts)
    # the counts on a line of their own rather than broken inside one ("3 not / started")
    head.append(("\n  " if head.cell_len + 1 + len(counted) > console.width else " ")
                + counted)
    console.print(head, highlight=False)
    reached = target_text(sweep.config, runs)
    if reached:
        console.print(escape(reached), highlight=False)
    best = best_run(store)
    if best:
        # past metric.target the runs never made are none to come (W&B makes no new run)
        still = any(r.state in ("pending", "running", "preempted") for r in runs) or \
            (unstarted and not reached)
        ahead = ahead_of_best(runs, best)
        beyond = "" if ahead is None else (
            f" of the ended runs; at its last epoch: {ahead[0].id} {escape(best.metric)}="
            f"{ahead[1]:.4f} (epoch {ahead[0].epoch})")
        console.print(f"best{' so far' if still else ''}: {best.run.id} "
                      f"{escape(best.metric)}={best.value:.4f}{best.tie_text(why=False)}"
                      f"{beyond}", highlight=False)
    if not runs:  # a table of its header alone reads as a fault (a launch stopped early)
        console.print("no run started yet", highlight=False)
        return
    if limit is None:
        print_table(console, status_table(sweep.config, runs, heartbeats.silent_after))
    else:
        _print_best(console, sweep, runs, limit, heartbeats.silent_after)
    lines = agent_lines(runs, heartbeats)
    if counts["silent"]:
        lines.append("silent: no heartbeat for longer than its agent's time above: that agent "
                     "has stopped (or beats less often, --heartbeat); the next agent marks "
                     f"the run crashed and repeats it: {script('run_sweep.sh')} {sweep.id}")
    for line in lines:  # wrapped between words, the rest indented, not cut inside a word
        console.print(escape(wrapped(line, console.width, break_long_words=False)),
                      highlight=False, soft_wrap=True)


def _print_best(console: Console, sweep, runs: list[Run], limit: int,
                silent_after: Callable[[Run], float]) -> None:
    """The table of the best `limit` runs with a result (a value of the sweep's metric in
    their summary), the best first by its goal, then one line counting the runs left out:
    those without a result by state (pending and preempted ones a stopped launch leaves:
    rows of blanks, which read as results missing), and the command that lists them all."""
    metric, goal = metric_of(sweep.config)
    sign = -1 if goal == "maximize" else 1
    scored = [r for r in runs if _number((r.summary or {}).get(metric)) is not None]
    valued = {r.id for r in scored}
    shown = sorted(scored, key=lambda r: sign * _number(r.summary[metric]))[:limit]
    if shown:
        print_table(console, status_table(sweep.config, shown, silent_after))
    if len(runs) == len(shown):
        return
    states = Counter(shown_state(r, silent_after=silent_after(r)) for r in runs
                     if r.id not in valued)
    without = ", ".join(f"{states[s]} {s}" for s in SHOWN_STATES if states[s])
    every = "all of them: " + whole(f"{module_command('agent.status')} {sweep.id}")
    if not shown:
        so_far = _best_so_far(runs, metric, sign)
        text = f"no run has a result ({metric}) yet: {without}{so_far}; {every}"
    else:
        text = (f"(the best {len(shown)} of {len(runs)} runs"
                + (f"; without a result: {without}" if without else "") + f"; {every})")
    console.print(escape(wrapped(text, console.width, break_long_words=False)),
                  highlight=False, soft_wrap=True)


def ahead_of_best(runs: list[Run], best: BestRun) -> tuple[Run, float] | None:
    """(the run without a result whose last epoch beats `best`'s result, that epoch's value)
    of the best such run, else None. A pack that SIGTERM preempts after hyperband stopped
    some of its members leaves those with a result and the ones it kept training (the
    better ones) without: the best result alone would name a run its pack-mates outran.
    `runs`: the store's runs or the report's records (their state, summary and history)."""
    sign = -1 if best.goal == "maximize" else 1
    reached = [(_number(run.history[-1].get(best.metric)), run) for run in runs
               if run.history and run.state not in ENDED
               and _number((run.summary or {}).get(best.metric)) is None]
    reached = [(value, run) for value, run in reached
               if value is not None and sign * value < sign * best.value]
    if not reached:
        return None
    value, run = min(reached, key=lambda pair: sign * pair[0])
    return run, value


def _best_so_far(runs: list[Run], metric: str, sign: int) -> str:
    """`; the best so far at its last epoch: a1b2 val/acc=0.8731 (epoch 14)` among runs without
    a result (a preempted run's epochs: a result is the value a run ends with), or ""."""
    reached = [(_number(run.history[-1].get(metric)), run) for run in runs if run.history]
    reached = [(value, run) for value, run in reached if value is not None]
    if not reached:
        return ""
    value, run = min(reached, key=lambda pair: sign * pair[0])
    return f"; the best so far at its last epoch: {run.id} {metric}={value:.4f} (epoch {run.epoch})"


def _number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def command_epochs(sweep_config: dict) -> int | None:
    """The epochs the sweep's command gives our trainer as a fixed argument (`--epochs=1`
    beside ${args} or ${args_json_file}), which a run's own `epochs` overrides; None when it
    gives none."""
    from agent.params import coerce
    from agent.sweep.program import command_values

    epochs = command_values(sweep_config).get("epochs")
    try:
        return None if epochs is None else coerce(BY_NAME["epochs"], epochs)
    except UserError:
        return None


def _seconds_an_epoch(run: Run) -> float | None:
    """A running run's pace: our trainer's own `perf/epoch_s` (its training steps) over its
    last three epochs, else the time since it started over its epochs (another program).
    Not the latter for ours: a resumed run (preempted, or a crashed run's repeat) started
    lately but counts the epochs trained before too, and would read many times too fast."""
    times = [row["perf/epoch_s"] for row in run.history[-3:]
             if _number(row.get("perf/epoch_s")) is not None]
    if times:
        return sum(times) / len(times)
    if run.epoch and run.started:
        return (time.time() - run.started) / run.epoch
    return None


def status_table(sweep_config: dict, runs: list[Run],
                 silent_after: Callable[[Run], float] | None = None) -> Table:
    """One row per run: id, state, epoch, val/acc, test/acc, ETA (only while some run
    runs), then the swept parameters, numbers in short form (0.001 and 0.0001 stay apart).
    A sweep of another program: the rows its run has logged and the sweep's metric instead
    of our trainer's epochs and accuracies. `silent_after`: a run's silent_after_s
    (AgentHeartbeats.silent_after; None: the default timeout for every run)."""
    varying = [p.name for p in swept_leaves(sweep_config)]  # opt.lr of nested parameters
    after = silent_after or (lambda run: HEARTBEAT_TIMEOUT_S)
    ours = runs_our_trainer(sweep_config)
    metric = (sweep_config.get("metric") or {}).get("name") or "val/acc"
    running = ours and any(r.state == "running" for r in runs)
    # No padding: the box's column separator is the one space between columns.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0))
    # the sweep's own metric beside the accuracies when it is another one (val/loss)
    extra = [metric] if ours and metric not in ("val/acc", "test/acc") else []
    headers = (["run", "state", "ep", "val/acc", "test/acc"] + [escape(str(m)) for m in extra]
               + (["ETA"] if running else [])
               if ours else ["run", "state", "rows", escape(str(metric))])
    for header in headers:
        table.add_column(header, no_wrap=True, justify="left" if header in
                         ("run", "state", "ETA") else "right")
    for name in varying:
        table.add_column(escape(str(name)), no_wrap=True, justify="right")

    fixed_epochs = command_epochs(sweep_config) if ours else None

    def epochs_of(run: Run) -> int | None:  # another program's `epochs` may be anything
        epochs = run.config.get("epochs", fixed_epochs or BY_NAME["epochs"].default)
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    for run in runs:
        summary = run.summary or {}
        last = run.history[-1] if run.history else {}
        if not ours:
            value = summary.get(metric, last.get(metric))
            cells = [run.id, shown_state(run, silent_after=after(run)), str(run.epoch),
                     short_number(value) if isinstance(value, (int, float)) else ""]
            table.add_row(*cells, *(escape(short_number(leaf_value(run.config, name)))
                                    for name in varying))
            continue
        val = summary.get("val/acc", last.get("val/acc"))
        test = summary.get("test/acc")
        state = shown_state(run, silent_after=after(run))
        cells = [run.id, state, f"{run.epoch}/{epochs_of(run) or '?'}",
                 f"{val:.4f}" if isinstance(val, float) else "",
                 f"{test:.4f}" if isinstance(test, float) else ""]
        for name in extra:
            value = summary.get(name, last.get(name))
            cells.append(f"{value:.4f}" if _number(value) is not None else "")
        if running:
            eta = ""
            per_epoch = _seconds_an_epoch(run)
            if state == "running" and per_epoch is not None and epochs_of(run):
                eta = duration_text(per_epoch * (epochs_of(run) - run.epoch))
            cells.append(eta)
        table.add_row(*cells, *(escape(short_number(leaf_value(run.config, name)))
                                for name in varying))
    return table


def print_table(console: Console, table: Table) -> None:
    """`table` on `console`; into a file or a pipe (a log, a batch job's output, `| tee`) at
    its full width: rich's 80 columns there would cut the run ids and states to `4u1l63…`,
    and a file has no edge to fit."""
    if not console.is_terminal:
        from rich.measure import Measurement

        width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if width > console.width:  # print(width=) caps at the console's own width
            wide = Console(file=console.file, width=width, no_color=console.no_color,
                           force_terminal=False)
            wide.print(table)
            return
    console.print(table)


_ABSENT = object()  # a swept name the run's config lacks: left out of its setting


def closing_lines(store: SweepStore, options: str = "") -> list[str]:
    """What a finished `./run_sweep.sh` prints last: where the results are, the best run,
    and the commands to run next (repeat, report, TensorBoard), each under 80 columns;
    `options` (" --pack 4") repeat the launch's agent options in the command to go on."""
    sweep = store.sweep()
    best = best_run(store)
    where = Path(store.path)
    if where.is_absolute() and where.is_relative_to(Path.cwd()):
        where = where.relative_to(Path.cwd())
    runs = store.runs()
    ours = runs_our_trainer(sweep.config)  # another program writes no logs of ours
    sinks = {s for run in runs for s in run.config.get("sinks", BY_NAME["sinks"].default)}
    lines = [f"Results: {where}"]
    logs = log_folder(sweep, runs)
    if ours and "tensorboard" in sinks:
        lines.append(f"  TensorBoard logs: {logs}/")
    if ours and "wandb" in sinks:
        # through the venv, as the other hints: `wandb` is on no PATH but the venv's
        lines += ["  W&B offline runs: wandb/, uploaded to W&B by",
                  f"    {script('util/with_venv.sh')} wandb sync wandb/offline-run-*"]
    if best is not None:
        swept = [p.name for p in swept_leaves(sweep.config)]
        values = {n: leaf_value(best.run.config, n, _ABSENT) for n in swept}
        setting = " ".join(f"{n}={short_number(v)}" for n, v in values.items()
                           if v is not _ABSENT)
        line = f"Best run: {best.run.id} {best.metric}={best.value:.4f}"
        if setting:
            line += f" ({setting})" if len(line) + len(setting) + 3 <= 80 else f"\n  {setting}"
        lines += line.split("\n")
        tie = " " + best.tie_text()
        if len(tie) > 80:  # three tied ids or more: the rule on a line of its own
            cut = tie.index("; ") + 1
            lines += [tie[:cut], "   " + tie[cut:].lstrip()]
        elif best.tied:  # (without a tie, tie_text is '')
            lines.append(tie)
        ahead = ahead_of_best(runs, best)
        if ahead is not None:  # a stopped launch: a run still training is ahead of it
            lines += ["  (of the ended runs; ahead of it at its last epoch:",
                      f"  {ahead[0].id} {best.metric}={ahead[1]:.4f}, epoch {ahead[0].epoch}, "
                      f"{ahead[0].state})"]
    current = current_runs(runs)  # a repeat stands for its crashed run
    given_up = given_up_runs(runs, ours)
    ended = sum(r.state in ENDED for r in current) + len(given_up)
    planned = planned_runs(sweep.config)
    reached = target_text(sweep.config, runs)
    reasons: dict[str, list[Run]] = {}
    for run in given_up:  # each reason once, with its runs
        reasons.setdefault(not_repeated_why(run, ours), []).append(run)
    lines += failed_lines(current)
    for why, these in reasons.items():
        shown = ", ".join(f"{r.id} (epoch {r.epoch})" for r in these[:4])
        lines += [f"Crashed again, not repeated: {shown}{', ...' * (len(these) > 4)}",
                  f"  ({why})"]
    unfinished = not reached and (ended < len(current) or (planned and ended < planned))
    if reached:
        lines.append(reached)
    elif unfinished:  # stopped (Ctrl-C, SIGTERM...)
        lines += [f"Not finished ({ended} of {planned or len(current)} runs ended): go on "
                  "where it stopped with", f"  {script('run_sweep.sh')} {sweep.id}{options}"]
    if best is None or not ours:  # nothing to repeat or report (yet)
        return lines
    board = [f"  {script('run_tensorboard.sh')} --logdir {shlex.quote(logs)}"] \
        if "tensorboard" in sinks else []  # quoted: a log_dir may hold spaces
    return lines + next_lines(sweep, options, board, bool(unfinished))


def next_lines(sweep, options: str, board: list[str], unfinished: bool) -> list[str]:
    """The closing lines' next steps: the report (a repeat sweep's: that of the sweep it
    repeats), TensorBoard (`board`: its command line, or none) and, once the sweep has
    ended, the seed repeats of its best runs. Not while runs are left (`unfinished`): the
    best of a sweep stopped midway is the best of the runs that ended so far, and its
    repeats would be of a setting a run still to end may beat; going on comes first."""
    prefix = f"{script('util/with_venv.sh')} python -m"
    parent = repeats_sweep(sweep.config)
    if parent:  # a repeat sweep: its runs are part of the repeated sweep's report
        return ["Next: the report of the sweep it repeats"
                f"{', and TensorBoard' * bool(board)}:",
                f"  {prefix} agent.report {parent}", *board]
    if unfinished:
        return ["Once the sweep has ended: repeat its best runs over 5 seeds (agent.repeat)",
                f"Meanwhile: the report so far{', and TensorBoard' * bool(board)}:",
                f"  {prefix} agent.report {sweep.id}", *board]
    return [f"Next: repeat the best runs over 5 seeds, write the report"
            f"{', open TensorBoard' * bool(board)}:",
            f"  {prefix} agent.repeat {sweep.id} --run{pack_option(options)}",
            f"  {prefix} agent.report {sweep.id}", *board]


MAX_REASONS = 3  # failure reasons the closing lines quote; the report has every one


def failed_lines(runs: list[Run]) -> list[str]:
    """`Failed: 2 runs` and under it each reason once with its runs (`ab12cd34:
    weight_decay=-1e-05 is not allowed: ...`), wrapped within 80 columns: a run the trial
    refused at its start (a value its distribution drew outside the range), or whose trial
    raised. At most MAX_REASONS reasons; the report lists every failed run."""
    failed = [r for r in runs if r.state == "failed"]
    if not failed:
        return []
    reasons: dict[str, list[str]] = {}
    for run in failed:
        reasons.setdefault(" ".join((run.error or "no reason recorded").split()),
                           []).append(run.id)
    lines = [f"Failed: {len(failed)} run{'s' * (len(failed) > 1)}"]
    for why, ids in list(reasons.items())[:MAX_REASONS]:
        shown = ", ".join(ids[:4]) + (", ..." if len(ids) > 4 else "")
        lines += textwrap.wrap(f"{shown}: {why}", 80, initial_indent="  ",
                               subsequent_indent="    ", break_on_hyphens=False)
    if len(reasons) > MAX_REASONS:
        lines.append(f"  ({len(reasons) - MAX_REASONS} other reason(s): the report lists "
                     "every failed run)")
    return lines


def pack_option(options: str) -> str:
    """The --pack of a launch's agent options (" --pack 4 --agents 2" -> " --pack 4"), for the
    hint to repeat the best runs: a sweep trained packed has its repeats trained packed."""
    found = re.search(r" --pack \S+", options)
    return found.group(0) if found else ""


def log_folder(sweep, runs: list[Run]) -> str:
    """Where the sweep's runs write TensorBoard logs (log_dir/<group>, run.log_dir's parent):
    a repeat sweep's log_dir is the repeated sweep's <folder>-repeats."""
    folders = {str(Path(run.config.get("log_dir", BY_NAME["log_dir"].default))
                   / path_safe(run.config.get("group") or sweep.group)) for run in runs}
    if len(folders) == 1:
        return folders.pop()
    return str(Path(BY_NAME["log_dir"].default) / path_safe(sweep.group))


def render_sweeps(directory: Path, console: Console | None = None) -> None:
    """The local sweeps under `directory` (data/sweeps), newest first: id, name, method,
    runs ended of planned (", target reached" once a run reached metric.target and every
    run has ended), created. UserError when there is none."""
    stores = []
    for path in store_paths(directory):
        try:
            stores.append(SweepStore(path, read_only=True))
        except UserError:  # not readable as a sweep now (another schema, damaged): skip
            continue
    if not stores:
        raise UserError(f"no local sweeps in {directory}/: give a sweep id or directory "
                        "(a sweep YAML starts one: ./run_sweep.sh sweeps/x.yaml)")
    console = console or Console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for header in ("sweep", "name", "method", "ended", "created"):
        table.add_column(header, no_wrap=header != "name", overflow="fold")
    for store in sorted(stores, key=lambda st: -st.sweep().created):
        sweep, runs = store.sweep(), store.runs()
        current = current_runs(runs)
        planned = planned_runs(sweep.config) or len(current)
        ended = sum(r.state in ENDED for r in current)
        # a sweep that a run's metric.target ended makes no more runs: "3/6" alone reads as
        # a sweep half done
        reached = ended == len(current) and target_text(sweep.config, runs)
        table.add_row(sweep.id, escape(sweep.name), escape(str(sweep.config.get("method"))),
                      f"{ended}/{planned}" + (", target reached" if reached else ""),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(sweep.created)))
    console.print(table)
    console.print(f"one sweep's runs: {module_command('agent.status')} "
                  "<sweep>", highlight=False, soft_wrap=True)  # a command: one line to paste


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m agent.status",
                           description=" ".join(__doc__.split(";")[0].split()) + ".")
    parser.add_argument("sweep", nargs="?", default=None,
                        help="local sweep id or directory (none: list the local sweeps)")
    sweep = parser.parse_args(argv).sweep
    if sweep is None:
        render_sweeps(SWEEPS_DIR)
    else:
        render_status(open_store(sweep, read_only=True))
    return 0
