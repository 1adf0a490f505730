"""The online path end to end: `./run_sweep.sh entity/project/sweep-id` as a user runs it, a
real process talking HTTP to a W&B server on loopback (tests/wandb_server.py) instead of
api.wandb.ai. The runs log online: what W&B's sweep controller would read (each run attached
to the sweep, its config, its history of the sweep's metric) is checked on the server's side,
against the trial's own files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env
from wandb_server import LoopbackWandb

FAKE_KEY = "k" * 40  # W&B keys are 40 characters; this one opens nothing
COMMAND = ["${env}", "python", "-m", "agent.train", "--dataset=digits", "--model=dense",
           "--hidden=16", "--train_subset=256", "--batch_size=64", "--histograms=false",
           "${args}"]
SWEEP = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
         "metric": {"name": "val/acc", "goal": "maximize"},
         "parameters": {"lr": {"values": [0.1, 0.01]}, "epochs": {"value": 2}}}


def start(tmp_path: Path, server: LoopbackWandb, *options: str) -> subprocess.Popen:
    """`./run_sweep.sh <entity/project/id> [options]` (its launcher) against `server`, online."""
    env = subprocess_env(WANDB_BASE_URL=server.url, WANDB_API_KEY=FAKE_KEY,
                         HOME=str(tmp_path / "home"), WANDB_DIR=str(tmp_path))
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
