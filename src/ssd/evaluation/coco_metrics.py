"""COCO detection metrics through pycocotools, the reference implementation papers report.

The ground truth is built in memory from the dataset's targets, so any dataset format (VOC, YOLO, COCO) is
scored the same way; detections are written in COCO's results format with the dataset's own image and
category ids, so the same file can be submitted to an evaluation server or compared elsewhere.
`faster-coco-eval` (optional) computes the same numbers faster on large splits.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssd.errors import UserError, require_extra
from ssd.evaluation.voc_metrics import detection_arrays

BACKENDS = ("pycocotools", "faster-coco-eval")

# The 12 numbers COCOeval.summarize() prints, in its order.
COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


@dataclass
class CocoMetrics:
    """The 12 standard numbers (-1 where pycocotools has nothing to average) and AP / AP50 per class."""

    stats: list[float]
    ap_per_class: list[float]  # index k is label k + 1; NaN for a class with no ground truth
    ap50_per_class: list[float]
    precision: np.ndarray | None = field(default=None, repr=False)  # COCOeval's (T, R, K, A, M) array

    def as_dict(self) -> dict[str, float]:
        return dict(zip(COCO_STAT_NAMES, self.stats, strict=True))


def _as_numpy(value, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def label_to_category(category_ids: Sequence[int] | None, label: int) -> int:
    """The dataset's category id of a model label (1..K); without a mapping the label is the id."""
    return int(label) if category_ids is None else int(category_ids[label - 1])


def picture_ids(targets: Sequence[dict]) -> list[int]:
    """Each target's `image_id`, or its position where targets carry none or repeat one."""
    ids = [t.get("image_id") for t in targets]
    if any(i is None for i in ids):
        return list(range(len(targets)))
    ids = [int(i.item()) if isinstance(i, torch.Tensor) else int(i) for i in ids]
    return ids if len(set(ids)) == len(ids) else list(range(len(targets)))


def build_coco_ground_truth(
    targets: Sequence[dict],
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
    image_ids: Sequence[int] | None = None,
) -> dict:
    """A COCO instances dict (images, annotations, categories) made from per-picture targets.

    Crowd boxes keep `iscrowd: 1`, so pycocotools neither counts nor penalises them. Zero-size boxes are
    dropped (no detection could ever match them). A target's `area` is used where the dataset provides
    it (COCO's own areas are mask areas, which set the small/medium/large split); otherwise the box area.
    """
    if category_ids is not None and len(category_ids) != len(class_names):
        raise UserError(f"{len(category_ids)} category ids for {len(class_names)} classes")
    image_ids = list(image_ids) if image_ids is not None else picture_ids(targets)
    images, annotations = [], []
    for image_id, target in zip(image_ids, targets, strict=True):
        height, width = _picture_size(target)
        images.append(
            {"id": image_id, "height": height, "width": width, "file_name": target.get("file_name", "")}
        )
        boxes = _as_numpy(target["boxes"], np.float64).reshape(-1, 4)
        labels = _as_numpy(target["labels"], np.int64).reshape(-1)
        crowd = _optional_flags(target, "iscrowd", len(boxes))
        areas = _as_numpy(target["area"], np.float64).reshape(-1) if "area" in target else None
        for index, ((x1, y1, x2, y2), label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
            w, h = x2 - x1, y2 - y1
            if not (w > 0 and h > 0):
                continue
            if not 1 <= label <= len(class_names):
                raise UserError(f"ground-truth label {label} is outside 1..{len(class_names)}")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label_to_category(category_ids, label),
                    "bbox": [x1, y1, w, h],
                    "area": float(areas[index]) if areas is not None else w * h,
                    "iscrowd": int(crowd[index]),
                }
            )
    categories = [
        {"id": label_to_category(category_ids, label), "name": name}
        for label, name in enumerate(class_names, start=1)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def _picture_size(target: dict) -> tuple[int, int]:
    size = target.get("orig_size")
    if size is None:
        return 0, 0
    height, width = (int(v) for v in _as_numpy(size, np.int64).reshape(-1)[:2])
    return height, width


def _optional_flags(target: dict, key: str, count: int) -> np.ndarray:
    if key not in target or target[key] is None:
        return np.zeros(count, dtype=bool)
    return _as_numpy(target[key], bool).reshape(-1)


def detections_to_coco_results(
    detections: Sequence[dict],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> list[dict]:
    """COCO results entries: `image_id`, `category_id` (the dataset's own), `bbox` as x, y, w, h, `score`."""
    results = []
    for image_id, detection in zip(image_ids, detections, strict=True):
        boxes, labels, scores = detection_arrays(detection)
        rows = zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True)
        for (x1, y1, x2, y2), label, score in rows:
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": label_to_category(category_ids, label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return results


def write_coco_results(results: list[dict], path: str | Path) -> Path:
    """The detections as a COCO results JSON file (`[{"image_id", "category_id", "bbox", "score"}, ...]`)."""
    path = Path(path)
    path.write_text(json.dumps(results))
    return path


def backend_classes(backend: str):
    """The COCO ground-truth and evaluator classes of `backend`; a one-line error when it is not installed
    (the evaluator asks at its start, so a missing package is not found after a whole inference pass)."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster-coco-eval":
        faster_coco_eval = require_extra(
            "faster_coco_eval", "fast-eval", "the faster-coco-eval backend (the default is pycocotools)"
        )
        return faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster
    raise UserError(f"unknown COCO backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _load_ground_truth(coco_class, ground_truth: dict):
    coco = coco_class()
    coco.dataset = ground_truth
    coco.createIndex()
    return coco


def evaluate_coco(ground_truth: dict, results: list[dict], backend: str = "pycocotools") -> CocoMetrics:
    """COCOeval on a ground-truth dict and results entries; the library's own printout is kept quiet."""
    coco_class, eval_class = backend_classes(backend)
    known_images = {image["id"] for image in ground_truth["images"]}
    unknown = {r["image_id"] for r in results} - known_images
    if unknown:
        raise UserError(
            f"detections for {len(unknown)} picture ids the ground truth lacks, e.g. {min(unknown)}"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _load_ground_truth(coco_class, ground_truth)
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            # loadRes cannot read an empty list: a model that finds nothing scores zeros, not an error.
            coco_dt = _load_ground_truth(coco_class, {**ground_truth, "annotations": []})
        evaluator = eval_class(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(v) for v in np.asarray(evaluator.stats, dtype=np.float64)[: len(COCO_STAT_NAMES)]]
    precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)
    cat_ids = [int(c) for c in evaluator.params.catIds]
    order = [cat_ids.index(int(c["id"])) for c in ground_truth["categories"]]
    return CocoMetrics(
        stats=stats,
        ap_per_class=[_mean_valid(precision[:, :, k, 0, -1]) for k in order],
        ap50_per_class=[_mean_valid(precision[0, :, k, 0, -1]) for k in order],
        precision=precision,
    )


def _mean_valid(values: np.ndarray) -> float:
    """Mean of COCOeval's precision entries, which are -1 where a class has no ground truth."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan
