"""K members of one architecture trained as one fused model (HFTA: Wang et al., "Horizontally
Fused Training Array", MLSys 2021): linear layers become one batched matmul, convolutions one
grouped convolution, batch norm one normalisation over K*C channels; the math per member is
unchanged. Activations are member-second, (B, K, ...); every parameter and buffer keeps its
plain name with the member dimension first, so member k's tensor is always `t[k]`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nn.models import BasicBlock, ResidualMLPBlock


def _stack(tensors: list[torch.Tensor | None], requires_grad: bool | None = None):
    """Member tensors stacked on a new first dimension (a copy), as a Parameter when asked."""
    if tensors[0] is None:
        return None
    stacked = torch.stack([t.detach() for t in tensors])
    return stacked if requires_grad is None else nn.Parameter(stacked, requires_grad)


class PackedLinear(nn.Module):
    """K nn.Linear as one batched matmul: (B, K, *, in) -> (B, K, *, out).

    weight (K, out, in), bias (K, out) or None. Computed as out^T = W x^T per member, so that
    the weight's gradient comes out in the weight's own layout (no copy in autograd's
    accumulation) and the output, a view of a (K, out, B) result, is the next PackedLinear's
    x^T without a copy: about twice as fast as x W^T on a CPU. A pack of one (every run
    trained alone) is torch's F.linear on member 0's weight: 3-40% faster than a batched
    matmul of one on a CPU, the smaller the layer the more.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.members, self.out_features, self.in_features = weight.shape
        self.weight = weight
        self.bias = bias

    @classmethod
    def from_plain(cls, layers: Sequence[nn.Linear]) -> PackedLinear:
        grad = layers[0].weight.requires_grad
        return cls(_stack([m.weight for m in layers], grad),
                   _stack([m.bias for m in layers], grad))

    def extra_repr(self) -> str:
        return (f"members={self.members}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:  # a run alone: torch's own linear (addmm), no member layout;
            # views, not [0]: a select's backward would zero-fill and copy the gradient
            bias = None if self.bias is None else self.bias.view(self.out_features)
            return F.linear(x, self.weight.view(self.out_features, self.in_features), bias)
        members_first = x.movedim(1, 0)  # (K, B, *, in): a view
        x_t = members_first.reshape(self.members, -1, self.in_features).transpose(1, 2)
        if self.bias is None:
            out_t = torch.bmm(self.weight, x_t)
        else:
            out_t = torch.baddbmm(self.bias.unsqueeze(2), self.weight, x_t)
        out = out_t.transpose(1, 2).unflatten(1, members_first.shape[1:-1])
        return out.movedim(0, 1)


class PackedConv2d(nn.Module):
    """K nn.Conv2d as one grouped convolution: (B, K, C, H, W) -> (B, K, out, H', W').

    weight (K, out, C/groups, kh, kw), seen as (K*out, C/groups, kh, kw) by a convolution with
    K*groups groups on the (B, K*C, H, W) view of the input, as HFTA fuses convolutions;
    bias (K, out).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, plain: nn.Conv2d):
        super().__init__()
        if plain.padding_mode != "zeros":
            raise ValueError(f"padding_mode={plain.padding_mode!r} has no packed version")
        self.members, self.out_channels = weight.shape[:2]
        self.weight = weight
        self.bias = bias
        self.stride, self.padding = plain.stride, plain.padding
        self.dilation, self.groups = plain.dilation, plain.groups
        self.memory_format = torch.contiguous_format  # use_channels_last changes it

    @classmethod
    def from_plain(cls, layers: Sequence[nn.Conv2d]) -> PackedConv2d:
        grad = layers[0].weight.requires_grad
        return cls(_stack([m.weight for m in layers], grad),
                   _stack([m.bias for m in layers], grad), layers[0])

    def extra_repr(self) -> str:
        _, _, c_in, kh, kw = self.weight.shape
        return (f"members={self.members}, {c_in * self.groups}, {self.out_channels}, "
                f"kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}, bias={self.bias is not None}")

    def use_channels_last(self, enabled: bool = True) -> None:
        """Restride the weight so that its (K*out, C, kh, kw) view is channels-last (or
        contiguous): the 5-D weight itself has no such format. Call before building the
        optimizer's state; the Parameter object stays the same."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        self.memory_format = fmt
        with torch.no_grad():
            # clone, not contiguous: with one input channel both layouts are "contiguous" and
            # contiguous() would keep the strides that make mkldnn choose NCHW outputs
            flat = self.weight.detach().flatten(0, 1).clone(memory_format=fmt)
            self.weight.data = flat.unflatten(0, (self.members, self.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.flatten()
        # The input in the weight's memory format: a mismatch makes the convolution convert
        # its input, its output and both again in the backward pass. Channels-last is asked for
        # by strides (channel stride 1): with one input channel both layouts pass
        # is_contiguous, and the convolution would then pick NCHW for its output.
        flat = x.flatten(1, 2)
        stride = self.stride
        if x.device.type == "cpu" and self.weight.shape[-2:] == (1, 1) and stride != (1, 1) \
                and self.padding == (0, 0):
            # A 1x1 convolution with a stride reads every stride-th pixel: take those pixels
            # first, then convolve with stride 1 (the same sums). torch 2.14's CPU kernel for
            # the strided 1x1 case in channels-last with under 8 input channels, on one
            # thread, corrupts the heap in its backward pass (a ResNet's shortcut at width 4);
            # on a GPU (where it was not seen) the strided convolution stays.
            flat, stride = flat[..., ::stride[0], ::stride[1]], (1, 1)
        if self.memory_format == torch.channels_last and flat.stride(1) != 1:
            flat = flat.clone(memory_format=torch.channels_last)
        elif self.memory_format == torch.contiguous_format:
            flat = flat.contiguous()
        out = F.conv2d(flat, self.weight.flatten(0, 1), bias, stride,
                       self.padding, self.dilation, self.groups * self.members)
        return out.unflatten(1, (self.members, self.out_channels))


class PackedBatchNorm2d(nn.Module):
    """K nn.BatchNorm2d as one batch norm over K*C channels: (B, K, C, H, W) -> same shape.

    weight, bias, running_mean, running_var (K, C); num_batches_tracked (K,). Batch norm is
    per channel, so normalising the (B, K*C, H, W) view gives each member its own statistics;
    the running statistics are updated in place through (K*C,) views of the buffers.
    Mirrors torch.nn.BatchNorm2d's forward (torch docs); momentum=None is not supported.
    """

    def __init__(self, layers: Sequence[nn.BatchNorm2d]):
        super().__init__()
        plain = layers[0]
        if plain.momentum is None:
            raise ValueError("BatchNorm2d(momentum=None) (a cumulative average) has no packed "
                             "version: its factor would need a host sync each step")
        self.members, self.num_features = len(layers), plain.num_features
        self.eps, self.momentum = plain.eps, plain.momentum
        self.affine, self.track_running_stats = plain.affine, plain.track_running_stats
        grad = plain.weight.requires_grad if plain.affine else None
        self.weight = _stack([m.weight for m in layers], grad)
        self.bias = _stack([m.bias for m in layers], grad)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, _stack([getattr(m, name) for m in layers]))

    def extra_repr(self) -> str:
        return (f"members={self.members}, {self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        use_running = not self.training or self.track_running_stats

        def flat(t):
            return None if t is None else t.view(-1)

        out = F.batch_norm(
            x.flatten(1, 2),
            flat(self.running_mean) if use_running else None,
            flat(self.running_var) if use_running else None,
            flat(self.weight), flat(self.bias),
            self.training or self.running_mean is None, self.momentum, self.eps)
        return out.unflatten(1, (self.members, self.num_features))


class PackedLayerNorm(nn.Module):
    """K nn.LayerNorm: normalisation over the last dims, then each member's own affine map.

    (B, K, *, *normalized_shape) -> same shape; weight, bias (K, *normalized_shape).
    """

    def __init__(self, layers: Sequence[nn.LayerNorm]):
        super().__init__()
        plain = layers[0]
        self.members = len(layers)
        self.normalized_shape, self.eps = plain.normalized_shape, plain.eps
        grad = plain.weight.requires_grad if plain.weight is not None else None
        self.weight = _stack([m.weight for m in layers], grad)
        self.bias = _stack([m.bias for m in layers], grad)

    def extra_repr(self) -> str:
        return f"members={self.members}, {self.normalized_shape}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        if self.weight is None:
            return out
        shape = (self.members, *([1] * (x.ndim - 2 - len(self.normalized_shape))),
                 *self.normalized_shape)
        if self.bias is None:
            return out * self.weight.view(shape)
        return torch.addcmul(self.bias.view(shape), out, self.weight.view(shape))


class PackedDropout(nn.Module):
    """K nn.Dropout with per-member probabilities p (K,) and per-member random streams.

    (B, K, *) -> same shape. In training, member k's mask has its own slice's shape (B, *) and
    is drawn from `generators[k]` (torch's default generator when None) into a contiguous block,
    so a member draws the same masks in a pack of 1 as in a pack of K; a member with p = 0 draws
    nothing. Kept elements are scaled by 1/(1-p), as in torch.nn.Dropout (Srivastava et al.,
    JMLR 2014): an element is kept where a uniform draw u in [0, 1) has u < 1 - p. Costs one
    draw per member with p > 0, a comparison and two multiplications.
    """

    def __init__(self, p: Sequence[float]):
        super().__init__()
        self.p = tuple(float(v) for v in p)
        self.generators: list[torch.Generator | None] = [None] * len(self.p)
        # 1/(1-p) per member, moved with the module; not part of a checkpoint
        self.register_buffer("scale", torch.tensor([1 / (1 - v) if v < 1 else 0.0
                                                    for v in self.p]),
                             persistent=False)
        self.register_buffer("keep", torch.tensor([1 - v for v in self.p]), persistent=False)

    @classmethod
    def from_plain(cls, layers: Sequence[nn.Dropout]) -> PackedDropout:
        return cls([m.p for m in layers])

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.p):
            return x
        # uniform noise in float32 (also under autocast: no 1/256 steps in p), kept where
        # u < 1 - p; uniform_ into a slice is ~3x faster than bernoulli_ on a CPU
        noise = torch.empty((len(self.p), x.shape[0], *x.shape[2:]), device=x.device)
        for k, (p, generator) in enumerate(zip(self.p, self.generators)):
            if p == 0:
                noise[k].zero_()  # 0 < 1: every element kept
            else:
                noise[k].uniform_(generator=generator)
        view = (-1, *([1] * (noise.ndim - 1)))
        mask = ((noise < self.keep.view(view)) * self.scale.view(view)).to(x.dtype)
        # x first: the product keeps x's memory order (a PackedLinear's (K, out, B) output)
        return x * mask.movedim(0, 1)


class PackedChannelwise(nn.Module):
    """A per-channel 4-D op without tensors (max/avg pools, adaptive pools) applied to the
    (B, K*C, H, W) view: (B, K, C, H, W) -> (B, K, C, H', W')."""

    def __init__(self, op: nn.Module):
        super().__init__()
        # Not registered as a child: the pack's module tree then matches the plain model's.
        self.__dict__["op"] = op

    @classmethod
    def from_plain(cls, layers: Sequence[nn.Module]) -> PackedChannelwise:
        return cls(copy.deepcopy(layers[0]))

    def extra_repr(self) -> str:
        return repr(self.op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x.flatten(1, 2)).unflatten(1, (x.shape[1], -1))


class PackedFlatten(nn.Module):
    """nn.Flatten(start_dim, end_dim) on (B, K, ...): the same dims, one further right."""

    def __init__(self, plain: nn.Flatten):
        super().__init__()
        if plain.start_dim == 0 or plain.end_dim == 0:
            raise ValueError("Flatten over the batch dimension has no packed version")
        self.start_dim = plain.start_dim + 1 if plain.start_dim > 0 else plain.start_dim
        self.end_dim = plain.end_dim + 1 if plain.end_dim > 0 else plain.end_dim

    @classmethod
    def from_plain(cls, layers: Sequence[nn.Flatten]) -> PackedFlatten:
        return cls(layers[0])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.start_dim, self.end_dim)


def _elementwise(layers: Sequence[nn.Module]) -> nn.Module:
    """The module itself (it acts on each element, the layout does not matter), made
    out-of-place: the packed layers hand on views (transposes, unflatten), and an in-place op on
    a view makes autograd copy the whole base tensor back in the backward pass."""
    module = copy.deepcopy(layers[0])
    if getattr(module, "inplace", False):
        module.inplace = False
    return module


# Exact leaf type -> builder from the K members' modules. Subclasses are refused on purpose: they
# may override forward.
PACKED_LEAVES: dict[type, Callable[[Sequence[nn.Module]], nn.Module]] = {
    nn.Linear: PackedLinear.from_plain,
    nn.Conv2d: PackedConv2d.from_plain,
    nn.BatchNorm2d: PackedBatchNorm2d,
    nn.LayerNorm: PackedLayerNorm,
    nn.Dropout: PackedDropout.from_plain,
    nn.Flatten: PackedFlatten.from_plain,
    **{cls: PackedChannelwise.from_plain for cls in (
        nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)},
    **{cls: _elementwise for cls in (
        nn.ReLU, nn.Identity, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU)},
}

# Containers whose forward calls only their children and adds tensors, so it runs unchanged on
# the packed layout. nn.Sequential subclasses qualify unless they override forward.
PACKED_CONTAINERS: tuple[type, ...] = (ResidualMLPBlock, BasicBlock)


def _is_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _check_alike(modules: Sequence[nn.Module], path: str) -> None:
    """Same type, hyper-parameters (but dropout p), tensor names, shapes, dtypes and devices."""
    first = modules[0]
    for other in modules[1:]:
        if type(other) is not type(first):
            raise ValueError(f"cannot pack {path}: members have {type(first).__name__} and "
                             f"{type(other).__name__}")
        if not isinstance(first, nn.Dropout) and other.extra_repr() != first.extra_repr():
            raise ValueError(f"cannot pack {path}: members differ ({first.extra_repr()} vs "
                             f"{other.extra_repr()})")
        for kind in ("parameters", "buffers"):
            mine = [(n, t.shape, t.dtype, t.device, t.requires_grad)
                    for n, t in getattr(first, f"named_{kind}")(recurse=False)]
            theirs = [(n, t.shape, t.dtype, t.device, t.requires_grad)
                      for n, t in getattr(other, f"named_{kind}")(recurse=False)]
            if mine != theirs:
                raise ValueError(f"cannot pack {path}: members' {kind} differ ({mine} vs "
                                 f"{theirs})")


def _pack_module(modules: Sequence[nn.Module], path: str) -> nn.Module:
    """The packed version of one module of the K members; `path` is its plain name."""
    where = path or "the model"
    _check_alike(modules, where)
    first = modules[0]
    children = [name for name, _ in first.named_children()]
    for other in modules[1:]:
        if [name for name, _ in other.named_children()] != children:
            raise ValueError(f"cannot pack {where}: members have different layers")
    if type(first) in PACKED_LEAVES:
        packed = PACKED_LEAVES[type(first)](modules)
        packed.train(first.training)
        return packed
    if not children and not _is_sequential(first):
        raise ValueError(f"cannot pack {where}: {type(first).__name__} has no packed version "
                         f"(nn.packed.PACKED_LEAVES lists those that do)")
    if not (_is_sequential(first) or type(first) in PACKED_CONTAINERS):
        raise ValueError(f"cannot pack {where}: {type(first).__name__}'s forward is not known to "
                         "work on the packed layout (nn.packed.PACKED_CONTAINERS)")
    if list(first.parameters(recurse=False)) or list(first.buffers(recurse=False)):
        raise ValueError(f"cannot pack {where}: a container holding its own tensors")
    container = type(first).__new__(type(first))
    nn.Module.__init__(container)
    for key, value in first.__dict__.items():  # plain attributes a forward may read
        container.__dict__.setdefault(key, value)
    container.train(first.training)
    for name in children:
        members = [m.get_submodule(name) for m in modules]
        container.add_module(name, _pack_module(members, f"{path}.{name}" if path else name))
    return container


class PackedModel(nn.Sequential):
    """K members of one architecture as one module: (B, K, C, H, W) float -> logits (B, K, classes).

    Built by `pack_models`. Parameters and buffers carry the plain model's names with the member
    dimension first: Linear weight (K, out, in), conv weight (K, out, in, kh, kw), batch-norm
    weight and running stats (K, C), num_batches_tracked (K,). Evaluate K members on shared
    inputs with `x.unsqueeze(1).expand(-1, K, ...)`.
    """

    def __init__(self, layers: OrderedDict[str, nn.Module], members: int, template: nn.Module):
        super().__init__(layers)
        self.members = members
        # The plain architecture on the meta device: no memory, rebuilt by plain_model().
        self._template = (template,)  # a tuple, so that it is not registered as a child
        self._generators: list[torch.Generator | None] = []
        self._channels_last = False

    # --- random streams and memory format ----------------------------------------------------

    def set_generators(self, generators: Sequence[torch.Generator | None]) -> None:
        """Member k's dropout masks come from generators[k] (on the model's device); None is
        torch's default generator."""
        if len(generators) != self.members:
            raise ValueError(f"{len(generators)} generators for {self.members} members")
        self._generators = list(generators)
        for module in self.modules():
            if isinstance(module, PackedDropout):
                module.generators = list(generators)

    def dropout_p(self) -> dict[str, tuple[float, ...]]:
        """Each dropout layer's per-member probability, by plain layer name."""
        return {name: m.p for name, m in self.named_modules() if isinstance(m, PackedDropout)}

    def to(self, *args, **kwargs) -> PackedModel:
        """nn.Module.to, with memory_format=torch.channels_last applied to the convolutions'
        (K*out, C, kh, kw) weight views (nn.Module.to refuses channels_last on 5-D tensors)."""
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        super().to(device=device, dtype=dtype, non_blocking=non_blocking)
        if memory_format in (torch.channels_last, torch.contiguous_format):
            self._channels_last = memory_format == torch.channels_last
            for module in self.modules():
                if isinstance(module, PackedConv2d):
                    module.use_channels_last(self._channels_last)
        elif memory_format is not None and memory_format != torch.preserve_format:
            raise ValueError(f"memory_format={memory_format} has no packed version")
        return self

    # --- members in the plain model's terms -------------------------------------------------

    def _check_member(self, k: int) -> None:
        if not 0 <= k < self.members:
            raise IndexError(f"member {k} of a pack of {self.members}")

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers in the plain model's names and shapes (copies on
        the model's device; no host sync), loadable into the model MODELS builds."""
        self._check_member(k)
        return {name: t[k].clone() for name, t in self.state_dict().items()}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Write a plain model's state dict (e.g. a member's checkpoint) into member k.
        Raises ValueError on missing or unexpected keys or a shape mismatch."""
        self._check_member(k)
        own = self.state_dict()
        if set(own) != set(state):
            raise ValueError(f"state dict keys differ: missing {sorted(set(own) - set(state))}, "
                             f"unexpected {sorted(set(state) - set(own))}")
        for name, target in own.items():
            value = torch.as_tensor(state[name])
            if target[k].shape != value.shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)}, member's is "
                                 f"{tuple(target[k].shape)}")
            target[k].copy_(value)

    def plain_model(self, k: int) -> nn.Module:
        """Member k as the plain model MODELS builds, with its weights, buffers, dropout
        probabilities and training mode, on the pack's device."""
        self._check_member(k)
        device = next(iter(self.state_dict().values())).device
        model = copy.deepcopy(self._template[0]).to_empty(device=device)
        model.load_state_dict(self.member_state_dict(k))
        for name, p in self.dropout_p().items():
            model.get_submodule(name).p = p[k]
        return model.train(self.training)

    def select(self, indices: Sequence[int]) -> PackedModel:
        """A new pack of the members `indices`, in that order, copied exactly (weights,
        buffers, dropout probabilities, generators, training mode, memory format). Build the
        optimizer's counterpart with its `select(indices, new_model.parameters())`."""
        indices = [int(i) for i in indices]
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f"select needs distinct member indices, got {indices}")
        for k in indices:
            self._check_member(k)
        packed = pack_models([self.plain_model(k) for k in indices])
        if self._generators:
            packed.set_generators([self._generators[k] for k in indices])
        if self._channels_last:
            packed.to(memory_format=torch.channels_last)
        return packed.train(self.training)

    # --- per-member metering ----------------------------------------------------------------

    def layers(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters grouped by the plain name of the module owning them ("conv2",
        "stage1.block1.bn1"), in module order: the rows of weight_norms / grad_norms."""
        layers: dict[str, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                layers.setdefault(name.rpartition(".")[0] or name, []).append(param)
        return layers

    @torch.no_grad()
    def weight_norms(self) -> torch.Tensor:
        """L2 norm of each layer's parameters per member: float32 (layers, K) on the device,
        rows in `layers()` order; no host sync."""
        return _member_norms([list(params) for params in self.layers().values()], self.members)

    @torch.no_grad()
    def grad_norms(self) -> torch.Tensor:
        """L2 norm of each layer's gradients per member: float32 (layers, K) on the device,
        rows in `layers()` order (a missing gradient counts as zero); no host sync."""
        return _member_norms([[p.grad for p in params] for params in self.layers().values()],
                             self.members)

    @torch.no_grad()
    def layer_weights(self) -> dict[str, torch.Tensor]:
        """Each layer's weight matrix or kernel (biases and norm scales left out) flattened per
        member: float32 (K, n) on the device, by plain layer name, for histograms."""
        return {name.rpartition(".")[0]: p.detach().float().reshape(self.members, -1)
                for name, p in self.named_parameters()
                if name.endswith("weight") and p.ndim > 2}


def _member_norms(tensors_by_layer: list[list[torch.Tensor | None]], members: int) -> torch.Tensor:
    rows = []
    for tensors in tensors_by_layer:
        squares = [torch.linalg.vector_norm(t.float(), dim=tuple(range(1, t.ndim))).square()
                   for t in tensors if t is not None]
        rows.append(torch.stack(squares).sum(0) if squares else None)
    device = next((r.device for r in rows if r is not None), None)
    if device is None:  # no gradients at all
        return torch.zeros(len(rows), members)
    return torch.stack([r if r is not None else torch.zeros(members, device=device)
                        for r in rows]).sqrt()


def pack_models(models: Sequence[nn.Module]) -> PackedModel:
    """Fuse K plain models of identical structure (as MODELS builds them; dropout p may differ)
    into one PackedModel whose member k computes exactly what models[k] computes.

    Weights and buffers are copied. Raises ValueError naming the module when the structure
    cannot be packed: different types or shapes, a leaf without a packed version
    (PACKED_LEAVES), a container whose forward is not known to be layout-agnostic.
    """
    if not models:
        raise ValueError("pack_models needs at least one model")
    if not _is_sequential(models[0]):
        raise ValueError(f"cannot pack {type(models[0]).__name__}: the model must be an "
                         "nn.Sequential of named layers (as MODELS builds them)")
    root = _pack_module(list(models), "")
    template = copy.deepcopy(models[0]).to("meta")
    packed = PackedModel(OrderedDict(root.named_children()), len(models), template)
    return packed.train(models[0].training)


def packed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                         label_smoothing: torch.Tensor | None = None) -> torch.Tensor:
    """Each member's mean cross-entropy: logits (B, K, classes), targets int64 (B, K),
    label_smoothing (K,) or None -> (K,) in float32 (float64 for float64 logits).

    With smoothing eps: (1 - eps) * NLL + eps * mean over classes of -log p, the definition of
    torch.nn.CrossEntropyLoss(label_smoothing=eps) (torch docs; Szegedy et al., CVPR 2016).
    The sum of the result is the pack's training loss: each member's gradient is its own.
    """
    # at least float32 (bf16 logits under autocast), float64 stays float64
    log_p = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if label_smoothing is not None:
        smooth = -log_p.mean(-1)
        nll = torch.lerp(nll, smooth, label_smoothing.to(nll).view(1, -1))
    return nll.mean(0)
