"""Does `--pack auto` choose well? Its measurement against whole trials, size by size.

For one configuration, side by side in one process: (1) what `--pack auto` reads, the
images/s of a few training steps of packs of each size (`agent.trial.probe.measure_pack`, the
sizes the agent would measure) and the size it settles on (`PackSizer.probe`); (2) what
matters, whole trials of K runs as one pack (`agent.trial.train_pack`: data order,
augmentation, validation, test, checkpoints and the TensorBoard sink of every member), as
runs per second, for the same sizes. The size auto chose should be at or near the best
whole-trial size; the seconds the measurement took are printed too. A measurement, not a
test.

    python benchmarks/bench_pack_auto.py [--model dense] [--hidden 64] [--channels 16 32]
        [--dataset digits] [--epochs 2] [--optimizer sgd] [--largest 32] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agent.sweep.pack_size import PackSizer  # noqa: E402
from agent.trial import train_pack  # noqa: E402
from agent.trial.probe import measure_pack  # noqa: E402
from benchmarks.bench_packed_trials import warmed_base  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dense", choices=["dense", "skip_mlp", "cnn",
                                                             "resnet"])
    parser.add_argument("--hidden", type=int, default=None, help="dense width")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="cnn channels")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--largest", type=int, default=32, help="the largest pack measured")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args()

    base = warmed_base(args, ["tensorboard"], "bench-pack-auto-")

    sizer = PackSizer(fixed=None, largest=args.largest)
    read: dict[int, float] = {}

    def measure(size: int, required: bool):
        speed = measure_pack(base, size)
        if speed is None:
            return "out of memory"
        read[size] = max(speed.images_per_s, read.get(size, 0.0))  # best timing, as auto
        return speed.images_per_s, speed.peak_memory_mb

    started = time.perf_counter()
    sizer.probe("kind", measure, args.largest)
    probe_s = time.perf_counter() - started
    chosen = sizer.next_size("kind")

    sizes, size = {chosen}, 1
    while size <= args.largest:
        sizes.add(size)
        size *= 2
    sizes = sorted(sizes)
    trials = {}
    for size in sizes:
        configs = [dict(base, lr=0.1 / (1 + k % 3), seed=k) for k in range(size)]
        started = time.perf_counter()
        train_pack(configs)
        trials[size] = size / (time.perf_counter() - started)

    best = max(trials, key=trials.get)
    widths = f", hidden {args.hidden}" if args.hidden else ""
    widths += f", channels {args.channels}" if args.channels else ""
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dataset}, "
             f"{args.model}{widths}, {args.optimizer}, {args.epochs} epochs",
             "", "| pack size | auto reads: images/s (a few steps) | whole trials: runs/s | "
             "runs/s vs alone |", "| ---: | ---: | ---: | ---: |"]
    for size in sizes:
        shown = f"{read[size]:,.0f}" if size in read else "-"
        lines.append(f"| {size}{' (auto)' if size == chosen else ''}"
                     f"{' (best)' if size == best else ''} | {shown} | {trials[size]:.2f} | "
                     f"{trials[size] / trials[1]:.2f}x |")
    lines += ["", f"auto measured sizes {sorted(read)} in {probe_s:.2f} s and chose {chosen}; "
              f"whole trials ran fastest (runs/s) at {best}: auto's choice gives "
              f"{trials.get(chosen, float('nan')) / trials[best]:.0%} of that rate."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "pack_auto.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
