"""A PBS job's copy of a local sweep store (agent/cluster/store_copy.py), on real SQLite files:
the runs a job ended are merged into the sweep's store, next to what another job merged
meanwhile, and a second merge writes nothing new."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from agent.cluster import store_copy
from agent.cluster.store_copy import merge_back, take_copy
from agent.sweep.store import (
    SweepStore,
    agents_heartbeat_settings,
    create_store,
    remove_heartbeat_settings,
    write_heartbeat_settings,
)
from conftest import ROOT, subprocess_env


def trained(path, run_id: str, epochs: range, state: str, claim: str = "start"):
    """`run_id` claimed (`start`: a pending or preempted run, `new`: a new one, `""`: the
    agent's running run), trained through `epochs`, ended as `state` (or left running), by
    an agent that then closes the store (a merge waits for every connection to close)."""
    store = SweepStore(path)
    with store.transaction() as tx:
        if claim == "new":
            tx.insert_run(run_id, {"lr": 0.1}, "running", owner="node:1")
        elif claim == "start":
            tx.start(run_id, "node:1")
    for epoch in epochs:
        assert store.record_epoch(run_id, "node:1", epoch, {"val/acc": epoch / 10})
    if state != "running":
        assert store.finish(run_id, "node:1", state, summary={"val/acc": 0.5})
    store.close()


def job_copy(tmp_path) -> tuple:
    """(the sweep's store, a job's copy of it, what the job started from) of an empty grid
    sweep, the copy taken as a job takes it."""
    create_store(tmp_path / "sweep", "s", "s", {"method": "grid"}).close()
    origin, copy, base = tmp_path / "sweep" / "sweep.db", tmp_path / "copy.db", tmp_path / "b.db"
    take_copy(origin, copy, base)
    return origin, copy, base


def runs(path) -> dict:
    store = SweepStore(path, read_only=True)
    try:
        return {run.id: run for run in store.runs()}
    finally:
        store.close()


def test_a_jobs_ended_runs_are_merged_beside_another_jobs(tmp_path):
    store = create_store(tmp_path / "sweep", "s", "s", {"method": "grid"})
    with store.transaction() as tx:
        tx.insert_run("a", {"lr": 0.1}, "pending")
        tx.insert_run("b", {"lr": 0.2}, "pending")
    store.close()
    origin, copy, base = store.path, tmp_path / "copy.db", tmp_path / "base.db"
    trained(origin, "b", range(1, 3), "preempted")
    take_copy(origin, copy, base)

    job = copy  # the job: finishes a, takes b on to epoch 3, adds c and d
    trained(job, "a", range(1, 3), "finished")
    trained(job, "b", range(3, 4), "preempted")
    trained(job, "c", range(1, 3), "finished", claim="new")
    trained(job, "d", range(1, 2), "running", claim="new")  # in progress when merged
    store = SweepStore(job)  # f crashed in the job; its repeat g is left for the next job
    with store.transaction() as tx:
        tx.insert_run("f", {"lr": 0.3}, "running", owner="node:2")
        tx.mark_crashed("f")
        tx.insert_run("g", {"lr": 0.3}, "pending", requeued_from="f")
    store.close()
    # Another job meanwhile: b to its end, and a run e of its own
    trained(origin, "b", range(3, 6), "finished")
    trained(origin, "e", range(1, 3), "finished", claim="new")

    assert merge_back(copy, base, origin) == ["a", "c", "d", "f", "g"]
    merged = runs(origin)
    # c, d, f, g after e, not beside it; d, new to the sweep's store, as the job runs it
    assert list(merged) == ["a", "b", "e", "c", "d", "f", "g"]
    assert (merged["d"].state, merged["d"].epoch, merged["d"].owner) == ("running", 1, "node:1")
    assert merged["a"].state == merged["c"].state == "finished"
    assert [h["val/acc"] for h in merged["c"].history] == [0.1, 0.2]
    assert (merged["b"].state, merged["b"].epoch) == ("finished", 5)  # further than the job's
    assert (merged["f"].state, merged["g"].state, merged["g"].requeued_from) == (
        "crashed", "pending", "f")
    assert len({r.seq for r in merged.values()}) == 7

    assert merge_back(copy, base, origin) == []  # merged once, whatever the calls
    trained(job, "d", range(2, 3), "preempted", claim="")  # the job ends: d preempted at epoch 2
    assert merge_back(copy, base, origin) == ["d"]
    assert (runs(origin)["d"].state, runs(origin)["d"].epoch) == ("preempted", 2)


def test_a_job_killed_outright_leaves_its_new_runs_to_be_repeated_from_their_checkpoints(
        tmp_path):
    """A job killed outright (a lost node: no grace, no last merge) while it trains a run it
    started, and a crashed run's repeat: its merges every 30 s put both into the sweep's
    store as running, with their epochs and heartbeats. The next job finds them silent, marks
    them crashed and repeats each from its own last checkpoint (the repeat from epoch 3, not
    its crashed run from epoch 1 again). Before, neither was merged while running: the new
    run was lost and the crashed run repeated from its older checkpoint. A run the store had
    (preempted) and the job resumes stays as the store has it, for the next job to resume."""
    from agent.sweep.controller import claim

    store = create_store(tmp_path / "sweep", "s", "s",
                         {"method": "grid", "parameters": {"lr": {"values": [0.1]}}})
    with store.transaction() as tx:
        tx.insert_run("x", {"lr": 0.1}, "running", owner="node:1")  # an earlier agent's
        tx.insert_run("p", {"lr": 0.2}, "pending")
    store.close()
    origin, copy, base = store.path, tmp_path / "copy.db", tmp_path / "base.db"
    trained(origin, "x", range(1, 2), "running", claim="")
    trained(origin, "p", range(1, 2), "preempted")
    take_copy(origin, copy, base)

    job = SweepStore(copy)  # x's agent is gone: the job's agent repeats it from epoch 1,
    # and resumes p, in one pack (both at epoch 1)
    work = claim(job, "node:1", count=2, now=time.time() + 3600)
    job.close()
    (repeat,) = [r for r in work.runs if r.run_id != "p"]
    assert repeat.epoch == 1 and {r.run_id for r in work.runs} == {"p", repeat.run_id}
    trained(copy, repeat.run_id, range(2, 4), "running", claim="")
    trained(copy, "n", range(1, 3), "running", claim="new")  # a run the job started
    trained(copy, "p", range(2, 3), "running", claim="")
    assert merge_back(copy, base, origin) == ["x", repeat.run_id, "n"]
    merged = runs(origin)
    assert [(merged[i].state, merged[i].epoch) for i in ("x", repeat.run_id, "n", "p")] == [
        ("crashed", 1), ("running", 3), ("running", 2), ("preempted", 1)]
    assert [h["val/acc"] for h in merged[repeat.run_id].history] == [0.1, 0.2, 0.3]
    assert merge_back(copy, base, origin) == []  # nothing new: nothing written

    store = SweepStore(origin)  # the next job's agent, once their heartbeats are stale
    later = time.time() + 3600
    work = claim(store, "node2:1", count=4, now=later)
    merged = runs(origin)
    assert (merged[repeat.run_id].state, merged["n"].state) == ("crashed", "crashed")
    resumed = {(r.requeued_from, r.epoch) for r in merged.values() if r.requeued_from
               and r.state != "crashed"}
    assert resumed == {(repeat.run_id, 3), ("n", 2)}, resumed
    # p, preempted, is resumed (with the repeats: all of the sweep's runs to resume)
    assert "p" in {r.run_id for r in work.runs} and work.runs[0].run_id == "p"
    assert not any(r.requeued_from == "x" and r.id != repeat.run_id for r in merged.values())
    store.close()


def test_a_running_runs_epochs_and_heartbeat_go_over_at_each_merge(tmp_path):
    origin, copy, base = job_copy(tmp_path)
    trained(copy, "a", range(1, 2), "running", claim="new")
    assert merge_back(copy, base, origin) == ["a"]
    beat = runs(origin)["a"].heartbeat
    time.sleep(0.05)
    store = SweepStore(copy)
    assert store.heartbeat("a", "node:1")  # the agent's heartbeat between epochs
    store.close()
    assert merge_back(copy, base, origin) == ["a"]
    assert runs(origin)["a"].heartbeat > beat
    trained(copy, "a", range(2, 3), "finished", claim="")
    assert merge_back(copy, base, origin) == ["a"]
    assert (runs(origin)["a"].state, runs(origin)["a"].epoch) == ("finished", 2)


def test_a_run_the_job_took_further_replaces_an_earlier_merge(tmp_path):
    origin, copy, base = job_copy(tmp_path)
    trained(copy, "a", range(1, 2), "preempted", claim="new")
    assert merge_back(copy, base, origin) == ["a"]
    trained(copy, "a", range(2, 4), "finished")  # another agent of the job resumes it
    assert merge_back(copy, base, origin) == ["a"]
    run = runs(origin)["a"]
    assert (run.state, run.epoch, len(run.history)) == ("finished", 3, 3)
    with sqlite3.connect(origin) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_two_jobs_that_each_repeat_one_crashed_run_leave_the_sweep_one_repeat(tmp_path):
    """A run left running by a killed agent is repaired in each job's copy: each job marks it
    crashed and makes a repeat. One repeat is trained (the first job's); the second job was
    killed before claiming its own. The sweep's store gets one repeat: the next agent on it
    has nothing left to train, not the same configuration a second time."""
    from agent.sweep.controller import claim

    store = create_store(tmp_path / "sweep", "s", "s",
                         {"method": "grid", "parameters": {"lr": {"values": [0.1]}}})
    with store.transaction() as tx:
        tx.insert_run("x", {"lr": 0.1}, "running", owner="gone:1")  # its agent was killed
    store.close()
    origin = store.path
    jobs = [(tmp_path / f"copy{i}.db", tmp_path / f"base{i}.db") for i in (1, 2)]
    for copy, base in jobs:
        take_copy(origin, copy, base)
    later = time.time() + 3600  # past the heartbeat timeout
    for (copy, _), trains in zip(jobs, (True, False)):
        job = SweepStore(copy)
        work = claim(job, "node:1", now=later) if trains else None
        if not trains:  # the job's agent found the crash, then was killed before claiming
            from agent.sweep.controller import repair_ended_agents
            repair_ended_agents(job, {"gone:1"})
        job.close()
        if work is not None:
            (repeat,) = work.runs
            trained(copy, repeat.run_id, range(1, 3), "finished", claim="")

    for order in (jobs, jobs[::-1]):  # whichever job ends first
        found, into = sqlite3.connect(jobs[0][1]), sqlite3.connect(origin)
        found.backup(into)  # the sweep's store as both jobs found it
        found.close()
        into.close()
        for copy, base in order:
            merge_back(copy, base, origin)
        merged = runs(origin)
        repeats = [r for r in merged.values() if r.requeued_from == "x"]
        assert merged["x"].state == "crashed"
        assert [r.state for r in repeats] == ["finished"], [(r.id, r.state) for r in repeats]
        store = SweepStore(origin)  # the next agent on the merged store
        assert claim(store, "login:1").kind == "done"
        store.close()


def test_a_proposal_a_job_left_pending_is_not_merged_into_a_sweep_that_ended_meanwhile(
        tmp_path):
    """A job's pending run that is no repeat (a proposal --pack auto measured, or one parked
    for a later pack) is only a proposal: the sweep's engine proposes again if it is still
    wanted. Merged, it would run past run_cap after another job ended the sweep."""
    from agent.sweep.controller import claim, keep_proposal

    config = {"method": "random", "run_cap": 2, "parameters": {"lr": {"min": 0.01, "max": 0.1}}}
    create_store(tmp_path / "sweep", "s", "s", config).close()
    origin, copy, base = tmp_path / "sweep" / "sweep.db", tmp_path / "copy.db", tmp_path / "b.db"
    take_copy(origin, copy, base)
    job = SweepStore(copy)  # the job measured a proposal's kind, kept it, and was killed
    assert keep_proposal(job, {"lr": 0.05})
    job.close()
    trained(origin, "a", range(1, 3), "finished", claim="new")  # another job: the whole sweep
    trained(origin, "b", range(1, 3), "finished", claim="new")

    merge_back(copy, base, origin)
    assert sorted(runs(origin)) == ["a", "b"]
    store = SweepStore(origin)
    assert claim(store, "login:1").kind == "done"  # run_cap 2 reached: nothing more to train
    store.close()


def test_the_pending_runs_a_job_dropped_at_the_target_are_dropped_from_the_sweep(tmp_path):
    """Runs --pack auto parked in the sweep's store (a local agent stopped while it
    measured) that a job dropped once its run reached metric.target (W&B launches no new
    run) go from the sweep's store too: left there, status and the report count them as runs
    still to come, and the sweep as not finished."""
    from agent.sweep.controller import claim, keep_proposal

    config = {"method": "random", "run_cap": 3,
              "metric": {"name": "val/acc", "goal": "maximize", "target": 0.9},
              "parameters": {"lr": {"min": 0.01, "max": 0.1}}}
    store = create_store(tmp_path / "sweep", "s", "s", config)
    assert keep_proposal(store, {"lr": 0.05}, ahead=255) == 3
    store.close()
    origin, copy, base = tmp_path / "sweep" / "sweep.db", tmp_path / "copy.db", tmp_path / "b.db"
    take_copy(origin, copy, base)
    job = SweepStore(copy)
    (first,) = claim(job, "node:1").runs
    assert job.finish(first.run_id, "node:1", "finished", summary={"val/acc": 0.95})
    assert claim(job, "node:1").kind == "done" and len(job.runs()) == 1
    job.close()

    merge_back(copy, base, origin)
    assert [(r.id, r.state) for r in runs(origin).values()] == [(first.run_id, "finished")]


def test_the_merge_knows_every_table_and_column_of_the_store(tmp_path):
    """The merge's SQL against store.py's schema: every table the store makes is one the
    merge knows, and every column of runs and history goes over. A table added to the
    schema without teaching the merge is refused in one line, nothing written, rather than
    left behind in the job's copy."""
    from agent.cluster.store_copy import TABLES
    from util.errors import UserError

    create_store(tmp_path / "sweep", "s", "s", {"method": "grid"}).close()
    origin, copy, base = tmp_path / "sweep" / "sweep.db", tmp_path / "copy.db", tmp_path / "b.db"
    with sqlite3.connect(origin) as db:
        assert {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")} == set(TABLES)
    db.close()
    take_copy(origin, copy, base)
    trained(copy, "a", range(1, 3), "finished", claim="new")
    with sqlite3.connect(copy) as db:  # every column of the job's row is one it wrote
        db.execute("UPDATE runs SET error='e', pack='p', requeued_from='r' WHERE id='a'")
    db.close()
    merge_back(copy, base, origin)
    reads = {}
    for path in (copy, origin):
        with sqlite3.connect(path) as db:
            reads[path] = [db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                           for table in ("runs", "history")]
        db.close()
    assert reads[copy] == reads[origin]

    with sqlite3.connect(copy) as db:  # a table the schema gained
        db.execute("CREATE TABLE artifacts (run_id TEXT, path TEXT)")
        db.execute("INSERT INTO artifacts VALUES ('a', 'model.pt')")
    db.close()
    trained(copy, "b", range(1, 2), "finished", claim="new")
    with pytest.raises(UserError, match="artifacts"):
        merge_back(copy, base, origin)
    assert sorted(runs(origin)) == ["a"]


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_store_another_process_holds_open_is_neither_taken_nor_merged_and_says_so(tmp_path):
    """An agent (or its launcher) on the sweep keeps its SQLite connection open while it
    runs, and WAL keeps a shared lock on the file for it: a job's exclusive take or merge
    cannot have the store then. It waits, then says so in one line (exit 2, not sqlite3's
    traceback), the store as it was; a final merge names the command that merges the job's
    runs later. The agent's own writes go on meanwhile."""
    origin, copy, base = job_copy(tmp_path)
    trained(copy, "a", range(1, 3), "finished", claim="new")
    agent = subprocess.Popen([sys.executable, "-c", f"""
import sys
from agent.sweep.store import SweepStore
store = SweepStore({str(origin)!r})
store.runs()
print("open", flush=True)
sys.stdin.readline()
with store.transaction() as tx:
    tx.insert_run("mine", {{"lr": 0.3}}, "pending")
store.close()
"""], cwd=ROOT, env=subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout.readline() == "open\n"
        tool = [sys.executable, "-m", "agent.cluster.store_copy"]
        for step in (["take", str(origin), str(tmp_path / "c2.db"), str(tmp_path / "b2.db")],
                     ["merge", str(copy), str(base), str(origin)]):
            done = subprocess.run([*tool, *step, "--wait", "1"], cwd=ROOT, env=subprocess_env(),
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 2, done.stderr
            (line,) = done.stderr.splitlines()
            assert "still open in another process" in line, line
        assert f"store_copy merge {copy} {base} {origin}" in line
        agent.stdin.write("\n")
        agent.stdin.flush()
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
    assert sorted(runs(origin)) == ["mine"]  # the agent wrote; the job's a is still to merge
    assert merge_back(copy, base, origin) == ["a"]  # once the agent has closed the store


def test_a_later_merge_leaves_a_run_the_sweep_repeated_meanwhile_to_its_repeat(tmp_path):
    """A job's last merge failed (the store held open past the wait): its copy stays in
    scratch, and the sweep's store has the job's new run n as running, as the merges every
    30 s left it. The next agent on the sweep finds n silent, marks it crashed and repeats
    it from its checkpoint. The merge run later (the command the job printed) brings n as
    preempted at a later epoch: it replaced the crashed n (preempted ranks with crashed,
    then the later epoch won), and the next agent resumed n beside its repeat, training its
    configuration twice. The repeat stands for n: n stays crashed, the repeat alone goes on."""
    from agent.sweep.controller import claim

    store = create_store(tmp_path / "sweep", "s", "s",
                         {"method": "grid", "parameters": {"lr": {"values": [0.1]}}})
    store.close()
    origin, copy, base = store.path, tmp_path / "copy.db", tmp_path / "base.db"
    take_copy(origin, copy, base)
    trained(copy, "n", range(1, 3), "running", claim="new")
    assert merge_back(copy, base, origin) == ["n"]
    trained(copy, "n", range(3, 5), "preempted", claim="")  # the job's end: not merged

    store = SweepStore(origin)  # the next agent on the sweep, n's heartbeat stale
    (repeat,) = claim(store, "node2:1", now=time.time() + 3600).runs
    store.close()
    assert (repeat.repeats, repeat.epoch) == ("n", 2)

    assert merge_back(copy, base, origin) == []
    merged = runs(origin)
    assert (merged["n"].state, merged["n"].epoch) == ("crashed", 2)
    assert [r.id for r in merged.values() if r.state in ("pending", "preempted", "running")
            ] == [repeat.run_id]


def take_command(origin, tmp_path, job_id: str, name: str, path: str | None = None):
    """`store_copy take --job ID` as a PBS job runs it, in the background."""
    extra = {"PATH": path} if path else {}
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from agent.cluster import store_copy as s; "
         "from util.errors import exit_on_user_error; s.HOLDER_POLL_S = 0.2; "
         "sys.exit(exit_on_user_error(s.main))", "take", "--job", job_id,
         str(origin), str(tmp_path / f"{name}-copy.db"), str(tmp_path / f"{name}-base.db")],
        cwd=ROOT, env=subprocess_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def qstat_bin(tmp_path, answer: str, code: int = 0) -> str:
    """A PATH with a stand-in `qstat` that prints `answer` (and exits `code`), as PBS's
    `qstat -x -f JOB` does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "qstat").write_text(f"#!/bin/sh\nprintf '%s\\n' '{answer}'\nexit {code}\n")
    (bin_dir / "qstat").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.timeout(60)
def test_a_job_waits_while_another_job_works_on_the_sweep_then_takes_it_over(tmp_path):
    """Two --pbs 1 jobs on one local sweep: on copies of its store both would train the same
    configurations. The second job's take waits, said once, while the first's record is
    there (no qstat on this machine: its merges keep it fresh); the first's last merge
    removes it and the second goes on."""
    origin, copy, base = job_copy(tmp_path)  # the first job, recorded as it takes
    first = take_command(origin, tmp_path, "100.pbs", "first")
    assert first.wait(timeout=30) == 0, first.stderr.read()
    holder = origin.parent / store_copy.HOLDER
    assert holder.read_text().split()[0] == "100.pbs"
    second = take_command(origin, tmp_path, "101.pbs", "second")
    time.sleep(3)
    assert second.poll() is None and not (tmp_path / "second-copy.db").exists()
    subprocess.run([sys.executable, "-m", "agent.cluster.store_copy", "merge",
                    str(copy), str(tmp_path / "first-base.db"), str(origin)],
                   cwd=ROOT, env=subprocess_env(), check=True, timeout=30)
    assert not holder.exists()  # the first job's last merge
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert err.count("job 100.pbs (on ") == 1 and "waits for it to end" in err, err
    assert "job 100.pbs has ended; this job goes on with the sweep" in err, err
    assert (tmp_path / "second-copy.db").exists()
    assert holder.read_text().split()[0] == "101.pbs"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["silent", "qstat F", "qstat unknown", "its own id"])
def test_a_job_takes_over_from_one_that_ended_without_its_last_merge(tmp_path, how):
    """A job killed outright (a node lost) leaves its record: the next job takes over once
    PBS says that job ended (qstat -x -f: job_state = F, or Unknown Job Id), or its record
    has been silent past HOLDER_SILENT_S (no qstat at hand, as in a container), or the record
    is of its own id (PBS reran the job). A live job's record (qstat: R) is waited for."""
    origin, _, _ = job_copy(tmp_path)
    holder = origin.parent / store_copy.HOLDER
    holder.write_text("100.pbs node7 deadbeef\n")
    path, job_id = None, "101.pbs"
    if how == "silent":
        old = time.time() - store_copy.HOLDER_SILENT_S - 5
        os.utime(holder, (old, old))
    elif how == "qstat F":
        path = qstat_bin(tmp_path, "Job Id: 100.pbs\n    job_state = F")
    elif how == "qstat unknown":
        path = qstat_bin(tmp_path, "qstat: Unknown Job Id 100.pbs", 153)
    else:
        job_id = "100.pbs"
    take = take_command(origin, tmp_path, job_id, "next", path)
    out, err = take.communicate(timeout=30)
    assert take.returncode == 0 and "waits" not in err, err
    assert holder.read_text().split()[0] == job_id

    holder.write_text("102.pbs node7 cafe\n")  # a live job: PBS says it runs
    take = take_command(origin, tmp_path, "103.pbs", "later",
                        qstat_bin(tmp_path, "Job Id: 102.pbs\n    job_state = R"))
    time.sleep(3)
    assert take.poll() is None
    take.kill()
    take.communicate()
    assert holder.read_text().split()[0] == "102.pbs"


def test_a_job_touches_and_removes_only_its_own_record(tmp_path):
    """A job whose record another job took over (it was silent too long) neither keeps it
    fresh nor removes it."""
    origin, _, base = job_copy(tmp_path)
    holder = origin.parent / store_copy.HOLDER
    store_copy.wait_for_other_job(origin, base, "100.pbs")
    old = time.time() - 1000
    os.utime(holder, (old, old))
    store_copy.touch_holder(origin, base)
    assert holder.stat().st_mtime > old + 900  # touched
    holder.write_text("101.pbs node7 cafe\n")  # taken over
    store_copy.touch_holder(origin, base, remove=True)
    assert holder.read_text().startswith("101.pbs")


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_status_judges_a_jobs_merged_heartbeats_by_its_agents_timeout_and_the_merges(
        tmp_path):
    """A PBS job's agents, launched with --heartbeat 30 --heartbeat-timeout 120, beat into
    the job's copy of the store, and the merges bring their heartbeats into the sweep's store
    every 30 s. agent.status judged them by a fixed 60 s: a run whose last beat there was
    80 s old, alive by its agents' own rule, was shown silent, with the advice to start an
    agent that repeats it. Status now reads the agents' settings (each agent's own file,
    which the merge brings over with its cadence) and shows it silent past 120 + 30 s only;
    once the job's agents have ended, the merge removes what it brought."""
    sweep_dir = tmp_path / "data" / "sweeps" / "pbs1"
    create_store(sweep_dir, "pbs1", "pbs1", {
        "program": "agent/train.py", "method": "grid", "parameters": {
            "dataset": {"value": "digits"}, "data_dir": {"value": str(tmp_path / "data")},
            "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
            "sinks": {"value": []}, "lr": {"values": [0.1, 0.05]}}}).close()
    job_dir = tmp_path / "scratch" / "data" / "sweeps" / "pbs1"  # the job's copy, as pbs.sh
    job_dir.mkdir(parents=True)
    origin, copy, base = sweep_dir / "sweep.db", job_dir / "sweep.db", tmp_path / "base.db"
    take_copy(origin, copy, base)
    agent = subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop", str(job_dir),
                            "--count", "1", "--heartbeat", "30", "--heartbeat-timeout", "120"],
                           cwd=tmp_path / "scratch", env=subprocess_env(OMP_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=200)
    assert agent.returncode == 0, agent.stderr
    from agent.sweep.controller import claim

    job = SweepStore(copy)  # another agent of the job trains the second run, beating every 30 s
    (running,) = claim(job, "node:7").runs
    job.close()
    write_heartbeat_settings(job_dir, "node:7", {"heartbeat_s": 30, "timeout_s": 120})
    assert agents_heartbeat_settings(job_dir) == {  # the first agent removed its own as it ended
        "node:7": {"heartbeat_s": 30.0, "timeout_s": 120.0}}
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time() - 80, running.run_id))
    db.close()
    def merge() -> None:
        merged = subprocess.run([sys.executable, "-m", "agent.cluster.store_copy", "merge",
                                 str(copy), str(base), str(origin)], cwd=tmp_path,
                                env=subprocess_env(), capture_output=True, text=True,
                                timeout=100)
        assert merged.returncode == 0, merged.stderr

    merge()

    def status() -> str:
        shown = subprocess.run([sys.executable, "-m", "agent.status", str(sweep_dir)],
                               cwd=tmp_path, env=subprocess_env(COLUMNS="200"),
                               capture_output=True, text=True, timeout=100)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout

    narrow = subprocess.run([sys.executable, "-m", "agent.status", str(sweep_dir)],
                            cwd=tmp_path, env=subprocess_env(COLUMNS="80"),
                            capture_output=True, text=True, timeout=100).stdout
    agent_line = narrow[narrow.index("agent node:7"):].splitlines()
    # the agent's line wrapped between words within 80 columns, its rest indented
    assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
    assert agent_line[1].startswith("  ") and not agent_line[1].startswith("   "), narrow
    assert " ".join(" ".join(agent_line[:3]).split()).startswith(
        f"agent node:7: 1 running ({running.run_id}); silent after 150 s (its "
        "--heartbeat-timeout 120, and 30 s between a PBS job's merges)"), narrow
    text = " ".join(status().split())
    assert "1 running, 1 finished" in text and "silent:" not in text, text
    assert f"agent node:7: 1 running ({running.run_id}); silent after 150 s (its " \
        "--heartbeat-timeout 120, and 30 s between a PBS job's merges)" in text, text
    with sqlite3.connect(origin) as db:  # the job is gone: no merge since
        db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time() - 160,
                                                             running.run_id))
    db.close()
    text = " ".join(status().split())
    assert "1 silent, 1 finished" in text, text
    assert f"agent node:7: 1 silent ({running.run_id}); silent after 150 s" in text, text
    assert "silent: no heartbeat for longer than its agent's time above" in text, text
    remove_heartbeat_settings(job_dir, "node:7")  # as that agent does as it ends
    merge()
    assert agents_heartbeat_settings(sweep_dir) == {}


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_job_whose_last_merge_failed_keeps_the_sweep_until_its_runs_are_merged(tmp_path):
    """A job's last merge fails (another process holds the store): its runs are in scratch
    only. Its record stays, marked, so that the next job refuses in one line naming the
    merge instead of taking a copy without those runs and training them again; the merge
    its log names, once run, frees the sweep."""
    origin = tmp_path / "sweep" / "sweep.db"
    create_store(origin.parent, "s", "s", {"method": "grid"}).close()
    base = tmp_path / "job-base.db"
    take = take_command(origin, tmp_path, "100.pbs", "job")
    assert take.wait(timeout=30) == 0, take.stderr.read()
    copy = tmp_path / "job-copy.db"
    trained(copy, "a", range(1, 3), "finished", claim="new")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, sys
db = sqlite3.connect({str(origin)!r}, isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE"); db.execute("BEGIN IMMEDIATE")
print("held", flush=True); sys.stdin.readline()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        tool = [sys.executable, "-m", "agent.cluster.store_copy"]
        merge = [*tool, "merge", str(copy), str(base), str(origin)]
        failed = subprocess.run([*merge, "--wait", "1"], cwd=ROOT, env=subprocess_env(),
                                capture_output=True, text=True, timeout=30)
        assert failed.returncode == 2 and "sweep store not merged" in failed.stderr
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    record = (origin.parent / store_copy.HOLDER).read_text()
    assert record.split()[:1] == ["100.pbs"] and record.split()[3] == "unmerged", record
    nxt = take_command(origin, tmp_path, "101.pbs", "next")
    out, err = nxt.communicate(timeout=30)
    assert nxt.returncode == 2, err
    (line,) = err.splitlines()
    assert "job 100.pbs's last merge into the sweep's store failed" in line, line
    assert f"store_copy merge {copy} {base} {origin}" in line, line
    assert not (tmp_path / "next-copy.db").exists()

    done = subprocess.run(merge, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=30)  # the merge the log named
    assert done.returncode == 0, done.stderr
    assert not (origin.parent / store_copy.HOLDER).exists() and "a" in runs(origin)
    nxt = take_command(origin, tmp_path, "101.pbs", "next")
    assert nxt.wait(timeout=30) == 0, nxt.stderr.read()
