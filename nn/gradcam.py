"""Grad-CAM class-activation maps (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017), written from the paper: a convolution's
feature maps A^k, weighted by the spatial mean of d(class score)/dA^k, summed, then ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def last_conv_layer(model: nn.Module) -> nn.Conv2d:
    """The last nn.Conv2d in model.modules() order: the paper's choice of layer, whose maps
    keep spatial detail while already being class-specific."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM")
    return convs[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input's size, one per image of (N, C, H, W).

    target: class index per image (N,); default the model's predicted class. layer: the
    convolution to explain; default last_conv_layer(model). Each map is divided by its own
    maximum, so 1 marks the most class-relevant place; an all-zero map stays zero. The model
    runs in eval mode (batch norm on running statistics, no dropout) and every module's mode
    is restored afterwards; the hook is removed even if the computation raises.
    """
    layer = layer if layer is not None else last_conv_layer(model)
    captured: list[torch.Tensor] = []

    def capture(_module, _inputs, output):
        captured.append(output)
        # Hand the rest of the network a copy: an in-place ReLU after the layer would
        # otherwise overwrite the activations we differentiate against.
        return output.clone()

    modes = {module: module.training for module in model.modules()}
    handle = layer.register_forward_hook(capture)
    try:
        model.eval()
        with torch.enable_grad():
            # An input that requires grad keeps a graph even when the weights are frozen.
            logits = model(images.detach().requires_grad_(True))
            if target is None:
                target = logits.argmax(1)
            score = logits.gather(1, target.to(logits.device).long().view(-1, 1)).sum()
            # Images are independent in eval mode, so one backward of the summed scores
            # gives each image the gradient of its own score.
            if not captured:
                raise ValueError(f"{type(layer).__name__} did not run in the forward pass")
            activations = captured[-1]
            gradients, = torch.autograd.grad(score, activations)
        weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # alpha_k^c, eq. 1
        cams = torch.relu((weights * activations.detach().float()).sum(1, keepdim=True))
    finally:
        handle.remove()
        for module, training in modes.items():
            module.train(training)
    cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
    cams = cams.squeeze(1).contiguous()
    peak = cams.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 0, cams / peak.clamp_min(1e-12), torch.zeros_like(cams))
