"""The embedded sweep controller: what an agent runs next, and when a run should stop.

Decisions are pure functions of the sweep config and the runs so far, built on W&B's own
engine (`sweeps.next_run`, `sweeps.stop_runs`); `claim_next_run` applies one decision to the
store inside a single write transaction, so concurrent agents never take the same work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.ids import new_run_id
from agent.sweep.engine import proposed_params, stop_decisions
from agent.sweep.store import SweepStore

HEARTBEAT_TIMEOUT_S = 60.0  # a running run silent this long is taken for crashed


@dataclass
class Claim:
    """The outcome of asking for work: a run to train, or `wait` / `done`."""

    kind: str  # "run", "wait" or "done"
    run_id: str | None = None
    config: dict | None = None
    resumed: bool = False


def crash_repairs(runs: list[dict], now: float, timeout: float) -> tuple[list[str], list[dict]]:
    """Pure: (running runs whose heartbeat went stale, crashed runs to re-queue once)."""
    stale = [r["id"] for r in runs if r["state"] == "running"
             and (r["heartbeat"] or 0) < now - timeout]
    repeated = {r["requeued_from"] for r in runs if r["requeued_from"]}
    # Re-queue once: not a run that is itself a repeat, nor one already repeated.
    requeue = [r for r in runs if (r["state"] == "crashed" or r["id"] in stale)
               and not r["requeued_from"] and r["id"] not in repeated]
    return stale, requeue


def choose_work(sweep_config: dict, runs: list[dict]) -> Claim:
    """Pure: resume preempted work first, then pending repeats, then the engine's proposal;
    else wait for running runs (one may still crash and need repeating), else done."""
    for state in ("preempted", "pending"):
        waiting = [r for r in runs if r["state"] == state]
        if waiting:
            return Claim("run", waiting[0]["id"], waiting[0]["config"],
                         resumed=state == "preempted")
    originals = [r for r in runs if not r["requeued_from"]]
    run_cap = sweep_config.get("run_cap")
    if not run_cap or len(originals) < run_cap:
        params = proposed_params(sweep_config, runs)
        if params is not None:
            return Claim("run", None, params)
    return Claim("wait" if any(r["state"] == "running" for r in runs) else "done")


def claim_next_run(store: SweepStore, owner: str, timeout: float = HEARTBEAT_TIMEOUT_S,
                   now: float | None = None) -> Claim:
    """Take the next piece of work for `owner`, in one transaction."""
    with store.transaction() as db:
        sweep_config = store.sweep()["config"]
        stale, requeue = crash_repairs(store.runs(db), now or time.time(), timeout)
        for run_id in stale:
            store.set_state(db, run_id, "crashed")
        for run in requeue:
            store.insert_run(db, new_run_id(), run["config"], "pending", None,
                             requeued_from=run["id"])
        claim = choose_work(sweep_config, store.runs(db))
        if claim.kind == "run":
            if claim.run_id is None:
                claim.run_id = new_run_id()
                store.insert_run(db, claim.run_id, claim.config, "running", owner)
            else:
                store.set_state(db, claim.run_id, "running", owner)
    return claim


def should_stop(store: SweepStore, run_id: str) -> bool:
    """Hyperband (or any early_terminate) says this run should stop now."""
    sweep_config = store.sweep()["config"]
    if not sweep_config.get("early_terminate"):
        return False
    return run_id in stop_decisions(sweep_config, store.runs())
