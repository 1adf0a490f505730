"""Batch-job submission: the PBS job script run for real under plain bash (its #PBS lines are
comments) with the variables PBS sets, against a local digits sweep; dry runs; one-line errors.

`qsub` is a stand-in on PATH that records its argument and prints a job id: these machines
have no PBS server. Everything after it (the job script itself) is what a PBS node runs.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.sweep.store import SweepStore, create_store
from conftest import ROOT, subprocess_env

FAKE_ID = "4242.pbs-test"


@pytest.fixture
def aux(tmp_path_factory) -> Path:
    """Outside the submit directory: the stand-in commands, their logs, scratch, $HOME."""
    return tmp_path_factory.mktemp("aux")


def make_sweep(workdir: Path, sweep_id: str, parameters: dict) -> SweepStore:
    # data_dir is relative, so that the job's trials use the copy in scratch
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             **parameters}}
    return create_store(workdir / "data" / "sweeps" / sweep_id, sweep_id, sweep_id, config)


def fake_scheduler_bin(tmp_path: Path, command: str = "qsub") -> Path:
    """A directory holding a stand-in for qsub/sbatch that logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / command
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/{command}.log"\necho {FAKE_ID}\n')
    stub.chmod(0o755)
    return bin_dir


def launch(workdir: Path, *args: str, path: str | None = None, **env: str):
    extra = {"PATH": path} if path is not None else {}
    return subprocess.run([sys.executable, "-m", "agent.launch", *args], cwd=workdir,
                          env=subprocess_env(**extra, **env), capture_output=True, text=True,
                          timeout=100)


def submit_pbs(workdir: Path, aux: Path, sweep: str, *options: str) -> Path:
    """`./run_sweep.sh SWEEP --pbs 1 ...` with the stand-in qsub; the job script it wrote."""
    bin_dir = fake_scheduler_bin(aux)
    result = launch(workdir, sweep, "--pbs", "1", "--gpus-per-job", "0", *options,
                    path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert FAKE_ID in result.stdout
    script = Path((aux / "qsub.log").read_text().split()[-1])
    assert script.is_file() and script.parent.parent == workdir / "data" / "jobs"
    return script


def pbs_job(workdir: Path, aux: Path, script: Path) -> subprocess.Popen:
    """The job as PBS starts it: plain bash, in $HOME, with PBS's variables and no W&B dir
    (so that offline runs go to scratch and have to be copied back)."""
    (aux / "scratch").mkdir(exist_ok=True)
    env = subprocess_env(PBS_O_WORKDIR=str(workdir), SCRATCHDIR=str(aux / "scratch"),
                         PBS_JOBID=FAKE_ID, PBS_JOBNAME="sweep", OMP_NUM_THREADS="1")
    env.pop("WANDB_DIR", None)
    home = aux / "home"
    home.mkdir(exist_ok=True)
    return subprocess.Popen(["bash", str(script)], cwd=home, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def scratch_epoch(scratch: Path, sweep_id: str) -> int:
    """The highest epoch recorded in the job's copy of the store (0 before it exists)."""
    path = scratch / "sweep-job" / "data" / "sweeps" / sweep_id / "sweep.db"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COALESCE(MAX(epoch), 0) FROM runs").fetchone()[0]
    except sqlite3.Error:  # created but not yet written
        return 0


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_pbs_job_runs_a_local_sweep_in_scratch_and_copies_everything_back(workdir, aux):
    make_sweep(workdir, "tiny", {"hidden": {"value": 32}, "epochs": {"value": 2},
                                 "sinks": {"value": ["wandb", "tensorboard"]},
                                 "lr": {"values": [0.05, 0.1]}})
    script = submit_pbs(workdir, aux, "tiny", "--mem", "2gb", "--walltime", "0:30:00")
    text = script.read_text()
    assert "#PBS -l select=1:ncpus=1:mem=2gb:scratch_local=20gb" in text
    assert "#PBS -l walltime=0:30:00" in text
    job = pbs_job(workdir, aux, script)
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err[-3000:]
    runs = SweepStore(workdir / "data" / "sweeps" / "tiny" / "sweep.db").runs()
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert sorted(r["config"]["lr"] for r in runs) == [0.05, 0.1]
    for run in runs:  # every result is back in the submit directory
        assert (workdir / "data" / "logs" / "tiny" / run["id"]).is_dir()
        assert list((workdir / "wandb").glob(f"offline-run-*-{run['id']}/run-*.wandb"))
        assert (workdir / "data" / "runs" / run["id"] / "checkpoint.pt").is_file()
    assert (workdir / "data" / "cache").is_dir()
    assert not (workdir / "data" / "sweeps" / "tiny.incoming").exists()
    assert list((aux / "scratch").iterdir()) == []  # scratch emptied


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_pbs_job_stopped_at_walltime_or_by_sigterm_leaves_a_run_the_next_job_resumes(
        workdir, aux):
    make_sweep(workdir, "long", {"hidden": {"value": 256}, "batch_size": {"value": 8},
                                 "epochs": {"value": 2000}, "sinks": {"value": ["tensorboard"]},
                                 "lr": {"value": 0.01}})
    scratch = aux / "scratch"
    store_path = workdir / "data" / "sweeps" / "long" / "sweep.db"

    # Job 1: a 30 s walltime; the job stops its agents 3 s (a tenth) before it. Shorter, a
    # loaded machine (parallel tests) may not finish the first epoch in time.
    first = pbs_job(workdir, aux, submit_pbs(workdir, aux, "long", "--walltime", "0:00:30"))
    out, err = first.communicate(timeout=90)
    assert first.returncode == 0, err[-3000:]
    assert "agents stopped 3 s before the walltime" in err
    (run,) = SweepStore(store_path).runs()
    assert run["state"] == "preempted" and 1 <= run["epoch"] < 2000, (run["state"], err[-2000:])
    assert (workdir / "data" / "runs" / run["id"] / "checkpoint.pt").is_file()
    assert list(scratch.iterdir()) == []

    # Job 2: SIGTERM, as PBS sends at the walltime or on qdel, once it has trained further.
    second = pbs_job(workdir, aux, submit_pbs(workdir, aux, "long", "--walltime", "1:00:00"))
    wait_for(lambda: scratch_epoch(scratch, "long") > run["epoch"], 120, "a resumed epoch")
    second.send_signal(signal.SIGTERM)  # to the job shell only: it passes it on
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-3000:]
    (resumed,) = SweepStore(store_path).runs()
    assert resumed["id"] == run["id"] and resumed["state"] == "preempted"
    assert resumed["epoch"] > run["epoch"]
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, resumed["epoch"] + 1))
    assert list(scratch.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_dry_run_prints_the_scripts_and_writes_nothing(workdir):
    make_sweep(workdir, "dry", {"lr": {"value": 0.1}})
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    # A key in the environment must never reach a job script.
    secret = "0123456789abcdef-not-a-real-key"
    result = launch(workdir, "dry", "--slurm", "3", "--gpus-per-job", "2", "--mem", "8gb",
                    "--walltime", "30:00:00", "--partition", "gpu", "--dry-run",
                    WANDB_API_KEY=secret, WANDB_PROJECT="study")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("#SBATCH --array=0-2", "#SBATCH --gres=gpu:2", "#SBATCH --mem=8192M",
                 "#SBATCH --time=1-06:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --cpus-per-task=8", "--agents-per-gpu 1"):
        assert line in out, line
    assert "WANDB_PROJECT=study" in out and secret not in out and "WANDB_API_KEY" not in out

    sweep_file = workdir / "s.yaml"
    sweep_file.write_text((ROOT / "sweeps" / "quickstart.yaml").read_text())
    before.append(Path("s.yaml"))
    result = launch(workdir, str(sweep_file), "--pbs", "1", "--dry-run", "--scratch", "50gb",
                    "--queue", "gpu_long")
    assert result.returncode == 0, result.stderr
    assert "#PBS -l select=1:ncpus=4:ngpus=1:mem=16gb:scratch_local=50gb" in result.stdout
    assert "#PBS -q gpu_long" in result.stdout and "#PBS -l walltime=4:00:00" in result.stdout
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == sorted(before)


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind,command", [("--pbs", "qsub"), ("--slurm", "sbatch")])
def test_missing_scheduler_command_is_one_line_exit_2_and_writes_nothing(workdir, kind,
                                                                         command):
    (workdir / "empty-bin").mkdir()
    sweep_file = workdir / "s.yaml"
    sweep_file.write_text((ROOT / "sweeps" / "quickstart.yaml").read_text())
    result = launch(workdir, str(sweep_file), kind, "1", path=str(workdir / "empty-bin"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"{command} not found on PATH" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["empty-bin", "s.yaml"]  # no sweep


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("options,says", [
    (["--pbs", "1", "--walltime", "4h"], "--walltime='4h'"),
    (["--pbs", "1", "--walltime", "1:75:00"], "--walltime='1:75:00'"),
    (["--pbs", "0"], "--pbs 0"),
    (["--slurm", "-2"], "--slurm -2"),
    (["--slurm", "1", "--mem", "16"], "--mem='16'"),
    (["--pbs", "1", "--slurm", "1"], "exactly one of"),
    (["--walltime", "1:00:00"], "exactly one of"),
    (["--pbs", "2"], "--pbs 2 on a local sweep"),
    (["--pbs", "1", "--gpus-per-job", "-1"], "--gpus-per-job=-1"),
    (["--slurm", "1", "--queue", "gpu"], "--queue is PBS's"),
    (["--pbs", "1", "--container", "missing.sif"], "--container='missing.sif'"),
])
def test_bad_options_are_one_line_exit_2(workdir, aux, options, says):
    make_sweep(workdir, "opts", {"lr": {"value": 0.1}})
    bin_dir = fake_scheduler_bin(aux)
    fake_scheduler_bin(aux, "sbatch")
    result = launch(workdir, "opts", *options, path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr
    assert not (workdir / "data" / "jobs").exists()
    assert not (aux / "qsub.log").exists() and not (aux / "sbatch.log").exists()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_slurm_task_on_another_node_than_its_local_sweep_leaves_saying_why(workdir, aux):
    make_sweep(workdir, "onenode", {"lr": {"value": 0.1}})
    bin_dir = fake_scheduler_bin(aux, "sbatch")
    result = launch(workdir, "onenode", "--slurm", "2", "--gpus-per-job", "0",
                    path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    script = Path((aux / "sbatch.log").read_text().split()[-1])  # after --parsable
    (script.parent / "node").write_text("another-node\n")  # where task 0 started
    task = subprocess.run(["bash", str(script)], cwd=aux, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert task.returncode == 3
    assert "runs on another-node" in task.stderr and "W&B sweep" in task.stderr
    runs = SweepStore(workdir / "data" / "sweeps" / "onenode" / "sweep.db").runs()
    assert runs == []  # it trained nothing


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_container_mode_runs_the_agents_through_apptainer(workdir):
    make_sweep(workdir, "box", {"lr": {"value": 0.1}})
    (workdir / "sweep.sif").write_bytes(b"stand-in image")
    result = launch(workdir, "box", "--pbs", "1", "--container", "sweep.sif", "--dry-run")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("timeout ")]
    assert '"$apptainer" exec --nv --bind "$work","$submit_dir"' in line
    assert f"{workdir / 'sweep.sif'} /app/.venv/bin/python -m agent.launch data/sweeps/box" in line
    assert "command -v apptainer || command -v singularity" in result.stdout
