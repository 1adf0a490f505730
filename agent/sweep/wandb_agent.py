"""Agents on a W&B sweep: the function we give `wandb.agent` (W&B's Python agent,
wandb/agents/pyagent.py, calls it once per run with the run's variables and parameter file in
the environment). It reads the run's W&B config at this edge, builds our trainer's plain config
as `wandb agent` would build its command line, starts the W&B run and calls train().
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from agent.params import RunConfig, validate
from agent.sweep import program
from util.errors import UserError


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


def trial_config(sweep_config: dict | None, environ: dict | None = None) -> RunConfig:
    """The plain config of the run W&B's agent started in this process (run_config of the
    run its variables name)."""
    environ = os.environ if environ is None else environ
    return run_config(sweep_config, agent_run_values(environ),
                      sweep_id=environ["WANDB_SWEEP_ID"], run_id=environ["WANDB_RUN_ID"],
                      wandb_dir=environ.get("WANDB_DIR") or os.getcwd())


def trial_function(sweep_config: dict | None, outcomes: list[str],
                   interrupted: Callable[[], bool]) -> Callable[[], None]:
    """What we give wandb.agent(function=...): one call trains the run W&B proposed.

    The W&B run is started here, with the config's group and name, so the wandb sink adopts
    it rather than starting its own. Each outcome (finished, preempted, failed) is appended to
    `outcomes`; exceptions go on to W&B's agent, which marks the run failed.
    """
    def one_run() -> None:
        import wandb

        from agent.trial.loop import Preempted, TrialHooks, train
        from agent.trial.sinks.wandb_sink import chosen_mode

        try:
            config = trial_config(sweep_config)
            wandb.init(group=config.group, name=config.run_name or config.run_id,
                       config=dict(config), mode=chosen_mode(),
                       settings=wandb.Settings(silent=True, console="off"),
                       dir=os.environ.get("WANDB_DIR") or os.getcwd())
            train(config, TrialHooks(interrupted=interrupted))
        except Preempted:
            outcomes.append("preempted")  # the sink marked it preempting: W&B re-queues it
            return
        except BaseException:
            outcomes.append("failed")
            raise
        outcomes.append("finished")

    return one_run


def fetch_sweep_config(sweep_path: str) -> dict:
    """The sweep's config from W&B's server (needs network and credentials)."""
    import wandb

    config = wandb.Api().sweep(sweep_path).config
    return yaml.safe_load(config) if isinstance(config, str) else dict(config or {})


def run_wandb_sweep(sweep_path: str, count: int | None, project: str | None,
                    interrupted: Callable[[], bool], sweep_config: dict | None = None,
                    pack: int | None = 1) -> int:
    """Agents on a W&B sweep: our trainer in-process through wandb.agent(function=...), or,
    when the sweep's command runs another program, W&B's own command-line agent (what
    `wandb agent` runs); with `pack` > 1 (None: --pack auto), that many of W&B's agents in
    this process, their runs trained as packs (agent/sweep/wandb_pack.py). Returns 1 when
    every run failed, else 0."""
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
        wandb.agent(parts[-1], entity=entity, project=project, count=count)
        return 0
    outcomes: list[str] = []
    if pack != 1:
        from agent.sweep.wandb_pack import PackedWandbAgent

        agent = PackedWandbAgent(wandb.Api(), parts[-1], entity, project, sweep_config, pack,
                                 count, interrupted)
        agent.run()
        outcomes = agent.outcomes
    else:
        wandb.agent(parts[-1], function=trial_function(sweep_config, outcomes, interrupted),
                    entity=entity, project=project, count=count)
    if outcomes and all(outcome == "failed" for outcome in outcomes):
        print(f"agent: all {len(outcomes)} runs failed", file=sys.stderr)
        return 1
    return 0
