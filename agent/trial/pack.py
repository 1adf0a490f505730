"""The training pack: K members' fused model, optimizer, data streams and schedules, on one
device, and how a member leaves it (hyperband stopped it, or its loss went non-finite).

Each member's weights are initialised by its own seed exactly as its plain model would be,
then the K plain models are fused (nn/packed.py). Each member has its own generator for its
data order, augmentation and dropout, seeded by its seed, so a member trains the same in a
pack of any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agent.trial.member import Member
from agent.trial.metering import GradientMeter
from agent.trial.steps import StepContext, step_for
from nn.loss_scale import PackedGradScaler
from nn.models import CONV_MODELS, MODELS
from nn.optimizers import OPTIMIZERS
from nn.packed import PackedModel, pack_models
from nn.schedules import lr_table
from util.device import autocast_dtype
from util.device_cache import Augmentation, PackLoader, Splits


@dataclass
class TrainingPack:
    """What the epoch loop trains. Lists and tensors indexed by slot run over `members`."""

    members: list[Member]
    model: PackedModel
    optimizer: torch.optim.Optimizer  # a packed optimizer (nn/optimizers.py), or SAM on one
    scaler: PackedGradScaler  # one fp16 loss scale per member
    generators: list[torch.Generator]
    loader: PackLoader
    meter: GradientMeter
    lr: torch.Tensor  # (total_steps + 1, K) on the device: member k's lr at each step
    ctx: StepContext
    step: object  # steps.plain_step or steps.sam_step
    params_per_member: int  # trainable parameters of one member's model

    @property
    def size(self) -> int:
        return len(self.members)

    def select(self, keep: list[int]) -> None:
        """Shrink the pack to the members in slots `keep`, each exactly as it was (its forward
        compiled again with compile=True)."""
        self.members = [self.members[k] for k in keep]
        if not keep:
            return  # nothing left to train
        self.model = self.model.select(keep)
        self.optimizer = self.optimizer.select(keep, self.model.parameters())
        self.scaler = self.ctx.scaler = self.scaler.select(keep)
        self.generators = [self.generators[k] for k in keep]
        self.model.set_generators(self.generators)
        self.loader.select(keep)
        self.meter.model = self.model
        self.meter.select(keep)
        self.lr = self.lr[:, keep]
        self.ctx.model = self.model
        # the narrowed model compiled again where the pack's was (compile=True): torch.compile
        # wraps one module, and the plain one here ran the rest of the trial uncompiled
        self.ctx.forward = torch.compile(self.model) if self.members[0].cfg.compile \
            else self.model
        self.ctx.optimizer = self.optimizer
        self.ctx.smoothing = self.ctx.smoothing[keep]


def build_pack(members: list[Member], data: Splits, device: torch.device) -> TrainingPack:
    """The fused model, optimizer, data streams and lr schedules of `members`."""
    cfg = members[0].cfg  # what members share (agent/trial/member.py PACK_SHARED)
    plain = []
    for member in members:
        # the same initial weights as the run alone: models are built on the CPU, so its
        # generator is the one to seed (torch.manual_seed also queues a CUDA seeding with a
        # formatted stack when CUDA is not initialised: ~1 ms a member, kept for the process)
        torch.default_generator.manual_seed(member.cfg.seed)
        plain.append(MODELS[cfg.model](member.cfg, data.input_shape, len(data.classes)))
    model = pack_models(plain).to(device)
    if cfg.channels_last and cfg.model in CONV_MODELS:
        model = model.to(memory_format=torch.channels_last)
    generators = [torch.Generator(device=device).manual_seed(m.cfg.seed) for m in members]
    model.set_generators(generators)
    train_x, train_y = data.train_x, data.train_y
    if cfg.train_subset:
        train_x, train_y = train_x[:cfg.train_subset], train_y[:cfg.train_subset]
    loader = PackLoader(train_x, train_y, data.mean, data.std, cfg.batch_size, generators,
                        [Augmentation.from_config(m.cfg) for m in members])
    total = cfg.epochs * len(loader)
    lr = lr_table([m.cfg.lr for m in members], total,
                  [round(m.cfg.warmup_epochs * len(loader)) for m in members], cfg.schedule)
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), [m.cfg for m in members])
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = PackedGradScaler(len(members), device, enabled=amp_dtype == torch.float16)
    forward = torch.compile(model) if cfg.compile else model
    smoothing = torch.tensor([m.cfg.label_smoothing for m in members], device=device)
    ctx = StepContext(model, forward, optimizer, scaler, amp_dtype, smoothing)
    return TrainingPack(members, model, optimizer, scaler, generators, loader,
                        GradientMeter(model), lr.to(device=device, dtype=torch.float32), ctx,
                        step_for(cfg.optimizer), sum(p.numel() for p in plain[0].parameters()))
