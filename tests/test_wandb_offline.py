"""util.wandb_offline reads back offline runs that wandb itself wrote (no mocks, no server)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import closed_offline_runs
from util.wandb_offline import OfflineRun, find_runs, read_records, read_run

pytestmark = pytest.mark.e2e  # each test reads a run written by wandb in a child process
LOSSES = [1.5, 0.75, 0.5]

SCRIPT = textwrap.dedent(f"""
    import wandb
    run = wandb.init(project="p", group="g",
                     config={{"lr": 0.1, "optimizer": "sam", "channels": [32, 64]}})
    for i, x in enumerate({LOSSES!r}):
        wandb.log({{"train/loss": x, "epoch": i}})
    run.config.update({{"late": {{"a": 1}}}})
    run.summary["test/acc"] = 0.93
    wandb.finish()
    print(run.id)
""")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """One real offline run written by wandb in a child process: (wandb dir, run id)."""
    cwd = tmp_path_factory.mktemp("wandb_offline")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WANDB_") or k in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(cwd))
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr[-3000:]
    closed_offline_runs(cwd / "wandb", 1)  # wandb's service may still be closing the file
    return cwd / "wandb", result.stdout.split()[-1]


@pytest.mark.timeout(120)
def test_a_real_offline_run_reads_back(offline):
    wandb_dir, run_id = offline
    (run,) = find_runs(wandb_dir)
    assert isinstance(run, OfflineRun) and run.path.suffix == ".wandb"
    assert (run.run_id, run.project, run.group, run.exit_code) == (run_id, "p", "g", 0)
    assert run.config == {"lr": 0.1, "optimizer": "sam", "channels": [32, 64],
                          "late": {"a": 1}}
    assert run.summary["test/acc"] == 0.93
    assert run.summary["train/loss"] == LOSSES[-1]
    assert [(row["_step"], row["epoch"], row["train/loss"]) for row in run.history] == [
        (i, i, x) for i, x in enumerate(LOSSES)]
    # The directory and the file name the same run.
    assert read_run(run.path.parent) == run == read_run(run.path)


@pytest.mark.timeout(120)
def test_a_torn_final_record_is_dropped_and_the_rest_read(offline, tmp_path):
    run = find_runs(offline[0])[0]
    whole = run.path.read_bytes()
    complete = list(read_records(run.path))
    assert complete[0].WhichOneof("record_type") == "header"
    # Cut inside the last record's data.
    torn = tmp_path / "torn.wandb"
    torn.write_bytes(whole[:-max(1, len(complete[-1].SerializeToString()) // 2)])
    records = list(read_records(torn))
    assert records == complete[:-1]
    # A cut inside a chunk header, and trailing zeros, are also a torn tail.
    torn.write_bytes(whole[:-len(complete[-1].SerializeToString()) - 3])
    assert list(read_records(torn)) == complete[:-1]
    torn.write_bytes(whole + bytes(50))
    assert list(read_records(torn)) == complete
    back = read_run(torn)
    assert back.run_id == run.run_id and back.config == run.config


@pytest.mark.timeout(120)
def test_a_wrong_header_or_a_corrupt_middle_raises_value_error(offline, tmp_path):
    whole = find_runs(offline[0])[0].path.read_bytes()
    bad = tmp_path / "bad.wandb"
    for data in (b"not a wandb file", b"", b":W&B" + whole[4:6] + b"\x01" + whole[7:]):
        bad.write_bytes(data)
        with pytest.raises(ValueError, match="bad.wandb"):
            list(read_records(bad))
    flipped = bytearray(whole)
    flipped[20] ^= 0xFF  # inside the first record: its checksum no longer matches
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        list(read_records(bad))
