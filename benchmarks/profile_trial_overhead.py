"""Where a trial's time goes besides its training steps, in an in-process agent.

Runs a local sweep of N tiny trials (warm dataset, the sinks you name) under cProfile and
prints, per trial, the seconds spent in each stage from claim to the next claim: the claim,
building the members and their sinks, building the pack (models, optimizer, schedule),
restoring checkpoints, the training steps, validation, metering and checkpoints after each
epoch, the test evaluation and summary, closing the sinks, and the store writes. A
measurement, not a test.

    python benchmarks/profile_trial_overhead.py [--trials 8] [--sinks wandb,tensorboard]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, module path suffix, function name): cumulative time of each, per trial
STAGES = (
    ("claim (store transaction, engine proposal)", "agent/sweep/controller.py", "claim"),
    ("members: config checks, sinks built", "agent/trial/loop.py", "_members"),
    ("dataset on the device (cached)", "util/device_cache.py", "device_splits"),
    ("pack: models, fusion, optimizer, lr table", "agent/trial/pack.py", "build_pack"),
    ("restore checkpoints (read)", "agent/trial/checkpoint.py", "load_saved"),
    ("sinks start (W&B init, TensorBoard writer)", "agent/trial/loop.py", "_start_sinks"),
    ("training steps", "agent/trial/loop.py", "_train_epoch"),
    ("validation", "agent/trial/evaluation.py", "evaluate"),
    ("epoch metering (norms)", "agent/trial/loop.py", "_epoch_metrics"),
    ("weight histograms (all members)", "agent/trial/metering.py", "member_weight_histograms"),
    ("epoch records (sinks, checkpoint)", "agent/trial/loop.py", "_record_epoch"),
    ("end: test, summary, sinks closed", "agent/trial/loop.py", "_end_members"),
    ("store: epoch records", "agent/sweep/store.py", "record_epoch"),
    ("store: hyperband decision", "agent/sweep/controller.py", "should_stop"),
    ("store: the run's end", "agent/sweep/store.py", "finish"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--sinks", default="wandb,tensorboard")
    parser.add_argument("--pack", default="1")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    work = Path(tempfile.mkdtemp(prefix="profile-overhead-"))
    os.chdir(work)
    from agent.sweep.agent_loop import run_local_agent
    from agent.sweep.pack_size import parse_pack
    from agent.sweep.store import create_store

    sinks = [s for s in args.sinks.split(",") if s]
    fixed = {"dataset": "digits", "model": "dense", "hidden": 32, "epochs": 1,
             "batch_size": 64, "sinks": sinks}
    config = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {**{k: {"value": v} for k, v in fixed.items()},
                             "seed": {"values": list(range(args.trials + 1))}}}
    store = create_store(work / "sweep", "profile", "profile", config)
    run_local_agent(store, count=1)  # warm-up: the dataset onto the device, imports
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    run_local_agent(store, count=args.trials, pack=parse_pack(args.pack))
    profile.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profile).stats
    print(f"{args.trials} trials (digits, dense 32, 1 epoch, sinks {sinks or 'none'}, "
          f"pack {args.pack}): {wall / args.trials:.3f} s a trial")
    print(f"{'stage':<46} {'s / trial':>9}")
    for label, path, name in STAGES:
        total = sum(entry[3] for (file, _, function), entry in stats.items()
                    if file.endswith(path) and function == name)
        print(f"{label:<46} {total / args.trials:9.3f}")
    train = sum(entry[3] for (file, _, function), entry in stats.items()
                if file.endswith("agent/trial/loop.py") and function == "_train_epoch")
    print(f"{'overhead (all but the training steps)':<46} "
          f"{(wall - train) / args.trials:9.3f}")


if __name__ == "__main__":
    main()
