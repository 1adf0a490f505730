"""Per-trial overhead of an in-process agent against a new Python process per trial.

The second is how `wandb agent` runs a sweep's program: interpreter start, imports, dataset
load, W&B init, train, exit. Ours claims from the local sweep store and calls the trial
function in the same process, with the dataset already on the device. Overhead of a trial =
its wall time minus the time spent in its training epochs; both sides train the same tiny
configurations (digits, 1 epoch) with the same sinks (W&B offline, TensorBoard), after one
warm-up trial each. Prints both and the ratio. A measurement, not a test.

    python benchmarks/bench_trial_overhead.py [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRIAL = {"dataset": "digits", "model": "dense", "hidden": 32, "epochs": 1,
         "batch_size": 64, "sinks": ["wandb", "tensorboard"]}


def in_process_overhead(work: Path, trials: int) -> float:
    from agent.sweep.agent_loop import run_local_agent
    from agent.sweep.store import create_store

    os.chdir(work)
    params = {name: {"value": value} for name, value in TRIAL.items()}
    config = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {**params, "seed": {"values": list(range(trials + 1))}}}
    store = create_store(work / "sweep", "bench", "bench", config)
    run_local_agent(store, count=1)  # warm-up: loads the dataset onto the device
    started = time.perf_counter()
    run_local_agent(store, count=trials)
    elapsed = time.perf_counter() - started
    runs = store.runs()[1:]
    assert len(runs) == trials and all(r.state == "finished" for r in runs)
    return (elapsed - sum(r.summary["perf/train_s"] for r in runs)) / trials


def subprocess_overhead(work: Path, trials: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [f"--{name}={json.dumps(value) if isinstance(value, list) else value}"
            for name, value in TRIAL.items()]
    overheads = []
    for seed in range(trials + 1):
        run_id = f"sub{seed}"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "agent.train", *args, f"--seed={seed}",
                        f"--run_id={run_id}"], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        summary = json.loads((work / "data" / "runs" / run_id / "summary.json").read_text())
        overheads.append(elapsed - summary["perf/train_s"])
    return sum(overheads[1:]) / trials  # the first one also decodes the dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    (work / "a").mkdir()
    (work / "b").mkdir()
    theirs = subprocess_overhead(work / "b", args.trials)
    ours = in_process_overhead(work / "a", args.trials)
    print(f"per-trial overhead over {args.trials} trials (digits, dense, 1 epoch, W&B offline "
          f"+ TensorBoard sinks)")
    print(f"  new process per trial (the `wandb agent` way): {theirs:6.2f} s")
    print(f"  in-process agent, warm dataset:                {ours:6.2f} s")
    print(f"  ratio: {theirs / ours:.1f}x less overhead in-process")


if __name__ == "__main__":
    main()
