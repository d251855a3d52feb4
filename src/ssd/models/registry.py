"""Architectures by name: a table that each backbone file adds its architectures to when it is imported.

An architecture is a config plus a function that builds its backbone and extras. The heads, default boxes and
post-processor are generic (built by `SSD` from what a dry forward pass of the backbone and extras finds), so
adding an architecture means writing only its feature extractor; see the README's "Adding an architecture".
This module imports none of the backbones: `ssd.models` imports `ssd.models.backbones`, whose files register
themselves, so the table is full wherever the package is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from ssd.errors import UserError, did_you_mean
from ssd.models.config import SSDConfig
from ssd.models.ssd import SSD
from ssd.models.weights.resolve import pretrained_config_overrides, resolve_weights


@dataclass(frozen=True)
class Architecture:
    """What the registry knows of one architecture: its config and how to build its layers.

    `build_layers(config)` returns `(backbone, extras)`: the backbone maps a normalised batch to a list of
    feature maps, and each extra block maps the last map to the next, smaller one. How foreign weight files
    map onto it lives in `ssd.models.weights.key_maps`, and how training treats it in `ssd.training.recipes`.
    """

    name: str
    config: SSDConfig
    build_layers: Callable[[SSDConfig], tuple[nn.Module, nn.ModuleList]]
    description: str = ""


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    if architecture.name in ARCHITECTURES:
        raise ValueError(f"architecture {architecture.name!r} is already registered")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(f"unknown architecture {name!r} (known: {known}){did_you_mean(name, ARCHITECTURES)}")
    return ARCHITECTURES[name]


def available_architectures() -> list[str]:
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
    weights: str | Path | None = None,
    **overrides: Any,
) -> SSD:
    """Build an SSD by architecture name.

    `num_classes` counts the background (class 0): a dataset with 3 object classes needs `num_classes=4`.
    `overrides` change the architecture's config, e.g. `input_size=512` or `score_threshold=0.3`.
    `weights` loads a torchvision SSD checkpoint or ImageNet backbone file, or a pretrained name
    (`ssd weights list`: downloaded once into torch's cache, and the model built as the file needs it), with
    any class count: classification headers for another count keep their fresh initialisation.
    """
    if num_classes < 2:
        raise UserError(f"num_classes={num_classes}: it counts the background, so it must be at least 2")
    if class_names is not None and len(class_names) != num_classes - 1:
        raise UserError(
            f"{len(class_names)} class names for num_classes={num_classes} (which counts the background): "
            f"expected {num_classes - 1} names"
        )
    architecture = get_architecture(arch)
    if config is not None:
        config = config.replace(**overrides)
    else:
        config = make_config(arch, **{**pretrained_config_overrides(weights, arch), **overrides})
    # Before building: a name unknown or for another architecture fails at once, and a download fails early.
    weights_file = resolve_weights(weights, arch) if weights is not None else None
    backbone, extras = architecture.build_layers(config)
    model = SSD(config, backbone, extras, num_classes=num_classes, class_names=class_names)
    if weights_file is not None:
        model.load_torchvision(weights_file)
    return model
