"""Train images/s: this project's trial runner against the usual torchvision pipeline.

Both run in this one process on the same CIFAR-format files, the same model and batch size:
  reference: torchvision CIFAR10 + DataLoader(num_workers=2) with PIL transforms
             RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize; a plain loop.
  ours:      agent.trial.train (device-cached uint8 data, whole-batch crop/flip/normalise,
             with all its metering), augment=True, the throughput it reports for its epochs.
Uses real CIFAR-10 when data/cifar-10-batches-py exists, else a CIFAR-format stand-in of the
same image shape. Prints images/s of each and the ratio. A measurement, not a test.

    python benchmarks/bench_trial_throughput.py [--models dense cnn] [--images 10240]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from agent.params import validate  # noqa: E402
from agent.trial.loop import train  # noqa: E402
from nn.models import MODELS  # noqa: E402
from util.cifar_files import register_fixture, write_cifar10  # noqa: E402
from util.device import pick_device  # noqa: E402

BATCH = 256
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# "dense" is the default 3-layer MLP (hidden 512); dense-128 the small one of MNIST courses.
MODEL_ARGS = {"dense": {"model": "dense"},
              "dense-128": {"model": "dense", "hidden": 128},
              "cnn": {"model": "cnn", "channels": [32, 64, 128]}}


def reference_images_per_s(data_dir: str, model_args: dict, device: torch.device,
                           epochs: int) -> float:
    import torchvision.transforms as T
    from torchvision.datasets import CIFAR10

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    dataset = CIFAR10(data_dir, train=True, transform=transform, download=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                         num_workers=2, drop_last=True,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=True)
    cfg = validate({**model_args, "dataset": "cifar10"})
    model = MODELS[cfg.model](cfg, (3, 32, 32), 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        seen, started = 0, time.perf_counter()
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - started))
    return max(rates[1:] or rates)  # the first epoch pays for worker start-up


def model_only_images_per_s(model_args: dict, device: torch.device, steps: int = 30) -> float:
    """The ceiling: training steps on one fixed batch already on the device, no data work."""
    cfg = validate({**model_args, "dataset": "cifar10"})
    model = MODELS[cfg.model](cfg, (3, 32, 32), 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images = torch.randn(BATCH, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (BATCH,), device=device)
    for step in range(steps + 3):
        if step == 3:  # after warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - started)


def ours_images_per_s(data_dir: str, model_args: dict, work: Path, epochs: int) -> float:
    summary = train({**model_args, "dataset": "cifar10", "data_dir": data_dir,
                     "batch_size": BATCH, "augment": True, "epochs": epochs,
                     "optimizer": "sgd", "val_split": 0.0, "sinks": [],
                     "log_dir": str(work / "logs"), "run_dir": str(work / "runs"),
                     "checkpoint": False, "histograms": False})
    return summary["perf/images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_ARGS), choices=MODEL_ARGS)
    parser.add_argument("--images", type=int, default=10240,
                        help="training images of the stand-in set (real CIFAR-10: 50000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()

    device = pick_device("auto")
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    data_dir = args.data_dir
    if not (Path(data_dir) / "cifar-10-batches-py").exists():
        data_dir = str(work / "data")
        register_fixture(write_cifar10(data_dir, per_batch=args.images // 5,
                                       test_size=1000))
        source = f"CIFAR-format stand-in, {args.images} train images"
    else:
        source = "real CIFAR-10"
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else ''}"
          f"{torch.get_num_threads()} threads), torch {torch.__version__}, {source}, "
          f"batch {BATCH}")
    print(f"{'model':<9} {'reference img/s':>16} {'ours img/s':>12} {'ratio':>7} "
          f"{'model-only ceiling':>19}")
    for name in args.models:
        ours = ours_images_per_s(data_dir, MODEL_ARGS[name], work, args.epochs)
        reference = reference_images_per_s(data_dir, MODEL_ARGS[name], device, args.epochs)
        ceiling = model_only_images_per_s(MODEL_ARGS[name], device)
        print(f"{name:<9} {reference:>16,.0f} {ours:>12,.0f} {ours / reference:>6.2f}x "
              f"{ceiling:>15,.0f} ({ceiling / reference:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
