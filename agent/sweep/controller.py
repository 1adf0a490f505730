"""The embedded sweep controller: what an agent runs next, and when a run should stop.

Decisions are pure functions of the sweep config and the runs so far (`crash_repairs`,
`choose_work`), built on W&B's own engine (`sweeps.next_run`, `sweeps.stop_runs`); `claim`
applies one decision to the store inside a single write transaction, so concurrent agents
never take the same work. No torch here: which configs can share one packed trial is the
caller's `pack_key`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from agent.ids import new_run_id
from agent.sweep.engine import planned_runs, proposed_batch, stop_decisions, target_reached
from agent.sweep.program import runs_our_trainer
from agent.sweep.store import Run, SweepStore
from util.errors import UserError

HEARTBEAT_S = 5.0  # seconds between an agent's heartbeats
HEARTBEAT_TIMEOUT_S = 60.0  # a running run silent this long is taken for crashed
MIN_BEATS_PER_TIMEOUT = 3  # a run is declared crashed only after this many missed beats
MIN_HEARTBEAT_S = 0.1  # more often, the beats of many agents keep the store's lock busy
MAX_HEARTBEAT_S = 3600.0  # beyond an hour, a crash would go unnoticed for hours
MAX_HEARTBEAT_TIMEOUT_S = 86400.0  # a day: a killed run is repeated the same day
PROPOSALS_PER_MEMBER = 4  # engine proposals one claim may ask for, per member wanted
GRID_LOOKAHEAD = 256  # ... and at least this many in a grid, where kinds of pack interleave
KIND_SAMPLE = 128  # engine draws that estimate a kind's share of a random sweep's runs to come

PackKey = Callable[[dict], Hashable]
# How many runs a claim takes: a number, or a function of the pack key of the runs it takes
# and the config of the first of them (--pack auto sizes each kind of pack by what that kind
# measured; it may raise to abandon the claim, which then writes nothing).
PackSize = int | Callable[[Hashable, dict], int]


def _sized(wanted: PackSize, key: Hashable, like: dict) -> int:
    return _size_for(wanted, key, like) if callable(wanted) else wanted


def _size_for(count: PackSize, key: Hashable, like: dict) -> int:
    wanted = count(key, like) if callable(count) else count
    if wanted < 1:
        raise ValueError(f"count={wanted}: a claim asks for one run or more")
    return wanted


@dataclass(frozen=True)
class ClaimedRun:
    """One run handed to an agent: train `config` as run `run_id`, from epoch `epoch` when
    `resumed` (a preempted run's checkpoint, or the checkpoint of the crashed run `repeats`)."""

    run_id: str
    config: dict
    resumed: bool = False
    epoch: int = 0
    repeats: str | None = None  # the crashed run this one repeats (its checkpoint: epoch > 0)


@dataclass
class Claim:
    """The outcome of asking for work: `run` (the runs to train together, sharing the
    store's `pack` id when more than one was asked for), `wait` or `done`."""

    kind: str  # "run", "wait" or "done"
    runs: list[ClaimedRun] = field(default_factory=list)
    pack: str | None = None
    running: list[Run] = field(default_factory=list)  # wait: the runs other agents train


@dataclass
class Work:
    """A decision of `choose_work`: stored runs to take (all preempted, or all pending),
    new engine proposals to start, and proposals of another pack key to store as pending."""

    kind: str  # "run", "wait" or "done"
    take: list[Run] = field(default_factory=list)
    start: list[dict] = field(default_factory=list)
    park: list[dict] = field(default_factory=list)
    size: int = 1  # how many runs were asked for (the pack size for this kind of pack)


def check_heartbeat(heartbeat_s: float, timeout_s: float) -> None:
    """UserError (one line) unless MIN_HEARTBEAT_S <= heartbeat_s <= MAX_HEARTBEAT_S and
    timeout_s is a finite number of seconds of at least MIN_BEATS_PER_TIMEOUT heartbeats and
    at most MAX_HEARTBEAT_TIMEOUT_S: a shorter one takes live runs for crashed (and runs them
    twice), an endless one never repairs any."""
    if not (math.isfinite(heartbeat_s) and MIN_HEARTBEAT_S <= heartbeat_s <= MAX_HEARTBEAT_S):
        raise UserError(f"--heartbeat={heartbeat_s!r}: expected seconds between heartbeats, "
                        f"a number in [{MIN_HEARTBEAT_S:g}, {MAX_HEARTBEAT_S:g}]")
    least = MIN_BEATS_PER_TIMEOUT * heartbeat_s
    if not (math.isfinite(timeout_s) and least <= timeout_s <= MAX_HEARTBEAT_TIMEOUT_S):
        raise UserError(f"--heartbeat-timeout={timeout_s!r}: expected a finite number of "
                        f"seconds, at least {MIN_BEATS_PER_TIMEOUT} heartbeats ({least:g} s "
                        f"with --heartbeat {heartbeat_s:g}) and at most "
                        f"{MAX_HEARTBEAT_TIMEOUT_S:g}")


def crash_repairs(runs: list[Run], now: float, timeout: float,
                  resumable: bool = False) -> tuple[list[str], list[Run]]:
    """Pure: (ids of running runs whose heartbeat is older than `timeout` seconds at `now`,
    runs to re-queue: those and the crashed runs, each once, a repeat itself only when
    `resumable` (our trainer: a repeat continues from the checkpoint of the run it repeats,
    `_repeat`) and it recorded an epoch past that run's: its own checkpoint is then further
    on, and repeating it loses none of its epochs. A run that crashes again before an epoch
    more (the OOM killer at the same step) is not repeated again: each repeat gets further
    than the last, so there are at most as many as the run has epochs)."""
    stale = [r.id for r in runs if r.state == "running" and (r.heartbeat or 0) < now - timeout]
    repeated = {r.requeued_from for r in runs if r.requeued_from}
    epochs = {r.id: r.epoch for r in runs}
    requeue = [r for r in runs if (r.state == "crashed" or r.id in stale)
               and repeatable(r, epochs, resumable) and r.id not in repeated]
    return stale, requeue


def repeatable(run: Run, epochs: dict[str, int], resumable: bool) -> bool:
    """Whether `run`, crashed, is repeated (`crash_repairs`): a run that repeats none, or a
    repeat that continued from a checkpoint (`resumable`, its checkpoint kept) and recorded
    an epoch past the run it repeats (`epochs`: run id -> last recorded epoch)."""
    if not run.requeued_from:
        return True
    return resumes(run, resumable) and run.epoch > epochs.get(run.requeued_from, run.epoch)


def not_repeated_why(run: Run, resumable: bool) -> str:
    """Why the crashed repeat `run` is not repeated again (`repeatable` False), in words."""
    if not resumable:
        return "a repeat of another program's run is not repeated"
    if not _checkpointed(run):
        return "checkpoint: false: a repeat starts over, and is not repeated again"
    return "no epoch further than before: a crash the configuration may cause"


def _checkpointed(run: Run) -> bool:
    """Whether the run's trials write checkpoints (unless its config says checkpoint: false)."""
    return run.config.get("checkpoint") is not False


def resumes(run: Run, resumable: bool) -> bool:
    """Whether a repeat of `run` continues from its checkpoint: our trainer's run
    (`resumable`) that writes checkpoints."""
    return resumable and _checkpointed(run)


def choose_work(sweep_config: dict, runs: list[Run], count: PackSize = 1,
                pack_key: PackKey | None = None) -> Work:
    """Pure: up to `count` runs that can share one packed trial (equal `pack_key(config)`);
    a callable `count` is asked for the size once the pack key of the work is known, with
    that key and the config of the work's first run.

    Preempted runs first (and repeats of crashed runs that continue from a checkpoint), a
    group of equal (pack key, epoch) so that a preempted pack resumes together; else pending
    runs of the first one's key, topped up with engine proposals of that key
    (`propose_members`); else `wait` while runs are running (one may still crash and need
    repeating), else `done`.
    """
    key = pack_key or (lambda config: None)
    # preempted runs and the repeats of crashed runs that continue from their checkpoints
    resuming = [r for r in runs if r.state == "preempted" or (r.state == "pending" and r.epoch)]
    if resuming:
        first = (key(resuming[0].config), resuming[0].epoch)
        wanted = _size_for(count, first[0], resuming[0].config)
        return Work("run", take=[r for r in resuming
                                 if (key(r.config), r.epoch) == first][:wanted], size=wanted)
    pending = [r for r in runs if r.state == "pending"]
    take = []
    wanted: PackSize = count
    if pending:
        first = key(pending[0].config)
        wanted = _size_for(count, first, pending[0].config)
        take = [r for r in pending if key(r.config) == first][:wanted]
    more = wanted - len(take) if take else wanted
    start, park = propose_members(sweep_config, runs, more, key,
                                  take[0].config if take else None)
    if take or start:
        like = take[0].config if take else start[0]
        return Work("run", take, start, park, size=_size_for(count, key(like), like))
    return Work("wait" if any(r.state == "running" for r in runs) else "done")


def propose_members(sweep_config: dict, runs: list[Run], wanted: PackSize, key: PackKey,
                    like: dict | None) -> tuple[list[dict], list[dict]]:
    """Pure: (up to `wanted` engine proposals whose pack key is that of `like`, or of the
    first proposal when `like` is None; the proposals of other keys, to park as pending).
    A callable `wanted` is asked with that key once it is known.

    The engine sees every earlier proposal of this call as a running run, so grid, random
    and bayes give distinct ones. At most proposal_budget(wanted) proposals are asked for,
    and never more than the sweep's `run_cap` allows (repeats of crashed runs do not count
    against it)."""
    room = math.inf
    if sweep_config.get("run_cap"):
        room = sweep_config["run_cap"] - sum(not r.requeued_from for r in runs)
    start: list[dict] = []
    park: list[dict] = []
    seen = list(runs)
    size = None if like is None else _sized(wanted, key(like), like)
    asked = 0
    while size is None or (len(start) < size and asked < proposal_budget(sweep_config, size)):
        # one engine call for what is still wanted (grid and random give that many at once)
        n = 1 if size is None else min(size - len(start),
                                       proposal_budget(sweep_config, size) - asked)
        n = int(min(n, room - asked))
        if n < 1:
            break
        batch = proposed_batch(sweep_config, seen, n)
        for params in batch:
            seen.append(Run(id=f"proposal-{asked}", seq=len(seen) + 1, config=params,
                            state="running"))
            asked += 1
            if like is None:
                like = params
                size = _sized(wanted, key(like), like)
            (start if key(params) == key(like) else park).append(params)
        if not batch or (len(batch) < n and sweep_config.get("method") == "grid"):
            break  # exhausted, or a run reached metric.target
    return start, park


def proposal_budget(sweep_config: dict, size: int) -> int:
    """How many engine proposals a claim of `size` runs may ask for: PROPOSALS_PER_MEMBER a
    member; in a grid at least GRID_LOOKAHEAD, where the engine walks the points with the
    last parameter varying fastest, so that a kind of pack may recur only every few dozen
    proposals (the others are parked as pending: a grid makes every point a run anyway).
    In a bayes sweep `size` itself: bayes proposes from the results so far, and `size` W&B
    agents asking at once get `size` proposals; more would park runs of other kinds that
    train after this pack's results are in, proposed without them."""
    method = sweep_config.get("method")
    if method == "bayes":
        return size
    budget = PROPOSALS_PER_MEMBER * size
    return max(budget, GRID_LOOKAHEAD) if method == "grid" else budget


def _repeat(tx, crashed: list[Run], resumable: bool) -> None:
    """Each crashed run repeated once as a new pending run: from its last recorded epoch when
    our trainer runs the sweep (it writes an epoch's checkpoint before it records the epoch:
    agent/trial/loop.py), so that a kill -9, an OOM kill or a lost node costs the epoch in
    progress only; else from scratch (another program keeps no checkpoint we resume, nor does
    a run with checkpoint: false). `resumable`: our trainer runs the sweep."""
    for run in crashed:
        tx.insert_repeat(new_run_id(), run, run.epoch if resumes(run, resumable) else 0)


def claim(store: SweepStore, owner: str, count: PackSize = 1,
          pack_key: PackKey | None = None, timeout: float = HEARTBEAT_TIMEOUT_S,
          now: float | None = None) -> Claim:
    """Take up to `count` runs for `owner` (a number, or a function of the pack key of the
    runs taken), in one transaction: repair crashes (a running run silent for `timeout`
    seconds at `now` becomes crashed and is re-queued once), then apply `choose_work`. Runs
    claimed together (two or more) share a new pack id in the store."""
    if not callable(count) and count < 1:
        raise ValueError(f"count={count}: a claim asks for one run or more")
    with store.transaction() as tx:
        resumable = runs_our_trainer(tx.sweep().config)
        stale, requeue = crash_repairs(tx.runs(), time.time() if now is None else now,
                                       timeout, resumable)
        for run_id in stale:
            tx.mark_crashed(run_id)
        _repeat(tx, requeue, resumable)
        runs = drop_unstarted_proposals(tx, tx.sweep().config, tx.runs())
        work = choose_work(tx.sweep().config, runs, count, pack_key)
        if work.kind != "run":
            return Claim(work.kind, running=[r for r in runs if r.state == "running"]
                         if work.kind == "wait" else [])
        pack = new_run_id() if len(work.take) + len(work.start) > 1 else None
        claimed = []
        for run in work.take:
            tx.start(run.id, owner, pack)
            claimed.append(ClaimedRun(run.id, run.config,
                                      resumed=run.state == "preempted" or bool(run.epoch),
                                      epoch=run.epoch, repeats=run.requeued_from))
        for config in work.start:
            run_id = new_run_id()
            tx.insert_run(run_id, config, "running", owner=owner, pack=pack)
            claimed.append(ClaimedRun(run_id, config))
        for config in work.park:
            tx.insert_run(new_run_id(), config, "pending")
    return Claim("run", claimed, pack)


def keep_proposal(store: SweepStore, config: dict, ahead: int = 0) -> int:
    """Keep an engine proposal that --pack auto measured before claiming it (the claim was
    abandoned to measure, writing nothing) as a pending run, so that the next claim trains
    the kind measured. A random or bayes sweep proposes anew at each claim: each proposal
    may be another kind not measured yet (a batch-size study: each batch size is a kind),
    and the agent would measure kind after kind before one claim met a kind measured. Not
    for a grid (its next claim proposes the same point), a config already waiting (a
    pending or preempted run's), a sweep at its run_cap, or one where a run reached
    metric.target while the agent measured (the engine proposes nothing more then).

    A random sweep under run_cap also keeps the engine's next `ahead` proposals (within the
    cap) as pending runs, as a grid's claim does: random search draws each run
    independently of the others and of their results (W&B's random_search.py), so drawing
    them now means what drawing them one claim at a time means, and --pack auto then knows
    how many runs of each kind the sweep holds (`runs_left`) and packs them together
    instead of meeting kinds one run at a time. Returns how many runs were added."""
    with store.transaction() as tx:
        sweep_config, runs = tx.sweep().config, tx.runs()
        cap = sweep_config.get("run_cap")
        room = cap - sum(not r.requeued_from for r in runs) if cap else math.inf
        if sweep_config.get("method") == "grid" or target_reached(sweep_config, runs) or \
                room < 1 or any(r.state in ("pending", "preempted") and r.config == config
                                for r in runs):
            return 0
        kept = [config]
        if sweep_config.get("method") == "random" and cap and ahead > 0 and room > 1:
            seen = [*runs, Run(id="measured", seq=len(runs) + 1, config=config,
                               state="running")]
            kept += proposed_batch(sweep_config, seen, int(min(ahead, room - 1)))
        for proposal in kept:
            tx.insert_run(new_run_id(), proposal, "pending")
    return len(kept)


def drop_unstarted_proposals(tx, sweep_config: dict, runs: list[Run]) -> list[Run]:
    """Once a run has reached metric.target, W&B's server launches no new run: the
    proposals a claim parked as pending runs (a grid's look-ahead, a random sweep's
    `keep_proposal`), never started, are removed, so that no agent trains them. Repeats of
    crashed runs and preempted runs (runs that had started) are kept: they go on, as runs
    already running do on W&B. Returns the runs left."""
    if not target_reached(sweep_config, runs):
        return runs
    unstarted = {r.id for r in runs if r.state == "pending" and not r.requeued_from
                 and r.started is None and not r.epoch}
    for run_id in unstarted:
        tx.drop_pending(run_id)
    return [r for r in runs if r.id not in unstarted]


def drop_after_target(store: SweepStore) -> int:
    """`drop_unstarted_proposals` in a transaction of its own, for an agent that ends
    without another claim (--count reached, a signal) once a run has reached metric.target:
    the runs it parked would otherwise read as runs still to come (agent.status, the
    report). Returns how many were dropped. Takes the store's write lock only for a sweep
    with a metric.target."""
    if (store.sweep().config.get("metric") or {}).get("target") is None:
        return 0
    with store.transaction() as tx:
        runs = tx.runs()
        return len(runs) - len(drop_unstarted_proposals(tx, tx.sweep().config, runs))


def repair_ended_agents(store: SweepStore, owners: set[str]) -> list[str]:
    """Mark crashed (and re-queue once) the running runs of agents known to have ended
    (`owners`, host:pid, as a launcher knows its children's exits): what a heartbeat timeout
    would do later, done at once. Returns the ids marked crashed."""
    with store.transaction() as tx:
        ended = [r.id for r in tx.runs() if r.state == "running" and r.owner in owners]
        for run_id in ended:
            tx.mark_crashed(run_id)
        resumable = runs_our_trainer(tx.sweep().config)
        _, requeue = crash_repairs(tx.runs(), now=0.0, timeout=math.inf,  # the crashed only
                                   resumable=resumable)
        _repeat(tx, requeue, resumable)
    return ended


def crash_outcome(store: SweepStore, crashed: list[str]) -> str:
    """What became of the runs `crashed` (ids just marked crashed), in words for one line:
    'repeated from its last checkpoint' (our trainer, a checkpoint kept), 'repeated from
    scratch', or, for a run not repeated, its reason (`not_repeated_why`); each run is named
    where their outcomes differ."""
    runs = store.runs()
    resumable = runs_our_trainer(store.sweep().config)
    by_id = {r.id: r for r in runs}
    repeats = {r.requeued_from: r for r in runs if r.requeued_from}

    def outcome(run_id: str) -> str:
        repeat = repeats.get(run_id)
        if repeat is not None:
            return ("repeated from its last checkpoint" if repeat.epoch
                    else "repeated from scratch")
        return f"not repeated ({not_repeated_why(by_id[run_id], resumable)})"

    said: dict[str, list[str]] = {}
    for run_id in crashed:
        said.setdefault(outcome(run_id), []).append(run_id)
    if len(said) == 1:
        return next(iter(said))
    return "; ".join(f"{', '.join(ids)} {words}" for words, ids in said.items())


def should_stop(store: SweepStore, run_id: str) -> bool:
    """Hyperband (or any early_terminate) says this run should stop now."""
    sweep_config = store.sweep().config
    if not sweep_config.get("early_terminate"):
        return False
    return run_id in stop_decisions(sweep_config, store.runs())


def runs_left(sweep_config: dict, runs: list[Run], like: dict, pack_key: PackKey,
              most: int = 4096) -> int | None:
    """Pure: at most how many runs of `like`'s pack key a claim could still take: the
    sweep's waiting (pending, preempted) runs of that key and, for a grid, the points of that
    key the engine has yet to propose (under run_cap); for random or bayes under run_cap,
    every run it may still create. Running runs are someone's already. None when open-ended.
    --pack auto measures no pack larger than this. Looks `most` proposals ahead at most."""
    planned = planned_runs(sweep_config)
    if planned is None:
        return None
    key = pack_key(like)
    mine = sum(r.state in ("pending", "preempted") and pack_key(r.config) == key for r in runs)
    unproposed = max(0, planned - sum(not r.requeued_from for r in runs))
    if sweep_config.get("method") != "grid":
        return mine + unproposed
    ahead = proposed_batch(sweep_config, runs, min(unproposed, most)) if unproposed else []
    return mine + sum(pack_key(config) == key for config in ahead) + max(0, unproposed - most)


def expected_runs(sweep_config: dict, runs: list[Run], like: dict, pack_key: PackKey,
                  sample: int = KIND_SAMPLE) -> tuple[float, int] | None:
    """For a random sweep under run_cap: (the runs of `like`'s pack key it is expected to
    still give, and a count that the runs of that key exceed with a chance of about 2%
    (the binomial's mean + 2 SD, rounded up)); None for a grid or a random sweep whose runs
    are all proposed already (`runs_left` is exact there), bayes, or an open-ended sweep
    (no bound). The kind's waiting (pending, preempted) runs count, and
    `like` itself when it is a proposal not yet stored.

    Random search draws each run independently of the others and of their results (W&B's
    random_search.py), so the share of the kind among `sample` draws of the engine
    estimates its share of the runs to come. --pack auto measures no kind expected to give
    fewer runs than a pack needs, and no pack larger than the second figure: a random sweep
    of 1,000 runs over 500 kinds gives about two runs a kind, mostly beyond the runs it has
    proposed ahead (`keep_proposal`). Raises EngineError (a proposal failed)."""
    planned = planned_runs(sweep_config)
    if sweep_config.get("method") != "random" or planned is None:
        return None
    key = pack_key(like)
    waiting = [r for r in runs if r.state in ("pending", "preempted") and pack_key(r.config) == key]
    unproposed = max(0, planned - sum(not r.requeued_from for r in runs))
    known = len(waiting) + int(unproposed > 0 and not any(r.config == like for r in waiting))
    rest = unproposed - (known - len(waiting))
    if not rest:
        return None  # every run it may still give is known: runs_left is exact
    draws = proposed_batch(sweep_config, runs, sample)
    if not draws:  # a run reached metric.target: the engine proposes no more
        return float(known), known
    share = sum(pack_key(config) == key for config in draws) / len(draws)
    mean = known + rest * share
    return mean, min(known + rest, math.ceil(mean + 2 * math.sqrt(rest * share * (1 - share))))

