"""The jobs around the training loop, one file each; see `base.Hook` for the points where they run."""

from ssd.training.hooks.args_file import ArgsFile
from ssd.training.hooks.bad_steps import BadStepLog
from ssd.training.hooks.base import BadStep, Hook
from ssd.training.hooks.checkpointer import Checkpointer
from ssd.training.hooks.console import ConsoleReport
from ssd.training.hooks.early_stopping import EarlyStopping
from ssd.training.hooks.evaluation import Evaluation
from ssd.training.hooks.evaluation_plots import EvaluationPlots
from ssd.training.hooks.labels_plot import LabelsPlot
from ssd.training.hooks.metrics_log import MetricsLog
from ssd.training.hooks.precise_bn import PreciseBatchNorm
from ssd.training.hooks.progress import ProgressBar
from ssd.training.hooks.tensorboard import TensorBoardLog
from ssd.training.hooks.train_batches import TrainBatchPictures
from ssd.training.hooks.val_pictures import ValidationPictures

__all__ = [
    "ArgsFile",
    "BadStep",
    "BadStepLog",
    "Checkpointer",
    "ConsoleReport",
    "EarlyStopping",
    "Evaluation",
    "EvaluationPlots",
    "Hook",
    "LabelsPlot",
    "MetricsLog",
    "PreciseBatchNorm",
    "ProgressBar",
    "TensorBoardLog",
    "TrainBatchPictures",
    "ValidationPictures",
]
