"""A whole sweep, four ways, side by side: how fast does a course grid finish?

(a) a new Python process per trial, as `wandb agent` runs a program (`python -m agent.train`);
(b) one in-process agent (`./run_sweep.sh grid.yaml --agents 1`);
(c) several agents sharing the device (4 per GPU; on a CPU, 2 agents splitting the cores);
(d) packed trials: one agent training compatible runs as one fused model (`--pack`).
Each prints wall time, trials per hour, images per second (all trials' training images over
the wall time) and, on a GPU, mean utilisation sampled from nvidia-smi while it runs; (b)-(d)
also the span from their first run's start to their last run's end, read from the store (the
sweep without the start-up of its processes, which every way pays once).

The grid is the course's: model {dense, cnn} x lr {1e-1..1e-5} x optimizer {sgd, adam} x
dropout {0, .1, .3, .5}, 2 epochs, on real Fashion-MNIST (80 runs); `--cpu-grid` is a smaller
one on scikit-learn's digits (24 runs) for machines without a GPU, with the models' default
widths; `--small` trains the narrow models a CPU packs well (dense hidden 64, cnn channels
[16, 32]: their steps are per-step overhead, not arithmetic), `--epochs` sets the epochs.
Way (a) runs `--subprocess-sample` trials of the grid and scales their mean to the whole grid
(said in the table); `--random RUNS` makes it a random sweep of RUNS runs over the same
values, where kinds of pack come by chance. Runs unchanged on a CUDA machine without network
or wandb: every way uses the TensorBoard sink only. A measurement, not a test.

    python benchmarks/bench_sweep_throughput.py [--cpu-grid] [--small] [--epochs N]
        [--out DIR] [--ways a,b,c,d] [--values NAME=V1,V2,...] [--random RUNS]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

COURSE_GRID = {"model": ["dense", "cnn"], "lr": [0.1, 0.01, 0.001, 0.0001, 0.00001],
               "optimizer": ["sgd", "adam"], "dropout": [0.0, 0.1, 0.3, 0.5]}
CPU_GRID = {"model": ["dense", "cnn"], "lr": [0.1, 0.01, 0.001],
            "optimizer": ["sgd", "adam"], "dropout": [0.0, 0.3]}


def child_env() -> dict:
    """The environment of the processes a way starts: the project first on PYTHONPATH, the
    rest kept (on the GPU machine .gpu/setup.sh puts the sweep engine's wheels there)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT),
            "WANDB_MODE": "disabled"}


def sweep_yaml(grid: dict, fixed: dict, random_runs: int | None = None) -> dict:
    """The grid as a sweep; with `random_runs`, a random sweep of that many runs (run_cap)
    drawing each parameter from the grid's values."""
    method = {"method": "random", "run_cap": random_runs} if random_runs else \
        {"method": "grid"}
    return {"name": "bench-grid", **method,
            "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {**{k: {"value": v} for k, v in fixed.items()},
                           **{k: {"values": v} for k, v in grid.items()}}}


class GpuSampler:
    """Mean GPU utilisation (%) from `nvidia-smi` every 200 ms while it runs; None without."""

    def __init__(self):
        self.samples: list[float] = []
        self.process = None
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def stop(self) -> float | None:
        if self.process is None:
            return None
        self.process.terminate()
        self.process.wait()
        return sum(self.samples) / len(self.samples) if self.samples else None


def trained_images(store: Path) -> tuple[int, int, float]:
    """(finished runs, training images they went through, seconds from the first run's
    start to the last run's end) from a local sweep store."""
    db = sqlite3.connect(store)
    rows = db.execute("SELECT state, summary, started, ended FROM runs").fetchall()
    images = 0
    for _, summary, _, _ in rows:
        if summary:
            s = json.loads(summary)
            images += int((s.get("perf/images_per_s") or 0) * (s.get("perf/train_s") or 0))
    span = max(row[3] for row in rows) - min(row[2] for row in rows)
    return sum(1 for row in rows if row[0] in ("finished", "stopped")), images, span


def run_launcher(work: Path, sweep: dict, options: list[str]) -> dict:
    work.mkdir(parents=True)
    (work / "grid.yaml").write_text(yaml.safe_dump(sweep))
    env = child_env()
    sampler = GpuSampler()
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "agent.launch", "grid.yaml", *options],
                              cwd=work, env=env, capture_output=True, text=True)
    finally:
        wall = time.perf_counter() - started
        utilisation = sampler.stop()
    if done.returncode != 0:
        raise SystemExit(f"launcher {options} failed:\n{done.stderr[-3000:]}")
    (store,) = (work / "data" / "sweeps").glob("*/sweep.db")
    finished, images, span = trained_images(store)
    # runs trained together share a pack id: how many trials (packs and runs alone) it took
    (trials,) = sqlite3.connect(store).execute(
        "SELECT COUNT(DISTINCT COALESCE(pack, id)) FROM runs WHERE state != 'pending'"
    ).fetchone()
    note = f"{trials} trials" if "--pack" in options else None
    return {"wall_s": wall, "trials": finished, "images": images, "gpu_util": utilisation,
            "trials_s": span, "note": note}


def run_subprocesses(work: Path, grid: dict, fixed: dict, sample: int) -> dict:
    work.mkdir(parents=True)
    env = child_env()
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    chosen = points[:: max(1, len(points) // sample)][:sample]
    sampler = GpuSampler()
    try:
        walls, images = _subprocess_trials(work, env, chosen, fixed)
    finally:
        utilisation = sampler.stop()
    scale = len(points) / len(chosen)
    return {"wall_s": sum(walls) * scale, "trials": len(points), "images": images * scale,
            "gpu_util": utilisation, "note": f"{len(chosen)} of {len(points)} trials run, "
            "scaled to the grid"}


def _subprocess_trials(work: Path, env: dict, chosen: list[dict],
                       fixed: dict) -> tuple[list[float], int]:
    walls, images = [], 0
    for k, point in enumerate(chosen):
        args = [f"--{name}={json.dumps(value) if isinstance(value, list) else value}"
                for name, value in {**fixed, **point}.items()]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "agent.train", *args, f"--run_id=sub{k}"],
                              cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"trial {k} failed:\n{done.stderr[-3000:]}")
        walls.append(time.perf_counter() - started)
        summary = json.loads((work / "data" / "runs" / f"sub{k}" / "summary.json").read_text())
        images += int(summary.get("perf/images_per_s", 0) * summary.get("perf/train_s", 0))
    return walls, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-grid", action="store_true", help="digits, 24 runs (no GPU)")
    parser.add_argument("--small", action="store_true",
                        help="narrow models: dense hidden 64, cnn channels [16, 32]")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ways", default="a,b,c,d",
                        help="which ways to run, of a (a new process per trial), b (one "
                        "in-process agent), c (several agents sharing the device), d (packed)")
    parser.add_argument("--pack", default="auto", help="--pack value for way (d)")
    parser.add_argument("--values", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="the grid's values of one parameter instead of the default ones "
                        "(a larger grid: --values lr=0.3,0.1,0.03,0.01,0.003,0.001)")
    parser.add_argument("--random", type=int, default=None, metavar="RUNS",
                        help="a random sweep of RUNS runs (run_cap) over the grid's values "
                        "instead of the grid: kinds of pack then come by chance")
    parser.add_argument("--subprocess-sample", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.is_available()
    grid = dict(CPU_GRID if args.cpu_grid else COURSE_GRID)
    for option in args.values:
        name, _, values = option.partition("=")
        if name not in grid or not values:
            parser.error(f"--values {option}: expected one of {', '.join(grid)}=V1,V2,...")
        grid[name] = [yaml.safe_load(v) for v in values.split(",")]
    fixed = {"dataset": "digits" if args.cpu_grid else "fashion_mnist", "epochs": args.epochs,
             "sinks": ["tensorboard"], "data_dir": str(ROOT / "data"), "histograms": False}
    if args.small:
        fixed.update(hidden=64, channels=[16, 32])
    sweep = sweep_yaml(grid, fixed, args.random)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    # the dataset decoded once, before any way is timed
    subprocess.run([sys.executable, "-m", "agent.train", f"--dataset={fixed['dataset']}",
                    f"--data_dir={fixed['data_dir']}", "--epochs=1", "--train_subset=256",
                    "--sinks=[]", f"--run_dir={work / 'warm'}"],
                   cwd=work, env=child_env(), check=True, stdout=subprocess.DEVNULL)
    ways = {
        "a": ("a new process per trial", lambda: run_subprocesses(
            work / "a", grid, fixed, args.subprocess_sample)),
        "b": ("one in-process agent", lambda: run_launcher(work / "b", sweep, ["--agents", "1"]
                                                           if not gpu else [])),
        "c": (("4 agents per GPU" if gpu else "2 agents sharing the CPU"), lambda: run_launcher(
            work / "c", sweep, ["--agents-per-gpu", "4"] if gpu else ["--agents", "2"])),
        "d": (f"packed (--pack {args.pack})", lambda: run_launcher(
            work / "d", sweep, ["--pack", args.pack] + ([] if gpu else ["--agents", "1"]))),
    }
    results = {}
    for key in args.ways.split(","):
        label, run = ways[key]
        print(f"running ({key}) {label} ...", flush=True)
        try:
            results[key] = (label, run())
        except (Exception, SystemExit) as error:  # the other ways still run
            print(f"({key}) failed: {str(error)[-3000:]}", flush=True)
            continue
        # the table so far after every way: a run stopped at its time limit keeps its rows
        table = render(results, grid, fixed, gpu, args.random)
        print(table, flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "sweep_throughput.md").write_text(table + "\n")
    if len(results) < len(args.ways.split(",")):
        raise SystemExit(1)


def render(results: dict, grid: dict, fixed: dict, gpu: bool,
           random_runs: int | None = None) -> str:
    runs = 1
    for values in grid.values():
        runs *= len(values)
    widths = "".join(f", {k} {fixed[k]}" for k in ("hidden", "channels") if k in fixed)
    what = f"random: {random_runs} runs" if random_runs else f"grid: {runs} runs"
    drawn = "drawn from " if random_runs else ""
    lines = [f"{what} of {fixed['dataset']}, {fixed['epochs']} epochs{widths}, {drawn}"
             + " x ".join(f"{k} {v}" for k, v in grid.items()),
             "", "| way | wall s | trials/hour | images/s | mean GPU util | vs (a) | vs (b) "
             "| trials s | trials vs (b) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base_a = results.get("a", (None, {}))[1].get("wall_s")
    base_b = results.get("b", (None, {}))[1].get("wall_s")
    span_b = results.get("b", (None, {}))[1].get("trials_s")
    for key, (label, r) in results.items():
        util = f"{r['gpu_util']:.0f}%" if r.get("gpu_util") is not None else "-"
        ratio_a = f"{base_a / r['wall_s']:.2f}x" if base_a else "-"
        ratio_b = f"{base_b / r['wall_s']:.2f}x" if base_b else "-"
        span = f"{r['trials_s']:.1f}" if r.get("trials_s") else "-"
        span_ratio = f"{span_b / r['trials_s']:.2f}x" if span_b and r.get("trials_s") else "-"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| ({key}) {label}{note} | {r['wall_s']:.1f} | "
                     f"{3600 * r['trials'] / r['wall_s']:.0f} | {r['images'] / r['wall_s']:,.0f}"
                     f" | {util} | {ratio_a} | {ratio_b} | {span} | {span_ratio} |")
    lines += ["", "trials s: from the first run's start to the last run's end (the store's "
              "timestamps): the sweep without its processes' start-up."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
