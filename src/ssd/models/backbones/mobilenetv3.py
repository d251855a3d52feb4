"""SSDLite on MobileNetV3-Large (`mobilenetv3_ssd`), the network of torchvision's ssdlite320_mobilenet_v3_large.

The backbone keeps torchvision's classification layout (`features.0` .. `features.16`), so ImageNet files
load by name. SSDLite taps two maps: the output of the expansion layer inside block 13 (stride 16, 672
channels) and the last layer (stride 32). Without ImageNet weights the last three blocks are halved
("reduced tail", 480 channels out), as torchvision does; an ImageNet file needs the full tail (960).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ssd.models.config import SSDConfig, ssdlite_config
from ssd.models.layers import ConvBNAct
from ssd.models.registry import Architecture, register_architecture
from ssd.models.weights.key_maps import KeyMaps, register_key_maps

# (in, kernel, expanded, out, squeeze-excite, activation, stride) for each inverted-residual block.
LARGE_BLOCKS = [
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
]
_TAIL_BLOCKS = 3  # the blocks whose widths the reduced tail halves
_ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% of the value (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(
        self, in_ch, kernel, expanded, out_ch, use_se, activation, stride, bn_eps=1e-5, bn_momentum=0.1
    ):
        super().__init__()
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(
                ConvBNAct(in_ch, expanded, 1, activation=act, bn_eps=bn_eps, bn_momentum=bn_momentum)
            )
        layers.append(
            ConvBNAct(
                expanded,
                expanded,
                kernel,
                stride,
                groups=expanded,
                activation=act,
                bn_eps=bn_eps,
                bn_momentum=bn_momentum,
            )
        )
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(ConvBNAct(expanded, out_ch, 1, activation=None, bn_eps=bn_eps, bn_momentum=bn_momentum))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3Features(nn.Module):
    """A MobileNetV3 without its classifier; returns [the expansion output inside the last stride-2 block, the
    last layer]. `blocks` is a table like `LARGE_BLOCKS`; the reduced tail halves its last three blocks."""

    def __init__(self, blocks: list[tuple], reduced_tail: bool, bn_eps: float, bn_momentum: float):
        super().__init__()
        divider = 2 if reduced_tail else 1
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        layers: list[nn.Module] = [ConvBNAct(3, blocks[0][0], 3, 2, activation=nn.Hardswish, **norm)]
        first_tail = len(blocks) - _TAIL_BLOCKS
        for index, (in_ch, kernel, expanded, out_ch, use_se, act, stride) in enumerate(blocks):
            if index > first_tail:
                in_ch = in_ch // divider
            if index >= first_tail:
                out_ch = out_ch // divider
                expanded = expanded if index == first_tail else expanded // divider
            layers.append(InvertedResidual(in_ch, kernel, expanded, out_ch, use_se, act, stride, **norm))
        last_in = blocks[-1][3] // divider
        layers.append(ConvBNAct(last_in, 6 * last_in, 1, activation=nn.Hardswish, **norm))
        self.features = nn.Sequential(*layers)
        # SSDLite taps the first block at stride 32 after its expansion (+1: features.0 is the stem).
        last_strided = max(i for i, block in enumerate(blocks) if block[6] == 2)
        self.tap_block = last_strided + 1
        self.out_channels = [blocks[last_strided][2], 6 * last_in]
        _init_mobilenet(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        tap = self.tap_block
        for layer in self.features[:tap]:
            x = layer(x)
        split_block = self.features[tap]
        x = split_block.block[0](x)
        first = x
        x = split_block.block[1:](x)  # no residual: this block has stride 2
        for layer in self.features[tap + 1 :]:
            x = layer(x)
        return [first, x]


def _init_mobilenet(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def extra_block(in_ch: int, out_ch: int, bn_eps: float, bn_momentum: float) -> nn.Sequential:
    """SSDLite's extra layer: 1x1 down to half the output width, depthwise 3x3 stride 2, 1x1 up; ReLU6."""
    mid = out_ch // 2
    norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
    return nn.Sequential(
        ConvBNAct(in_ch, mid, 1, activation=nn.ReLU6, **norm),
        ConvBNAct(mid, mid, 3, 2, groups=mid, activation=nn.ReLU6, **norm),
        ConvBNAct(mid, out_ch, 1, activation=nn.ReLU6, **norm),
    )


def build_ssdlite_layers(config: SSDConfig, blocks: list[tuple], extra_widths: list[int]):
    """A MobileNetV3 backbone and SSDLite extras from `backbone.out_channels[-1]` through `extra_widths`."""
    norm = {"bn_eps": config.batchnorm_eps, "bn_momentum": config.batchnorm_momentum}
    backbone = MobileNetV3Features(blocks, reduced_tail=config.backbone_options["reduced_tail"], **norm)
    widths = [backbone.out_channels[-1], *extra_widths]
    extras = nn.ModuleList(extra_block(a, b, **norm) for a, b in zip(widths[:-1], widths[1:], strict=True))
    for layer in extras.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.03)
    return backbone, extras


def build_mobilenetv3_ssd_layers(config: SSDConfig) -> tuple[nn.Module, nn.ModuleList]:
    return build_ssdlite_layers(config, LARGE_BLOCKS, [512, 256, 256, 128])


MOBILENETV3_SSD = register_architecture(
    Architecture(
        name="mobilenetv3_ssd",
        description="SSDLite320 on MobileNetV3-Large (torchvision's ssdlite320_mobilenet_v3_large)",
        config=ssdlite_config("mobilenetv3_ssd"),
        build_layers=build_mobilenetv3_ssd_layers,
    )
)
register_key_maps(
    "mobilenetv3_ssd",
    KeyMaps(
        torchvision=[
            (r"^backbone\.features\.0\.13\.", "backbone.features.13.block.0."),
            (r"^backbone\.features\.0\.", "backbone.features."),
            (r"^backbone\.features\.1\.0\.", "backbone.features.13.block."),
            (r"^backbone\.features\.1\.1\.", "backbone.features.14."),
            (r"^backbone\.features\.1\.2\.", "backbone.features.15."),
            (r"^backbone\.features\.1\.3\.", "backbone.features.16."),
            (r"^backbone\.extra\.", "extras."),
            (r"^head\.classification_head\.module_list\.", "classification_headers."),
            (r"^head\.regression_head\.module_list\.", "regression_headers."),
        ],
        imagenet=[(r"^features\.", "backbone.features.")],
        imagenet_ignore=[r"^classifier\."],
        imagenet_overrides={"reduced_tail": False},
    ),
)
