"""One typed configuration per architecture: every hyperparameter of the network and its inference path."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SSDConfig:
    """Everything that defines an SSD architecture besides its layers' code.

    `scales` has one entry per feature map plus one (the last map's s_{k+1}); `aspect_ratios` one tuple per
    map (each ratio a adds the boxes a and 1/a). `steps` (pixels between default-box centres) applies only at
    the input size it was written for: `with_input_size` drops it, so the centres follow the feature maps.
    `image_mean`/`image_std` apply to pixels scaled to [0, 1].
    """

    arch: str
    input_size: tuple[int, int]
    scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    steps: tuple[float, ...] | None = None
    clip_default_boxes: bool = False
    head: str = "conv"  # "conv": one 3x3 conv per header; "separable": depthwise 3x3 + BN + ReLU6, then 1x1
    batchnorm_eps: float = 1e-5
    batchnorm_momentum: float = 0.1
    variances: tuple[float, float] = (0.1, 0.2)
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    detections_per_image: int = 200
    topk_candidates: int = 400
    backbone_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.scales) != len(self.aspect_ratios) + 1:
            raise ValueError(
                f"{self.arch}: {len(self.aspect_ratios)} feature maps need {len(self.aspect_ratios) + 1} "
                f"scales, got {len(self.scales)}"
            )
        if self.head not in ("conv", "separable"):
            raise ValueError(f"{self.arch}: head must be 'conv' or 'separable', not {self.head!r}")

    @property
    def num_feature_maps(self) -> int:
        return len(self.aspect_ratios)

    def with_input_size(self, input_size: int | tuple[int, int]) -> SSDConfig:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if size == self.input_size:
            return self
        return dataclasses.replace(self, input_size=size, steps=None)

    def replace(self, **changes: Any) -> SSDConfig:
        """A copy with some fields changed; `input_size` also resets the explicit steps."""
        input_size = changes.pop("input_size", None)
        config = dataclasses.replace(self, **changes) if changes else self
        return config.with_input_size(input_size) if input_size is not None else config

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint loads with `weights_only=True`."""
        values = dataclasses.asdict(self)
        values["backbone_options"] = dict(self.backbone_options)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SSDConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        for key in ("input_size", "scales", "image_mean", "image_std", "variances"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        values["aspect_ratios"] = tuple(tuple(r) for r in values["aspect_ratios"])
        if values.get("steps") is not None:
            values["steps"] = tuple(values["steps"])
        return cls(**values)
