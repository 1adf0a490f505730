"""A real one-node SLURM cluster (Debian's munge, slurmctld, slurmd) started for the test:
`./run_sweep.sh <local sweep> --slurm 2` submits a job array whose two agents finish the sweep.

Configured for a container: no cgroups (proctrack/linuxproc, task/none), everything (munge's
key and socket, state, spool, logs, pid files) in a temporary directory, free ports.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from agent.sweep.store import SweepStore, create_store
from conftest import ROOT, subprocess_env

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "munge")


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def require_slurm() -> None:
    """In CI the cluster must be there (.ci/setup_clusters.sh installs it); elsewhere the test
    is skipped, saying what to install."""
    missing = [name for name in DAEMONS + CLIENTS if find_binary(name) is None]
    problem = None
    if missing:
        problem = (f"SLURM test needs {', '.join(missing)}: apt-get install slurmd slurmctld "
                   "slurm-client munge (what .ci/setup_clusters.sh does)")
    elif os.geteuid() != 0:
        problem = "SLURM test needs root: slurmd starts jobs as their user"
    if problem and os.environ.get("CI"):
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


def free_ports(count: int) -> list[int]:
    """Ports the kernel calls free, all held open until every one is picked, so that two
    are never the same (tests run in parallel pick theirs the same way)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_for(predicate, timeout: float, what: str, logs: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}"
                      for log in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def slurm_conf(root: Path, host: str, ports: tuple[int, int]) -> str:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20
    return "\n".join([
        "ClusterName=sweeptest",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={root}/munge/munge.socket",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/logs/slurmctld.log", f"SlurmdLogFile={root}/logs/slurmd.log",
        f"SlurmctldPort={ports[0]}", f"SlurmdPort={ports[1]}",
        # No cgroups in a container: track processes through /proc, bind nothing.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "ReturnToService=2", "MpiDefault=none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} "
        f"RealMemory={int(memory_mb * 0.8)} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


@pytest.fixture
def slurm_cluster():
    """munged, slurmctld and slurmd running; yields the environment for sbatch & co."""
    require_slurm()
    # Not under pytest's temporary directory (mode 700): munged wants every directory above
    # its socket searchable by all.
    root = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "logs"):
        (root / sub).mkdir(mode=0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, tuple(free_ports(2))))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = root / "logs"

    def start(name, *args):
        out = open(logs / f"{name}.out.log", "w")
        return subprocess.Popen([find_binary(name), *args], stdout=out, stderr=out, env=env)

    def client(*args):
        return subprocess.run([find_binary(args[0]), *args[1:]], env=env, capture_output=True,
                              text=True, timeout=30)

    daemons = [start("munged", "-F", f"--socket={root}/munge/munge.socket",
                     f"--key-file={key}", f"--pid-file={root}/munge/munged.pid",
                     f"--log-file={logs}/munged.log", f"--seed-file={root}/munge/seed")]
    try:
        wait_for(lambda: (root / "munge" / "munge.socket").exists(), 20, "munged", logs)
        daemons.append(start("slurmctld", "-D", "-f", str(conf)))
        wait_for(lambda: client("sinfo").returncode == 0, 30, "slurmctld", logs)
        daemons.append(start("slurmd", "-D", "-f", str(conf)))
        wait_for(lambda: client("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", 60,
                 "the node to be idle", logs)
        yield {"SLURM_CONF": str(conf), "PATH": f"{Path(find_binary('sbatch')).parent}:"
               f"{os.environ['PATH']}", "logs": logs, "client": client}
    finally:
        if len(daemons) == 3:
            client("scancel", "--user", "root")
        # Stop them by the pids they wrote, last started first (the Popen pid if none).
        for name, daemon in reversed(list(zip(DAEMONS, daemons))):
            pid_file = root / ("munge/munged.pid" if name == "munged" else f"{name}.pid")
            pid = int(pid_file.read_text()) if pid_file.exists() else daemon.pid
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def submitted(workdir: Path, env: dict, sweep: str, *options: str, quiet: bool = False) -> str:
    """`./run_sweep.sh SWEEP OPTIONS --gpus-per-job 0` as a user submits it; its job id (the
    submission must succeed, and with `quiet` print nothing on stderr)."""
    result = subprocess.run([str(ROOT / "run_sweep.sh"), sweep, *options, "--gpus-per-job", "0"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not (quiet and result.stderr), result.stderr
    return re.search(r"Submitted SLURM job\(s\) (\d+)", result.stdout)[1]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_slurm_jobs_finish_a_local_sweep(workdir, slurm_cluster):
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 32}, "epochs": {"value": 20},
                             "sinks": {"value": []},
                             "lr": {"values": [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}}}
    # 20 epochs a run: long enough that the second task's agent (its python and torch start
    # take seconds on a loaded machine) still finds runs to claim, as both must
    create_store(workdir / "data" / "sweeps" / "slurm8", "slurm8", "slurm8", config)
    # --setup: a directive sbatch reads from it, and a line each task runs first
    (workdir / "setup.sh").write_text("#SBATCH --comment=set-up-7\necho set-up ran\n")
    env = subprocess_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"],
                         OMP_NUM_THREADS="1")
    job_id = submitted(workdir, env, "slurm8", "--slurm", "2", "--mem", "1gb", "--walltime",
                       "0:10:00", "--account", "proj-7", "--setup", "setup.sh")
    client = slurm_cluster["client"]

    wait_for(lambda: client("squeue", "-h", "-j", job_id).stdout.strip() == "", 200,
             "the job array to end", slurm_cluster["logs"])
    shown = client("scontrol", "show", "job", job_id).stdout
    tasks = re.findall(r"ArrayTaskId=(\d+).*?JobState=(\w+).*?ExitCode=(\S+)", shown, re.S)
    (job_dir,) = (workdir / "data" / "jobs").iterdir()
    outputs = "\n".join(p.read_text() for p in sorted(job_dir.glob("slurm-*.out")))
    assert sorted(tasks) == [("0", "COMPLETED", "0:0"), ("1", "COMPLETED", "0:0")], outputs
    assert re.findall(r"\bAccount=(\S+)", shown) == ["proj-7", "proj-7"]  # sbatch read it
    assert re.findall(r"\bComment=(\S+)", shown) == ["set-up-7", "set-up-7"]
    assert outputs.count("set-up ran\n") == 2

    runs = SweepStore(workdir / "data" / "sweeps" / "slurm8" / "sweep.db").runs()
    assert len(runs) == 8 and all(r.state == "finished" for r in runs), outputs
    assert len({r.owner for r in runs}) == 2  # both jobs' agents trained
    assert len(list(job_dir.glob(f"slurm-{job_id}_*.out"))) == 2


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_submissions_on_one_local_sweep_share_it_and_both_hold_it(workdir, slurm_cluster):
    """`--slurm 1` twice on one local sweep (more agents on it, a normal thing to do): the
    second submission says nothing, both jobs' agents train on the one store on this node,
    every run once, and the sweep's record names both jobs (a task on another node waits
    for both to end, not the latest one alone). The W&B key the jobs get from the shell
    (sbatch passes it) is in none of the files they leave (scripts, logs, store, runs)."""
    LRS = [0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4]  # noqa: N806
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 64}, "epochs": {"value": 25},
                             "sinks": {"value": []},
                             # twelve runs: the first job's agent must not end the sweep
                             # before the second's starts (of six, it once trained all)
                             "lr": {"values": LRS}}}
    create_store(workdir / "data" / "sweeps" / "twice", "twice", "twice", config).close()
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = subprocess_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"],
                         OMP_NUM_THREADS="1", WANDB_API_KEY=secret)
    jobs = []
    for _ in range(2):
        jobs.append(submitted(workdir, env, "twice", "--slurm", "1", "--mem", "1gb",
                              "--walltime", "0:10:00", quiet=True))
    client = slurm_cluster["client"]
    wait_for(lambda: client("squeue", "-h", "-j", ",".join(jobs)).stdout.strip() == "", 250,
             "both jobs to end", slurm_cluster["logs"])
    logs = sorted((workdir / "data" / "jobs").rglob("slurm-*.out"))
    outputs = "\n".join(p.read_text() for p in logs)
    shown = client("scontrol", "show", "job").stdout
    assert sorted(re.findall(r"JobState=(\w+).*?ExitCode=(\S+)", shown, re.S)) == [
        ("COMPLETED", "0:0")] * 2, outputs
    runs = SweepStore(workdir / "data" / "sweeps" / "twice" / "sweep.db").runs()
    assert sorted(r.config["lr"] for r in runs) == LRS
    assert all(r.state == "finished" for r in runs), outputs
    assert len({r.owner for r in runs}) == 2, outputs  # both jobs' agents trained
    record = (workdir / "data" / "sweeps" / "twice" / "node").read_text().split()
    assert record[0] == socket.gethostname() and sorted(record[1:]) == sorted(jobs), record
    kept = [p for p in workdir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert kept == [] and secret not in shown


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_the_shells_sbatch_variables_do_not_override_what_the_submission_asked(
        workdir, slurm_cluster):
    """sbatch's input environment variables override a script's #SBATCH lines (`man sbatch`,
    INPUT ENVIRONMENT VARIABLES): with SBATCH_TIMELIMIT exported, a --walltime given was
    silently another time limit (and the agents stopped 5 minutes before the wrong one). The
    job gets what the script says: the time limit, partition, account, memory, array, name
    and log given or derived, whatever the shell exports."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "lr": {"value": 0.1}}}
    create_store(workdir / "data" / "sweeps" / "env1", "env1", "env1", config).close()
    exported = {"SBATCH_TIMELIMIT": "2:00:00", "SBATCH_PARTITION": "elsewhere",
                "SBATCH_ACCOUNT": "other-account", "SBATCH_MEM_PER_NODE": "3000",
                "SBATCH_ARRAY_INX": "0-3", "SBATCH_JOB_NAME": "other-name",
                "SBATCH_ERROR": str(workdir / "elsewhere-%j.err")}
    env = subprocess_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"],
                         **exported)
    job_id = submitted(workdir, env, "env1", "--slurm", "1", "--walltime", "0:07:00", "--mem",
                       "1gb", "--partition", "debug", "--account", "proj-7")
    shown = slurm_cluster["client"]("scontrol", "show", "job", job_id).stdout
    slurm_cluster["client"]("scancel", job_id)
    field = {name: re.findall(rf"\b{name}=(\S*)", shown)
             for name in ("TimeLimit", "Partition", "Account", "MinMemoryNode", "ArrayTaskId",
                          "JobName")}
    assert field == {"TimeLimit": ["00:07:00"], "Partition": ["debug"],
                     "Account": ["proj-7"], "MinMemoryNode": ["1G"], "ArrayTaskId": ["0"],
                     "JobName": ["sweep-env1"]}, shown
    # both streams in the job's one log (a pending task's %a reads as a placeholder)
    (job_dir,) = (workdir / "data" / "jobs").iterdir()
    (log,) = re.findall(r"\bStdOut=(\S*)", shown)
    assert re.findall(r"\bStdErr=(\S*)", shown) == [log], shown
    assert log.startswith(f"{job_dir}/slurm-{job_id}_"), shown


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_job_submitted_with_sbatch_export_none_still_trains(workdir, slurm_cluster):
    """SBATCH_EXPORT=NONE (a site's default, `man sbatch`: --export) gives a job none of the
    submitting shell's environment: the job script must carry what it needs itself (the W&B
    settings it writes, the code's path), and the run trains to the end."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 1},
                             "sinks": {"value": []}, "lr": {"value": 0.1}}}
    create_store(workdir / "data" / "sweeps" / "none1", "none1", "none1", config).close()
    (workdir / "setup.sh").write_text('echo "marker=${SWEEP_TEST_MARKER-unset} '
                                      'project=${WANDB_PROJECT-unset}"\n')
    env = subprocess_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"],
                         SBATCH_EXPORT="NONE", SWEEP_TEST_MARKER="1",
                         WANDB_PROJECT="kept-project")
    job_id = submitted(workdir, env, "none1", "--slurm", "1", "--mem", "1gb", "--walltime",
                       "0:10:00", "--setup", "setup.sh")
    client = slurm_cluster["client"]
    wait_for(lambda: client("squeue", "-h", "-j", job_id).stdout.strip() == "", 200,
             "the job to end", slurm_cluster["logs"])
    (job_dir,) = (workdir / "data" / "jobs").iterdir()
    outputs = "\n".join(p.read_text() for p in sorted(job_dir.glob("slurm-*.out")))
    runs = SweepStore(workdir / "data" / "sweeps" / "none1" / "sweep.db").runs()
    assert [r.state for r in runs] == ["finished"], outputs
    # the shell's environment did not reach the job; the settings the script writes did
    assert "marker=unset project=unset" in outputs, outputs


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_requeued_task_adds_to_its_log_instead_of_emptying_it(workdir, slurm_cluster):
    """A task requeued (a preemption with PreemptMode=REQUEUE, `scontrol requeue`, a node
    failure) runs again under its job id and writes the same slurm-%A_%a.out. sbatch opens it
    as the site's JobFileAppend says, by default truncated: what the first start printed (its
    epochs, the run it left preempted, the hint to go on) was lost. The log is opened for
    appending (--open-mode=append): both starts are in it."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 200},
                             "batch_size": {"value": 8}, "sinks": {"value": []},
                             "lr": {"value": 0.1}}}
    create_store(workdir / "data" / "sweeps" / "requeue1", "requeue1", "requeue1",
                 config).close()
    (workdir / "setup.sh").write_text('echo "start ${SLURM_RESTART_COUNT:-0}"\n')
    env = subprocess_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"],
                         OMP_NUM_THREADS="1")
    job_id = submitted(workdir, env, "requeue1", "--slurm", "1", "--mem", "1gb", "--walltime",
                       "0:10:00", "--setup", "setup.sh")
    client, logs = slurm_cluster["client"], slurm_cluster["logs"]
    (job_dir,) = (workdir / "data" / "jobs").iterdir()
    log = job_dir / f"slurm-{job_id}_0.out"

    def printed(text):
        return lambda: log.exists() and text in log.read_text()

    wait_for(printed("start 0\n"), 100, "the task to start", logs)
    assert client("scontrol", "requeue", f"{job_id}_0").returncode == 0
    # requeued tasks wait (BeginTime) before they may start again: now
    wait_for(lambda: "PENDING" in client("scontrol", "show", "job", job_id).stdout, 60,
             "the task to be requeued", logs)
    client("scontrol", "update", f"JobId={job_id}_0", "StartTime=now")
    wait_for(printed("start 1\n"), 100, "the requeued task to start", logs)
    client("scancel", job_id)
    assert log.read_text().startswith("start 0\n"), log.read_text()


@pytest.mark.e2e
@pytest.mark.timeout(200)
@pytest.mark.parametrize("target", ["dry1", "entity/project/abcd1234"])
def test_a_dry_runs_script_is_one_sbatch_accepts(workdir, slurm_cluster, target):
    """`--slurm N --dry-run` prints the script it would submit; sbatch --test-only (which
    checks a script's directives against the cluster and queues nothing) takes it as
    printed, alone and with the options its 'Submit again with' line names, for a local sweep
    and a W&B sweep (whose dry run asks no server)."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "lr": {"value": 0.1}}}
    create_store(workdir / "data" / "sweeps" / "dry1", "dry1", "dry1", config).close()
    env = subprocess_env(SLURM_CONF=slurm_cluster["SLURM_CONF"], PATH=slurm_cluster["PATH"])
    result = subprocess.run(
        [str(ROOT / "run_sweep.sh"), target, "--slurm", "2", "--gpus-per-job", "0",
         "--agents", "2", "--mem", "1gb", "--walltime", "26:30:00", "--partition", "debug",
         "--dry-run"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    script = result.stdout[result.stdout.index("#!/bin/bash"):]
    (again,) = re.findall(r"^# Submit again with: sbatch (.*) \S+/slurm\.sh$", script, re.M)
    path = workdir / "printed.sh"
    path.write_text(script)
    for options in ([], again.split()):
        checked = slurm_cluster["client"]("sbatch", "--test-only", *options, str(path))
        assert checked.returncode == 0, checked.stderr
        assert re.search(r"Job \d+ to start at", checked.stderr), checked.stderr
    assert slurm_cluster["client"]("squeue", "-h").stdout == ""  # nothing queued
    assert not (workdir / "data" / "jobs").exists()
