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
import threading
import time
from pathlib import Path

import pytest
import yaml

from agent.sweep import wandb_pack
from agent.sweep.store import SweepStore
from agent.trial.sinks import wandb_sink
from conftest import ROOT, subprocess_env
from test_local_sweeps import alive
from util.errors import SWEEP_CTRL_C_NOTE
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


class Launched:
    """`./run_sweep.sh <entity/project/id>` (its launcher) running: its stdout and stderr are
    read as they come (a test waits on a line; a full pipe never blocks the agents), and
    leaving the `with` block kills its whole process group (the agents, runs of another
    program), so a failing test leaves nothing training."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((popen.stdout, self.out), (popen.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *exc) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def said(self, text: str) -> bool:
        """Whether a line of stderr so far holds `text`."""
        return any(text in line for line in list(self.err))

    def send_signal(self, number: int) -> None:
        self.popen.send_signal(number)

    def wait_until(self, condition, timeout: float = 300.0) -> None:
        """Wait until `condition()` holds while the launcher runs (AssertionError, with its
        stderr, once it has ended or `timeout` has passed)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.popen.poll() is None, f"the launcher ended with code " \
                f"{self.popen.returncode}; stderr: {self.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"timed out; stderr: {self.stderr[-3000:]}"
            time.sleep(0.2)

    def wait(self, timeout: float = 400.0) -> int:
        """Its exit code, once it and its readers are done (AssertionError past `timeout`)."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; stderr: "
                                 f"{self.stderr[-3000:]}") from None
        for reader in self.readers:
            reader.join(30)
        return code


def start(tmp_path: Path, server: LoopbackWandb, *options: str, target: str | None = None,
          command: tuple[str, ...] = ("agent.launch",), **environ: str) -> Launched:
    """`./run_sweep.sh <entity/project/id> [options]` (its launcher) against `server`, online
    (with `environ` added to its environment), in a process group of its own; with `target`
    (a sweep YAML), that local sweep, its runs logged online to `server`. `command`: the
    module run and its options before the target (the agent on its own: agent.sweep.agent_loop
    --wandb)."""
    env = subprocess_env(WANDB_BASE_URL=server.url, WANDB_API_KEY=FAKE_KEY,
                         HOME=str(tmp_path / "home"), WANDB_DIR=str(tmp_path), **environ)
    env.pop("WANDB_MODE")  # online: the runs stream to the server
    (tmp_path / "home").mkdir(exist_ok=True)
    return Launched(subprocess.Popen(
        [sys.executable, "-m", *command, target or server.path, *options], cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))


def launch(tmp_path: Path, server: LoopbackWandb, *options: str) -> subprocess.CompletedProcess:
    with start(tmp_path, server, *options) as process:
        code = process.wait()
    return subprocess.CompletedProcess(process.popen.args, code, "".join(process.out),
                                       process.stderr)


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
    with LoopbackWandb(SWEEP, [], hold=True) as server, start(tmp_path, server) as process:
        process.wait_until(lambda: len(server.heartbeats) >= 2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)  # on its own: with `hold` the server never says exit
    assert code == 0, process.stderr[-3000:]
    assert server.runs == {} and "Traceback" not in process.stderr


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_sigterm_preempts_the_run_training_and_takes_no_other(tmp_path):
    """SIGTERM mid-run: the run is marked preempting on the server (W&B hands it out again
    and its next agent resumes it) and the agent ends instead of taking the next run."""
    long = {"lr": 0.1, "epochs": 10000, "batch_size": 8}  # preempted long before its end
    run_dir = tmp_path / "data" / "runs" / "wbrun000"
    with LoopbackWandb(SWEEP, [long, long | {"lr": 0.01}], hold=True) as server, \
            start(tmp_path, server) as process:
        process.wait_until(lambda: (run_dir / "checkpoint.pt").is_file())  # into its epochs
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
    assert code == 0, process.stderr[-3000:]
    assert list(server.runs) == ["wbrun000"]  # the second proposal was never taken
    run = server.runs["wbrun000"]
    assert run.preempting and run.exit_code not in (None, 0)
    epochs = [row["epoch"] for row in run.history if "val/acc" in row]
    assert 1 <= len(epochs) < 10000
    assert "Traceback" not in process.stderr, process.stderr[-3000:]


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
        with start(tmp_path, server) as process:
            process.wait_until(lambda: (run_dir / "checkpoint.pt").is_file())
            process.send_signal(signal.SIGTERM)
            code = process.wait(120)
        assert code == 0, process.stderr[-3000:]
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


def epochs_streamed(run) -> list[int]:
    """The epochs of a served run's history rows that carry the sweep's metric."""
    return [row["epoch"] for row in list(run.history) if "val/acc" in row]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(450)
def test_a_run_stopped_in_wandb_ends_stopped_and_its_pack_mate_goes_on(tmp_path):
    """A user stops one member of a pack in W&B's UI (its file stream answers `stopped`):
    that run ends at its epoch's end as stopped, once, and its pack-mate trains on (until a
    SIGTERM preempts it here). wandb's own reaction, a SIGINT to the main thread, preempted
    the whole pack and the stopped run was handed out again."""
    long = {"lr": 0.1, "epochs": 10000, "batch_size": 8}  # neither ends by itself
    summary = tmp_path / "data/runs/wbrun000/summary.json"
    with LoopbackWandb(SWEEP, [long, long | {"lr": 0.01}], hold=True) as server, \
            start(tmp_path, server, "--pack", "2") as process:
        process.wait_until(lambda: "wbrun001" in server.runs and server.runs["wbrun000"].history)
        server.stop("wbrun000", via="ui")
        process.wait_until(summary.is_file)
        stopped_at = json.loads(summary.read_text())["epochs_done"]
        mate = server.runs["wbrun001"]
        process.wait_until(lambda: max(epochs_streamed(mate), default=0) >= stopped_at + 3)
        process.send_signal(signal.SIGTERM)  # the mate trained on; now preempt it
        code = process.wait(120)
    assert code == 0, process.stderr[-3000:]
    assert list(server.runs) == ["wbrun000", "wbrun001"]
    stopped = server.runs["wbrun000"]
    assert stopped.exit_code == 0 and not stopped.preempting and stopped.handed == 1
    local = json.loads(summary.read_text())
    assert local["state"] == "stopped" and local["stop_reason"] == wandb_pack.STOPPED_IN_WANDB
    # W&B shows it finished (exit 0); the report reads it from W&B as stopped, partial
    from agent.report.study import wandb_state
    assert stopped.summary["state"] == "stopped"
    assert wandb_state("finished", stopped.summary) == "stopped"
    assert epochs_streamed(stopped) == list(range(1, stopped_at + 1))
    assert mate.preempting and mate.handed == 1
    assert epochs_streamed(mate) == list(range(1, len(epochs_streamed(mate)) + 1))
    assert "Traceback" not in process.stderr, process.stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(450)
@pytest.mark.parametrize("fatal_stops", [False, True], ids=["default", "stop_on_fatal_error"])
def test_a_local_sweeps_run_stopped_in_wandb_ends_stopped_and_the_agent_goes_on(tmp_path,
                                                                                 fatal_stops):
    """A local sweep whose runs log online: a user stops one run in W&B's UI. That run ends at
    its epoch's end as stopped and the agent takes the next run (preempted here by SIGTERM).
    wandb's own reaction, a SIGINT to the main thread, preempted the agent as a Ctrl-C. With
    wandb's stop_on_fatal_error on, the same stop may come from an upload error: the reason
    names both."""
    sweep = SWEEP | {"parameters": {"lr": {"values": [0.1, 0.01]},
                                    "epochs": {"value": 10000}, "batch_size": {"value": 8}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))

    def streaming() -> list[str]:
        return [name for name, run in list(server.runs.items()) if run.history]

    with LoopbackWandb(SWEEP, []) as server, \
            start(tmp_path, server, target="sweep.yaml",
                  **({"WANDB_STOP_ON_FATAL_ERROR": "true"} if fatal_stops else {})) as process:
        process.wait_until(lambda: len(streaming()) == 1)
        (first,) = streaming()
        server.stop(first, via="ui")
        process.wait_until(lambda: len(streaming()) == 2)  # the next run, from the same agent
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
    assert code == 0, process.stderr[-3000:]
    (store_path,) = (tmp_path / "data" / "sweeps").glob("*/sweep.db")
    runs = {run.id: run for run in SweepStore(store_path).runs()}
    assert sorted(runs) == sorted(server.runs)
    assert runs[first].state == "stopped"
    assert runs[first].summary["stop_reason"] == (
        wandb_sink.STOPPED_IN_WANDB_OR_FATAL if fatal_stops else wandb_sink.STOPPED_IN_WANDB)
    assert server.runs[first].exit_code == 0 and not server.runs[first].preempting
    (second,) = set(runs) - {first}
    assert runs[second].state == "preempted" and server.runs[second].preempting
    assert "Traceback" not in process.stderr, process.stderr[-3000:]


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
@pytest.mark.parametrize("stop, command", [(signal.SIGTERM, ("agent.launch",)),
                                           (signal.SIGHUP, ("agent.sweep.agent_loop", "--wandb"))],
                         ids=["SIGTERM-launch", "SIGHUP-agent-alone"])
def test_sigterm_ends_another_programs_run_and_its_agent(tmp_path, stop, command):
    """SIGTERM (a cluster's walltime) reaches the agent of another program's sweep mid-run:
    the run's process gets it too and ends long before its 300 epochs, and the agent takes
    no other run. Before, W&B's loop never heard it: the agent took run after run until
    SIGKILL. SIGHUP (the terminal closed) to an agent on its own likewise: W&B's loop did
    not hear it, and the agent's own handler left a later Ctrl-C to kill the agent alone."""
    long = {"lr": 0.1, "epochs": 300, "seconds_per_epoch": 1.0}
    with LoopbackWandb(PROGRAM_SWEEP, [long, long | {"lr": 0.5}]) as server:
        try:
            with start(tmp_path, server, command=command) as process:
                process.wait_until(lambda: "wbrun000" in server.runs
                                   and server.runs["wbrun000"].history)  # into its epochs
                process.send_signal(stop)
                code = process.wait(120)
                wait_for(lambda: not processes_of_run(tmp_path, "wbrun000"), timeout=30)
        finally:  # a run's process left by a failing test (it runs in a group of its own)
            for pid in processes_of_run(tmp_path, "wbrun000"):
                os.kill(pid, signal.SIGKILL)
    assert code == 0, process.stderr[-3000:]
    assert list(server.runs) == ["wbrun000"]  # the second run was never taken
    assert len([row for row in server.runs["wbrun000"].history if "val_loss" in row]) < 300


AGENT_ALONE = ("agent.sweep.agent_loop", "--wandb")


@pytest.mark.e2e
@pytest.mark.timeout(450)
@pytest.mark.parametrize("sweep", [SWEEP, PROGRAM_SWEEP], ids=["our-trainer", "another-program"])
def test_a_ctrl_c_ends_an_agent_on_its_own_as_interrupted(tmp_path, sweep):
    """`python -m agent.sweep.agent_loop --wandb <sweep>`, one agent on its own (as
    `wandb agent` is run): a Ctrl-C mid-run stops the run (ours preempted, another program's
    run ended by W&B's agent), takes no other run and ends the agent killed by SIGINT once
    its lines are out, as a shell reports a Ctrl-C (130): it ended with 0, and `agent &&
    next` went on."""
    ours = sweep is SWEEP
    long = {"lr": 0.1, "epochs": 10000, "batch_size": 8} if ours else \
        {"lr": 0.1, "epochs": 300, "seconds_per_epoch": 1.0}
    run_dir = tmp_path / "data" / "runs" / "wbrun000"
    with LoopbackWandb(sweep, [long, long | {"lr": 0.5}], hold=True) as server:
        try:
            with start(tmp_path, server, command=AGENT_ALONE) as process:
                process.wait_until((run_dir / "checkpoint.pt").is_file if ours else
                                   lambda: "wbrun000" in server.runs
                                   and server.runs["wbrun000"].history)  # into its epochs
                os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends the foreground group
                code = process.wait(120)
                wait_for(lambda: not processes_of_run(tmp_path, "wbrun000"), timeout=30)
        finally:  # a run's process left by a failing test (it runs in a group of its own)
            for pid in processes_of_run(tmp_path, "wbrun000"):
                os.kill(pid, signal.SIGKILL)
    assert code == -signal.SIGINT, process.stderr[-3000:]
    # the agent's last word; another program shares its stderr, and its own traceback of the
    # Ctrl-C (a wandb thread's at its exit) may still be written as the agent ends, on the
    # same line ("...^^^^interrupted", seen once in CI)
    assert process.stderr.rstrip().endswith("interrupted"), process.stderr[-3000:]
    assert list(server.runs) == ["wbrun000"]  # the second run was never taken
    if ours:
        assert server.runs["wbrun000"].preempting
        assert "Traceback" not in process.stderr, process.stderr[-3000:]
    else:  # the user's program may print its own KeyboardInterrupt, not the agent
        assert f'File "{ROOT / "agent"}' not in process.stderr, process.stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("ours", [True, False], ids=["our-trainer", "another-program"])
def test_a_second_ctrl_c_ends_a_wandb_launch_and_its_run_at_once(tmp_path, ours):
    """`./run_sweep.sh entity/project/id`, its run stuck: ours loading a data set that never
    loads (its cache a FIFO no one writes to), or another program's that does not stop when
    asked (it notes SIGTERM and SIGINT and carries on; W&B's agent runs it in a group of its
    own, out of the terminal's reach). The first Ctrl-C asks it to stop; a second ends the
    launcher and its agent at once, killed by SIGINT, nothing more said, and the other
    program's run with them (SIGKILL). Before, the launch hung on ours; W&B's agent took a
    third Ctrl-C to kill the other program's run, its agent passing a second on as SIGTERM
    and waiting 30 s for it. The second Ctrl-C waits until the agent has heard the first
    (for the other program, it passed it on): W&B's agent hears a signal only when its
    loop next wakes (within 5 s) where the signal reached another of its threads, and two
    Ctrl-Cs before then are one."""
    pid_file = tmp_path / "program.pid"
    if ours:
        sweep, proposal = SWEEP, {"lr": 0.1, "epochs": 1}
        (tmp_path / "data" / "cache").mkdir(parents=True)
        os.mkfifo(tmp_path / "data" / "cache" / "digits.pt")
    else:
        sweep = {"program": str(ROOT / "tests" / "programs" / "slow_to_stop.py"),
                 "method": "grid", "metric": {"name": "loss", "goal": "minimize"},
                 "parameters": {"pid_file": {"value": str(pid_file)}}}
        proposal = {"pid_file": str(pid_file)}
    with LoopbackWandb(sweep, [proposal], hold=True) as server:
        try:
            with start(tmp_path, server) as process:
                process.wait_until(lambda: "wbrun000" in server.runs if ours
                                   else pid_file.exists())
                program = [] if ours else [int(pid_file.read_text())]
                os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends the foreground group
                process.wait_until(lambda: process.said(SWEEP_CTRL_C_NOTE), 60)
                heard = Path(f"{pid_file}.signals")
                process.wait_until(lambda: ours or heard.exists() and heard.read_text(), 60)
                time.sleep(1)
                assert all(map(alive, program)), process.stderr[-3000:]
                before = process.stderr
                os.killpg(process.pid, signal.SIGINT)
                code = process.wait(10)
                wait_for(lambda: not any(map(alive, program)), timeout=5)
        finally:  # a run's process left by a failing test (it runs in a group of its own)
            if pid_file.exists() and alive(int(pid_file.read_text())):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert code == -signal.SIGINT, process.stderr[-3000:]
    assert process.stderr == before, process.stderr[-3000:]


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
    long = {"lr": 0.1, "epochs": 10000, "batch_size": 8}
    with LoopbackWandb(SWEEP, [long, long | {"lr": 0.01}]) as server, \
            start(tmp_path, server) as process:
        process.wait_until(lambda: (tmp_path / "data/runs/wbrun000/checkpoint.pt").is_file()
                 and wandb_core_of(process.pid))
        for pid in wandb_core_of(process.pid):
            os.kill(pid, signal.SIGKILL)
        code = process.wait(120)
    assert code == 1, process.stderr[-3000:]
    assert "wandb's service process (wandb-core) is gone" in process.stderr
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
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 3}]) as server:
        server.stall_once_started("Viewer", 25)  # every key check once the run is up
        result = launch(tmp_path, server)
    assert result.returncode == 0, result.stderr[-3000:]
    local = json.loads((tmp_path / "data/runs/wbrun000/summary.json").read_text())
    assert local["state"] == "finished" and local["epochs_done"] == 3
    run = server.runs["wbrun000"]
    assert run.exit_code == 0 and run.summary["test/acc"] == pytest.approx(local["test/acc"])
    assert "run wbrun000: W&B did not take the confusion matrix" in result.stderr, \
        result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


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
                       ) as server, \
            start(tmp_path, server, WANDB_FINISH_TIMEOUT="5") as process:
        process.wait_until(lambda: "wbrun000" in server.runs and server.runs["wbrun000"].upserts)
        server.down()
        process.wait_until(summary.is_file)  # written before W&B's run is finished
        process.wait_until(lambda: process.said("run wbrun000: W&B's server did not take all"))
        server.up()
        code = process.wait(300)
    assert code == 0, process.stderr[-3000:]
    assert json.loads(summary.read_text())["epochs_done"] == 400
    assert "run wbrun000: W&B's server did not take all of the run's data within 5 s" \
        in process.stderr
    assert server.runs["wbrun001"].exit_code == 0
    assert "Traceback" not in process.stderr, process.stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(450)
def test_a_run_wandb_cannot_start_ends_the_agent_in_one_line(tmp_path):
    """W&B's server does not answer a run's start (wandb.init asks whether the run exists)
    within wandb's init_timeout: the agent stops with one line naming the run and why (W&B
    hands the run out again once this agent is gone), not with a traceback."""
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 2}]) as server:
        server.stall("RunResumeStatus", 60)
        with start(tmp_path, server, WANDB_INIT_TIMEOUT="8") as process:
            code = process.wait(200)
    assert code == 1, process.stderr[-3000:]
    assert "agent: W&B could not start run(s) wbrun000 (" in process.stderr, \
        process.stderr[-3000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    assert FAKE_KEY not in process.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(450)
def test_a_pack_wandb_cannot_start_ends_in_one_line_with_the_server_gone(tmp_path):
    """Packed: the first member's run starts, the second's does not (the server stalls, then
    goes away). The started run is left preempted and its finish gives up after wandb's
    finish timeout: one line each, not a TimeoutError traceback out of the agent before it
    said why it stops."""
    with LoopbackWandb(SWEEP, [{"lr": 0.1, "epochs": 2}, {"lr": 0.01, "epochs": 2}]) as server:
        server.stall("RunResumeStatus", 0, 120)  # the second member's wandb.init waits
        with start(tmp_path, server, "--pack", "2", WANDB_INIT_TIMEOUT="20",
                   WANDB_FINISH_TIMEOUT="3") as process:
            process.wait_until(lambda: server.operations.count("RunResumeStatus") >= 2)
            server.down()  # before the first member's run is finished
            code = process.wait(200)
    assert code == 1, process.stderr[-3000:]
    assert "agent: W&B could not start run(s) wbrun000, wbrun001 (" in process.stderr, \
        process.stderr[-3000:]
    assert "run wbrun000: W&B's server did not take all of the run's data within 3 s" \
        in process.stderr, process.stderr[-3000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
