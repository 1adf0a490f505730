"""Run every configuration of a Fashion-MNIST sweep file in one process, time the whole sweep
(data loading and every trial included) and print its runs beside the published table.

On a CUDA machine without network or wandb (see ../shared/gpu/README.md):
    source .gpu/setup.sh && python3 benchmarks/bench_fashion_mnist_gpu.py
A small dry run on a CPU (the same code path, tiny sizes):
    ./util/with_venv.sh python benchmarks/bench_fashion_mnist_gpu.py \
        --set epochs=1 --set train_subset=1024 --set width=8
The configurations are the sweep engine's own proposals (as ./run_sweep.sh would run them),
with W&B left out: the sinks are --sinks (TensorBoard by default). `--pack 3` trains the
three runs as one packed model instead of one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from agent.sweep.config import load_sweep_config  # noqa: E402
from agent.sweep.engine import proposed_params  # noqa: E402
from agent.sweep.store import Run  # noqa: E402
from agent.trial.loop import train, train_pack  # noqa: E402

# Zalando's Fashion-MNIST README, benchmark table (test accuracy).
PUBLISHED = [("2 conv + pooling", 0.916), ("2 conv + pooling + batch norm", 0.934),
             ("Google AutoML Vision, 24 compute hours", 0.939), ("ResNet18", 0.949),
             ("WRN-40-4", 0.967)]
TARGET_ACC, TARGET_S = 0.95, 600.0  # issue 11: best run >= 95.0% within 10 minutes of one GPU


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default=str(ROOT / "sweeps" / "fashion_mnist.yaml"))
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--dataset-dir", default="")
    parser.add_argument("--sinks", default="tensorboard", help="comma-separated, '' for none")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter of every run (dry runs)")
    parser.add_argument("--max-runs", type=int, default=50, help="stop a random search here")
    parser.add_argument("--pack", type=int, default=1, help="runs trained together as one "
                        "packed model (as ./run_sweep.sh --pack K); 1: one after the other")
    parser.add_argument("--out", default=os.path.join(os.environ["OUT"], "fashion_mnist.json")
                        if os.environ.get("OUT") else "", help="write the results as JSON")
    return parser.parse_args(argv)


def describe_device(device: str) -> str:
    if torch.cuda.is_available() and device in ("auto", "cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), " \
           f"torch {torch.__version__}"


def run_sweep(args: argparse.Namespace, sweep: dict, work: Path) -> tuple[list[Run], float]:
    """Every proposal of the engine, trained in turn; returns the runs and the wall seconds."""
    overrides = {"sinks": [s for s in args.sinks.split(",") if s], "data_dir": args.data_dir,
                 "dataset_dir": args.dataset_dir, "device": args.device,
                 "run_dir": str(work / "runs"), "log_dir": str(work / "logs")}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = value  # validate() coerces it like a command-line value
    runs: list[Run] = []
    started = time.perf_counter()
    while claimed := claim(sweep, runs, args):
        configs = [{**runs[i].config, **overrides, "run_name": runs[i].id} for i in claimed]
        summaries = train_pack(configs) if len(configs) > 1 else [train(configs[0])]
        elapsed = time.perf_counter() - started
        for i, summary in zip(claimed, summaries):
            runs[i] = replace(runs[i], state="finished", summary=summary)
            print(f"  {runs[i].id}: {json.dumps(varied(sweep, runs[i].config))} test "
                  f"{summary.get('test/acc', float('nan')):.4f} in {summary['wall_s']:.0f} s "
                  f"(sweep so far {elapsed / 60:.1f} min)", flush=True)
        if args.out:
            write_results(args.out, sweep, runs, elapsed, args)
    return runs, time.perf_counter() - started


def claim(sweep: dict, runs: list[Run], args: argparse.Namespace) -> list[int]:
    """The engine's next --pack proposals, recorded as running (as an agent claims them);
    returns their places in `runs`."""
    claimed: list[int] = []
    while len(claimed) < args.pack and len(runs) < args.max_runs:
        params = proposed_params(sweep, runs)
        if params is None:  # a grid is done
            break
        runs.append(Run(id=f"run{len(runs) + 1}", seq=len(runs), config=params,
                        state="running"))
        claimed.append(len(runs) - 1)
    return claimed


def varied(sweep: dict, params: dict) -> dict:
    """The parameters the sweep varies, with this run's values."""
    return {name: params[name] for name, spec in sweep["parameters"].items()
            if "value" not in spec}


def write_results(path: str, sweep: dict, runs: list[Run], wall_s: float, args) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({
        "sweep": args.sweep, "device": describe_device(args.device), "wall_s": wall_s,
        "overrides": args.set,
        "pack": args.pack,
        "runs": [{"config": r.config, "summary": r.summary} for r in runs if r.summary]},
        indent=1, default=float))


def print_table(sweep: dict, runs: list[Run], wall_s: float) -> None:
    head = ["run", "varied", "epochs", "val/acc", "test/acc", "train s", "wall s", "img/s"]
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for i, run in enumerate(runs, start=1):
        s = run.summary
        print(f"| {i} | {json.dumps(varied(sweep, run.config))} | {s['epochs_done']} | "
              f"{s.get('val/acc', float('nan')):.4f} | {s.get('test/acc', float('nan')):.4f} | "
              f"{s.get('perf/train_s', 0):.0f} | {s['wall_s']:.0f} | "
              f"{s.get('perf/images_per_s', 0):,.0f} |")
    best = max(runs, key=lambda r: r.summary.get("val/acc") or 0.0).summary
    top = max(r.summary.get("test/acc") or 0.0 for r in runs)
    print(f"\nwhole sweep: {len(runs)} runs in {wall_s:.0f} s ({wall_s / 60:.2f} min)")
    print(f"best run by val/acc ({best['run_name']}): test/acc {best.get('test/acc', 0):.4f}; "
          f"highest test/acc of any run: {top:.4f}")
    met = best.get("test/acc", 0) >= TARGET_ACC and wall_s <= TARGET_S
    print(f"target (best run >= {TARGET_ACC:.1%} test, sweep <= {TARGET_S / 60:.0f} min): "
          f"{'met' if met else 'NOT met'}")
    print("\n| published (Zalando's README) | test acc | ours, best run | ratio of errors |")
    print("| --- | ---: | ---: | ---: |")
    for name, acc in PUBLISHED:
        ours = best.get("test/acc", 0.0)
        print(f"| {name} | {acc:.3f} | {ours:.4f} | {(1 - ours) / (1 - acc):.2f}x |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep = load_sweep_config(args.sweep)
    print(f"{args.sweep} on {describe_device(args.device)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fashion-bench-") as work:
        runs, wall_s = run_sweep(args, sweep, Path(work))
    if args.out:
        write_results(args.out, sweep, runs, wall_s, args)
    print_table(sweep, runs, wall_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
