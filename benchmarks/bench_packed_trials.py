"""Whole trials, K runs alone against the same K runs as one pack, in one process.

Both sides call the trial layer itself (`agent.trial.train` once per configuration, then
`agent.trial.train_pack` on all of them), so the figure is the packing gain of a trial with
everything a trial does: data order, augmentation and dropout per member, validation, test,
checkpoints and the sinks asked for. It leaves out what a sweep adds around trials (the agent
process's start, claims), which bench_sweep_throughput.py measures. Members differ in lr and
dropout (and seed past 6); one warm-up trial first. A measurement, not a test.

    python benchmarks/bench_packed_trials.py [--model dense] [--members 6 12] [--epochs 2]
        [--optimizer sgd] [--hidden 64] [--channels 16 32] [--sinks tensorboard]
        [--dataset digits] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agent.trial import train, train_pack  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def warmed_base(args, sinks: list[str], prefix: str) -> dict:
    """The benchmark's run config from its options (files in a new temporary folder), after
    one warm-up trial has put the data on the device and chosen its kernels."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    base = {"dataset": args.dataset, "data_dir": str(ROOT / "data"), "model": args.model,
            "epochs": args.epochs, "optimizer": args.optimizer, "sinks": sinks,
            "histograms": False, "run_dir": str(work / "runs"), "log_dir": str(work / "logs")}
    if args.hidden:
        base["hidden"] = args.hidden
    if args.channels:
        base["channels"] = args.channels
    train({**base, "lr": 0.1})
    return base


def member_configs(base: dict, members: int) -> list[dict]:
    points = itertools.product(range(members), [0.1, 0.01, 0.001], [0.0, 0.3])
    return [dict(base, lr=lr, dropout=dropout, seed=seed)
            for seed, lr, dropout in itertools.islice(points, members)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dense", choices=["dense", "skip_mlp", "cnn",
                                                             "resnet"])
    parser.add_argument("--members", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--hidden", type=int, default=None, help="dense width")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="cnn channels")
    parser.add_argument("--sinks", nargs="*", default=["tensorboard"])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--repeats", type=int, default=2, help="the best of this many")
    args = parser.parse_args()

    base = warmed_base(args, args.sinks, "bench-packed-trials-")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dataset}, "
          f"{args.model} {args.hidden or args.channels or '(default width)'}, "
          f"{args.optimizer}, {args.epochs} epochs, sinks {args.sinks}")
    print(f"{'K':>3} {'alone s':>8} {'per run ms':>11} {'packed s':>9} {'per run ms':>11} "
          f"{'alone/packed':>13}")
    for members in args.members:
        configs = member_configs(base, members)
        alone = packed = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            for config in configs:
                train(config)
            alone = min(alone, time.perf_counter() - started)
            started = time.perf_counter()
            train_pack(configs)
            packed = min(packed, time.perf_counter() - started)
        print(f"{members:>3} {alone:>8.2f} {1000 * alone / members:>11.1f} {packed:>9.2f} "
              f"{1000 * packed / members:>11.1f} {alone / packed:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
