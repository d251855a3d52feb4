"""What a person reads after an evaluation: a terminal table, metrics.json, PR curves, the worst pictures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ssd.evaluation.coco_metrics import COCO_STAT_NAMES, write_coco_results
from ssd.evaluation.drawing import draw_detections, draw_ground_truth, tensor_picture, with_legend
from ssd.evaluation.evaluator import EvaluationResult
from ssd.evaluation.mosaic import fit_into, mosaic
from ssd.evaluation.palette import class_colour_float
from ssd.evaluation.picture_errors import PictureErrors, picture_errors

# pycocotools' own labels for its 12 numbers, so the table reads like its printout.
_COCO_STAT_LABELS = (
    "AP    @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AP    @[IoU=0.50      | area=   all | maxDets=100]",
    "AP    @[IoU=0.75      | area=   all | maxDets=100]",
    "AP    @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AP    @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP    @[IoU=0.50:0.95 | area= large | maxDets=100]",
    "AR    @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
    "AR    @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
    "AR    @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AR    @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AR    @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR    @[IoU=0.50:0.95 | area= large | maxDets=100]",
)


def _number(value: float) -> str:
    """pycocotools writes -1 where there was nothing to average (e.g. no small objects): show that as n/a."""
    return "n/a" if value is None or math.isnan(value) or value < 0 else f"{value:.3f}"


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) or value < 0 else float(value)


def format_table(result: EvaluationResult) -> str:
    """COCO's 12 numbers, VOC mAP in both definitions, then one line per class."""
    lines = [f"COCO metrics ({result.num_images} pictures)"]
    lines += [
        f"  {label} = {_number(v)}   {name}"
        for label, v, name in zip(_COCO_STAT_LABELS, result.coco.stats, COCO_STAT_NAMES, strict=True)
    ]
    lines.append(
        f"VOC mAP@0.5: {_number(result.voc.map_area)} (VOC2010+ area)   "
        f"{_number(result.voc.map_11point)} (VOC2007 11-point)"
    )
    width = max([len("class")] + [len(name) for name in result.class_names])
    header = f"  {'class':<{width}}  {'objects':>7}  {'AP':>6}  {'AP50':>6}  {'VOC AP':>6}  {'VOC07':>6}"
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    for k, name in enumerate(result.class_names):
        lines.append(
            f"  {name:<{width}}  {result.voc.curves[k].num_objects:>7d}  "
            f"{_number(result.coco.ap_per_class[k]):>6}  {_number(result.coco.ap50_per_class[k]):>6}  "
            f"{_number(result.voc.ap_area[k]):>6}  {_number(result.voc.ap_11point[k]):>6}"
        )
    if result.seconds_model > 0:
        lines.append("")
        lines.append(
            f"model time {result.seconds_model:.2f} s "
            f"({result.num_images / result.seconds_model:.1f} pictures/s), "
            f"total {result.seconds_total:.2f} s"
        )
    return "\n".join(lines)


def metrics_dict(result: EvaluationResult) -> dict:
    """Everything in the table, as JSON-ready values (null where a number does not exist)."""
    per_class = []
    for k, name in enumerate(result.class_names):
        curve = result.voc.curves[k]
        per_class.append(
            {
                "label": k + 1,
                "name": name,
                "category_id": result.category_ids[k] if result.category_ids else k + 1,
                "objects": curve.num_objects,
                "AP": _json_number(result.coco.ap_per_class[k]),
                "AP50": _json_number(result.coco.ap50_per_class[k]),
                "VOC_AP": _json_number(result.voc.ap_area[k]),
                "VOC2007_AP": _json_number(result.voc.ap_11point[k]),
            }
        )
    return {
        "num_images": result.num_images,
        "coco": {name: _json_number(v) for name, v in zip(COCO_STAT_NAMES, result.coco.stats, strict=True)},
        "coco_stats": [float(v) for v in result.coco.stats],  # the raw 12, -1 kept, as pycocotools gives them
        "voc": {
            "iou_threshold": result.voc.iou_threshold,
            "mAP": result.voc.map_area,
            "mAP_2007_11point": result.voc.map_11point,
        },
        "per_class": per_class,
        "seconds_model": result.seconds_model,
        "seconds_total": result.seconds_total,
    }


def write_metrics_json(result: EvaluationResult, path: str | Path, run: dict | None = None) -> Path:
    """metrics.json; `run` (what was evaluated: weights, dataset, split...) is stored alongside."""
    content = metrics_dict(result)
    if run:
        content = {"run": run, **content}
    path = Path(path)
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """One PNG per class: VOC precision-recall at IoU 0.5, and COCO's interpolated curves at 0.5 and 0.75."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recall_levels = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds
    paths = []
    for k, name in enumerate(result.class_names):
        curve = result.voc.curves[k]
        figure, axes = plt.subplots(figsize=(5, 4.5), dpi=100)
        if len(curve.recall):
            axes.plot(
                curve.recall,
                curve.precision,
                color=class_colour_float(k + 1),
                label=f"VOC IoU 0.5 (AP {_number(result.voc.ap_area[k])})",
            )
        precision = result.coco.precision
        if precision is not None:
            for t, iou in ((0, "0.50"), (5, "0.75")):
                values = precision[t, :, k, 0, -1]
                if (values > -1).any():
                    axes.plot(recall_levels, values, linestyle="--", label=f"COCO IoU {iou}")
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        axes.set_title(f"{name}: {curve.num_objects} objects")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="lower left", fontsize=8)
        path = out_dir / f"pr_{k + 1:03d}_{_file_safe(name)}.png"
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def worst_pictures(
    result: EvaluationResult, count: int = 16, score_threshold: float = 0.5
) -> list[tuple[int, PictureErrors]]:
    """The pictures with the most missed plus false boxes at `score_threshold`, worst first."""
    errors = [
        (index, picture_errors(d, t, score_threshold))
        for index, (d, t) in enumerate(zip(result.detections, result.targets, strict=True))
    ]
    errors = [item for item in errors if item[1].total > 0]
    errors.sort(key=lambda item: (-item[1].total, item[0]))
    return errors[:count]


def draw_worst_pictures(
    result: EvaluationResult,
    dataset,
    path: str | Path,
    count: int = 16,
    score_threshold: float = 0.5,
    cell: int = 400,
) -> Path | None:
    """A grid of the worst pictures, drawn as every picture of the package is (`ssd.evaluation.drawing`):
    ground truth dashed, predictions solid with their score, both in their class's colour; a missed object
    is thicker and captioned `missed`, a prediction matching no object `false`; a legend says so. Returns
    None when no picture has an error."""
    worst = worst_pictures(result, count, score_threshold)
    if not worst:
        return None
    cells, titles, labels = [], [], set()
    for index, errors in worst:
        image, target = dataset[index]
        picture, scale = fit_into(tensor_picture(image), cell)
        missed = errors.gt_found | errors.gt_ignored
        picture = draw_ground_truth(
            picture, errors.gt_boxes * scale, errors.gt_labels, result.class_names, missed=~missed
        )
        picture = draw_detections(
            picture,
            errors.boxes * scale,
            errors.labels,
            errors.scores,
            result.class_names,
            false=~errors.detection_correct,
        )
        cells.append(picture)
        labels.update(errors.gt_labels.tolist() + errors.labels.tolist())
        name = Path(str(target.get("file_name") or f"picture {index}")).name
        titles.append(f"{name}: {errors.missed} missed, {errors.false} false")
    grid = mosaic(cells, columns=4, titles=titles)
    grid = with_legend(grid, result.class_names, sorted(labels), score_threshold=score_threshold, errors=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def write_report(
    result: EvaluationResult,
    out_dir: str | Path,
    dataset=None,
    worst_count: int = 16,
    score_threshold: float = 0.5,
    run: dict | None = None,
) -> dict[str, Path | list[Path] | None]:
    """metrics.json, the detections as COCO results, PR curves and, given the dataset, the worst pictures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | list[Path] | None] = {
        "metrics": write_metrics_json(result, out_dir / "metrics.json", run),
        "detections": write_coco_results(result.coco_results(), out_dir / "detections_coco.json"),
    }
    written["pr_curves"] = plot_pr_curves(result, out_dir / "pr_curves")
    if dataset is not None and worst_count > 0:
        written["worst_pictures"] = draw_worst_pictures(
            result, dataset, out_dir / "worst_pictures.png", worst_count, score_threshold
        )
    return written
