"""Evaluation: COCO and Pascal VOC metrics, the evaluator that runs a model over a split, and reports."""

from ssd.evaluation.coco_metrics import CocoMetrics, evaluate_coco
from ssd.evaluation.evaluator import EvaluationResult, Evaluator, evaluate_detections, evaluate_model
from ssd.evaluation.voc_metrics import VocMetrics, evaluate_voc

__all__ = [
    "CocoMetrics",
    "EvaluationResult",
    "Evaluator",
    "VocMetrics",
    "evaluate_coco",
    "evaluate_detections",
    "evaluate_model",
    "evaluate_voc",
]
