"""A few validation pictures with the model's boxes drawn on them, to see what the numbers mean."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw

from ssd.evaluation.drawing import draw_detections
from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer


class ValidationPictures(Hook):
    """After each evaluation, the first `count` validation pictures with their predictions, one row of tiles
    in `pictures/epoch_NNN.jpg`."""

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
    score_threshold: float = 0.3,
    tile: int = 320,
) -> Path:
    """One row of tiles: each picture with its ground truth in white and its detections (score >=
    `score_threshold`) in their class's colour, labelled with name and score."""
    tiles = []
    for image, detection, target in zip(images, detections, targets, strict=True):
        picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        scale = tile / max(picture.size)
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        )
        draw = ImageDraw.Draw(picture)
        for box in np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4):
            draw.rectangle(list(box * scale), outline=(255, 255, 255), width=1)
        shown = np.asarray(detection["scores"], dtype=np.float64) >= score_threshold
        boxes = np.asarray(detection["boxes"], dtype=np.float64).reshape(-1, 4)[shown] * scale
        labels = np.asarray(detection["labels"]).reshape(-1)[shown]
        scores = np.asarray(detection["scores"], dtype=np.float64).reshape(-1)[shown]
        canvas = Image.new("RGB", (tile, tile), (32, 32, 32))
        canvas.paste(draw_detections(picture, boxes, labels, scores, class_names), (0, 0))
        tiles.append(canvas)
    grid = Image.new("RGB", (tile * max(1, len(tiles)), tile), (0, 0, 0))
    for index, canvas in enumerate(tiles):
        grid.paste(canvas, (index * tile, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)
    return path
