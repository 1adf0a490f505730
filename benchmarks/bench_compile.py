"""Eager against torch.compile (and, on a GPU, CUDA graphs) for a packed model's training step.

Issue 10 asks for CUDA graphs or `torch.compile` where they pay: this measures both on the
trial's own step (a PackedModel of K members, packed cross-entropy summed over members, the
packed optimizer of nn.optimizers), each member on its own fixed batch already on the device,
and prints per variant: the first step's seconds (compilation or capture included: a trial
pays it once per architecture and pack size), the steady step's images/s, the ratio to eager,
and the number of steps after which the variant has paid for its first step. Variants:

  eager            what trials run today
  compile          torch.compile(model), default mode (Inductor); optimizer step eager
  compile-max      torch.compile(model, mode="max-autotune-no-cudagraphs") (GPU only)
  cuda-graph       the whole step (forward, backward, optimizer) captured once with
                   torch.cuda.graph and replayed (GPU only)

A variant that fails says why in its row instead of stopping the others. A measurement, not a
test; `--smoke` runs tiny sizes to check the script itself.

    python benchmarks/bench_compile.py [--models dense cnn] [--members 1 16] [--steps 30]
        [--batch 256] [--optimizer sgd] [--variants eager,compile,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agent.params import validate  # noqa: E402
from nn.models import MODELS  # noqa: E402
from nn.optimizers import OPTIMIZERS  # noqa: E402
from nn.packed import pack_models, packed_cross_entropy  # noqa: E402
from util.device import pick_device  # noqa: E402

SHAPE = (1, 28, 28)  # Fashion-MNIST's images, the course's data set


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(model: str, members: int, args, device: torch.device):
    extra = {"cnn": {"channels": args.channels}}.get(model, {})
    cfgs = [validate({"model": model, "optimizer": args.optimizer, "lr": 0.01 * (1 + k),
                      "momentum": 0.9 - 0.01 * k, **extra}) for k in range(members)]
    torch.manual_seed(0)
    pack = pack_models([MODELS[c.model](c, SHAPE, 10) for c in cfgs]).to(device)
    pack.set_generators([torch.Generator(device).manual_seed(k) for k in range(members)])
    optimizer = OPTIMIZERS[args.optimizer](pack.parameters(), cfgs)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, members, *SHAPE, generator=generator).to(device)
    labels = torch.randint(0, 10, (args.batch, members), generator=generator).to(device)
    return pack, optimizer, images, labels


def eager_step(forward, optimizer, images, labels):
    def step():
        loss = packed_cross_entropy(forward(images), labels).sum()
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
    return step


def variant_step(name: str, pack, optimizer, images, labels, device):
    """(the step to time, seconds its first call took: for a CUDA graph, its warm-up steps
    and capture included)."""
    started = time.perf_counter()
    if name == "eager":
        step = eager_step(pack, optimizer, images, labels)
    elif name == "compile":
        step = eager_step(torch.compile(pack), optimizer, images, labels)
    elif name == "compile-max":
        step = eager_step(torch.compile(pack, mode="max-autotune-no-cudagraphs"), optimizer,
                          images, labels)
    elif name == "cuda-graph":
        step = graphed_step(pack, optimizer, images, labels, device)
    else:
        raise ValueError(name)
    step()
    _sync(device)
    return step, time.perf_counter() - started


def graphed_step(pack, optimizer, images, labels, device):
    """The whole step captured once (after warm-up steps on a side stream, as torch's CUDA
    graph notes require) and replayed on the same static input tensors."""
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    step = eager_step(pack, optimizer, images, labels)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def timed(step, device, steps: int, chunk: int) -> float:
    """Median seconds per step over chunks, each chunk ending in a device sync."""
    for _ in range(3):
        step()
    _sync(device)
    times = []
    for _ in range(max(1, steps // chunk)):
        started = time.perf_counter()
        for _ in range(chunk):
            step()
        _sync(device)
        times.append((time.perf_counter() - started) / chunk)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dense", "cnn"])
    parser.add_argument("--members", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=None, help="per member (256 GPU, 64 CPU)")
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="cnn widths (default 32 64 128 on CUDA, 16 32 on CPU)")
    parser.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZERS))
    parser.add_argument("--variants", default=None,
                        help="comma-separated (default: eager,compile on a CPU; all on CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (8 if args.smoke else 256 if cuda else 64)
    args.channels = args.channels or ([4, 8] if args.smoke else [32, 64, 128] if cuda
                                       else [16, 32])
    steps = 3 if args.smoke else args.steps
    chunk = steps if cuda else 1
    variants = (args.variants or ("eager,cuda-graph,compile,compile-max" if cuda
                                  else "eager,compile")).split(",")
    lines = [f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"batch {args.batch} per member, optimizer {args.optimizer}, cnn channels "
             f"{args.channels}, images {SHAPE}, {steps} timed steps", "",
             "| model | K | variant | first step s | img/s | vs eager | pays after steps |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    print("\n".join(lines), flush=True)
    for model in args.models:
        for members in args.members:
            eager = None
            for name in variants:
                torch._dynamo.reset() if "torch._dynamo" in sys.modules else None
                try:
                    pack, optimizer, images, labels = build(model, members, args, device)
                    step, first = variant_step(name, pack, optimizer, images, labels, device)
                    seconds = timed(step, device, steps, chunk)
                except Exception as error:  # a variant that does not run here: say why
                    line = (f"| {model} | {members} | {name} | failed: "
                            f"{type(error).__name__}: {str(error).splitlines()[0][:90]} "
                            "| | | |")
                else:
                    if name == "eager":
                        eager = (first, seconds)
                    ratio = eager[1] / seconds if eager else float("nan")
                    gain = eager[1] - seconds if eager else 0.0
                    pays = (f"{max(0.0, first - eager[0]) / gain:,.0f}" if eager and gain > 0
                            else "never" if eager and name != "eager" else "-")
                    line = (f"| {model} | {members} | {name} | {first:.2f} | "
                            f"{members * args.batch / seconds:,.0f} | {ratio:.2f}x | {pays} |")
                lines.append(line)
                print(line, flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "compile.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
