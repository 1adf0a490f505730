"""Our agent on a W&B sweep: K of W&B's agents in one process, their runs trained as one
packed model (`./run_sweep.sh entity/project/sweep-id --pack K`; without --pack, K = 1: each
run alone, the same agent).

W&B's agent protocol hands each agent one run at a time: an agent registers with the sweep
(`_register_agent`), then beats (`_agent_heartbeat`) with the runs it has alive, and the
server answers with commands: `run` (train this run), `stop` (early_terminate ended it),
`exit`. These are the two functions W&B's own Python agent calls (wandb/agents/pyagent.py).
This agent registers one W&B agent per member slot, so to the server a pack of K runs is K
agents of one host each training its run; a beat thread reports every slot's run alive while
the pack trains (every HEARTBEAT_S, as W&B's agent beats) and passes `stop` on to that member
only. Each member is its own W&B run (wandb.init with the run's id, the sweep's id in its
settings, reinit="create_new"): what `wandb agent` would have made of it, one process each.
Runs handed out that cannot train together (another model, batch size, ...) wait for the next
pack; a run our trainer refuses fails alone, with its reason.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from agent.params import RunConfig
from agent.sweep.pack_size import PackSizer, agents_per_device
from agent.sweep.wandb_agent import run_config
from agent.trial.sinks import wandb_sink
from util.errors import UserError, one_line, without_api_key

HEARTBEAT_S = 5.0  # W&B's Python agent beats every 5 s (pyagent.Agent.HEARTBEAT_SLEEP_SECONDS)
STOPPED_BY_WANDB = "stopped by W&B (the sweep's early_terminate)"
STOPPED_IN_WANDB = wandb_sink.STOPPED_IN_WANDB  # a user's Stop in W&B: its sink says it

# wandb's message when its service process (wandb-core) is gone, as its API calls say it
# (wandb/sdk/lib/service/service_connection.py, 0.31); a call whose connection to it broke
# raises one of wandb.sdk.mailbox's closed-mailbox errors instead
SERVICE_GONE = "the service process is not running"


def service_gone(error: BaseException) -> bool:
    """Whether a failed call into wandb says its service process (wandb-core) is gone: one
    of its closed-mailbox errors, its message, or the socket to it broken (a ConnectionError
    raised in wandb's service client)."""
    from wandb.sdk.mailbox import HandleAbandonedError, MailboxClosedError

    if isinstance(error, ConnectionError):
        return any(f"wandb{os.sep}sdk{os.sep}lib{os.sep}service" in frame.filename
                   for frame in traceback.extract_tb(error.__traceback__))
    return isinstance(error, (MailboxClosedError, HandleAbandonedError)) \
        or SERVICE_GONE in str(error)


class SwallowedErrors(logging.Handler):
    """The last exception each thread's call into wandb's sweep helpers logged: they log a
    failed heartbeat and answer [] as if the server had no run (only a deleted sweep raises),
    so an agent whose wandb-core died would wait for a run forever."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.last: dict[int, BaseException | None] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last[record.thread] = record.exc_info[1]

    def take(self) -> BaseException | None:
        """The exception logged by this thread since its last take()."""
        return self.last.pop(threading.get_ident(), None)


SWALLOWED = SwallowedErrors()
logging.getLogger("wandb.apis.public.sweeps").addHandler(SWALLOWED)


@dataclass
class Slot:
    """One W&B agent of this process, and the run the server handed it (None: idle)."""

    agent_id: str
    run_id: str | None = None
    values: dict | None = None  # the run's parameters, as the server handed them
    config: RunConfig | None = None  # what our trainer makes of them (once checked)
    training: bool = False


@dataclass
class PackedWandbAgent:
    """Claims up to `size` runs of W&B sweep `sweep_id` (one per slot) and trains those that
    can share a fused model as one pack, until the server says exit, `count` runs were
    taken, or `interrupted()`. `size` None is --pack auto: the first run of each kind of pack
    is measured (agent/trial/probe.py, as a local sweep's agent does) before its kind is
    packed. `outcomes` gets each run's end: finished, stopped, diverged, preempted or
    failed."""

    api: object
    sweep_id: str
    entity: str | None
    project: str | None
    sweep_config: dict
    size: int | None
    count: int | None
    interrupted: Callable[[], bool]
    wandb_dir: str = field(default_factory=lambda: os.environ.get("WANDB_DIR") or os.getcwd())
    slots: list[Slot] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)  # runs the sweep's early_terminate stops
    outcomes: list[str] = field(default_factory=list)
    exit: bool = False  # the server said exit: no more runs for this agent
    service_gone: str | None = None  # how a beat found wandb's service process gone
    not_started: str | None = None  # why wandb.init failed for a run (the agent stops)
    handed: int = 0  # runs the server handed to this agent's slots
    lock: threading.Lock = field(default_factory=threading.Lock)
    sizer: PackSizer | None = None  # --pack auto's measurements (made when size is None)
    room: object = None  # a PackRoom (agent/trial/preflight.py), made at the first pack

    def __post_init__(self):
        if self.sizer is None:
            self.sizer = PackSizer(fixed=self.size)
            if self.size is None:  # auto sizes packs by the device's memory, too
                from agent.sweep.agent_loop import _device_memory_mb

                self.sizer.memory_mb = _device_memory_mb()

    def run(self) -> None:
        while not self.interrupted() and self.service_gone is None \
                and self.not_started is None:
            if not self._waiting() and not self._may_take():
                break
            room = self._room()
            wanted = self._wanted()
            claimed = self.claim(wanted if room is None
                                 else min(wanted, len(self._waiting()) + room))
            if not claimed:
                self._sleep(HEARTBEAT_S)
                continue
            self.train(claimed)
        waiting = [s.run_id for s in self._waiting()]
        if waiting:  # handed to this agent, not started: W&B hands them out again
            print(f"agent: run(s) {', '.join(waiting)} not started (the agent stops); W&B "
                  "gives them to the next agent once this one is gone", file=sys.stderr)

    def _waiting(self) -> list[Slot]:
        with self.lock:
            return [s for s in self.slots if s.run_id and not s.training]

    def _wanted(self) -> int:
        """Runs the next claim asks for: --pack K; with auto, the size of the kind of the
        first run waiting, else the largest size measured so far, else 1 (the first run of
        a kind is claimed alone, measured, and its pack filled up after)."""
        if self.size is not None:
            return self.size
        waiting = [s for s in self._waiting() if s.config is not None]
        known = [self._key(s.config) for s in waiting
                 if self.sizer.knows(self._key(s.config))]
        if known:
            return self.sizer.next_size(known[0])
        sizes = [self.sizer.next_size(k) for k in self.sizer.records if self.sizer.knows(k)]
        return max(sizes, default=1)

    @staticmethod
    def _key(config: RunConfig) -> tuple:
        from agent.trial.member import pack_key

        return pack_key(config)

    def _room(self) -> int | None:
        """How many more runs this agent may take (None: no bound, without --count)."""
        return None if self.count is None else self.count - self.handed

    def _may_take(self) -> bool:
        """Whether an idle slot may ask for a run: not after `exit`, a signal, or --count."""
        return not self.exit and not self.interrupted() and self._room() != 0

    # --- talking to W&B's server -----------------------------------------------------------

    def _register(self) -> Slot:
        from wandb.apis.public.sweeps import _register_agent

        agent = _register_agent(self.api, socket.gethostname(), sweep_id=self.sweep_id,
                                project=self.project, entity=self.entity)
        return Slot(agent["id"])

    def _beat(self, slot: Slot) -> None:
        """One heartbeat of `slot`'s agent (its run alive, if it has one); a `run` command
        gives the slot its run, `stop` marks that run stopped, `exit` ends the claiming."""
        from wandb.apis.public.sweeps import _agent_heartbeat
        from wandb.sdk.sweeps import SweepNotFoundError

        with self.lock:
            states = {slot.run_id: True} if slot.run_id else {}
        SWALLOWED.take()
        try:
            commands = _agent_heartbeat(self.api, slot.agent_id, {}, states) or []
        except SweepNotFoundError:  # deleted: the packs training go on, no new run
            if not self.exit:
                print(f"agent: W&B sweep {self.sweep_id} was deleted (or this agent was not "
                      "found): no more runs", file=sys.stderr)
            self.exit = True
            return
        failed = SWALLOWED.take()
        if failed is not None and service_gone(failed):
            self._lost_service(failed)
            return
        with self.lock:
            for command in commands[:1]:  # one at a time, as W&B's own agent takes them
                kind = command.get("type")
                if kind in ("run", "resume") and slot.run_id is None:
                    self.handed += 1
                    slot.run_id = command["run_id"]
                    slot.values = {name: spec.get("value") for name, spec
                                   in (command.get("args") or {}).items()}
                elif kind == "stop":
                    self.stopped.add(command.get("run_id"))
                elif kind == "exit":
                    self.exit = True

    def claim(self, wanted: int) -> list[Slot]:
        """Up to `wanted` slots holding a run not trained yet: runs handed out earlier first,
        then a beat of each idle slot, then of new slots (one W&B agent each), while --count
        leaves room and until a beat brings no run (the server has none ready now)."""
        for slot in list(self.slots):
            if len(self._waiting()) >= wanted or not self._may_take():
                return self._waiting()[:wanted]
            if slot.run_id is None:
                self._beat(slot)
                if slot.run_id is None:
                    return self._waiting()[:wanted]
        while len(self._waiting()) < wanted and self._may_take():
            slot = self._register()
            self.slots.append(slot)
            self._beat(slot)
            if slot.run_id is None:
                break
        return self._waiting()[:wanted]

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.interrupted():
            time.sleep(0.1)

    # --- training --------------------------------------------------------------------------

    def train(self, claimed: list[Slot]) -> None:
        """The claimed runs, those our trainer accepts grouped by pack key (in the order they
        came): each group trains as one pack (of at most its kind's size with auto, the rest
        waiting) while a thread beats for every slot. With auto, a group of a kind not
        measured yet is measured first and then waits for the claim that fills its pack."""
        groups: dict[tuple, list[Slot]] = {}
        for slot in claimed:
            if slot.config is None:
                try:
                    slot.config = run_config(self.sweep_config, slot.values or {},
                                             sweep_id=self.sweep_id, run_id=slot.run_id,
                                             wandb_dir=self.wandb_dir)
                except UserError as error:
                    self._refused(slot, one_line(error))
                    continue
            groups.setdefault(self._key(slot.config), []).append(slot)
        for key, group in groups.items():
            if self.interrupted():
                return  # the rest wait: handed out again once this agent is gone
            if not self.sizer.knows(key):
                with self._beating():
                    self._measure(key, group[0].config, len(group))
                if self.sizer.knows(key) and self.sizer.next_size(key) > len(group) \
                        and self._may_take():
                    return  # claimed again, with the pack's size
            self.train_pack(group[:self._room_for(key, group[0].config)])

    def _refused(self, slot: Slot, line: str) -> None:
        """A run our trainer refuses (a value its distribution drew outside the range, which
        W&B's server hands out as any other): it fails alone, its one line on stderr and in
        its W&B record, a failed run (exit code 1) whose summary's `error` is that line
        (where `wandb agent` would leave a run that never started, and no reason); its slot
        takes the next run."""
        import wandb

        print(f"agent: run {slot.run_id} failed ({line})", file=sys.stderr)
        self.outcomes.append("failed")
        try:
            run = wandb.init(
                id=slot.run_id, config=slot.values or {}, project=self.project,
                entity=self.entity, mode=wandb_sink.chosen_mode(), reinit="create_new",
                dir=self.wandb_dir, resume="allow",
                settings=wandb.Settings(silent=True, console="off", sweep_id=self.sweep_id,
                                        **wandb_sink.finish_settings()))
            run.summary["error"] = line
            self._end_unadopted(run, preempted=False)
        except wandb.errors.Error as error:  # W&B away: the line above is all there is
            print(f"agent: W&B did not take run {slot.run_id}'s failure "
                  f"({type(error).__name__}: {without_api_key(one_line(error))[:120]})",
                  file=sys.stderr)
        finally:
            self._release(slot, slot.run_id)

    def _room_for(self, key: tuple, config: RunConfig) -> int:
        """The size of `key`'s next pack: the sizer's, capped by what one trial on this
        agent's device holds (PackRoom); the other runs wait in their slots."""
        from agent.trial.preflight import PackRoom

        self.room = self.room or PackRoom(share=1 / agents_per_device())
        return self.room.cap(key, self.sizer.next_size(key), lambda: config)

    def _measure(self, key: tuple, config: RunConfig, claimed: int) -> None:
        """--pack auto: settle the size of `key`'s packs, measuring packs of `config` up to
        the runs --count leaves and the runs the sweep makes at most (a grid's size, or
        run_cap): W&B's server does not say how many of them are left."""
        from agent.sweep.agent_loop import say, size_kind
        from agent.sweep.engine import planned_runs

        room = self._room()
        bounds = [n for n in (None if room is None else room + claimed,
                              planned_runs(self.sweep_config)) if n is not None]
        raw = {name: value for name, value in config.items() if name != "run_id"}
        size_kind(self.sizer, key, raw, self.sweep_config, min(bounds, default=None),
                  self.interrupted,
                  lambda *lines: say(f"{socket.gethostname()}:{os.getpid()}", *lines))

    def train_pack(self, group: list[Slot]) -> None:
        import wandb

        from agent.trial.loop import TrialHooks, train_pack

        configs = [slot.config for slot in group]
        for slot, config in zip(group, configs):
            slot.training = True
            try:
                wandb_sink.STARTED[config.run_id] = wandb.init(
                    id=config.run_id, group=config.group, name=config.run_name or config.run_id,
                    config=dict(config), project=self.project, entity=self.entity,
                    mode=wandb_sink.chosen_mode(), reinit="create_new", dir=self.wandb_dir,
                    resume="allow",  # a run W&B hands out again (`resume`) goes on, not over
                    settings=wandb.Settings(silent=True, console="off", sweep_id=self.sweep_id,
                                            stop_fn=wandb_sink.stop_fn(config.run_id),
                                            **wandb_sink.finish_settings()))
            except wandb.errors.Error as error:
                self._not_started(group, configs, error)
                return
        ends: dict[str, str] = {}  # run id -> the state it ended in
        hooks = [TrialHooks(should_stop=self._stop_check(config.run_id),
                            interrupted=self.interrupted,
                            ended=self._ended(slot, config.run_id, ends))
                 for slot, config in zip(group, configs)]
        try:
            with self._beating():
                summaries = train_pack([dict(config) for config in configs], hooks)
            self.outcomes += [summary["state"] for summary in summaries]
        except Exception as error:  # noqa: BLE001 (the pack's runs fail; the agent goes on)
            if service_gone(error):  # not a bug of ours: one line, and the agent stops
                self._lost_service(error)
            else:
                traceback.print_exc()
            print(f"agent: run(s) {', '.join(c.run_id for c in configs)} failed "
                  f"({type(error).__name__})", file=sys.stderr)
            self.outcomes += ["failed"] * len(group)
        finally:
            for slot, config in zip(group, configs):
                left = wandb_sink.STARTED.pop(config.run_id, None)
                if left is not None:  # the trial ended before its sinks started (preempted:
                    # sent back by the trial, for W&B to hand out again)
                    self._end_unadopted(left, preempted=ends.get(config.run_id) == "preempted")
                self._release(slot, config.run_id)

    def _end_unadopted(self, run, preempted: bool) -> None:
        """Finish a W&B run that no trial's sink took over, failed (or preempted: W&B hands
        it out again). The server away past the finish timeout, or wandb's service process
        gone, is one line, not a traceback out of the agent."""
        try:
            if preempted:
                run.mark_preempting()
            wandb_sink.finish_run(run, 1)
        except Exception as error:  # noqa: BLE001 (said in one line below, or re-raised)
            if not service_gone(error):
                raise
            self._lost_service(error)

    def _lost_service(self, error: BaseException) -> None:
        """wandb's service process is gone: said once, and the agent takes no more runs."""
        with self.lock:
            said, self.service_gone = self.service_gone, self.service_gone \
                or type(error).__name__
            self.exit = True
        if said is None:
            print("agent: wandb's service process (wandb-core) is gone, so this agent can "
                  "neither take runs nor log them; it stops (start it again to go on)",
                  file=sys.stderr)

    def _not_started(self, group: list[Slot], configs: list, error: Exception) -> None:
        """wandb.init failed for a member (W&B's server away past wandb's init_timeout): no
        run of the pack trains (those started are left preempted, for W&B to hand out again
        with the others), and the agent stops with one line rather than a traceback."""
        for slot, config in zip(group, configs):
            started = wandb_sink.STARTED.pop(config.run_id, None)
            if started is not None:
                self._end_unadopted(started, preempted=True)
            self._release(slot, config.run_id)
        self.not_started = f"{type(error).__name__}: {without_api_key(one_line(error))[:160]}"
        self.exit = True
        print(f"agent: W&B could not start run(s) {', '.join(c.run_id for c in configs)} "
              f"({self.not_started}); the agent stops, and W&B hands them out again",
              file=sys.stderr)

    @contextmanager
    def _beating(self):
        """A thread beating for every slot (_beat_while) while the block runs."""
        done = threading.Event()
        beats = threading.Thread(target=self._beat_while, args=(done,), daemon=True)
        beats.start()
        try:
            yield
        finally:
            done.set()
            beats.join()

    def _stop_check(self, run_id: str) -> Callable[[int, list[dict]], str | None]:
        def should_stop(epoch: int, history: list[dict]) -> str | None:
            with self.lock:
                return STOPPED_BY_WANDB if run_id in self.stopped else None
        return should_stop

    def _ended(self, slot: Slot, run_id: str, ends: dict[str, str]) -> Callable[[dict], None]:
        def ended(summary: dict) -> None:
            ends[run_id] = summary["state"]
            if summary["state"] == "failed":  # refused alone; the pack trains without it
                self._refused_member(run_id, summary["error"])
            self._release(slot, run_id)  # its beats say it is over; it may get the next run
        return ended

    def _refused_member(self, run_id: str, line: str) -> None:
        """A member the trial refused before training (its checkpoints trained with other
        values): as a run refused alone (_refused), its line on stderr and as its W&B
        summary's `error`; its W&B run, which no sink took over, ends failed with the pack."""
        import wandb

        print(f"agent: run {run_id} failed ({line})", file=sys.stderr)
        run = wandb_sink.STARTED.get(run_id)
        try:
            if run is not None:
                run.summary["error"] = line
        except wandb.errors.Error as error:  # W&B away: the line above is all there is
            print(f"agent: W&B did not take run {run_id}'s failure ({type(error).__name__}: "
                  f"{without_api_key(one_line(error))[:120]})", file=sys.stderr)

    def _release(self, slot: Slot, run_id: str | None) -> None:
        """The slot is idle again, if it still holds `run_id` (a slot freed mid-pack may
        already hold the next run, waiting for the next pack)."""
        with self.lock:
            if slot.run_id == run_id:
                slot.run_id, slot.values, slot.config, slot.training = None, None, None, False

    def _beat_while(self, done: threading.Event) -> None:
        """Every HEARTBEAT_S until `done`: a beat of every slot with a run, and of the idle
        ones while --count leaves room (runs handed to them wait for the next pack)."""
        while not done.wait(HEARTBEAT_S):
            for slot in list(self.slots):
                if slot.run_id is None and not self._may_take():
                    continue  # an idle slot beats only to take a run
                try:
                    self._beat(slot)
                except Exception as error:  # noqa: BLE001 (a lost beat; the next one retries)
                    print(f"agent: heartbeat failed ({type(error).__name__}: "
                          f"{one_line(error)[:100]})", file=sys.stderr)
