"""The sweep store's contract, run against every backend (`backend` fixture): typed runs,
guarded agent writes, immutable ended runs, history and summary round trips, the schema
version, re-queue once, and exactly-once claims of singles and packs from real processes.

Only SQLite exists today; a second backend (PostgreSQL, for sweeps across nodes) adds a
class like `SqliteBackend` to BACKENDS and must pass this file unchanged.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import sqlite3
import time
from itertools import product
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sweep.controller import claim, repair_ended_agents
from agent.sweep.engine import proposed_params
from agent.sweep.store import (
    AGENT_END_STATES,
    SCHEMA_VERSION,
    STATES,
    STORE_NAME,
    Run,
    Sweep,
    SweepStore,
    create_store,
)
from util.errors import UserError

FAR_FUTURE = 10 ** 7  # seconds: every heartbeat is stale by then
GRID = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.1, 0.03, 0.01, 0.003, 0.001, 0.0003]},
                       "model": {"values": ["dense", "cnn", "resnet", "vgg"]}}}
GRID_POINTS = {(lr, model) for lr, model in product(*(p["values"] for p in
                                                       GRID["parameters"].values()))}


def model_key(config: dict) -> str:
    return config["model"]


def lr_key(config: dict) -> float:
    return config["lr"]


# The layout of the stores made before the schema had a version (user_version 0).
VERSION_0_TABLES = """
CREATE TABLE sweep (id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL,
                    created REAL NOT NULL);
CREATE TABLE runs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, config TEXT NOT NULL,
    state TEXT NOT NULL, owner TEXT, heartbeat REAL, requeued_from TEXT,
    epoch INTEGER NOT NULL DEFAULT 0, summary TEXT, error TEXT, created REAL NOT NULL,
    started REAL, ended REAL);
CREATE TABLE history (run_id TEXT NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch));
"""


class SqliteBackend:
    """Stores as files under `root`; an address is the path of a store file."""

    name = "sqlite"

    def __init__(self, root: Path):
        self.root = root
        self.made = 0

    def create(self, config: dict) -> str:
        self.made += 1
        sweep_id = f"contract{self.made}"
        return str(create_store(self.root / sweep_id, sweep_id, sweep_id, config).path)

    @staticmethod
    def open(address: str) -> SweepStore:
        return SweepStore(address)

    def store_of_version(self, version: int) -> str:
        """A store as code of another schema version left it."""
        if version == 0:
            path = self.root / "old" / "sweep.db"
            path.parent.mkdir()
            with sqlite3.connect(path) as db:
                db.executescript(VERSION_0_TABLES)
                db.execute("INSERT INTO sweep VALUES ('old', 'old', ?, 0)", (json.dumps(GRID),))
            return str(path)
        address = self.create(GRID)
        with sqlite3.connect(address) as db:
            db.execute(f"PRAGMA user_version = {version}")
        return address


BACKENDS = {"sqlite": SqliteBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    return BACKENDS[request.param](tmp_path)


def new_store(backend, config: dict = GRID) -> SweepStore:
    return backend.open(backend.create(config))


def run_in_state(store: SweepStore, state: str) -> Run:
    """A run brought into `state` through the public API only."""
    if state == "pending":  # parked: proposed in a claim of another key's pack
        claim(store, "parker", count=2, pack_key=model_key)
        return next(r for r in store.runs() if r.state == "pending")
    (claimed,) = claim(store, "owner").runs
    if state == "crashed":
        claim(store, "repairer", now=time.time() + FAR_FUTURE)
    elif state != "running":
        assert store.finish(claimed.run_id, "owner", state)
    run = store.run(claimed.run_id)
    assert run.state == state
    return run


def agent_writes(run_id: str, owner: str) -> dict:
    return {
        "heartbeat": lambda store: store.heartbeat(run_id, owner),
        "record_epoch": lambda store: store.record_epoch(run_id, owner, 3, {"val/acc": 0.5}),
        "forget_epochs": lambda store: store.forget_epochs(run_id, owner),
        **{f"finish:{end}": (lambda store, end=end: store.finish(run_id, owner, end, {"x": 1},
                                                                   "an error"))
           for end in AGENT_END_STATES},
    }


# --- typed runs and guarded writes ------------------------------------------------------------

def test_runs_and_the_sweep_are_typed(backend):
    store = new_store(backend)
    work = claim(store, "agent-1")
    assert isinstance(store.sweep(), Sweep) and store.sweep().config == GRID
    (run,) = store.runs()
    assert isinstance(run, Run) and run.id == work.runs[0].run_id
    assert (run.state, run.owner, run.epoch, run.history, run.pack) == (
        "running", "agent-1", 0, [], None)
    assert run.config == work.runs[0].config and run.started and run.heartbeat


def test_the_owner_of_a_running_run_writes_and_each_write_reports_it_took(backend):
    store = new_store(backend)
    (claimed,) = claim(store, "me").runs
    before = store.run(claimed.run_id).heartbeat
    time.sleep(0.01)
    assert store.heartbeat(claimed.run_id, "me")
    assert store.run(claimed.run_id).heartbeat > before
    assert store.record_epoch(claimed.run_id, "me", 1, {"val/acc": 0.1})
    assert store.forget_epochs(claimed.run_id, "me")  # it starts over from scratch
    assert (store.run(claimed.run_id).epoch, store.run(claimed.run_id).history) == (0, [])
    assert store.record_epoch(claimed.run_id, "me", 1, {"val/acc": 0.25})
    assert store.finish(claimed.run_id, "me", "finished", {"val/acc": 0.25})
    run = store.run(claimed.run_id)
    assert (run.state, run.epoch, run.summary, run.ended is not None) == (
        "finished", 1, {"val/acc": 0.25}, True)


@pytest.mark.parametrize("reached, resumed", [(n, k) for n in range(1, 5) for k in range(n)])
def test_an_epoch_recorded_leaves_no_row_of_an_earlier_start_past_it(backend, reached,
                                                                     resumed):
    """A run got to epoch `reached`, then its next start resumed from a checkpoint of epoch
    `resumed` (0: from scratch: both checkpoint files damaged, or a pack resumed at the
    newest epoch all its members have): from its first recorded epoch on, the history is
    this start's, with no row of the earlier one past it (those stayed where a start over
    stopped short of them)."""
    store = new_store(backend)
    (claimed,) = claim(store, "me").runs
    for epoch in range(1, reached + 1):
        assert store.record_epoch(claimed.run_id, "me", epoch, {"val/acc": 0.1, "start": 1})
    assert store.record_epoch(claimed.run_id, "me", resumed + 1, {"val/acc": 0.2, "start": 2})
    run = store.run(claimed.run_id)
    assert run.epoch == resumed + 1
    assert [h["start"] for h in run.history] == [1] * resumed + [2]


@pytest.mark.parametrize("write", sorted(agent_writes("", "")))
def test_a_write_by_another_agent_is_refused_and_changes_nothing(backend, write):
    store = new_store(backend)
    (claimed,) = claim(store, "owner").runs
    store.record_epoch(claimed.run_id, "owner", 1, {"val/acc": 0.1})
    before = store.runs()
    assert agent_writes(claimed.run_id, "intruder")[write](store) is False
    assert store.runs() == before


@pytest.mark.parametrize("state", [s for s in STATES if s != "running"])
@pytest.mark.parametrize("write", sorted(agent_writes("", "")))
def test_a_run_that_is_not_running_is_never_changed_by_an_agent_write(backend, state, write):
    store = new_store(backend)
    run = run_in_state(store, state)
    before = store.runs()
    assert agent_writes(run.id, run.owner or "owner")[write](store) is False
    assert store.runs() == before


@pytest.mark.parametrize("end", ["finished", "failed", "stopped"])
def test_ended_runs_stay_as_they_are_through_later_claims_and_repairs(backend, end):
    store = new_store(backend, {**GRID, "run_cap": 2})
    (claimed,) = claim(store, "owner").runs
    assert store.finish(claimed.run_id, "owner", end, {"val/acc": 0.5}, error="why")
    ended = store.run(claimed.run_id)
    for _ in range(3):
        claim(store, "other", now=time.time() + FAR_FUTURE)
    assert store.run(claimed.run_id) == ended
    assert claimed.run_id not in {r.requeued_from for r in store.runs()}


def test_an_agent_cannot_declare_its_run_crashed(backend):
    store = new_store(backend)
    (claimed,) = claim(store, "owner").runs
    with pytest.raises(ValueError):
        store.finish(claimed.run_id, "owner", "crashed")
    assert store.run(claimed.run_id).state == "running"


# --- round trips ------------------------------------------------------------------------------

METRIC_VALUES = (st.floats(allow_nan=False) | st.integers(-2 ** 63, 2 ** 63) | st.booleans()
                 | st.text(max_size=20) | st.none())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epochs=st.lists(st.dictionaries(st.text(max_size=30), METRIC_VALUES, max_size=8),
                       min_size=1, max_size=5),
       summary=st.dictionaries(st.text(max_size=30), METRIC_VALUES | st.lists(METRIC_VALUES),
                               max_size=8))
def test_history_and_summary_come_back_as_they_were_written(backend, epochs, summary):
    store = new_store(backend)
    (claimed,) = claim(store, "owner").runs
    for epoch, metrics in enumerate(epochs, start=1):
        assert store.record_epoch(claimed.run_id, "owner", epoch, metrics)
    assert store.finish(claimed.run_id, "owner", "finished", summary)
    run = store.run(claimed.run_id)
    assert run.history == epochs and run.summary == summary and run.epoch == len(epochs)


def test_non_finite_metrics_come_back_non_finite(backend):
    # A diverged run's last losses are inf or nan, and the report must see them so.
    store = new_store(backend)
    (claimed,) = claim(store, "owner").runs
    store.record_epoch(claimed.run_id, "owner", 1, {"train/loss": math.inf, "val/loss": math.nan})
    store.finish(claimed.run_id, "owner", "finished", {"train/loss": -math.inf})
    run = store.run(claimed.run_id)
    assert run.history[0]["train/loss"] == math.inf and math.isnan(run.history[0]["val/loss"])
    assert run.summary == {"train/loss": -math.inf}


def test_an_epoch_recorded_again_replaces_the_row_of_that_epoch(backend):
    # A preempted run resumed from its checkpoint repeats the epoch it was in.
    store = new_store(backend)
    (claimed,) = claim(store, "owner").runs
    store.record_epoch(claimed.run_id, "owner", 1, {"val/acc": 0.1})
    store.record_epoch(claimed.run_id, "owner", 1, {"val/acc": 0.2})
    assert store.run(claimed.run_id).history == [{"val/acc": 0.2}]


# --- the schema version -----------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, SCHEMA_VERSION + 1])
def test_a_store_of_another_schema_version_is_refused_in_one_line(backend, version):
    address = backend.store_of_version(version)
    with pytest.raises(UserError) as refused:
        backend.open(address)
    message = str(refused.value)
    assert "\n" not in message and address in message
    assert f"schema version {version}" in message and f"version {SCHEMA_VERSION}" in message
    assert "start the sweep anew" in message


def test_a_file_that_is_no_store_is_refused_in_one_line(tmp_path):
    garbage = tmp_path / "sweep.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(UserError, match="not a sweep store"):
        SweepStore(garbage)
    with pytest.raises(UserError, match="no sweep store there"):
        SweepStore(tmp_path / "missing" / "sweep.db")
    assert not (tmp_path / "missing").exists()


# --- repairs ----------------------------------------------------------------------------------

def test_a_silent_run_is_crashed_and_requeued_once_and_a_repeat_is_never_repeated(backend):
    store = new_store(backend)
    (first,) = claim(store, "a").runs
    later = time.time() + FAR_FUTURE
    (repeat,) = claim(store, "b", now=later).runs  # a is silent: its run is repeated by b
    assert store.run(first.run_id).state == "crashed"
    assert store.run(repeat.run_id).requeued_from == first.run_id
    assert repeat.config == first.config and not repeat.resumed

    claim(store, "c", now=later + FAR_FUTURE)  # b is silent too: crashed, not repeated
    runs = store.runs()
    assert store.run(repeat.run_id).state == "crashed"
    assert [r.requeued_from for r in runs].count(first.run_id) == 1
    assert [r.requeued_from for r in runs].count(repeat.run_id) == 0


@pytest.mark.parametrize("program", [None, "other.py", "no checkpoint"])
@pytest.mark.parametrize("repair", ["heartbeat", "agent ended"])
def test_a_crashed_run_of_our_trainer_is_repeated_from_its_last_epoch(backend, program,
                                                                     repair):
    """Our trainer writes an epoch's checkpoint before it records the epoch: the repeat of a
    crashed run continues from the crashed run's last recorded epoch, with its history so
    far. Another program keeps no checkpoint we resume, nor does our trainer under
    checkpoint: false: such a repeat starts from scratch."""
    if program == "no checkpoint":
        config = {**GRID, "parameters": {**GRID["parameters"],
                                         "checkpoint": {"value": False}}}
    else:
        config = {**GRID, **({"program": program} if program else {})}
    store = new_store(backend, config)
    (first,) = claim(store, "host:1").runs
    rows = [{"val/acc": 0.25, "epoch": 1}, {"val/acc": 0.5, "epoch": 2}]
    for epoch, row in enumerate(rows, 1):
        assert store.record_epoch(first.run_id, "host:1", epoch, row)
    if repair == "heartbeat":
        (repeat,) = claim(store, "host:2", now=time.time() + FAR_FUTURE).runs
    else:
        assert repair_ended_agents(store, {"host:1"}) == [first.run_id]
        (repeat,) = claim(store, "host:2").runs
    assert store.run(first.run_id).state == "crashed"
    assert repeat.config == first.config and repeat.repeats == first.run_id
    stored = store.run(repeat.run_id)
    assert stored.requeued_from == first.run_id and stored.state == "running"
    if program is None:
        assert repeat.resumed and repeat.epoch == 2
        assert stored.history == rows and stored.epoch == 2
    else:
        assert not repeat.resumed and repeat.epoch == 0
        assert stored.history == [] and stored.epoch == 0
    assert store.record_epoch(repeat.run_id, "host:2", 3, {"val/acc": 0.75, "epoch": 3})
    assert store.run(first.run_id).history == rows  # the crashed run's own stays as it was


def test_a_crashed_runs_repeat_from_a_checkpoint_goes_before_older_pending_runs(backend):
    """It resumes trained epochs, as a preempted run does: taken first, and packed only with
    runs that resume at its epoch (here, none: it goes alone though three were asked for)."""
    store = new_store(backend)
    (first, *_) = claim(store, "host:1", count=2, pack_key=model_key).runs
    parked = [r.id for r in store.runs() if r.state == "pending"]
    assert parked  # proposals of other models, parked as pending before the repeat exists
    assert store.record_epoch(first.run_id, "host:1", 1, {"val/acc": 0.1})
    taken = claim(store, "host:2", count=3, pack_key=model_key, now=time.time() + FAR_FUTURE)
    (repeat,) = [r for r in taken.runs if r.repeats]
    assert repeat.repeats == first.run_id and repeat.epoch == 1
    assert [r.run_id for r in taken.runs] == [repeat.run_id]


def test_a_preempted_pack_resumes_together_at_its_epoch_in_a_new_pack(backend):
    store = new_store(backend)
    packed = claim(store, "a", count=3, pack_key=model_key)
    assert len(packed.runs) == 3 and packed.pack
    for member in packed.runs:
        assert store.record_epoch(member.run_id, "a", 2, {"val/acc": 0.3})
        assert store.finish(member.run_id, "a", "preempted")
    resumed = claim(store, "b", count=3, pack_key=model_key)
    assert sorted(r.run_id for r in resumed.runs) == sorted(r.run_id for r in packed.runs)
    assert all(r.resumed and r.epoch == 2 for r in resumed.runs)
    assert resumed.pack not in (None, packed.pack)
    # the store keeps the packed trial each run first trained in (the report counts trials
    # by it), and each run's latest start (the status's pace)
    running = [r for r in store.runs() if r.state == "running"]
    assert {r.pack for r in running} == {packed.pack}
    for member in resumed.runs[:1]:  # preempted again, then resumed alone
        assert store.finish(member.run_id, "b", "preempted")
        before = store.run(member.run_id).started
        (alone,) = claim(store, "c").runs
        assert alone.run_id == member.run_id and alone.resumed
        after = store.run(member.run_id)
        assert after.pack == packed.pack and after.started >= before


# --- claims: parking, run_cap, exactly once -------------------------------------------------

def test_proposals_of_another_key_are_parked_pending_and_claimed_later(backend):
    store = new_store(backend)
    # The engine varies `model` fastest: a pack of one lr parks nothing, one model parks.
    first = claim(store, "a", count=4, pack_key=model_key)
    members = [r.config for r in first.runs]
    assert len(members) == 4 and len({c["model"] for c in members}) == 1
    parked = [r for r in store.runs() if r.state == "pending"]
    assert parked and all(r.owner is None and r.pack is None and r.heartbeat is None
                          and r.config["model"] != members[0]["model"] for r in parked)
    second = claim(store, "b", count=4, pack_key=model_key)
    assert {r.run_id for r in second.runs} >= {r.id for r in parked
                                               if r.config["model"] == parked[0].config["model"]}
    for owner, work in (("a", first), ("b", second)):
        assert all(store.finish(r.run_id, owner, "finished") for r in work.runs)
    drain(store, "c", 4, model_key)
    assert {(r.config["lr"], r.config["model"]) for r in store.runs()} == GRID_POINTS
    assert len(store.runs()) == len(GRID_POINTS)


@pytest.mark.parametrize("count, key", [(3, None), (4, lr_key), (5, model_key)])
def test_packs_never_take_the_sweep_beyond_its_run_cap(backend, count, key):
    store = new_store(backend, {**GRID, "run_cap": 5})
    drain(store, "a", count, key)
    runs = store.runs()
    assert len(runs) == 5 and all(r.state == "finished" for r in runs)


def drain(store: SweepStore, owner: str, count: int, key) -> list:
    """Claim and finish packs until the sweep is done; the claims, in order."""
    claims = []
    while (work := claim(store, owner, count=count, pack_key=key)).kind == "run":
        claims.append(work)
        for member in work.runs:
            assert store.finish(member.run_id, owner, "finished", {"val/acc": 0.5})
    assert work.kind == "done"
    return claims


def claim_until_done(backend_name: str, address: str, owner: str, count: int, start,
                     results) -> None:
    """One agent process: claim packs of `count` and finish them until the sweep is done."""
    store = BACKENDS[backend_name].open(address)
    # The engine's first call imports its search modules (about a second) and a claim holds
    # the write lock meanwhile; warm it up first so that the claims below really contend.
    proposed_params(GRID, [])
    claims = []
    start.wait()  # a barrier: every agent has its store open and claims at once
    deadline = time.time() + 120
    while time.time() < deadline:
        work = claim(store, owner, count=count, pack_key=model_key)
        if work.kind == "done":
            break
        if work.kind == "wait":
            time.sleep(0.01)
            continue
        claims.append((work.pack, [(r.run_id, r.config) for r in work.runs]))
        time.sleep(0.05)  # a trial's length, so that claims interleave
        took = [store.finish(r.run_id, owner, "finished", {"val/acc": 0.5}) for r in work.runs]
        claims.append(("took", took))
    results.put((owner, count, claims))


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_agents_claiming_singles_and_packs_at_once_run_each_point_exactly_once(backend):
    address = backend.create(GRID)
    context = multiprocessing.get_context("spawn")
    counts = [1, 1, 2, 3, 4, 3]
    start, results = context.Barrier(len(counts)), context.Queue()
    agents = [context.Process(target=claim_until_done, args=(
        backend.name, address, f"agent-{i}", count, start, results))
        for i, count in enumerate(counts)]
    for agent in agents:
        agent.start()
    reports = [results.get(timeout=150) for _ in agents]
    for agent in agents:
        agent.join(timeout=30)
        assert agent.exitcode == 0

    claimed: dict[str, str] = {}  # run id -> the agent that claimed it
    packs = []
    for owner, count, entries in reports:
        for pack, members in entries:
            if pack == "took":
                assert all(members)  # every finish by the claimant took
                continue
            assert 1 <= len(members) <= count
            assert len({model_key(config) for _, config in members}) == 1
            assert (pack is None) == (len(members) == 1)  # a pack id: trained together
            packs += [pack] if pack else []
            for run_id, _ in members:
                assert run_id not in claimed, (run_id, claimed.get(run_id), owner)
                claimed[run_id] = owner
    assert len(packs) == len(set(packs))
    runs = BACKENDS[backend.name].open(address).runs()
    assert {r.id: r.owner for r in runs} == claimed
    assert sorted((r.config["lr"], r.config["model"]) for r in runs) == sorted(GRID_POINTS)
    assert all(r.state == "finished" for r in runs)
    assert len({r.owner for r in runs}) >= 2


def test_a_sweep_appears_whole_or_not_at_all(tmp_path):
    """The store is made in a hidden directory and renamed into place: a reader listing
    data/sweeps/ sees a whole sweep or none, and a failed creation leaves nothing."""
    sweeps = tmp_path / "data" / "sweeps"
    with pytest.raises(TypeError):  # the config cannot be stored: nothing is left behind
        create_store(sweeps / "bad1", "bad1", "bad", {"parameters": {"lr": {1, 2}}})
    assert list(sweeps.iterdir()) == []
    store = create_store(sweeps / "ok1", "ok1", "ok", {"method": "grid"})
    assert [p.name for p in sweeps.iterdir()] == ["ok1"]  # no hidden leftover
    assert SweepStore(sweeps / "ok1" / STORE_NAME).sweep().name == "ok"
    assert store.sweep().id == "ok1" and store.runs() == []
    with pytest.raises(FileExistsError):  # never over an existing sweep
        create_store(sweeps / "ok1", "ok1", "again", {"method": "grid"})
    assert SweepStore(sweeps / "ok1" / STORE_NAME).sweep().name == "ok"


@pytest.mark.parametrize("length", [1, 100, 119, 120, 128])
def test_a_sweeps_group_keeps_its_id_and_fits_a_groups_limit_whatever_its_name(length):
    from agent.params import MAX_NAME, validate

    name = "n" * length
    group = Sweep("abcd1234", name, {}, 0.0).group
    assert group.endswith("-abcd1234") and len(group) <= MAX_NAME
    assert name.startswith(group[:-len("-abcd1234")])
    assert validate({"group": group})["group"] == group  # a run of the sweep validates
