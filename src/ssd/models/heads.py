"""The classification and regression headers: one small convolution per feature map.

A header on a map with A default boxes per cell outputs A * C class scores (classification) or A * 4 box
offsets (regression) per cell; `flatten_header_output` turns that into one row per default box, in the
default boxes' order (cells row-major, boxes within a cell).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def conv_header(in_channels: int, out_channels: int) -> nn.Module:
    """SSD's header: a single 3x3 convolution."""
    header = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    nn.init.xavier_uniform_(header.weight)
    nn.init.zeros_(header.bias)
    return header


def separable_header(in_channels: int, out_channels: int, bn_eps: float, bn_momentum: float) -> nn.Module:
    """SSDLite's header: depthwise 3x3 + BatchNorm + ReLU6, then a pointwise 1x1 convolution."""
    depthwise = nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=bn_momentum),
        nn.ReLU6(inplace=True),
    )
    pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    header = nn.Sequential(depthwise, pointwise)
    for module in header.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.03)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return header


def build_headers(
    in_channels: Sequence[int],
    boxes_per_location: Sequence[int],
    values_per_box: int,
    kind: str,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> nn.ModuleList:
    headers = []
    for channels, boxes in zip(in_channels, boxes_per_location, strict=True):
        if kind == "separable":
            headers.append(separable_header(channels, boxes * values_per_box, bn_eps, bn_momentum))
        else:
            headers.append(conv_header(channels, boxes * values_per_box))
    return nn.ModuleList(headers)


def flatten_header_output(outputs: Sequence[Tensor], values_per_box: int) -> Tensor:
    """`[(B, A_k * V, H_k, W_k)]` -> `(B, sum_k H_k * W_k * A_k, V)`."""
    # Sizes spelled out (no -1), so an empty batch reshapes too.
    rows = [
        out.permute(0, 2, 3, 1).reshape(
            out.shape[0], out.shape[1] // values_per_box * out.shape[2] * out.shape[3], values_per_box
        )
        for out in outputs
    ]
    return torch.cat(rows, dim=1)
