"""Load a detector for inference from either kind of weights file the package accepts.

- A training checkpoint of this package: a dict holding `arch`, `num_classes`, `class_names` and the
  weights under `model`; everything needed to rebuild the model is inside.
- A torchvision SSD checkpoint (a bare `state_dict`, or a dict with one under `state_dict`): it holds
  weights only, so the architecture and the number of classes (background included) must be given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ssd.errors import UserError


@dataclass
class LoadedModel:
    model: torch.nn.Module
    arch: str
    num_classes: int  # background included
    class_names: list[str] | None  # from a training checkpoint; None for torchvision weights
    source: str  # "checkpoint" or "torchvision"


def _is_training_checkpoint(content) -> bool:
    return isinstance(content, dict) and "model" in content and "arch" in content


def _read(path: Path):
    try:
        # weights_only: a downloaded file must not be able to run code when it is opened.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise UserError(f"{path}: cannot be read as a PyTorch weights file ({error})") from error


def load_model_for_inference(
    path: str | Path, arch: str | None = None, num_classes: int | None = None
) -> LoadedModel:
    """The model in eval mode, with what is known about its classes.

    `arch` and `num_classes` are required for torchvision weights, and must agree with a training
    checkpoint's own where given.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    content = _read(path)
    from ssd import build_model

    if _is_training_checkpoint(content):
        stored_arch = str(content["arch"])
        stored_classes = int(content["num_classes"])
        if arch is not None and arch != stored_arch:
            raise UserError(f"{path}: the checkpoint is a {stored_arch} model, not {arch}")
        if num_classes is not None and num_classes != stored_classes:
            raise UserError(f"{path}: the checkpoint has num_classes={stored_classes}, not {num_classes}")
        class_names = list(content["class_names"]) if content.get("class_names") is not None else None
        model = build_model(stored_arch, num_classes=stored_classes, class_names=class_names)
        try:
            model.load_state_dict(content["model"])
        except RuntimeError as error:
            raise UserError(f"{path}: the weights do not fit a {stored_arch} model ({error})") from error
        model.eval()
        return LoadedModel(model, stored_arch, stored_classes, class_names, "checkpoint")

    if arch is None or num_classes is None:
        raise UserError(
            f"{path}: torchvision weights do not say which model they belong to; pass --arch and "
            "--num-classes (object classes + 1 for the background)"
        )
    model = build_model(arch, num_classes=num_classes)
    model.load_torchvision(path)
    model.eval()
    return LoadedModel(model, arch, num_classes, None, "torchvision")
