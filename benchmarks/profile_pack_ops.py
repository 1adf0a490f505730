"""Where a packed trial's operator time goes, per run: K runs as one pack against a run alone.

Both sides are whole trials through the trial layer (`agent.trial.train_pack`, a run alone is a
pack of one), timed under torch's profiler; each operator's own time is divided by the runs it
served, so a row reads "milliseconds of this operator a run costs" alone and packed. Operators
that only read and write each element once (batch norm, ReLU, pooling) cost a packed run what
they cost a run alone; fusing pays where a kernel launch or a Python call is shared (the
convolution's setup, the optimizer). The profiler adds a fixed cost to every operator call,
which flatters packing a little: read the rows against each other, not as wall time. A
measurement, not a test.

    python benchmarks/profile_pack_ops.py [--model cnn] [--channels 16 32] [--hidden 64]
        [--members 8] [--optimizer sgd] [--dataset digits] [--epochs 2] [--repeats 3] [--rows 16]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from agent.trial import train_pack  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def configs(base: dict, members: int, work: Path, tag: str) -> list[dict]:
    """`members` runs that differ in lr, dropout and seed, their files under work/tag."""
    points = itertools.product(range(members), [0.1, 0.01, 0.001], [0.0, 0.3])
    return [dict(base, lr=lr, dropout=dropout, seed=seed, run_dir=str(work / tag / "runs"),
                 log_dir=str(work / tag / "logs"))
            for seed, lr, dropout in itertools.islice(points, members)]


def per_run_ms(base: dict, members: int, repeats: int, work: Path) -> dict[str, float]:
    """{operator: self CPU milliseconds per run} over `repeats` packs of `members` runs."""
    train_pack(configs(base, members, work, f"warm{members}"))  # data cached, kernels chosen
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for repeat in range(repeats):
            train_pack(configs(base, members, work, f"k{members}r{repeat}"))
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[event.key] += event.self_cpu_time_total / 1000 / repeats / members
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=["dense", "skip_mlp", "cnn", "resnet"])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=16, help="operators shown")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="profile-pack-ops-"))
    base = {"dataset": args.dataset, "data_dir": str(ROOT / "data"), "model": args.model,
            "epochs": args.epochs, "optimizer": args.optimizer, "sinks": ["tensorboard"],
            "histograms": False, "channels": args.channels, "hidden": args.hidden}
    alone = per_run_ms(base, 1, args.repeats, work)
    packed = per_run_ms(base, args.members, args.repeats, work)
    names = sorted(set(alone) | set(packed), key=lambda name: -alone.get(name, 0.0))
    print(f"{args.model} ({args.dataset}, {args.epochs} epochs, {args.optimizer}): operator "
          f"self time, ms a run, alone against packs of {args.members}")
    print("| operator | alone | packed | alone / packed |\n| --- | ---: | ---: | ---: |")
    for name in names[:args.rows]:
        a, p = alone.get(name, 0.0), packed.get(name, 0.0)
        print(f"| {name} | {a:.2f} | {p:.2f} | {a / p if p else float('inf'):.2f}x |")
    a, p = sum(alone.values()), sum(packed.values())
    print(f"| every operator | {a:.2f} | {p:.2f} | {a / p:.2f}x |")


if __name__ == "__main__":
    main()
