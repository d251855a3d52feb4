"""What a person reads after an evaluation: a terminal table, metrics.json, PR curves, the worst pictures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ssd.evaluation.coco_metrics import COCO_STAT_NAMES, write_coco_results
from ssd.evaluation.evaluator import EvaluationResult
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
                curve.recall, curve.precision, label=f"VOC IoU 0.5 (AP {_number(result.voc.ap_area[k])})"
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


def _image_for_display(image) -> np.ndarray:
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return array.squeeze()


def draw_worst_pictures(
    result: EvaluationResult,
    dataset,
    path: str | Path,
    count: int = 16,
    score_threshold: float = 0.5,
) -> Path | None:
    """A grid of the worst pictures: found objects green, missed ones yellow, right detections blue, false
    ones red. Returns None when no picture has an error."""
    worst = worst_pictures(result, count, score_threshold)
    if not worst:
        return None
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    columns = min(4, len(worst))
    rows = math.ceil(len(worst) / columns)
    figure, axes_grid = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 3.8 * rows), dpi=100, squeeze=False
    )
    for axes in axes_grid.flat:
        axes.axis("off")
    names = result.class_names
    for axes, (index, errors) in zip(axes_grid.flat, worst, strict=False):
        image, target = dataset[index]
        axes.imshow(_image_for_display(image))
        for box, found, ignored in zip(errors.gt_boxes, errors.gt_found, errors.gt_ignored, strict=True):
            color = "lime" if found or ignored else "yellow"
            axes.add_patch(
                _rectangle(Rectangle, box, color, 2.5 if not found else 1.5, "--" if ignored else "-")
            )
        for box, label, score, correct in zip(
            errors.boxes, errors.labels, errors.scores, errors.detection_correct, strict=True
        ):
            color = "deepskyblue" if correct else "red"
            axes.add_patch(_rectangle(Rectangle, box, color, 1.2, "-"))
            if not correct:
                axes.text(
                    box[0],
                    box[1],
                    f"{names[label - 1]} {score:.2f}",
                    color="white",
                    fontsize=6,
                    bbox={"facecolor": "red", "alpha": 0.7, "pad": 1, "linewidth": 0},
                )
        title = target.get("file_name") or f"picture {index}"
        axes.set_title(f"{Path(str(title)).name}: {errors.missed} missed, {errors.false} false", fontsize=8)
    figure.suptitle(
        f"worst pictures at score >= {score_threshold}: green found, yellow missed, blue right, red false",
        fontsize=10,
    )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _rectangle(rectangle_class, box, color: str, width: float, style: str):
    x1, y1, x2, y2 = (float(v) for v in box)
    return rectangle_class(
        (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=width, linestyle=style
    )


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
