"""A PBS job's copy of a local sweep store (templates/pbs.sh): taken at the job's start with
SQLite's online backup, and its ended runs merged back into the sweep's own store row by row,
every MERGE_EVERY_S seconds (jobs.py) while the job runs and once more when it ends.

Merging rather than copying the file back: a kill (qdel, the walltime) within PBS's short grace
before SIGKILL loses no run that had ended, a job killed outright (a lost node) leaves the runs
it started to be repeated from their checkpoints, and two jobs on one sweep keep each other's
runs.
One job at a time works on a sweep: a job records itself in the sweep's directory (HOLDER,
touched at every merge, removed by its last), and a job that finds another job's record waits
for that job to end (`qstat`'s word, or its record silent past HOLDER_SILENT_S) before it takes
its copy; on separate copies both would train the same configurations.
`python -m agent.cluster.store_copy take ORIGIN COPY BASE [--job ID]` / `merge COPY BASE ORIGIN`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from agent.cluster.jobs import MERGE_EVERY_S
from agent.sweep.pack_share import carry_sizes
from agent.sweep.store import (
    SCHEMA_VERSION,
    agents_heartbeat_settings,
    remove_heartbeat_settings,
    write_heartbeat_settings,
)
from util.errors import UserError, exit_on_user_error, one_line

# What a job merges: the runs it ended, and those it left to run (a crashed run's repeat
# that no agent of the job claimed, unless the sweep's store has a repeat of that run
# already: `_merges`), and the runs it started that the sweep's store lacks, while they run
# (`_merges`). A run the sweep's store had before (pending, preempted) stays as that store
# has it while the job runs it, so a job killed outright leaves it for the next job to
# resume from its checkpoint; a run new to it is merged as running, with its agent's
# heartbeat, so that a job killed outright leaves it for the next job to find crashed (its
# heartbeat stale) and repeat from its last checkpoint (checkpoints are on shared storage).
MERGED = ("finished", "failed", "stopped", "preempted", "crashed", "pending", "running")
# How far a run has got, for two jobs that both changed one run: a final state beats an
# interrupted one, then the later epoch wins.
_PROGRESS = {"pending": 0, "running": 1, "crashed": 2, "preempted": 2, "finished": 3,
             "failed": 3, "stopped": 3}
ENDED = ("finished", "failed", "stopped", "preempted", "crashed")

# The tables of a sweep store (agent/sweep/store.py TABLES) and what a merge does with each:
# a table the merge does not know is refused, not left behind in the job's copy unsaid.
TABLES = {"sweep": "the same in every copy (a sweep's config never changes)",
          "runs": "merged run by run", "history": "merged with its run"}
Rows = dict[str, tuple[dict, tuple]]  # run id -> (its runs row, its history rows)


# The record of the job working on a sweep, in the sweep's directory: "<job id> <host>
# <token>", touched at every merge. Silent this long, its job is taken to be gone (a node
# lost: no last merge removed it): several merge intervals and a merge's wait for the lock.
HOLDER = "pbs-job"
HOLDER_SILENT_S = 4 * MERGE_EVERY_S + 60
HOLDER_POLL_S = 15  # how often a job waiting for another looks again
UNMERGED = "unmerged"  # a record's 4th word: its job's last merge failed (touch_holder)


def _holder_token(base: Path) -> Path:
    """The file, beside the job's `base`, that keeps the token of its record (HOLDER)."""
    return base.with_suffix(".holder")


def _pbs_job_ended(job_id: str) -> bool:
    """Whether PBS says job `job_id` has ended (`qstat -x -f`: job_state F, or the job
    unknown or finished); False where qstat cannot tell (not found, another answer)."""
    qstat = shutil.which("qstat")
    if not qstat or not job_id:
        return False
    try:
        answer = subprocess.run([qstat, "-x", "-f", job_id], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    text = answer.stdout + answer.stderr
    if "Unknown Job Id" in text or "has finished" in text:
        return True
    return answer.returncode == 0 and any(
        line.split("=", 1)[1].strip() == "F" for line in text.splitlines()
        if line.strip().startswith("job_state") and "=" in line)


def wait_for_other_job(origin: Path, base: Path, job_id: str,
                       poll_s: float = HOLDER_POLL_S) -> None:
    """Record this job (`job_id`, this host, a fresh token kept beside `base`) as the one
    working on the sweep of store `origin`, first waiting, said in one line, while another
    job's record is there: until that job removes it (its last merge), PBS says it ended, or
    it is silent past HOLDER_SILENT_S (a record of this job's own id is an earlier run of
    it, rerun by PBS: taken over). A record of a job whose last merge failed is UserError,
    naming the merge that frees the sweep. Where qstat is not at hand (inside a container), silence
    is the only word. Two jobs starting at once: both write, the last one
    read stands (a record is written whole, then renamed into place)."""
    holder = origin.parent / HOLDER
    waited_for = None
    while True:
        try:
            text, age = holder.read_text(), time.time() - holder.stat().st_mtime
        except FileNotFoundError:
            text, age = "", 0.0
        record = text.split("\n", 1)[0].split()
        record += ["?"] * (2 - len(record)) if record else []  # a record cut short
        if record[3:4] == [UNMERGED]:
            raise UserError(f"{origin}: job {record[0]}'s last merge into the sweep's store "
                            "failed and its runs are not in it (this job would train them "
                            "again): merge them first, "
                            + " ".join(text.split("\n", 1)[1].split()))
        if not record or age > HOLDER_SILENT_S or (job_id and record[0] == job_id) or \
                _pbs_job_ended(record[0]):  # gone, silent, this job run again, or ended
            token = uuid.uuid4().hex
            temporary = holder.with_name(f"{HOLDER}.{token}")
            temporary.write_text(f"{job_id or '-'} {socket.gethostname()} {token}\n")
            os.replace(temporary, holder)
            time.sleep(1)  # a job taking over at the same moment: the last one wins
            if _held(holder, token):
                _holder_token(base).write_text(token)
                if waited_for:
                    print(f"sweep store: job {waited_for} has ended; this job goes on with "
                          "the sweep", file=sys.stderr, flush=True)
                return
            continue
        if waited_for != record[0]:
            print(f"sweep store: job {record[0]} (on {record[1]}) works on this sweep; this "
                  "job waits for it to end (one job at a time on a local sweep: on copies of "
                  "its store both would train the same configurations)", file=sys.stderr,
                  flush=True)
            waited_for = record[0]
        time.sleep(poll_s)


def _held(holder: Path, token: str) -> bool:
    try:
        return holder.read_text().split()[2:3] == [token]
    except (OSError, IndexError):
        return False


def touch_holder(origin: Path, base: Path, remove: bool = False,
                 unmerged: str | None = None) -> None:
    """This job's record (HOLDER) touched, removed (`remove`: its last merge is in), or
    marked as holding runs not merged (`unmerged`: where they are and the command that
    merges them; the next job's take refuses until that merge removes it), if it is still
    this job's; nothing where the job has none (taken without one)."""
    holder = origin.parent / HOLDER
    try:
        token = _holder_token(base).read_text().strip()
    except OSError:
        return
    if not _held(holder, token):
        return
    if remove:
        holder.unlink(missing_ok=True)
    elif unmerged:
        first = holder.read_text().splitlines()[0].split()[:3]
        temporary = holder.with_name(f"{HOLDER}.{token}")
        temporary.write_text(" ".join([*first, UNMERGED]) + f"\n{unmerged}\n")
        os.replace(temporary, holder)
    else:
        os.utime(holder)


def take_copy(origin: Path, copy: Path, base: Path, wait_s: float = 60) -> None:
    """The sweep's store `origin` as one consistent snapshot (whatever another job merges
    meanwhile) in `copy`, the job's working store, and in `base`, what the job started
    from (`merge_back` compares with it); the pack sizes settled in the sweep's folder go
    beside `copy` (--pack auto's agents of the job take them rather than measure again)."""
    db = _open_origin(origin, wait_s)
    try:
        for target in (copy, base):
            with sqlite3.connect(target) as out:
                db.backup(out)
            out.close()
    finally:
        db.close()
    carry_sizes(origin.parent, copy.parent)


def _rows(db: sqlite3.Connection) -> Rows:
    db.row_factory = sqlite3.Row
    unknown = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE "
                                              "type='table'")} - set(TABLES)
    if unknown:
        raise UserError(f"a sweep store with table(s) {', '.join(sorted(unknown))} that this "
                        f"merge does not know (it knows {', '.join(TABLES)}); merge with the "
                        "code that made the store")
    history: dict[str, list[tuple]] = {}
    for row in db.execute("SELECT run_id, epoch, metrics FROM history ORDER BY run_id, epoch"):
        history.setdefault(row["run_id"], []).append(tuple(row))
    return {row["id"]: (dict(row), tuple(history.get(row["id"], [])))
            for row in db.execute("SELECT * FROM runs ORDER BY seq")}


def _same(a: tuple[dict, tuple] | None, b: tuple[dict, tuple] | None) -> bool:
    """One run alike in both stores, whatever its place (`seq`) in each."""
    if a is None or b is None:
        return a is b
    return ({k: v for k, v in a[0].items() if k != "seq"} == {k: v for k, v in b[0].items()
                                                               if k != "seq"} and a[1] == b[1])


def _ahead(a: dict, b: dict) -> bool:
    """Whether run row `a` got further than `b`: a final state beats an interrupted one,
    then the later epoch, then (a run still running) the later heartbeat."""
    return (_PROGRESS[a["state"]], a["epoch"], a["heartbeat"] or 0) > (
        _PROGRESS[b["state"]], b["epoch"], b["heartbeat"] or 0)


def _merges(row: dict, theirs: Rows, found: Rows) -> bool:
    """Whether a run of the job goes into the sweep's store now. A running one only if it
    is new to that store (`found` lacks it: started by the job): one the store had is left
    as the store has it (preempted, pending) for the next job to resume. A pending one only
    if it is a crashed run's repeat the store has none of; another pending run is a proposal
    only (kept for --pack auto, or parked for a later pack): the store's engine proposes
    again while the sweep wants more, not past a run_cap or an end reached meanwhile. A
    second repeat of one crashed run would train its configuration twice."""
    if row["state"] == "running":
        return row["id"] not in found
    if row["state"] != "pending":
        return True
    return bool(row["requeued_from"]) and not any(
        other["requeued_from"] == row["requeued_from"] for other, _ in theirs.values())


def _repeated(row: dict, theirs: Rows) -> bool:
    """Whether the sweep's store holds run `row` crashed and a repeat of it: an agent found
    it silent (a merge that failed, or a job killed outright, left it running there) and
    repeats it from its checkpoint. A copy of it that did not end (preempted, still running)
    must not take its place: the next agent would resume it beside its repeat, and train its
    configuration twice."""
    return row["state"] == "crashed" and any(
        other["requeued_from"] == row["id"] for other, _ in theirs.values())


def _open_origin(path: Path, wait_s: float = 60) -> sqlite3.Connection:
    """The sweep's store, locked for this process alone until closed. Exclusive locking:
    SQLite then keeps WAL's index in this process's memory rather than in a shared -shm
    file, which a network file system (the cluster's home storage) does not keep coherent
    between hosts. It needs every other connection to the store closed (agent.status holds
    one for a moment): tried again for up to `wait_s` seconds, then UserError (one line:
    a local agent or launcher on the sweep holds its connection open while it runs)."""
    if not path.is_file():
        raise UserError(f"{path}: no sweep store there")
    deadline = time.monotonic() + wait_s
    while True:
        db = sqlite3.connect(path, timeout=wait_s, isolation_level=None)
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("BEGIN IMMEDIATE")  # takes the lock, and keeps it after COMMIT
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute("COMMIT")
            break
        except sqlite3.OperationalError as error:
            db.close()
            if "locked" not in str(error):
                raise
            if time.monotonic() > deadline:
                raise UserError(
                    f"{path}: still open in another process after {wait_s:g} s (an agent or "
                    "launcher on this sweep, or a program reading it); a PBS job takes and "
                    "merges the store only while no other process has it open") from None
            time.sleep(0.2)
    if version != SCHEMA_VERSION:
        db.close()
        raise UserError(f"{path}: a sweep store of schema version {version}, not "
                        f"{SCHEMA_VERSION}")
    return db


def merge_back(copy: Path, base: Path, origin: Path, wait_s: float = 60,
               every_s: float = MERGE_EVERY_S) -> list[str]:
    """Every run the job ended, left pending or started and still runs (in `copy`,
    differing from `base`; MERGED, `_merges`) written into the store `origin`, in one
    transaction; the ids written. A run new to `origin` is added after its runs; one
    `origin` still has as the job found it is replaced; one that another job changed
    meanwhile is replaced only by a run that got further (`_PROGRESS`, then the epoch), and
    one an agent found silent and repeated meanwhile only by one that ended (`_repeated`);
    a pending proposal the job dropped at metric.target goes (`_drop_dropped`).
    Running again writes nothing new: a merge cut short by a kill is rolled back by SQLite
    and done whole by the next one. The job's agents' heartbeat settings go beside `origin`
    with `every_s`, the time between merges (`merged_every_s`): a running run's heartbeat
    there is that much older than the job's agents judge it by (agent.status); the pack
    sizes its agents settled (--pack auto) go to the sweep's folder (pack_share.carry_sizes),
    for a later job on this node to take."""
    _merge_heartbeat_settings(copy.parent, origin.parent, every_s)
    with sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True, timeout=60) as db:
        mine = _rows(db)
    db.close()
    with sqlite3.connect(f"{base.resolve().as_uri()}?mode=ro", uri=True, timeout=60) as db:
        found = _rows(db)
    db.close()
    out = _open_origin(origin, wait_s)
    written = []
    try:
        out.execute("BEGIN IMMEDIATE")
        theirs = _rows(out)
        seq = max((row["seq"] for row, _ in theirs.values()), default=0)
        for run_id, (row, history) in mine.items():
            if row["state"] not in MERGED or _same(mine[run_id], found.get(run_id)) or \
                    not _merges(row, theirs, found):
                continue  # not touched by this job, resumed and running, or a proposal
            now = theirs.get(run_id)
            if _same(now, (row, history)):
                continue  # merged before
            if now is not None and not _same(now, found.get(run_id)) and \
                    not _ahead(row, now[0]):
                continue  # another job took this run as far or further
            if now is not None and _repeated(now[0], theirs) and \
                    _PROGRESS[row["state"]] < _PROGRESS["finished"]:
                continue  # found silent and repeated meanwhile: its repeat stands for it
            if now is None:
                seq += 1
            row = {**row, "seq": now[0]["seq"] if now is not None else seq}
            out.execute(f"INSERT OR REPLACE INTO runs ({', '.join(row)}) VALUES "
                        f"({', '.join('?' * len(row))})", tuple(row.values()))
            out.execute("DELETE FROM history WHERE run_id=?", (run_id,))
            out.executemany("INSERT INTO history (run_id, epoch, metrics) VALUES (?, ?, ?)",
                            history)
            theirs[run_id] = (row, history)
            if row["requeued_from"] and row["state"] != "pending":
                # a repeat this job trained: another job's repeat of the same run that is
                # still waiting would train its configuration a second time
                for other in [other_id for other_id, (other, _) in theirs.items()
                              if other["requeued_from"] == row["requeued_from"]
                              and other["state"] == "pending" and other_id != run_id]:
                    out.execute("DELETE FROM runs WHERE id=?", (other,))
                    del theirs[other]
            written.append(run_id)
        _drop_dropped(out, mine, found, theirs)
        out.execute("COMMIT")
    finally:
        out.close()
    carry_sizes(copy.parent, origin.parent)  # after the runs: it may wait for a measurement
    return written


def _drop_dropped(out: sqlite3.Connection, mine: Rows, found: Rows, theirs: Rows) -> None:
    """The pending runs the job dropped (in `found`, the job's start, and not in `mine`, its
    copy), removed from the sweep's store `out` where it still has them as the job found
    them: proposals parked by a claim and never started, which a claim drops once a run
    reached metric.target (controller.drop_unstarted_proposals); left in the sweep's store,
    they read as runs still to come. The job deletes no other run."""
    for run_id, (row, _) in found.items():
        if run_id not in mine and row["state"] == "pending" and not row["requeued_from"] \
                and row["started"] is None and _same(theirs.get(run_id), found[run_id]):
            out.execute("DELETE FROM runs WHERE id=?", (run_id,))
            del theirs[run_id]


def _merge_heartbeat_settings(job: Path, sweep: Path, every_s: float) -> None:
    """The heartbeat settings of the job's agents (each its own file, in the folder of the
    job's copy) into the sweep's folder with the merges' cadence; unchanged ones are not
    written again. Those an earlier merge of this job brought whose agent has ended since
    (it removed its own) go as well: a job leaves none behind."""
    marker = f"{socket.gethostname()}:{job.resolve()}"
    agents = agents_heartbeat_settings(job)
    there = agents_heartbeat_settings(sweep)
    for owner, settings in agents.items():
        settings = {**settings, "merged_every_s": float(every_s)}
        if there.get(owner) != settings:
            write_heartbeat_settings(sweep, owner, settings, merged_from=marker)
    for owner in agents_heartbeat_settings(sweep, merged_from=marker):
        if owner not in agents:
            remove_heartbeat_settings(sweep, owner)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.cluster.store_copy",
                                     description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    take = steps.add_parser("take", help="ORIGIN's store to COPY and BASE")
    merge = steps.add_parser("merge", help="the runs COPY ended since BASE into ORIGIN")
    for step, names in ((take, ("origin", "copy", "base")), (merge, ("copy", "base", "origin"))):
        for name in names:
            step.add_argument(name, type=Path)
    merge.add_argument("--every", type=float, metavar="S", help="merge every S seconds "
                       "until stopped (SIGTERM), first after S")
    take.add_argument("--job", metavar="ID", help="this job's id (PBS_JOBID): record it as "
                      "the job working on the sweep, first waiting for another one to end")
    for step in (take, merge):
        step.add_argument("--wait", type=float, default=60, metavar="S", help="seconds to "
                          "wait for other processes to close ORIGIN (default 60)")
    args = parser.parse_args(argv)
    if args.step == "take":
        if args.job is not None:
            wait_for_other_job(args.origin, args.base, args.job)
        take_copy(args.origin, args.copy, args.base, args.wait)
        return 0
    while args.every:
        time.sleep(args.every)
        touch_holder(args.origin, args.base)
        try:
            merge_once(args)
        except (UserError, sqlite3.Error) as error:  # the final merge reports what stays
            print(f"sweep store: not merged now ({one_line(error)})", file=sys.stderr)
    command = (f"python -m agent.cluster.store_copy merge {args.copy} {args.base} "
               f"{args.origin}")
    try:
        merge_once(args)
    except (UserError, sqlite3.Error) as error:
        # the next job must not take the sweep without this job's runs: it would train
        # their configurations again
        touch_holder(args.origin, args.base, unmerged=f"on {socket.gethostname()}: {command}")
        raise UserError(f"sweep store not merged ({one_line(error)}); this job's runs stay in "
                        f"{args.copy}: merge them once the store is free with {command}"
                        ) from None
    touch_holder(args.origin, args.base, remove=True)  # the sweep is free for the next job
    return 0


def merge_once(args: argparse.Namespace) -> None:
    written = set(merge_back(args.copy, args.base, args.origin, args.wait,
                             args.every or MERGE_EVERY_S))
    with sqlite3.connect(f"{args.copy.resolve().as_uri()}?mode=ro", uri=True,
                         timeout=60) as db:
        ended = [run_id for run_id, state in db.execute("SELECT id, state FROM runs")
                 if run_id in written and state in ENDED]
    db.close()
    if ended:  # the epochs of running runs go over every time, unsaid
        print(f"sweep store: {len(ended)} ended run(s) of this job merged into {args.origin}",
              flush=True)


if __name__ == "__main__":
    raise SystemExit(exit_on_user_error(main))
