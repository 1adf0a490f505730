"""The local sweep store: one SQLite file (WAL) per sweep, shared by the agents of one machine.

It holds the sweep (`Sweep`) and its runs (`Run`: config, state, owner, heartbeat, per-epoch
history, summary). The contract, in the spirit of optuna's storages, is what
tests/test_store_contract.py checks against every backend: typed runs; every agent write
guarded by owner and `state='running'`, reporting whether it took; a schema version; claims
as one write-locked transaction (`SweepStore.transaction`). What to run next is decided
elsewhere (agent/sweep/controller.py); this module only stores.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from agent.ids import path_safe
from agent.params import MAX_NAME
from util.disk_room import room_refused
from util.errors import UserError

T = TypeVar("T")

STORE_NAME = "sweep.db"
SWEEPS_DIR = Path("data") / "sweeps"
STATES = ("pending", "running", "finished", "failed", "crashed", "preempted", "stopped")
# What an agent may turn its running run into; `crashed` is the controller's verdict only.
AGENT_END_STATES = ("finished", "stopped", "failed", "preempted")
# 2: the `pack` column (runs claimed together as one packed trial). Stores made before had
# user_version 0 and no such column.
SCHEMA_VERSION = 2

TABLES = (
    """CREATE TABLE sweep (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL, created REAL NOT NULL)""",
    """CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,            -- order of creation
        config TEXT NOT NULL,            -- the parameters as a JSON object
        state TEXT NOT NULL,
        owner TEXT,                      -- the agent running it (host:pid)
        heartbeat REAL,
        requeued_from TEXT,              -- a crashed run this one repeats
        epoch INTEGER NOT NULL DEFAULT 0,
        summary TEXT,
        error TEXT,
        created REAL NOT NULL, started REAL, ended REAL,
        pack TEXT)                       -- shared by the runs claimed as one packed trial""",
    """CREATE TABLE history (
        run_id TEXT NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
        PRIMARY KEY (run_id, epoch))""",
)


class StoreError(UserError):
    """The store file cannot be read or written now (a read-only file or directory, a full
    disk, a lock held past the timeout, a damaged file): one line naming the file and the
    cause. An agent stops on it; its running runs stay `running` until the next agent finds
    them silent and repairs them (crashed, re-queued)."""


@contextmanager
def _store_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:  # OperationalError (read-only, full, locked) and the rest
        raise StoreError(f"{path}: the sweep store cannot be used "
                         f"({error}{_why_unwritable(path, error)})") from None


# SQLite's codes for a failed read or write of its files, and for a file it could not open
# or create (its -wal and -shm files beside the store); extended codes add to them
SQLITE_IOERR, SQLITE_CANTOPEN = 10, 14
# A write refused past a disk quota (EDQUOT) is to SQLite an error like any other, "disk I/O
# error" or "unable to open database file" (only ENOSPC is "database or disk is full"): the
# room left is asked of the disk.
QUOTA_PROBE_BYTES = 64 << 10


def _why_unwritable(path: Path, error: sqlite3.Error | None = None) -> str:
    """`; its directory is read-only` (or the file is) when that is why SQLite failed, and
    after an I/O error or a file it could not open `; its disk quota is exceeded` (or `; its
    disk is full`) when its folder has not QUOTA_PROBE_BYTES of room left (util.disk_room)."""
    for where, what in ((path.parent, "its directory"), (path, "the file")):
        if where.exists() and not os.access(where, os.W_OK):
            return f"; {what} is read-only"
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    if code in (SQLITE_IOERR, SQLITE_CANTOPEN) and path.parent.is_dir():
        refused = room_refused(path.parent, QUOTA_PROBE_BYTES)
        if refused is not None:
            return "; its disk quota is exceeded" if refused == errno.EDQUOT else \
                "; its disk is full"
    return ""


@dataclass(frozen=True)
class Sweep:
    id: str
    name: str
    config: dict  # the sweep YAML as a dict
    created: float  # Unix time, seconds

    @property
    def group(self) -> str:
        return sweep_group(self.name, self.id)


def store_paths(directory: str | os.PathLike = SWEEPS_DIR) -> list[Path]:
    """The sweep.db of every local sweep in `directory` (data/sweeps), by id; a sweep still
    being made (create_store's hidden .<id>.partial folder) is not one yet."""
    return sorted(path for path in Path(directory).glob(f"*/{STORE_NAME}")
                  if not path.parent.name.startswith("."))


def sweep_group(name: str, sweep_id: str) -> str:
    """A local sweep's runs' group (W&B's group, the TensorBoard folder data/logs/<group>/):
    name and id, so that two sweeps from one YAML stay apart; the name is cut so that the
    group stays within W&B's limit on a group's length (MAX_NAME)."""
    return f"{name[:max(0, MAX_NAME - len(sweep_id) - 1)]}-{sweep_id}"


@dataclass(frozen=True)
class Run:
    """One run of a sweep as stored. Times are Unix seconds; `history` has one row of
    metrics per completed epoch; `started` is its latest start (a resumed run's resumption);
    `pack` is the id shared by runs claimed as one packed trial, kept when a member resumes
    alone or in another pack (None for a run first claimed alone)."""

    id: str
    seq: int
    config: dict
    state: str
    owner: str | None = None
    heartbeat: float | None = None
    requeued_from: str | None = None
    epoch: int = 0
    summary: dict | None = None
    error: str | None = None
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    history: list[dict] = field(default_factory=list)
    pack: str | None = None


def _run_of(row: sqlite3.Row, history: list[dict]) -> Run:
    return Run(id=row["id"], seq=row["seq"], config=json.loads(row["config"]),
               state=row["state"], owner=row["owner"], heartbeat=row["heartbeat"],
               requeued_from=row["requeued_from"], epoch=row["epoch"],
               summary=json.loads(row["summary"]) if row["summary"] else None,
               error=row["error"], created=row["created"], started=row["started"],
               ended=row["ended"], history=history, pack=row["pack"])


def _read_runs(db: sqlite3.Connection) -> list[Run]:
    history: dict[str, list[dict]] = {}
    for h in db.execute("SELECT run_id, metrics FROM history ORDER BY run_id, epoch"):
        history.setdefault(h["run_id"], []).append(json.loads(h["metrics"]))
    return [_run_of(row, history.get(row["id"], []))
            for row in db.execute("SELECT * FROM runs ORDER BY seq")]


def _read_sweep(db: sqlite3.Connection) -> Sweep:
    row = db.execute("SELECT * FROM sweep").fetchone()
    return Sweep(row["id"], row["name"], json.loads(row["config"]), row["created"])


class StoreTransaction:
    """The controller's writes, inside one write-locked transaction (see `claim` in
    agent/sweep/controller.py): reads see every earlier write of the same transaction."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def sweep(self) -> Sweep:
        return _read_sweep(self.db)

    def runs(self) -> list[Run]:
        return _read_runs(self.db)

    def insert_run(self, run_id: str, config: dict, state: str, owner: str | None = None,
                   requeued_from: str | None = None, pack: str | None = None) -> None:
        """A new run, `pending` (no owner) or `running` (owned by `owner`)."""
        if state not in ("pending", "running") or (state == "running") != (owner is not None):
            raise ValueError(f"a new run is pending without owner or running with one, "
                             f"not {state!r} with owner {owner!r}")
        seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
        now = time.time()
        running = now if state == "running" else None
        self.db.execute(
            "INSERT INTO runs (id, seq, config, state, owner, heartbeat, requeued_from, created,"
            " started, pack) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, seq, json.dumps(config), state, owner, running, requeued_from, now,
             running, pack))

    def drop_pending(self, run_id: str) -> None:
        """Remove a pending run that never started (a proposal parked by a claim, dropped
        once the sweep's metric.target is reached): it has no history, no files."""
        self.db.execute("DELETE FROM runs WHERE id = ? AND state = 'pending' AND started IS "
                        "NULL AND requeued_from IS NULL", (run_id,))

    def insert_repeat(self, run_id: str, crashed: Run, epoch: int = 0) -> None:
        """A pending run `run_id` repeating the crashed run `crashed` (its config;
        requeued_from). From scratch when `epoch` is 0; else it continues from the crashed
        run's checkpoint of that epoch: it starts with the crashed run's history up to that
        epoch, and `epoch` says where its agent resumes it."""
        self.insert_run(run_id, crashed.config, "pending", requeued_from=crashed.id)
        if epoch:
            self.db.execute("UPDATE runs SET epoch=? WHERE id=?", (epoch, run_id))
            self.db.execute("INSERT INTO history SELECT ?, epoch, metrics FROM history "
                            "WHERE run_id=? AND epoch<=?", (run_id, crashed.id, epoch))

    def start(self, run_id: str, owner: str, pack: str | None = None) -> None:
        """A pending or preempted run becomes `owner`'s running run."""
        now = time.time()
        taken = self.db.execute(
            "UPDATE runs SET state='running', owner=?, heartbeat=?, started=?,"
            " pack=COALESCE(pack, ?)"
            " WHERE id=? AND state IN ('pending', 'preempted')",
            (owner, now, now, pack, run_id)).rowcount
        if not taken:
            raise ValueError(f"run {run_id} is not pending or preempted")

    def mark_crashed(self, run_id: str) -> None:
        """A running run whose agent went silent is `crashed` (nothing else is)."""
        self.db.execute("UPDATE runs SET state='crashed', ended=? WHERE id=? AND state='running'",
                        (time.time(), run_id))


class SweepStore:
    """One sweep's store file. Opening it checks its schema version; `create=True` makes
    the schema in a new file. Raises UserError (one line naming the file) for a file that
    is not a sweep store or has another schema version."""

    def __init__(self, path: str | os.PathLike, create: bool = False, read_only: bool = False):
        """`read_only` (status, report): opened for reading only, so that a sweep on
        read-only storage (an archive, a shared copy) can be read; writing then fails."""
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"{self.path}: no sweep store there")
        # isolation_level=None: we issue BEGIN ourselves, so a claim is one write-locked
        # transaction across agent processes.
        with _store_errors(self.path):
            self.db = self._connect(read_only)
        self.db.row_factory = sqlite3.Row
        try:
            self._check_schema(create)
            if not read_only:
                # WAL: readers (status, report) never block the agents' writes. Set only once
                # the schema is ours, so that a refused store is left exactly as it was.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as error:  # read-only, full, locked: not the file's fault
            self.db.close()
            raise StoreError(f"{self.path}: the sweep store cannot be used "
                             f"({error}{_why_unwritable(self.path, error)})") from None
        except sqlite3.DatabaseError as error:
            self.db.close()
            raise UserError(f"{self.path}: not a sweep store ({error})") from None
        except UserError:
            self.db.close()
            raise

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        if not read_only:
            return sqlite3.connect(self.path, timeout=60, isolation_level=None)
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # WAL reading needs the -shm file, which a read-only directory cannot hold: read
            # the file as it is (nothing can write it there either)
            db.close()
            return sqlite3.connect(f"{uri}&immutable=1", uri=True, timeout=60,
                                   isolation_level=None)

    def _check_schema(self, create: bool) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = self.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'"
                                 ).fetchone()[0]
        if create and not tables and version == 0:
            with self._write() as db:
                for table in TABLES:
                    db.execute(table)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        if not tables:
            raise UserError(f"{self.path}: not a sweep store (an empty database)")
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{self.path}: a sweep store of schema version {version}, but this agent reads "
                f"version {SCHEMA_VERSION} only; finish or read that sweep with the code that "
                "made it, or start the sweep anew from its YAML (./run_sweep.sh sweeps/X.yaml)")
        if not create and self.db.execute("SELECT COUNT(*) FROM sweep").fetchone()[0] != 1:
            raise UserError(f"{self.path}: not a sweep store (it holds no sweep: its creation "
                            "was cut short); remove its directory and create the sweep again")

    @property
    def directory(self) -> Path:
        return self.path.parent

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with _store_errors(self.path):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:  # a full disk can end it already
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # One read transaction: the runs and their history come from the same snapshot.
        with _store_errors(self.path):
            self.db.execute("BEGIN")
            try:
                yield self.db
            finally:
                if self.db.in_transaction:
                    self.db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """One write-locked transaction for the controller: no other agent claims,
        repairs or writes until it ends; an exception inside rolls everything back."""
        with self._write() as db:
            yield StoreTransaction(db)

    # --- reading ---------------------------------------------------------------------------
    def sweep(self) -> Sweep:
        with self._read() as db:
            return _read_sweep(db)

    def runs(self) -> list[Run]:
        """Every run in order of creation, with its history."""
        with self._read() as db:
            return _read_runs(db)

    def run(self, run_id: str) -> Run:
        """One run; KeyError when the store has none of that id."""
        for run in self.runs():
            if run.id == run_id:
                return run
        raise KeyError(run_id)

    # --- an agent's writes: each takes only on `owner`'s running run ------------------------
    def heartbeat(self, run_id: str, owner: str) -> bool:
        """Mark `owner`'s running run alive now; False when the run is not (or no longer)
        `owner`'s running run (it was declared crashed and re-queued, or finished)."""
        with self._write() as db:
            return db.execute("UPDATE runs SET heartbeat=? WHERE id=? AND owner=? AND "
                              "state='running'", (time.time(), run_id, owner)).rowcount == 1

    def record_epoch(self, run_id: str, owner: str, epoch: int, metrics: dict,
                     earlier: list[dict] = ()) -> bool:
        """Store epoch `epoch` (1-based) of `owner`'s running run, and count it as a
        heartbeat; False, and nothing stored, when the run is not `owner`'s running run.
        `earlier`: rows of epochs before it that the store may lack (each with its "epoch"),
        stored with it: a run resumed from a checkpoint written after the store's last epoch
        (a kill -9 between the two) brings that epoch's row in its checkpoint. Rows past
        `epoch` are removed: they are an earlier start's that got further than the checkpoint
        this one resumed from (both checkpoint files damaged, a pack resumed at the newest
        epoch all its members have), and the run's history is what this start trained."""
        rows = [(row["epoch"], row) for row in earlier] + [(epoch, metrics)]
        with self._write() as db:
            took = db.execute("UPDATE runs SET epoch=?, heartbeat=? WHERE id=? AND owner=? AND "
                              "state='running'", (epoch, time.time(), run_id, owner)).rowcount
            if took:
                db.execute("DELETE FROM history WHERE run_id=? AND epoch>?", (run_id, epoch))
                db.executemany("INSERT OR REPLACE INTO history VALUES (?, ?, ?)",
                               [(run_id, n, json.dumps(row, default=float)) for n, row in rows])
        return took == 1

    def forget_epochs(self, run_id: str, owner: str, after: int = 0) -> bool:
        """`owner`'s running run goes on from epoch `after`: its history past it is cleared
        and its epoch is `after` (0: it starts over from scratch, as a crashed run's repeat
        that started with the crashed run's epochs, whose checkpoint is gone; a pack member
        sent back with a checkpoint of an earlier epoch than the store's). False, and nothing
        changed, when the run is not `owner`'s running run."""
        with self._write() as db:
            took = db.execute("UPDATE runs SET epoch=? WHERE id=? AND owner=? AND "
                              "state='running'", (after, run_id, owner)).rowcount
            if took:
                db.execute("DELETE FROM history WHERE run_id=? AND epoch>?", (run_id, after))
        return took == 1

    def finish(self, run_id: str, owner: str, state: str, summary: dict | None = None,
               error: str | None = None) -> bool:
        """End `owner`'s running run as `state` (one of AGENT_END_STATES) with its summary
        or error line; False, and nothing changed, when it is not `owner`'s running run."""
        if state not in AGENT_END_STATES:
            raise ValueError(f"an agent ends a run as one of {AGENT_END_STATES}, not {state!r}")
        summary_json = None if summary is None else json.dumps(summary, default=float)
        with self._write() as db:
            took = db.execute(
                "UPDATE runs SET state=?, ended=?, summary=COALESCE(?, summary),"
                " error=COALESCE(?, error) WHERE id=? AND owner=? AND state='running'",
                (state, time.time(), summary_json, error, run_id, owner)).rowcount == 1
        if took:
            self._write_through()
        return took

    def _write_through(self) -> None:
        """Copy what the write-ahead log holds into sweep.db itself (a passive checkpoint:
        it waits for no one). SQLite does so only every 1000 pages or when the last
        connection closes, so an agent killed (SIGKILL, OOM, a node lost) left a small
        sweep's every run in sweep.db-wal alone, and a copy of sweep.db, the file the
        launcher names as the results, held none of them. Done as each run ends: sweep.db
        then holds every ended run. Best effort: what it cannot copy now stays in the log,
        which SQLite reads as part of the store."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass


# In a sweep's folder, beside its store, one file per agent: how often the agent beats and
# after what silence a run of its counts as crashed (--heartbeat, --heartbeat-timeout), and,
# where a PBS job's agents beat into a copy of the store in scratch, how often the job merges
# its runs into the store here (agent/cluster/store_copy.py). agent.status judges a running
# run's last heartbeat by its own agent's. A file rather than a column: the store's schema
# stays as it is, and an agent whose folder is read-only (a store on an archive) writes none.
# One file per agent, not one for all: agents of one folder (--agents N, jobs on several
# nodes, a PBS job's merges beside a local agent) each wrote the one file and the last one
# stood for all, so a live run of an agent beating less often was shown silent.
HEARTBEATS_DIR = ".heartbeats"  # <owner>.json: {"owner": host:pid, HEARTBEAT_KEYS...}
HEARTBEAT_KEYS = ("heartbeat_s", "timeout_s", "merged_every_s")
# The one file that agents before HEARTBEATS_DIR shared: read for the runs of an agent
# without a file of its own (an older agent still running), never written.
HEARTBEAT_NAME = "heartbeat.json"


def made_in_shared_folder(folder: Path, make: Callable[[], T], tries: int = 20) -> T:
    """`make()`'s result, `folder` made first (exist_ok). The agents of a sweep share such a
    folder (.agents, .heartbeats) and the last to leave removes it (rmdir), so another's
    rmdir can fall between this mkdir and the file `make` creates in it (a FileNotFoundError
    there), or inside mkdir itself (found there, then gone: Path.mkdir's FileExistsError
    despite exist_ok): either makes the folder again (`tries` times at most; the last error
    is raised). Without this, agents starting and ending at once lost a lock file or a
    settings file now and then (4 processes, 3,000 locks each: 37 to 75 lost a process)."""
    for attempt in range(tries):
        try:
            folder.mkdir(exist_ok=True)
            return make()
        except (FileNotFoundError, FileExistsError):
            if attempt == tries - 1 or not folder.parent.is_dir():
                raise
    raise ValueError(f"tries={tries}: at least one")


def _heartbeat_path(directory: str | os.PathLike, owner: str) -> Path:
    return Path(directory) / HEARTBEATS_DIR / f"{path_safe(owner)}.json"


def write_heartbeat_settings(directory: str | os.PathLike, owner: str, settings: dict,
                             merged_from: str | None = None) -> None:
    """Agent `owner`'s `settings` (HEARTBEAT_KEYS: seconds) in `directory`, replaced whole
    at once (a reader finds the old file or the new one); `merged_from`: the PBS job's copy
    that a merge brought them from (agents_heartbeat_settings). Best effort: a folder that
    takes no file leaves the settings unsaid, and agent.status judges by the defaults."""
    path = _heartbeat_path(directory, owner)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    saved = {"owner": owner, **{key: settings[key] for key in HEARTBEAT_KEYS if key in settings},
             **({"merged_from": merged_from} if merged_from else {})}
    try:
        # the partial file keeps the folder from another agent's rmdir until it is replaced
        made_in_shared_folder(path.parent, lambda: partial.write_text(json.dumps(saved)))
        os.replace(partial, path)
    except OSError:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass


def remove_heartbeat_settings(directory: str | os.PathLike, owner: str) -> None:
    """Agent `owner`'s settings gone from `directory` (best effort), and their folder with
    the last of them."""
    path = _heartbeat_path(directory, owner)
    try:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
    except OSError:  # other agents' files are there, or the folder is read-only
        pass


def _seconds(saved: object) -> dict[str, float]:
    """The HEARTBEAT_KEYS of a read file that are finite numbers of seconds, at least 0."""
    if not isinstance(saved, dict):
        return {}
    return {key: float(value) for key, value in saved.items() if key in HEARTBEAT_KEYS
            and isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value < float("inf")}


def agents_heartbeat_settings(directory: str | os.PathLike, merged_from: str | None = None
                              ) -> dict[str, dict[str, float]]:
    """{agent (host:pid): its settings} as write_heartbeat_settings left them in
    `directory` ({} where there are none); a file unreadable or not whole is left out.
    `merged_from`: only those a merge brought from that job's copy."""
    found: dict[str, dict[str, float]] = {}
    try:
        paths = sorted((Path(directory) / HEARTBEATS_DIR).glob("*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and isinstance(saved.get("owner"), str) and \
                (merged_from is None or saved.get("merged_from") == merged_from):
            found[saved["owner"]] = _seconds(saved)
    return found


def heartbeat_settings(directory: str | os.PathLike) -> dict[str, float]:
    """The settings older agents shared in `directory` (HEARTBEAT_NAME; {} where there are
    none, or none readable); each a finite number of seconds, at least 0."""
    try:
        return _seconds(json.loads((Path(directory) / HEARTBEAT_NAME).read_text()))
    except (OSError, ValueError):
        return {}


def create_store(directory: str | os.PathLike, sweep_id: str, name: str,
                 config: dict) -> SweepStore:
    """A new sweep directory and store; refuses to overwrite an existing one, and leaves
    nothing behind when the store cannot be made. The store is made whole in a hidden
    directory beside it and then renamed into place, so a reader (status, another launcher
    adding agents) finds no sweep or a whole one, never a directory without its store."""
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(errno.EEXIST, "a sweep is there already", str(directory))
    partial = directory.with_name(f".{directory.name}.partial")
    try:
        partial.mkdir(parents=True, exist_ok=False)
    except OSError as error:  # a read-only or full disk, no permission
        where = directory if error.filename in (None, str(partial)) else error.filename
        raise StoreError(f"{where}: cannot create the sweep's directory "
                         f"({error.strerror})") from None
    try:
        store = SweepStore(partial / STORE_NAME, create=True)
        with store._write() as db:
            db.execute("INSERT INTO sweep VALUES (?, ?, ?, ?)",
                       (sweep_id, name, json.dumps(config), time.time()))
        store.close()
        try:
            os.rename(partial, directory)
        except OSError as error:
            raise StoreError(f"{directory}: cannot create the sweep's directory "
                             f"({error.strerror})") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return SweepStore(directory / STORE_NAME)
