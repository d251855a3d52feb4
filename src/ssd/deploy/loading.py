"""One way to open any model file for inference: our checkpoints, torchvision SSD files and exported files.

`ssd detect` and `ssd serve` both go through `load_detector`, so a file that detects on the command line
serves the same detections over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssd.models.fold import prepare_for_inference
from ssd.deploy.formats import is_exported_model, load_predictor
from ssd.deploy.threads import set_inference_threads
from ssd.models.checkpoint import load_model
from ssd.models.weights.resolve import weights_and_arch


def load_detector(
    weights: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    threads: int | None = None,
    device: torch.device | str = "cpu",
):
    """Anything with `predict(images)`, `class_names` and `num_classes` for a weights or exported file, or
    a pretrained name (`ssd weights list`), downloaded the first time."""
    weights, arch = weights_and_arch(weights, arch)
    set_inference_threads(threads)
    if is_exported_model(weights):
        detector = load_predictor(weights, threads)
        if class_names is not None:
            detector.class_names = list(class_names)
        return detector
    model = load_model(weights, arch=arch, num_classes=num_classes, class_names=class_names, device=device)
    return prepare_for_inference(model)


def describe_detector(detector, weights: str | Path) -> dict[str, Any]:
    """What a client may want to know of a loaded detector: its classes, input size, backend, precision."""
    config = detector.config
    backend = getattr(detector, "backend", "") or "pytorch"
    if isinstance(detector, torch.nn.Module):
        parameter = next(detector.parameters())
        precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            parameter.dtype, str(parameter.dtype)
        )
        device = str(parameter.device)
    else:
        precision, device = "fp32", "cpu"
    return {
        "file": Path(weights).name,
        "arch": config.arch,
        "classes": list(detector.class_names) if detector.class_names is not None else None,
        "num_classes": int(detector.num_classes),
        "input_size": list(config.input_size),
        "backend": backend,
        "precision": precision,
        "device": device,
    }
