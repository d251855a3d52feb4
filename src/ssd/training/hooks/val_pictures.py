"""A few validation pictures with the model's boxes drawn on them, to see what the numbers mean."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssd.evaluation.drawing import draw_detections, draw_ground_truth, tensor_picture, with_legend
from ssd.evaluation.mosaic import fit_into, mosaic
from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

SCORE_THRESHOLD = 0.3  # the predictions drawn; lower ones would bury the picture


class ValidationPictures(Hook):
    """After each evaluation, the first `count` validation pictures with their ground truth and
    predictions, one row of tiles in `pictures/epoch_NNN.jpg`."""

    def __init__(self, count: int) -> None:
        self.count = count

    def after_epoch(self, trainer: Trainer, row: dict) -> None:
        result = trainer.evaluation
        if result is None:
            return
        val_set = trainer.parts.data.val_set
        count = min(self.count, len(val_set))
        images = [val_set[i][0] for i in range(count)]
        draw_predictions(
            images,
            result.detections[:count],
            result.targets[:count],
            result.class_names,
            trainer.parts.run_dir / "pictures" / f"epoch_{row['epoch']:03d}.jpg",
        )


def draw_predictions(
    images: Sequence[torch.Tensor],
    detections: Sequence[dict],
    targets: Sequence[dict],
    class_names: Sequence[str],
    path: str | Path,
    score_threshold: float = SCORE_THRESHOLD,
    tile: int = 320,
) -> Path:
    """One row of tiles: each picture with its ground truth (dashed) and its predictions with score >=
    `score_threshold` (solid, captioned), and a legend below."""
    tiles, titles = [], []
    for image, detection, target in zip(images, detections, targets, strict=True):
        picture, scale = fit_into(tensor_picture(image), tile)
        gt_boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4) * scale
        picture = draw_ground_truth(picture, gt_boxes, np.asarray(target["labels"]).reshape(-1))
        scores = np.asarray(detection["scores"], dtype=np.float64).reshape(-1)
        shown = scores >= score_threshold
        boxes = np.asarray(detection["boxes"], dtype=np.float64).reshape(-1, 4)[shown] * scale
        labels = np.asarray(detection["labels"]).reshape(-1)[shown]
        tiles.append(draw_detections(picture, boxes, labels, scores[shown], class_names))
        name = Path(str(target.get("file_name") or target.get("image_id", ""))).name
        titles.append(f"{name}: {_count(len(gt_boxes), 'object')}, {_count(int(shown.sum()), 'prediction')}")
    grid = mosaic(tiles, columns=len(tiles), titles=titles)
    grid = with_legend(grid, class_names, score_threshold=score_threshold)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)
    return path


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
