"""`PR_curve.png` and `F1_curve.png`: every class of one evaluation on one plot each, in its colour.

Both come from the VOC curves at IoU 0.5 that every evaluation computes (`voc_metrics.ClassCurve`: each
class's detections ranked by score, with precision and recall after each). The thick line is the mean over
the classes that have objects: on the PR plot the mean of each class's precision envelope at each recall
(the curve whose area is mAP@0.5), on the F1 plot the mean F1 at each score threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssd.evaluation.evaluator import EvaluationResult
from ssd.evaluation.figures import pyplot, save_figure
from ssd.evaluation.palette import class_colour_float
from ssd.evaluation.voc_metrics import ClassCurve

GRID = np.linspace(0.0, 1.0, 101)


def precision_envelope(curve: ClassCurve) -> np.ndarray:
    """Precision at each recall of GRID: the best precision reached at that recall or beyond (0 past the
    highest recall), as VOC's AP integrates it."""
    recall, precision = np.asarray(curve.recall), np.asarray(curve.precision)
    if not len(recall):
        return np.zeros_like(GRID)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    positions = np.searchsorted(recall, GRID, side="left")
    return np.where(positions < len(recall), best_after[np.minimum(positions, len(recall) - 1)], 0.0)


def f1_by_score(curve: ClassCurve) -> np.ndarray:
    """F1 at each score threshold of GRID: precision and recall of the detections with score >= it."""
    scores = np.asarray(curve.scores)
    kept = (scores[None, :] >= GRID[:, None]).sum(axis=1)  # scores are ranked best first
    f1 = np.zeros_like(GRID)
    has = kept > 0
    precision = np.asarray(curve.precision)[kept[has] - 1]
    recall = np.asarray(curve.recall)[kept[has] - 1]
    total = precision + recall
    f1[has] = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return f1


def _classes_with_objects(result: EvaluationResult) -> list[int]:
    return [k for k, curve in enumerate(result.voc.curves) if curve.num_objects > 0]


def plot_pr_curve(result: EvaluationResult, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(10, 6), dpi=100)
    envelopes = []
    for k in _classes_with_objects(result):
        curve = result.voc.curves[k]
        envelope = precision_envelope(curve)
        envelopes.append(envelope)
        axes.plot(
            GRID,
            envelope,
            color=class_colour_float(k + 1),
            linewidth=1.5,
            label=f"{result.class_names[k]}  AP@0.5 {result.voc.ap_area[k]:.3f}",
        )
    if envelopes:
        axes.plot(
            GRID,
            np.mean(envelopes, axis=0),
            color="black",
            linewidth=3,
            label=f"all classes  mAP@0.5 {result.voc.map_area:.3f}",
        )
    axes.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="recall", ylabel="precision")
    axes.set_title(f"precision-recall per class at IoU 0.5{title}", fontsize=10)
    _finish(axes, envelopes)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_f1_curve(result: EvaluationResult, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(10, 6), dpi=100)
    curves = []
    for k in _classes_with_objects(result):
        f1 = f1_by_score(result.voc.curves[k])
        curves.append(f1)
        best = int(f1.argmax())
        axes.plot(
            GRID,
            f1,
            color=class_colour_float(k + 1),
            linewidth=1.5,
            label=f"{result.class_names[k]}  best {f1[best]:.2f} at {GRID[best]:.2f}",
        )
    if curves:
        mean = np.mean(curves, axis=0)
        best = int(mean.argmax())
        axes.plot(
            GRID,
            mean,
            color="black",
            linewidth=3,
            label=f"all classes  best {mean[best]:.2f} at score {GRID[best]:.2f}",
        )
    axes.set(
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
        xlabel="score threshold (detections kept at or above it)",
        ylabel="F1",
    )
    axes.set_title(f"F1 per class by score threshold, IoU 0.5{title}", fontsize=10)
    _finish(axes, curves)
    figure.tight_layout()
    return save_figure(figure, path)


def _finish(axes, curves: list) -> None:
    axes.grid(alpha=0.3)
    if curves:
        # Beside the plot, not on it: a legend inside would hide some class's curve wherever it went.
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        axes.text(
            0.5, 0.5, "no class has objects in this split", ha="center", va="center", transform=axes.transAxes
        )
