"""Shared test fixtures: a small dataset in CIFAR-10's own on-disk format, and isolation.

Tiers (markers declared in pyproject.toml): `e2e` for tests that start our own processes,
send signals or run a server or cluster; `slow` for those over ~20 s. The fast tier,
`-m "not slow and not e2e"`, runs in parallel (`-n 2`): every test works in its own
temporary directory and asks the kernel for free ports.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import yaml

from util.cifar_files import register_fixture, write_cifar10

ROOT = Path(__file__).resolve().parents[1]
# Tests share few cores (pytest-xdist workers, agents in child processes, other jobs). OpenMP
# threads spin while they wait by default, which on an oversubscribed CPU turned a 1 s
# training test into a 120 s timeout here; PASSIVE makes them sleep. Set before torch loads
# (nothing above imports it); child processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The tests start our commands as `python -m ...` in their own folders, whose hints name the
# scripts as `./run_sweep.sh`; util/with_venv.sh, which ran pytest, says where the project's
# root is for hints given elsewhere (agent/commands.py), and that is tested on its own.
os.environ.pop("SWEEP_SCRIPTS_ROOT", None)
# ... and keeps the caller's PATH for the runs of a sweep's own program: the tests' programs
# run with the venv's python, as `python -m agent...` started without it runs them.
for _name in ("PATH", "PYTHONPATH", "VIRTUAL_ENV"):
    os.environ.pop(f"SWEEP_CALLER_{_name}", None)
# Child processes the tests kill (SIGKILL, timeouts) cannot remove their temporary files
# (wandb makes two directories at import, its service a socket): they get a TMPDIR of their
# own, removed when this process ends. This process keeps the system's (cached first).
tempfile.gettempdir()
_CHILDREN_TMP = tempfile.mkdtemp(prefix="agent-tests-")
os.chmod(_CHILDREN_TMP, 0o755)  # as /tmp lets them: munged wants its socket's path searchable
os.environ["TMPDIR"] = _CHILDREN_TMP
atexit.register(shutil.rmtree, _CHILDREN_TMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def signal_actions_of_a_terminal():
    """Each test starts with the signal actions of a command typed in a terminal: Ctrl-C
    (SIGINT) raising KeyboardInterrupt, SIGTERM and SIGHUP their default, so that the
    processes it starts get the defaults too. A test suite started in the background of a
    non-interactive shell (`.ci/run &`) inherits SIGINT ignored, and an in-process agent or
    W&B agent of an earlier test restores what it found: an agent a later test started with
    SIGINT ignored took itself for a launcher's agent (agent_loop: started with Ctrl-C
    ignored), said no Ctrl-C line and exited 130 instead of being killed by SIGINT."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    yield


@pytest.fixture(autouse=True)
def environment_of_its_own():
    """Each test ends with the process environment it started with: a launch in the test's
    own process (one agent on the CPU runs in the launcher: launch.run_agent_here) sets its
    slot's CUDA_VISIBLE_DEVICES="" and OMP_NUM_THREADS there, as an agent process gets
    them, and a later test of the same worker passed them on to the processes it started
    (a GPU job script's variant then read CUDA_VISIBLE_DEVICES '' where it set none)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """A data directory holding a small CIFAR-format set, registered with torchvision (whose
    MD5 tables name the real archive's files) and util.datasets (which expects the real set's
    counts) for the length of the test."""
    data_dir = tmp_path / "data"
    register_fixture(write_cifar10(data_dir, per_batch=40, test_size=60),
                     monkeypatch.setattr)
    return data_dir


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory with W&B offline and quiet; data goes to ./data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    return tmp_path


def subprocess_env(**extra: str) -> dict:
    """Environment for a child `python -m agent...`: the repo importable, W&B offline."""
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    env.pop("WANDB_SWEEP_ID", None)
    env.pop("WANDB_RUN_ID", None)
    # wandb puts its service process's address here once this process used wandb (a test
    # in this worker did): a child would then share that service and its runs, and two
    # tests' runs of one id collide there ("run ID wbrun000 is in use")
    env.pop("WANDB_SERVICE", None)
    # sbatch's settings of the shell the tests run in (a login node's SBATCH_EXPORT,
    # SBATCH_PARTITION) would change the jobs and notes the tests expect
    for name in [name for name in env if name.startswith("SBATCH_")]:
        env.pop(name)
    env.update(extra)
    return env


def in_processes_at_once(target, args: tuple, processes: int = 4, wait_s: float = 150) -> list:
    """`target(*args, found)` in `processes` forked processes at once (agents of one sweep
    racing on shared folders); what they appended to `found`, a shared list. Each must end
    with exit code 0 within `wait_s`."""
    with multiprocessing.Manager() as manager:
        found = manager.list()
        workers = [multiprocessing.get_context("fork").Process(target=target,
                                                               args=(*args, found))
                   for _ in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(wait_s)
        assert [w.exitcode for w in workers] == [0] * processes
        return list(found)


def sweep_check(path: Path, config: dict) -> tuple[list[str], str | None]:
    """`config` written to `path` and checked as a sweep file (load_sweep_config): its notes,
    and its one-line refusal (None where it accepts the sweep)."""
    from agent.sweep.config import load_sweep_config
    from util.errors import UserError

    path.write_text(yaml.safe_dump(config))
    notes: list[str] = []
    try:
        load_sweep_config(path, notes)
    except UserError as error:
        return notes, str(error)
    return notes, None


def launch_sweep(work: Path, name: str, config: dict) -> str:
    """`config` written as `work/<name>.yaml` (its name set) and run through ./run_sweep.sh
    in `work` on one thread; the new local sweep's id. Asserts the launch exits 0."""
    import re
    import subprocess

    import yaml

    (work / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **config},
                                                      sort_keys=False))
    launch = subprocess.run([str(ROOT / "run_sweep.sh"), f"{name}.yaml"], cwd=work,
                            env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True,
                            text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-3000:]
    return re.search(r"Created local sweep (\w+)", launch.stdout).group(1)


def closed_offline_runs(wandb_dir, count: int, timeout: float = 30.0) -> list:
    """The offline runs under `wandb_dir` once `count` of them carry their exit record.

    wandb's service process writes the end of a run's .wandb file a moment after
    `wandb.finish()` returns in the training process, so a reader right after a run may see
    the file without its last records (seen here about once in twenty runs)."""
    import time

    from util.wandb_offline import find_runs

    deadline = time.time() + timeout
    while True:
        runs = find_runs(wandb_dir)
        if len(runs) >= count and all(r.exit_code is not None for r in runs):
            return runs
        if time.time() > deadline:
            return runs
        time.sleep(0.2)


def script_wandb_server(monkeypatch, register, heartbeat) -> None:
    """W&B's server as its agents see it, scripted: `register` and `heartbeat` stand for
    wandb.apis.public.sweeps._register_agent / _agent_heartbeat (the two calls W&B's agents
    make); wandb.Api is a stand-in they are only handed, and no login is asked for."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import wandb
        import wandb.apis.public.sweeps as public_sweeps
        from wandb.sdk import wandb_login

    class OfflineApi:  # the agents only hand it back to the scripted functions
        def __init__(self, *args, **kwargs):
            pass

    monkeypatch.setattr(wandb, "Api", OfflineApi)
    monkeypatch.setattr(wandb_login, "_login", lambda *args, **kwargs: True)
    monkeypatch.setattr(public_sweeps, "_register_agent", register)
    monkeypatch.setattr(public_sweeps, "_agent_heartbeat", heartbeat)
