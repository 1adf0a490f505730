"""Read W&B offline runs (`wandb/offline-run-*/run-<id>.wandb`) without a W&B server.

wandb 0.31 writes no wandb-summary.json offline and ships no Python reader of these files, so
this is ours. The format, as checked on files wandb writes here: a 7-byte header (":W&B",
0xBEE1 little-endian, version 0), then LevelDB-style 32 KiB blocks of chunks, each with a
4-byte checksum, a 2-byte little-endian length and a 1-byte type (1 full, 2 first, 3 middle,
4 last); a block tail shorter than a chunk header is zero padding. Chunks reassemble into
`wandb_internal_pb2.Record` messages. Checksums are not verified (a torn final record, what a
crashed writer leaves, is detected by its length and dropped).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes, name: str) -> Iterator[bytes]:
    if not data.startswith(HEADER):
        raise ValueError(f"{name}: not a W&B run file (bad header)")
    position, pending = len(HEADER), b""
    while position + CHUNK_HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < CHUNK_HEADER:  # zero padding at the end of a block
            position += room
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        start = position + CHUNK_HEADER
        if kind == 0 and length == 0:  # zeros: padding or a preallocated tail
            position += room
            continue
        if start + length > len(data):
            return  # torn final chunk
        chunk = data[start:start + length]
        position = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_records(path: str | Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    for payload in _payloads(path.read_bytes(), str(path)):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # a torn record that happened to fit: stop there
            return
        yield record


def _items(items) -> dict:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        try:
            out[key] = json.loads(item.value_json)
        except ValueError:
            out[key] = item.value_json
    return out


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exit_code: int | None = None


def read_run(path: str | Path) -> OfflineRun:
    """One offline run, from its `offline-run-*` directory or its `.wandb` file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise ValueError(f"{path}: no .wandb file in this directory")
        path = files[0]
    run = OfflineRun(path=path)
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.name = r.display_name
            run.config.update(_items(r.config.update))
            run.summary.update(_items(r.summary.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            row = _items(record.history.item)
            if record.history.HasField("step") and "_step" not in row:
                row["_step"] = record.history.step.num
            run.history.append(row)
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
            for item in record.summary.remove:
                run.summary.pop(item.key, None)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    # wandb stores config values as {"value": x, "desc": ...}; expose the values.
    run.config = {k: v["value"] if isinstance(v, dict) and "value" in v else v
                  for k, v in run.config.items() if k != "_wandb"}
    return run


def find_runs(wandb_dir: str | Path) -> list[OfflineRun]:
    """Every offline run under a `wandb/` directory, in path order."""
    return [read_run(d) for d in sorted(Path(wandb_dir).glob("offline-run-*")) if d.is_dir()]
