"""Evaluation: COCO and Pascal VOC metrics, the evaluator that runs a model over a split, and reports."""

from ssd.evaluation.coco_metrics import CocoMetrics, evaluate_coco
from ssd.evaluation.evaluator import EvaluationResult, Evaluator, evaluate_detections, evaluate_model
from ssd.evaluation.model_loading import LoadedModel, load_model_for_inference
from ssd.evaluation.voc_metrics import VocMetrics, evaluate_voc

__all__ = [
    "CocoMetrics",
    "EvaluationResult",
    "Evaluator",
    "LoadedModel",
    "VocMetrics",
    "evaluate_coco",
    "evaluate_detections",
    "evaluate_model",
    "evaluate_voc",
    "load_model_for_inference",
]
