"""A sweep's runs as the report and the repeat command see them, whatever their source: a
local sweep store or a W&B sweep read through `wandb.Api`. Also finds the repeat sweeps
(`python -m agent.repeat`) made from a sweep's best runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.commands import module_command
from agent.ids import path_safe
from agent.params import RunConfig, validate
from agent.sweep.program import command_values, runs_our_trainer
from agent.sweep.status import (
    AgentHeartbeats,
    metric_of,
    planned_runs,
    repeat_description,
    repeated_runs,
    shown_state,
    target_text,
)
from agent.sweep.store import SweepStore, store_paths, sweep_group
from agent.sweep.target import resolve_target
from agent.sweep_space import choices
from util.errors import UserError

# A run in one of these states may still change (W&B's own are running and pending too).
OPEN_STATES = ("pending", "running", "preempted")
# A run that ended in one of these states ended before its time for no reason of the study's
# (an exception, its agent gone, W&B's killed): its last value is partial (scored_runs)
BROKEN_STATES = ("failed", "crashed", "killed")


@dataclass
class RunRecord:
    id: str
    state: str
    config: dict  # what the sweep chose for this run
    params: RunConfig  # every run parameter (the sweep's choices over the defaults)
    summary: dict
    history: list[dict]  # one row per epoch
    run_dir: Path | None  # checkpoint.pt and confusion.json, when the run was local
    error: str | None = None  # why it failed, when it did
    started: float | None = None  # Unix seconds
    ended: float | None = None
    host: str | None = None  # where it ran (a local agent's host name)
    log_dir: Path | None = None  # its TensorBoard event files, when the run was local
    steps: list[dict] | None = None  # W&B's per-step rows (train/step_loss...), when from W&B
    pack: str | None = None  # the packed trial it first trained in (the store's pack id)
    # when the sweep made it (a local run's first claim; a repeat's, that of the crashed run
    # it repeats, whose epochs it goes on from)
    created: float | None = None
    # a local run still `running` in the store whose agent has not beaten for longer than
    # its timeout (agent.status shows it `silent`): these seconds; None for any other run
    silent_after: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds it trained: the trial's own wall_s (W&B's _runtime), which a resumed run
        carries over its earlier stretches; from its latest start to its end without one."""
        wall = self.summary.get("wall_s", self.summary.get("_runtime"))
        if isinstance(wall, (int, float)) and not isinstance(wall, bool) and wall >= 0:
            return float(wall)
        if self.started and self.ended:
            return self.ended - self.started
        return None

    def metric(self, name: str) -> float | None:
        value = self.summary.get(name)
        if value is None and self.history:
            value = self.history[-1].get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None


@dataclass
class Study:
    name: str
    sweep_id: str
    source: str  # "local" or "wandb"
    sweep_config: dict
    runs: list[RunRecord] = field(default_factory=list)
    wandb_path: str | None = None  # entity/project/id of a W&B sweep
    # (crashed run, the run that repeats it): a local agent re-queued the crashed one; its
    # repeat stands for it, so the crashed run's partial history is not among `runs`
    repeated: list[tuple[str, str]] = field(default_factory=list)
    command: dict = field(default_factory=dict)  # what the command's fixed arguments give

    @property
    def log_group(self) -> str:
        """The folder of its runs' TensorBoard logs under log_dir (a local sweep's group)."""
        return path_safe(sweep_group(self.name, self.sweep_id))

    @property
    def metric(self) -> str:
        return metric_of(self.sweep_config)[0]

    @property
    def goal(self) -> str:
        """maximize or minimize (status.metric_of: W&B's default is minimize)."""
        return metric_of(self.sweep_config)[1]

    def repeat_command(self) -> str:
        """The command that repeats the sweep's best settings on fresh seeds: `python -m
        agent.repeat <id> --run`, with `--pack K` where its runs trained in packs of up to K
        (a sweep trained packed has its repeats trained packed, as the launcher's closing
        lines say)."""
        sizes: dict[str, int] = {}
        for run in self.runs:
            if run.pack:
                sizes[run.pack] = sizes.get(run.pack, 0) + 1
        largest = max(sizes.values(), default=1)
        pack = f" --pack {largest}" if largest > 1 else ""
        return f"{module_command('agent.repeat')} {self.sweep_id} --run{pack}"

    def runs_left(self) -> bool:
        """Whether the sweep has runs to come that may beat its best: one pending, running
        or preempted, or runs of its plan (a grid's points, run_cap) not proposed yet, as
        after `--count` (no row: they counted as none left), unless metric.target was
        reached (no new run comes, as on W&B)."""
        if any(r.state in OPEN_STATES for r in self.runs):
            return True
        planned = planned_runs(self.sweep_config)
        return bool(planned and planned > len(self.runs)) and \
            not target_text(self.sweep_config, self.runs)

    def ended_runs(self) -> list[RunRecord]:
        """Runs that will not change any more (not pending, running or preempted)."""
        return [r for r in self.runs if r.state not in OPEN_STATES]

    def scored_runs(self) -> list[RunRecord]:
        """Ended runs with a value of the sweep's metric, best first. A run that failed or
        crashed (W&B: killed) is none of them: its value is from the epoch it got to, and
        nothing stopped it for a reason of the study's (the report lists it with its
        reason); a run early termination stopped is one, marked (stats.stopped_early)."""
        scored = [r for r in self.ended_runs() if r.state not in BROKEN_STATES
                  and r.metric(self.metric) is not None]
        return sorted(scored, key=lambda r: r.metric(self.metric),
                      reverse=self.goal == "maximize")


def check_our_trainer(study: Study, command: str) -> None:
    """UserError (one line) for a sweep whose command runs another program: the report and
    the repeats read and set our trainer's parameters, metrics and files, which its runs do
    not have (its results are in the store and its programs' W&B runs)."""
    if not runs_our_trainer(study.sweep_config):
        status = (f"{module_command('agent.status')} {study.sweep_id}, and "
                  if study.source == "local" else "")  # agent.status reads local sweeps only
        raise UserError(f"sweep={study.sweep_id!r}: its command runs another program, not "
                        f"our trainer: `{command}` reads our trainer's runs (see its runs with "
                        f"{status}the program's own W&B runs)")


def _params(config: dict) -> RunConfig:
    """Every run parameter, list values as Choices (keys of the report's groups). A config
    the trial refused (a run that drew weight_decay=-1e-05 failed at its start) keeps every
    value that passes, so its epochs are its own, not the default's."""
    known = {k: v for k, v in config.items() if k != "sweep"}
    try:
        return RunConfig(choices(validate(known)))
    except UserError:
        kept: dict = {}
        for key, value in known.items():  # another tool's sweep: what we can read of it
            try:
                validate({**kept, key: value})
            except UserError:
                continue
            kept[key] = value
        return RunConfig(choices(validate(kept)))


def local_study(store: SweepStore) -> Study:
    sweep = store.sweep()
    stored = store.runs()
    repeated = repeated_runs(stored)
    fixed = command_values(sweep.config)  # what the command's own arguments fix
    by_id = {run.id: run for run in stored}

    def first_claim(run) -> float | None:  # a repeat's: that of the crashed run it repeats
        seen = {run.id}
        while run.requeued_from in by_id and run.requeued_from not in seen:
            run = by_id[run.requeued_from]
            seen.add(run.id)
        return run.created

    heartbeats = AgentHeartbeats.read(store.directory)
    runs = []
    for run in stored:
        if run.id in repeated:
            continue
        params = _params({**fixed, **run.config})
        # The agent names a run's group after its sweep (Sweep.group).
        log_dir = Path(params.log_dir) / path_safe(params.group or sweep.group) / path_safe(
            params.run_name or run.id)
        if not params.group and not log_dir.exists():  # a sweep run before groups had ids
            log_dir = log_dir.parent.parent / path_safe(sweep.name) / log_dir.name
        runs.append(RunRecord(run.id, run.state, choices(run.config), params, run.summary or {},
                              run.history, Path(params.run_dir) / run.id, run.error,
                              run.started, run.ended, (run.owner or "").rpartition(":")[0]
                              or None, log_dir, pack=run.pack, created=first_claim(run)))
        after = heartbeats.silent_after(run)
        if shown_state(run, silent_after=after) == "silent":  # its agent killed: no one runs it
            runs[-1].silent_after = after
    return Study(sweep.name, sweep.id, "local", sweep.config, runs,
                 repeated=sorted(repeated.items()), command=fixed)


def wandb_state(state: str, summary: dict) -> str:
    """A W&B run's state as a local sweep's store would hold it. W&B knows no stopped run
    (https://docs.wandb.ai/models/runs/run-states): a run that hyperband stopped ends with
    exit 0, `finished`, and our trainer's summary says `state: stopped`; its values are
    then partial, as a local sweep's stopped run's are. W&B's `preempting` is a run that
    will resume (local: `preempted`). Other states are W&B's own."""
    if state == "finished" and summary.get("state") == "stopped":
        return "stopped"
    return "preempted" if state == "preempting" else state


def wandb_study(path: str) -> Study:
    """A W&B sweep `entity/project/sweep_id`, read through the public API."""
    import wandb

    try:
        sweep = wandb.Api(timeout=20).sweep(path)
        runs = []
        for run in sweep.runs:
            config = {k: v for k, v in run.config.items() if not k.startswith("_")}
            # Epoch rows carry train/acc; the per-step rows carry train/step_loss instead.
            rows = list(run.scan_history())
            history = [row for row in rows if "train/acc" in row]
            steps = [row for row in rows if "train/step_loss" in row]
            summary = dict(run.summary._json_dict)
            runs.append(RunRecord(run.id, wandb_state(run.state, summary), choices(config),
                                  _params(config), summary, history, None, steps=steps))
        config = dict(sweep.config)
        name = config.get("name") or sweep.id
    except Exception as error:  # no network, no key, unknown sweep: one line either way
        raise UserError(f"sweep={path!r}: could not read it from W&B "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None
    return Study(name, sweep.id, "wandb", config, runs, path, command=command_values(config))


def load_study(target: str) -> Study:
    """A local sweep (directory or id) or a W&B sweep path entity/project/sweep_id."""
    resolved = resolve_target(target, allow=("local", "wandb"))
    if resolved.kind == "local":
        return local_study(SweepStore(resolved.store_path, read_only=True))
    return wandb_study(resolved.wandb_path)


def repeats_of(study: Study) -> dict[str, Study]:
    """The repeat sweeps of `study`'s runs, by the id of the run they repeat: local sweeps
    for a local study, the W&B project's sweeps for a W&B study. A run with several
    (`agent.repeat --seeds` raised after a first one) gets them as one study: their runs
    together, their ids in `sweep_id`, comma-separated."""
    found = local_repeat_sweeps(study) if study.source == "local" else \
        wandb_repeat_sweeps(study)
    return {run_id: replace(studies[0], runs=[r for s in studies for r in s.runs],
                            sweep_id=", ".join(s.sweep_id for s in studies))
            for run_id, studies in found.items()}


def wandb_repeat_sweeps(study: Study) -> dict[str, list[Study]]:
    """Every repeat sweep of the W&B study `study`'s runs in its project, by the id of the
    run it repeats, oldest first."""
    import wandb

    entity, project, _ = study.wandb_path.split("/")
    prefix = repeat_description(study.sweep_id, "")
    found: dict[str, list[tuple[str, Study]]] = {}
    try:
        for sweep in wandb.Api(timeout=20).project(project, entity=entity).sweeps():
            description = (sweep.config or {}).get("description", "")
            if description.startswith(prefix):
                found.setdefault(description[len(prefix):], []).append((
                    str(getattr(sweep, "created_at", "") or ""),
                    wandb_study(f"{entity}/{project}/{sweep.id}")))
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"sweep={study.wandb_path!r}: could not list the project's sweeps on W&B "
                        f"({type(error).__name__})") from None
    return {run_id: [s for _, s in sorted(studies, key=lambda pair: pair[0])]
            for run_id, studies in found.items()}


def local_repeat_sweeps(study: Study) -> dict[str, list[Study]]:
    """Every local repeat sweep of `study`'s runs, by the id of the run it repeats, oldest
    first."""
    found: dict[str, list[tuple[float, Study]]] = {}
    prefix = repeat_description(study.sweep_id, "")
    for path in store_paths():
        try:
            store = SweepStore(path, read_only=True)
        except UserError:
            # A store of another schema version was made by other code, so it is no
            # repeat of this study's runs (repeats are made by this code from a readable
            # study); it must not stop the report of this one.
            continue
        sweep = store.sweep()
        description = sweep.config.get("description", "")
        if description.startswith(prefix):
            found.setdefault(description[len(prefix):], []).append(
                (sweep.created or 0.0, local_study(store)))
    return {run_id: [s for _, s in sorted(studies, key=lambda pair: pair[0])]
            for run_id, studies in found.items()}
