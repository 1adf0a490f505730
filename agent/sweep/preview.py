"""What a checked sweep file would run, in words, for `./run_sweep.sh sweeps/x.yaml --dry-run`:
its method and how many runs it makes, its metric and early stopping, each parameter's value,
values or distribution, and the command the first configuration's run gets. Reads the
config only: no store, folder or W&B file is made."""

from __future__ import annotations

import os
from pathlib import Path

from agent.sweep.engine import planned_runs, proposed_params
from agent.sweep.program import build_run, describe, runs_our_trainer
from agent.sweep_space import short_number

# What a distribution's spec holds besides its name, in the engine's order (sweeps/params.py)
DISTRIBUTION_KEYS = ("min", "max", "mu", "sigma", "q", "a", "b")
# Placeholders for the ids the sweep and its first run would get (new_run_id at creation)
NEW_SWEEP_ID, FIRST_RUN_ID = "SWEEP_ID", "RUN_ID"


def run_count_text(config: dict) -> str:
    """'grid of 12 runs', 'grid: 8 of its 12 points (run_cap)', 'random, 8 runs (run_cap)',
    'bayes, no run_cap: runs until stopped'."""
    method = config.get("method")
    planned, cap = planned_runs(config), config.get("run_cap")
    if method == "grid":
        size = planned_runs({**config, "run_cap": None})
        return (f"grid: {planned} of its {size} points (run_cap)" if cap and cap < size
                else f"grid of {size} run{'s' if size != 1 else ''}")
    if planned:
        return f"{method}, {planned} runs (run_cap)"
    return f"{method}, no run_cap: runs until stopped (Ctrl-C), or --count N runs per agent"


def value_text(value) -> str:
    """A parameter's value as the YAML reads: 0.001, cnn, [16, 32], true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(value_text, value)) + "]"
    return short_number(value) if isinstance(value, (int, float)) else str(value)


def spec_text(spec: dict) -> str:
    """One parameter's spec (filled by the engine): its value, its values (with their
    probabilities), or its distribution and that distribution's numbers."""
    if "value" in spec:
        return value_text(spec["value"])
    if isinstance(spec.get("values"), list):
        values = ", ".join(map(value_text, spec["values"]))
        if "probabilities" in spec:
            return f"{values} (probabilities {value_text(spec['probabilities'])})"
        return values
    numbers = [f"{key} {value_text(spec[key])}" for key in DISTRIBUTION_KEYS if key in spec]
    return f"{spec.get('distribution', '?')}" + (f": {', '.join(numbers)}" if numbers else "")


def parameter_lines(parameters: dict, prefix: str = "") -> list[str]:
    """'    lr          log_uniform_values: min 0.001, max 0.1' for each parameter, nested
    parameters by their dotted name."""
    lines = []
    for name, spec in parameters.items():
        if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
            lines += parameter_lines(spec["parameters"], f"{prefix}{name}.")
        else:
            lines.append(f"    {prefix + str(name):<16} {spec_text(spec)}")
    return lines


def first_command(config: dict) -> str:
    """The command line the sweep's first configuration gets (the engine's first proposal,
    as the first claim asks it), as `wandb agent` builds it, ids as placeholders; with
    neither `command` nor `program`, the values our trainer is called with."""
    params = proposed_params(config, []) or {}
    run = build_run(config, params, sweep_id=NEW_SWEEP_ID, run_id=FIRST_RUN_ID,
                    wandb_dir=os.environ.get("WANDB_DIR") or os.getcwd())
    if run.argv is None:  # neither command nor program: the trainer gets the config itself
        return "agent.train with " + ", ".join(f"{name}={value_text(value)}"
                                              for name, value in params.items())
    return describe(run)


def sweep_lines(path: str | Path, config: dict, name: str, agents: str) -> list[str]:
    """The dry run's account of the sweep `config` (validated, from the file `path`):
    what it runs and how, `agents` saying where the launch would start its agents."""
    metric = config.get("metric") or {}
    terminate = config.get("early_terminate") or {}
    # a grid or random search needs no metric (the engine's bayes and hyperband do): it
    # read 'None (minimize)', as if the sweep minimised something
    goal = "none: no run is ranked by a metric" if not metric else \
        f"{metric.get('name')} ({metric.get('goal', 'minimize')}" + (
            f", until a run reaches {value_text(metric['target'])}"
            if metric.get("target") is not None else "") + ")"
    lines = [f"Dry run: {path} is a valid sweep; nothing was created.",
             f"  name:        {name}",
             f"  method:      {run_count_text(config)}",
             f"  metric:      {goal}"]
    if terminate:
        numbers = ", ".join(f"{key} {value_text(value)}" for key, value in terminate.items()
                            if key != "type")
        lines.append(f"  early stop:  {terminate.get('type')}"
                     + (f" ({numbers})" if numbers else ""))
    lines += ["  parameters:", *parameter_lines(config.get("parameters") or {})]
    command = first_command(config)
    how = [{"random": "a random draw", "grid": "the grid's first point"}.get(
               str(config.get("method")), "the engine's first proposal"),
           "our trainer runs it in the agent's process" if runs_our_trainer(config)
           else "run as a process of its own"]
    if NEW_SWEEP_ID in command or FIRST_RUN_ID in command:
        how.append(f"{NEW_SWEEP_ID}, {FIRST_RUN_ID}: the ids made at launch")
    lines += [f"  first run:   {command}", f"               ({'; '.join(how)})",
              f"  agents:      {agents}"]
    return lines
