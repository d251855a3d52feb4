"""A model made ready for fast inference: BatchNorm folded into convolutions, and channels-last.

Folding: in eval mode a BatchNorm after a convolution is an affine map per output channel, so it can be
merged into the convolution's weight and bias. The network then runs one layer instead of two and reads
each activation once less, with the same outputs (up to float rounding). Training needs the BatchNorm
layers back, so folding always works on a copy.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ssd.models.inspection import HeaderNetwork, run_with_hooks


def fold_batchnorm_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing `bn(conv(x))` in eval mode (running statistics), as a new module."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    with torch.no_grad():
        # Computed in float64 so the folded layer is as close to the two-layer original as fp32 allows.
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
        fused.weight.copy_(weight.to(conv.weight.dtype))
        fused.bias.copy_(bias.to(conv.weight.dtype))
    return fused


def find_conv_batchnorm_pairs(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """Names of (conv, batchnorm) pairs where the BatchNorm's input is exactly that convolution's output.

    Found by running `example` through the model with hooks, so any architecture works, whatever its module
    layout (a `Sequential`, or `conv1`/`bn1` attributes as in ResNet).
    """
    names = {module: name for name, module in model.named_modules()}
    conv_outputs: list[tuple[Tensor, str]] = []
    pairs: list[tuple[str, str]] = []

    def remember_output(module: nn.Module, _inputs, output: Tensor) -> None:
        conv_outputs.append((output, names[module]))

    def match_input(module: nn.Module, inputs) -> None:
        for output, conv_name in conv_outputs:
            if inputs[0] is output:
                pairs.append((conv_name, names[module]))
                return

    run_with_hooks(model, example, after={nn.Conv2d: remember_output}, before={nn.BatchNorm2d: match_input})
    # A convolution whose output feeds two BatchNorms (or runs twice) cannot be folded into either.
    conv_counts: dict[str, int] = {}
    for conv_name, _ in pairs:
        conv_counts[conv_name] = conv_counts.get(conv_name, 0) + 1
    return [(c, b) for c, b in dict.fromkeys(pairs) if conv_counts[c] == 1]


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an SSD model with every BatchNorm that follows a convolution folded into it (eval only)."""
    fused = copy.deepcopy(model).eval()
    example = torch.zeros(1, 3, *fused.config.input_size, device=fused.anchors.device)
    for conv_name, bn_name in find_conv_batchnorm_pairs(HeaderNetwork(fused), example):
        conv_name, bn_name = conv_name.removeprefix("ssd."), bn_name.removeprefix("ssd.")
        conv = fused.get_submodule(conv_name)
        bn = fused.get_submodule(bn_name)
        _replace(fused, conv_name, fold_batchnorm_into_conv(conv, bn))
        _replace(fused, bn_name, nn.Identity())
    return fused


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def prepare_for_inference(model: nn.Module, fuse: bool = True, channels_last: bool = True) -> nn.Module:
    """The model as `ssd detect` and `ssd bench` run it: a copy in eval mode, BatchNorm folded, channels-last.

    Measured on the 2-core benchmark CPU (one thread, CPU time of the network, fixture weights):
    MobileNetV3-SSD 30.3 ms plain, 27.1 ms folded, 22.9 ms folded and channels-last; VGG16-SSD300 (no
    BatchNorm) 643 ms plain, 576 ms channels-last. Channels-last keeps each pixel's channels together,
    which suits oneDNN's convolutions, depthwise ones most.
    """
    prepared = fuse_batchnorm(model) if fuse else copy.deepcopy(model).eval()
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    prepared.is_inference_form = True  # its `predict` runs it as it is (see `SSD.inference_form`)
    return prepared.eval()
