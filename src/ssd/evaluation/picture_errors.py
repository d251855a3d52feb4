"""What went wrong in one picture: ground-truth boxes missed and detections that match nothing.

Counted at a working score threshold (the boxes a user would keep), not over the hundreds of low-score
candidates that AP ranks; this is what picks the "worst pictures" a person looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssd.evaluation.voc_metrics import VOC_IOU_THRESHOLD, detection_arrays, ground_truth_arrays
from ssd.ops.boxes import box_iou


@dataclass
class PictureErrors:
    """Outcome of each kept detection and each ground-truth box of one picture."""

    boxes: np.ndarray  # kept detections (score >= threshold), best score first
    labels: np.ndarray
    scores: np.ndarray
    detection_correct: np.ndarray  # bool per kept detection: matched an object of its class
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_found: np.ndarray  # bool per ground-truth box
    gt_ignored: np.ndarray  # difficult or crowd: never missed, and a detection on one is not false

    @property
    def missed(self) -> int:
        return int((~self.gt_found & ~self.gt_ignored).sum())

    @property
    def false(self) -> int:
        return int((~self.detection_correct).sum())

    @property
    def total(self) -> int:
        return self.missed + self.false


def picture_errors(
    detection: dict, target: dict, score_threshold: float = 0.5, iou_threshold: float = VOC_IOU_THRESHOLD
) -> PictureErrors:
    """Greedy matching, best score first, of kept detections to same-class ground truth (IoU >= threshold)."""
    boxes, labels, scores = detection_arrays(detection)
    keep = scores >= score_threshold
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, labels, scores = boxes[order], labels[order], scores[order]
    gt_boxes, gt_labels, gt_ignored = ground_truth_arrays(target)
    correct = np.zeros(len(boxes), dtype=bool)
    found = np.zeros(len(gt_boxes), dtype=bool)
    if len(boxes) and len(gt_boxes):
        iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(gt_boxes)).numpy()
        iou[labels[:, None] != gt_labels[None, :]] = -1.0
        for index in range(len(boxes)):
            # Prefer an object not yet found; a detection on a difficult box is never counted false.
            candidates = np.where(found & ~gt_ignored, -1.0, iou[index])
            best = int(candidates.argmax())
            if candidates[best] >= iou_threshold:
                correct[index] = True
                found[best] = True
    return PictureErrors(boxes, labels, scores, correct, gt_boxes, gt_labels, found, gt_ignored)
