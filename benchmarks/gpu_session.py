"""Every GPU measurement of the benchmarks, as one script for a lent CUDA machine.

A device session is short (15 minutes, its start included), so the measurements come in
parts of up to 9 minutes each, in the order they matter, each under its own time limit:
  part 1: trial-loop throughput against the model-only ceiling and the DataLoader pipeline
          (bench_trial_throughput), fused vs one-after-the-other members (bench_packed_model),
          whole trials alone vs packed (bench_packed_trials), per-trial overhead by stage
          (profile_trial_overhead), and the course grid four ways (bench_sweep_throughput:
          a new process per trial, one agent, 4 agents, packed);
  part 2: the Fashion-MNIST recipe (bench_fashion_mnist_gpu: best run >= 95% in 10 minutes);
  part 3: eager against torch.compile and CUDA graphs on the packed step (bench_compile),
          compilation time included (~4 minutes), and what `--pack auto` chooses against
          whole trials at every size (bench_pack_auto, ~1 minute).
Each writes its output to OUT/<name>.txt (OUT: --out, else $OUT). Runs unchanged on a CUDA
machine without network or wandb (../shared/gpu/README.md):

    source .gpu/setup.sh && python3 benchmarks/gpu_session.py --part 1
    python benchmarks/gpu_session.py --part 1 --smoke     # here, on a CPU: tiny sizes

A measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# (name, seconds allowed, arguments, arguments for a smoke run on a CPU)
PARTS = {
    "1": [
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
        ("sweep_throughput", 300, ["benchmarks/bench_sweep_throughput.py",
                                   "--subprocess-sample", "6"],
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
        ("compile", 300, ["benchmarks/bench_compile.py", "--members", "1", "16"],
         ["benchmarks/bench_compile.py", "--smoke", "--models", "dense", "--members", "2"]),
        ("pack_auto", 120, ["benchmarks/bench_pack_auto.py", "--dataset", "fashion_mnist",
                            "--model", "cnn", "--channels", "32", "64", "--epochs", "1",
                            "--largest", "64"],
         ["benchmarks/bench_pack_auto.py", "--hidden", "16", "--epochs", "1", "--largest",
          "4"]),
    ],
}


def run(name: str, limit: int, args: list[str], out: Path) -> str:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
           "OUT": str(out), "PYTHONUNBUFFERED": "1"}
    with open(out / f"{name}.txt", "w") as log:
        try:
            done = subprocess.run([PY, *args], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=limit)
            status = f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            status = f"stopped at its {limit} s limit"
    return f"{name}: {status} after {time.perf_counter() - started:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="1")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-results")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to try it on a CPU")
    parser.add_argument("--only", default=None, help="comma-separated names of one part")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, limit, full, smoke in PARTS[args.part]:
        if args.only and name not in args.only.split(","):
            continue
        line = run(name, limit, smoke if args.smoke else full, out)
        print(line, flush=True)
        lines.append(line)
    (out / f"part{args.part}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
