"""Packed trials in local sweeps, with real agent processes: `--pack K` claims K compatible
runs, trains them as one fused model, and records each as a run of its own."""

from __future__ import annotations

import collections
import io
import re
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import subprocess_env
from test_local_sweeps import launched_store, make_sweep, start_agent, wait_for

pytestmark = pytest.mark.e2e

GRID = {"model": {"values": ["dense", "cnn"]}, "hidden": {"value": 24},
        "channels": {"value": [6, 12]}, "epochs": {"value": 2},
        "train_subset": {"value": 512}, "sinks": {"value": ["tensorboard"]},
        "lr": {"values": [0.1, 0.03, 0.01]}, "optimizer": {"values": ["sgd", "adam"]},
        "log_dir": {"value": "logs"}}


def results(store) -> dict:
    """{(model, lr, optimizer): (state, test/acc)} of a finished grid."""
    return {(r.config["model"], r.config["lr"], r.config["optimizer"]):
            (r.state, r.summary and r.summary.get("test/acc")) for r in store.runs()}


@pytest.mark.timeout(400)
def test_a_packed_sweep_gives_every_point_the_result_it_gets_alone(workdir):
    alone = make_sweep(workdir, "alone", GRID)
    packed = make_sweep(workdir, "packed", GRID)
    for store, pack in ((alone, "1"), (packed, "3")):
        agent = start_agent(workdir, store, "--pack", pack)
        assert agent.wait(timeout=300) == 0, agent.stderr.read()
    single, fused = results(alone), results(packed)
    assert len(fused) == 12 and set(fused) == set(single)
    for point, (state, accuracy) in fused.items():
        assert state == "finished"
        assert accuracy == pytest.approx(single[point][1], abs=2e-3), point
    packs = {}
    for run in packed.runs():
        packs.setdefault(run.pack, []).append(run)
    assert all(pack is not None for pack in packs)
    assert max(len(members) for members in packs.values()) == 3
    for members in packs.values():  # a pack holds one model and one optimizer
        assert len({(r.config["model"], r.config["optimizer"]) for r in members}) == 1
    for run in packed.runs():  # each member is a run of its own in TensorBoard
        assert (workdir / "logs" / packed.sweep().group / run.id).is_dir()


@pytest.mark.timeout(400)
def test_pack_auto_measures_each_kind_once_before_claiming_it_then_packs_it_at_that_size(
        workdir):
    store = make_sweep(workdir, "auto", GRID)
    agent = start_agent(workdir, store, "--pack", "auto")
    assert agent.wait(timeout=300) == 0
    errors = agent.stderr.read()
    lines = " ".join(errors.split())  # the agent's lines wrap within 80 columns
    assert max(map(len, errors.splitlines())) <= 80, errors
    runs = sorted(store.runs(), key=lambda r: r.seq)
    points = [(r.config["model"], r.config["lr"], r.config["optimizer"]) for r in runs]
    assert len(points) == 12 and len(set(points)) == 12  # the whole grid, each point once
    assert all(r.state == "finished" and r.summary.get("test/acc") is not None for r in runs)
    # each kind of pack (model x optimizer) was measured once, up to its 3 runs, and the agent
    # said so with its figures
    settled = {(m, o): (int(size), sizes) for m, o, size, sizes in re.findall(
        r"--pack auto for model=(\w+) optimizer=(\w+): packs of (\d+) "
        r"\(images/s by size: ([^)]*)\)", lines)}
    assert len(settled) == 4 and lines.count("--pack auto for") == 4, errors
    for kind, (size, sizes) in settled.items():
        measured = [int(s.split(":")[0]) for s in sizes.split(", ")]
        assert measured in ([1, 2], [1, 2, 3]), sizes  # never more than the kind's 3 runs
        mine = [r for r in runs if (r.config["model"], r.config["optimizer"]) == kind]
        packs = {}
        for run in mine:
            packs.setdefault(run.pack or run.id, []).append(run)
        # measured before its first claim: every claim of the kind asked for that size (the
        # grid's 3 runs of a kind make one pack of 3, or 2 + 1, or 3 alone)
        assert sorted(map(len, packs.values()), reverse=True) == \
            {3: [3], 2: [2, 1], 1: [1, 1, 1]}[size], (kind, size)


@pytest.mark.timeout(300)
def test_the_launchers_hints_repeat_its_pack_option(workdir):
    (workdir / "s.yaml").write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {**GRID, "model": {"value": "dense"}, "optimizer": {"value": "sgd"},
                       "dataset": {"value": "digits"},
                       "data_dir": {"value": str(workdir / "data")}}}))
    done = subprocess.run([sys.executable, "-m", "agent.launch", "s.yaml", "--pack", "3"],
                          cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("Add agents")]
    assert re.fullmatch(r"Add agents from another shell: \./run_sweep\.sh \w{8} --pack 3",
                        line), line
    (line,) = [x for x in done.stdout.splitlines() if "agent.repeat" in x]
    assert re.fullmatch(r"  \./util/with_venv\.sh python -m agent\.repeat \w{8} --run "
                        r"--pack 3", line), line


def hyperband_pack(workdir, sweep_id: str, epochs: int, batch_size: int, lrs: list):
    """(store, runs) of a hyperband grid over lr (min_iter 1, eta 2) trained by one agent
    as one pack of four, checked to be one pack with no repeats."""
    store = make_sweep(workdir, sweep_id, {
        "model": {"value": "dense"}, "hidden": {"value": 32}, "epochs": {"value": epochs},
        "batch_size": {"value": batch_size}, "sinks": {"value": []},
        "schedule": {"value": "constant"}, "optimizer": {"value": "sgd"},
        "momentum": {"value": 0.0}, "lr": {"values": lrs}},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    agent = start_agent(workdir, store, "--pack", "4")
    assert agent.wait(timeout=240) == 0, agent.stderr.read()
    runs = store.runs()
    assert len({r.pack for r in runs}) == 1 and len(runs) == 4  # one pack, no repeats
    return store, runs


@pytest.mark.timeout(300)
def test_hyperband_stops_members_of_a_pack_and_the_others_finish_unhindered(workdir):
    # the agent beats every 0.3 s for the pack's runs: a stopped member's beats must end with
    # it, not read as the run being taken (which would end the whole pack as preempted)
    _, runs = hyperband_pack(workdir, "hyperpack", 8, 16, [0.1, 0.05, 0.01, 0.005])
    stopped = [r for r in runs if r.state == "stopped"]
    assert stopped and all(r.epoch < 8 for r in stopped), [(r.state, r.epoch) for r in runs]
    finished = [r for r in runs if r.state == "finished"]
    assert finished and all(r.epoch == 8 for r in finished)
    assert len(stopped) + len(finished) == 4


@pytest.mark.timeout(300)
def test_hyperband_judges_each_member_against_all_of_its_pack_at_the_same_epoch(workdir):
    """Members train in step, so at each band hyperband sees every member's row of that
    epoch: the members it stops at epoch 1 are the ones W&B's engine stops given all four
    epoch-1 rows, wherever they sit in the pack (the worst first here: it used to be compared
    with itself alone, and the later ones with the members before them only)."""
    from agent.sweep.engine import stop_decisions

    store, runs = hyperband_pack(workdir, "hyperorder", 4, 32, [0.01, 0.03, 0.1, 0.3])
    at_epoch_one = [{"id": r.id, "state": "running", "config": r.config,
                     "history": r.history[:1], "summary": r.history[0]} for r in runs]
    expected = stop_decisions(store.sweep().config, at_epoch_one)
    assert expected, "the engine stops some of these runs at epoch 1"
    stopped_at_one = {r.id for r in runs if r.state == "stopped" and r.epoch == 1}
    assert stopped_at_one == expected, [(r.config["lr"], r.state, r.epoch) for r in runs]


@pytest.mark.timeout(300)
def test_sigterm_preempts_the_whole_pack_and_the_next_agent_resumes_every_member(workdir):
    store = make_sweep(workdir, "term", {**GRID, "model": {"value": "dense"},
                                         "hidden": {"value": 256}, "batch_size": {"value": 8},
                                         "train_subset": {"value": 1400},
                                         "optimizer": {"value": "sgd"}, "epochs": {"value": 4}})
    agent = start_agent(workdir, store, "--pack", "3")
    wait_for(lambda: any(r.epoch >= 1 for r in store.runs()), 200, "a first epoch")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, agent.stderr.read()
    preempted = [r for r in store.runs() if r.state == "preempted"]
    assert len(preempted) == 3 and len({r.epoch for r in preempted}) == 1
    resumer = start_agent(workdir, store, "--pack", "3")
    assert resumer.wait(timeout=240) == 0, resumer.stderr.read()
    runs = {r.id: r for r in store.runs()}
    for run in preempted:  # the same runs went on from their epoch to the end
        finished = runs[run.id]
        assert finished.state == "finished" and finished.epoch == 4
        assert [row["epoch"] for row in finished.history] == [1, 2, 3, 4]


def test_pack_option_is_checked_and_refused_for_w_and_b_sweeps(workdir):
    for bad in ("0", "x", "1.5"):
        result = subprocess.run([sys.executable, "-m", "agent.launch", "s.yaml", "--pack", bad],
                                cwd=workdir, env=subprocess_env(), capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "--pack" in result.stderr
    result = subprocess.run([sys.executable, "-m", "agent.launch", "ent/proj/abc123",
                             "--pack", "4"], cwd=workdir, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "local sweep" in result.stderr


@pytest.mark.timeout(300)
def test_pack_auto_says_why_a_kind_it_cannot_measure_runs_alone_and_the_others_pack(workdir):
    # device=mps (absent here) is a kind of pack of its own: the trial refuses it, and so
    # does the measurement; its runs go alone and each fails with the trainer's reason
    store = make_sweep(workdir, "refused", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "device": {"values": ["cpu", "mps"]}, "lr": {"values": [0.1, 0.01]}})
    agent = start_agent(workdir, store, "--pack", "auto")
    assert agent.wait(timeout=240) == 0
    errors = agent.stderr.read()
    lines = " ".join(errors.split())  # the agent's lines wrap within 80 columns
    # a kind is named by what the sweep varies among what a pack shares: here, the device
    assert re.search(r"--pack auto for device=mps: runs alone \(not measured: "
                     r"device='mps' is not available", lines), errors
    assert re.search(r"--pack auto for device=cpu: packs of \d", lines), errors
    runs = {(r.config["device"], r.config["lr"]): r for r in store.runs()}
    assert len(runs) == 4
    for (device, _), run in runs.items():
        if device == "mps":
            assert run.state == "failed" and "device='mps'" in run.error and run.pack is None
        else:
            assert run.state == "finished"


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler installed for `signum` (/proc's SigCgt mask)."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return False
    mask = int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16)
    return bool(mask >> (signum - 1) & 1)


@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("method, signum", [("grid", signal.SIGTERM),
                                            ("random", signal.SIGINT)])
def test_sigterm_while_pack_auto_measures_stops_it_at_once_with_nothing_claimed(
        workdir, method, signum):
    # the default cnn at a batch of 1024 on one thread: each measured step takes a second or
    # more, and the first measurement of a process warms up for 8 of them. In a random sweep
    # the proposal measured is kept as a pending run (keep_proposal), but not after Ctrl-C.
    store = make_sweep(workdir, "measuring", {
        "model": {"value": "cnn"}, "batch_size": {"value": 1024}, "epochs": {"value": 1},
        "num_threads": {"value": 1}, "sinks": {"value": []}, "lr": {"values": [0.1, 0.01]}},
        method=method)
    import time

    agent = start_agent(workdir, store, "--pack", "auto")
    deadline = time.time() + 120
    while not catches(agent.pid, signal.SIGTERM):  # the agent's handlers are in place
        assert agent.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # the first claim found the kind unmeasured: the measurement is under way
    agent.send_signal(signum)
    stopped = time.time()
    # a Ctrl-C ends the agent killed by SIGINT, as a shell reports a Ctrl-C (130)
    assert agent.wait(timeout=60) == (-signal.SIGINT if signum == signal.SIGINT else 0)
    assert time.time() - stopped < 10  # a step or two, not the whole measurement
    errors = agent.stderr.read()
    assert "--pack auto for" not in errors, errors  # nothing settled
    assert store.runs() == []  # and nothing claimed: the next agent starts afresh


@pytest.mark.timeout(300)
def test_pack_auto_measures_no_more_members_than_count_allows(workdir):
    store = make_sweep(workdir, "counted", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "lr": {"values": [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]}})
    agent = start_agent(workdir, store, "--pack", "auto", "--count", "2")
    assert agent.wait(timeout=240) == 0
    lines = " ".join(agent.stderr.read().split())
    (sizes,) = re.findall(r"--pack auto for model=dense optimizer=sgd: packs of \d+ "
                          r"\(images/s by size: ([^)]*)\)", lines)
    assert [int(s.split(":")[0]) for s in sizes.split(", ")] == [1, 2], sizes
    assert sorted(r.state for r in store.runs() if r.state != "pending") == ["finished"] * 2


@pytest.mark.timeout(300)
def test_pack_auto_packs_a_bayes_sweep_a_few_runs_at_a_time(workdir):
    # the runs of a pack are proposed before any has a result: bayes keeps learning between
    # packs of at most 8 (a random sweep's runs, all independent, may pack more)
    store = make_sweep(workdir, "bayes", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "lr": {"distribution": "log_uniform_values", "min": 0.001, "max": 0.3}},
        method="bayes", run_cap=12)
    agent = start_agent(workdir, store, "--pack", "auto")
    assert agent.wait(timeout=240) == 0
    lines = " ".join(agent.stderr.read().split())
    (sizes,) = re.findall(r"packs of \d+ \(images/s by size: ([^)]*)\)", lines)
    assert max(int(s.split(":")[0]) for s in sizes.split(", ")) <= 8, sizes
    runs = store.runs()
    assert len(runs) == 12 and all(r.state == "finished" for r in runs)
    packs = {}
    for run in runs:
        packs.setdefault(run.pack or run.id, []).append(run)
    assert max(map(len, packs.values())) <= 8


@pytest.mark.timeout(300)
def test_pack_auto_trains_the_kinds_it_measured_in_a_random_sweep_of_several_kinds(workdir):
    # a batch-size study drawn at random: each optimizer x batch size is a kind of pack (6
    # here, about 4 runs each). A random sweep proposes anew at each claim; the proposal
    # measured must be the one trained, not kind after kind measured before a claim meets
    # one measured already.
    store = make_sweep(workdir, "kinds", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "optimizer": {"values": ["sgd", "adam", "rmsprop"]},
        "batch_size": {"values": [16, 32]}}, method="random", run_cap=24)
    agent = start_agent(workdir, store, "--pack", "auto")
    assert agent.wait(timeout=240) == 0
    lines = " ".join(agent.stderr.read().split())
    measured = {(optimizer, int(size)) for optimizer, size in re.findall(
        r"--pack auto for optimizer=(\w+) batch_size=(\d+): packs of \d+ \(images/s", lines)}
    runs = store.runs()
    trained = {(r.config["optimizer"], r.config["batch_size"]) for r in runs}
    assert measured and measured <= trained, lines
    assert len(runs) == 24 and all(r.state == "finished" for r in runs)


@pytest.mark.timeout(300)
def test_pack_auto_measures_only_the_kinds_a_random_sweep_has_runs_to_pack(workdir):
    # 96 kinds (optimizer x batch size) and 6 runs: about one run a kind. The agent proposes
    # the sweep's runs ahead (random search draws each independently), so it knows each
    # kind's count and measures only a kind with runs to pack (measuring costs about a
    # second a kind on two cores)
    store = make_sweep(workdir, "kinds", {
        "model": {"value": "dense"}, "hidden": {"value": 16}, "epochs": {"value": 1},
        "train_subset": {"value": 256}, "sinks": {"value": []},
        "optimizer": {"values": ["sgd", "adam", "rmsprop"]},
        "batch_size": {"distribution": "q_uniform", "min": 8, "max": 256, "q": 8}},
        method="random", run_cap=6)
    agent = start_agent(workdir, store, "--pack", "auto")
    assert agent.wait(timeout=240) == 0
    errors = agent.stderr.read()
    lines = " ".join(errors.split())
    measured = {(optimizer, float(size)) for optimizer, size in re.findall(
        r"--pack auto for optimizer=(\w+) batch_size=([\d.]+): packs of \d+ \(images/s", lines)}
    runs = store.runs()
    assert len(runs) == 6 and all(r.state == "finished" for r in runs)
    count = collections.Counter((r.config["optimizer"], float(r.config["batch_size"]))
                                for r in runs)
    assert measured == {kind for kind, n in count.items() if n >= 2}, errors
    for run in runs:  # a kind of one run trains alone
        if count[run.config["optimizer"], float(run.config["batch_size"])] == 1:
            assert run.pack is None


@pytest.mark.timeout(300)
def test_pack_auto_does_not_measure_a_kind_a_long_random_sweep_rarely_draws(workdir):
    # run_cap 1,000 over ~33k kinds (optimizer x batch size x width): past the 256 runs
    # proposed ahead, a kind's share of the engine's draws says how many more to expect
    store = make_sweep(workdir, "long", {
        "model": {"value": "dense"}, "epochs": {"value": 1}, "train_subset": {"value": 256},
        "sinks": {"value": []}, "optimizer": {"values": ["sgd", "adam", "rmsprop"]},
        "hidden": {"distribution": "int_uniform", "min": 8, "max": 64},
        "batch_size": {"distribution": "int_uniform", "min": 8, "max": 200}},
        method="random", run_cap=1000)
    agent = start_agent(workdir, store, "--pack", "auto", "--count", "2")
    assert agent.wait(timeout=240) == 0
    errors = agent.stderr.read()
    lines = " ".join(errors.split())
    expected = re.findall(
        r"--pack auto for optimizer=\w+ hidden=\d+ batch_size=\d+: runs alone \(not measured: "
        r"the sweep is expected to give (\d\.\d) runs of this kind, too few to pack\)", lines)
    assert expected and all(1.0 <= float(x) < 1.5 for x in expected), errors
    assert "images/s by size" not in lines, errors
    runs = store.runs()
    assert sorted(r.state for r in runs).count("finished") == 2
    assert len(runs) == 256 and sum(r.state == "pending" for r in runs) == 254


def _hidden_for_packs_of_two() -> int | None:
    """The narrowest dense model on digits of which one trial on this machine's CPU holds two
    members but not three (the trial's memory check, agent/trial/preflight.py); None when
    even the widest allowed would fit three."""
    import torch

    from agent.params import validate
    from agent.trial.preflight import MEMORY_SHARE, device_memory, needed_bytes

    room = MEMORY_SHARE * device_memory(torch.device("cpu"))

    def largest(hidden: int) -> int:  # at most 3: all the test tells apart
        config = validate({"dataset": "digits", "model": "dense", "hidden": hidden,
                           "epochs": 1, "train_subset": 1, "device": "cpu"})
        return next((k - 1 for k in (1, 2, 3) if needed_bytes([config] * k) > room), 3)

    low, high = 1, 65536
    if largest(high) > 2:
        return None
    while low < high:  # the fewest units with at most two members a pack
        middle = (low + high) // 2
        low, high = (middle + 1, high) if largest(middle) > 2 else (low, middle)
    return low if largest(low) == 2 else None


@pytest.mark.timeout(300)
def test_a_pack_too_large_for_memory_is_claimed_in_packs_that_fit(workdir):
    # Each run fits alone, four do not: --pack 4 claims two at a time (the others wait for the
    # next claim) instead of failing all four with the pack's memory refusal. One training
    # image each: every trial then stops at its own check of the training set, before it
    # allocates anything, so the test needs no memory.
    hidden = _hidden_for_packs_of_two()
    if hidden is None:
        pytest.skip("this machine's memory holds three of the widest dense models allowed")
    store = make_sweep(workdir, "fits", {
        "model": {"value": "dense"}, "hidden": {"value": hidden}, "epochs": {"value": 1},
        "train_subset": {"value": 1}, "device": {"value": "cpu"}, "sinks": {"value": []},
        "seed": {"values": [1, 2, 3, 4]}})
    agent = start_agent(workdir, store, "--pack", "4")
    assert agent.wait(timeout=240) == 1, agent.stderr.read()  # every run failed (one image)
    runs = store.runs()
    assert [r.state for r in runs] == ["failed"] * 4
    assert all("training image" in r.error and "GiB" not in r.error for r in runs), \
        [r.error for r in runs]
    sizes = sorted(sum(r.pack == pack for r in runs) for pack in {r.pack for r in runs})
    assert sizes == [2, 2]


@pytest.mark.timeout(300)
def test_runs_with_and_without_checkpoints_train_in_separate_packs(workdir):
    """A pack resumes at the newest epoch all its members have a checkpoint of: a member with
    `checkpoint: false` packed with others would send them all back to epoch 0 after a
    preemption. Such runs pack only with each other."""
    store = make_sweep(workdir, "ckpt", {**GRID, "model": {"value": "dense"},
                                         "epochs": {"value": 1},
                                         "checkpoint": {"values": [True, False]},
                                         "lr": {"values": [0.1, 0.03]},
                                         "optimizer": {"value": "sgd"}})
    agent = start_agent(workdir, store, "--pack", "4")
    assert agent.wait(timeout=240) == 0, agent.stderr.read()
    packs: dict = {}
    for run in store.runs():
        assert run.state == "finished"
        packs.setdefault(run.pack, []).append(run.config["checkpoint"])
    assert sorted(packs.values()) == [[False, False], [True, True]], packs


@pytest.mark.timeout(300)
def test_agents_sharing_a_device_size_their_packs_to_a_share_of_its_memory(workdir):
    """`--agents 2` on the CPU (as `--agents-per-gpu 2` on a GPU): two agents train at once,
    so each sizes its packs to half the memory. A model of which one trial holds two members
    in the whole memory trains alone in each agent. One training image each: every trial
    stops at its training-set check before it allocates anything."""
    hidden = _hidden_for_packs_of_two()
    if hidden is None:
        pytest.skip("this machine's memory holds three of the widest dense models allowed")
    (workdir / "s.yaml").write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "hidden": {"value": hidden}, "epochs": {"value": 1},
                       "train_subset": {"value": 1}, "device": {"value": "cpu"},
                       "sinks": {"value": []}, "seed": {"values": [1, 2, 3, 4]},
                       "data_dir": {"value": str(workdir / "data")}}}))
    subprocess.run([sys.executable, "-m", "agent.launch", "s.yaml", "--pack", "4",
                    "--agents", "2"], cwd=workdir, env=subprocess_env(),
                   capture_output=True, text=True, timeout=240)
    runs = launched_store(workdir).runs()  # each claimed alone (a pack id is None)
    assert runs and all("training image" in r.error for r in runs), [r.error for r in runs]
    assert len(runs) == 4 and all(r.pack is None for r in runs), [r.pack for r in runs]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_pack_preempted_after_hyperband_stopped_a_member_names_the_leader_at_its_epoch(
        workdir):
    """SIGTERM to an agent whose pack hyperband has thinned: the stopped members have a
    result, the ones still training have only their epochs. The closing lines and the
    status called the best stopped member 'Best run' (val/acc 0.16 at lr 1e-5, on digits)
    and offered to repeat it, with no word of the preempted members at 0.9 and above; they
    now say it is the best of the ended runs and name the run ahead of it at its last
    epoch."""
    from rich.console import Console

    from agent.sweep.status import closing_lines, render_status

    store = make_sweep(workdir, "thinned", {
        "model": {"value": "dense"}, "hidden": {"value": 256}, "epochs": {"value": 30},
        "batch_size": {"value": 8}, "sinks": {"value": []}, "schedule": {"value": "constant"},
        "optimizer": {"value": "sgd"}, "lr": {"values": [0.05, 0.03, 1e-5, 2e-5]}},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    agent = start_agent(workdir, store, "--pack", "4")
    wait_for(lambda: any(r.state == "stopped" for r in store.runs()) and any(
        r.epoch >= 2 and r.state == "running" for r in store.runs()), 120,
        "a member stopped, another at epoch 2")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, agent.stderr.read()
    states = {r.state for r in store.runs()}
    assert states == {"stopped", "preempted"}, [(r.state, r.epoch) for r in store.runs()]
    stopped = max((r for r in store.runs() if r.state == "stopped"),
                  key=lambda r: r.summary["val/acc"])
    leader = max((r for r in store.runs() if r.state == "preempted"),
                 key=lambda r: r.history[-1]["val/acc"])
    ahead = leader.history[-1]["val/acc"]
    assert ahead > stopped.summary["val/acc"] + 0.3  # the one still training leads
    lines = closing_lines(store, " --pack 4")
    best = next(i for i, line in enumerate(lines) if line.startswith("Best run:"))
    assert lines[best].startswith(f"Best run: {stopped.id} "), lines
    assert lines[best + 1:best + 3] == [
        "  (of the ended runs; ahead of it at its last epoch:",
        f"  {leader.id} val/acc={ahead:.4f}, epoch {leader.epoch}, preempted)"], lines
    assert all(len(line) <= 80 for line in lines), lines
    out = io.StringIO()
    render_status(store, Console(file=out, width=200, color_system=None))
    assert (f"best so far: {stopped.id} val/acc={stopped.summary['val/acc']:.4f} of the ended "
            f"runs; at its last epoch: {leader.id} val/acc={ahead:.4f} (epoch {leader.epoch})"
            ) in out.getvalue(), out.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_reports_wall_time_counts_a_killed_pack_before_its_repeats(workdir):
    """kill -9 to an agent mid-pack, then a new agent: the crashed members are repeated from
    their checkpoints, and the report reads the repeats in their place. Its wall time of the
    sweep ran from the repeats' creation (9 s, on digits, where the sweep took 19 s from its
    first claim); it runs from the first claim of each repeat's crashed run."""
    from agent.report.setup_section import hardware_lines
    from agent.report.study import local_study
    from agent.sweep_space import duration_text

    store = make_sweep(workdir, "killed", {
        "model": {"value": "dense"}, "hidden": {"value": 256}, "epochs": {"value": 3},
        "batch_size": {"value": 8}, "sinks": {"value": []}, "optimizer": {"value": "sgd"},
        "lr": {"values": [0.01, 0.03]}})
    first = start_agent(workdir, store, "--pack", "2")
    wait_for(lambda: any(r.epoch >= 1 for r in store.runs()), 120, "a first epoch")
    first.kill()
    first.wait(timeout=30)
    second = start_agent(workdir, store, "--pack", "2")
    assert second.wait(timeout=200) == 0, second.stderr.read()
    runs = store.runs()
    crashed = [r for r in runs if r.state == "crashed"]
    assert len(crashed) == 2 and all(r.requeued_from for r in runs if r.state == "finished")
    took = max(r.ended for r in runs) - min(r.created for r in runs)
    assert took - (max(r.ended for r in runs) - min(r.created for r in runs
                                                     if r.state == "finished")) >= 1
    lines = hardware_lines(local_study(store))
    assert f"- Wall time of the sweep: {duration_text(took)} from the first run's start to " \
           "the last run's end." in lines, lines



@pytest.mark.timeout(300)
def test_runs_are_numbered_in_the_order_they_start_where_a_pack_skips_other_kinds(workdir):
    """--pack auto keeps a random sweep's next draws as pending runs in the engine's order
    (controller.keep_proposal), kinds interleaved: sgd, adam, sgd, adam, ... A pack of
    three sgd runs then takes the runs made 1st, 3rd and 5th. The console names each run's
    place as the k-th run started, so that pack reads run 1/6, 2/6, 3/6 (it read 1/6, 3/6,
    5/6: 'run 5/6' while the sweep is a third through, and before 'run 2/6'),
    and each run's closing line repeats its header's number."""
    from agent.ids import new_run_id

    store = make_sweep(workdir, "interleaved", {
        "model": {"value": "dense"}, "hidden": {"value": 24}, "epochs": {"value": 1},
        "train_subset": {"value": 512}, "sinks": {"value": ["console"]},
        "lr": {"distribution": "log_uniform_values", "min": 0.01, "max": 0.1},
        "optimizer": {"values": ["sgd", "adam"]}}, method="random", run_cap=6)
    with store.transaction() as tx:  # as the look-ahead leaves them
        for k in range(6):
            tx.insert_run(new_run_id(), {
                "dataset": "digits", "data_dir": str(workdir / "data"), "model": "dense",
                "hidden": 24, "epochs": 1, "train_subset": 512, "sinks": ["console"],
                "lr": 0.01 * (k + 1), "optimizer": ("sgd", "adam")[k % 2]}, "pending")
    done = subprocess.run(
        [sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory), "--pack", "3"],
        cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True,
        text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    headers = re.findall(r"^run (\d+)/6 (\w{8})  lr=\S+ optimizer=(\w+)$", done.stdout,
                         re.MULTILINE)
    assert [int(k) for k, _, _ in headers] == [1, 2, 3, 4, 5, 6], done.stdout
    assert [optimizer for _, _, optimizer in headers] == ["sgd"] * 3 + ["adam"] * 3
    ends = {run: int(k) for k, run in re.findall(r"^run (\d+)/6 (\w{8}) finished",
                                                  done.stdout, re.MULTILINE)}
    assert ends == {run: int(k) for k, run, _ in headers}, done.stdout


@pytest.mark.timeout(300)
def test_a_member_whose_checkpoint_is_another_runs_fails_alone_and_its_pack_resumes(workdir):
    # after SIGTERM, one preempted member's checkpoint is replaced by a pack-mate's (a run
    # folder copied over another): resuming it would train on under values its epoch did not
    # have; before, the next agent failed the whole pack with that member's refusal
    store, preempted = _a_preempted_pack_of_3(workdir)
    runs_dir = workdir / "data" / "runs"
    source, swapped, other = preempted
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (runs_dir / source.id / name).exists():
            (runs_dir / swapped.id / name).write_bytes((runs_dir / source.id / name).read_bytes())
    foreign = (runs_dir / swapped.id / "checkpoint.pt").read_bytes()
    resumer = start_agent(workdir, store, "--pack", "3", "--count", "3")
    assert resumer.wait(timeout=240) == 0
    said = resumer.stderr.read()
    runs = {r.id: r for r in store.runs()}
    failed = runs[swapped.id]
    assert failed.state == "failed", said
    assert failed.error.startswith(f"run {swapped.id}: its checkpoint (epoch {swapped.epoch}) "
                                   "was trained with lr=0.01 (now 0.03)"), failed.error
    assert f"run {swapped.id} failed (run {swapped.id}: its checkpoint" in said
    assert (runs_dir / swapped.id / "checkpoint.pt").read_bytes() == foreign
    for run in (source, other):  # resumed at their epoch, trained to the end
        assert runs[run.id].state == "finished", said
        assert [row["epoch"] for row in runs[run.id].history] == [1, 2, 3]
        assert f"run {run.id}: the pack resumes together" not in said


def _a_preempted_pack_of_3(workdir):
    """A sweep of 3 runs (lr 0.01, 0.03, 0.1) whose pack SIGTERM preempted after an epoch:
    the store, and its runs by lr."""
    store = make_sweep(workdir, "swap", {**GRID, "model": {"value": "dense"},
                                         "hidden": {"value": 256}, "batch_size": {"value": 8},
                                         "train_subset": {"value": 1400},
                                         "optimizer": {"value": "sgd"}, "epochs": {"value": 3}})
    agent = start_agent(workdir, store, "--pack", "3", "--count", "3")
    wait_for(lambda: any(r.epoch >= 1 for r in store.runs()), 200, "a first epoch")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, agent.stderr.read()
    preempted = sorted((r for r in store.runs() if r.state == "preempted"),
                       key=lambda r: r.config["lr"])
    assert len(preempted) == 3 and len({r.epoch for r in preempted}) == 1
    return store, preempted


@pytest.mark.timeout(300)
def test_a_pack_whose_every_member_is_refused_records_each_run_with_its_own_line(workdir):
    # after SIGTERM, the preempted members' checkpoints are swapped round (each folder holds a
    # pack-mate's): each is refused; before, the next agent recorded all three failed with the
    # first member's line, naming another run's values
    store, preempted = _a_preempted_pack_of_3(workdir)
    runs_dir = workdir / "data" / "runs"
    files = {r.id: {name: (runs_dir / r.id / name).read_bytes()
                    for name in ("checkpoint.pt", "checkpoint.prev.pt")
                    if (runs_dir / r.id / name).exists()} for r in preempted}
    for k, run in enumerate(preempted):  # each gets the next one's files
        for name, data in files[preempted[(k + 1) % 3].id].items():
            (runs_dir / run.id / name).write_bytes(data)
    resumer = start_agent(workdir, store, "--pack", "3", "--count", "3")
    assert resumer.wait(timeout=240) == 1
    said = resumer.stderr.read()
    assert "Traceback" not in said and "all 3 runs failed" in said, said
    runs = {r.id: r for r in store.runs()}
    for k, run in enumerate(preempted):
        was, now = preempted[(k + 1) % 3].config["lr"], run.config["lr"]
        line = f"run {run.id}: its checkpoint (epoch {run.epoch}) was trained with lr={was:g} " \
            f"(now {now:g})"
        assert runs[run.id].state == "failed", said
        assert runs[run.id].error.startswith(line), runs[run.id].error
        assert f"run {run.id} failed ({line}" in said


@pytest.mark.timeout(300)
def test_a_member_left_behind_by_a_damaged_checkpoint_goes_back_to_the_sweep(workdir):
    # after SIGTERM, one preempted member's newest checkpoint is cut short: its pack-mates
    # resume at their epoch, and it goes back to the store preempted, for a later claim to
    # resume from what it has. Before, the pack resumed together at that member's epoch
    # (from scratch, where that file was its only checkpoint), the others' epochs thrown away.
    store, preempted = _a_preempted_pack_of_3(workdir)
    runs_dir = workdir / "data" / "runs"
    _, damaged, _ = preempted
    path = runs_dir / damaged.id / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    resumer = start_agent(workdir, store, "--pack", "3")
    assert resumer.wait(timeout=240) == 0
    said = resumer.stderr.read()
    assert f"run {damaged.id}: data/runs/{damaged.id}/checkpoint.pt is damaged" in said, said
    assert "Traceback" not in said
    assert "it goes back to the sweep, to resume from " in said
    assert f"run {damaged.id} is back in the sweep, preempted: a later claim resumes it" \
        in said, said
    runs = {r.id: r for r in store.runs()}
    for run in preempted:  # every one finished, its history whole
        assert runs[run.id].state == "finished", said
        assert [row["epoch"] for row in runs[run.id].history] == [1, 2, 3]
        assert f"run {run.id}: the pack resumes together" not in said


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_member_sent_back_is_not_packed_again_at_an_epoch_it_has_no_checkpoint_of(workdir):
    # a pack of 4 preempted after epoch 2; the first run's newest checkpoint is cut short, and
    # the next agent packs 2 at a time: the first claim sends it back (it has epoch 1 only),
    # and it resumes in a later claim from its epoch 1. Before, the store kept it at epoch 2,
    # so each claim took it again with the next run preempted at 2 and sent it back again:
    # three times before it trained alone.
    store = make_sweep(workdir, "back", {**GRID, "model": {"value": "dense"},
                                         "hidden": {"value": 256}, "batch_size": {"value": 8},
                                         "train_subset": {"value": 1400},
                                         "optimizer": {"value": "sgd"}, "epochs": {"value": 3},
                                         "lr": {"values": [0.1, 0.03, 0.01, 0.003]}})
    agent = start_agent(workdir, store, "--pack", "4")
    wait_for(lambda: all(r.epoch >= 2 for r in store.runs()) and len(store.runs()) == 4, 300,
             "two epochs")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, agent.stderr.read()
    runs = store.runs()
    assert [r.state for r in runs] == ["preempted"] * 4 and {r.epoch for r in runs} == {2}
    damaged = runs[0]
    path = workdir / "data" / "runs" / damaged.id / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    resumer = start_agent(workdir, store, "--pack", "2")
    assert resumer.wait(timeout=300) == 0
    said = resumer.stderr.read()
    assert said.count("it goes back to the sweep") == 1, said
    assert said.count(f"run {damaged.id} is back in the sweep") == 1, said
    for run in store.runs():  # every one finished, its history whole
        assert run.state == "finished", said
        assert [row["epoch"] for row in run.history] == [1, 2, 3]
