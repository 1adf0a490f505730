"""Train images/s: K plain models trained one after the other against one packed model of K.

Both run in this one process on the same device, model configuration, batch size and steps:
  reference: K models built by MODELS, each trained alone with its torch.optim optimizer
             (torch's default foreach implementation), one after the other.
  packed:    nn.packed.pack_models of the same K models trained together with the packed
             optimizer of nn.optimizers (per-member hyper-parameters), loss = sum over members.
Each member trains on its own fixed batch already on the device (no data work), so this is the
model-and-optimizer speed that HFTA's fusion changes. Prints images/s of both and the ratio
(median step of chunks timed alternately, see measure()). A measurement, not a test.

    python benchmarks/bench_packed_model.py [--models dense cnn] [--members 1 4 16]
        [--steps 12] [--optimizer sgd] [--threads 0] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from agent.params import validate  # noqa: E402
from nn.models import MODELS  # noqa: E402
from nn.optimizers import OPTIMIZERS, plain_optimizer  # noqa: E402
from nn.packed import pack_models, packed_cross_entropy  # noqa: E402
from util.device import pick_device  # noqa: E402

SHAPE = (1, 28, 28)  # Fashion-MNIST's images, the course's data set


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _configs(args, model: str, members: int) -> list:
    extra = {"cnn": {"channels": args.channels}, "resnet": {"width": args.width}}.get(model, {})
    # members differ in lr and momentum, as a sweep's members would
    return [validate({"model": model, "optimizer": args.optimizer, "dropout": args.dropout,
                      "lr": 0.01 * (1 + k), "momentum": 0.9 - 0.01 * k, **extra})
            for k in range(members)]


def _batches(members: int, batch: int, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, members, *SHAPE, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch, members), generator=generator).to(device)
    return images, labels


class PlainMembers:
    """K models built by MODELS, each with its torch optimizer: the way trials run today."""

    def __init__(self, cfgs, device, images, labels):
        self.device = device
        self.members = []
        for k, cfg in enumerate(cfgs):
            model = MODELS[cfg.model](cfg, SHAPE, 10).to(device)
            self.members.append((model, plain_optimizer(model.parameters(), cfg),
                                 images[:, k].contiguous(), labels[:, k].contiguous()))

    def steps(self, k: int, count: int) -> None:
        model, optimizer, x, y = self.members[k]
        for _ in range(count):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(self.device)


class PackedMembers:
    """One PackedModel of the K members with the packed optimizer of the same kind."""

    def __init__(self, cfgs, device, images, labels):
        self.device, self.images, self.labels = device, images, labels
        self.pack = pack_models([MODELS[c.model](c, SHAPE, 10) for c in cfgs]).to(device)
        self.pack.set_generators([torch.Generator(device).manual_seed(k)
                                  for k in range(len(cfgs))])
        self.optimizer = OPTIMIZERS[cfgs[0].optimizer](self.pack.parameters(), cfgs)

    def steps(self, count: int) -> None:
        for _ in range(count):
            loss = packed_cross_entropy(self.pack(self.images), self.labels).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _sync(self.device)


def _seconds(run, count: int) -> float:
    started = time.perf_counter()
    run(count)
    return time.perf_counter() - started


def measure(cfgs, device, batch: int, steps: int, chunk: int) -> tuple[float, float]:
    """Seconds per step of K plain models one after the other and of the pack.

    The two sides alternate chunk by chunk (each timed chunk ends in a device sync) and each
    side's time is the median chunk, so that load from other jobs on a shared machine hits
    both alike and one disturbed chunk does not decide the result."""
    images, labels = _batches(len(cfgs), batch, device)
    plain = PlainMembers(cfgs, device, images, labels)
    packed = PackedMembers(cfgs, device, images, labels)
    for k in range(len(cfgs)):  # warm-up: allocator, kernels, optimizer state
        plain.steps(k, 2)
    packed.steps(2)
    plain_chunks = [[] for _ in cfgs]
    packed_chunks = []
    for _ in range(max(1, steps // chunk)):
        for k in range(len(cfgs)):
            plain_chunks[k].append(_seconds(lambda n, k=k: plain.steps(k, n), chunk) / chunk)
        packed_chunks.append(_seconds(packed.steps, chunk) / chunk)
    plain_step = sum(statistics.median(times) for times in plain_chunks)
    return plain_step, statistics.median(packed_chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dense", "cnn"],
                        choices=sorted(MODELS))
    parser.add_argument("--members", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per side")
    parser.add_argument("--chunk", type=int, default=None,
                        help="steps per timed chunk (default: all on CUDA, 1 on a CPU)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per member and step (default 256 on CUDA, 64 on CPU)")
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="cnn widths (default 64 128 256 on CUDA, 16 32 64 on CPU)")
    parser.add_argument("--width", type=int, default=None,
                        help="resnet width (default 64 on CUDA, 8 on CPU)")
    parser.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZERS))
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (256 if cuda else 64)
    args.channels = args.channels or ([64, 128, 256] if cuda else [16, 32, 64])
    args.width = args.width or (64 if cuda else 8)
    chunk = args.chunk or (args.steps if cuda else 1)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch} per member, {args.steps} steps in chunks of {chunk}, "
          f"optimizer {args.optimizer}, dropout {args.dropout}, cnn channels {args.channels}, "
          f"resnet width {args.width}, images {SHAPE}")
    print(f"{'model':8} {'K':>3} {'K plain img/s':>14} {'packed img/s':>13} {'ratio':>6}")
    for model in args.models:
        for members in args.members:
            cfgs = _configs(args, model, members)
            plain_step, packed_step = measure(cfgs, device, args.batch, args.steps, chunk)
            images = members * args.batch
            print(f"{model:8} {members:>3} {images / plain_step:>14.0f} "
                  f"{images / packed_step:>13.0f} {plain_step / packed_step:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
