"""ssd: the Single Shot MultiBox Detector — models, loss, data, training, evaluation and export."""

from ssd.models.config import SSDConfig
from ssd.models.postprocess import PostProcessor
from ssd.models.registry import available_architectures, build_model

__version__ = "0.1.0"

__all__ = [
    "SSDConfig",
    "PostProcessor",
    "MultiBoxLoss",
    "available_architectures",
    "build_model",
    "__version__",
]


def __getattr__(name: str):
    # The loss lives in its own module and pulls in scipy (for Hungarian matching): import it on first use.
    if name == "MultiBoxLoss":
        from ssd.training.loss import MultiBoxLoss

        return MultiBoxLoss
    raise AttributeError(f"module 'ssd' has no attribute {name!r}")
