"""Pretrained weights by name: torchvision's published files, where they live and which architectures take them.

A name stands for one file under torchvision's download address. The hex after the last '-' of a published
file's name is the start of the file's SHA-256 (torchvision's and torch.hub's convention), so the file name
alone says how to check a download; nothing here repeats it. The address base can be changed with the
SSD_WEIGHTS_URL environment variable (a mirror, or a local server in the tests).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd.errors import UserError, did_you_mean
from ssd.models.weights.key_maps import key_maps_for

DEFAULT_BASE_URL = "https://download.pytorch.org/models"
BASE_URL_VARIABLE = "SSD_WEIGHTS_URL"

COCO = "coco"  # a whole SSD trained on COCO (91 classes, background included)
IMAGENET = "imagenet"  # a classification network trained on ImageNet-1K; only its backbone is used

_HASH_IN_FILE_NAME = re.compile(r"-([0-9a-f]+)\.[^-]*$")


@dataclass(frozen=True)
class PretrainedWeights:
    """One published file: its short name, its file name (which carries its hash), what it is, and the
    architectures whose key maps read it (the first is the one a name alone builds)."""

    name: str
    file_name: str
    kind: str
    archs: tuple[str, ...]
    about: str

    @property
    def sha256_prefix(self) -> str:
        match = _HASH_IN_FILE_NAME.search(self.file_name)
        if match is None:
            raise ValueError(f"{self.file_name}: no '-<hex>.' hash in the file name")
        return match.group(1)

    @property
    def kind_text(self) -> str:
        return "COCO SSD" if self.kind == COCO else "ImageNet backbone"

    def url(self, base_url: str | None = None) -> str:
        base = base_url or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL
        return f"{base.rstrip('/')}/{self.file_name}"

    def check_fits(self, arch: str) -> None:
        """Refuse before any download: a file for another architecture would only fail after it."""
        if arch not in self.archs:
            raise UserError(
                f"weights {self.name!r} are the {self.kind_text} for {' or '.join(self.archs)}, not for {arch}"
            )

    def config_overrides(self, arch: str) -> Mapping[str, Any]:
        """What the model must be built with to take this file (e.g. MobileNetV3's full tail)."""
        return key_maps_for(arch).imagenet_overrides if self.kind == IMAGENET else {}


CATALOG: dict[str, PretrainedWeights] = {
    entry.name: entry
    for entry in (
        PretrainedWeights(
            "ssdlite320_mobilenet_v3_large",
            "ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
            COCO,
            ("mobilenetv3_ssd",),
            "torchvision's SSDLite320 on MobileNetV3-Large, COCO box AP 21.3",
        ),
        PretrainedWeights(
            "ssd300_vgg16",
            "ssd300_vgg16_coco-b556d3b4.pth",
            COCO,
            ("vgg16_ssd300",),
            "torchvision's SSD300 on VGG-16, COCO box AP 25.1",
        ),
        PretrainedWeights(
            "mobilenet_v3_large",
            "mobilenet_v3_large-8738ca79.pth",
            IMAGENET,
            ("mobilenetv3_ssd",),
            "MobileNetV3-Large, ImageNet V1 (the one torchvision's SSDLite starts from)",
        ),
        PretrainedWeights(
            "mobilenet_v3_large_v2",
            "mobilenet_v3_large-5c1a4163.pth",
            IMAGENET,
            ("mobilenetv3_ssd",),
            "MobileNetV3-Large, ImageNet V2 (torchvision's newer recipe)",
        ),
        PretrainedWeights(
            "mobilenet_v3_small",
            "mobilenet_v3_small-047dcff4.pth",
            IMAGENET,
            ("mobilenetv3_small_ssd",),
            "MobileNetV3-Small, ImageNet V1",
        ),
        PretrainedWeights(
            "vgg16",
            "vgg16-397923af.pth",
            IMAGENET,
            ("vgg16_ssd300", "vgg16_ssd512"),
            "VGG-16, torchvision's classification network (ImageNet V1)",
        ),
        PretrainedWeights(
            "vgg16_features",
            "vgg16_features-amdegroot-88682ab5.pth",
            IMAGENET,
            ("vgg16_ssd300", "vgg16_ssd512"),
            "VGG-16 features from amdegroot/ssd.pytorch, trained with the normalisation our VGG models use "
            "(the one torchvision's SSD300 starts from)",
        ),
        PretrainedWeights(
            "resnet50",
            "resnet50-0676ba61.pth",
            IMAGENET,
            ("resnet50_ssd300",),
            "ResNet-50, ImageNet V1 (the one NVIDIA's SSD300 starts from)",
        ),
        PretrainedWeights(
            "resnet50_v2",
            "resnet50-11ad3fa6.pth",
            IMAGENET,
            ("resnet50_ssd300",),
            "ResNet-50, ImageNet V2 (torchvision's newer recipe)",
        ),
    )
}


def find_pretrained(text: str | Path) -> PretrainedWeights | None:
    """The entry `text` names: a short name, or a published file name (a path ending in one counts too)."""
    text = str(text)
    if text in CATALOG:
        return CATALOG[text]
    file_name = Path(text).name
    return next((entry for entry in CATALOG.values() if entry.file_name == file_name), None)


def unknown_weights_message(text: str) -> str:
    """One line for a --weights value that is neither a file nor a name, with the names it may have meant."""
    names = sorted(CATALOG)
    return (
        f"{text}: no such weights file, nor a pretrained weights name{did_you_mean(text, names)} "
        f"(known names: {', '.join(names)}; `ssd weights list`)"
    )
