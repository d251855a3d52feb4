"""The confusion matrix of a detector: which class each object was taken for, with "background" for both
the objects nobody found and the predictions that match no object.

At one working point, a score and an IoU threshold, both stated on the plot: each prediction with score >=
`score_threshold` is paired with the object it overlaps most (IoU >= `iou_threshold`, whatever the two
classes), pairs taken best IoU first and each object and prediction used once, as Ultralytics counts it.
Crowd and difficult objects are neither missed nor matched; a prediction on one is not counted at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssd.evaluation.figures import pyplot, save_figure
from ssd.evaluation.voc_metrics import detection_arrays, ground_truth_arrays
from ssd.ops.boxes import box_iou

WORKING_SCORE = 0.3  # the predictions a person keeps; the same threshold draws the validation pictures
WORKING_IOU = 0.5  # the IoU of mAP@0.5


@dataclass
class ConfusionMatrix:
    """`counts[predicted, true]` over labels 0..K-1 for the classes and K for the background."""

    counts: np.ndarray
    class_names: list[str]
    score_threshold: float
    iou_threshold: float

    def normalised(self) -> np.ndarray:
        """Each column (a true class, or the background's false predictions) divided by its total."""
        totals = self.counts.sum(axis=0, keepdims=True)
        return np.divide(
            self.counts, totals, out=np.zeros_like(self.counts, dtype=np.float64), where=totals > 0
        )


def confusion_matrix(
    detections: Sequence[dict],
    targets: Sequence[dict],
    class_names: Sequence[str],
    score_threshold: float = WORKING_SCORE,
    iou_threshold: float = WORKING_IOU,
) -> ConfusionMatrix:
    classes = len(class_names)
    background = classes
    counts = np.zeros((classes + 1, classes + 1), dtype=np.int64)
    for detection, target in zip(detections, targets, strict=True):
        boxes, labels, scores = detection_arrays(detection)
        keep = scores >= score_threshold
        boxes, labels = boxes[keep], labels[keep] - 1
        gt_boxes, gt_labels, ignored = ground_truth_arrays(target)
        gt_labels = gt_labels - 1
        counted = ~ignored
        used_gt = np.zeros(len(gt_boxes), dtype=bool)
        used_det = np.zeros(len(boxes), dtype=bool)
        if len(boxes) and len(gt_boxes):
            iou = box_iou(torch.from_numpy(gt_boxes), torch.from_numpy(boxes)).numpy()
            pairs = np.argwhere((iou >= iou_threshold) & counted[:, None])
            for g, d in sorted(pairs.tolist(), key=lambda pair: -iou[pair[0], pair[1]]):
                if not used_gt[g] and not used_det[d]:
                    used_gt[g] = used_det[d] = True
                    counts[labels[d], gt_labels[g]] += 1
            # A prediction on a crowd or difficult object is neither right nor wrong.
            on_ignored = (
                (iou[ignored] >= iou_threshold).any(axis=0) if ignored.any() else np.zeros(len(boxes), bool)
            )
            used_det |= on_ignored
        for g in np.flatnonzero(~used_gt & counted):
            counts[background, gt_labels[g]] += 1
        for d in np.flatnonzero(~used_det):
            counts[labels[d], background] += 1
    return ConfusionMatrix(counts, list(class_names), score_threshold, iou_threshold)


def plot_confusion_matrix(matrix: ConfusionMatrix, path: str | Path, title: str = "") -> Path:
    """The normalised matrix with class names on both axes; each cell shows its share and, below, its count."""
    plt = pyplot()
    names = [*matrix.class_names, "background"]
    size = len(names)
    shares = matrix.normalised()
    side = min(14.0, 3.5 + 0.6 * size)
    figure, axes = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the column (true class)")
    if size <= 30:
        for row in range(size):
            for column in range(size):
                if matrix.counts[row, column] == 0:
                    continue
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(
                    column,
                    row,
                    f"{shares[row, column]:.2f}\n({matrix.counts[row, column]})",
                    ha="center",
                    va="center",
                    fontsize=8 if size <= 12 else 6,
                    color=colour,
                )
    axes.set_xticks(range(size), names, rotation=45 if size > 5 else 0, ha="right" if size > 5 else "center")
    axes.set_yticks(range(size), names)
    axes.set_xlabel("true class (background: predictions matching no object)")
    axes.set_ylabel("predicted class (background: objects not found)")
    axes.set_title(
        f"confusion matrix{title}\npredictions with score >= {matrix.score_threshold:.2f}, matched at IoU >= "
        f"{matrix.iou_threshold:.2f}; each column sums to 1",
        fontsize=10,
    )
    figure.tight_layout()
    return save_figure(figure, path)
