"""One typed configuration per architecture: every hyperparameter of the network and its inference path."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssd.ops.anchors import linear_scales


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


# The recipes the built-in architectures start from. Scales have one entry per feature map plus one.


def ssd300_config(arch: str, image_mean: tuple[float, ...], image_std: tuple[float, ...]) -> SSDConfig:
    """The SSD paper's SSD300 (torchvision's ssd300_vgg16): six maps at strides 8..300 and its scales."""
    return _paper_config(
        arch,
        300,
        scales=(0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
        aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        steps=(8, 16, 32, 64, 100, 300),
        image_mean=image_mean,
        image_std=image_std,
    )


def ssd512_config(arch: str, image_mean: tuple[float, ...], image_std: tuple[float, ...]) -> SSDConfig:
    """The SSD paper's SSD512: seven maps at strides 8..512 and its scales."""
    return _paper_config(
        arch,
        512,
        scales=(0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06),
        aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        steps=(8, 16, 32, 64, 128, 256, 512),
        image_mean=image_mean,
        image_std=image_std,
    )


def _paper_config(arch: str, side: int, **recipe: Any) -> SSDConfig:
    # The paper's post-processing: score 0.01, NMS 0.45, top-400 per class, 200 detections.
    return SSDConfig(
        arch=arch,
        input_size=(side, side),
        clip_default_boxes=True,
        score_threshold=0.01,
        nms_threshold=0.45,
        detections_per_image=200,
        topk_candidates=400,
        **recipe,
    )


def ssdlite_config(arch: str) -> SSDConfig:
    """torchvision's SSDLite320 recipe: six maps, scales 0.2-0.95, inputs in [-1, 1], BatchNorm eps 0.001 and
    momentum 0.03, and its post-processing (score 0.001, NMS 0.55, top-300 per class, 300 detections)."""
    return SSDConfig(
        arch=arch,
        input_size=(320, 320),
        scales=linear_scales(0.2, 0.95, 6),
        aspect_ratios=((2.0, 3.0),) * 6,
        clip_default_boxes=True,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        head="separable",
        batchnorm_eps=0.001,
        batchnorm_momentum=0.03,
        score_threshold=0.001,
        nms_threshold=0.55,
        detections_per_image=300,
        topk_candidates=300,
        backbone_options={"reduced_tail": True},
    )
