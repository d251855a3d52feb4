"""Validation after an epoch: COCO and VOC mAP of the inference model, and the best mAP so far."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from ssd.evaluation import Evaluator
from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer


class Evaluation(Hook):
    """Adds mAP, mAP50, mAP75, VOC_mAP50, per_class_AP and eval_seconds to the epoch's row; keeps the result
    in `trainer.evaluation` for the hooks after it, and updates `trainer.best_map` and `trainer.improved`."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not trainer.evaluates_after(row["epoch"] - 1):
            return
        started = time.perf_counter()
        result = self.evaluator(trainer.inference_model())
        summary = result.summary()
        row.update(
            {
                "mAP": summary["AP"],
                "mAP50": summary["AP50"],
                "mAP75": summary["AP75"],
                "VOC_mAP50": result.voc.map_area,
                "per_class_AP": {
                    name: _plain_number(ap)
                    for name, ap in zip(result.class_names, result.coco.ap_per_class, strict=True)
                },
                "eval_seconds": time.perf_counter() - started,
            }
        )
        trainer.evaluation = result
        if trainer.best_map is None or row["mAP"] > trainer.best_map:
            trainer.best_map = row["mAP"]
            trainer.improved = True


def _plain_number(value: Any) -> float | None:
    """A float for the checkpoint and CSV; None where a metric is undefined (NaN: a class with no object)."""
    value = float(value)
    return value if math.isfinite(value) else None
