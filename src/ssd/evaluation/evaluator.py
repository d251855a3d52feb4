"""Run a detector over a dataset and score its detections with both COCO and VOC metrics.

Used by `ssd eval` and by training after each epoch. The model is anything with `.predict(list_of_images)`
returning the package's detections dicts, so this module does not depend on how a model is built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ssd.errors import UserError
from ssd.evaluation.coco_metrics import (
    COCO_STAT_NAMES,
    CocoMetrics,
    backend_classes,
    build_coco_ground_truth,
    detections_to_coco_results,
    evaluate_coco,
    picture_ids,
)
from ssd.evaluation.voc_metrics import VocMetrics, detection_arrays, evaluate_voc


@dataclass
class EvaluationResult:
    """Both metric families, and what they were computed from (for reports and for the results file)."""

    coco: CocoMetrics
    voc: VocMetrics
    class_names: list[str]
    category_ids: list[int] | None
    image_ids: list[int]
    detections: list[dict] = field(repr=False)  # per picture: numpy `boxes`, `labels`, `scores`
    targets: list[dict] = field(repr=False)
    seconds_model: float = 0.0  # time spent inside model.predict
    seconds_total: float = 0.0  # reading pictures, the model, and the metrics

    @property
    def num_images(self) -> int:
        return len(self.targets)

    def summary(self) -> dict[str, float]:
        """The headline numbers, flat: COCO's 12 by name, then VOC mAP in both definitions."""
        numbers = dict(zip(COCO_STAT_NAMES, self.coco.stats, strict=True))
        numbers["VOC_mAP"] = self.voc.map_area
        numbers["VOC2007_mAP"] = self.voc.map_11point
        return numbers

    def coco_results(self) -> list[dict]:
        """The detections in COCO's results format, with the dataset's own image and category ids."""
        return detections_to_coco_results(self.detections, self.image_ids, self.category_ids)


def _numpy_detection(detection: dict) -> dict:
    boxes, labels, scores = detection_arrays(detection)
    return {"boxes": boxes, "labels": labels, "scores": scores}


def _check_labels(detections: Sequence[dict], num_object_classes: int) -> None:
    for index, detection in enumerate(detections):
        labels = detection["labels"]
        if labels.size and (labels.min() < 1 or labels.max() > num_object_classes):
            raise UserError(
                f"picture {index}: the model predicts label {int(labels.max())}, but the dataset has "
                f"{num_object_classes} classes (labels 1..{num_object_classes}); was the model built "
                f"with num_classes={num_object_classes + 1}?"
            )


def evaluate_detections(
    detections: Sequence[dict],
    targets: Sequence[dict],
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
    coco_backend: str = "pycocotools",
) -> EvaluationResult:
    """Score detections already made: `detections[i]` belongs to the picture of `targets[i]`.

    Detections may use the model's keys (`result_boxes`, ...) or the short ones (`boxes`, `labels`, `scores`).
    """
    started = time.perf_counter()
    if len(detections) != len(targets):
        raise UserError(f"{len(detections)} detection sets for {len(targets)} pictures")
    class_names = list(class_names)
    detections = [_numpy_detection(d) for d in detections]
    _check_labels(detections, len(class_names))
    image_ids = picture_ids(targets)
    ground_truth = build_coco_ground_truth(targets, class_names, category_ids, image_ids)
    results = detections_to_coco_results(detections, image_ids, category_ids)
    coco = evaluate_coco(ground_truth, results, backend=coco_backend)
    voc = evaluate_voc(detections, targets, len(class_names))
    return EvaluationResult(
        coco=coco,
        voc=voc,
        class_names=class_names,
        category_ids=[int(c) for c in category_ids] if category_ids is not None else None,
        image_ids=image_ids,
        detections=detections,
        targets=list(targets),
        seconds_total=time.perf_counter() - started,
    )


def dataset_category_ids(dataset) -> list[int] | None:
    """The dataset's own category id of each label 1..K (COCO's sparse ids), or None where labels are ids."""
    for name in ("category_ids", "label_to_category_id", "label_to_cat_id"):
        mapping = getattr(dataset, name, None)
        if mapping is None:
            continue
        if isinstance(mapping, dict):
            return [int(mapping[label]) for label in range(1, len(dataset.class_names) + 1)]
        return [int(c) for c in mapping]
    return None


def dataset_targets(dataset) -> list[dict]:
    """Every picture's target, without decoding pictures where the dataset offers `get_target(i)`."""
    if hasattr(dataset, "get_target"):
        return [dataset.get_target(i) for i in range(len(dataset))]
    return [dataset[i][1] for i in range(len(dataset))]


def _as_list(batch: list) -> list:
    return batch


def _model_device(model) -> torch.device | None:
    parameters = getattr(model, "parameters", None)
    if parameters is None:
        return None
    first = next(iter(parameters()), None)
    return first.device if first is not None else None


class Evaluator:
    """Evaluates models on one dataset; build it once and call it after every epoch.

    `dataset[i]` is `(image, target)` as the package's datasets return it; `dataset.class_names` names the
    labels 1..K. On a split where the model finds nothing the metrics are zeros, not an error.
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 8,
        num_workers: int = 0,
        coco_backend: str = "pycocotools",
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if len(dataset) == 0:
            raise UserError("the evaluation split holds no pictures")
        backend_classes(coco_backend)  # a backend not installed fails now, not after the inference pass
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.coco_backend = coco_backend
        self.progress = progress
        self.class_names = list(dataset.class_names)
        self.category_ids = dataset_category_ids(dataset)

    def _check_model(self, model) -> None:
        model_classes = getattr(model, "num_classes", None)
        if isinstance(model_classes, int) and model_classes != len(self.class_names) + 1:
            raise UserError(
                f"the model has num_classes={model_classes} (background included) but the dataset has "
                f"{len(self.class_names)} classes, so it needs num_classes={len(self.class_names) + 1}"
            )

    def __call__(self, model) -> EvaluationResult:
        self._check_model(model)
        started = time.perf_counter()
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_as_list,
        )
        device = _model_device(model)
        was_training = bool(getattr(model, "training", False))
        if hasattr(model, "eval"):
            model.eval()
        detections, targets = [], []
        seconds_model = 0.0
        try:
            with (
                torch.inference_mode(),
                tqdm(
                    total=len(self.dataset), desc="evaluating", unit="img", disable=not self.progress
                ) as bar,
            ):
                for batch in loader:
                    images = [image if device is None else image.to(device) for image, _ in batch]
                    tick = time.perf_counter()
                    batch_detections = model.predict(images)
                    seconds_model += time.perf_counter() - tick
                    if len(batch_detections) != len(batch):
                        raise UserError(
                            f"the model returned {len(batch_detections)} results for {len(batch)} pictures"
                        )
                    detections.extend(_numpy_detection(d) for d in batch_detections)
                    targets.extend(target for _, target in batch)
                    bar.update(len(batch))
        finally:
            if was_training and hasattr(model, "train"):
                model.train()
        result = evaluate_detections(
            detections, targets, self.class_names, self.category_ids, coco_backend=self.coco_backend
        )
        result.seconds_model = seconds_model
        result.seconds_total = time.perf_counter() - started
        return result


def evaluate_model(model, dataset, batch_size: int = 8, **options) -> EvaluationResult:
    """One evaluation of `model` on `dataset`; see `Evaluator` for the options."""
    return Evaluator(dataset, batch_size=batch_size, **options)(model)
