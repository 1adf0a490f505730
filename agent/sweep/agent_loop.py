"""An agent: claim a configuration, train it in this process, record it, repeat.

`python -m agent.sweep.agent_loop <local-sweep> [--count N]` works on a local sweep store;
`python -m agent.sweep.agent_loop --wandb <entity/project/sweep-id>` pulls from W&B's server instead.
Trials run in-process with `agent.trial.train`, so the dataset stays on the device between
them. SIGTERM or SIGINT ends the current trial as `preempted` (its checkpoint kept; the next
agent resumes it) and the agent exits. An agent that finds its run taken from it (it was
silent past the heartbeat timeout, and its run was declared crashed and re-queued) drops
that trial without writing to the store and claims the next.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from agent.sweep.controller import (
    HEARTBEAT_S,
    HEARTBEAT_TIMEOUT_S,
    check_heartbeat,
    claim,
    should_stop,
)
from agent.sweep.store import SweepStore
from agent.sweep.target import open_store
from agent.trial.loop import Preempted, TrialHooks, train
from util.errors import exit_on_user_error

MAX_FAILURES_IN_A_ROW = 3
WAIT_POLL_S = 2.0


class Heartbeat:
    """Refreshes a run's heartbeat from a thread (with its own SQLite connection); `taken`
    is set once the store refuses a beat: the run is no longer this agent's."""

    def __init__(self, store_path: Path, run_id: str, owner: str, every: float):
        self.stop_event = threading.Event()
        self.taken = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True,
                                       args=(store_path, run_id, owner, every))
        self.thread.start()

    def _beat(self, store_path, run_id, owner, every):
        store = SweepStore(store_path)
        while not self.stop_event.wait(every):
            if not store.heartbeat(run_id, owner):
                self.taken.set()
                break
        store.close()

    def stop(self):
        self.stop_event.set()
        self.thread.join()


def taken_over(owner: str, run_id: str) -> None:
    print(f"agent {owner}: run {run_id} was declared crashed while this agent was silent and "
          "is re-queued; this copy stops without recording anything", file=sys.stderr)


def run_local_agent(store: SweepStore, count: int | None = None,
                    heartbeat_s: float = HEARTBEAT_S, timeout: float = HEARTBEAT_TIMEOUT_S) -> int:
    owner = f"{socket.gethostname()}:{os.getpid()}"
    sweep = store.sweep()
    signalled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: signalled.append(number))
    failures = done = 0
    while (count is None or done < count) and not signalled:
        work = claim(store, owner, timeout=timeout)
        if work.kind == "done":
            break
        if work.kind == "wait":  # others still run; one may crash and need repeating
            time.sleep(WAIT_POLL_S)
            continue
        (claimed,) = work.runs
        run_id = claimed.run_id
        beat = Heartbeat(store.path, run_id, owner, heartbeat_s)

        def after_epoch(epoch: int, history: list[dict], run_id=run_id, beat=beat) -> str | None:
            if not store.record_epoch(run_id, owner, epoch, history[-1]):
                beat.taken.set()  # the next step's interrupted() ends the trial
                return None
            return "early_terminate" if should_stop(store, run_id) else None

        def interrupted(beat=beat) -> bool:  # SIGTERM, or the run is no longer ours
            return bool(signalled) or beat.taken.is_set()

        config = {**claimed.config, "run_id": run_id, "group": sweep.name}
        try:
            summary = train(config, TrialHooks(should_stop=after_epoch, interrupted=interrupted),
                            sweep={"id": sweep.id, "name": sweep.name, "config": sweep.config})
            # A diverged run is a result: finished, with diverged=true in its summary.
            state = "stopped" if summary["state"] == "stopped" else "finished"
            if not store.finish(run_id, owner, state, summary):
                taken_over(owner, run_id)
                continue
            failures = 0
        except Preempted:
            if beat.taken.is_set() or not store.finish(run_id, owner, "preempted"):
                taken_over(owner, run_id)
                continue  # to the next claim, or out of the loop after a signal
            print(f"agent {owner}: run {run_id} preempted; its checkpoint is kept for the "
                  "next agent", file=sys.stderr)
            break
        except Exception as error:  # a failing trial is recorded, not fatal to the agent
            line = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if not store.finish(run_id, owner, "failed", error=line):
                taken_over(owner, run_id)
                continue
            run_dir = Path(config.get("run_dir", "data/runs")) / run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "traceback.txt").write_text(traceback.format_exc())
            failures += 1
            print(f"agent {owner}: run {run_id} failed ({line}); traceback in "
                  f"{run_dir / 'traceback.txt'}", file=sys.stderr)
            if failures >= MAX_FAILURES_IN_A_ROW:
                print(f"agent {owner}: stopping after {failures} failed runs in a row; "
                      "see their traceback.txt files", file=sys.stderr)
                return 1
        finally:
            beat.stop()
        done += 1
    return 0


def run_wandb_agent(sweep_path: str, count: int | None, project: str | None) -> int:
    """W&B's own agent loop, with our trial as the function: configs come from the server."""
    import wandb

    signalled = []
    signal.signal(signal.SIGTERM, lambda number, frame: signalled.append(number))

    def one_trial():
        # Inside wandb.agent, WANDB_SWEEP_ID and WANDB_RUN_ID are set: the W&B sink joins that
        # run, and train() takes the sweep's parameters from wandb.config.
        try:
            train({}, TrialHooks(interrupted=lambda: bool(signalled)))
        except Preempted:
            pass  # the sink has called wandb.mark_preempting(); W&B re-queues the run

    parts = sweep_path.split("/")
    entity = parts[-3] if len(parts) == 3 else None
    project = parts[-2] if len(parts) >= 2 else project
    wandb.agent(parts[-1], function=one_trial, entity=entity, project=project, count=count)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.sweep.agent_loop",
                                     description="Run one sweep agent in this process.")
    parser.add_argument("sweep", help="local sweep (directory or id), or with --wandb a W&B "
                        "sweep id or entity/project/id")
    parser.add_argument("--wandb", action="store_true", help="pull configs from W&B's server")
    parser.add_argument("--count", type=int, default=None, help="stop after N runs")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT"))
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT_S,
                        help="seconds between beats")
    parser.add_argument("--heartbeat-timeout", type=float, default=HEARTBEAT_TIMEOUT_S,
                        help="seconds of silence after which a running run is crashed")
    args = parser.parse_args(argv)
    check_heartbeat(args.heartbeat, args.heartbeat_timeout)
    if args.wandb:
        return run_wandb_agent(args.sweep, args.count, args.project)
    return run_local_agent(open_store(args.sweep), args.count, args.heartbeat,
                           args.heartbeat_timeout)


if __name__ == "__main__":
    raise SystemExit(exit_on_user_error(main))
