"""Agents on a W&B sweep, at the edge where W&B's values become our trainer's config: a run's
parameters as W&B's agents hand them (the parameter file `wandb agent` writes for a process it
starts, or a heartbeat's `run` command), expanded with the sweep's command as `wandb agent`
would build its command line and read by our trainer's parser. `run_wandb_sweep` starts the
agent that trains them in this process (agent/sweep/wandb_pack.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import yaml

from agent.params import RunConfig, validate
from agent.sweep import program
from util.errors import INTERRUPTED_EXIT_CODE, UserError


def read_param_file(path: str | os.PathLike) -> dict:
    """{name: value} from a run's parameter file (WANDB_SWEEP_PARAM_PATH), which W&B's agents
    write with wandb's config_util as `wandb_version: 1` and {name: {value: v}}."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"W&B parameter file {str(path)!r}: cannot be read ({error})") from None
    loaded.pop("wandb_version", None)
    if not all(isinstance(spec, dict) and "value" in spec for spec in loaded.values()):
        raise UserError(f"W&B parameter file {str(path)!r}: expected name: {{value: ...}}")
    return {name: spec["value"] for name, spec in loaded.items()}


def agent_run_values(environ: dict | None = None) -> dict:
    """The run's parameters when W&B's agent started this process (WANDB_SWEEP_ID, WANDB_RUN_ID
    and the parameter file set, as wandb.config will hold them), else {}."""
    environ = os.environ if environ is None else environ
    if not all(environ.get(name) for name in program.RUN_VARIABLES):
        return {}
    return read_param_file(environ["WANDB_SWEEP_PARAM_PATH"])


def with_wandb_sink(config: RunConfig) -> RunConfig:
    """A W&B sweep reads its metric from the run's W&B history: the wandb sink is always on."""
    if "wandb" in config.sinks:
        return config
    return validate({**config, "sinks": [*config.sinks, "wandb"]})


def run_config(sweep_config: dict | None, values: dict, *, sweep_id: str, run_id: str,
               wandb_dir: str) -> RunConfig:
    """The plain config of a W&B sweep's run: the sweep's command (when it has one) expanded
    with the run's parameters by wandb's builder, read by our trainer's parser, completed by
    the parameters themselves; run id and group from W&B. Raises UserError."""
    run = program.build_run(sweep_config or {}, values, sweep_id=sweep_id, run_id=run_id,
                            wandb_dir=wandb_dir)
    if run.trainer_args is None:
        raise UserError(f"the sweep's command runs {program.describe(run)}, not our trainer: "
                        "use `wandb agent` for it")
    raw = program.trial_values(run)
    raw["run_id"] = run.run_id
    raw["group"] = raw.get("group") or sweep_id
    return with_wandb_sink(validate(raw))


def fetch_sweep_config(sweep_path: str) -> dict:
    """The sweep's config from W&B's server (needs network and credentials)."""
    import wandb

    config = wandb.Api().sweep(sweep_path).config
    return yaml.safe_load(config) if isinstance(config, str) else dict(config or {})


def run_wandb_cli_agent(sweep_id: str, entity: str | None, project: str | None,
                        count: int | None) -> None:
    """W&B's own command-line agent (what `wandb agent` runs) for a sweep of another
    program, its runs one subprocess each. SIGTERM, SIGHUP and Ctrl-C reach it as Ctrl-C: it passes
    the signal on to the run's process (which runs in a process group of its own, out of
    the terminal's reach), waits for it to end, kills it 30 s later (program.KILL_DELAY_S,
    as W&B's agent stops a run), takes no other run and returns. Without this, the
    agent's own handlers (which the trainer's loop reads) left SIGTERM unheard by W&B's
    loop: the agent took run after run until SIGKILL. The signal still reaches the handler
    it replaces (the agent's, which notes which signal stopped it: a Ctrl-C ends the
    agent's process as interrupted, a SIGTERM with 0). W&B's agent hears the first only:
    it waits for the run to end, killing it 30 s later. A Ctrl-C after one ends the run's
    process and the agent at once (end_with_runs), as a Ctrl-C after a stop ends our
    trainer's agent (util.errors.stop_at_next_step); W&B's agent took a third to kill it."""
    import signal

    import wandb

    stops: list[int] = []

    def as_ctrl_c(signum, frame):
        if stops and signum == signal.SIGINT:
            end_with_runs()
        first = not stops
        stops.append(signum)
        if callable(previous.get(signum)):
            previous[signum](signum, frame)
        # The agent's handler set Ctrl-C's own action (the process ends at once); here the
        # next one ends W&B's runs first. Set last, so that it holds also where a handler
        # ran within this one and ended it (the launcher's SIGTERM on the heels of a Ctrl-C)
        signal.signal(signal.SIGINT, as_ctrl_c)
        if first:  # once: a second raised within W&B's handling of the first escaped its
            raise KeyboardInterrupt  # loop, which then never ended its runs

    previous = {}
    # SIGHUP too (the terminal closed, not under nohup): the agent's own stop signals, which
    # W&B's loop would not hear, and its handler would leave Ctrl-C's own action in place, so
    # that a later Ctrl-C killed the agent and left W&B's runs training in their groups
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[number] = signal.signal(number, as_ctrl_c)
    # W&B's agent starts each run with this process's environment: the caller's, as `wandb
    # agent` from the caller's shell has it (its python, not this project's venv)
    caller = program.caller_environment(os.environ)
    os.environ.clear()
    os.environ.update(caller)
    try:
        wandb.agent(sweep_id, entity=entity, project=project, count=count,
                    forward_signals=True, term_timeout=int(program.KILL_DELAY_S))
    except KeyboardInterrupt:  # before W&B's agent had its loop (no run started)
        pass
    finally:  # W&B's runs have ended: after a stop, a Ctrl-C ends the agent at once
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, previous[number])
        signal.signal(signal.SIGINT, signal.SIG_DFL if stops else previous[signal.SIGINT])


def end_with_runs() -> NoReturn:
    """End this process at once, killed by SIGINT, with the processes W&B's agent runs:
    each runs in a process group of its own (out of the terminal's reach), which is
    killed. They are this process's children that lead a group of their own in its session
    (wandb's service process leads a session of its own, and ends with this process by
    itself). Where /proc does not list processes (not Linux), the runs are left to end of
    the Ctrl-C W&B's agent passed on to them."""
    import signal

    for number in (signal.SIGTERM, signal.SIGHUP):  # no handler raising within this one
        signal.signal(number, signal.SIG_IGN)
    me = os.getpid()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, (parent, group, session) = int(entry.name), map(int, fields[1:4])
        if parent == me and group == pid and session != pid:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:  # it ended meanwhile
                pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(me, signal.SIGINT)
    os._exit(INTERRUPTED_EXIT_CODE)  # not reached: SIGINT's own action ends the process


def exit_past_dead_service(code: int) -> NoReturn:
    """End this agent's process now with `code`, its wandb service process (wandb-core) gone.
    wandb's exit hook and its finalizer thread would each fail on the dead service again at
    exit, with a traceback, and the thread's, written while the interpreter shut down, now
    and then aborted the process (SIGABRT). What the runs keep (checkpoints, summaries,
    TensorBoard) is on disk by then; only wandb's teardown is skipped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_wandb_sweep(sweep_path: str, count: int | None, project: str | None,
                    interrupted: Callable[[], bool], sweep_config: dict | None = None,
                    pack: int | None = 1) -> int:
    """Agents on a W&B sweep: our trainer in this process, `pack` runs a trial (None: --pack
    auto; 1: each run alone), as agent/sweep/wandb_pack.py's agent, which registers one of
    W&B's agents per member and beats for each; or, when the sweep's command runs another
    program, W&B's own command-line agent (what `wandb agent` runs). Returns 1 when every run
    failed, wandb's service process died or W&B could not start a run, else 0.

    Not `wandb.agent(function=...)` for our trainer: W&B's Python agent (wandb 0.31) leaves a
    SIGTERM between runs unanswered (its loop waits for the server's next command; a
    cluster's walltime signal went unheard until SIGKILL), takes the next run after one that
    SIGTERM preempted, ends a run the sweep stops by raising inside its thread, and tears
    wandb down before every run, which printed a traceback per run from wandb's finalizer
    thread (AlreadyJoinedError). The agent here answers a signal at once, ends a stopped run
    at its epoch's end and keeps one wandb session."""
    import wandb

    parts = sweep_path.split("/")
    entity = parts[-3] if len(parts) == 3 else None
    project = parts[-2] if len(parts) >= 2 else project
    if sweep_config is None:
        sweep_config = fetch_sweep_config(sweep_path)
    if not program.runs_our_trainer(sweep_config):
        if pack != 1:
            print(f"agent: --pack {pack or 'auto'} does not apply: the sweep's command runs "
                  "another program (W&B's agent runs it, one process a run)", file=sys.stderr)
        run_wandb_cli_agent(parts[-1], entity, project, count)
        return 0
    from agent.sweep.wandb_pack import PackedWandbAgent

    agent = PackedWandbAgent(wandb.Api(), parts[-1], entity, project, sweep_config, pack,
                             count, interrupted)
    agent.run()
    if agent.service_gone is not None:
        exit_past_dead_service(1)
    if agent.not_started is not None:
        return 1
    if agent.outcomes and all(outcome == "failed" for outcome in agent.outcomes):
        print(f"agent: all {len(agent.outcomes)} runs failed", file=sys.stderr)
        return 1
    return 0
