"""Read W&B offline runs (`wandb/offline-run-*/run-<id>.wandb`) without a W&B server.

wandb 0.31 writes no wandb-summary.json offline and ships no Python reader for these files,
so this parses them: the format notes below were checked against files wandb 0.31 writes.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

# File header: ident ":W&B", magic 0xBEE1 (uint16 little-endian), version 0.
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
# Then LevelDB-log blocks of 32 KiB (counted from the start of the file, header included).
# Each chunk: checksum uint32 LE, length uint16 LE, type uint8, then `length` bytes of data.
# The checksum is plain zlib CRC-32 (IEEE, unmasked) of the type byte followed by the data,
# not LevelDB's masked CRC-32C. A block tail shorter than a chunk header is zero padding.
BLOCK = 32 * 1024
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes, name: str) -> Iterator[bytes]:
    """The records' bytes, chunks reassembled; stops quietly at a torn tail."""
    if not data.startswith(HEADER):
        raise ValueError(f"{name}: not a W&B run file (bad header {data[:7]!r})")
    pos, pending = len(HEADER), None
    while pos + CHUNK.size <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK.size:  # block trailer
            pos += room
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        start, end = pos + CHUNK.size, pos + CHUNK.size + length
        if end > len(data):
            return  # the writer stopped in the middle of this chunk
        body = data[start:end]
        if (end - pos > room or kind not in (FULL, FIRST, MIDDLE, LAST)
                or zlib.crc32(bytes([kind]) + body) != crc
                or (pending is None) != (kind in (FULL, FIRST))):
            if not data[pos:].strip(b"\0") or end == len(data):
                return  # zeros or a damaged final chunk: what a crashed writer leaves
            raise ValueError(f"{name}: corrupt chunk at byte {pos}")
        pos = end
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = [body]
        elif kind == MIDDLE:
            pending.append(body)
        else:
            yield b"".join(pending + [body])
            pending = None
    # A record left pending here was torn by the end of the file: dropped.


def read_records(path: str | Path) -> Iterator[wandb_internal_pb2.Record]:
    """Every complete `Record` in a `.wandb` file, in order."""
    path = Path(path)
    for payload in _payloads(path.read_bytes(), str(path)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


@dataclass
class OfflineRun:
    """What one offline run's .wandb file holds: identity, config, summary, history rows."""

    path: Path  # the .wandb file
    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""  # display name
    sweep_id: str = ""  # the W&B sweep the run belongs to ("" outside one)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exit_code: int | None = None
    preempting: bool = False  # run.mark_preempting() was called: W&B hands the run out again


def _keys(item) -> list[str]:
    return list(item.nested_key) or [item.key]


def _value(item) -> Any:
    try:
        return json.loads(item.value_json)
    except ValueError:
        return item.value_json


def _apply(target: dict, updates=(), removes=()) -> dict:
    """Apply config/summary/history items (key or nested_key path, JSON value) to `target`."""
    for item in updates:
        *parents, last = _keys(item)
        node = target
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = _value(item)
    for item in removes:
        *parents, last = _keys(item)
        node = target
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return target


def read_run(path: str | Path) -> OfflineRun:
    """One offline run, from its `offline-run-*` directory or its `.wandb` file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise ValueError(f"{path}: no run-*.wandb file in this directory")
        path = files[0]
    run = OfflineRun(path=path)
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group, run.name, run.sweep_id = (
                r.run_id, r.project, r.run_group, r.display_name, r.sweep_id)
            _apply(run.config, r.config.update, r.config.remove)
            _apply(run.summary, r.summary.update, r.summary.remove)
        elif kind == "config":
            _apply(run.config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(run.summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row = _apply({}, record.history.item)
            row.setdefault("_step", record.history.step.num)
            run.history.append(row)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
        elif kind == "preempting":
            run.preempting = True
    run.config.pop("_wandb", None)  # wandb's own bookkeeping, not part of wandb.config
    return run


def find_runs(wandb_dir: str | Path) -> list[OfflineRun]:
    """Every offline run under a `wandb/` directory, sorted by path."""
    return [read_run(d) for d in sorted(Path(wandb_dir).glob("offline-run-*"))
            if d.is_dir() and any(d.glob("run-*.wandb"))]
