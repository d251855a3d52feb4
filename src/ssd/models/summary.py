"""A summary a user can print: parameters, default boxes, feature maps and FLOPs at the input size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssd.models.inspection import HeaderNetwork, run_with_hooks


def count_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """Multiply-adds x 2 of the convolutions and linear layers for one forward pass of `batch`."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        total += 2 * output.numel() * kernel

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    run_with_hooks(model, batch, after={nn.Conv2d: conv_hook, nn.Linear: linear_hook})
    return total


def model_summary(model: nn.Module) -> dict[str, Any]:
    config = model.config
    was_training = model.training
    model.eval()
    batch = torch.zeros(1, 3, *config.input_size, device=model.anchors.device)
    try:
        flops = _head_flops(model, batch)
    finally:
        model.train(was_training)
    return {
        "arch": config.arch,
        "input_size": list(config.input_size),
        "num_classes": model.num_classes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "default_boxes": model.num_default_boxes,
        "feature_maps": [list(size) for size in model.feature_sizes],
        "gflops": flops / 1e9,
    }


def _head_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of the network proper (backbone, extras, headers), without pre- and post-processing."""
    return count_flops(HeaderNetwork(model), batch)


def format_summary(summary: dict[str, Any]) -> str:
    maps = " ".join(f"{h}x{w}" for h, w in summary["feature_maps"])
    return "\n".join(
        [
            f"architecture   {summary['arch']}",
            f"input size     {summary['input_size'][0]}x{summary['input_size'][1]}",
            f"classes        {summary['num_classes']} (background included)",
            f"parameters     {summary['parameters']:,}",
            f"default boxes  {summary['default_boxes']:,}",
            f"feature maps   {maps}",
            f"GFLOPs         {summary['gflops']:.2f}",
        ]
    )
