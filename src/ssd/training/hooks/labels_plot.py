"""`labels.png` at the start of a run: the training split's boxes per class, their centres and sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ssd.training.hooks.base import Hook
from ssd.training.plots.labels import plot_labels

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

LABELS_PNG = "labels.png"


class LabelsPlot(Hook):
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LABELS_PNG

    def before_run(self, trainer: Trainer) -> None:
        data = trainer.parts.data
        plot_labels(data.train_set.targets, data.train_set.class_names, self.path, data.train_split)
