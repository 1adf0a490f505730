"""A full disk, a disk quota, a file-size limit and a read-only sweep store, met by real agents:
one line on stderr naming the file and the cause, exit code 2, the run left `preempted` (or,
when the store itself cannot be written, `running` until the next agent repairs it), no empty
or partial files, and the next agent finishes the run. The full disk, the quota and the
read-only store are real file systems (a small tmpfs, remounted read-only; a btrfs image with
a quota), which needs root; the file-size limit (RLIMIT_FSIZE) runs anywhere."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sweep.store import SweepStore
from agent.trial.checkpoint import CHECKPOINT_NAME
from conftest import subprocess_env
from test_local_sweeps import make_sweep, wait_for

# About 1 MB a checkpoint (dense, hidden 256, Adam's two moments): a 1.5 MB disk holds one.
RUN = {"model": {"value": "dense"}, "hidden": {"value": 256}, "batch_size": {"value": 32},
       "optimizer": {"value": "adam"}, "lr": {"value": 1e-3}, "epochs": {"value": 3},
       "sinks": {"value": []}}


def agent(workdir: Path, store, *options: str, fsize: int | None = None,
          stdout=subprocess.DEVNULL) -> subprocess.Popen:
    def limit():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.Popen([sys.executable, "-m", "agent.sweep.agent_loop",
                             str(store.directory), "--heartbeat", "0.2", *options],
                            cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
                            stdout=stdout, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` at `path` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def quota(path: Path, size: str):
    """A folder at `path` whose writes past `size` fail with EDQUOT ("Disk quota exceeded")
    while its file system has room to spare, as a user's quota on a cluster's home does: a
    btrfs subvolume with a qgroup limit, on a 128 MiB image mounted through a loop device
    (btrfs-progs, which .ci/setup_clusters.sh installs; tmpfs takes a quota only from Linux
    6.6 and built with TMPFS_QUOTA, ext4's needs QFMT_V2). Yields a function that lifts the
    limit.
    Skips where mounting is not allowed or the kernel cannot give the quota; a missing
    mkfs.btrfs fails in CI (CI=1), as other tests' missing tools do."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    tools = [shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
             for name in ("mkfs.btrfs", "btrfs")]
    if None in tools:
        why = "a disk quota test needs mkfs.btrfs and btrfs: apt-get install btrfs-progs"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    mkfs, btrfs = tools
    image = path.with_name(path.name + ".img")
    with open(image, "wb") as handle:
        handle.truncate(128 << 20)  # sparse: the smallest size mkfs.btrfs takes by default
    subprocess.run([mkfs, "-q", "-f", str(image)], check=True, capture_output=True)
    path.mkdir(parents=True, exist_ok=True)
    # commit=1: btrfs holds the room its own records may take against the quota until it
    # commits them (every 30 s by default), which made the room left jump by hundreds of kB
    mounted = subprocess.run(["mount", "-o", "loop,commit=1", str(image), str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this kernel cannot mount a btrfs image: {mounted.stderr.strip()}")
    try:
        folder = path / "quota"
        for step in (["quota", "enable", str(path)], ["subvolume", "create", str(folder)],
                     ["qgroup", "limit", size, str(folder)]):
            done = subprocess.run([btrfs, *step], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"this kernel gives no btrfs quota: btrfs {' '.join(step)}: "
                            f"{done.stderr.strip()}")
        yield folder, lambda: subprocess.run([btrfs, "qgroup", "limit", "none", str(folder)],
                                             check=True, capture_output=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def files_left(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                  if p.is_file())


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@contextlib.contextmanager
def small_disk(kind: str, path: Path, size: str):
    """(a folder at `path` that holds `size`, a function that gives it room): a tmpfs that
    fills (`full`: ENOSPC, "No space left on device"), or a disk quota on a file system with
    room to spare (`quota`: EDQUOT, "Disk quota exceeded"; which statvfs does not see)."""
    if kind == "quota":
        with quota(path, size) as (folder, lift):
            yield folder, lift
    else:
        with tmpfs(path, size) as disk:
            yield disk, lambda: remount(disk, "size=20m")


CAUSE = {"full": "No space left on device", "quota": "Disk quota exceeded"}


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["full", "quota"])
def test_a_full_disk_leaves_the_run_preempted_and_the_next_agent_finishes_it(workdir, kind):
    """A checkpoint that does not fit, on a full disk or past a disk quota: one line naming
    the file and the cause, exit 2, the run preempted at its last checkpoint, no partial file;
    the next agent, given room, finishes the run."""
    with small_disk(kind, workdir / "disk", "1500k") as (disk, make_room):
        store = make_sweep(workdir, "full", {**RUN, "run_dir": {"value": str(disk / "runs")},
                                             "sinks": {"value": ["console"]}})
        first = agent(workdir, store, stdout=subprocess.PIPE)
        assert first.wait(timeout=200) == 2
        line = one_error_line(first.stderr.read())
        (run,) = store.runs()
        run_dir = disk / "runs" / run.id
        console = first.stdout.read()  # the run's own last line says what the store says
        assert f"{run.id} preempted" in console and f"{run.id} failed" not in console, console
        assert line.startswith(f"error: {run_dir / CHECKPOINT_NAME}.tmp: {CAUSE[kind]}; "
                               f"run(s) {run.id} left preempted"), line
        assert run.state == "preempted" and run.epoch == 1
        assert files_left(run_dir) == [(CHECKPOINT_NAME, (run_dir / CHECKPOINT_NAME)
                                        .stat().st_size)]  # no .tmp, no empty traceback
        make_room()
        second = agent(workdir, store)
        assert second.wait(timeout=200) == 0, second.stderr.read()
        (done,) = store.runs()
        assert done.state == "finished" and [h["epoch"] for h in done.history] == [1, 2, 3]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_file_size_limit_is_one_line_and_the_run_resumes_elsewhere(workdir):
    store = make_sweep(workdir, "fsize", RUN)
    first = agent(workdir, store, fsize=600_000)  # the store fits; a checkpoint does not
    assert first.wait(timeout=200) == 2
    line = one_error_line(first.stderr.read())
    (run,) = store.runs()
    run_dir = workdir / "data" / "runs" / run.id
    assert line.startswith(f"error: data/runs/{run.id}/{CHECKPOINT_NAME}.tmp: File too large; "
                           f"run(s) {run.id} left preempted"), line
    assert run.state == "preempted" and files_left(run_dir) == []
    second = agent(workdir, store)
    assert second.wait(timeout=200) == 0, second.stderr.read()
    assert [r.state for r in store.runs()] == ["finished"]


def repair_and_finish(workdir: Path, store_dir: Path, killed_id: str) -> None:
    """The next agent finds the silent run, declares it crashed, repeats it and finishes."""
    fixed = subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop", str(store_dir),
                            "--heartbeat", "0.2", "--heartbeat-timeout", "1"], cwd=workdir,
                           env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True,
                           text=True, timeout=200)
    assert fixed.returncode == 0, fixed.stderr
    store = SweepStore(store_dir / "sweep.db")
    killed, repeat = store.runs()
    assert killed.id == killed_id and killed.state == "crashed"
    assert repeat.requeued_from == killed_id and repeat.state == "finished"
    store.close()


def training_in(place: Path, workdir: Path, sweep_id: str):
    """A 20-epoch sweep whose store is in `place` (its runs and data in workdir), and an agent
    on it past its first epoch: (store, agent process)."""
    store = make_sweep(place, sweep_id, {**RUN, "epochs": {"value": 20},
                                         "run_dir": {"value": str(workdir / "runs")},
                                         "data_dir": {"value": str(workdir / "data")}})
    first = agent(workdir, store)
    wait_for(lambda: any(r.epoch >= 1 for r in store.runs()), 120, "a first epoch")
    return store, first


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_read_only_store_is_one_line_and_the_next_agent_repairs_its_run(workdir):
    with tmpfs(workdir / "ro", "20m") as place:
        store, first = training_in(place, workdir, "readonly")
        first.kill()  # its run stays `running`
        first.wait()
        (run,) = store.runs()
        store.close()
        before = files_left(place)
        remount(place, "ro")
        second = agent(workdir, store, "--heartbeat-timeout", "1")
        assert second.wait(timeout=120) == 2
        line = one_error_line(second.stderr.read())
        assert line.startswith(f"error: {store.path}: the sweep store cannot be used ("), line
        assert "readonly" in line or "read-only" in line or "unable to open" in line, line
        remount(place, "rw")
        assert files_left(place) == before
        repair_and_finish(workdir, store.directory, run.id)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_store_whose_disk_fills_mid_run_stops_the_agent_in_one_line(workdir):
    with tmpfs(workdir / "small", "4m") as place:
        store, first = training_in(place, workdir, "filled")
        filler = place / "filler"
        with open(filler, "wb") as handle:  # the rest of the disk, as another program might
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
        assert first.wait(timeout=120) == 2
        line = one_error_line(first.stderr.read())
        assert line.startswith(f"error: {store.path}: the sweep store cannot be used ("), line
        assert "full" in line, line
        (run,) = [r for r in store.runs()]
        assert run.state == "running"
        filler.unlink()
        store.close()
        repair_and_finish(workdir, store.directory, run.id)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_an_agent_on_a_store_past_its_disk_quota_says_so_in_one_line(workdir):
    """A store whose quota is spent (a full home on a cluster): SQLite calls a write refused
    there a "disk I/O error" (only ENOSPC is "database or disk is full"), and the agent's
    line said no more; it now names the quota. Once there is room, an agent finishes the
    sweep. (Spent before the agent starts: mid-run, a copy-on-write file system such as
    btrfs refuses a write into the store's memory-mapped index with SIGBUS, where the disks
    clusters' quotas sit on, overwriting in place, do not.)"""
    with quota(workdir / "small", "2m") as (place, lift):
        store = make_sweep(place, "quota", {**RUN, "epochs": {"value": 1},
                                            "run_dir": {"value": str(workdir / "runs")},
                                            "data_dir": {"value": str(workdir / "data")}})
        store.close()  # its -wal and -shm files go with it: the next agent makes them anew
        with open(place / "filler", "wb") as handle:  # the rest of the quota
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
        first = agent(workdir, store)
        assert first.wait(timeout=120) == 2
        line = one_error_line(first.stderr.read())
        assert line.startswith(f"error: {store.path}: the sweep store cannot be used ("), line
        assert "; its disk quota is exceeded)" in line, line
        (place / "filler").unlink()
        lift()
        second = agent(workdir, store)
        assert second.wait(timeout=200) == 0, second.stderr.read()
        done = SweepStore(store.path, read_only=True)
        assert [r.state for r in done.runs()] == ["finished"]
        done.close()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_sweep_cannot_be_created_on_a_read_only_disk_and_nothing_is_left(workdir):
    sweep_file = workdir / "s.yaml"
    # the runs' folders elsewhere (the launcher checks those first): the store's is refused
    sweep_file.write_text("program: agent/train.py\nmethod: grid\nparameters:\n"
                          "  dataset: {value: digits}\n  lr: {values: [0.1]}\n"
                          "  run_dir: {value: runs}\n  log_dir: {value: logs}\n"
                          "  data_dir: {value: cache}\n")
    with tmpfs(workdir / "data", "1m") as data:
        remount(data, "ro")
        result = subprocess.run([sys.executable, "-m", "agent.launch", str(sweep_file)],
                                cwd=workdir, env=subprocess_env(), capture_output=True,
                                text=True, timeout=100)
        assert result.returncode == 2
        line = one_error_line(result.stderr)
        assert "data/sweeps" in line and "Read-only file system" in line, line
        assert list(data.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_disk_too_full_for_the_data_cache_is_a_note_and_the_run_trains_on(workdir):
    """The decoded set's cache (about 130 kB for digits) does not fit where a small run's
    checkpoints do: torch.save failed there with a C++ RuntimeError, the run `failed` and
    the agent with it (exit 1); the cache is optional, so one note names the folder and the
    cause, nothing half-written is left, and the run finishes from the decoded data."""
    with tmpfs(workdir / "disk", "100k") as disk:
        store = make_sweep(workdir, "nocache", {
            **RUN, "hidden": {"value": 16}, "epochs": {"value": 2},
            "data_dir": {"value": str(disk / "data")}, "run_dir": {"value": str(disk / "runs")}})
        first = agent(workdir, store)
        _, stderr = first.communicate(timeout=200)
        assert first.returncode == 0, stderr
        cache = disk / "data" / "cache"
        assert f"note: dataset='digits' not cached in {cache} (No space left on device)" \
            in stderr and "Traceback" not in stderr, stderr
        (run,) = store.runs()
        assert run.state == "finished" and [h["epoch"] for h in run.history] == [1, 2]
        assert list(cache.iterdir()) == []  # no partial cache file


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_launch_whose_store_fills_mid_run_ends_in_the_agents_one_line(workdir):
    """As above, through the launcher (its one agent in its process): after the agent's line,
    the launcher's repair of the runs its agent left running wrote to the full store and
    said so in a second error line; the agent's line already says they stay running."""
    import yaml

    from test_local_sweeps import launched_store

    with tmpfs(workdir / "small", "4m") as place:
        parameters = {**RUN, "epochs": {"value": 20}, "run_dir": {"value": str(workdir / "r")},
                      "data_dir": {"value": str(workdir / "d")}}
        (place / "s.yaml").write_text(yaml.safe_dump({
            "program": "agent/train.py", "method": "grid", "parameters": {
                "dataset": {"value": "digits"}, **parameters}}))
        launcher = subprocess.Popen([sys.executable, "-m", "agent.launch", "s.yaml",
                                     "--heartbeat", "0.2"], cwd=place,
                                    env=subprocess_env(OMP_NUM_THREADS="1"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = wait_for(lambda: launched_store(place), 60, "the sweep")
        wait_for(lambda: any(r.epoch >= 1 for r in store.runs()), 120, "a first epoch")
        with open(place / "filler", "wb") as handle:  # the rest of the disk
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
        _, stderr = launcher.communicate(timeout=120)
        assert launcher.returncode == 2
        line = one_error_line(stderr)
        assert line.startswith(f"error: {store.path.relative_to(place)}: the sweep store "
                               "cannot be used ("), line
        assert [r.state for r in store.runs()] == ["running"]
        (place / "filler").unlink()
        store.close()


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,sinks", [("full", ["wandb"]), ("full", ["tensorboard", "wandb"]),
                                        ("quota", ["tensorboard", "wandb"])])
def test_a_disk_filling_under_the_wandb_and_tensorboard_sinks_stops_the_run_with_nothing_lost(
        workdir, kind, sinks):
    """W&B (offline) and TensorBoard writing to a 3 MB disk with 1.2 MB left: wandb's service
    dropped the run's records once the disk was full without a word (its own debug log said
    so), the run trained on and ended `finished` with a W&B run missing its last epochs, and
    TensorBoard's writer thread died with a traceback, the trial's line naming no file. Now
    the sinks stop the run at an epoch's end while the disk still holds what they queued: one
    line naming the file, exit 2, the run preempted at its last checkpoint with every epoch
    it trained in both sinks, and the next agent, on a disk with room again, finishes it;
    each epoch is in each sink once. The same under a disk quota (EDQUOT) on a disk with
    room to spare: the sinks judged the room by the disk's free space alone (statvfs, which
    knows no quota), so wandb's records past the quota were dropped as unsaid as on a full
    disk; the room a sink wants is now set aside for a moment to see that it is there."""
    from agent.report.curves import tensorboard_scalars
    from util.wandb_offline import find_runs

    with small_disk(kind, workdir / "disk", "3m") as (disk, make_room):
        store = make_sweep(workdir, "sinks", {
            **RUN, "hidden": {"value": 16}, "optimizer": {"value": "sgd"}, "lr": {"value": 0.05},
            "batch_size": {"value": 8}, "log_interval": {"value": 1}, "epochs": {"value": 12},
            "histograms": {"value": True}, "sinks": {"value": sinks},
            "run_dir": {"value": str(disk / "runs")}, "log_dir": {"value": str(disk / "logs")}})
        filler = disk / "filler"
        # 1.2 MB left; 1.6 MB under the quota, which counts the file system's own records
        # (btrfs's tree blocks, reserved until its next commit) as well
        left = {"full": 1200, "quota": 1600}[kind] * 2**10
        filler.write_bytes(b"\0" * (3 * 2**20 - left))

        def agent_on_disk() -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop",
                                   str(store.directory), "--heartbeat", "0.2"], cwd=workdir,
                                  env=subprocess_env(OMP_NUM_THREADS="1", WANDB_DIR=str(disk)),
                                  capture_output=True, text=True, timeout=250)

        first = agent_on_disk()
        assert first.returncode == 2, first.stderr[-3000:]
        line = one_error_line(first.stderr)
        assert "Exception in thread" not in first.stderr, first.stderr
        (run,) = store.runs()
        room = {"full": "on its disk", "quota": "within its disk quota"}[kind]
        assert line.startswith(f"error: {disk}/") and f"less than 1 MiB left {room} for" \
            in line and f"run(s) {run.id} left preempted" in line, line
        assert run.state == "preempted" and 1 <= run.epoch < 12, (run.state, run.epoch)
        (part,) = find_runs(disk / "wandb")  # closed, with every epoch the run trained
        assert part.exit_code is not None
        assert [row["epoch"] for row in part.history if "val/acc" in row] == \
            list(range(1, run.epoch + 1))

        filler.unlink()
        make_room()  # a quota's use drops with the filler only at its next commit
        second = agent_on_disk()
        assert second.returncode == 0, second.stderr[-3000:]
        (done,) = store.runs()
        assert done.state == "finished" and [h["epoch"] for h in done.history] == \
            list(range(1, 13))
        parts = sorted(find_runs(disk / "wandb"), key=lambda p: p.path)
        assert [row["epoch"] for p in parts for row in p.history if "val/acc" in row] == \
            list(range(1, 13))
        if "tensorboard" in sinks:
            logs = disk / "logs" / store.sweep().group / run.id  # both starts' event files
            steps = [step for step, _ in tensorboard_scalars(logs, "val/acc")]
            assert len(steps) == len(set(steps)) == 12, steps


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_tensorboard_file_the_disk_refuses_is_one_line_naming_it(workdir):
    """TensorBoard's event file past the file-size limit: its writer thread died with a
    traceback, the trial's line said "File too large" naming no file, and a second line said
    that the sink could not finish. Now one line names the event file, exit 2, and the run
    resumes from its checkpoint once the file fits."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    command = [sys.executable, "-m", "agent.train", "--dataset=digits", "--model=dense",
               "--hidden=16", "--batch_size=32", "--epochs=30", "--lr=0.01",
               "--sinks=tensorboard", "--histograms=true", "--run_id=big",
               f"--data_dir={workdir / 'data'}", f"--run_dir={workdir / 'runs'}",
               f"--log_dir={workdir / 'logs'}"]
    first = subprocess.run(command, cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=150, preexec_fn=limit)
    assert first.returncode == 2, first.stderr
    (events,) = (workdir / "logs" / "default" / "big").glob("events.out.tfevents.*")
    assert first.stderr.splitlines()[-1] == (
        f"error: {events}: File too large; the last whole epoch's checkpoint stands: run it "
        "again with the same --run_id to resume"), first.stderr
    # the only other line: the dataset's cache, too large as well, is not kept
    assert len(first.stderr.splitlines()) == 2 and "Traceback" not in first.stderr, \
        first.stderr
    again = subprocess.run(command, cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr


def test_a_copy_that_does_not_fit_is_named_by_its_destination(tmp_path):
    """A copy past the file-size limit (shutil.copyfile, and so a move across disks, as wandb
    moves a table's file from /tmp into the run's folder) raises an OSError naming its source
    first: the one line named the file in /tmp, which fits, rather than the one that did not."""
    source, target = tmp_path / "table.json", tmp_path / "run" / "table.json"
    source.write_bytes(b"x" * 200_000)
    target.parent.mkdir()
    code = ("import resource, shutil, signal, sys\n"
            "from util.errors import storage_problem\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
            "try:\n"
            "    shutil.copyfile(sys.argv[1], sys.argv[2])\n"
            "except OSError as error:\n"
            "    print(storage_problem(error))\n")
    done = subprocess.run([sys.executable, "-c", code, str(source), str(target)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"{target}: File too large", done.stdout + done.stderr


@pytest.mark.timeout(180)
def test_a_sink_short_of_room_stops_the_epoch_before_any_sink_has_logged_it(workdir,
                                                                            monkeypatch):
    """Each sink judged the room for an epoch's records as it logged them: TensorBoard logged
    the epoch, the sink after it found too little room, and the run, preempted at the epoch
    before, logged that epoch in TensorBoard a second time once resumed. Every sink of a run
    is now asked before any logs the epoch: a sink short of room at the second epoch leaves
    TensorBoard's events at the first, and the resumed run logs each epoch once."""
    from agent.report.curves import tensorboard_scalars
    from agent.trial import sinks
    from agent.trial.loop import train

    room = {"checks": 0, "refused_at": 2}

    class RecordsOnAFullDisk(sinks.Sink):  # W&B's room check, as on a disk that fills
        def ensure_room(self) -> None:
            room["checks"] += 1
            if room["checks"] == room["refused_at"]:
                raise OSError(errno.ENOSPC, "less than 1 MiB left on its disk for W&B's run "
                              "records", str(workdir / "records"))

    monkeypatch.setitem(sinks.SINKS, "wandb", RecordsOnAFullDisk)
    config = {"dataset": "digits", "model": "dense", "hidden": 16, "epochs": 3,
              "batch_size": 64, "sinks": ["tensorboard", "wandb"], "run_id": "room",
              "data_dir": str(workdir / "data"), "run_dir": str(workdir / "runs"),
              "log_dir": str(workdir / "logs")}
    with pytest.raises(OSError, match="less than 1 MiB left"):
        train(config)
    logs = workdir / "logs" / "default" / "room"
    assert len(tensorboard_scalars(logs, "val/acc")) == 1  # the first epoch's, only
    room["refused_at"] = None
    train(config)  # resumed from the first epoch's checkpoint
    steps = [step for step, _ in tensorboard_scalars(logs, "val/acc")]
    assert len(steps) == len(set(steps)) == 3, steps
