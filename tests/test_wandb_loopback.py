"""The online path end to end: `./run_sweep.sh entity/project/sweep-id` as a user runs it, a
real process talking HTTP to a W&B server on loopback (tests/wandb_server.py) instead of
api.wandb.ai. The runs log online: what W&B's sweep controller would read (each run attached
to the sweep, its config, its history of the sweep's metric) is checked on the server's side,
against the trial's own files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.sweep import wandb_pack
from conftest import ROOT, subprocess_env
from wandb_server import LoopbackWandb

FAKE_KEY = "k" * 40  # W&B keys are 40 characters; this one opens nothing
COMMAND = ["${env}", "python", "-m", "agent.train", "--dataset=digits", "--model=dense",
           "--hidden=16", "--train_subset=256", "--batch_size=64", "--histograms=false",
           "${args}"]
SWEEP = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
         "metric": {"name": "val/acc", "goal": "maximize"},
         "parameters": {"lr": {"values": [0.1, 0.01]}, "epochs": {"value": 2}}}
# A sweep of another program (a W&B-instrumented script of the user's): W&B's own agent runs it
PROGRAM_SWEEP = {"program": str(ROOT / "tests" / "programs" / "toy_train.py"), "method": "grid",
                 "metric": {"name": "val_loss", "goal": "minimize"},
                 "parameters": {"lr": {"values": [0.1, 0.5]}, "epochs": {"value": 3},
                                "seconds_per_epoch": {"value": 0.2}}}


def start(tmp_path: Path, server: LoopbackWandb, *options: str,
          **environ: str) -> subprocess.Popen:
    """`./run_sweep.sh <entity/project/id> [options]` (its launcher) against `server`, online
    (with `environ` added to its environment)."""
    env = subprocess_env(WANDB_BASE_URL=server.url, WANDB_API_KEY=FAKE_KEY,
                         HOME=str(tmp_path / "home"), WANDB_DIR=str(tmp_path), **environ)
    env.pop("WANDB_MODE")  # online: the runs stream to the server
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "agent.launch", server.path, *options],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def launch(tmp_path: Path, server: LoopbackWandb, *options: str) -> subprocess.CompletedProcess:
    process = start(tmp_path, server, *options)
    stdout, stderr = process.communicate(timeout=400)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def assert_runs_reached_the_server(tmp_path: Path, server: LoopbackWandb, lrs: list[float]):
    assert server.unknown == [], server.unknown
    assert sorted(server.runs) == [f"wbrun{i:03d}" for i in range(len(lrs))]
    for name, lr in zip(sorted(server.runs), lrs, strict=True):
        run = server.runs[name]
        assert run.exit_code == 0, name
        assert run.upserted("sweep") == server.sweep_id  # W&B's controller sees it
        assert run.config["lr"] == lr and run.config["epochs"] == 2
        local = json.loads((tmp_path / "data" / "runs" / name / "summary.json").read_text())
        epochs = [row for row in run.history if "val/acc" in row]
        assert [row["epoch"] for row in epochs] == [1, 2], name
        assert epochs[-1]["val/acc"] == pytest.approx(local["val/acc"])
        assert run.summary["val/acc"] == pytest.approx(local["val/acc"])
        assert run.summary["test/acc"] == pytest.approx(local["test/acc"])


def processes_of_run(tmp_path: Path, run_id: str) -> list[int]:
    """Processes still alive that a W&B agent started for `run_id` under `tmp_path` (found
    by the WANDB_RUN_ID and WANDB_DIR that W&B's agent puts in a run's environment)."""
    wanted = {f"WANDB_RUN_ID={run_id}".encode(), f"WANDB_DIR={tmp_path}".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if wanted <= environ and state != "Z":
            found.append(int(entry.name))
    return found


def assert_key_written_nowhere(tmp_path: Path, result: subprocess.CompletedProcess):
    assert FAKE_KEY not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


@pytest.mark.e2e
@pytest.mark.timeout(450)
@pytest.mark.parametrize("options, agents", [((), 1), (("--pack", "2"), 2)],
                         ids=["one-run-at-a-time", "packed"])
def test_a_wandb_sweep_runs_online_against_a_server_on_loopback(tmp_path, options, agents):
    """Packed, each member is one of W&B's agents of this process and its own run."""
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 2}, {"lr": 0.01, "epochs": 2}]) as server:
        result = launch(tmp_path, server, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(a["sweep"], a["projectName"], a["entityName"]) for a in server.agents] == \
        [("sw001", "study", "team")] * agents
    assert_runs_reached_the_server(tmp_path, server, [0.1, 0.01])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert_key_written_nowhere(tmp_path, result)


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_sigterm_ends_an_agent_waiting_for_its_next_run_at_once(tmp_path):
    """A cluster's walltime signal reaches an agent between runs (a bayes sweep's server may
    hand nothing for a while): it ends within seconds, not at the SIGKILL that follows."""
    with LoopbackWandb(SWEEP, [], hold=True) as server:
        process = start(tmp_path, server)
        try:
            wait_for(lambda: len(server.heartbeats) >= 2)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert time.monotonic() - signalled < 20
    assert process.returncode == 0, stderr[-3000:]
    assert server.runs == {} and "Traceback" not in stderr


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_sigterm_preempts_the_run_training_and_takes_no_other(tmp_path):
    """SIGTERM mid-run: the run is marked preempting on the server (W&B hands it out again
    and its next agent resumes it) and the agent ends instead of taking the next run."""
    long = {"lr": 0.1, "epochs": 2000}  # ~100 s: preempted long before its end
    with LoopbackWandb(SWEEP, [long, long | {"lr": 0.01}], hold=True) as server:
        process = start(tmp_path, server)
        try:
            wait_for(lambda: "wbrun000" in server.runs)
            time.sleep(5)  # into its epochs
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert list(server.runs) == ["wbrun000"]  # the second proposal was never taken
    run = server.runs["wbrun000"]
    assert run.preempting and run.exit_code not in (None, 0)
    epochs = [row["epoch"] for row in run.history if "val/acc" in row]
    assert 1 <= len(epochs) < 2000
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_a_preempted_run_resumes_where_it_stopped_in_the_same_wandb_run(tmp_path):
    """SIGTERM mid-run, then W&B hands the run out again (`resume`) to the next agent: the
    trial goes on from its checkpoint and the W&B run's history on the server goes on after
    the epochs it had (each epoch once, none overwritten), as one uninterrupted run's."""
    run_dir = tmp_path / "data" / "runs" / "wbrun000"
    slow = {"lr": 0.05, "epochs": 12, "model": "cnn", "channels": [8, 16],
            "train_subset": 1024, "num_threads": 1}
    with LoopbackWandb(SWEEP, [slow]) as server:
        process = start(tmp_path, server)
        try:
            wait_for(lambda: (run_dir / "checkpoint.pt").is_file())
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
        assert process.returncode == 0, stderr[-3000:]
        run = server.runs["wbrun000"]
        assert run.preempting
        stopped_at = max(row["epoch"] for row in run.history if "val/acc" in row)
        assert 1 <= stopped_at < 12
        again = launch(tmp_path, server)  # the next agent: W&B sends `resume`
    assert again.returncode == 0, again.stderr[-3000:]
    assert run.handed == 2 and run.exit_code == 0 and not run.preempting
    epochs = [row["epoch"] for row in run.history if "val/acc" in row]
    assert epochs == list(range(1, 13))  # continued, not restarted or written over
    local = json.loads((run_dir / "summary.json").read_text())
    assert local["epochs_done"] == 12
    assert run.summary["val/acc"] == pytest.approx(local["val/acc"])
    assert "Traceback" not in again.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(450)
def test_a_run_stopped_in_wandb_ends_stopped_and_its_pack_mate_goes_on(tmp_path):
    """A user stops one member of a pack in W&B's UI (its file stream answers `stopped`):
    that run ends at its epoch's end as stopped, once, and its pack-mate trains to its end.
    wandb's own reaction, a SIGINT to the main thread, preempted the whole pack and the
    stopped run was handed out again."""
    long = {"lr": 0.1, "epochs": 1500}
    with LoopbackWandb(SWEEP, [long, long | {"lr": 0.01}]) as server:
        process = start(tmp_path, server, "--pack", "2")
        try:
            wait_for(lambda: "wbrun000" in server.runs)
            server.stop("wbrun000", via="ui")
            stdout, stderr = process.communicate(timeout=300)
        finally:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    stopped, mate = server.runs["wbrun000"], server.runs["wbrun001"]
    assert stopped.exit_code == 0 and not stopped.preempting and stopped.handed == 1
    local = json.loads((tmp_path / "data/runs/wbrun000/summary.json").read_text())
    assert local["state"] == "stopped" and local["stop_reason"] == wandb_pack.STOPPED_IN_WANDB
    assert 1 <= local["epochs_done"] < 1500
    assert mate.exit_code == 0 and not mate.preempting
    assert [row["epoch"] for row in mate.history if "val/acc" in row] == list(range(1, 1501))
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_another_programs_runs_reach_the_server_attached_to_the_sweep(tmp_path):
    """A sweep whose command runs the user's own script: W&B's command-line agent runs each
    run as a process of its own, online, and each run reaches the server in the sweep."""
    with LoopbackWandb(PROGRAM_SWEEP, [{"lr": 0.1, "epochs": 3, "seconds_per_epoch": 0.2},
                                       {"lr": 0.5, "epochs": 3, "seconds_per_epoch": 0.2}]
                       ) as server:
        result = launch(tmp_path, server)
    assert result.returncode == 0, result.stderr[-3000:]
    assert server.unknown == [], server.unknown
    for name, lr in (("wbrun000", 0.1), ("wbrun001", 0.5)):
        run = server.runs[name]
        assert run.exit_code == 0 and run.upserted("sweep") == server.sweep_id
        assert run.config["lr"] == lr
        losses = [row["val_loss"] for row in run.history if "val_loss" in row]
        assert losses == pytest.approx([1 / (1 + lr * epoch) for epoch in (1, 2, 3)])
    assert_key_written_nowhere(tmp_path, result)


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_sigterm_ends_another_programs_run_and_its_agent(tmp_path):
    """SIGTERM (a cluster's walltime) reaches the agent of another program's sweep mid-run:
    the run's process gets it too, the agent takes no other run and ends within seconds.
    Before, W&B's loop never heard it: the agent took run after run until SIGKILL."""
    long = {"lr": 0.1, "epochs": 60, "seconds_per_epoch": 1.0}
    with LoopbackWandb(PROGRAM_SWEEP, [long, long | {"lr": 0.5}]) as server:
        process = start(tmp_path, server)
        try:
            wait_for(lambda: processes_of_run(tmp_path, "wbrun000")
                     and "wbrun000" in server.runs)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _, stderr = process.communicate(timeout=60)
            took = time.monotonic() - signalled
            deadline = time.monotonic() + 10
            while processes_of_run(tmp_path, "wbrun000") and time.monotonic() < deadline:
                time.sleep(0.2)
            left = processes_of_run(tmp_path, "wbrun000")
        finally:
            process.kill()
            for pid in processes_of_run(tmp_path, "wbrun000"):  # what a failing test leaves
                os.kill(pid, signal.SIGKILL)
    assert took < 20 and left == []  # the run's process was ended, not orphaned
    assert process.returncode == 0, stderr[-3000:]
    assert list(server.runs) == ["wbrun000"]  # the second run was never taken


def wandb_core_of(pid: int) -> list[int]:
    """The wandb-core service processes of process `pid` and its children (the launcher's
    agents): started by one of them, or named for one of them (`--pid`)."""
    parents, argvs = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            argvs[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family = {pid} | {child for child, parent in parents.items() if parent == pid}
    return [p for p, argv in argvs.items() if argv and argv[0].endswith(b"wandb-core")
            and (parents.get(p) in family or any(str(f).encode() in argv for f in family))]


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_an_agent_whose_wandb_service_died_ends_saying_so(tmp_path):
    """wandb's service process (wandb-core) dies mid-run: the agent can neither log nor take
    runs; it ends with a line naming it, its run's last checkpoint kept. It used to wait for
    its next run forever (wandb's heartbeat answers [] for any failure)."""
    long = {"lr": 0.1, "epochs": 2000}
    with LoopbackWandb(SWEEP, [long, long | {"lr": 0.01}]) as server:
        process = start(tmp_path, server)
        try:
            wait_for(lambda: (tmp_path / "data/runs/wbrun000/checkpoint.pt").is_file()
                     and wandb_core_of(process.pid))
            for pid in wandb_core_of(process.pid):
                os.kill(pid, signal.SIGKILL)
            _, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 1, stderr[-3000:]
    assert "wandb's service process (wandb-core) is gone" in stderr
    assert list(server.runs) == ["wbrun000"]  # no other run taken
    assert (tmp_path / "data/runs/wbrun000/checkpoint.pt").is_file()


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("problem, says", [
    ("key", "W&B refused the API key (check WANDB_API_KEY"),
    ("sweep", "W&B could not find it (CommError: Could not find sweep"),
])
def test_a_refused_key_or_an_unknown_sweep_is_one_line_at_start(tmp_path, problem, says):
    """The server refuses the key (401), or does not know the sweep: one line naming that,
    exit code 2, no agent started, the key shown nowhere."""
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 2}],
                       api_key="g" * 40 if problem == "key" else None) as server:
        if problem == "sweep":
            server.delete_sweep()
        result = launch(tmp_path, server)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: sweep='{server.path}': {says}"), line
    assert server.agents == [] and server.runs == {}
    assert_key_written_nowhere(tmp_path, result)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(450)
def test_a_confusion_matrix_wandb_does_not_take_costs_the_run_nothing(tmp_path):
    """W&B's server is too slow when a run logs its confusion matrix (wandb 0.31 checks the
    key again before saving a table, in 19 s at most): the run still finishes, its summary
    kept locally and on the server, and the user reads one line on what W&B did not get.
    The run used to fail there, its summary.json never written."""
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 400}]) as server:
        process = start(tmp_path, server)
        try:
            wait_for(lambda: "wbrun000" in server.runs)
            server.stall("Viewer", 25)
            _, stderr = process.communicate(timeout=200)
        finally:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    local = json.loads((tmp_path / "data/runs/wbrun000/summary.json").read_text())
    assert local["state"] == "finished" and local["epochs_done"] == 400
    run = server.runs["wbrun000"]
    assert run.exit_code == 0 and run.summary["test/acc"] == pytest.approx(local["test/acc"])
    assert "run wbrun000: W&B did not take the confusion matrix" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(450)
def test_an_agent_outlives_a_server_that_goes_away_at_a_runs_end(tmp_path):
    """W&B's server goes away mid-run and stays away past the run's end: the run's results
    are kept locally, wandb gives up uploading after its finish timeout (one line says where
    the rest is) instead of waiting forever, and once the server is back the agent takes and
    trains the next run."""
    summary = tmp_path / "data/runs/wbrun000/summary.json"
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 400}, {"lr": 0.01, "epochs": 2}]
                       ) as server:
        process = start(tmp_path, server, WANDB_FINISH_TIMEOUT="5")
        try:
            wait_for(lambda: "wbrun000" in server.runs and server.runs["wbrun000"].upserts)
            server.down()
            wait_for(summary.is_file)  # written before W&B's run is finished
            time.sleep(12)  # past the finish timeout
            server.up()
            _, stderr = process.communicate(timeout=200)
        finally:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert json.loads(summary.read_text())["epochs_done"] == 400
    assert "run wbrun000: W&B's server did not take all of the run's data within 5 s" in stderr
    assert server.runs["wbrun001"].exit_code == 0
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_a_run_wandb_cannot_start_ends_the_agent_in_one_line(tmp_path):
    """W&B's server does not answer a run's start (wandb.init asks whether the run exists)
    within wandb's init_timeout: the agent stops with one line naming the run and why (W&B
    hands the run out again once this agent is gone), not with a traceback."""
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 2}]) as server:
        server.stall("RunResumeStatus", 20)
        process = start(tmp_path, server, WANDB_INIT_TIMEOUT="8")
        try:
            _, stderr = process.communicate(timeout=200)
        finally:
            process.kill()
    assert process.returncode == 1, stderr[-3000:]
    assert "agent: W&B could not start run(s) wbrun000 (" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert FAKE_KEY not in stderr
