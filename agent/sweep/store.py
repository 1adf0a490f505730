"""The local sweep store: one SQLite file (WAL) per sweep, shared by the agents of one machine.

It holds the sweep config, each run's config, state, owner, heartbeat, per-epoch history and
summary. Every change is one short transaction, so an agent killed at any point leaves the
file consistent, and finished runs are never lost. What to run next is decided elsewhere
(agent/sweep/controller.py); this module only stores.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path


STORE_NAME = "sweep.db"
SWEEPS_DIR = Path("data") / "sweeps"
STATES = ("pending", "running", "finished", "failed", "crashed", "preempted", "stopped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
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
    created REAL NOT NULL, started REAL, ended REAL);
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch));
"""


class SweepStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a claim is one
        # write-locked transaction across agent processes.
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- the sweep -------------------------------------------------------------------------
    def init_sweep(self, sweep_id: str, name: str, config: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO sweep VALUES (?, ?, ?, ?)",
                       (sweep_id, name, json.dumps(config), time.time()))

    def sweep(self) -> dict:
        row = self.db.execute("SELECT * FROM sweep").fetchone()
        return {"id": row["id"], "name": row["name"], "config": json.loads(row["config"]),
                "created": row["created"]}

    # --- runs ------------------------------------------------------------------------------
    def runs(self, db: sqlite3.Connection | None = None) -> list[dict]:
        db = db or self.db
        rows = db.execute("SELECT * FROM runs ORDER BY seq").fetchall()
        history: dict[str, list[dict]] = {}
        for h in db.execute("SELECT run_id, metrics FROM history ORDER BY run_id, epoch"):
            history.setdefault(h["run_id"], []).append(json.loads(h["metrics"]))
        return [{**dict(row), "config": json.loads(row["config"]),
                 "summary": json.loads(row["summary"]) if row["summary"] else None,
                 "history": history.get(row["id"], [])} for row in rows]

    def run(self, run_id: str) -> dict:
        for run in self.runs():
            if run["id"] == run_id:
                return run
        raise KeyError(run_id)

    def insert_run(self, db: sqlite3.Connection, run_id: str, config: dict, state: str,
                   owner: str | None, requeued_from: str | None = None) -> None:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
        now = time.time()
        db.execute("INSERT INTO runs (id, seq, config, state, owner, heartbeat, requeued_from,"
                   " created, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (run_id, seq, json.dumps(config), state, owner,
                    now if state == "running" else None, requeued_from, now,
                    now if state == "running" else None))

    def set_state(self, db: sqlite3.Connection, run_id: str, state: str,
                  owner: str | None = None) -> None:
        now = time.time()
        if state == "running":
            db.execute("UPDATE runs SET state=?, owner=?, heartbeat=?, started=? WHERE id=?",
                       (state, owner, now, now, run_id))
        else:
            db.execute("UPDATE runs SET state=?, ended=? WHERE id=?", (state, now, run_id))

    def heartbeat(self, run_id: str, owner: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET heartbeat=? WHERE id=? AND owner=? AND state='running'",
                       (time.time(), run_id, owner))

    def record_epoch(self, run_id: str, epoch: int, metrics: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?)",
                       (run_id, epoch, json.dumps(metrics, default=float)))
            db.execute("UPDATE runs SET epoch=?, heartbeat=? WHERE id=?",
                       (epoch, time.time(), run_id))

    def finish_run(self, run_id: str, state: str, summary: dict | None = None,
                   error: str | None = None) -> None:
        assert state in STATES
        with self.transaction() as db:
            self.set_state(db, run_id, state)
            if summary is not None:
                db.execute("UPDATE runs SET summary=? WHERE id=?",
                           (json.dumps(summary, default=float), run_id))
            if error is not None:
                db.execute("UPDATE runs SET error=? WHERE id=?", (error, run_id))


def create_store(directory: str | os.PathLike, sweep_id: str, name: str,
                 config: dict) -> SweepStore:
    """A new sweep directory and store; refuses to overwrite an existing one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=False)
    store = SweepStore(directory / STORE_NAME)
    store.init_sweep(sweep_id, name, config)
    return store
