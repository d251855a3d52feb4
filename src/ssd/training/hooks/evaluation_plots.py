"""The plots of the latest evaluation in the run folder: `confusion_matrix.png`, `PR_curve.png`, `F1_curve.png`.

Drawn from the evaluation that already ran (`trainer.evaluation`), so they cost a few figures, no model
pass; each evaluation replaces them, and the title names the epoch they show.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ssd.evaluation.confusion import confusion_matrix, plot_confusion_matrix
from ssd.evaluation.curves import plot_f1_curve, plot_pr_curve
from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

CONFUSION_MATRIX = "confusion_matrix.png"
PR_CURVE = "PR_curve.png"
F1_CURVE = "F1_curve.png"


class EvaluationPlots(Hook):
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        result = trainer.evaluation
        if result is None:
            return
        title = (
            f", epoch {row['epoch']}, '{trainer.parts.data.val_split}' split ({result.num_images} pictures)"
        )
        matrix = confusion_matrix(result.detections, result.targets, result.class_names)
        plot_confusion_matrix(matrix, self.run_dir / CONFUSION_MATRIX, title)
        plot_pr_curve(result, self.run_dir / PR_CURVE, title)
        plot_f1_curve(result, self.run_dir / F1_CURVE, title)
