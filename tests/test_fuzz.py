"""The fuzzer: generated sweep files, trainer arguments and every command's options against the
public entry points, with one oracle. Every case ends in exit code 0 or 2 (2: one `error:`
line on stderr), never a traceback, within 10 s and under 1 GiB; a refused input creates
nothing; an accepted sweep's first configuration passes the trial's validation and either fits
this machine or is refused before training (agent/trial/preflight.py).

Most cases run in one worker process (tests/fuzz_worker.py), each through the same function
the command line calls; a sample runs as real processes (e2e) and must agree with it. How
many: FUZZ_PROFILE=ci (set by .ci/run) runs thousands, the default a few hundred. With
FUZZ_STATS=FILE every case appends one JSON line there; `python tests/fuzz_stats.py FILE`
sums them up (the README's figure). Memory: a real process's peak resident memory (wait4's
ru_maxrss) must stay under 1 GiB; in the worker, which holds torch, the sweep engine and
matplotlib at once (about 1 GiB by itself), what one case adds to its peak must.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings

from conftest import ROOT
from fuzz_inputs import command_cases, process_safe, sweep_cases, train_cases

PROFILES = {  # cases per test: (in the worker, as real processes); trainings for real
    "default": {"sweep": (100, 4), "train": (100, 4), "command": (25, 2), "trainings": 2},
    "ci": {"sweep": (1500, 30), "train": (1500, 30), "command": (300, 20), "trainings": 12},
}
PROFILE = PROFILES[os.environ.get("FUZZ_PROFILE", "default")]
CASE_LIMIT_S = 10.0  # the worker's own limit (a case in its warm process)
# a real process pays an interpreter and torch's import on top (3-5 s on an idle 2-core machine,
# over 10 s when other test processes share it: the last CI run under load killed three): it
# guards against a hang, not a speed
PROCESS_LIMIT_S = 30.0
MEMORY_LIMIT_MB = 1024
PROCESS_ADDRESS_SPACE = 6 << 30  # RLIMIT_AS of a real process (torch maps ~3 GiB on import)
COMMANDS = {"sweep": ["-m", "agent.launch"], "launch": ["-m", "agent.launch"],
            "train": ["-m", "agent.train"], "agent": ["-m", "agent.sweep.agent_loop"],
            "status": ["-m", "agent.status"], "report": ["-m", "agent.report"],
            "repeat": ["-m", "agent.repeat"]}
ACCEPTED = ("accepted", "help", "refused_before_training")


def fuzz_settings(count: int):
    return settings(max_examples=count, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def environment(home: Path) -> dict:
    """What a case's process sees: this checkout, its own HOME (no .netrc), no W&B key, W&B
    offline, and a PATH without qsub or sbatch, so nothing is ever submitted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(home), WANDB_MODE="offline",
               WANDB_SILENT="true", PATH=str(Path(sys.executable).parent),
               OMP_NUM_THREADS="1")
    return env


class Worker:
    """tests/fuzz_worker.py in a scratch directory, restarted when a case kills or hangs it."""

    def __init__(self, root: Path):
        self.root = root
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "data", self.root / "inputs"):
            if stale.exists():
                import shutil

                shutil.rmtree(stale)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "fuzz_worker.py")], cwd=self.root,
            env=environment(self.root), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        ready = self._answer(180)
        assert ready == {"ready": True}, ready

    def _answer(self, timeout: float) -> dict | None:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not readable:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def ask(self, case: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        answer = self._answer(CASE_LIMIT_S + 20)  # the worker stops a case at 10 s itself
        if answer is None:  # stuck where its alarm cannot reach (C code), or dead
            died = self.process.poll()
            self.stop()
            return {"outcome": "hang" if died is None else f"worker died ({died})",
                    "message": "", "seconds": CASE_LIMIT_S, "peak_mb": 0, "grew_mb": 0,
                    "created": []}
        return answer

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    started = Worker(tmp_path_factory.mktemp("fuzz"))
    started.start()
    yield started
    started.stop()


def record(entry: str, how: str, result: dict) -> None:
    path = os.environ.get("FUZZ_STATS")
    if path:
        with open(path, "a") as stats:
            stats.write(json.dumps({"entry": entry, "how": how, **{
                k: result.get(k) for k in ("outcome", "seconds", "peak_mb", "grew_mb")},
                "created": bool(result.get("created"))}) + "\n")


def check_in_process(case: dict, result: dict) -> None:
    """The oracle for a case run in the worker."""
    record(case["entry"], "in-process", result)
    where = f"{case['entry']} {case['argv']!r}: "
    assert result["outcome"] in ACCEPTED + ("refused",), \
        where + f"{result['outcome']}: {result['message']}"
    if result["outcome"] in ("refused", "refused_before_training"):
        message = result["message"]
        assert message and "\n" not in message and "Traceback" not in message, where + message
    assert result["seconds"] <= CASE_LIMIT_S, where + f"{result['seconds']:.1f} s"
    assert result["grew_mb"] < MEMORY_LIMIT_MB, where + f"took {result['grew_mb']:.0f} MB"
    if result["outcome"] == "refused":
        assert result["created"] == [], where + f"left {result['created']}"


# --- in the worker ---------------------------------------------------------------------------

@given(case=sweep_cases())
@fuzz_settings(PROFILE["sweep"][0])
def test_generated_sweep_files_are_accepted_and_trainable_or_refused_in_one_line(worker, case):
    check_in_process(case, worker.ask(case))


@given(case=train_cases())
@fuzz_settings(PROFILE["train"][0])
def test_generated_trainer_arguments_are_accepted_and_trainable_or_refused_in_one_line(
        worker, case):
    check_in_process(case, worker.ask(case))


@pytest.mark.parametrize("entry", ["launch", "agent", "status", "report", "repeat"])
def test_generated_command_options_are_accepted_or_refused_in_one_line(worker, entry):
    @given(case=command_cases(entry))
    @fuzz_settings(PROFILE["command"][0])
    def check(case):
        check_in_process(case, worker.ask(case))

    check()


# --- as real processes -------------------------------------------------------------------------

def run_process(argv: list[str], cwd: Path) -> dict:
    """Run a command as its own process (RLIMIT_AS, a new session), killed at PROCESS_LIMIT_S;
    exit code, stderr, seconds and its peak resident memory (wait4's ru_maxrss)."""
    err_path = cwd / "inputs" / "stderr.txt"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (PROCESS_ADDRESS_SPACE, PROCESS_ADDRESS_SPACE))

    started = time.perf_counter()
    with open(err_path, "w") as err:
        child = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=environment(cwd),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, preexec_fn=limit, start_new_session=True)
    timer = threading.Timer(PROCESS_LIMIT_S, lambda: os.killpg(child.pid, signal.SIGKILL))
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    try:
        os.killpg(child.pid, signal.SIGKILL)  # agents a launcher left behind, if any
    except ProcessLookupError:
        pass
    return {"code": child.returncode, "stderr": err_path.read_text(errors="replace"),
            "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}


def write_files(case: dict, folder: Path) -> list[str]:
    """The case's files under `folder` (as the worker writes them); its argv with paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in case.get("files", {}).items():
        path = folder / name
        if spec.get("kind") == "fifo":
            os.mkfifo(path)
        elif spec.get("kind") == "dir":
            path.mkdir()
        elif spec.get("kind") == "symlink":
            path.symlink_to(spec["to"])
        else:
            path.write_bytes(base64.b64decode(spec["data"]))
        paths[name] = str(path)
    return [re.sub(r"\{file:([^}]*)\}", lambda m: paths.get(m.group(1), m.group(0)), arg)
            for arg in case["argv"]]


def real_argv(case: dict, verdict: str, argv: list[str]) -> list[str] | None:
    """The command line that runs `case` for real without training anything or taking long:
    an accepted sweep file is checked through a dry run of a job submission; accepted options
    run only against the finished fixture sweep (its agents find nothing to do), with few
    agents and no --run; None when no such run is possible."""
    entry = case["entry"]
    command = COMMANDS[entry]
    accepted = verdict in ACCEPTED
    if entry == "sweep":
        return command + argv + (["--slurm", "1", "--dry-run"] if accepted else [])
    if not accepted:
        return command + argv
    if entry in ("train", "report") or "--run" in argv:
        return None  # these train, or take seconds of figures: covered in the worker
    if entry in ("launch", "agent"):
        positional = [a for a in argv if not a.startswith("-")]
        dry = "--dry-run" in argv
        if not dry and not (positional and positional[0] in ("done", "data/sweeps/done")):
            return None
        for option in ("--agents", "--agents-per-gpu"):  # each agent starts a Python
            if option in argv[:-1] and argv[argv.index(option) + 1].strip() not in ("1", "2"):
                return None
    return command + argv


def check_as_process(worker: Worker, case: dict) -> None:
    assume(process_safe(case))
    in_process = worker.ask(case)
    verdict = in_process["outcome"]
    root = worker.root
    import shutil

    shutil.rmtree(root / "inputs" / "real", ignore_errors=True)
    argv = real_argv(case, verdict, write_files(case, root / "inputs" / "real"))
    assume(argv is not None)
    before = {p for p in root.rglob("*") if "inputs" not in p.parts and
              not p.name.endswith(("-wal", "-shm"))}
    try:
        done = run_process(argv, root)
    finally:
        shutil.rmtree(root / "inputs" / "real", ignore_errors=True)
    created = {p for p in root.rglob("*") if "inputs" not in p.parts and
               not p.name.endswith(("-wal", "-shm"))} - before
    outcome = {0: "accepted", 2: "refused"}.get(done["code"], f"exit {done['code']}")
    record(case["entry"], "process", {**done, "outcome": outcome, "created": created})
    where = f"{' '.join(argv)!r}: "
    assert "Traceback" not in done["stderr"], where + done["stderr"][-3000:]
    assert done["code"] in (0, 2), where + f"exit code {done['code']}: {done['stderr'][-2000:]}"
    assert done["seconds"] < PROCESS_LIMIT_S, where + f"{done['seconds']:.1f} s"
    assert done["peak_mb"] < MEMORY_LIMIT_MB, where + f"{done['peak_mb']:.0f} MB"
    if done["code"] == 2:
        lines = done["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), where + done["stderr"]
        assert not created, where + f"left {sorted(map(str, created))}"
    assert (done["code"] == 0) == (verdict in ACCEPTED), \
        where + f"in-process {verdict} ({in_process['message']}), as a process exit code " \
        f"{done['code']}"


@pytest.mark.e2e
@pytest.mark.timeout(3600)
@given(case=sweep_cases())
@fuzz_settings(PROFILE["sweep"][1])
def test_generated_sweep_files_through_the_launcher_process(worker, case):
    check_as_process(worker, case)


@pytest.mark.e2e
@pytest.mark.timeout(3600)
@given(case=train_cases())
@fuzz_settings(PROFILE["train"][1])
def test_generated_trainer_arguments_refused_by_the_trainer_process(worker, case):
    check_as_process(worker, case)


@pytest.mark.e2e
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("entry", ["launch", "agent", "status", "report", "repeat"])
def test_generated_command_options_as_processes(worker, entry):
    @given(case=command_cases(entry))
    @fuzz_settings(PROFILE["command"][1])
    def check(case):
        check_as_process(worker, case)

    check()


# --- accepted inputs train ---------------------------------------------------------------------

TRAINING_LIMIT_S = 300
# What makes a generated configuration a short training on this machine: one epoch of 64 digits
# on the CPU, one thread, no torch.compile (its C++ build alone takes minutes), files in the
# scratch directory. Everything else is as generated: model, widths, optimizer, precision...
SHORT = {"dataset": "digits", "epochs": "1", "train_subset": "64", "device": "cpu",
         "num_threads": "1", "compile": "False", "data_dir": "inputs/train/data",
         "log_dir": "inputs/train/logs", "run_dir": "inputs/train/runs"}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(3600)
@given(case=train_cases())
@fuzz_settings(PROFILE["trainings"])
def test_generated_accepted_trainer_arguments_train_or_are_refused_before_training(worker,
                                                                                    case):
    """An accepted configuration trains to the end (exit code 0), or the trial refuses it
    before its first step in one line (exit code 2, no checkpoint): never a crash later."""
    case = {**case, "argv": case["argv"] + [f"--{k}={v}" for k, v in SHORT.items()]}
    assume(process_safe(case))
    verdict = worker.ask(case)
    assume(verdict["outcome"] in ("accepted", "refused_before_training"))
    import shutil

    root = worker.root
    shutil.rmtree(root / "inputs" / "train", ignore_errors=True)
    argv = write_files(case, root / "inputs" / "train" / "files")
    done = subprocess.run([sys.executable, "-m", "agent.train", *argv], cwd=root,
                          env=environment(root), capture_output=True, text=True,
                          timeout=TRAINING_LIMIT_S)
    record("train", "trained", {"outcome": {0: "accepted", 2: "refused_before_training"}.get(
        done.returncode, f"exit {done.returncode}"), "seconds": 0, "peak_mb": 0})
    where = f"{argv!r}: "
    assert "Traceback" not in done.stderr, where + done.stderr[-3000:]
    assert done.returncode in (0, 2), where + done.stderr[-2000:]
    checkpoints = list((root / "inputs" / "train" / "runs").rglob("checkpoint.pt"))
    if done.returncode == 2:
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and not checkpoints, where + line
    else:
        assert verdict["outcome"] == "accepted", where + verdict["message"]
        summaries = list((root / "inputs" / "train" / "runs").rglob("summary.json"))
        assert len(summaries) == 1, where + done.stderr[-2000:]
