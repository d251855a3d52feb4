"""`mobilenetv3_small_ssd`: SSDLite on MobileNetV3-Small, about 3x cheaper than `mobilenetv3_ssd`.

This file is the README's example of adding an architecture: a block table, a layer builder, a config and
the key map of its ImageNet file. The heads, default boxes, post-processing, training and export come with
the registry; one line in `backbones/__init__.py` imports it.
"""

from __future__ import annotations

from torch import nn

from ssd.models.backbones.mobilenetv3 import build_ssdlite_layers
from ssd.models.config import SSDConfig, ssdlite_config
from ssd.models.registry import Architecture, register_architecture
from ssd.models.weights.key_maps import KeyMaps, register_key_maps

# (in, kernel, expanded, out, squeeze-excite, activation, stride): MobileNetV3-Small's inverted residuals.
SMALL_BLOCKS = [
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
]


def build_mobilenetv3_small_ssd_layers(config: SSDConfig) -> tuple[nn.Module, nn.ModuleList]:
    return build_ssdlite_layers(config, SMALL_BLOCKS, extra_widths=[256, 256, 128, 128])


MOBILENETV3_SMALL_SSD = register_architecture(
    Architecture(
        name="mobilenetv3_small_ssd",
        description="SSDLite320 on MobileNetV3-Small",
        config=ssdlite_config("mobilenetv3_small_ssd"),
        build_layers=build_mobilenetv3_small_ssd_layers,
    )
)
# ImageNet files in torchvision's mobilenet_v3_small layout; they need the full tail.
register_key_maps(
    "mobilenetv3_small_ssd",
    KeyMaps(
        imagenet=[(r"^features\.", "backbone.features.")],
        imagenet_ignore=[r"^classifier\."],
        imagenet_overrides={"reduced_tail": False},
    ),
)
