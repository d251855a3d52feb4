"""The first training batches as the model sees them: augmented pictures with their boxes and class names.

`train_batch0.jpg` .. `train_batch2.jpg` show what the augmentation does to the data before a person waits
for a whole run: a box off its object, or a class name on the wrong shape, is visible at the first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.evaluation.drawing import draw_ground_truth, tensor_picture, with_legend
from ssd.evaluation.mosaic import fit_into, mosaic
from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

BATCHES = 3
PICTURES_PER_BATCH = 16  # a 4 x 4 grid at most: more would be too small to read
CELL = 256


class TrainBatchPictures(Hook):
    """Rank 0, first epoch of a new run only (a resumed run keeps the pictures of its start)."""

    def __init__(self, run_dir: str | Path, batches: int = BATCHES) -> None:
        self.run_dir = Path(run_dir)
        self.batches = batches
        self.drawn = 0

    def before_step(self, trainer: Trainer, images: Any, targets: list[dict[str, Any]]) -> None:
        if self.drawn >= self.batches or trainer.resumed:
            return
        draw_batch(
            images,
            targets,
            trainer.parts.data.train_set.class_names,
            self.run_dir / f"train_batch{self.drawn}.jpg",
        )
        self.drawn += 1


def draw_batch(images, targets: list[dict[str, Any]], class_names, path: Path) -> Path:
    """Up to 16 pictures of one batch, each with its boxes dashed and named (ground truth), and a legend."""
    cells, titles, labels = [], [], set()
    for image, target in list(zip(images, targets, strict=True))[:PICTURES_PER_BATCH]:
        picture, scale = fit_into(tensor_picture(image), CELL)
        target_labels = target["labels"].reshape(-1).tolist()
        labels.update(target_labels)
        cells.append(
            draw_ground_truth(
                picture, target["boxes"].reshape(-1, 4) * scale, target_labels, class_names, captions=True
            )
        )
        titles.append(Path(str(target.get("file_name") or target.get("image_id", ""))).name)
    grid = mosaic(cells, columns=4, titles=titles)
    grid = with_legend(grid, class_names, labels=sorted(labels) or None, predictions=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)
    return path
