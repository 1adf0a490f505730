"""What --pack auto measured, shared by the agents of one host through the sweep's folder.

An agent that meets a kind of pack it has not sized looks in `.pack_sizes/<host>-<device>.json`
beside the store for the size another agent of this host settled on for that kind on a device
of the same name (`device_name`: a CPU at its thread count, a GPU by its model), and measures
only where none is there (agent/sweep/agent_loop.py size_kind). Measuring takes that file's
lock (`SizeFile.turn`): a second agent waits for the first's measurement and takes it, instead
of measuring the same kind again at the same moment, on the same device, each slowing the
other's timings. A file rather than a column: the store's schema stays as it is, a folder that
is read-only or a file that cannot be read leaves the agent measuring, as before, and a job on
another node type (another host, another device) measures for itself. Torch-free but for
`device_name`.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.ids import path_safe
from agent.sweep.pack_size import SizeRecord

PACK_SIZES_DIR = ".pack_sizes"  # in a sweep's folder: <host>-<device>.json and its .lock
FORMAT = 1  # the file's "format": a file of another one is not read (measured anew)
POLL_S = 0.1  # how often an agent waiting for another's measurement checks its lock


class Stopped(Exception):
    """The agent was asked to stop (SIGTERM, Ctrl-C) while it waited for the lock."""


def key_text(key: object) -> str | None:
    """The pack key (`agent.trial.member.pack_key`: a tuple of (name, value) pairs in
    PACK_SHARED's order) as the file's text for it: compact JSON, the same in every process
    (JSON writes a float as its shortest repr; a tuple as a list). None for a key JSON cannot
    write: that kind is not shared."""
    try:
        return json.dumps(key, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None


def record_json(record: SizeRecord, owner: str) -> dict:
    """A settled SizeRecord as the file holds it, with the agent (host:pid) that measured it."""
    return {"settled": record.settled, "throughput": {str(size): rate for size, rate in
                                                      sorted(record.throughput.items())},
            "member_mb": record.member_mb, "too_big": record.too_big,
            "why_not": record.why_not, "runs_left": record.runs_left, "by": owner,
            "at": round(time.time(), 3)}


def record_from(saved: object) -> tuple[SizeRecord, str] | None:
    """(the SizeRecord, the agent that measured it) of one entry of the file; None where it
    is not one record_json wrote (a settled size of 1 or more, images/s by size all finite
    and positive)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("by"), str):
        return None
    rates = saved.get("throughput")
    settled = saved.get("settled")
    try:
        throughput = {int(size): float(rate) for size, rate in rates.items()
                      if not isinstance(rate, bool)}
    except (AttributeError, TypeError, ValueError):
        return None
    if not throughput or len(throughput) != len(rates) or \
            not all(size >= 1 and 0 < rate < math.inf for size, rate in throughput.items()):
        return None
    if not _count(settled) or not _count(saved.get("too_big"), True) or \
            not _count(saved.get("runs_left"), True):
        return None
    member_mb = saved.get("member_mb")
    if member_mb is not None and not (_number(member_mb) and 0 < member_mb < math.inf):
        return None
    why_not = saved.get("why_not")
    record = SizeRecord(throughput=throughput, member_mb=member_mb,
                        too_big=saved.get("too_big"), runs_left=saved.get("runs_left"),
                        settled=settled, confirmed=True,
                        why_not=why_not if isinstance(why_not, str) else "out of memory")
    return record, saved["by"]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: object, optional: bool = False) -> bool:
    """A whole number of members, at least 1 (or None where `optional`)."""
    return (optional and value is None) or \
        (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def device_name(device: str, num_threads: int = 0) -> str | None:
    """This agent's device for a run asking for `device` (auto, cpu, cuda:1...) and
    `num_threads` (0: torch's, which the launcher sets for each agent of a CPU) as the file's
    name tells it: `cpu-4threads` (a CPU's throughput follows its threads), `cuda-NVIDIA
    H200`, `mps`; None where it is not on this machine (such a kind is not measured)."""
    import torch

    from util.device import pick_device

    try:
        picked = pick_device(device)
        if picked.type == "cuda":
            return f"cuda-{torch.cuda.get_device_name(picked)}"
    except Exception:  # noqa: BLE001 (the measurement says why, and the kind runs alone)
        return None
    if picked.type == "cpu":
        return f"cpu-{num_threads or torch.get_num_threads()}threads"
    return picked.type


class SizeFile:
    """The sizes the agents of this host settled on, for one device name, in a sweep's
    folder `directory`: {key_text: record_json} under "records"."""

    def __init__(self, directory: str | os.PathLike, device: str, host: str | None = None):
        name = path_safe(f"{host or socket.gethostname()}-{device}")
        self.path = Path(directory) / PACK_SIZES_DIR / f"{name}.json"
        self.lock_path = self.path.with_suffix(".lock")
        self.problem: str | None = None  # why the file could not be read, when it could not

    @classmethod
    def of_file(cls, path: Path) -> SizeFile:
        """The SizeFile whose file is `path` (<folder>/.pack_sizes/<host>-<device>.json)."""
        sizes = cls.__new__(cls)
        sizes.path, sizes.lock_path, sizes.problem = path, path.with_suffix(".lock"), None
        return sizes

    def records(self) -> dict[str, dict]:
        """The file's records ({} where there is no file); where it cannot be read or is not
        one this module wrote, {} and `problem` says why (the agent measures, and its record
        replaces the file)."""
        self.problem = None
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            self.problem = getattr(error, "strerror", None) or "not JSON"
            return {}
        if not isinstance(saved, dict) or saved.get("format") != FORMAT or \
                not isinstance(saved.get("records"), dict):
            self.problem = f"not a file of pack sizes of format {FORMAT}"
            return {}
        return saved["records"]

    def find(self, key: object) -> tuple[SizeRecord, str] | None:
        """(the record settled for `key`, the agent that measured it), or None."""
        text = key_text(key)
        return None if text is None else record_from(self.records().get(text))

    def save(self, key: object, record: SizeRecord, owner: str) -> bool:
        """Add `owner`'s settled `record` of `key` to the file, replacing it whole at once (a
        reader finds the old file or the new one); whether it was written. Call within
        `turn`, so that no other agent writes meanwhile."""
        text = key_text(key)
        if text is None or record.settled is None or not record.throughput:
            return False
        return self._write({**self.records(), text: record_json(record, owner)})

    def _write(self, records: dict[str, dict]) -> bool:
        """The file holding `records`, replaced whole at once; whether it was written."""
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            self.path.parent.mkdir(exist_ok=True)
            partial.write_text(json.dumps({"format": FORMAT, "records": records}, indent=1))
            os.replace(partial, self.path)
            return True
        except OSError:
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass
            return False

    @contextmanager
    def turn(self, owner: str, interrupted: Callable[[], bool],
             waiting: Callable[[str], None]) -> Iterator[bool]:
        """Hold this device's lock (flock) while the block measures; yields whether it is
        held (False where the folder takes no lock file: the agent measures unshared). While
        another agent holds it, calls waiting(that agent) once and polls every POLL_S,
        raising Stopped once `interrupted()`. The kernel frees the lock of an agent that
        ends, however it ends."""
        fd = self._open_lock()
        if fd is None:
            yield False
            return
        try:
            held = _lock(fd, interrupted, waiting)
            if held:
                _write_holder(fd, owner)
            yield held
        finally:
            os.close(fd)  # frees the lock

    def _open_lock(self) -> int | None:
        try:
            self.path.parent.mkdir(exist_ok=True)
            return os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:  # a read-only folder: no lock, no file written
            return None


def _lock(fd: int, interrupted: Callable[[], bool], waiting: Callable[[str], None]) -> bool:
    """SizeFile.turn's lock taken on `fd`, polling while another agent holds it; False where
    the file system takes no lock (NFS without its lock service: ENOLCK; Lustre mounted
    without `flock`: ENOSYS): the agent measures unshared there, as in a read-only folder."""
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if interrupted():
                raise Stopped("waiting for another agent's measurement") from None
            if not said:
                said = True
                waiting(_holder(fd))
            time.sleep(POLL_S)
        except OSError:
            return False


def carry_sizes(source: Path, target: Path, wait_s: float = 30) -> int:
    """The sizes settled in folder `source` (its .pack_sizes files, every host and device)
    added to those of folder `target`: a record `target` lacks is added, one it has stays
    (both were measured on that host's device; the first stands, as an agent that finds one
    takes it); the number of records added. A PBS job's copy of a sweep's store in scratch
    (agent/cluster/store_copy.py) takes the sweep's sizes along and brings its own back, so
    that a later job on that node takes them instead of measuring each kind again. A file
    that cannot be read, a folder that takes no file, or a lock not had within `wait_s`
    (another agent measuring) carries nothing for that file; a later merge carries it."""
    added = 0
    for path in sorted((source / PACK_SIZES_DIR).glob("*.json")):
        records = SizeFile.of_file(path).records()
        records = {key: saved for key, saved in records.items()
                   if record_from(saved) is not None}
        if not records:
            continue
        there = SizeFile.of_file(target / PACK_SIZES_DIR / path.name)
        if records.keys() <= there.records().keys():
            continue  # nothing new (a job's merges come every 30 s): no lock taken, no wait
        deadline = time.monotonic() + wait_s
        try:
            with there.turn(f"{socket.gethostname()}:{os.getpid()} (a job's copy)",
                            lambda until=deadline: time.monotonic() > until,
                            lambda holder: None) as held:
                theirs = there.records()
                new = {key: saved for key, saved in records.items() if key not in theirs}
                if held and new and there._write({**theirs, **new}):
                    added += len(new)
        except Stopped:
            continue
    return added


def _write_holder(fd: int, owner: str) -> None:
    """The lock's holder, for the agents that wait for it to name."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
    except OSError:
        pass


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another agent"
    except OSError:
        return "another agent"
