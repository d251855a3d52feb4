"""ssd: the Single Shot MultiBox Detector — models, loss, data, training, evaluation and export."""

from ssd.models.config import SSDConfig
from ssd.models.postprocess import PostProcessor
from ssd.models.registry import available_architectures, build_model
from ssd.training.loss import MultiBoxLoss
from ssd.version import __version__

__all__ = [
    "SSDConfig",
    "PostProcessor",
    "MultiBoxLoss",
    "available_architectures",
    "build_model",
    "__version__",
]
