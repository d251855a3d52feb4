"""Pascal VOC detection metrics: AP at one IoU threshold per class, and their mean (mAP).

The matching follows the VOC development kit (VOCevaldet.m): per class, all detections of the split are
ranked by score; each looks at the ground-truth box of its picture and class it overlaps most. It is a true
positive when that IoU reaches the threshold (`>=`) and the box was not found before; a second detection of
a found box is a false positive. A detection whose best box is `difficult` (or a crowd box) counts neither
way, and such boxes are left out of the number of objects to find.

Two AP definitions exist and papers quote both, so both are computed:
- VOC2007 "11-point": the mean over recall r in {0, 0.1, ..., 1} of the best precision at recall >= r;
- VOC2010+ "area": the area under the precision-recall curve after making precision monotone decreasing.

Box widths are `x2 - x1`, as everywhere in this package and in pycocotools. The VOC devkit's MATLAB code
counts pixels inclusively (`x2 - x1 + 1`); `pixel_inclusive=True` reproduces that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ssd.ops.boxes import box_iou

VOC_IOU_THRESHOLD = 0.5


@dataclass
class ClassCurve:
    """One class's ranked detections: precision and recall after each of them, best score first."""

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_objects: int  # ground-truth boxes to find (neither difficult nor crowd)
    true_positives: int
    false_positives: int


@dataclass
class VocMetrics:
    """AP per class (index k is label k + 1) and mAP, in both definitions; NaN for a class with no object."""

    ap_11point: list[float]
    ap_area: list[float]
    curves: list[ClassCurve] = field(repr=False)
    iou_threshold: float = VOC_IOU_THRESHOLD

    @property
    def map_11point(self) -> float:
        return _mean_ignoring_nan(self.ap_11point)

    @property
    def map_area(self) -> float:
        return _mean_ignoring_nan(self.ap_area)


def _mean_ignoring_nan(values: Sequence[float]) -> float:
    """The mean over classes that have objects; 0 when no class has any, so an empty split reads as 0."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else 0.0


def average_precision_11point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007: mean over 11 recall levels of the highest precision reached at that recall or beyond."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    total = 0.0
    for level in np.linspace(0.0, 1.0, 11):
        reached = precision[recall >= level]
        total += float(reached.max()) if reached.size else 0.0
    return total / 11.0


def average_precision_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+: area under the precision-recall curve whose precision is made monotone decreasing."""
    recall = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    precision = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    # Precision at recall r becomes the best precision at any recall >= r.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _as_numpy(value, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _ignored_mask(target: dict, count: int) -> np.ndarray:
    """Ground-truth boxes that are neither counted nor penalised: difficult and crowd boxes."""
    ignored = np.zeros(count, dtype=bool)
    for key in ("difficult", "iscrowd"):
        if key in target and target[key] is not None:
            ignored |= _as_numpy(target[key], bool).reshape(-1)[:count]
    return ignored


def _iou_matrix(boxes1: np.ndarray, boxes2: np.ndarray, pixel_inclusive: bool) -> np.ndarray:
    a = torch.from_numpy(boxes1).double()
    b = torch.from_numpy(boxes2).double()
    if pixel_inclusive:
        a = a + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=a.dtype)
        b = b + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=b.dtype)
    return box_iou(a, b).numpy()


def evaluate_voc(
    detections: Sequence[dict],
    targets: Sequence[dict],
    num_object_classes: int,
    iou_threshold: float = VOC_IOU_THRESHOLD,
    pixel_inclusive: bool = False,
) -> VocMetrics:
    """VOC AP per class for pictures given as parallel lists of detections and targets.

    `detections[i]` holds `result_boxes`/`result_labels`/`result_scores` (or `boxes`/`labels`/`scores`)
    for the picture whose ground truth is `targets[i]` (`boxes`, `labels`, optional `difficult`, `iscrowd`).
    Zero-size ground-truth boxes are dropped: no detection can overlap them.
    """
    if len(detections) != len(targets):
        raise ValueError(f"{len(detections)} detection sets for {len(targets)} pictures")
    matches = _best_matches(detections, targets, pixel_inclusive)
    ap_11point, ap_area, curves = [], [], []
    for label in range(1, num_object_classes + 1):
        curve = _class_curve(matches, label, iou_threshold)
        curves.append(curve)
        if curve.num_objects == 0:
            ap_11point.append(math.nan)
            ap_area.append(math.nan)
        else:
            ap_11point.append(average_precision_11point(curve.recall, curve.precision))
            ap_area.append(average_precision_area(curve.recall, curve.precision))
    return VocMetrics(ap_11point=ap_11point, ap_area=ap_area, curves=curves, iou_threshold=iou_threshold)


def detection_arrays(detection: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, labels, scores) of one picture's detections, from the model's or the short key names."""
    prefix = "result_" if "result_boxes" in detection else ""
    boxes = _as_numpy(detection[prefix + "boxes"], np.float64).reshape(-1, 4)
    labels = _as_numpy(detection[prefix + "labels"], np.int64).reshape(-1)
    scores = _as_numpy(detection[prefix + "scores"], np.float64).reshape(-1)
    return boxes, labels, scores


def ground_truth_arrays(target: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, labels, ignored) of one picture's ground truth, zero-size boxes dropped."""
    boxes = _as_numpy(target["boxes"], np.float64).reshape(-1, 4)
    labels = _as_numpy(target["labels"], np.int64).reshape(-1)
    ignored = _ignored_mask(target, len(boxes))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep], ignored[keep]


@dataclass
class _Matches:
    """Every detection of the split with its best same-class ground-truth box (indices over the split)."""

    labels: np.ndarray
    scores: np.ndarray
    best_gt: np.ndarray  # -1 where the picture holds no box of the detection's class
    best_iou: np.ndarray
    gt_labels: np.ndarray
    gt_ignored: np.ndarray


def _best_matches(detections: Sequence[dict], targets: Sequence[dict], pixel_inclusive: bool) -> _Matches:
    labels, scores, best_gt, best_iou, gt_labels, gt_ignored = [], [], [], [], [], []
    gt_offset = 0
    for detection, target in zip(detections, targets, strict=True):
        d_boxes, d_labels, d_scores = detection_arrays(detection)
        g_boxes, g_labels, g_ignored = ground_truth_arrays(target)
        best = np.full(len(d_labels), -1, dtype=np.int64)
        overlap = np.zeros(len(d_labels))
        if len(d_labels) and len(g_labels):
            iou = _iou_matrix(d_boxes, g_boxes, pixel_inclusive)
            iou[d_labels[:, None] != g_labels[None, :]] = -1.0  # a detection only looks at its own class
            best = iou.argmax(axis=1)
            overlap = iou[np.arange(len(best)), best]
            best = np.where(overlap >= 0, best + gt_offset, -1)
        labels.append(d_labels)
        scores.append(d_scores)
        best_gt.append(best)
        best_iou.append(overlap)
        gt_labels.append(g_labels)
        gt_ignored.append(g_ignored)
        gt_offset += len(g_labels)
    return _Matches(
        labels=_joined(labels, np.int64),
        scores=_joined(scores, np.float64),
        best_gt=_joined(best_gt, np.int64),
        best_iou=_joined(best_iou, np.float64),
        gt_labels=_joined(gt_labels, np.int64),
        gt_ignored=_joined(gt_ignored, bool),
    )


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _class_curve(matches: _Matches, label: int, iou_threshold: float) -> ClassCurve:
    of_class = np.flatnonzero(matches.labels == label)
    num_objects = int(((matches.gt_labels == label) & ~matches.gt_ignored).sum())
    # Best score first; a stable sort keeps ties in picture order, so results do not depend on the platform.
    order = of_class[np.argsort(-matches.scores[of_class], kind="stable")]
    taken = np.zeros(len(matches.gt_labels), dtype=bool)
    outcome = np.zeros(len(order), dtype=np.int8)  # 1 true positive, -1 false positive, 0 ignored
    for rank, (gt, overlap) in enumerate(zip(matches.best_gt[order], matches.best_iou[order], strict=True)):
        if gt < 0 or overlap < iou_threshold:
            outcome[rank] = -1
        elif matches.gt_ignored[gt]:
            outcome[rank] = 0
        elif not taken[gt]:
            taken[gt] = True
            outcome[rank] = 1
        else:
            outcome[rank] = -1
    counted = outcome != 0
    true_positives = np.cumsum(outcome[counted] == 1)
    false_positives = np.cumsum(outcome[counted] == -1)
    precision = true_positives / np.maximum(true_positives + false_positives, 1)  # never 0: ignored removed
    recall = true_positives / num_objects if num_objects else np.zeros(len(true_positives))
    return ClassCurve(
        scores=matches.scores[order][counted],
        precision=precision.astype(np.float64),
        recall=np.asarray(recall, dtype=np.float64),
        num_objects=num_objects,
        true_positives=int(true_positives[-1]) if len(true_positives) else 0,
        false_positives=int(false_positives[-1]) if len(false_positives) else 0,
    )
