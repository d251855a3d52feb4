"""`resnet50_ssd300`: SSD300 on ResNet-50, as in NVIDIA's SSD300 v1.1.

ResNet-50 is cut after conv4 (`layer3`) and that stage's stride is removed, so its 1024-channel map is 38x38
at 300; five extra blocks with BatchNorm give 19, 10, 5, 3 and 1. The layers keep torchvision's ResNet names
(`conv1`, `bn1`, `layer1`..`layer3`) so ImageNet files load by name.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssd.models.config import SSDConfig, ssd300_config
from ssd.models.layers import ConvBNAct
from ssd.models.registry import Architecture, register_architecture
from ssd.models.weights.key_maps import KeyMaps, register_key_maps


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(in_ch: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_ch, width, stride)]
    layers += [Bottleneck(width * Bottleneck.expansion, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50Conv4(nn.Module):
    """ResNet-50 up to conv4 with conv4's stride 1: one 1024-channel map at stride 8."""

    out_channels = [1024]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 3, stride=1)
        self.layer2 = _stage(256, 128, 4, stride=2)
        self.layer3 = _stage(512, 256, 6, stride=1)  # stride 2 in ResNet-50; 1 keeps the 38x38 map
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(layer, nn.BatchNorm2d):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return [self.layer3(self.layer2(self.layer1(x)))]


def build_resnet50_ssd300_layers(config: SSDConfig) -> tuple[nn.Module, nn.ModuleList]:
    widths = [1024, 512, 512, 256, 256, 256]
    mids = [256, 256, 128, 128, 128]
    extras = nn.ModuleList()
    for index, (in_ch, mid, out_ch) in enumerate(zip(widths[:-1], mids, widths[1:], strict=True)):
        halves = index < 3  # the first three halve the map; the last two are valid 3x3 convolutions
        extras.append(
            nn.Sequential(
                ConvBNAct(in_ch, mid, 1),
                ConvBNAct(mid, out_ch, 3, stride=2 if halves else 1, padding=1 if halves else 0),
            )
        )
    for layer in extras.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
    return ResNet50Conv4(), extras


RESNET50_SSD300 = register_architecture(
    Architecture(
        name="resnet50_ssd300",
        description="SSD300 on ResNet-50 truncated after conv4 (NVIDIA's SSD300 v1.1)",
        config=ssd300_config("resnet50_ssd300", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        build_layers=build_resnet50_ssd300_layers,
    )
)
register_key_maps(
    "resnet50_ssd300",
    KeyMaps(
        imagenet=[(r"^(conv1|bn1|layer1|layer2|layer3)\.", r"backbone.\1.")],
        imagenet_ignore=[r"^layer4\.", r"^fc\."],
    ),
)
