"""ssd: the Single Shot MultiBox Detector — models, loss, data, training, evaluation and export.

The public names below are imported on first use (PEP 562's module `__getattr__`): `import ssd` and the
`ssd` command's start-up (`ssd --help`) then cost no torch import, and `ssd.build_model` still works.

`ssd.load(path)` opens any model file for inference (a checkpoint, a torchvision file with `arch=`, an ONNX,
OpenVINO or TorchScript export): an object with `predict(images)`, `class_names` and `input_size`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ssd.version import __version__

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` imports them
    from ssd.deploy.loading import load
    from ssd.models.config import SSDConfig
    from ssd.models.postprocess import PostProcessor
    from ssd.models.registry import available_architectures, build_model
    from ssd.training.loss import MultiBoxLoss

# Each lazy public name, and the module that defines it.
_LAZY_NAMES = {
    "SSDConfig": "ssd.models.config",
    "PostProcessor": "ssd.models.postprocess",
    "MultiBoxLoss": "ssd.training.loss",
    "available_architectures": "ssd.models.registry",
    "build_model": "ssd.models.registry",
    "load": "ssd.deploy.loading",
}

__all__ = [
    "SSDConfig",
    "PostProcessor",
    "MultiBoxLoss",
    "available_architectures",
    "build_model",
    "load",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module 'ssd' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    globals()[name] = value  # later look-ups find it directly, without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
