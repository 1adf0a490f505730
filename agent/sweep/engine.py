"""The one boundary to W&B's sweep engine (the `sweeps` package that `wandb[sweeps]` installs).

Everything the controller asks the engine goes through here: the next configuration
(`sweeps.next_run`) and which running runs to stop (`sweeps.stop_runs`). Stored runs are
converted to the engine's `SweepRun`s on the way in, and the engine's proposals to plain
{name: value} dicts on the way out.
"""

from __future__ import annotations

import warnings

# The engine's pydantic settings trigger a warning on import and use; it is harmless.
warnings.filterwarnings("ignore", message="Valid config keys have changed", category=UserWarning)
import sweeps  # noqa: E402

ENGINE_STATES = {
    "pending": sweeps.RunState.pending, "running": sweeps.RunState.running,
    "finished": sweeps.RunState.finished, "stopped": sweeps.RunState.finished,
    "failed": sweeps.RunState.failed, "crashed": sweeps.RunState.crashed,
    "preempted": sweeps.RunState.preempted,
}


def engine_run(run) -> "sweeps.SweepRun":
    """A stored run (agent.sweep.store.Run) as the engine sees it ({"lr": {"value": 0.1}})."""
    history = run.history
    summary = run.summary or (history[-1] if history else {})
    return sweeps.SweepRun(name=run.id, state=ENGINE_STATES[run.state],
                           config={k: {"value": v} for k, v in run.config.items()},
                           history=history, summary_metrics=summary)


def proposed_params(sweep_config: dict, runs: list[dict]) -> dict | None:
    """The engine's next configuration as plain {name: value}, or None when exhausted."""
    proposal = sweeps.next_run(sweep_config, [engine_run(r) for r in runs], validate=True)
    if proposal is None:
        return None
    return {name: spec["value"] for name, spec in proposal.config.items()}


def stop_decisions(sweep_config: dict, runs: list[dict]) -> set[str]:
    """Ids of the runs the sweep's early_terminate (hyperband) would stop now."""
    engine_runs = [engine_run(r) for r in runs]
    return {r.name for r in sweeps.stop_runs(sweep_config, engine_runs, validate=True)}
