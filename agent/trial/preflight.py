"""Before a trial loads data or allocates anything: can this pack train on this device at all?

The model is built on torch's `meta` device (shapes only, no memory) to count its parameters, and
its activations are measured in one forward pass (on two real images for a model that is cheap to
build, on a meta batch for a larger one), both exactly; with the optimizer's state,
the learning-rate table and the data this estimates the memory the pack needs. A pack that
cannot fit is refused in one line (UserError) instead of failing minutes into its first epoch.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from nn.models import MODELS
from util.errors import UserError

# What each image set holds, known without reading it: (image shape (C, H, W), classes,
# images in its training and test sets). A set found in a user's files (dataset_dir) holds no
# more than the official one.
IMAGE_SETS = {
    "cifar10": ((3, 32, 32), 10, 60000), "cifar100": ((3, 32, 32), 100, 60000),
    "mnist": ((1, 28, 28), 10, 70000), "fashion_mnist": ((1, 28, 28), 10, 70000),
    "digits": ((1, 8, 8), 10, 1797),
}
# fp32 copies of the weights a member keeps while it trains: the weights, their gradients,
# and the optimizer's state (momentum; Adam's two moments; SAM's saved weights on top).
COPIES = {"sgd": 3, "rmsprop": 4, "adam": 4, "adamw": 4}
SAM_COPIES = 1
# Activations are kept for the backward pass and a gradient of each is made: twice their size,
# and as much again for what autograd saves beside them (masks, norms' statistics).
ACTIVATION_FACTOR = 4
MEMORY_SHARE = 0.9  # of the device's memory a trial may plan to use


_SIZES: dict[tuple, tuple[int, int]] = {}


def model_size(config, shape: tuple[int, int, int], classes: int, batch: int) -> tuple[int, int]:
    """(parameters, activation values of one forward pass of `batch` images) of the plain
    model `config` asks for, measured on the meta device (no memory is allocated) once per
    architecture in a process (a meta forward costs 0.1-0.5 s on a CPU)."""
    from agent.trial.member import pack_key

    key = (pack_key(config), shape, classes, batch)
    if key not in _SIZES:
        _SIZES[key] = _measured_size(config, shape, classes, batch)
    return _SIZES[key]


# Up to this many parameters a model is also built on the CPU to measure its activations on a
# batch of two images (a few ms); a larger one is measured on the meta device, whose forward
# pass runs torch's Python decompositions and imports torch._dynamo (~1.2 s, once a process).
REAL_FORWARD_PARAMS = 50_000_000
PROBE_BATCH = 2  # batch norm in training mode needs two values a channel


def _probe_model(config, shape: tuple[int, int, int], classes: int):
    """(the model `config` asks for, its parameter count, the device it is on): built on
    the CPU up to REAL_FORWARD_PARAMS (its initial weights drawn without touching the
    process's random stream), else left on the meta device."""
    with torch.device("meta"):
        model = MODELS[config.model](config, shape, classes)
    params = sum(p.numel() for p in model.parameters())
    if params > REAL_FORWARD_PARAMS:
        return model, params, "meta"
    with torch.random.fork_rng(devices=[]):  # the build draws initial weights
        return MODELS[config.model](config, shape, classes), params, "cpu"


def _measured_size(config, shape: tuple[int, int, int], classes: int,
                   batch: int) -> tuple[int, int]:
    model, params, device = _probe_model(config, shape, classes)
    if device == "cpu":
        # activations grow in proportion to the batch: measure two images, scale
        return params, _activations(model, PROBE_BATCH, shape) * batch // PROBE_BATCH
    return params, _activations(model, batch, shape, device="meta")


def _activations(model, batch: int, shape: tuple[int, int, int], device: str = "cpu") -> int:
    """Values output by the model's leaf modules in one training-mode forward of `batch`."""
    outputs = []
    hooks = [module.register_forward_hook(lambda m, i, out: outputs.append(out.numel()))
             for module in model.modules() if not list(module.children())]
    model.train()
    with torch.no_grad():
        model(torch.zeros(batch, *shape, device=device))
    for hook in hooks:
        hook.remove()
    return sum(outputs)


def needed_bytes(configs: list) -> int:
    """Bytes the pack of `configs` needs on its device, roughly: each member's weights with
    gradients and optimizer state, its activations of one batch, its learning-rate table,
    and the image set in uint8."""
    cfg = configs[0]
    shape, classes, images = IMAGE_SETS[cfg.dataset]
    train = min(images, cfg.train_subset or images)
    batch = max(1, min(cfg.batch_size, train))
    params, activations = model_size(cfg, shape, classes, batch)
    base = cfg.sam_base if cfg.optimizer == "sam" else cfg.optimizer
    copies = COPIES[base] + (SAM_COPIES if cfg.optimizer == "sam" else 0)
    steps = cfg.epochs * max(1, train // batch) + 1
    per_member = 4 * (params * copies + activations * ACTIVATION_FACTOR) + 8 * steps
    return len(configs) * per_member + images * shape[0] * shape[1] * shape[2]


def device_memory(device: torch.device) -> int:
    """Bytes of memory on `device`: the GPU's own, else the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(configs: list, device: torch.device) -> None:
    """UserError (one line) when the pack would need more than MEMORY_SHARE of `device`'s
    memory: names the estimate, the memory, and what makes it large."""
    needed, memory = needed_bytes(configs), device_memory(device)
    if needed > MEMORY_SHARE * memory:
        cfg = configs[0]
        members = f"{len(configs)} members of " if len(configs) > 1 else ""
        raise UserError(
            f"{members}model={cfg.model} with batch_size={cfg.batch_size} and epochs="
            f"{cfg.epochs} on {cfg.dataset} needs about {needed / 2**30:,.1f} GiB, more than "
            f"{MEMORY_SHARE:.0%} of the {memory / 2**30:,.1f} GiB of {device.type}: use a "
            "smaller model or batch (or fewer epochs, a larger batch for the lr table)")


def largest_pack(config, device: torch.device, share: float = 1.0) -> int:
    """The most members of `config`'s kind that check_fits lets one trial on `device` hold
    within `share` of the device's memory (its agent's, where several agents share the
    device); at least 1: a run that cannot fit alone is refused by its own trial, with its
    reason. needed_bytes grows by one member's share per member, over the data set shared by
    all."""
    one, two = needed_bytes([config]), needed_bytes([config, config])
    member, shared = two - one, 2 * one - two
    return max(1, int((MEMORY_SHARE * share * device_memory(device) - shared) // member))


class PackRoom:
    """Per kind of pack (pack key), the most members one trial on the device a run asks for
    holds (largest_pack), reckoned once: the agents cap the size of a claim by it, so that
    with --pack K a model that fits alone but not K times trains in packs that fit, the
    other runs waiting for the next claim, instead of every member failing with the pack."""

    def __init__(self, share: float = 1.0):
        self.share = share  # of the device's memory this agent's packs may plan to use
        self.largest: dict = {}  # pack key -> the most members, None where it cannot be told

    def cap(self, key, size: int, config: Callable[[], object]) -> int:
        """`size`, or the most members of `key`'s kind one trial holds if fewer. `config`
        makes the kind's RunConfig; it is asked only when a pack of two or more is wanted.
        Where the kind cannot be reckoned here (a device this machine lacks, a config our
        trainer refuses) `size` stands: such a run fails in its own trial, with its reason."""
        if size <= 1:
            return size
        if key not in self.largest:
            from util.device import pick_device

            try:
                made = config()
                self.largest[key] = largest_pack(made, pick_device(made.device), self.share)
            except Exception:  # noqa: BLE001 (the trial refuses the run, saying why)
                self.largest[key] = None
        largest = self.largest[key]
        return size if largest is None else min(size, largest)


def precision_note(config, device: torch.device) -> str | None:
    """A line to print when the precision asked for is much slower than fp32 on `device`:
    fp16 on a CPU, which torch mostly emulates (a cnn ran 5x slower here). None otherwise."""
    if config.precision == "fp16" and device.type == "cpu":
        return ("note: precision=fp16 on a CPU is emulated by torch and runs several times "
                "slower than fp32 (bf16 or fp32 are the CPU's fast precisions)")
    return None


def check_compilable(config, device: torch.device) -> None:
    """UserError unless torch.compile can build kernels for `device`: inductor compiles C++
    with the system's compiler on a CPU, and Triton kernels on a GPU. Without them it fails at
    the first step, minutes in; here it is one line before anything starts."""
    if not config.compile:
        return
    if device.type == "cpu":
        compilers = [os.environ.get("CXX") or "", "c++", "g++", "clang++"]
        if not any(shutil.which(name) for name in compilers if name):
            raise UserError("compile=True on the CPU needs a C++ compiler (torch.compile builds "
                            "C++ kernels): none found (CXX, c++, g++, clang++); install one or "
                            "use compile=False")
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise UserError("compile=True on a GPU needs Triton (torch.compile's GPU kernels), "
                        "which is not installed: use compile=False")


def check_training_set(config, train_images: int) -> None:
    """UserError unless the training split (after val_split and train_subset) holds two or
    more images: batch norm and the loss both need them."""
    kept = min(train_images, config.train_subset or train_images)
    if kept < 2:
        raise UserError(f"val_split={config.val_split} and train_subset={config.train_subset} "
                        f"leave {kept} training image(s) of {config.dataset}: a trial needs 2 "
                        "or more")


def check_batch_of_one(config) -> None:
    """UserError (one line) when batch_size 1 leaves a batch norm of the model one value a
    channel: torch refuses to normalise such a batch in training ('Expected more than 1 value
    per channel'), which came as a traceback from the first step. A map shrunk to 1x1 does
    it: ResNet's last stage on 8x8 digits, a cnn's fourth block on them. Found by one
    training-mode forward of one image of the model _measured_size builds (_probe_model)."""
    if config.batch_size != 1:  # a larger batch (at least two images: check_training_set)
        return
    shape, classes, _ = IMAGE_SETS[config.dataset]
    model, _, device = _probe_model(config, shape, classes)
    try:
        _activations(model, 1, shape, device)
    except ValueError as error:
        if "more than 1 value per channel" not in str(error):
            raise
        raise UserError(f"batch_size=1 is not allowed with model={config.model} on "
                        f"{config.dataset}: a batch norm of it sees its maps at 1x1, one value "
                        "a channel, which training cannot normalise; expected batch_size >= 2"
                        ) from None


def check_directories(configs: list) -> None:
    """UserError (one line) when a folder a member writes to cannot be made: `data_dir` (the
    decoded cache), `run_dir` (checkpoints, summary) and, with the TensorBoard sink, `log_dir`.
    The nearest part of each path that exists must be a folder; the missing parts are made
    and removed again, so that a path the file system refuses (read-only, /proc, no
    permission) is named now, not after the first epoch. A run_dir or log_dir that exists
    must take a new entry; a data_dir that exists is fine as it is (a read-only one that holds
    the cache is)."""
    for config in configs:
        wanted = [("data_dir", config.data_dir), ("run_dir", config.run_dir)]
        if "tensorboard" in config.sinks:
            wanted.append(("log_dir", config.log_dir))
        for name, folder in wanted:
            problem = folder_problem(Path(folder or "."), written=name in WRITTEN_FOLDERS)
            if problem:
                raise UserError(f"{name}={str(folder)!r}: {problem}")


# the folders every run writes into (a run's checkpoint and summary; its TensorBoard events),
# as against data_dir, which a run only reads once the decoded cache is there
WRITTEN_FOLDERS = ("run_dir", "log_dir")


def folder_problem(folder: Path, written: bool = False) -> str | None:
    """Why `folder` cannot be made (or is not a folder), in a few words; None when it can.
    With `written`, a folder that exists must also take a new entry (a read-only mount, no
    permission): a subfolder is made in it and removed. Leaves nothing behind: the missing
    parts it makes to find out are removed again. Agents started together on one sweep run
    this check on the same folders at once: where a part vanished under it (as another agent
    makes and removes it), the check is made again, and only a problem seen every time is
    one (/proc refuses a new folder as missing every time)."""
    for _ in range(20):
        problem, raced = _folder_problem_once(folder, written)
        if not raced:
            return problem
    return problem


def _folder_problem_once(folder: Path, written: bool) -> tuple[str | None, bool]:
    """(why `folder` cannot be made or None, whether a part vanished under the check)."""
    missing, existing = [], folder
    while (kind := _kind(existing)) is None and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if kind != "folder":
        return f"{existing} is not a folder", kind is None
    if written and not missing:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=folder))
        except OSError as error:
            return (f"cannot write in {folder}: {error.strerror}",
                    isinstance(error, FileNotFoundError))
    made = []
    try:
        for part in reversed(missing):
            try:
                os.mkdir(part)
                made.append(part)
            except FileExistsError:
                if (kind := _kind(part)) != "folder":
                    return f"{part} is not a folder", kind is None
    except OSError as error:  # FileNotFoundError: a parent removed under it, or /proc
        return (f"cannot make {error.filename or part}: {error.strerror}",
                isinstance(error, FileNotFoundError))
    finally:
        for part in reversed(made):
            try:
                os.rmdir(part)
            except OSError:
                pass
    return None, False


def _kind(path: Path) -> str | None:
    """"folder", "other" (a file, a device) or None (missing, or under a file), by one stat."""
    try:
        return "folder" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
    except (FileNotFoundError, NotADirectoryError):
        return None
