"""Sweeps whose runs end without training, for tests of what reads a store (the report,
agent.repeat, status): every run the sweep's engine proposes is claimed as an agent claims
and ended as the trial ends it, with the epochs and summary a test gives."""

from __future__ import annotations

from collections.abc import Callable

from agent.sweep.controller import claim
from agent.sweep.store import SweepStore


def end_every_run(store: SweepStore, epochs_of: Callable[[dict], list[dict]],
                  summary_of: Callable[[dict], dict] = lambda config: {},
                  owner: str = "host:1") -> dict[str, dict]:
    """Claim every run of `store` (64 at a time, as a pack claims) and end it finished: the
    rows epochs_of(its config) gives recorded as its epochs 1, 2, ..., then its summary the
    last row with `epochs_done` and summary_of(its config). {run id: config}, in the order
    claimed (the sweep's)."""
    configs = {}
    while (work := claim(store, owner, count=64)).kind == "run":
        for run in work.runs:
            configs[run.run_id] = run.config
            rows = epochs_of(run.config)
            for epoch, row in enumerate(rows, 1):
                assert store.record_epoch(run.run_id, owner, epoch, row)
            assert store.finish(run.run_id, owner, "finished", {
                **rows[-1], "epochs_done": len(rows), **summary_of(run.config)})
    return configs
