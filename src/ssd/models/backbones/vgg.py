"""The SSD paper's network on VGG-16: `vgg16_ssd300` (torchvision's ssd300_vgg16) and `vgg16_ssd512`.

VGG-16 is cut after conv5_3; pool3 rounds up (75 -> 38 at 300), pool5 becomes 3x3 stride 1, and the fully
connected fc6/fc7 become a dilated 3x3 and a 1x1 convolution. The two backbone maps are conv4_3 (scaled by
L2Norm) and fc7; the extras halve the map until it is 1x1.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssd.models.config import SSDConfig, ssd300_config, ssd512_config
from ssd.models.layers import L2Norm, init_conv_xavier
from ssd.models.registry import Architecture, register_architecture
from ssd.models.weights.key_maps import KeyMaps, register_key_maps

_VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_CONV4_3_RELU = 22  # index in `features` of conv4_3's ReLU: the first map SSD uses
_POOL3 = 16


class VGG16Features(nn.Module):
    """VGG-16 conv1_1..conv5_3 (torchvision's `features.0` .. `features.29`), then pool5 and fc6/fc7."""

    out_channels = [512, 1024]

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for width in _VGG16_LAYOUT:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=len(layers) == _POOL3))
            else:
                layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = width
        self.features = nn.Sequential(*layers)
        self.l2norm = L2Norm(512)
        self.fc = nn.Sequential(
            nn.MaxPool2d(3, 1, padding=1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),  # fc6
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, 1),  # fc7
            nn.ReLU(inplace=True),
        )
        init_conv_xavier(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3 = None
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == _CONV4_3_RELU:
                conv4_3 = self.l2norm(x)
        return [conv4_3, self.fc(x)]


def _extra_block(in_ch: int, mid: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, mid, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_ch, kernel, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


def build_vgg16_ssd300_layers(config: SSDConfig) -> tuple[nn.Module, nn.ModuleList]:
    extras = nn.ModuleList(
        [
            _extra_block(1024, 256, 512, 3, 2, 1),  # conv8: 19 -> 10
            _extra_block(512, 128, 256, 3, 2, 1),  # conv9: 10 -> 5
            _extra_block(256, 128, 256, 3, 1, 0),  # conv10: 5 -> 3
            _extra_block(256, 128, 256, 3, 1, 0),  # conv11: 3 -> 1
        ]
    )
    init_conv_xavier(extras)
    return VGG16Features(), extras


def build_vgg16_ssd512_layers(config: SSDConfig) -> tuple[nn.Module, nn.ModuleList]:
    extras = nn.ModuleList(
        [
            _extra_block(1024, 256, 512, 3, 2, 1),  # 32 -> 16
            _extra_block(512, 128, 256, 3, 2, 1),  # 16 -> 8
            _extra_block(256, 128, 256, 3, 2, 1),  # 8 -> 4
            _extra_block(256, 128, 256, 3, 2, 1),  # 4 -> 2
            _extra_block(256, 128, 256, 4, 1, 1),  # 2 -> 1
        ]
    )
    init_conv_xavier(extras)
    return VGG16Features(), extras


# ImageNet VGG-16 files: torchvision's layout (features.N, classifier.N) and the "reduced fc" layout SSD
# implementations publish (bare indices, with fc6/fc7 already converted to convolutions at 31 and 33).
_IMAGENET_KEYS = [
    (r"^features\.(\d|1\d|2[0-8])\.", r"backbone.features.\1."),
    (r"^(\d|1\d|2[0-8])\.", r"backbone.features.\1."),
    (r"^31\.", "backbone.fc.1."),
    (r"^33\.", "backbone.fc.3."),
]
_TORCHVISION_KEYS = [
    (r"^backbone\.features\.", "backbone.features."),
    (r"^backbone\.scale_weight$", "backbone.l2norm.weight"),
    (r"^backbone\.extra\.0\.1\.", "backbone.features.24."),
    (r"^backbone\.extra\.0\.3\.", "backbone.features.26."),
    (r"^backbone\.extra\.0\.5\.", "backbone.features.28."),
    (r"^backbone\.extra\.0\.7\.", "backbone.fc."),
    (r"^backbone\.extra\.1\.", "extras.0."),
    (r"^backbone\.extra\.2\.", "extras.1."),
    (r"^backbone\.extra\.3\.", "extras.2."),
    (r"^backbone\.extra\.4\.", "extras.3."),
    (r"^head\.classification_head\.module_list\.", "classification_headers."),
    (r"^head\.regression_head\.module_list\.", "regression_headers."),
]
# The VGG normalisation of the SSD papers: subtract the mean on 0-255 pixels, no division.
_VGG_MEAN = (0.48235, 0.45882, 0.40784)
_VGG_STD = (1.0 / 255, 1.0 / 255, 1.0 / 255)

VGG16_SSD300 = register_architecture(
    Architecture(
        name="vgg16_ssd300",
        description="SSD300 on VGG-16, the paper's network (torchvision's ssd300_vgg16)",
        config=ssd300_config("vgg16_ssd300", _VGG_MEAN, _VGG_STD),
        build_layers=build_vgg16_ssd300_layers,
    )
)
VGG16_SSD512 = register_architecture(
    Architecture(
        name="vgg16_ssd512",
        description="SSD512 on VGG-16, the paper's higher-resolution network",
        config=ssd512_config("vgg16_ssd512", _VGG_MEAN, _VGG_STD),
        build_layers=build_vgg16_ssd512_layers,
    )
)
_IMAGENET_MAPS = {
    "imagenet": _IMAGENET_KEYS,
    "imagenet_ignore": [r"^classifier\.", r"^(29|30|32|34)\."],
    "imagenet_optional": [r"^backbone\.fc\.", r"^backbone\.l2norm\."],
}
register_key_maps("vgg16_ssd300", KeyMaps(torchvision=_TORCHVISION_KEYS, **_IMAGENET_MAPS))
register_key_maps("vgg16_ssd512", KeyMaps(**_IMAGENET_MAPS))
