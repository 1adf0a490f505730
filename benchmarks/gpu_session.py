"""Every GPU measurement of the benchmarks, as one script for a lent CUDA machine.

A device session is short (15 minutes, its start included), so the measurements come in
parts, each under the device tool's 600 s a command (`--budget`), in the order they matter:
  part 1: the course grid four ways (bench_sweep_throughput: packed first, then one agent, a
          new process per trial, 4 agents; nvidia-smi utilisation), ~5-6 minutes;
  part 2: the Fashion-MNIST recipe (bench_fashion_mnist_gpu: best run >= 95% in 10 minutes);
  part 3: trial-loop throughput against the model-only ceiling and the DataLoader pipeline
          (bench_trial_throughput), fused vs one-after-the-other members (bench_packed_model),
          whole trials alone vs packed (bench_packed_trials), per-trial overhead by stage
          (profile_trial_overhead), ~5 minutes;
  part 4: eager against torch.compile and CUDA graphs on the packed step (bench_compile),
          compilation time included (~4 minutes), and what `--pack auto` chooses against
          whole trials at every size (bench_pack_auto, ~1 minute).
Each writes its output to OUT/<name>.txt (OUT: --out, else $OUT). Runs unchanged on a CUDA
machine without network or wandb (../shared/gpu/README.md):

    source .gpu/setup.sh && python3 benchmarks/gpu_session.py --part 2
    python benchmarks/gpu_session.py --part 1 --smoke     # here, on a CPU: tiny sizes

A measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BUDGET_S = 570.0  # a part's steps together: the device tool's 600 s less setup.sh's start
MIN_STEP_S = 15.0  # a step with less of the budget left is skipped, not started

# (name, seconds allowed, arguments, arguments for a smoke run on a CPU)
PARTS = {
    "1": [
        ("sweep_throughput", 560, ["benchmarks/bench_sweep_throughput.py",
                                   "--ways", "d,b,a,c", "--subprocess-sample", "6"],
         ["benchmarks/bench_sweep_throughput.py", "--cpu-grid", "--subprocess-sample", "1",
          "--ways", "a,d"]),
    ],
    "2": [
        # under the device tool's 600 s a command: each run's line is in the log as it ends
        ("fashion_mnist_recipe", 575, ["benchmarks/bench_fashion_mnist_gpu.py"],
         ["benchmarks/bench_fashion_mnist_gpu.py", "--set", "epochs=1", "--set",
          "train_subset=512", "--set", "width=4", "--max-runs", "1"]),
    ],
    "3": [
        ("trial_throughput", 120, ["benchmarks/bench_trial_throughput.py", "--images", "25600"],
         ["benchmarks/bench_trial_throughput.py", "--images", "1280", "--epochs", "1"]),
        ("packed_model", 90, ["benchmarks/bench_packed_model.py", "--members", "1", "4", "16",
                              "64"],
         ["benchmarks/bench_packed_model.py", "--members", "1", "2", "--steps", "2"]),
        ("packed_trials", 75, ["benchmarks/bench_packed_trials.py", "--dataset",
                               "fashion_mnist", "--model", "cnn", "--channels", "32", "64",
                               "--members", "4", "16", "--epochs", "1", "--repeats", "1"],
         ["benchmarks/bench_packed_trials.py", "--model", "cnn", "--channels", "4", "8",
          "--members", "2", "--epochs", "1", "--repeats", "1"]),
        ("trial_overhead", 60, ["benchmarks/profile_trial_overhead.py", "--sinks",
                                "tensorboard", "--trials", "8"],
         ["benchmarks/profile_trial_overhead.py", "--sinks", "tensorboard", "--trials", "2"]),
    ],
    "4": [
        ("compile", 300, ["benchmarks/bench_compile.py", "--members", "1", "16"],
         ["benchmarks/bench_compile.py", "--smoke", "--models", "dense", "--members", "2"]),
        ("pack_auto", 120, ["benchmarks/bench_pack_auto.py", "--dataset", "fashion_mnist",
                            "--model", "cnn", "--channels", "32", "64", "--epochs", "1",
                            "--largest", "32"],
         ["benchmarks/bench_pack_auto.py", "--hidden", "16", "--epochs", "1", "--largest",
          "4"]),
    ],
}


def run(name: str, limit: float, args: list[str], out: Path) -> str:
    """One step in its own process group, its output in OUT/<name>.txt. At its limit (or when
    this script is stopped) the whole group is ended: a step's own children (agents, a
    launcher, DataLoader workers, nvidia-smi) must not keep the GPU busy for the next one."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
           "OUT": str(out), "PYTHONUNBUFFERED": "1"}
    with open(out / f"{name}.txt", "w") as log:
        child = subprocess.Popen([PY, *args], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        _RUNNING[:] = [child]
        try:
            status = f"exit {child.wait(timeout=limit)}"
        except subprocess.TimeoutExpired:
            status = f"stopped at its {limit:.0f} s limit"
        finally:
            _end_group(child)
            _RUNNING.clear()
    return f"{name}: {status} after {time.perf_counter() - started:.0f} s"


_RUNNING: list[subprocess.Popen] = []


def _end_group(child: subprocess.Popen) -> None:
    """SIGTERM to the step's process group, SIGKILL to what is left 5 s later."""
    for signum, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            break  # nothing of the group is left
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            child.poll()  # reaped: a zombie leader would keep its group "alive"
            try:
                os.killpg(child.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _stopped(signum, frame):
    for child in list(_RUNNING):
        _end_group(child)
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="1")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-results")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to try it on a CPU")
    parser.add_argument("--only", default=None, help="comma-separated names of one part")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="seconds for the whole part: a step's limit is cut to what is "
                        "left, a step with under 15 s left is skipped (the device tool ends "
                        "a command at 600 s, the session's setup included)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    deadline = time.perf_counter() + args.budget
    lines = []
    summary = out / f"part{args.part}.txt"
    for name, limit, full, smoke in PARTS[args.part]:
        if args.only and name not in args.only.split(","):
            continue
        left = deadline - time.perf_counter()
        if left < MIN_STEP_S:
            line = f"{name}: skipped, {left:.0f} s of the part's {args.budget:.0f} s left"
        else:
            line = run(name, min(limit, left), smoke if args.smoke else full, out)
        print(line, flush=True)
        lines.append(line)
        summary.write_text("\n".join(lines) + "\n")  # after every step: partial results stay


if __name__ == "__main__":
    main()
