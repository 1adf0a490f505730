"""--pack auto shared by the agents of one host: what one agent measured for a kind of pack
is in the sweep's folder (.pack_sizes/<host>-<device>.json), and a second agent takes it
instead of measuring it again, or waits for the first's measurement rather than measuring
beside it."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from agent.sweep.pack_share import SizeFile, key_text, record_from, record_json
from agent.sweep.pack_size import PackSizer, SizeRecord
from conftest import subprocess_env
from test_local_sweeps import make_sweep, start_agent, wait_for

DIGITS_DENSE = {"model": {"value": "dense"}, "hidden": {"value": 16},
                "train_subset": {"value": 256}, "sinks": {"value": []}}
# a kind named in a line of the agent's (not across one that says it waits for it)
KIND = r"--pack auto for ((?:(?!--pack auto).)+?)"
MEASURED = KIND + r": packs of (\d+) \(images/s by size: [^)]*\)"
TAKEN = KIND + r": packs of (\d+) \(measured by agent (\S+): images/s by size"


def size_file_of(store) -> SizeFile:
    """The SizeFile an agent of start_agent (one thread, the CPU here) uses, as such a
    process names it."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from agent.sweep.pack_share import device_name; "
         "print(device_name('auto'))"], env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=120, check=True)
    return SizeFile(store.directory, done.stdout.strip())


def test_a_settled_record_round_trips_through_the_file(tmp_path):
    record = SizeRecord(throughput={1: 3100.5, 2: 5800.25, 4: 9900.0}, member_mb=12.5,
                        too_big=8, why_not="not measured (over 2 s)", runs_left=6, settled=4,
                        confirmed=True)
    key = (("model", "dense"), ("channels", (6, 12)), ("lr_scale", 0.1), ("augment", False))
    written = SizeFile(tmp_path, "cpu-2threads", host="node1")
    assert written.save(key, record, "node1:42")
    assert written.path == tmp_path / ".pack_sizes" / "node1-cpu-2threads.json"
    found = SizeFile(tmp_path, "cpu-2threads", host="node1").find(key)
    assert found == (record, "node1:42") and found[0].throughput[2] == 5800.25
    # a key is written as the list it is, so a tuple and a list of the same values agree
    assert SizeFile(tmp_path, "cpu-2threads", host="node1").find(
        [["model", "dense"], ["channels", [6, 12]], ["lr_scale", 0.1], ["augment", False]])
    # another device's file, and another host's, hold nothing of it
    assert SizeFile(tmp_path, "cuda-NVIDIA H200", host="node1").find(key) is None
    assert SizeFile(tmp_path, "cpu-2threads", host="node2").find(key) is None
    # a record of another kind joins it, the first one kept
    other = SizeRecord(throughput={1: 10.0}, settled=1, runs_left=None)
    assert written.save((("model", "cnn"),), other, "node1:43")
    assert written.find(key) == (record, "node1:42")
    assert written.find((("model", "cnn"),))[0].settled == 1


def test_two_processes_write_the_same_text_of_a_pack_key():
    config = {"dataset": "digits", "model": "cnn", "channels": [6, 12], "lr": 0.1,
              "weight_decay": 5e-4, "batch_size": 64, "warmup_epochs": 0.5}
    script = ("import json, sys; from agent.sweep.agent_loop import packable; "
              "from agent.sweep.pack_share import key_text; "
              "print(key_text(packable(json.loads(sys.argv[1]))))")
    texts = {subprocess.run([sys.executable, "-c", script, json.dumps(config)],
                            env=subprocess_env(PYTHONHASHSEED=seed), capture_output=True,
                            text=True, timeout=120, check=True).stdout.strip()
             for seed in ("1", "2")}
    from agent.sweep.agent_loop import packable

    assert texts == {key_text(packable(config))}
    assert '["channels",[6,12]]' in texts.pop()


@pytest.mark.parametrize("saved", [
    {"settled": 0, "throughput": {"1": 5.0}, "by": "h:1"},
    {"settled": 2, "throughput": {}, "by": "h:1"},
    {"settled": 2, "throughput": {"1": "fast"}, "by": "h:1"},
    {"settled": 2, "throughput": {"1": float("inf")}, "by": "h:1"},
    {"settled": 2, "throughput": {"1": 5.0, "x": 6.0}, "by": "h:1"},
    {"settled": 2, "throughput": {"1": 5.0}},
    {"settled": True, "throughput": {"1": 5.0}, "by": "h:1"},
    {"settled": 2, "throughput": {"1": 5.0}, "by": "h:1", "member_mb": -1},
    {"settled": 2, "throughput": {"1": 5.0}, "by": "h:1", "too_big": "8"},
    [], None, "packs of 4"])
def test_an_entry_that_is_not_a_settled_record_is_not_taken(saved):
    assert record_from(saved) is None
    good = record_json(SizeRecord(throughput={1: 5.0, 2: 9.0}, settled=2), "h:1")
    assert record_from(json.loads(json.dumps(good)))[0].settled == 2


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not JSON"), ('{"format": 99, "records": {}}', "format 1"),
    ('["a", "list"]', "format 1"), ("", "not JSON")])
def test_a_file_not_of_this_format_reads_as_empty_and_says_why(tmp_path, text, problem):
    sizes = SizeFile(tmp_path, "cpu-1threads")
    sizes.path.parent.mkdir()
    sizes.path.write_text(text)
    assert sizes.find((("model", "dense"),)) is None and problem in sizes.problem
    # what is measured next replaces it
    assert sizes.save((("model", "dense"),), SizeRecord(throughput={1: 5.0}, settled=1), "h:1")
    assert sizes.find((("model", "dense"),))[0].settled == 1 and sizes.problem is None


@pytest.mark.parametrize("theirs, mine, taken", [
    (6, 6, True), (6, 3, True), (6, None, False),  # an open-ended sweep may pack more
    (None, None, True), (None, 6, True), (2, 12, False)])  # under --count 2, measured to 2
def test_a_size_is_taken_where_this_agent_would_settle_alike(theirs, mine, taken):
    measured = PackSizer(fixed=None)  # packs pay up to 16 members, no further
    measured.probe("k", lambda size, required: (90.0 * min(size, 16), None), theirs)
    record = measured.records["k"]
    sizer = PackSizer(fixed=None)
    assert sizer.adopt("k", record, mine) is taken
    assert sizer.knows("k") is taken
    if taken:
        assert sizer.next_size("k") == record.settled and sizer.records["k"] is not record
    assert not PackSizer(fixed=3).adopt("k", record, mine)  # --pack 3 is taken as given


def test_an_agent_waiting_for_the_lock_stops_when_asked(tmp_path):
    from agent.sweep.pack_share import Stopped

    first, second = SizeFile(tmp_path, "cpu-1threads"), SizeFile(tmp_path, "cpu-1threads")
    holders, asked = [], iter([False, False, True])
    with first.turn("h:1", lambda: False, holders.append) as held:
        assert held
        with pytest.raises(Stopped), second.turn("h:2", lambda: next(asked), holders.append):
            pytest.fail("the lock is held by the first")
    assert holders == ["h:1"]  # named once, while polling
    with second.turn("h:2", lambda: True, holders.append) as held:
        assert held  # free again once the first's block ended


def test_a_folder_that_takes_no_lock_file_measures_unshared(tmp_path):
    (tmp_path / ".pack_sizes").write_text("a file, not a folder")
    sizes = SizeFile(tmp_path, "cpu-1threads")
    with sizes.turn("h:1", lambda: False, pytest.fail) as held:
        assert not held
    assert not sizes.save((("model", "dense"),), SizeRecord(throughput={1: 5.0}, settled=1),
                          "h:1")


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def test_a_file_system_that_takes_no_lock_measures_unshared(tmp_path, monkeypatch, code):
    """NFS without its lock service (ENOLCK) or Lustre mounted without flock (ENOSYS): the
    agent measures unshared, as in a read-only folder, instead of failing its claim."""
    def no_lock(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_lock)  # the kernel's answer on such a mount
    with SizeFile(tmp_path, "cpu-1threads").turn("h:1", lambda: False, pytest.fail) as held:
        assert held is False


def test_sizes_carried_to_another_folder_add_what_it_lacks_and_keep_what_it_has(tmp_path):
    """A PBS job's copy of the sweep (agent/cluster/store_copy.py) takes the sweep's sizes
    and brings its own back: records of every host and device the target lacks are added,
    one it has stays as it is, and entries that are not settled records are not carried."""
    from agent.sweep.pack_share import carry_sizes

    job, sweep = tmp_path / "job", tmp_path / "sweep"
    job.mkdir(), sweep.mkdir()
    dense, cnn = (("model", "dense"),), (("model", "cnn"),)
    mine = SizeFile(job, "cpu-2threads", host="node7")
    assert mine.save(dense, SizeRecord(throughput={1: 10.0, 2: 18.0}, settled=2), "node7:1")
    assert mine.save(cnn, SizeRecord(throughput={1: 5.0, 4: 9.0}, settled=4), "node7:1")
    other = SizeFile(job, "cuda-NVIDIA H200", host="node8")
    assert other.save(dense, SizeRecord(throughput={1: 50.0, 8: 300.0}, settled=8), "node8:3")
    theirs = SizeFile(sweep, "cpu-2threads", host="node7")
    assert theirs.save(dense, SizeRecord(throughput={1: 11.0}, settled=1), "node7:9")
    bad = json.loads(mine.path.read_text())
    bad["records"]["[[\"model\",\"skip_mlp\"]]"] = {"settled": 0, "by": "node7:1"}
    mine.path.write_text(json.dumps(bad))

    assert carry_sizes(job, sweep) == 2  # cnn on node7, dense on node8's GPU
    assert theirs.find(dense)[0].settled == 1 and theirs.find(dense)[1] == "node7:9"
    assert theirs.find(cnn)[0].settled == 4 and theirs.find(cnn)[1] == "node7:1"
    assert SizeFile(sweep, "cuda-NVIDIA H200", host="node8").find(dense)[0].settled == 8
    assert set(json.loads(theirs.path.read_text())["records"]) == {key_text(dense),
                                                                   key_text(cnn)}
    assert carry_sizes(job, sweep) == 0  # carried once
    assert carry_sizes(tmp_path / "nowhere", sweep) == 0


def test_sizes_are_not_carried_while_another_agent_measures(tmp_path):
    """The target's lock held (an agent of the sweep measuring there): nothing is written
    within the wait; a later merge carries it."""
    from agent.sweep.pack_share import carry_sizes

    (tmp_path / "job").mkdir(), (tmp_path / "sweep").mkdir()
    mine = SizeFile(tmp_path / "job", "cpu-1threads", host="node7")
    assert mine.save((("model", "dense"),), SizeRecord(throughput={1: 1.0}, settled=1), "n:1")
    theirs = SizeFile(tmp_path / "sweep", "cpu-1threads", host="node7")
    with theirs.turn("node7:5", lambda: False, pytest.fail) as held:
        assert held and carry_sizes(tmp_path / "job", tmp_path / "sweep", wait_s=0.3) == 0
    assert not theirs.path.exists()
    assert carry_sizes(tmp_path / "job", tmp_path / "sweep") == 1


def measured_and_taken(*stderrs: str) -> tuple[list, list]:
    """([(kind, size)] each measured, [(kind, size, by)] each taken from another agent)."""
    lines = [" ".join(text.split()) for text in stderrs]  # lines wrap within 80 columns
    return ([m for text in lines for m in re.findall(MEASURED, text)],
            [t for text in lines for t in re.findall(TAKEN, text)])


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_agent_after_one_that_measured_takes_its_size_and_packs_at_it(workdir):
    # the first agent measures, packs, and is stopped (SIGTERM: its runs preempted); the
    # next one on the sweep (a launcher started again) resumes them at the size measured
    # (batches of 16 over 8 epochs: a pack trains for seconds, the first is stopped in one)
    store = make_sweep(workdir, "again", {
        **DIGITS_DENSE, "epochs": {"value": 8}, "batch_size": {"value": 16},
        "train_subset": {"value": 0}, "lr": {"values": [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]}})
    sizes = size_file_of(store)
    first = start_agent(workdir, store, "--pack", "auto")
    wait_for(lambda: sizes.path.exists() or first.poll() is not None, 120, "a measurement")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    first_lines = first.stderr.read()
    ((kind, size),), taken = measured_and_taken(first_lines)
    assert not taken, first_lines
    ours = {r.id for r in store.runs() if r.state == "finished"}
    assert len(ours) < 6, first_lines  # stopped with runs left
    second = start_agent(workdir, store, "--pack", "auto")
    assert second.wait(timeout=240) == 0
    errors = second.stderr.read()
    measured, taken = measured_and_taken(errors)
    assert not measured and taken == [(kind, size, f"{socket.gethostname()}:{first.pid}")], \
        errors
    runs = store.runs()
    assert len(runs) == 6 and all(r.state == "finished" for r in runs), errors
    packs: dict = {}
    for run in runs:
        if run.id not in ours:
            packs.setdefault(run.pack or run.id, []).append(run)
    assert packs and max(map(len, packs.values())) <= int(size)
    if int(size) > 1:  # the runs left trained packed at the size taken
        assert max(map(len, packs.values())) >= 2, {k: len(v) for k, v in packs.items()}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_agents_started_together_measure_each_kind_once_in_all(workdir):
    store = make_sweep(workdir, "together", {
        **DIGITS_DENSE, "epochs": {"value": 1}, "optimizer": {"values": ["sgd", "adam"]},
        "lr": {"values": [0.1, 0.03, 0.01, 0.003]}})
    agents = [start_agent(workdir, store, "--pack", "auto") for _ in range(2)]
    codes = [agent.wait(timeout=240) for agent in agents]
    errors = [agent.stderr.read() for agent in agents]
    assert codes == [0, 0], errors
    measured, taken = measured_and_taken(*errors)
    kinds = [kind for kind, _ in measured]
    assert sorted(kinds) == ["optimizer=adam", "optimizer=sgd"], errors
    owners = {f"{socket.gethostname()}:{agent.pid}" for agent in agents}
    records = size_file_of(store).records()
    assert len(records) == 2 and {r["by"] for r in records.values()} <= owners
    # what was taken is the size measured, by an agent of the two
    assert all(size == dict(measured)[kind] and by in owners for kind, size, by in taken)
    assert len(store.runs()) == 8 and all(r.state == "finished" for r in store.runs())


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("damage", ["corrupt", "a file where its folder goes"])
def test_a_file_of_sizes_that_cannot_be_read_is_measured_past(workdir, damage):
    store = make_sweep(workdir, "damaged", {**DIGITS_DENSE, "epochs": {"value": 1},
                                            "lr": {"values": [0.1, 0.01, 0.001]}})
    sizes = size_file_of(store)
    if damage == "corrupt":
        sizes.path.parent.mkdir()
        sizes.path.write_text('{"format": 1, "records": {"[')
    else:
        sizes.path.parent.write_text("not a folder")
    agent = start_agent(workdir, store, "--pack", "auto")
    assert agent.wait(timeout=240) == 0
    errors = agent.stderr.read()
    measured, taken = measured_and_taken(errors)
    assert len(measured) == 1 and not taken, errors
    said = " ".join(errors.split())
    assert f"{sizes.path.name} cannot be read" in said, errors  # (a long path wraps)
    assert ("what is measured replaces it" in said) == (damage == "corrupt"), errors
    assert all(r.state == "finished" for r in store.runs()) and len(store.runs()) == 3
    if damage == "corrupt":  # what was measured replaced it
        assert len(sizes.records()) == 1 and sizes.problem is None


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_agent_waiting_for_anothers_measurement_stops_at_once_on_ctrl_c(workdir):
    # the default cnn at a batch of 1024 on one thread: the first agent measures for many
    # seconds, holding the lock; the second waits for it, saying so, and a Ctrl-C ends it
    from test_packed_sweeps import catches

    store = make_sweep(workdir, "waiting", {
        "model": {"value": "cnn"}, "batch_size": {"value": 1024}, "epochs": {"value": 1},
        "num_threads": {"value": 1}, "sinks": {"value": []}, "lr": {"values": [0.1, 0.01]}})
    first = start_agent(workdir, store, "--pack", "auto")
    try:
        wait_for(lambda: catches(first.pid, signal.SIGTERM), 120, "the first agent's start")
        second = start_agent(workdir, store, "--pack", "auto")
        said = []
        reader = threading.Thread(target=lambda: said.extend(iter(second.stderr.readline, "")),
                                  daemon=True)
        reader.start()
        wait_for(lambda: "waiting for agent" in "".join(said) or second.poll() is not None,
                 120, "the second agent to wait")
        assert f"waiting for agent {socket.gethostname()}:{first.pid}" in \
            " ".join("".join(said).split()), said
        assert first.poll() is None  # still measuring
        second.send_signal(signal.SIGINT)
        stopped = time.time()
        assert second.wait(timeout=30) == -signal.SIGINT
        assert time.time() - stopped < 5
        reader.join(timeout=10)
        assert not re.search(r"packs of|runs alone", " ".join("".join(said).split())), said
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    assert store.runs() == []  # nothing claimed, nothing settled


class _Writes(io.RawIOBase):
    """A file descriptor's view of a stream: each write that reaches it."""

    def __init__(self):
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_an_agents_lines_reach_a_terminal_it_shares_in_one_write(monkeypatch):
    """The agents of --agents 2 write to the launcher's terminal at once. An agent's line
    with lines under it ('packs of 4' and its figures) reached the file in two writes, the
    text and then its last newline (print writes them apart and a line-buffered stderr
    flushes at the first), so that another agent's run header landed in between: '...
    8.12k)run 10/12 doi1r0vj ...' and an empty line after it. Now one write, as Python's
    stderr (line-buffered) passes it on."""
    from agent.sweep.agent_loop import say

    raw = _Writes()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BufferedWriter(raw),
                                                        line_buffering=True))
    say("vm:12066", "--pack auto for batch_size=32 optimizer=sgd: packs\u00a0of\u00a04",
        "(measured by agent vm:12067: images/s by size: 1: 1.41k, 2: 2.74k, 4: 8.12k)")
    assert raw.writes == [
        b"agent vm:12066: --pack auto for batch_size=32 optimizer=sgd: packs of 4\n"
        b"  (measured by agent vm:12067: images/s by size: 1: 1.41k, 2: 2.74k, 4: 8.12k)\n"]
