"""How the keys of torchvision's weight files become ours, per architecture.

Each backbone file registers the maps of its architectures beside its layers, whose names they encode. An
architecture without an entry has no foreign weights to load (our own checkpoints need no map).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# One rule of a key map: a regular expression over a foreign key and its replacement (re.sub syntax).
KeyRule = tuple[str, str]


@dataclass(frozen=True)
class KeyMaps:
    """`torchvision` maps torchvision's SSD checkpoint keys to ours, `imagenet` an ImageNet backbone file's;
    keys matching an `imagenet_ignore` pattern are dropped (e.g. the classifier of an ImageNet file)."""

    torchvision: Sequence[KeyRule] = ()
    imagenet: Sequence[KeyRule] = ()
    imagenet_ignore: Sequence[str] = ()
    # Backbone layers that SSD adds to the classification network (e.g. VGG's fc6/fc7 as convolutions, the
    # L2Norm scale): an ImageNet file may lack them, and then they keep their initialisation.
    imagenet_optional: Sequence[str] = ()
    # Config changes an ImageNet backbone file needs (e.g. MobileNetV3's full tail instead of the reduced one).
    imagenet_overrides: Mapping[str, Any] = field(default_factory=dict)


KEY_MAPS: dict[str, KeyMaps] = {}


def register_key_maps(arch: str, maps: KeyMaps) -> KeyMaps:
    if arch in KEY_MAPS:
        raise ValueError(f"key maps for {arch!r} are already registered")
    KEY_MAPS[arch] = maps
    return maps


def key_maps_for(arch: str) -> KeyMaps:
    return KEY_MAPS.get(arch, KeyMaps())
