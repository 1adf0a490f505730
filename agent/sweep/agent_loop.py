"""An agent: claim configurations, train them in this process (K at a time as one packed
model with `--pack K`), record each run, repeat.

`python -m agent.sweep.agent_loop <local-sweep> [--count N]` works on a local sweep store;
`python -m agent.sweep.agent_loop --wandb <entity/project/sweep-id>` pulls from W&B's server
instead.
Trials run in-process with `agent.trial.train`, so the dataset stays on the device between
them. SIGTERM, SIGINT or SIGHUP (the terminal closed) ends the current trial as `preempted`
(its checkpoint kept; the next agent resumes it) and the agent exits. An agent that finds
its run taken from it (it was silent past the heartbeat timeout, and its run was declared
crashed and re-queued) drops that trial without writing to the store and claims the next.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import sys
import textwrap
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.commands import NBSP
from agent.ids import path_safe, run_directory
from agent.sweep import program
from agent.sweep.controller import (
    GRID_LOOKAHEAD,
    HEARTBEAT_S,
    HEARTBEAT_TIMEOUT_S,
    check_heartbeat,
    claim,
    crash_outcome,
    drop_after_target,
    expected_runs,
    keep_proposal,
    not_repeated_why,
    repair_ended_agents,
    repeatable,
    resumes,
    runs_left,
    should_stop,
)
from agent.sweep.pack_size import PackSizer, agents_per_device, parse_pack
from agent.sweep.status import sweep_progress
from agent.sweep.store import (
    Run,
    StoreError,
    SweepStore,
    made_in_shared_folder,
    remove_heartbeat_settings,
    write_heartbeat_settings,
)
from agent.sweep.target import SweepTarget, check_wandb_sweep, open_store
from agent.sweep_space import short_number
from util.errors import (
    SWEEP_CTRL_C_NOTE,
    CommandParser,
    UserError,
    brief,
    exit_command,
    exit_on_user_error,
    int_option,
    interrupted_code,
    naming,
    one_line,
    stop_at_next_step,
    storage_problem,
)

# The trial layer (torch) is imported when the first trial starts, not with this module: a
# bad option or an unknown sweep is answered in a fraction of a second.
if TYPE_CHECKING:
    from agent.trial.member import TrialHooks

MAX_FAILURES_IN_A_ROW = 3
WAIT_POLL_S = 2.0
# --pack auto measures no further size of a kind after PROBE_BUDGET_S, nor after a tenth of
# the time the kind's runs left would train alone (but never less than PROBE_MIN_S): a few
# runs of a heavy model are not worth measuring for. A run alone, the first pack and the
# second look at the size chosen are measured whatever the time (PackSizer.probe)
PROBE_BUDGET_S = 20.0
PROBE_SHARE = 0.1
PROBE_MIN_S = 1.0
# --pack auto packs a bayes sweep's runs at most this many at a time: the runs of a pack are
# proposed together, before any of them has a result (a fixed --pack K is taken as given)
BAYES_PACK = 8
# --pack auto measures a kind of a random sweep only where the sweep is expected to give at
# least this many runs of it (controller.expected_runs, for runs past those proposed ahead):
# measuring costs about a second, and a kind met once trains alone whatever it measured
MIN_EXPECTED_RUNS = 2.0


def _repeated_how(running: list[Run], ours: bool) -> str:
    """How a crashed run of `running` would be repeated (`controller._repeat`), in words."""
    resuming = [resumes(r, ours) for r in running]
    if all(resuming):
        return "from its last checkpoint (a repeat again only once it got an epoch further)"
    if not any(resuming):
        return ("from scratch (checkpoint: false; once: a repeat is not repeated)" if ours
                else "from scratch (once: a repeat is not repeated)")
    return ("from its last checkpoint, or from scratch for a run with checkpoint: false "
            "(which is then not repeated again)")


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop an agent as a preemption: a scheduler's walltime (SIGTERM),
    Ctrl-C, and its terminal closing (SIGHUP: an ssh session dropped), whose default action
    killed the agent mid-trial, its run left `running` until the heartbeat timeout and then
    repeated from scratch, its checkpointed epochs lost. Not SIGHUP where it is ignored: under
    `nohup` the user asked the sweep to outlive its terminal."""
    hangup = () if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGTERM, signal.SIGINT, *hangup)


def stop_at_next_step_of_runs(signalled: list[int]) -> None:
    """The stop signals (stop_signals) end the runs in training preempted at their next step
    (added to `signalled`, which they poll); a Ctrl-C after one ends this process at once
    (util.errors.stop_at_next_step). The first Ctrl-C says so, but in a launcher's agent
    (started with Ctrl-C ignored, launch.IGNORING_CTRL_C): its launcher says it, once."""
    launchers = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    stop_at_next_step(signalled, stop_signals(), note=None if launchers else SWEEP_CTRL_C_NOTE)


AGENTS_DIR = ".agents"  # in a sweep's folder: the lock file each of its agents holds


class AgentLock:
    """The lock file this agent holds (flock) in its sweep's folder while its process
    lives. The kernel releases it when the process ends, however it ends (kill -9 and the
    OOM killer included), so an agent of this host that can take it knows that agent is
    gone, also from another pid namespace (a container), where its pid would mislead. Where
    the folder is not writable there is no lock, and a crash is found by its heartbeat."""

    def __init__(self, directory: Path, owner: str):
        self.path = lock_path(directory, owner)
        self.fd: int | None = None
        try:
            fd = made_in_shared_folder(self.path.parent, lambda: os.open(
                self.path, os.O_CREAT | os.O_RDWR, 0o644))
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None
            try:
                self.path.parent.rmdir()  # the last agent leaves no folder behind
            except OSError:
                pass


def lock_path(directory: Path, owner: str) -> Path:
    return Path(directory) / AGENTS_DIR / f"{path_safe(owner)}.lock"


def agent_ended(directory: Path, owner: str) -> bool:
    """Whether the agent `owner` (host:pid) of this host has ended: its lock file is there
    and free (AgentLock). False where it holds it, and where there is none (an agent that
    could not make one, or of another host): then only its heartbeat tells."""
    path = lock_path(directory, owner)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its process lives
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    return True


def _alive(pid: str) -> bool:
    """Whether a process of this id runs here (another pid namespace's is not seen: such a
    run is only named, never repaired, on this evidence)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


class Heartbeat:
    """Refreshes the heartbeats of a pack's runs from a thread (with its own SQLite
    connection); `taken` is set once the store refuses a beat: a run is no longer ours;
    `failed` holds the StoreError once the store cannot be written at all. A member that ends
    (finished, stopped by hyperband, diverged) is `forget`-ten before it is recorded, so that
    its beats stop and the refusal of a beat for it does not count as the run being taken."""

    def __init__(self, store_path: Path, run_ids: list[str], owner: str, every: float):
        self.stop_event = threading.Event()
        self.taken = threading.Event()
        self.failed: StoreError | None = None
        self.lock = threading.Lock()
        self.ended: set[str] = set()
        self.thread = threading.Thread(target=self._beat, daemon=True,
                                       args=(store_path, list(run_ids), owner, every))
        self.thread.start()

    def forget(self, run_id: str) -> None:
        """Stop beating for a run that ends; call before the store records its end."""
        with self.lock:
            self.ended.add(run_id)

    def _beat(self, store_path, run_ids, owner, every):
        try:
            store = SweepStore(store_path)
            try:
                while not self.stop_event.wait(every):
                    with self.lock:
                        live = [r for r in run_ids if r not in self.ended]
                    refused = [r for r in live if not store.heartbeat(r, owner)]
                    with self.lock:  # a run that ended meanwhile was refused for that
                        refused = [r for r in refused if r not in self.ended]
                    if refused:
                        self.taken.set()
                        break
            finally:
                store.close()
        except StoreError as error:  # the trial stops at its next step; the agent says why
            self.failed = error

    def stop(self):
        self.stop_event.set()
        self.thread.join()


def write_text_atomic(path: Path, text: str) -> bool:
    """Write `text` to `path` whole or not at all (no empty file on a full disk); whether it
    was written."""
    partial = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with naming(partial):
            partial.write_text(text)
        os.replace(partial, path)
        return True
    except OSError:
        return False
    finally:
        try:
            partial.unlink(missing_ok=True)
        except OSError:  # its folder cannot exist (a path through a file): nothing was written
            pass


def taken_over(owner: str, run_id: str) -> None:
    print(f"agent {owner}: run {run_id} was declared crashed while this agent was silent and "
          "is re-queued; this copy stops without recording anything", file=sys.stderr)


def packable(config: dict):
    """The trial layer's pack key, or a key of its own for a configuration the trial will
    refuse (it then fails alone, with its one-line reason recorded)."""
    from agent.trial.member import pack_key

    try:
        return pack_key(config)
    except UserError:
        return ("unpackable", repr(sorted(config.items())))


class Unsized(Exception):
    """--pack auto met a kind of pack it has not measured: the claim is abandoned (nothing
    written) so that the agent measures with `config` first."""

    def __init__(self, config: dict):
        super().__init__("a kind of pack not measured yet")
        self.config = config


@dataclass
class PackOutcome:
    failed: bool = False  # the trial raised: every member still training failed
    preempted: bool = False  # SIGTERM/SIGINT ended it; the agent stops


def logged_names(summary: dict, metric: str) -> str:
    """' (it logged a, b; did you mean a?)': the numbers a run of another program logged
    (its W&B summary, by their dotted names) when it logged none under the sweep's metric,
    with the closest name; '' when it logged none."""
    import difflib

    names = sorted(name for name, value in summary.items() if not name.startswith("_")
                   and isinstance(value, (int, float)) and not isinstance(value, bool))
    if not names:
        return ""
    close = difflib.get_close_matches(metric, names, n=1)
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f" (it logged {shown}" + (f"; did you mean {close[0]!r}?)" if close else ")")


class LocalAgent:
    """Claims packs of runs from a local sweep store and trains each pack in this process."""

    def __init__(self, store: SweepStore, heartbeat_s: float, timeout: float,
                 sizer: PackSizer, signalled: list[int] | None = None):
        self.store, self.heartbeat_s, self.timeout, self.sizer = store, heartbeat_s, timeout, sizer
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.sweep = store.sweep()
        self.signalled: list[int] = [] if signalled is None else signalled  # the stop signals
        self.room = None  # a PackRoom (agent/trial/preflight.py), made once torch is needed
        self.waited_on: set[str] | None = None  # the running runs say_why_waiting named
        program.local_run_environment(self.sweep.config)  # W&B agent variables: ignored
        self.wandb_dir = os.environ.get("WANDB_DIR") or os.getcwd()
        self.ours = program.runs_our_trainer(self.sweep.config)
        if not self.ours:
            if sizer.fixed != 1:
                print(f"agent {self.owner}: --pack {sizer.fixed or 'auto'} does not apply: this "
                      "sweep's command runs another program, one process a run (as W&B's "
                      "agent runs it)", file=sys.stderr)
            self.sizer = PackSizer(fixed=1)  # another program: one subprocess a run

    def say_why_waiting(self, running: list[Run]) -> None:
        """One line, once for each set of runs it waits on: nothing is left to claim while
        other agents train these, and when one counts as crashed (silent for the heartbeat
        timeout: then it is repeated here, from its last checkpoint when our trainer runs it).
        A run whose agent was of this host and has ended (kill -9, a closed terminal) but left
        no lock file (AgentLock) is named as such: its pid alone is not trusted, so it is
        waited out."""
        ids = {r.id for r in running}
        if not running or ids == self.waited_on:
            return
        self.waited_on = ids
        now = time.time()
        gone = [r for r in self.runs_of_agents_here(running)
                if not _alive(r.owner.rpartition(":")[2])]
        shown = ", ".join(sorted(ids)[:5]) + (", ..." if len(ids) > 5 else "")
        line = ("waiting: nothing left to claim while other agents "
                f"train {len(running)} run(s) ({shown}); one silent for {self.timeout:g} s "
                "would count as crashed and be repeated here, "
                + _repeated_how(running, self.ours))
        if gone:
            latest = max(r.heartbeat or 0 for r in gone)
            epochs = {r.id: r.epoch for r in self.store.runs()} \
                if any(r.requeued_from for r in gone) else {}
            again = [r.id for r in gone if repeatable(r, epochs, self.ours)]
            line += (f"; the agent of {', '.join(r.id for r in gone)} on this host has ended: "
                     f"crashed in about {max(0.0, latest + self.timeout - now):.0f} s"
                     + (f", then {', '.join(again)} repeated here" if again else
                        f", not repeated ({not_repeated_why(gone[0], self.ours)})"))
        say(self.owner, line)  # wrapped within 80 columns, as the agent's other lines

    def run(self, count: int | None) -> int:
        stop_at_next_step_of_runs(self.signalled)
        lock = AgentLock(self.store.directory, self.owner)
        # what agent.status judges this agent's runs' heartbeats by
        write_heartbeat_settings(self.store.directory, self.owner,
                                 {"heartbeat_s": self.heartbeat_s, "timeout_s": self.timeout})
        try:
            self.repair_ended_here(self.store.runs())
            code = self._run(count)
            # ended by --count or a signal, with no claim after a run reached the target
            drop_after_target(self.store)
            return code
        finally:
            self.forget_heartbeat_settings()
            lock.release()

    def forget_heartbeat_settings(self) -> None:
        """This agent's heartbeat settings removed as it ends, unless a run of its is still
        `running` in the store (a store it could no longer write): status judges that run's
        silence by them."""
        try:
            running = any(r.state == "running" and r.owner == self.owner
                          for r in self.store.runs())
        except UserError:  # the store cannot be read: keep them
            return
        if not running:
            remove_heartbeat_settings(self.store.directory, self.owner)

    def repair_ended_here(self, runs: list[Run]) -> bool:
        """Mark crashed, and repeat, at once the running runs of this host's agents that
        have ended (agent_ended: their lock is free), rather than a heartbeat timeout later
        (a launcher started again after a kill -9, a reboot). Says so; True if any."""
        owners = {r.owner for r in self.runs_of_agents_here(runs)}
        ended = {owner for owner in owners if agent_ended(self.store.directory, owner)}
        if not ended:
            return False
        crashed = repair_ended_agents(self.store, ended)
        if crashed:
            print(f"agent {self.owner}: the agent of {', '.join(sorted(crashed))} on this host "
                  f"has ended (its lock is free): crashed now, "
                  f"{crash_outcome(self.store, sorted(crashed))}", file=sys.stderr)
        return bool(crashed)

    def runs_of_agents_here(self, runs: list[Run]) -> list[Run]:
        """The running runs of `runs` whose agent (host:pid) is another of this host."""
        host = socket.gethostname()
        return [r for r in runs if r.state == "running" and r.owner
                and r.owner != self.owner and r.owner.rpartition(":")[0] == host]

    def _run(self, count: int | None) -> int:
        failures = done = failed = 0
        while (count is None or done < count) and not self.signalled:
            left = None if count is None else count - done

            def wanted(key, like, left=left) -> int:  # this kind of pack's size
                if not self.sizer.knows(key):
                    raise Unsized(like)  # --pack auto: measured before any run is taken
                size = self.room_for(key, like)
                return size if left is None else min(size, left)

            try:
                work = claim(self.store, self.owner, count=wanted, pack_key=packable,
                             timeout=self.timeout)
            except Unsized as unsized:  # the claim wrote nothing: measure, then claim again
                # a random sweep under run_cap proposes its next runs now, so that the
                # measuring knows how many runs of the kind there are (keep_proposal)
                ahead = looks_ahead(self.sweep.config)
                if ahead:
                    keep_proposal(self.store, unsized.config, ahead)
                self.size_packs_of(unsized.config, left)
                if not ahead and not self.signalled:  # the config measured is claimed next
                    keep_proposal(self.store, unsized.config)
                continue
            if work.kind == "done":
                break
            if work.kind == "wait":  # others still run; one may crash and need repeating
                if self.repair_ended_here(work.running):
                    continue
                self.say_why_waiting(work.running)
                time.sleep(WAIT_POLL_S)
                continue
            outcome = self.train_claim(work)
            if outcome.preempted:
                break
            failures = failures + 1 if outcome.failed else 0
            failed += len(work.runs) if outcome.failed else 0
            if failures >= MAX_FAILURES_IN_A_ROW:
                print(f"agent {self.owner}: stopping after {failures} failed runs in a row; "
                      "each one's reason is above (and in the report)", file=sys.stderr)
                return 1
            done += len(work.runs)
        if done and failed == done:
            print(f"agent {self.owner}: all {done} runs failed", file=sys.stderr)
            return 1
        return 0

    def room_for(self, key, like: dict) -> int:
        """The size of this claim of `key`'s kind (like `like`): the sizer's, capped by what
        one trial on this agent's device holds (PackRoom)."""
        size = self.sizer.next_size(key)
        if size <= 1:
            return size  # torch is not imported for a run alone
        from agent.params import validate
        from agent.trial.preflight import PackRoom

        self.room = self.room or PackRoom(share=1 / agents_per_device())
        return self.room.cap(key, size,
                             lambda: validate(program.values_for(self.sweep.config, like)))

    def train_claim(self, work) -> PackOutcome:
        """Train the claimed runs as one pack; each member is recorded as it ends."""
        from agent.trial.loop import train_pack
        from agent.trial.member import continue_crashed, resume_preempted

        run_ids = [c.run_id for c in work.runs]
        beat = Heartbeat(self.store.path, run_ids, self.owner, self.heartbeat_s)
        # each run as `wandb agent` would start it: our trainer in-process, else a subprocess
        commands = [program.build_run(self.sweep.config, c.config, sweep_id=self.sweep.id,
                                      run_id=c.run_id, wandb_dir=self.wandb_dir)
                    for c in work.runs]
        configs = [{**c.config, "run_id": c.run_id} for c in work.runs]
        ended: dict[str, dict] = {}
        hooks = [self.member_hooks(c.run_id, beat, ended, c.epoch) for c in work.runs]
        outcome = PackOutcome()
        try:
            if commands[0].trainer_args is None:
                (command,) = commands  # another program: packs of one
                self.run_program(command, hooks[0], beat, sweep_progress(
                    self.store.runs(), self.sweep.config, run_ids))
            else:
                configs = [self.trial_config(command) for command in commands]
                starts_over = False
                for claimed, config, hook in zip(work.runs, configs, hooks):
                    if not claimed.epoch:
                        continue
                    if claimed.repeats:
                        crashed_epoch = next((r.epoch for r in self.store.runs()
                                              if r.id == claimed.repeats), 0)
                        line, source = continue_crashed(config, claimed.repeats,
                                                        claimed.epoch, crashed_epoch)
                        hook.repeats = claimed.repeats if source == "crashed" else None
                        starts_over |= source is None
                    else:  # preempted: it resumes from its own checkpoint, if one is left
                        line = resume_preempted(config, claimed.epoch)
                        starts_over |= line is not None
                    if line:
                        print(f"agent {self.owner}: {line}", file=sys.stderr)
                if starts_over:  # a pack resumes at the newest epoch all its members have:
                    # none; the store's rows of their earlier starts would stay where this
                    # start stops short of them (stopped, diverged, preempted again)
                    for claimed in work.runs:
                        if claimed.epoch:
                            self.store.forget_epochs(claimed.run_id, self.owner)
                progress = sweep_progress(self.store.runs(), self.sweep.config, run_ids)
                # the run line shows each value as the sweep gave it (a null as None, what
                # ${args} passes; the trial's config holds the default instead)
                progress["params"] = {c.run_id: c.config for c in work.runs}
                train_pack(configs, hooks, sweep={
                    "id": self.sweep.id, "name": self.sweep.name, "config": self.sweep.config,
                    "progress": progress})
            outcome.preempted = any(s["state"] == "preempted" for s in ended.values()) \
                and bool(self.signalled)
            # every member refused before training (its checkpoints of other values), each
            # recorded failed with its own line as it ended: a failed trial all the same
            outcome.failed = bool(ended) and all(s["state"] == "failed" for s in ended.values())
        except StoreError:
            raise  # nothing more can be recorded: the agent stops, saying why in one line
        except Exception as error:  # a failing trial is recorded, not fatal to the agent
            problem = storage_problem(error)
            if problem is not None:  # a full or read-only disk: no fault of the runs'
                raise self.left_for_the_next_agent(
                    [r for r in run_ids if r not in ended], problem) from None
            outcome.failed = True
            self.record_failure(configs, [r for r in run_ids if r not in ended], error)
        finally:
            beat.stop()
        if beat.failed is not None:
            raise beat.failed
        return outcome

    def left_for_the_next_agent(self, run_ids: list[str], problem: UserError) -> UserError:
        """The runs a storage failure cut short, left `preempted` (their last whole epoch's
        checkpoint stands) for the next agent; the one line the agent stops with."""
        try:
            for run_id in run_ids:
                self.store.finish(run_id, self.owner, "preempted")
            left = "left preempted: the next agent resumes them from their last checkpoint"
        except StoreError:  # the store is on the same disk: its heartbeats go silent instead
            left = ("left running: the next agent finds them silent and repeats them")
        return UserError(f"{problem}; run(s) {', '.join(run_ids)} {left}")

    def trial_config(self, command: program.RunCommand) -> dict:
        """Our trainer's config for a run: what its argv describes, its id, the group."""
        config = {**program.trial_values(command), "run_id": command.run_id}
        config["group"] = config.get("group") or self.sweep.group
        return config

    def run_program(self, command: program.RunCommand, hooks: TrialHooks, beat: Heartbeat,
                    progress: dict) -> None:
        """A run of another program, as W&B's agent runs it: each history row holding the
        metric is an epoch for the store and hyperband; the run ends through hooks.ended.
        The console gets the lines a trial of ours prints: `run k/N id  a=1 b=x` and the
        sweep's progress first, `run k/N id finished: score 0.93` last."""
        from agent.trial.sinks import RunInfo
        from agent.trial.sinks.console_sink import end_line, header_lines
        from agent.trial.sinks.wandb_sink import DEFAULT_PROJECT

        def on_row(number: int, row: dict) -> bool:
            if not hooks.recorded(number, [row]):
                return True
            return hooks.should_stop(number, [row]) is not None or beat.taken.is_set()

        # As W&B's agent sets the sweep's project for its runs, and, offline, where no sweep
        # holds them together, the group our trainer's runs of this sweep get.
        command = replace(command, env={
            **command.env, "WANDB_PROJECT": os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            "WANDB_RUN_GROUP": os.environ.get("WANDB_RUN_GROUP") or self.sweep.group})
        metric = (self.sweep.config.get("metric") or {}).get("name")
        info = RunInfo(command.run_id, command.run_id, self.sweep.group, "", "", sweep={
            "id": self.sweep.id, "name": self.sweep.name, "config": self.sweep.config,
            "progress": progress})
        for line in header_lines(info, command.params):
            print(line, flush=True)
        result = program.run_program(command, self.wandb_dir, metric, on_row, hooks.interrupted)
        value = result.summary.get(metric)
        print(end_line(info, {}, result.state) + (f": {metric} {short_number(value)}" if
              isinstance(value, (int, float)) else ""), flush=True)
        if metric and value is None and result.state == "finished":
            where = program.run_file(self.wandb_dir, command.run_id)
            print(f"note: run {command.run_id} logged no {metric!r} "
                  + (f"in {where}{logged_names(result.summary, metric)}" if where else
                     f"where its agent reads it (WANDB_DIR={Path(self.wandb_dir).resolve()}; "
                     "a wandb.init(dir=...) of its own hides its history)")
                  + ": the sweep's search and early termination saw no value of it",
                  file=sys.stderr, flush=True)
        if result.state == "failed":
            raise program.RunFailed(result.error)
        hooks.ended({**result.summary, "state": result.state})

    def member_hooks(self, run_id: str, beat: Heartbeat, ended: dict,
                     stored: int = 0) -> TrialHooks:
        """The hooks of member `run_id`, whose store holds its epochs up to `stored`."""
        from agent.trial.member import TrialHooks

        store, owner = self.store, self.owner
        stored_through = [stored]

        def recorded(epoch: int, history: list[dict]) -> bool:
            # the rows after the store's last epoch that the run resumed with (its checkpoint
            # was written after the store's last epoch: a kill -9 between the two), then this
            earlier = [row for row in history[:-1] if row.get("epoch", 0) > stored_through[0]]
            if store.record_epoch(run_id, owner, epoch, history[-1], earlier):
                stored_through[0] = epoch
                return True
            beat.taken.set()  # the next step's interrupted() ends the pack
            return False

        def after_epoch(epoch: int, history: list[dict]) -> str | None:
            if beat.taken.is_set():
                return None
            return "early_terminate" if should_stop(store, run_id) else None

        def interrupted() -> bool:  # SIGTERM, a run of the pack no longer ours, no store
            return bool(self.signalled) or beat.taken.is_set() or beat.failed is not None

        def on_end(summary: dict) -> None:
            ended[run_id] = summary
            beat.forget(run_id)  # before the store says it ended: its beats stop here
            if summary["state"] == "failed":  # refused alone, before training (a checkpoint
                # of other values): its one line, as a run refused alone; the pack goes on
                self.record_failure([{"run_id": run_id}], [run_id], UserError(summary["error"]))
                return
            # A diverged run is a result: finished, with diverged=true in its summary.
            state = {"stopped": "stopped", "preempted": "preempted"}.get(summary["state"],
                                                                       "finished")
            if summary.get("sent_back") and not beat.taken.is_set():
                # the store's epoch is what it has a checkpoint of: a later claim packs it
                # with runs of that epoch, not again with those it could not resume beside
                store.forget_epochs(run_id, owner, after=summary["epochs_done"])
            if beat.taken.is_set() or not store.finish(run_id, owner, state,
                                                       None if state == "preempted"
                                                       else summary):
                taken_over(owner, run_id)
            elif state == "preempted" and summary.get("sent_back"):  # the trial said why
                print(f"agent {owner}: run {run_id} is back in the sweep, preempted: a later "
                      "claim resumes it", file=sys.stderr)
            elif state == "preempted" and summary.get("no_checkpoint"):
                print(f"agent {owner}: run {run_id} preempted after epoch "
                      f"{summary['epochs_done']}, but no checkpoint of it is kept "
                      f"({summary['no_checkpoint']}): the next agent starts it over",
                      file=sys.stderr)
            elif state == "preempted" and summary.get("epochs_done"):
                print(f"agent {owner}: run {run_id} preempted; its checkpoint is kept for "
                      "the next agent", file=sys.stderr)
            elif state == "preempted":
                print(f"agent {owner}: run {run_id} preempted in its first epoch (no "
                      "checkpoint yet): the next agent starts it over", file=sys.stderr)

        return TrialHooks(recorded=recorded, should_stop=after_epoch, interrupted=interrupted,
                          ended=on_end)

    def record_failure(self, configs: list[dict], run_ids: list[str], error: Exception) -> None:
        """The members that had not ended failed: their traceback goes to their run dirs
        (a UserError, a run refused before training, is its one line alone)."""
        line = " ".join(str(error).split()) if isinstance(error, UserError) else \
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        trace = None if isinstance(error, UserError) else traceback.format_exc()
        for config in configs:
            run_id = config["run_id"]
            if run_id not in run_ids:
                continue
            if not self.store.finish(run_id, self.owner, "failed", error=line):
                taken_over(self.owner, run_id)
                continue
            where = ""
            if trace is not None:
                path = run_directory(config.get("run_dir") or "data/runs", run_id)
                where = f"; traceback in {path / 'traceback.txt'}" \
                    if write_text_atomic(path / "traceback.txt", trace) else ""
            print(f"agent {self.owner}: run {run_id} failed ({line}){where}", file=sys.stderr)

    def size_packs_of(self, claimed: dict, count_left: int | None = None) -> None:
        """--pack auto, the first time this agent meets a kind of pack: time a few steps of
        packs of growing size (agent/trial/probe.py), up to as many runs of the kind as the
        sweep has left for it (and `count_left`, what --count still allows), and settle the
        size its claims take (at most BAYES_PACK in a bayes sweep). `claimed`: a run's config
        as the store holds it (claims key packs by it). SIGTERM or Ctrl-C stops the
        measurement at its next step, with nothing settled or claimed."""
        key = packable(claimed)
        try:
            # the trial's own config, with what the command's fixed arguments give
            config = program.values_for(self.sweep.config, claimed)
        except Exception as error:  # noqa: BLE001 (each run then fails alone, with its reason)
            self.sizer.settle(key, 1)
            self.say(f"--pack auto for {kind_text(self.sweep.config, claimed)}: runs alone "
                     f"(not measured: {one_line_reason(error)})")
            return
        runs = self.store.runs()
        work_left = runs_left(self.sweep.config, runs, claimed, packable)
        if count_left is not None:
            work_left = count_left if work_left is None else min(work_left, count_left)
        outlook = None if work_left is not None and work_left <= 1 else \
            expected_runs(self.sweep.config, runs, claimed, packable)
        if outlook is not None:  # runs of a random sweep not proposed yet: kinds by chance
            expected, likely = outlook
            if expected < MIN_EXPECTED_RUNS:
                self.sizer.settle(key, 1)
                self.say(f"--pack auto for {kind_text(self.sweep.config, claimed)}: runs "
                         f"alone (not measured: the sweep is expected to give "
                         f"{expected:.1f}{NBSP}runs of this kind, too few to pack)")
                return
            work_left = likely if work_left is None else min(work_left, likely)
        size_kind(self.sizer, key, config, self.sweep.config, work_left,
                  lambda: bool(self.signalled), lambda *lines: self.say(*lines),
                  folder=self.store.directory, owner=self.owner)

    def say(self, text: str, *more: str) -> None:
        say(self.owner, text, *more)


def looks_ahead(sweep_config: dict) -> int:
    """How many proposals after the one --pack auto measures an agent keeps as pending runs
    (controller.keep_proposal): a random sweep under run_cap, GRID_LOOKAHEAD in all, as a
    grid's claim looks ahead; 0 for other sweeps (a grid's claims look ahead themselves,
    bayes proposes from the results so far, an open-ended random sweep has no end to fill
    packs towards)."""
    if sweep_config.get("method") == "random" and sweep_config.get("run_cap"):
        return GRID_LOOKAHEAD - 1
    return 0


def kind_text(sweep_config: dict, config: dict) -> str:
    """A kind of pack as the agent names it: what the sweep varies among what a pack shares
    (model and optimizer when it varies none of that), `model=cnn optimizer=sgd`."""
    from agent.params import BY_NAME
    from agent.sweep_space import swept_parameters
    from agent.trial.member import PACK_SHARED

    names = [p.name for p in swept_parameters(sweep_config)
             if p.name in PACK_SHARED] or ["model", "optimizer"]
    return " ".join(f"{name}={brief(config.get(name, BY_NAME[name].default), 30, False)}"
                    for name in names if name in BY_NAME)


def one_line_reason(error: Exception) -> str:
    return one_line(error)[:100] or type(error).__name__


def size_kind(sizer: PackSizer, key, config: dict, sweep_config: dict, work_left: int | None,
              interrupted, say_line, folder: str | os.PathLike | None = None,
              owner: str = "") -> None:
    """--pack auto: settle `sizer`'s pack size for kind `key` by measuring packs of the
    trial config `config` (agent/trial/probe.py) up to `work_left` runs (None: no bound; at
    most BAYES_PACK in a bayes sweep), within a tenth of the time those runs would train
    alone (PROBE_MIN_S to PROBE_BUDGET_S). Says the outcome through say_line(text, *more).
    A kind that cannot be measured (its runs would fail) is settled at 1 (each run then
    fails alone, with its reason); an interruption (`interrupted()`, asked every step)
    forgets the kind, settles nothing. With a sweep's `folder`, agent `owner` (host:pid)
    measures in its turn among this host's agents on its device, and takes the size one of
    them settled on there instead where it may (agent/sweep/pack_share.py)."""
    from agent.sweep.pack_share import Stopped
    from agent.trial.probe import Interrupted

    kind = kind_text(sweep_config, config)
    largest = work_left  # the largest pack measured
    if sweep_config.get("method") == "bayes":
        largest = BAYES_PACK if largest is None else min(largest, BAYES_PACK)
    if largest is not None and largest <= 1:
        sizer.settle(key, 1)  # nothing to pack with
        return
    sizes, device = _size_file(folder, config)

    def waiting(holder: str) -> None:
        say_line(f"--pack auto for {kind}: waiting for agent {holder}, which measures packs "
                 f"on this device ({device}), to take its sizes")

    try:
        with sizes.turn(owner, interrupted, waiting) if sizes else nullcontext(False) as held:
            if sizes is not None and _adopted(sizer, key, sizes, largest, kind, say_line,
                                              held):
                return
            why_not = _probe_kind(sizer, key, config, largest, work_left, interrupted)
            if why_not is None and held:
                sizes.save(key, sizer.records[key], owner)
    except StoreError:
        raise
    except (Interrupted, Stopped):
        sizer.forget(key)  # measured again by the next agent that claims
        return
    if why_not is not None:
        sizer.settle(key, 1)
        say_line(f"--pack auto for {kind}: runs{NBSP}alone (not measured: {why_not})")
        return
    say_line(f"--pack auto for {kind}: packs{NBSP}of{NBSP}{sizer.next_size(key)}",
             f"({sizer.measured_text(key)})")


def _probe_kind(sizer: PackSizer, key, config: dict, largest: int | None,
                work_left: int | None, interrupted) -> str | None:
    """size_kind's measurement: settles `key` in `sizer`; None, or why the kind could not
    be measured (its runs then go alone). Raises Interrupted, StoreError."""
    from agent.trial.probe import Interrupted, measure_pack

    started, budget = time.perf_counter(), PROBE_BUDGET_S

    def measure(size: int, required: bool) -> tuple[float, float | None] | str:
        nonlocal budget
        if not required and time.perf_counter() - started > budget:
            return f"not measured (over {budget:.2g} s)"
        speed = measure_pack(config, size, interrupted)
        if speed is None:
            return "out of memory"
        if size == 1 and work_left is not None:  # what the kind's runs take alone
            alone_s = work_left * speed.run_images / speed.images_per_s
            budget = min(PROBE_BUDGET_S, max(PROBE_MIN_S, PROBE_SHARE * alone_s))
        return speed.images_per_s, speed.peak_memory_mb

    try:
        sizer.probe(key, measure, largest)
    except (StoreError, Interrupted):
        raise
    except Exception as error:  # noqa: BLE001 (each run then fails alone, with its reason)
        return one_line_reason(error)
    return None


def _size_file(folder: str | os.PathLike | None, config: dict):
    """(the SizeFile of `config`'s device in the sweep's `folder`, the device's name); (None,
    None) without a folder, or where the run's device is not on this machine or its config
    is refused (the measurement then says why)."""
    from agent.params import validate
    from agent.sweep.pack_share import SizeFile, device_name

    if folder is None:
        return None, None
    try:
        made = validate(config)
        device = device_name(made.device, made.num_threads)
    except Exception:  # noqa: BLE001 (the measurement says why, and the kind runs alone)
        return None, None
    return (None, None) if device is None else (SizeFile(folder, device), device)


def _adopted(sizer: PackSizer, key, sizes, largest: int | None, kind: str, say_line,
             writable: bool) -> bool:
    """Whether `sizer` took the size another agent settled on for `key` in `sizes` (a
    SizeFile), saying so; a file that cannot be read is named, and measured past (and
    replaced by what is measured, where its folder is `writable`)."""
    found = sizes.find(key)
    if sizes.problem:
        say_line(f"--pack auto: {sizes.path} cannot be read ({sizes.problem}): measuring"
                 + ("; what is measured replaces it" if writable else ""))
    if found is None or not sizer.adopt(key, found[0], largest):
        return False
    say_line(f"--pack auto for {kind}: packs{NBSP}of{NBSP}{sizer.next_size(key)}",
             f"(measured by agent {found[1]}: {sizer.measured_text(key)})")
    return True


def say(owner: str, text: str, *more: str) -> None:
    """An agent's line on stderr, and `more` lines under it, indented; each wrapped within
    80 columns, never at an NBSP (which is written as a space)."""
    lines = textwrap.wrap(f"agent {owner}: {text}", 80, subsequent_indent="  ",
                          break_on_hyphens=False)
    for line in more:
        lines += textwrap.wrap(line, 80, initial_indent="  ", subsequent_indent="   ",
                               break_on_hyphens=False)
    # one write with its last newline: print writes that apart, and a line-buffered stderr
    # passes the lines on at the first write, so another agent's line sharing the terminal
    # could land before that newline
    print("\n".join(lines).replace(NBSP, " ") + "\n", end="", file=sys.stderr)


def pack_sizer(pack: int | None) -> PackSizer:
    """What sizes an agent's packs: `pack` runs a trial, None for --pack auto (which sizes
    packs by the device's memory too: torch is imported for it)."""
    sizer = PackSizer(fixed=pack)
    if pack is None:
        sizer.memory_mb = _device_memory_mb()
    return sizer


def run_local_agent(store: SweepStore, count: int | None = None,
                    heartbeat_s: float = HEARTBEAT_S, timeout: float = HEARTBEAT_TIMEOUT_S,
                    pack: int | None = 1, sizer: PackSizer | None = None,
                    signalled: list[int] | None = None) -> int:
    """Work on a local sweep until it is done (or `count` runs), `pack` runs a trial (None:
    --pack auto), or as `sizer` says (one kept over several sweeps in one process: what
    --pack auto measured for a kind of pack holds for the next sweep's runs of that kind).
    Returns the agent's exit code: 1 after 3 failed trials in a row. The stop signals it
    had are added to `signalled` (the command that ran it reads there whether a Ctrl-C
    stopped it: interrupted_code)."""
    return LocalAgent(store, heartbeat_s, timeout, sizer or pack_sizer(pack),
                      signalled).run(count)


def _device_memory_mb() -> float | None:
    """This agent's share of its GPU's memory (the launcher's agents on it share it), in MiB;
    None on a CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**20 / agents_per_device()


def run_wandb_agent(sweep_path: str, count: int | None, project: str | None,
                    pack: int | None = 1, signalled: list[int] | None = None) -> int:
    """Agents on a W&B sweep: configs come from the server (agent/sweep/wandb_agent.py),
    `pack` runs a trial (agent/sweep/wandb_pack.py). The stop signals they had are added to
    `signalled`."""
    from agent.sweep.wandb_agent import run_wandb_sweep

    signalled = [] if signalled is None else signalled
    stop_at_next_step_of_runs(signalled)  # the trial preempts at its next step
    return run_wandb_sweep(sweep_path, count, project, interrupted=lambda: bool(signalled),
                           pack=pack)


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    """The agent's options, every one checked (UserError, one line)."""
    parser = CommandParser(prog="python -m agent.sweep.agent_loop",
                           description="Run one sweep agent in this process.")
    parser.add_argument("sweep", help="local sweep (directory or id), or with --wandb a W&B "
                        "sweep id or entity/project/id")
    parser.add_argument("--wandb", action="store_true", help="pull configs from W&B's server")
    parser.add_argument("--count", type=int_option(1, 10**9), default=None,
                        help="stop after N runs")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT"))
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT_S,
                        help="seconds between beats")
    parser.add_argument("--heartbeat-timeout", type=float, default=HEARTBEAT_TIMEOUT_S,
                        help="seconds of silence after which a running run is crashed")
    parser.add_argument("--pack", default="1", help="runs trained together as one packed "
                        "model: an integer, or auto (as many as still raise throughput)")
    args = parser.parse_args(argv)
    check_heartbeat(args.heartbeat, args.heartbeat_timeout)
    args.pack = parse_pack(args.pack)
    return args


def main(argv: list[str] | None = None) -> int:
    """The agent of `argv`; its exit code: 130 once a Ctrl-C preempted it (its run kept
    resumable, as SIGTERM's, which ends it with 0)."""
    args = parse_options(argv)
    signalled: list[int] = []
    if args.wandb:  # reachable with credentials, or one line (never a login prompt)
        check_wandb_sweep(SweepTarget("wandb", args.sweep, wandb_path=args.sweep))
        code = run_wandb_agent(args.sweep, args.count, args.project, args.pack, signalled)
    else:
        code = run_local_agent(open_store(args.sweep), args.count, args.heartbeat,
                               args.heartbeat_timeout, args.pack, signalled=signalled)
    return interrupted_code(code, signalled)


if __name__ == "__main__":
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # A launcher's agent (started with Ctrl-C ignored, launch.IGNORING_CTRL_C): its
        # launcher ends as interrupted, once for all its agents, each of which had the
        # terminal's Ctrl-C too; it says nothing of its own and exits with its code
        raise SystemExit(exit_on_user_error(main))
    exit_command(main)  # after a Ctrl-C: killed by SIGINT, its closing lines out
