"""Architectures by name. An architecture is a config plus a function that builds its backbone and extras.

The heads, default boxes and post-processor are generic (built by `SSD` from what a dry forward pass of the
backbone and extras finds), so adding an architecture means writing only its feature extractor; see the
README's "Adding an architecture".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from torch import nn

from ssd.errors import UserError
from ssd.models.config import SSDConfig

if TYPE_CHECKING:
    from ssd.models.ssd import SSD

# One rule of a key map: a regular expression over a foreign key and its replacement (re.sub syntax).
KeyRule = tuple[str, str]


@dataclass(frozen=True)
class Architecture:
    """What the registry knows of one architecture.

    `build_layers(config)` returns `(backbone, extras)`: the backbone maps a normalised batch to a list of
    feature maps, and each extra block maps the last map to the next, smaller one.
    `torchvision_keys` maps torchvision's SSD checkpoint keys to ours, `imagenet_keys` an ImageNet backbone
    file's; keys matching an `*_ignore` pattern are dropped (e.g. the classifier of an ImageNet file).
    """

    name: str
    config: SSDConfig
    build_layers: Callable[[SSDConfig], tuple[nn.Module, nn.ModuleList]]
    description: str = ""
    torchvision_keys: Sequence[KeyRule] = ()
    imagenet_keys: Sequence[KeyRule] = ()
    imagenet_ignore: Sequence[str] = ()
    # Backbone layers that SSD adds to the classification network (e.g. VGG's fc6/fc7 as convolutions, the
    # L2Norm scale): an ImageNet file may lack them, and then they keep their initialisation.
    imagenet_optional: Sequence[str] = ()
    # Config changes an ImageNet backbone file needs (e.g. MobileNetV3's full tail instead of the reduced one).
    imagenet_overrides: dict[str, Any] = field(default_factory=dict)
    # The augmentation preset training uses unless told otherwise: torchvision's reference recipes use the
    # SSD paper's pipeline for SSD300/512 and IoU crop + flip (`ssdlite`) for SSDLite.
    default_augment: str = "ssd"
    # Whether training on a CPU uses the channels-last memory layout by default (on CUDA it always does).
    # Measured per architecture, as it helps some and slows others: see docs/training.md.
    cpu_channels_last: bool = False


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    if architecture.name in ARCHITECTURES:
        raise ValueError(f"architecture {architecture.name!r} is already registered")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    _load_builtin_architectures()
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(f"unknown architecture {name!r}; known: {known}")
    return ARCHITECTURES[name]


def available_architectures() -> list[str]:
    _load_builtin_architectures()
    return sorted(ARCHITECTURES)


def make_config(name: str, **overrides: Any) -> SSDConfig:
    """The architecture's config with overrides; an unknown key that the backbone knows goes to its options."""
    config = get_architecture(name).config
    config_fields = {f.name for f in fields(SSDConfig)}
    backbone_options = dict(config.backbone_options)
    direct = {}
    for key, value in overrides.items():
        if key in config_fields:
            direct[key] = value
        elif key in backbone_options:
            backbone_options[key] = value
        else:
            known = sorted(config_fields | set(backbone_options))
            raise UserError(f"{name}: unknown option {key!r}; known: {', '.join(known)}")
    return config.replace(backbone_options=backbone_options, **direct)


def build_model(
    arch: str,
    num_classes: int = 91,
    class_names: Sequence[str] | None = None,
    config: SSDConfig | None = None,
    **overrides: Any,
) -> SSD:
    """Build an SSD by architecture name.

    `num_classes` counts the background (class 0): a dataset with 3 object classes needs `num_classes=4`.
    `overrides` change the architecture's config, e.g. `input_size=512` or `score_threshold=0.3`.
    """
    from ssd.models.ssd import SSD

    if num_classes < 2:
        raise UserError(f"num_classes={num_classes}: it counts the background, so it must be at least 2")
    if class_names is not None and len(class_names) != num_classes - 1:
        raise UserError(
            f"{len(class_names)} class names for num_classes={num_classes} (which counts the background): "
            f"expected {num_classes - 1} names"
        )
    architecture = get_architecture(arch)
    config = config.replace(**overrides) if config is not None else make_config(arch, **overrides)
    backbone, extras = architecture.build_layers(config)
    return SSD(config, backbone, extras, num_classes=num_classes, class_names=class_names)


def _load_builtin_architectures() -> None:
    # Importing the backbone modules registers their architectures.
    from ssd.models.backbones import mobilenetv3, mobilenetv3_small, resnet, vgg  # noqa: F401
