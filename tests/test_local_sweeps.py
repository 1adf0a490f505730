"""Local (offline) sweeps with real agent processes, signals and a real SQLite store."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.sweep.controller import claim
from agent.sweep.store import SweepStore, create_store
from conftest import ROOT, closed_offline_runs, in_processes_at_once, subprocess_env
from util.errors import SWEEP_CTRL_C_NOTE, UserError

COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]


def make_sweep(workdir: Path, sweep_id: str, parameters: dict, method: str = "grid",
               **extra) -> SweepStore:
    config = {"program": "agent/train.py", "command": COMMAND, "method": method,
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "data_dir": {"value":
                             str(workdir / "data")}, **parameters}, **extra}
    return create_store(workdir / "data" / "sweeps" / sweep_id, sweep_id, sweep_id, config)


def start_agent(workdir: Path, store: SweepStore, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory), "--heartbeat", "0.3",
         *args], cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def launched_store(workdir: Path) -> SweepStore | None:
    """The store of the sweep a launcher made in `workdir`, once it is there (a store is
    made in a hidden .<id>.partial folder and renamed into place: that one is skipped)."""
    from agent.sweep.target import open_store

    sweeps = workdir / "data" / "sweeps"
    found = [d for d in sweeps.iterdir() if not d.name.startswith(".")] \
        if sweeps.exists() else []
    return open_store(str(found[0])) if found else None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def preempt_after(workdir: Path, store: SweepStore, epochs: int):
    """Start an agent on the one-run sweep, SIGTERM it once `epochs` epochs are done, and
    return the run it leaves: preempted, with its checkpoint."""
    first = start_agent(workdir, store)
    wait_for(lambda: any(r.epoch >= epochs for r in store.runs()), 120, f"{epochs} epoch(s)")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, first.stderr.read()
    (run,) = store.runs()
    assert run.state == "preempted", (run.state, run.epoch, run.error)
    return run


def write_grid(path: Path, epochs: int, lrs: list[float], **parameters) -> None:
    """A sweep file for the launcher: LONG_RUN's digits runs (with `parameters` over them), a
    grid over `lrs`."""
    path.write_text(yaml.safe_dump({
        "program": "agent/train.py", "command": COMMAND, "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {**LONG_RUN, "dataset": {"value": "digits"}, "epochs": {"value": epochs},
                       "lr": {"values": lrs}, **parameters}}))


def states(store: SweepStore) -> list[str]:
    return [run.state for run in store.runs()]


def in_a_terminal_session() -> None:
    """preexec_fn of a launcher the tests hang up on: SIGHUP at its default action, as in a
    shell's session. A test run under nohup (a CI job) inherits it ignored, and an ignored
    SIGHUP is the user's nohup, which the sweep honours by going on."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# Slow enough to interrupt (a few seconds a run), cheap in memory.
LONG_RUN = {"model": {"value": "dense"}, "hidden": {"value": 256}, "batch_size": {"value": 8},
            "sinks": {"value": ["tensorboard"]}}


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_four_agents_on_a_grid_run_each_point_exactly_once(workdir):
    store = make_sweep(workdir, "grid4", {
        "model": {"value": "dense"}, "hidden": {"value": 32}, "epochs": {"value": 1},
        "sinks": {"value": []}, "lr": {"values": [0.1, 0.05, 0.02, 0.01]},
        "batch_size": {"values": [32, 64]}})
    agents = [start_agent(workdir, store) for _ in range(4)]
    for agent in agents:
        assert agent.wait(timeout=200) == 0, agent.stderr.read()
    runs = store.runs()
    points = [(r.config["lr"], r.config["batch_size"]) for r in runs]
    assert len(points) == 8 and len(set(points)) == 8
    assert all(r.state == "finished" and r.summary["test/acc"] > 0 for r in runs)
    assert len({r.owner for r in runs}) >= 2  # the work was shared out


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_sigkilled_agent_run_is_repeated_once_from_its_checkpoint(workdir):
    """kill -9 mid-trial: the run is taken for crashed (heartbeat timeout) and repeated once,
    under a new id, from the crashed run's checkpoint: the repeat's history begins with the
    crashed run's epochs, its TensorBoard run and its W&B run hold every epoch, and it ends
    with the results of the same run never interrupted (CPU, one thread: bit for bit)."""
    from agent.report.curves import tensorboard_scalars
    from util.wandb_offline import find_runs

    parameters = {**LONG_RUN, "epochs": {"value": 5}, "lr": {"value": 0.01},
                  "sinks": {"value": ["tensorboard", "wandb"]}}
    store = make_sweep(workdir, "crash", parameters)
    victim = start_agent(workdir, store, "--heartbeat-timeout", "3")
    killed_id = wait_for(lambda: next((r.id for r in store.runs() if r.state == "running"
                                       and r.epoch >= 2), None), 120, "two epochs")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed = store.run(killed_id)
    assert killed.state == "running" and 2 <= killed.epoch < 5, (killed.state, killed.epoch)

    survivor = start_agent(workdir, store, "--heartbeat-timeout", "3")
    assert survivor.wait(timeout=200) == 0
    err = survivor.stderr.read()
    runs = {r.id: r for r in store.runs()}
    assert runs[killed.id].state == "crashed"
    (repeat,) = [r for r in runs.values() if r.requeued_from == killed.id]
    assert repeat.state == "finished" and repeat.config == killed.config
    assert f"run {repeat.id} repeats crashed run {killed.id} from its checkpoint" in err, err
    assert [h["epoch"] for h in repeat.history] == [1, 2, 3, 4, 5]
    assert repeat.history[:killed.epoch] == killed.history[:killed.epoch]
    assert repeat.summary["epochs_done"] == 5
    logs = workdir / "data" / "logs" / store.sweep().group
    accuracy = dict(tensorboard_scalars(logs / repeat.id, "val/acc"))  # step -> value
    assert sorted(accuracy.values()) == pytest.approx(  # TensorBoard holds float32
        sorted(h["val/acc"] for h in repeat.history), rel=1e-6)
    own = workdir / "own"  # the repeat's own event files, not the crashed run's copied
    own.mkdir()
    copied = {path.name for path in (logs / killed.id).glob("events.out.tfevents.*")}
    for path in (logs / repeat.id).glob("events.out.tfevents.*"):
        if path.name not in copied:
            shutil.copy(path, own / path.name)
    trained = tensorboard_scalars(own, "val/acc")
    assert len(trained) == 5 - killed.epoch, trained  # the epochs after the checkpoint only
    # W&B: the repeat is a run of its own, which gets the crashed run's epochs first
    offline = wait_for(lambda: next((r for r in find_runs(workdir / "wandb")
                                     if r.run_id == repeat.id and r.exit_code is not None),
                                    None), 60, "the repeat's closed W&B offline run")
    logged = [row for row in offline.history if "val/acc" in row]
    assert [row["epoch"] for row in logged] == [1, 2, 3, 4, 5], logged
    assert [row["val/acc"] for row in logged] == pytest.approx(
        [h["val/acc"] for h in repeat.history])
    assert [row["_step"] for row in logged] == sorted({row["_step"] for row in logged})

    twin = make_sweep(workdir, "twin", parameters)  # the same run, never interrupted
    agent = start_agent(workdir, twin)
    assert agent.wait(timeout=200) == 0, agent.stderr.read()
    (reference,) = twin.runs()
    for name in ("test/acc", "test/loss", "val/acc", "val/loss", "train/loss"):
        assert repeat.summary[name] == reference.summary[name], name
    assert [h["val/loss"] for h in repeat.history] == \
        [h["val/loss"] for h in reference.history]


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_a_repeat_killed_an_epoch_further_is_repeated_from_its_own_checkpoint(workdir):
    """kill -9 the run, then kill -9 its repeat once it got further: the repeat is repeated
    in turn, from its own checkpoint, and the sweep's one run ends finished with every epoch
    (before, a repeat was never repeated: its epochs stayed in a checkpoint no command
    resumed, and the launcher's "go on where it stopped" hint did nothing)."""
    store = make_sweep(workdir, "twice", {**LONG_RUN, "epochs": {"value": 8},
                                          "lr": {"value": 0.01}})
    first = start_agent(workdir, store, "--heartbeat-timeout", "3")
    crashed_id = wait_for(lambda: next((r.id for r in store.runs() if r.state == "running"
                                        and r.epoch >= 2), None), 120, "two epochs")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    crashed_epoch = store.run(crashed_id).epoch

    second = start_agent(workdir, store, "--heartbeat-timeout", "3")
    repeat_id = wait_for(lambda: next((r.id for r in store.runs() if r.requeued_from ==
                                       crashed_id and r.state == "running"
                                       and r.epoch > crashed_epoch), None), 120,
                         "the repeat an epoch further")
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)
    repeat = store.run(repeat_id)
    assert repeat.state == "running" and crashed_epoch < repeat.epoch < 8, repeat.epoch

    third = start_agent(workdir, store, "--heartbeat-timeout", "3")
    assert third.wait(timeout=200) == 0
    err = third.stderr.read()
    runs = {r.id: r for r in store.runs()}
    assert runs[repeat_id].state == "crashed"
    (again,) = [r for r in runs.values() if r.requeued_from == repeat_id]
    assert f"run {again.id} repeats crashed run {repeat_id} from its checkpoint" in err, err
    assert again.state == "finished" and [h["epoch"] for h in again.history] == \
        list(range(1, 9))
    assert again.history[:repeat.epoch] == runs[repeat_id].history
    assert [r.state for r in runs.values()].count("finished") == 1


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_repeat_from_a_checkpoint_newer_than_the_store_keeps_every_epoch(workdir):
    """An agent writes an epoch's checkpoint, then records the epoch in the store; killed
    between the two (here: while another process holds the store's lock, as agent.status or
    a slow file system may), the crashed run's checkpoint is an epoch ahead of its history.
    Its repeat resumes from that checkpoint and stores that epoch's row too: its history has
    no hole."""
    store = make_sweep(workdir, "ahead", {**LONG_RUN, "epochs": {"value": 5},
                                          "lr": {"value": 0.01}})
    victim = start_agent(workdir, store, "--heartbeat-timeout", "3")
    killed_id = wait_for(lambda: next((r.id for r in store.runs() if r.state == "running"
                                       and r.epoch >= 2), None), 120, "two epochs")
    saved = workdir / "data" / "runs" / killed_id / "checkpoint.pt"
    lock = sqlite3.connect(store.path, isolation_level=None, timeout=60)
    lock.execute("BEGIN IMMEDIATE")  # the agent's next record_epoch waits on it
    try:
        epoch = store.run(killed_id).epoch
        before = saved.stat().st_mtime_ns
        wait_for(lambda: saved.stat().st_mtime_ns != before, 120, "the next checkpoint")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    killed = store.run(killed_id)
    assert killed.epoch == epoch < 4, (killed.epoch, epoch)  # the checkpoint holds epoch + 1

    survivor = start_agent(workdir, store, "--heartbeat-timeout", "3")
    assert survivor.wait(timeout=200) == 0
    (repeat,) = [r for r in store.runs() if r.requeued_from == killed.id]
    assert repeat.state == "finished"
    assert [h["epoch"] for h in repeat.history] == [1, 2, 3, 4, 5]
    assert repeat.history[:epoch] == killed.history


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_repeat_without_the_crashed_runs_checkpoint_starts_over_without_its_rows(workdir):
    """The crashed run's checkpoint is gone (its folder deleted): its repeat, stored with the
    crashed run's 2 epochs, starts over from scratch, and its history holds only what it
    trained itself. Here lr 100 makes it diverge in its first epoch: no row of its own, and
    none of the crashed run's left behind to be read as its (hyperband, the report)."""
    store = make_sweep(workdir, "gone", {"model": {"value": "dense"}, "epochs": {"value": 4},
                                         "sinks": {"value": []}, "lr": {"value": 100.0},
                                         "momentum": {"value": 0.0}})
    (crashed,) = claim(store, "elsewhere:1").runs  # an agent of another host, then silent
    for epoch in (1, 2):
        assert store.record_epoch(crashed.run_id, "elsewhere:1", epoch,
                                  {"epoch": epoch, "val/acc": 0.5, "val/loss": 1.0})
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET heartbeat=0 WHERE id=?", (crashed.run_id,))
    agent = start_agent(workdir, store, "--heartbeat-timeout", "3")
    assert agent.wait(timeout=200) == 0
    err = agent.stderr.read()
    (repeat,) = [r for r in store.runs() if r.requeued_from == crashed.run_id]
    assert f"run {repeat.id} repeats crashed run {crashed.run_id} from scratch: no " \
        "checkpoint of it in" in err, err
    assert repeat.state == "finished" and repeat.summary.get("diverged"), repeat.summary
    assert repeat.history == [] and repeat.epoch == 0, repeat.history


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_preempted_repeat_whose_own_checkpoint_is_gone_says_it_resumes_the_crashed_runs(
        workdir):
    """A crashed run's repeat that trained to epoch 3 on its own, preempted, its folder then
    deleted: the next agent resumes it from the crashed run's checkpoint of epoch 1 (what a
    repeat starts from), and said only "repeats crashed run ... from its checkpoint", as if
    nothing of its own were lost. The line now says that its own checkpoint of epoch 3 is
    missing and that the epochs after the crashed run's checkpoint are trained again."""
    from agent.trial.loop import train

    store = make_sweep(workdir, "ownlost", {"model": {"value": "dense"}, "hidden": {"value": 32},
                                            "epochs": {"value": 4}, "sinks": {"value": []},
                                            "lr": {"value": 0.01}})
    (crashed,) = claim(store, "elsewhere:1").runs  # an agent of another host, then silent
    train({**crashed.config, "run_id": crashed.run_id, "epochs": 1})  # its checkpoint: epoch 1
    assert store.record_epoch(crashed.run_id, "elsewhere:1", 1, {"epoch": 1, "val/acc": 0.5})
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET heartbeat=0 WHERE id=?", (crashed.run_id,))
    (repeat,) = claim(store, "elsewhere:2", timeout=3).runs  # repeated there from epoch 1
    assert (repeat.repeats, repeat.epoch) == (crashed.run_id, 1)
    for epoch in (2, 3):  # ... which got to epoch 3 and was preempted; its folder is gone
        assert store.record_epoch(repeat.run_id, "elsewhere:2", epoch,
                                  {"epoch": epoch, "val/acc": 0.6})
    assert store.finish(repeat.run_id, "elsewhere:2", "preempted")
    runs = workdir / "data" / "runs"
    assert not (runs / repeat.run_id).exists()

    agent = start_agent(workdir, store)
    assert agent.wait(timeout=200) == 0
    err = agent.stderr.read()
    assert f"run {repeat.run_id} (repeating crashed run {crashed.run_id}) resumes from the " \
        f"crashed run's older checkpoint (data/runs/{crashed.run_id}): its own checkpoint of " \
        f"epoch 3 is missing (data/runs/{repeat.run_id}/checkpoint.pt), so the epochs it " \
        "trained after that checkpoint are trained again" in err, err
    done = store.run(repeat.run_id)
    assert done.state == "finished" and [h["epoch"] for h in done.history] == [1, 2, 3, 4]
    assert done.history[1]["val/acc"] != 0.6  # epoch 2 trained again, not the stored row


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_an_agent_started_again_after_a_kill_repeats_its_runs_at_once(workdir):
    """kill -9 an agent (its lock file stays, free), then start one again on this host
    with a heartbeat timeout of an hour: it does not wait the hour. The killed agent's lock
    is free, so its run is crashed and repeated from its checkpoint at once; a live agent's
    lock is held, so its run is left alone."""
    store = make_sweep(workdir, "again", {**LONG_RUN, "epochs": {"value": 4},
                                          "lr": {"values": [0.01, 0.02]}})
    victim = start_agent(workdir, store)
    killed = wait_for(lambda: next((r for r in store.runs() if r.state == "running"
                                    and r.epoch >= 1), None), 120, "a first epoch")
    from agent.sweep.agent_loop import agent_ended, lock_path

    assert list((store.directory / ".agents").glob("*.lock")) == [
        lock_path(store.directory, killed.owner)]
    assert not agent_ended(store.directory, killed.owner)  # held: its agent lives
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    again = start_agent(workdir, store, "--heartbeat-timeout", "3600")
    assert again.wait(timeout=200) == 0
    err = again.stderr.read()
    assert f"the agent of {killed.id} on this host has ended (its lock is free): crashed " \
        "now, repeated from its last checkpoint" in err, err
    (repeat,) = [r for r in store.runs() if r.requeued_from == killed.id]
    assert repeat.state == "finished" and [h["epoch"] for h in repeat.history] == [1, 2, 3, 4]
    assert not (store.directory / ".agents").exists()  # each agent removed its own lock


def _start_and_end_agents(folder: str, times: int, lost) -> None:
    """`times` agents' starts and ends in one sweep folder, as AgentLock and the heartbeat
    settings make and remove their files; each file missing after its start is `lost`.
    The agents are named by this process's pid, as agents on one host are."""
    name = str(os.getpid())
    from agent.sweep.agent_loop import AgentLock
    from agent.sweep.store import (
        agents_heartbeat_settings,
        remove_heartbeat_settings,
        write_heartbeat_settings,
    )

    for n in range(times):
        owner = f"host:{name}{n}"
        lock = AgentLock(Path(folder), owner)
        write_heartbeat_settings(folder, owner, {"heartbeat_s": 1.0, "timeout_s": 9.0})
        if lock.fd is None:
            lost.append(f"{owner}: no lock")
        if owner not in agents_heartbeat_settings(folder):
            lost.append(f"{owner}: no settings")
        remove_heartbeat_settings(folder, owner)
        lock.release()


@pytest.mark.timeout(180)
def test_agents_starting_as_others_end_keep_their_lock_and_heartbeat_files(workdir):
    """Agents of one sweep share its .agents and .heartbeats folders, and the last one out
    removes them: an agent ending as another started (--agents N ending together, a third
    launcher started as they end) removed the folder between the other's mkdir and its
    file, which was then not made, or mkdir itself failed ('File exists' for a folder gone
    by then). That agent ran without a lock (a kill -9 of it waited out the heartbeat
    timeout instead of being repaired at once) or without its settings (agent.status judged
    its runs by the default timeout). Four processes start and end 1,500 agents each."""
    assert in_processes_at_once(_start_and_end_agents, (str(workdir), 1500)) == []
    assert list(workdir.iterdir()) == []  # the last one out removed both folders


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_an_agent_with_nothing_to_claim_says_what_it_waits_for(workdir):
    """An agent started after another was killed (kill -9) on this host finds nothing to
    claim: one line (not one a poll) names the run it waits on, the timeout after which it
    repeats it, and that the run's agent has ended; then it repeats the run."""
    store = make_sweep(workdir, "waits", {**LONG_RUN, "epochs": {"value": 3},
                                          "lr": {"values": [0.01]}})
    victim = start_agent(workdir, store)
    killed = wait_for(lambda: next((r for r in store.runs() if r.state == "running"
                                    and r.epoch >= 1), None), 120, "a first epoch")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    # as an agent that could make no lock file (a read-only folder): only its pid tells
    shutil.rmtree(store.directory / ".agents")
    survivor = start_agent(workdir, store, "--heartbeat-timeout", "6")
    assert survivor.wait(timeout=200) == 0
    err = survivor.stderr.read()
    assert all(len(line) <= 80 for line in err.splitlines() if "waiting" in line), err
    said = " ".join(err.split())  # the line, wrapped within 80 columns
    assert said.count(": waiting: ") == 1, err
    waiting = said[said.index(": waiting: "):]
    assert (f"nothing left to claim while other agents train 1 run(s) ({killed.id}); one "
            "silent for 6 s would count as crashed and be repeated here, from its last "
            "checkpoint (a repeat again only once it got an epoch further); the agent "
            f"of {killed.id} on this host has ended: crashed in "
            "about ") in waiting, waiting
    assert re.search(rf"crashed in about \d+ s, then {killed.id} repeated here", waiting)
    (repeat,) = [r for r in store.runs() if r.requeued_from == killed.id]
    assert repeat.state == "finished"


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_sigterm_preempts_and_the_next_agent_resumes_the_epoch_count(workdir):
    store = make_sweep(workdir, "preempt", {**LONG_RUN, "epochs": {"value": 10},
                                            "lr": {"value": 0.01}})
    run = preempt_after(workdir, store, 1)
    done_before = run.epoch
    assert done_before < 10
    assert (workdir / "data" / "runs" / run.id / "checkpoint.pt").exists()

    second = start_agent(workdir, store)
    assert second.wait(timeout=200) == 0, second.stderr.read()
    (resumed,) = store.runs()
    assert resumed.id == run.id and resumed.state == "finished"
    assert [h["epoch"] for h in resumed.history] == list(range(1, 11))
    assert resumed.summary["epochs_done"] == 10


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_hyperband_stops_poor_runs_and_keeps_their_metrics(workdir):
    store = make_sweep(workdir, "hyper", {
        "model": {"value": "dense"}, "hidden": {"value": 32}, "epochs": {"value": 6},
        "batch_size": {"value": 64}, "sinks": {"value": []}, "schedule": {"value": "constant"},
        "optimizer": {"value": "sgd"}, "momentum": {"value": 0.0},
        "lr": {"values": [0.1, 0.05, 1e-5, 3e-5, 1e-4, 2e-5]}},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    agent = start_agent(workdir, store)
    assert agent.wait(timeout=280) == 0, agent.stderr.read()
    runs = store.runs()
    stopped = [r for r in runs if r.state == "stopped"]
    assert stopped, [(r.config["lr"], r.state, r.epoch) for r in runs]
    for run in stopped:
        assert run.epoch < 6 and run.history and "val/acc" in run.summary
    assert all(r.state in ("finished", "stopped") for r in runs)


@pytest.mark.timeout(120)
def test_store_is_a_wal_sqlite_file_readable_by_plain_sqlite(workdir):
    store = make_sweep(workdir, "plain", {"lr": {"value": 0.1}})
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (config,) = db.execute("SELECT config FROM sweep").fetchone()
    assert yaml.safe_load(config)["method"] == "grid"


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_an_ended_run_is_in_sweep_db_itself_when_its_agent_is_killed(workdir):
    """SQLite keeps new writes in sweep.db-wal until 1000 pages or the last connection's
    close: an agent killed by SIGKILL left a small sweep's finished runs there alone, and a
    copy of sweep.db (the file the launcher names as the results) held no run."""
    store = make_sweep(workdir, "copied", {**LONG_RUN, "epochs": {"value": 30},
                                           "lr": {"values": [0.01, 0.02]}})
    agent = start_agent(workdir, store)
    wait_for(lambda: [r.state for r in store.runs()] == ["finished", "running"], 200,
             "a finished run and a running one")
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=30)
    copy = workdir / "copy" / "sweep.db"
    copy.parent.mkdir()
    # copied while this test's connection is open (closing the last one would checkpoint)
    shutil.copyfile(workdir / "data" / "sweeps" / "copied" / "sweep.db", copy)
    runs = SweepStore(copy, read_only=True).runs()
    assert runs, "the copy of sweep.db holds no run"
    ended = runs[0]
    assert ended.state == "finished" and len(ended.history) == 30
    assert ended.summary["test/acc"] > 0


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["no-such-sweep", "data/sweeps/missing"])
def test_unknown_sweep_is_one_line_exit_2_and_creates_nothing(tmp_path, target):
    result = subprocess.run([sys.executable, "-m", "agent.launch", target], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["directory", "file", "absent"])
def test_a_path_that_is_not_a_sweep_is_named_as_such_not_taken_for_a_wandb_path(tmp_path,
                                                                                 kind):
    """/tmp/x/y has two slashes like entity/project/id: it is still a path on this machine."""
    from agent.sweep.target import resolve_target

    path = tmp_path / "some" / "where"
    if kind == "directory":
        path.mkdir(parents=True)
    elif kind == "file":
        path.parent.mkdir()
        path.write_text("not a sweep")
    with pytest.raises(UserError) as refused:
        resolve_target(str(path), project="p")
    line = str(refused.value)
    assert "not a local sweep" in line and "W&B" not in line
    assert {"directory": "a directory", "file": "a file",
            "absent": "does not exist"}[kind] in line


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quickstart_with_two_agents_completes_offline_through_run_sweep_sh(workdir):
    from agent.sweep.target import open_store

    result = subprocess.run([str(ROOT / "run_sweep.sh"), str(ROOT / "sweeps" / "quickstart.yaml"),
                             "--agents", "2"], cwd=workdir, env=subprocess_env(),
                            capture_output=True, text=True, timeout=380)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Created local sweep" in result.stdout and "Best run:" in result.stdout
    (store_dir,) = (workdir / "data" / "sweeps").iterdir()
    store = open_store(str(store_dir))
    runs = store.runs()
    assert len(runs) == 8  # the file's run_cap
    assert all(r.state in ("finished", "stopped") for r in runs)
    assert len({r.owner for r in runs}) == 2
    for run in runs:
        assert run.history and run.summary["val/acc"] > 0
        assert [h["epoch"] for h in run.history] == list(range(1, run.epoch + 1))
    offline = {r.run_id: r for r in closed_offline_runs(workdir / "wandb", len(runs))}
    for run in runs:
        assert run.id in offline
        assert offline[run.id].group == f"quickstart-{store_dir.name}"
        assert offline[run.id].config["sweep"]["id"] == store_dir.name
        assert set(offline[run.id].config["sweep"]) == {"id", "name", "config"}  # no progress
        if run.state == "finished":
            assert offline[run.id].summary["test/acc"] == pytest.approx(
                run.summary["test/acc"])
    assert (workdir / "data" / "logs" / f"quickstart-{store_dir.name}").is_dir()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_failing_trials_are_recorded_and_three_in_a_row_stop_the_agent(workdir):
    # mnist cannot be downloaded here: every trial raises inside train().
    store = make_sweep(workdir, "fails", {"dataset": {"value": "mnist"},
                                          "sinks": {"value": []},
                                          "lr": {"values": [0.1, 0.2, 0.3, 0.4, 0.5]}})
    agent = start_agent(workdir, store)
    assert agent.wait(timeout=200) == 1
    message = agent.stderr.read()
    assert "stopping after 3 failed runs in a row" in message
    runs = store.runs()
    assert [r.state for r in runs] == ["failed"] * 3
    for run in runs:  # refused before training: the one line, no traceback
        assert run.error.startswith("dataset='mnist': ") and "\n" not in run.error
        assert f"run {run.id} failed (dataset='mnist': " in message
        assert not (workdir / "data" / "runs" / run.id / "traceback.txt").exists()


def _two_agents_in_a_terminal(workdir: Path) -> subprocess.Popen:
    """`run_sweep.sh long.yaml --agents 2` (a grid of 3 runs of 30 epochs) started from a
    terminal: its own process group, which Ctrl-C or a hang-up signals whole."""
    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01, 0.02, 0.03])
    return subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file),
                             "--agents", "2"], cwd=workdir, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=in_a_terminal_session)


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hang-up"])
def test_ctrl_c_stops_every_agent_cleanly_and_keeps_the_runs_resumable(workdir, signum):
    """Ctrl-C, or the terminal closing (the shell's SIGHUP to its jobs; before, it killed
    every agent mid-trial: runs left `running`, then repeated from scratch). After a Ctrl-C
    the launch ends as interrupted, killed by SIGINT once its closing lines are out (a
    shell reports 130); after a hang-up with 0."""
    launcher = _two_agents_in_a_terminal(workdir)

    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    wait_for(lambda: sum(r.state == "running" and r.epoch >= 1
                         for r in store.runs()) == 2, 120, "two running runs")
    os.killpg(launcher.pid, signum)  # what Ctrl-C (or a closing terminal) sends the group
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == (-signal.SIGINT if signum == signal.SIGINT else 0), \
        err[-2000:]
    runs = store.runs()
    assert sorted(r.state for r in runs) == ["preempted", "preempted"]
    assert "Results:" in out


def children(pid: int) -> list[int]:
    """The pids of the processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "hang-up"])
def test_a_sigterm_to_the_whole_launch_as_its_agents_start_ends_it_with_0(workdir, signum):
    """A scheduler's SIGTERM reaches every process of a job (SLURM's preemption or
    scancel, `timeout` in the job script signals its process group), and a closing
    terminal's SIGHUP every process of the group: one that lands while the agents still load
    their modules kills them before their handlers are in, with no run claimed. The launch
    then ends as a preemption does, with 0 and no 'agent N was killed' line; it ended with
    143 (129), which marked such a batch job failed, each agent named."""
    launcher = _two_agents_in_a_terminal(workdir)
    wait_for(lambda: len(children(launcher.pid)) == 2, 60, "two agent processes")
    os.killpg(launcher.pid, signum)  # the agents are importing torch: seconds
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, err[-2000:]
    assert "was killed" not in err and "Traceback" not in err, err[-2000:]
    store = launched_store(workdir)
    assert [r.state for r in store.runs()] in ([], ["preempted"], ["preempted"] * 2)
    assert "Not finished (0 of 3 runs ended)" in out, out


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "hang-up"])
def test_an_agent_on_its_own_ends_as_interrupted_after_a_ctrl_c(workdir, how):
    """`python -m agent.sweep.agent_loop <sweep> && next`, as a user runs one agent on its
    own: a Ctrl-C preempts its run (kept resumable) and ends the agent as interrupted,
    killed by SIGINT once its lines are out (a shell reports 130), so `next` does not run;
    it ended with 0 and the shell went on. A scheduler's SIGTERM or a SIGHUP still ends it
    with 0 (`next` runs)."""
    store = make_sweep(workdir, "alone", {**LONG_RUN, "epochs": {"value": 30},
                                          "lr": {"values": [0.01, 0.02]}})
    agent = [sys.executable, "-m", "agent.sweep.agent_loop", store.sweep().id]
    shell = subprocess.Popen(["/bin/bash", "-c", f"{shlex.join(agent)} && echo next"],
                             cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, preexec_fn=in_a_terminal_session)
    wait_for(lambda: any(r.state == "running" and r.epoch >= 1 for r in store.runs()), 120,
             "a running run")
    if how == "ctrl-c":  # what Ctrl-C sends the foreground group: the shell and the agent
        os.killpg(shell.pid, signal.SIGINT)
    else:  # a scheduler's walltime, or SIGHUP (a shell that hung up would die of it itself)
        (owner,) = [r.owner for r in store.runs() if r.state == "running"]
        os.kill(int(owner.rpartition(":")[2]),
                signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
    out, err = shell.communicate(timeout=60)
    (stopped,) = store.runs()
    assert stopped.state == "preempted" and stopped.epoch >= 1, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    if how == "ctrl-c":
        assert shell.returncode in (-signal.SIGINT, 130), err[-2000:]  # bash: either way
        assert out == "" and err.splitlines()[-1] == "interrupted", (out, err[-2000:])
    else:
        assert (shell.returncode, out) == (0, "next\n"), err[-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "hang-up"])
def test_one_agent_trains_in_the_launchers_process_and_a_signal_preempts_it(workdir, how):
    """One agent on the CPU: the launcher trains itself (no second interpreter to import
    torch, the engine and wandb again); SIGTERM or Ctrl-C still preempts the run, keeps it
    resumable, prints the closing table and exits 0 (a Ctrl-C: killed by SIGINT, which a
    shell reports as 130, after one word: wandb's service, started by the run's W&B sink,
    had put a traceback of the KeyboardInterrupt before it), and the sweep goes on from it."""
    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01, 0.02],
               sinks={"value": ["tensorboard", "wandb"]})
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file)],
                                cwd=workdir, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=in_a_terminal_session)

    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    run = wait_for(lambda: next((r for r in store.runs() if r.state == "running"
                                 and r.epoch >= 1), None), 120, "a running run")
    assert run.owner.endswith(f":{launcher.pid}")  # trained by the launcher itself
    if how == "sigterm":
        launcher.send_signal(signal.SIGTERM)
    elif how == "hang-up":  # the terminal closed: its shell sends its jobs SIGHUP
        os.killpg(launcher.pid, signal.SIGHUP)
    else:
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == (-signal.SIGINT if how == "ctrl-c" else 0), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    if how == "ctrl-c":
        assert err.splitlines()[-1] == "interrupted", err[-2000:]
    (stopped,) = store.runs()
    assert stopped.state == "preempted" and stopped.epoch >= 1
    assert "Results:" in out and f"./run_sweep.sh {store.sweep().id}" in out
    # the hint's command goes on: the run resumes at its epoch, the second one is added
    again = subprocess.run([sys.executable, "-m", "agent.launch", store.sweep().id, "--count",
                            "1"], cwd=workdir, env=subprocess_env(), capture_output=True,
                           text=True, timeout=200)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = store.run(stopped.id)
    assert resumed.state == "finished" and resumed.epoch == 30
    assert [h["epoch"] for h in resumed.history] == list(range(1, 31))


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("agents", ["1", "2"])
def test_a_sweep_started_under_nohup_outlives_its_terminal(workdir, agents):
    """`nohup ./run_sweep.sh ...`: SIGHUP is ignored, as the user asked; the agents (the
    launcher's own, or its children) do not take it for a preemption."""
    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=3, lrs=[0.01])
    launcher = subprocess.Popen(
        [sys.executable, "-m", "agent.launch", str(sweep_file), "--agents", agents],
        cwd=workdir, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # what nohup does
    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    wait_for(lambda: any(r.state == "running" and r.epoch >= 1 for r in store.runs()), 120,
             "a running run")
    os.killpg(launcher.pid, signal.SIGHUP)
    out, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, err[-2000:]
    (run,) = store.runs()
    assert run.state == "finished" and run.epoch == 3, (run.state, run.epoch, err[-2000:])


def test_only_one_agent_on_the_devices_the_launcher_sees_trains_in_its_process(monkeypatch):
    from agent import launch

    monkeypatch.setattr(launch, "visible_gpus", lambda: [])
    assert launch.runs_here(launch.agent_slots([], 1, 1), [])
    assert not launch.runs_here(launch.agent_slots([], 1, 2), [])
    monkeypatch.setattr(launch, "visible_gpus", lambda: ["3"])  # a job's one GPU
    assert launch.runs_here(launch.agent_slots(["3"], 1, 1), ["3"])
    assert not launch.runs_here(launch.agent_slots(["3"], 2, 1), ["3"])  # 2 per GPU
    monkeypatch.setattr(launch, "visible_gpus", lambda: ["0", "1"])
    assert not launch.runs_here(launch.agent_slots(["1"], 1, 1), ["1"])  # --gpus 1 of two
    assert not launch.runs_here(launch.agent_slots(["0", "1"], 1, 1), ["0", "1"])


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_bad_sweep_file_through_the_launcher_is_exit_2_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters:\n  learning_rate: {values: [0.1]}\n")
    result = subprocess.run([sys.executable, "-m", "agent.launch", str(bad)], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 2 and "learning_rate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_status_shows_runs_by_state_and_the_best(workdir):
    store = make_sweep(workdir, "stat", {"model": {"value": "dense"}, "hidden": {"value": 16},
                                         "epochs": {"value": 1}, "sinks": {"value": []},
                                         "lr": {"values": [0.1, 0.001]}})
    assert start_agent(workdir, store).wait(timeout=100) == 0
    result = subprocess.run([sys.executable, "-m", "agent.status", str(store.directory)],
                            cwd=workdir, env=subprocess_env(COLUMNS="200"),
                            capture_output=True, text=True, timeout=100)
    assert result.returncode == 0
    # every run has ended: the best, not the best so far
    assert "2 finished" in result.stdout and "best:" in result.stdout
    assert "so far" not in result.stdout
    best = max(store.runs(), key=lambda r: r.summary["val/acc"])
    assert best.id in result.stdout.split("best:")[1].splitlines()[0]


def status_of(workdir: Path, store: SweepStore) -> str:
    """`python -m agent.status` of the sweep, its words one space apart."""
    shown = subprocess.run([sys.executable, "-m", "agent.status", str(store.directory)],
                           cwd=workdir, env=subprocess_env(COLUMNS="200"), capture_output=True,
                           text=True, timeout=100)
    assert shown.returncode == 0, shown.stderr
    return " ".join(shown.stdout.split())


def beat_at(store: SweepStore, run_id: str, when: float) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (when, run_id))
    db.close()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_status_judges_each_agents_runs_by_that_agents_own_heartbeat_settings(workdir):
    """Two agents on one sweep folder, one beating every 100 s (--heartbeat-timeout 400),
    one started after it with the default 60 s. Each wrote its settings into one file
    (heartbeat.json), the last one's standing for both, so status showed the first agent's
    run silent 80 s after a beat, which that agent gives only every 100 s. Each agent now has
    a file of its own, status judges a run by its own agent's and says each agent's, and an
    agent removes its own as it ends. A run of an agent without one (an agent older than
    these files) is judged by the old shared heartbeat.json."""
    import socket

    store = make_sweep(workdir, "two", {**LONG_RUN, "epochs": {"value": 2000},
                                        "lr": {"values": [0.01, 0.02]}})
    host = socket.gethostname()
    slow = start_agent(workdir, store, "--heartbeat", "100", "--heartbeat-timeout", "400")
    agents = [slow]
    try:
        wait_for(lambda: [r for r in store.runs() if r.state == "running"], 120, "a claim")
        agents.append(start_agent(workdir, store))  # --heartbeat 0.3, the default timeout
        wait_for(lambda: len([r for r in store.runs() if r.state == "running"]) == 2, 120,
                 "the second agent's claim")
        for agent in agents:  # frozen: their runs' heartbeats stay as set below
            agent.send_signal(signal.SIGSTOP)
        runs = {r.owner: r for r in store.runs()}
        slow_run, fast_run = runs[f"{host}:{slow.pid}"], runs[f"{host}:{agents[1].pid}"]
        beat_at(store, slow_run.id, time.time() - 80)  # its last beat, 80 s ago
        text = status_of(workdir, store)
        assert "2 running" in text and "silent:" not in text and " silent (" not in text, text
        assert (f"agent {host}:{slow.pid}: 1 running ({slow_run.id}); silent after 400 s (its "
                "--heartbeat-timeout)") in text, text
        assert (f"agent {host}:{agents[1].pid}: 1 running ({fast_run.id}); silent after 60 s "
                "(its --heartbeat-timeout)") in text, text
        beat_at(store, fast_run.id, time.time() - 70)  # past its own agent's 60 s
        text = status_of(workdir, store)
        assert "1 running, 1 silent" in text, text
        assert f"agent {host}:{agents[1].pid}: 1 silent ({fast_run.id}); silent after 60 s" \
            in text, text
        assert "silent: no heartbeat for longer than its agent's time above" in text, text
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
            agent.send_signal(signal.SIGCONT)
        for agent in agents:
            assert agent.wait(timeout=60) == 0, agent.stderr.read()
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    assert [r.state for r in store.runs()] == ["preempted", "preempted"]
    assert not (store.directory / ".heartbeats").exists()  # each agent removed its own

    (store.directory / "heartbeat.json").write_text(  # as agents before these files left it
        '{"heartbeat_s": 100.0, "timeout_s": 400.0}')
    (older,) = claim(store, "older:1").runs
    beat_at(store, older.run_id, time.time() - 80)
    text = status_of(workdir, store)
    assert "1 running, 1 preempted" in text and \
        f"agent older:1: 1 running ({older.run_id}); silent after 400 s" in text, text


def test_agent_slots_give_each_agent_its_gpu_or_a_share_of_the_cpu():
    from agent.launch import agent_slots

    slots = agent_slots(["0", "1"], 2, 1)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "1", "1"]
    cpu = agent_slots([], 4, 2)
    assert len(cpu) == 2 and all(s["CUDA_VISIBLE_DEVICES"] == "" for s in cpu)
    assert all(int(s["OMP_NUM_THREADS"]) >= 1 for s in cpu)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_stalled_agent_finds_its_run_taken_writes_nothing_and_moves_on(workdir):
    store = make_sweep(workdir, "stall", {**LONG_RUN, "epochs": {"value": 8},
                                          "lr": {"values": [0.01, 0.02]}})
    # ten beats of 0.3 s: with five, two agents training on a loaded CI machine once missed
    # them (a live agent's run taken for crashed is not what this test is about)
    timeout = ("--heartbeat-timeout", "3")
    stalled = start_agent(workdir, store, *timeout)
    taken_id = wait_for(lambda: next((r.id for r in store.runs() if r.state == "running"
                                      and r.epoch >= 1), None), 120, "a first epoch")
    stalled.send_signal(signal.SIGSTOP)
    try:
        time.sleep(4)  # silent past the timeout
        other = start_agent(workdir, store, *timeout)
        repeat = wait_for(lambda: next((r for r in store.runs() if r.requeued_from == taken_id
                                        and r.state == "running"), None), 120, "the repeat")
        taken = store.run(taken_id)
        assert taken.state == "crashed"
    finally:
        stalled.send_signal(signal.SIGCONT)  # it wakes while its run's repeat trains
    assert stalled.wait(timeout=200) == 0 and other.wait(timeout=200) == 0
    lines = stalled.stderr.read().splitlines()
    assert [line for line in lines if taken_id in line] == [
        f"agent {taken.owner}: run {taken_id} was declared crashed while this agent was silent "
        "and is re-queued; this copy stops without recording anything"]
    assert "Traceback" not in "\n".join(lines)
    runs = store.runs()
    assert store.run(taken_id) == taken  # not one write after it was taken: no epoch, no end
    assert not (workdir / "data" / "runs" / taken_id / "summary.json").exists()  # cut short
    assert store.run(repeat.id).state == "finished" and store.run(repeat.id).owner != taken.owner
    finished = [r for r in runs if r.state == "finished"]
    assert sorted(r.config["lr"] for r in finished) == [0.01, 0.02]  # each point once
    # The stalled agent went on to the next claim: the other grid point.
    (moved_on,) = [r for r in finished if r.id not in (taken_id, repeat.id)]
    assert moved_on.owner == taken.owner and len(runs) == 3


BAD_HEARTBEATS = [["--heartbeat-timeout", "nan"], ["--heartbeat-timeout", "inf"],
                  ["--heartbeat-timeout", "0"], ["--heartbeat-timeout", "2"],
                  ["--heartbeat", "0"], ["--heartbeat", "-1"],
                  ["--heartbeat", "1", "--heartbeat-timeout", "2.9"]]


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("options", BAD_HEARTBEATS, ids=" ".join)
def test_heartbeat_options_that_duplicate_or_never_repair_runs_are_refused(workdir, options):
    store = make_sweep(workdir, "beats", {"lr": {"value": 0.1}})
    sweep_file = workdir / "beats.yaml"
    sweep_file.write_text(yaml.safe_dump(store.sweep().config))
    for command in ([sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory)],
                    [str(ROOT / "run_sweep.sh"), str(sweep_file)]):
        result = subprocess.run(command + options, cwd=workdir, env=subprocess_env(),
                                capture_output=True, text=True, timeout=100)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {options[-2]}=") and "heartbeat" in line
    assert [p.name for p in (workdir / "data" / "sweeps").iterdir()] == ["beats"]
    assert store.runs() == []


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_launcher_exit_code_says_an_agent_was_killed(workdir):
    sweep_file = workdir / "two.yaml"
    write_grid(sweep_file, epochs=3, lrs=[0.01, 0.02])
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file),
                                 "--agents", "2", "--heartbeat", "0.3",
                                 "--heartbeat-timeout", "1"], cwd=workdir,
                                env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    victim = wait_for(lambda: next((r for r in store.runs() if r.state == "running"), None),
                      120, "a running run")
    pid = int(victim.owner.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    out, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 128 + signal.SIGKILL, err[-2000:]
    assert f"agent {pid} was killed by SIGKILL" in err
    runs = store.runs()  # the survivor repaired the killed agent's run
    assert store.run(victim.id).state == "crashed"
    assert sorted(r.config["lr"] for r in runs if r.state == "finished") == [0.01, 0.02]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_runs_of_agents_killed_mid_trial_are_repeated_at_once_and_the_hint_finishes_them(
        workdir):
    """Every agent SIGKILLed: the launcher marks their runs crashed and re-queued as soon as
    they are gone (not a heartbeat timeout later), says the sweep is not finished, and its
    hint trains the repeats to the end; the sweep is then finished."""
    sweep_file = workdir / "two.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01, 0.02])
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file),
                                 "--agents", "2"], cwd=workdir, env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    running = wait_for(lambda: [r for r in store.runs() if r.state == "running"]
                       if sum(r.state == "running" for r in store.runs()) == 2 else None,
                       120, "two running runs")
    for run in running:
        os.kill(int(run.owner.rsplit(":", 1)[1]), signal.SIGKILL)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 128 + signal.SIGKILL
    runs = store.runs()
    assert sorted(r.state for r in runs) == ["crashed", "crashed", "pending", "pending"]
    assert all(f"run {r.id}: its agent ended mid-trial" in err for r in running)
    assert "Not finished (0 of 2 runs ended)" in out
    hint = out.split("go on where it stopped with")[1].split()[:2]
    assert hint == ["./run_sweep.sh", store.sweep().id]
    again = subprocess.run([sys.executable, "-m", "agent.launch", hint[1], "--agents", "2"],
                           cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                           timeout=200)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(r.state for r in store.runs()) == ["crashed", "crashed", "finished",
                                                     "finished"]
    assert "Not finished" not in again.stdout and "2 crashed (repeated)" in again.stdout


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", ["agent.status", "agent.sweep.agent_loop"])
def test_a_store_of_the_previous_schema_is_refused_in_one_line(workdir, module):
    old = workdir / "data" / "sweeps" / "old"
    old.mkdir(parents=True)
    with sqlite3.connect(old / "sweep.db") as db:  # as the code before schema versions made it
        db.executescript(
            "CREATE TABLE sweep (id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL,"
            " created REAL NOT NULL);"
            "CREATE TABLE runs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, config TEXT NOT NULL,"
            " state TEXT NOT NULL, owner TEXT, heartbeat REAL, requeued_from TEXT,"
            " epoch INTEGER NOT NULL DEFAULT 0, summary TEXT, error TEXT, created REAL NOT NULL,"
            " started REAL, ended REAL);")
    before = (old / "sweep.db").read_bytes()
    result = subprocess.run([sys.executable, "-m", module, "old"], cwd=workdir,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {Path('data/sweeps/old/sweep.db')}: a sweep store of "
                           "schema version 0")
    assert (old / "sweep.db").read_bytes() == before


def test_an_agent_killed_by_a_signal_is_never_hidden_by_the_others_exit_codes(capsys):
    from agent.launch import launcher_exit_code

    assert launcher_exit_code([11, 12], [0, 0]) == 0
    assert launcher_exit_code([11, 12], [0, 1]) == 1
    assert launcher_exit_code([11, 12], [-signal.SIGKILL, 0]) == 128 + signal.SIGKILL
    assert launcher_exit_code([11, 12], [2, -signal.SIGTERM]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines() == ["agent 11 was killed by SIGKILL",
                                                    "agent 12 was killed by SIGTERM"]
    # after a Ctrl-C: 130, and the agents it (or the SIGTERM passed on) killed are no news
    assert launcher_exit_code([11, 12], [0, -signal.SIGTERM], interrupted=True) == 130
    assert launcher_exit_code([11, 12], [-signal.SIGINT, 0], interrupted=True) == 130
    assert launcher_exit_code([11, 12], [-signal.SIGKILL, 1], interrupted=True) == 137
    assert capsys.readouterr().err.splitlines() == ["agent 11 was killed by SIGKILL"]
    # after the launcher's own SIGTERM or SIGHUP (a scheduler's, to the whole job): 0, and
    # the agents it killed before their handlers were in are no news either
    assert launcher_exit_code([11, 12], [0, -signal.SIGTERM], stopped=True) == 0
    assert launcher_exit_code([11, 12], [-signal.SIGHUP, 0], stopped=True) == 0
    assert launcher_exit_code([11, 12], [-signal.SIGKILL, 0], stopped=True) == 137
    assert capsys.readouterr().err.splitlines() == ["agent 11 was killed by SIGKILL"]


@pytest.mark.e2e
@pytest.mark.timeout(60)
@pytest.mark.parametrize("gpus, visible, expected", [
    ("0", None, "no GPU that CUDA sees"), ("7,9", None, "no GPU that CUDA sees"),
    ("0", "", "no GPU that CUDA sees"), ("0", "2,3", "GPU 0 is not among"),
    ("2,5", "2,3", "GPU 5 is not among")])
def test_gpus_this_machine_lacks_are_refused_before_a_sweep_is_made(tmp_path, gpus, visible,
                                                                    expected):
    """On this CPU machine (or outside a job's allocation) `--gpus` is one line and exit 2,
    not agents that say "GPU 0" and train on the CPU."""
    import glob

    if visible is None and glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine has GPUs: only a job's CUDA_VISIBLE_DEVICES is checked")
    env = subprocess_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    shutil.copy(ROOT / "sweeps" / "quickstart.yaml", tmp_path / "q.yaml")
    done = subprocess.run([sys.executable, "-m", "agent.launch", "q.yaml", "--gpus", gpus],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert expected in done.stderr
    assert not (tmp_path / "data").exists()  # no sweep was made


def test_agents_starting_unpacked_on_a_gpu_are_told_of_pack_auto(workdir):
    from agent.launch import pack_tip, parse_options

    ours = make_sweep(workdir, "ours", {"lr": {"values": [0.1, 0.01]}})
    other = make_sweep(workdir, "other", {"lr": {"values": [0.1]}},
                       command=["${env}", "python", "other.py", "${args}"])
    tip = pack_tip(parse_options(["ours"]), ["0"], ours)
    assert tip and "--pack auto" in tip
    assert pack_tip(parse_options(["ours"]), [], ours) is None  # the CPU: packing rarely pays
    assert pack_tip(parse_options(["ours", "--pack", "auto"]), ["0"], ours) is None
    assert pack_tip(parse_options(["ours", "--pack", "4"]), ["0"], ours) is None
    assert pack_tip(parse_options(["other"]), ["0"], other) is None  # another program


def test_the_hints_repeat_every_option_that_shapes_the_agents(monkeypatch):
    """agent_options() is the tail of the hints to add agents and to go on: read back by the
    launcher, it gives the same agents (pack, devices, how many, heartbeats, the W&B project
    their runs go to)."""
    import shlex

    from agent.launch import agent_options, parse_options

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    shaping = ("pack", "gpus", "agents_per_gpu", "agents", "heartbeat", "heartbeat_timeout",
               "project")
    given = parse_options(["s", "--pack", "auto", "--gpus", "0,1", "--agents-per-gpu", "3",
                           "--agents", "2", "--heartbeat", "0.5", "--heartbeat-timeout", "7.5",
                           "--count", "4", "--project", "my study"])
    again = parse_options(["s", *shlex.split(agent_options(given))])
    assert {n: getattr(again, n) for n in shaping} == {n: getattr(given, n) for n in shaping}
    defaults = parse_options(["s"])
    assert agent_options(defaults) == ""


@pytest.mark.parametrize("project", ["a/b", "a#b", "x:y", "50%", "a\\b", "p" * 129])
def test_a_project_w_and_b_refuses_is_refused_before_a_sweep_is_made(workdir, project,
                                                                    capsys, monkeypatch):
    """W&B refuses such a project name only as each run starts: every run of the sweep would
    fail. The launcher refuses it in one line, exit 2, nothing created; a "/" is fine
    before a bare W&B sweep id (entity/project)."""
    from agent.launch import main
    from util.errors import UserError

    sweep_file = workdir / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "program": "agent/train.py", "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1}}}))
    with pytest.raises(UserError, match="--project=.*not a W&B project name"):
        main([str(sweep_file), "--project", project])
    # the same name from the environment (--project's default) is named as such
    monkeypatch.setenv("WANDB_PROJECT", project)
    with pytest.raises(UserError, match="^WANDB_PROJECT=.*not a W&B project name"):
        main([str(sweep_file)])
    assert not (workdir / "data" / "sweeps").exists() or \
        not any((workdir / "data" / "sweeps").iterdir())


@pytest.mark.parametrize("project", ["a/b", "my#proj", "x:y", "p" * 129])
def test_a_sweep_files_project_w_and_b_refuses_is_refused_where_its_runs_go_there(
        workdir, monkeypatch, project):
    """The sweep's `project` key is where its runs go when neither WANDB_PROJECT nor
    --project says otherwise (as with `wandb sweep`); wandb.init refuses such a name as
    each run starts, so every run would fail ('W&B refused run ... (UsageError: Invalid
    project name ...)'). Refused in one line naming the key and the rule, the dry runs
    alike (a batch job's too), nothing created; with WANDB_PROJECT set the key is not used
    and the file passes."""
    from agent.launch import main

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    sweep_file = workdir / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "program": "agent/train.py", "method": "grid", "project": project,
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1},
                       "model": {"value": "dense"}, "hidden": {"value": 8}}}))
    for dry in ([], ["--dry-run"], ["--slurm", "1", "--dry-run"]):
        with pytest.raises(UserError) as refused:
            main([str(sweep_file), *dry])
        message = str(refused.value)
        assert "\n" not in message and f"{sweep_file}: project: '{project[:20]}" in message \
            and "not a W&B project name" in message and "/ \\ # ? % :" in message, message
    assert not (workdir / "data" / "sweeps").exists() or \
        not any((workdir / "data" / "sweeps").iterdir())
    monkeypatch.setenv("WANDB_PROJECT", "study")
    assert main([str(sweep_file), "--dry-run"]) == 0


def test_status_without_a_sweep_lists_the_local_sweeps_newest_first(workdir, monkeypatch,
                                                                     capsys):
    from agent.sweep.status import main

    monkeypatch.chdir(workdir)
    with pytest.raises(UserError, match="no local sweeps in data/sweeps"):
        main([])
    make_sweep(workdir, "older", {"lr": {"values": [0.1, 0.01]}})
    time.sleep(0.01)
    make_sweep(workdir, "newer", {"lr": {"values": [0.1]}})
    being_made = workdir / "data" / "sweeps" / ".abc.partial"  # create_store's, mid-way
    being_made.mkdir()
    (being_made / "sweep.db").write_bytes(b"")
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["older"], ["newer"])]
    assert [row[0] for row in rows] == ["newer", "older"]
    assert [row[3] for row in rows] == ["0/1", "0/2"]  # runs ended of planned
    assert max(len(line) for line in lines) <= 80


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("after_s", [0.2, 0.6, 1.2])
def test_ctrl_c_while_the_launcher_starts_is_one_word_not_a_traceback(workdir, after_s):
    """Ctrl-C in the launcher's first second (its modules loading, torch importing) ends it
    quietly, as the README promises for Ctrl-C at any time."""
    (workdir / "grid.yaml").write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "epochs": {"value": 1}, "lr": {"values": [0.1, 0.01]}}}))
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", "grid.yaml"],
                                cwd=workdir, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]


def agent_processes(launcher: int) -> list[int]:
    """The agent processes the launcher `launcher` has started (its children running the
    agent's module: a child between its fork and its exec still runs the launcher's)."""
    found = []
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"agent.sweep.agent_loop" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:  # it ended meanwhile
                pass
    return found


def handles(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (its SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def stop_two_agent_launch(sweep_file, workdir, how: str, after_s: float, wait_s: float):
    """`agent.launch SWEEP_FILE --agents 2`, stopped `after_s` after both agents started
    (a Ctrl-C to its whole group, as a terminal sends it, or SIGTERM to the launcher) with
    the agents pinned by SIGSTOP while the signal is sent: (the launcher, the agents' pids,
    those that had no SIGTERM handler yet, its stdout, its stderr)."""
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file),
                                 "--agents", "2"], cwd=workdir, env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    agents = wait_for(lambda: len(agent_processes(launcher.pid)) == 2
                      and agent_processes(launcher.pid), wait_s, "two agents")
    time.sleep(after_s)
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    unready = [pid for pid in agents if not handles(pid, signal.SIGTERM)]
    if how == "ctrl-c":
        os.killpg(launcher.pid, signal.SIGINT)
    else:
        launcher.send_signal(signal.SIGTERM)
    for pid in agents:
        os.kill(pid, signal.SIGCONT)
    out, err = launcher.communicate(timeout=wait_s)
    return launcher, agents, unready, out, err


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how, after_s", [("ctrl-c", 0.0), ("ctrl-c", 1.0), ("ctrl-c", 3.0),
                                          ("sigterm", 0.0)])
def test_a_ctrl_c_as_the_agents_start_ends_the_launch_as_interrupted(workdir, how, after_s):
    """A Ctrl-C (SIGINT to the launcher's whole group, as a terminal sends it) `after_s`
    after the agents started, while they load their modules (before their handlers are
    in, at 0 s certainly) or once they train: the launch ends as interrupted (one word,
    the launcher's, then killed by SIGINT: a shell reports 130) with no agent named as
    killed and no agent's traceback (a KeyboardInterrupt inside numpy's import is one),
    whether the agents died at once or preempted their runs; nothing runs on. The moment
    is pinned by stopping the agents (SIGSTOP) while the signal is sent. A SIGTERM to the
    launcher (a scheduler's) at that moment ends the launch as a preemption, with 0: the
    agents it passed on to died before their handlers, with no run claimed, and are not
    named (they were, with 143, which marked such a batch job failed)."""
    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01, 0.02, 0.03])
    launcher, agents, unready, out, err = stop_two_agent_launch(sweep_file, workdir, how,
                                                                after_s, 120)
    store = launched_store(workdir)
    assert not {r.state for r in store.runs()} - {"preempted"}, states(store)
    assert "Traceback" not in err, err[-2000:]
    if after_s == 0:  # the moment this is about: no agent had its handlers yet
        assert unready == agents
    if how == "sigterm":
        assert launcher.returncode == 0, err[-2000:]
        assert "was killed by" not in err, err[-2000:]
        assert "Not finished" in out, out
        return
    assert launcher.returncode == -signal.SIGINT, (launcher.returncode, err[-2000:])
    assert "was killed by" not in err and err.splitlines()[-1] == "interrupted", err[-2000:]
    assert err.splitlines().count("interrupted") == 1, err[-2000:]  # the launcher's word
    assert "Not finished" in out and f"run_sweep.sh {store.sweep().id} --agents 2" in out


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_launch_stopped_before_any_run_started_says_so(workdir, how):
    """A launch stopped (Ctrl-C, SIGTERM) while its agents load, before any run was claimed,
    says in its closing lines that no run started: it printed the runs table's header with
    no row under it. The agents are pinned (SIGSTOP) as they start, before any claim."""
    sweep_file = workdir / "grid.yaml"
    write_grid(sweep_file, epochs=1, lrs=[0.01, 0.02])
    _, _, _, out, err = stop_two_agent_launch(sweep_file, workdir, how, 0.0, 60)
    store = launched_store(workdir)
    assert store.runs() == [], states(store)
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"sweep {store.sweep().id}"))
    assert lines[at + 1] == "no run started yet", out
    assert not any(line.split()[:2] == ["run", "state"] for line in lines), out  # no header
    assert "Not finished (0 of 2 runs ended)" in out, out

def alive(pid: int) -> bool:
    """Whether process `pid` still runs (one that ended but is not reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def said_after(log: Path, line: str) -> list[str]:
    """The lines of `log` after `line` (AssertionError, with the log, when it is not there)."""
    text = log.read_text()
    assert line in text, text[-2000:]
    return text[text.index(line):].splitlines()[1:]


def press_ctrl_c_twice(group: int, log: Path, waiting: list[int]) -> None:
    """Ctrl-C to process group `group` as a terminal sends it; once its first line is in
    `log` (the Ctrl-C handled), a second, the processes `waiting` checked to be still there
    (asked to stop, they wait on what never comes)."""
    os.killpg(group, signal.SIGINT)
    wait_for(lambda: SWEEP_CTRL_C_NOTE in log.read_text(), 60, "the first Ctrl-C's line")
    time.sleep(1)
    assert all(map(alive, waiting)), log.read_text()[-2000:]
    os.killpg(group, signal.SIGINT)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("options", [("--pack", "2"), ("--agents", "2")],
                         ids=["one-agent-in-the-launcher-packed", "two-agents"])
def test_a_second_ctrl_c_ends_the_launch_at_once_and_the_next_start_repeats_its_runs(
        workdir, options):
    """The runs' data set never loads (its cache a FIFO no one writes to: a stalled file
    system), so the runs claimed never reach the step that a first Ctrl-C stops them at: a
    second Ctrl-C to the launch's group ends it at once, the launcher killed by SIGINT (a
    shell reports 130) and every agent with it, nothing said after the first Ctrl-C's line
    (no closing lines). Each Ctrl-C after the first was swallowed and the launch hung. The
    runs the agents held stay `running` in the store; the launch started again on the sweep
    (the closing lines' hint) marks them crashed at once, their agents' locks being free,
    and repeats them to the end."""
    (workdir / "data" / "cache").mkdir(parents=True)
    os.mkfifo(workdir / "data" / "cache" / "digits.pt")
    sweep_file = workdir / "stuck.yaml"
    write_grid(sweep_file, epochs=1, lrs=[0.01, 0.02])
    log = workdir / "stderr.txt"
    with open(log, "w") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "agent.launch", str(sweep_file), *options], cwd=workdir,
            env=subprocess_env(), stdout=subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True)
    try:
        store = wait_for(lambda: launched_store(workdir), 60, "the store")
        wait_for(lambda: states(store) == ["running", "running"], 120, "both runs claimed")
        agents = agent_processes(launcher.pid)
        press_ctrl_c_twice(launcher.pid, log, [launcher.pid, *agents])
        out, _ = launcher.communicate(timeout=10)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == -signal.SIGINT, log.read_text()[-2000:]
    assert said_after(log, SWEEP_CTRL_C_NOTE) == [] and out.splitlines()[-1].startswith(
        "Starting "), (out, log.read_text()[-2000:])
    assert len(agents) == (2 if "--agents" in options else 0)
    wait_for(lambda: not any(map(alive, agents)), 5, "the agents to end")
    assert states(store) == ["running", "running"]

    (workdir / "data" / "cache" / "digits.pt").unlink()  # the file system is back
    again = subprocess.run([sys.executable, "-m", "agent.launch", store.sweep().id, *options],
                           cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                           timeout=200)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "has ended (its lock is free): crashed now, repeated from scratch" in again.stderr
    assert sorted(states(store)) == ["crashed", "crashed", "finished", "finished"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_second_ctrl_c_while_the_closing_lines_print_ends_the_launch_at_once(workdir):
    """A Ctrl-C stops the run the launcher's own agent trains; a second, as the closing
    lines start (sent by the launcher itself then, the one moment this is about), ends it
    at once, killed by SIGINT, the lines not printed and nothing more said: it cut the
    lines short as a first Ctrl-C there does, and the launcher went on to end as
    interrupted."""
    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01])
    code = ("import os, signal\n"
            "import agent.sweep.status as status\n"
            "from agent.launch import main\n"
            "table = status.render_status\n"
            "def render(*args, **kwargs):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    return table(*args, **kwargs)\n"
            "status.render_status = render\n"
            f"raise SystemExit(main([{str(sweep_file)!r}]))\n")
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    wait_for(lambda: states(store) == ["running"], 60, "the run claimed")
    os.killpg(launcher.pid, signal.SIGINT)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == -signal.SIGINT, err[-2000:]
    assert states(store) == ["preempted"]
    assert "Results:" not in out, out
    said = err[err.index(SWEEP_CTRL_C_NOTE):].splitlines()[1:]
    assert len(said) == 1 and said[0].startswith(f"agent {store.runs()[0].owner}: run "), err


def test_a_new_sweep_of_the_same_config_names_the_unfinished_one(tmp_path, monkeypatch, capsys):
    """Running the YAML again makes a new sweep, as `wandb sweep` does; while an earlier
    sweep of the same config still has runs to end, the new one's creation says which and
    how to go on with it. A finished twin, or another config, is not named."""
    from agent.sweep.controller import claim
    from agent.sweep.target import create_local_sweep

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.1, 0.01]}}}))
    first = create_local_sweep(path, " --pack 2")
    (run,) = claim(first, "agent").runs
    assert first.finish(run.run_id, "agent", "preempted")
    capsys.readouterr()
    create_local_sweep(path, " --pack 2 --heartbeat-timeout 120")
    out = capsys.readouterr().out
    said = " ".join(out.split())
    first_id = first.sweep().id
    assert (f"note: sweep {first_id}, made earlier from the same config, is not finished "
            f"(0 of 2 runs ended); to go on with it instead: ./run_sweep.sh {first_id} "
            "--pack 2 --heartbeat-timeout 120") in said, said
    # the command is wrapped as a whole, to copy from one line (it was cut after its id,
    # its options on the next line), and every line fits 80 columns
    command = f"./run_sweep.sh {first_id} --pack 2 --heartbeat-timeout 120"
    assert any(line.strip() == command for line in out.splitlines()), out
    note = out[:out.index("Created local sweep")].splitlines()
    assert max(map(len, note)) <= 80 and "\xa0" not in out, out

    for store in (SweepStore(p) for p in sorted((tmp_path / "data" / "sweeps").glob("*/sweep.db"))):
        while (work := claim(store, "agent")).kind == "run":
            for claimed in work.runs:
                assert store.finish(claimed.run_id, "agent", "finished", {"val/acc": 0.5})
    create_local_sweep(path)
    assert "is not finished" not in capsys.readouterr().out
    other = tmp_path / "other.yaml"
    other.write_text(path.read_text().replace("0.01", "0.001"))
    create_local_sweep(other)  # the third sweep above is unfinished, and of another config
    assert "is not finished" not in capsys.readouterr().out


def test_a_sweep_ended_at_its_target_is_finished_to_status_and_to_its_twin(
        tmp_path, monkeypatch, capsys):
    """A sweep whose run reached metric.target has ended, as on W&B, with runs of its
    run_cap never made (and the proposals a packed claim parked, dropped): running the YAML
    again does not name it as unfinished, nor does agent.status call its best 'so far'."""
    from agent.sweep.target import create_local_sweep

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize", "target": 0.9},
        "parameters": {"lr": {"values": [0.1, 0.01, 0.001]},
                       "model": {"values": ["cnn", "dense"]}}}))
    first = create_local_sweep(path, " --pack 3")
    work = claim(first, "me:1", count=3, pack_key=lambda c: c["model"])
    assert [r.state for r in first.runs()].count("pending") == 2  # of the other kind, parked
    for claimed in work.runs:
        assert first.finish(claimed.run_id, "me:1", "finished", {"val/acc": 0.95})
    assert claim(first, "me:1", count=3, pack_key=lambda c: c["model"]).kind == "done"
    shown = status_of(tmp_path, first)
    assert "3 finished, 3 not proposed" in shown and "reached: no new runs" in shown, shown
    assert "best: " in shown and "so far" not in shown, shown
    listed = subprocess.run([sys.executable, "-m", "agent.status"], cwd=tmp_path,
                            env=subprocess_env(COLUMNS="200"), capture_output=True, text=True,
                            timeout=100)
    assert f"{first.sweep().id} grid grid 3/6, target reached " in " ".join(
        listed.stdout.split()), listed.stdout
    capsys.readouterr()
    create_local_sweep(path, " --pack 3")
    assert "is not finished" not in capsys.readouterr().out


@pytest.mark.parametrize("raised, says", [
    ("comm", "W&B could not be reached to look it up (CommError: "),
    ("missing", "W&B could not find it (ValueError: Could not find sweep"),
    ("missing-comm", "W&B could not find it (CommError: Could not find sweep"),
    ("refused", "W&B refused the API key (check WANDB_API_KEY"),
    ("away", "W&B could not be reached to look it up (AuthenticationError: "),
])
def test_a_wandb_sweep_that_cannot_be_looked_up_says_why_in_one_line(monkeypatch, raised, says):
    """An unreachable server is not an unknown sweep; either way one line, cut with an
    ellipsis rather than mid-word."""
    import wandb

    from agent.sweep.target import SweepTarget, check_wandb_sweep

    errors = {"comm": wandb.errors.CommError("Failed to execute API request: " + "x" * 300),
              "missing": ValueError("Could not find sweep ent/proj/abcd1234"),
              # what wandb 0.31 raises from a server that does not know the sweep
              "missing-comm": wandb.errors.CommError(
                  "Could not find sweep <Sweep ent/proj/abcd1234 (Unknown State)>"),
              # what wandb.Api() raises when the server refuses the key, and when it cannot
              # be reached at all (wandb 0.31, its key check)
              "refused": wandb.errors.AuthenticationError(
                  "Failed to verify credentials with http://127.0.0.1:9: user is not logged in"),
              "away": wandb.errors.AuthenticationError(
                  "Failed to verify credentials with http://127.0.0.1:9: Failed to execute API "
                  "request: the service process is busy and did not respond in time.")}

    class Api:
        def sweep(self, path):
            raise errors[raised]

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(wandb, "Api", Api)
    with pytest.raises(UserError) as caught:
        check_wandb_sweep(SweepTarget("wandb", "ent/proj/abcd1234",
                                      wandb_path="ent/proj/abcd1234"))
    message = str(caught.value)
    assert "\n" not in message and says in message, message
    assert len(message) < 260 and (raised != "comm" or message.endswith("…)"))


def test_the_hints_of_another_programs_sweep_leave_out_pack(tmp_path, monkeypatch, capsys):
    """--pack does not apply to another program's runs (one process a run): the hint to
    add agents does not repeat it; our trainer's sweep keeps it."""
    from agent.sweep.target import create_local_sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.py").write_text("print('a program')\n")
    for program, kept in (("prog.py", False), ("agent/train.py", True)):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({"program": program, "method": "grid",
                                        "parameters": {"lr": {"values": [0.1]}}}))
        create_local_sweep(path, " --pack 2 --agents 2")
        hint = next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("Add agents"))
        assert hint.endswith(" --pack 2 --agents 2" if kept else " --agents 2"), hint


def test_a_proposal_measured_by_pack_auto_is_kept_pending_once_within_run_cap(workdir):
    """--pack auto abandons a claim to measure its proposal's kind; a random or bayes sweep
    would propose another next, so the proposal is kept as a pending run: once, never past
    run_cap, and never in a grid (whose next claim proposes the same point)."""
    from agent.sweep.controller import keep_proposal

    store = make_sweep(workdir, "rnd", {"lr": {"min": 0.001, "max": 0.1}}, method="random",
                       run_cap=2)
    proposal = {"dataset": "digits", "data_dir": str(workdir / "data"), "lr": 0.01}
    assert keep_proposal(store, proposal)
    assert not keep_proposal(store, proposal)  # waiting already
    assert keep_proposal(store, {**proposal, "lr": 0.02})
    assert not keep_proposal(store, {**proposal, "lr": 0.03})  # run_cap reached
    assert [(r.state, r.config["lr"]) for r in store.runs()] == [("pending", 0.01),
                                                                  ("pending", 0.02)]
    grid = make_sweep(workdir, "grid", {"lr": {"values": [0.1, 0.01]}})
    assert not keep_proposal(grid, {**proposal, "lr": 0.1}) and grid.runs() == []


@pytest.mark.parametrize("run_cap, stored, kept", [(10, 0, 10), (10, 4, 6), (400, 0, 256),
                                                    (400, 398, 2), (None, 0, 1)])
def test_a_random_sweep_keeps_the_proposals_ahead_of_the_one_measured_within_run_cap(
        workdir, run_cap, stored, kept):
    """--pack auto in a random sweep under run_cap keeps the engine's next proposals too
    (up to 256 in all, never past run_cap), so that it knows how many runs of each kind
    there are; an open-ended random sweep keeps the one measured only."""
    from agent.sweep.controller import GRID_LOOKAHEAD, keep_proposal
    from agent.sweep.engine import proposed_batch

    extra = {"run_cap": run_cap} if run_cap else {}
    store = make_sweep(workdir, "rnd", {"lr": {"min": 0.001, "max": 0.1},
                                        "batch_size": {"values": [16, 32, 64]}},
                       method="random", **extra)
    config = store.sweep().config
    with store.transaction() as tx:
        for _ in range(stored):
            tx.insert_run(f"s{_}", proposed_batch(config, [], 1)[0], "pending")
    proposal = proposed_batch(config, [], 1)[0]
    assert keep_proposal(store, proposal, GRID_LOOKAHEAD - 1) == kept
    runs = sorted(store.runs(), key=lambda r: r.seq)
    assert len(runs) == stored + kept and all(r.state == "pending" for r in runs)
    assert runs[stored].config == proposal  # the one measured first, then the engine's next
    new = [r.config for r in runs[stored:]]
    assert all(0.001 <= c["lr"] <= 0.1 and c["batch_size"] in (16, 32, 64) for c in new)
    assert len({c["lr"] for c in new}) == kept  # distinct draws
    assert keep_proposal(store, proposal, GRID_LOOKAHEAD - 1) == 0  # waiting already


def test_a_claim_after_the_target_is_reached_drops_proposals_never_started(workdir):
    """Once a run reaches metric.target W&B launches no new run: the grid points a packed
    claim parked as pending are dropped, not trained; a crashed run's repeat and a
    preempted run (runs that had started) still go on."""
    from agent.sweep.controller import claim

    store = make_sweep(workdir, "target", {"lr": {"values": [0.1, 0.01, 0.001]},
                                           "model": {"values": ["cnn", "dense"]}},
                       metric={"name": "val/acc", "goal": "maximize", "target": 0.9})
    first = claim(store, "me:1", count=2, pack_key=lambda c: c["model"])
    assert [r.state for r in store.runs()].count("pending") == 1  # parked: another kind
    assert {c.config["model"] for c in first.runs} == {"cnn"}
    best, other = (c.run_id for c in first.runs)
    assert store.record_epoch(best, "me:1", 1, {"val/acc": 0.95})
    assert store.finish(best, "me:1", "finished", summary={"val/acc": 0.95})
    assert store.record_epoch(other, "me:1", 1, {"val/acc": 0.5})
    assert store.finish(other, "me:1", "preempted")
    again = claim(store, "me:1", count=2, pack_key=lambda c: c["model"])  # it goes on
    assert [c.run_id for c in again.runs] == [other] and again.runs[0].resumed
    assert sorted(r.state for r in store.runs()) == ["finished", "running"]
    assert store.finish(other, "me:1", "finished", summary={"val/acc": 0.6})
    assert claim(store, "me:1", count=2, pack_key=lambda c: c["model"]).kind == "done"
    assert len(store.runs()) == 2


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_packed_grid_stops_at_its_target_as_w_and_b_does(workdir):
    """A grid of 2 optimizers x 3 lrs with a target every run reaches: the first pack (the
    first optimizer's runs) is running when the target is reached, and W&B would launch no
    run after it; the other optimizer's points, parked by the claim, are not trained."""
    store = make_sweep(workdir, "target", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "lr": {"values": [0.1, 0.01, 0.001]}, "optimizer": {"values": ["adam", "sgd"]}},
        metric={"name": "val/acc", "goal": "maximize", "target": 0.0})
    agent = start_agent(workdir, store, "--pack", "3")
    assert agent.wait(timeout=240) == 0, agent.stderr.read()
    runs = store.runs()
    assert sorted((r.state, r.config["optimizer"], r.config["lr"]) for r in runs) == [
        ("finished", "adam", lr) for lr in (0.001, 0.01, 0.1)]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_an_agent_that_ends_after_the_target_leaves_no_parked_runs_to_come(workdir):
    """--pack auto keeps a random sweep's next draws as pending runs; an agent whose run
    reaches metric.target and that then ends without another claim (--count 1 here; a
    Ctrl-C likewise) drops them as a claim would: W&B launches none of them, and left
    pending they read as runs still to come (status: '11 pending', the report: 'This sweep
    is not finished')."""
    store = make_sweep(workdir, "target", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "optimizer": {"values": ["sgd", "adam"]}, "batch_size": {"values": [16, 32]}},
        method="random", run_cap=12,
        metric={"name": "val/acc", "goal": "maximize", "target": 0.0})
    agent = start_agent(workdir, store, "--pack", "auto", "--count", "1")
    assert agent.wait(timeout=240) == 0, agent.stderr.read()
    assert [r.state for r in store.runs()] == ["finished"]
    shown = status_of(workdir, store)
    assert "1 finished" in shown and "pending" not in shown, shown
    assert "metric.target val/acc >= 0.0 reached" in shown, shown


@pytest.mark.parametrize("name", ["study.YAML", "study.Yml", "study.yaml"])
def test_a_sweep_yaml_is_known_by_its_suffix_in_any_case(workdir, name):
    """Sweep.YAML (as some editors and Windows users name it) is a sweep YAML, as it is to
    `wandb sweep`; before, it was refused as 'a file, not a local sweep'."""
    from agent.sweep.target import resolve_target

    (workdir / name).write_text("method: grid\n")
    target = resolve_target(name)
    assert target.kind == "yaml" and target.path == Path(name)


def test_a_proposal_measured_after_another_run_reached_the_target_is_not_kept(workdir):
    """While --pack auto measured, another agent's run reached metric.target: W&B makes no
    new run then, so neither does keep_proposal; the agent's next claim ends the sweep."""
    from agent.sweep.controller import claim, keep_proposal

    store = make_sweep(workdir, "target", {"lr": {"min": 0.001, "max": 0.1}}, method="random",
                       metric={"name": "val/acc", "goal": "maximize", "target": 0.9})
    with store.transaction() as tx:
        tx.insert_run("best", {"lr": 0.05}, "running", owner="other:1")
    assert store.record_epoch("best", "other:1", 1, {"val/acc": 0.95})
    assert store.finish("best", "other:1", "finished", summary={"val/acc": 0.95})
    proposal = {"dataset": "digits", "data_dir": str(workdir / "data"), "lr": 0.01}
    assert not keep_proposal(store, proposal)
    assert [r.id for r in store.runs()] == ["best"]
    assert claim(store, "agent:1").kind == "done"


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_closing_lines_print_ends_with_the_agents_code(workdir, signum):
    """A batch job's walltime (SIGTERM) or a Ctrl-C that comes as the sweep ends, while the
    launcher prints its closing table: every run is saved already, so the launcher ends
    with its agent's code (0), one line on stderr and no traceback, not as killed by the
    signal (a job scheduler would count -15 as a failed job). The signal is sent by the
    launcher itself the moment its closing table starts, the one moment this is about."""
    (workdir / "grid.yaml").write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "hidden": {"value": 16}, "epochs": {"value": 1},
                       "lr": {"values": [0.1, 0.01]}}}))
    code = ("import os, signal, sys\n"
            "import agent.sweep.status as status\n"
            "from agent.launch import main\n"
            "table = status.render_status\n"
            "def render(*args, **kwargs):\n"
            f"    os.kill(os.getpid(), {int(signum)})\n"
            "    return table(*args, **kwargs)\n"
            "status.render_status = render\n"
            "raise SystemExit(main(['grid.yaml']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=subprocess_env(),
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    store = launched_store(workdir)
    assert states(store) == ["finished", "finished"]
    assert done.stderr.splitlines()[-1] == (f"(stopped; the sweep is saved: ./util/with_venv.sh "
                                            f"python -m agent.status {store.sweep().id})")


def terminal_output(command: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run `command` with a terminal (a pty) as its stdin, stdout and stderr; its exit code
    and everything it wrote there, with the pty's line ends as plain ones."""
    import pty
    import threading

    leader, follower = pty.openpty()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=follower, stdout=follower,
                               stderr=follower, start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:  # drained as it comes: a full pty would block the writers
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed it
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(timeout=10)
    os.close(leader)
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_epoch_lines_of_agents_sharing_a_terminal_name_their_run(workdir):
    """`--agents 2` on a terminal: the two agents' epoch lines interleave there, so each
    names its run (as a pack member's does), and neither draws a live progress bar, whose
    redrawing (carriage return, erase line) overwrote the other's lines. Before, the lines
    read `epoch 1/2 ...` with nothing to tell whose they were."""
    import re

    (workdir / "two.yaml").write_text(yaml.safe_dump({
        "program": "agent/train.py", "command": COMMAND, "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "hidden": {"value": 64}, "epochs": {"value": 3},
                       "sinks": {"value": ["console"]}, "lr": {"values": [0.1, 0.05]}}}))
    code, text = terminal_output([sys.executable, "-m", "agent.launch", "two.yaml",
                                  "--agents", "2"], workdir,
                                 subprocess_env(TERM="xterm-256color", COLUMNS="80"), 280)
    assert code == 0, text[-3000:]
    assert "\x1b[2K" not in text and "\x1b[?25l" not in text, text[-3000:]  # no live bar
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # bold and colour, as the table has them
    runs = launched_store(workdir).runs()
    assert sorted(r.state for r in runs) == ["finished", "finished"]
    epoch_lines = [line for line in plain.splitlines() if " train " in line]
    assert not [line for line in epoch_lines if line.startswith("epoch ")], epoch_lines
    for run in runs:
        assert [line.split()[1] for line in epoch_lines if line.startswith(f"{run.id} ")] \
            == ["1/3", "2/3", "3/3"], plain[-3000:]
        assert any(line.startswith("run ") and f" {run.id} finished: val/acc " in line
                   for line in plain.splitlines()), plain[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_terminal_that_closed_ends_the_launcher_with_its_agents_code(workdir):
    """The launcher's terminal closes while it trains (an ssh session dropped): its shell
    sends the job SIGHUP and every later write to the terminal fails (EIO). The run is
    preempted and resumable, and the launcher ends with 0 as for Ctrl-C, not with 1 from a
    closing table it could not print."""
    import pty

    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01])
    leader, follower = pty.openpty()
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file)],
                                cwd=workdir, env=subprocess_env(), stdin=follower,
                                stdout=follower, stderr=follower, start_new_session=True,
                                preexec_fn=in_a_terminal_session)
    os.close(follower)
    try:
        store = wait_for(lambda: launched_store(workdir), 60, "the store")
        wait_for(lambda: any(r.state == "running" and r.epoch >= 1 for r in store.runs()),
                 120, "a running run")
    finally:
        os.close(leader)  # the terminal is gone: writes to it fail from now on
    os.killpg(launcher.pid, signal.SIGHUP)  # what its shell sends its jobs
    code = launcher.wait(timeout=60)
    (run,) = store.runs()
    assert (code, run.state) == (0, "preempted") and run.epoch >= 1, (code, run.state,
                                                                     run.error)


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("agents", ["1", "2"])
def test_a_launch_piped_into_head_preempts_its_runs_and_ends_with_141(workdir, agents):
    """`./run_sweep.sh x.yaml | head -3`: once head has its lines and exits, the launch's
    next write finds the pipe closed. The runs in training are preempted (resumable), not
    left to crash and start over, and the launch ends with 141 as a shell's writer into a
    closed pipe does, without a traceback."""
    sweep_file = workdir / "long.yaml"
    write_grid(sweep_file, epochs=30, lrs=[0.01, 0.02])
    config = yaml.safe_load(sweep_file.read_text())
    config["parameters"]["sinks"] = {"value": ["console"]}  # a line an epoch: writes go on
    sweep_file.write_text(yaml.safe_dump(config))
    launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file),
                                 "--agents", agents], cwd=workdir, env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    head = [launcher.stdout.readline() for _ in range(3)]
    assert head[-1].startswith("Starting "), head
    store = wait_for(lambda: launched_store(workdir), 60, "the store")
    wait_for(lambda: any(r.state == "running" and r.epoch >= 1 for r in store.runs()), 120,
             "a running run")
    launcher.stdout.close()  # head exits
    err = launcher.stderr.read()
    assert launcher.wait(timeout=120) == 141, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    states = {r.state for r in store.runs()}
    assert "preempted" in states and not states & {"crashed", "failed", "running"}, states
