"""COCO metrics: our numbers against pycocotools run directly on the same ground truth and detections."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
import torch
from conftest import COCO_MINI, shared_path
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd.errors import UserError
from ssd.evaluation.coco_metrics import (
    build_coco_ground_truth,
    detections_to_coco_results,
    evaluate_coco,
    write_coco_results,
)

CLASS_NAMES = ["cat", "dog", "bird"]
CATEGORY_IDS = [3, 17, 90]  # sparse, as in COCO: label 1 -> 3, label 2 -> 17, label 3 -> 90


def make_targets(seed: int = 0, pictures: int = 6) -> list[dict]:
    """Pictures of mixed sizes with boxes of all three COCO area ranges, a crowd box and a zero-size box."""
    rng = np.random.default_rng(seed)
    targets = []
    for index in range(pictures):
        height, width = 480, 640
        count = int(rng.integers(3, 9))
        sizes = rng.choice([20.0, 60.0, 200.0], size=count)  # small (< 32^2), medium, large
        x1 = rng.uniform(0, width - 210, count)
        y1 = rng.uniform(0, height - 210, count)
        w = sizes * rng.uniform(0.8, 1.2, count)
        h = sizes * rng.uniform(0.8, 1.2, count)
        boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
        labels = rng.integers(1, 4, count)
        crowd = np.zeros(count, dtype=bool)
        if index == 1:
            crowd[0] = True
        if index == 2:
            boxes[0, 2] = boxes[0, 0]  # zero width: dropped, as the loaders' zero-size boxes are
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "iscrowd": torch.tensor(crowd),
                "difficult": torch.zeros(count, dtype=torch.bool),
                "image_id": 100 + 7 * index,
                "file_name": f"picture_{index}.jpg",
                "orig_size": (height, width),
            }
        )
    return targets


def perfect(targets, rng):
    """One detection on every box that has an area."""
    detections = []
    for t in targets:
        real = (t["boxes"][:, 2] > t["boxes"][:, 0]) & (t["boxes"][:, 3] > t["boxes"][:, 1])
        scores = torch.tensor(rng.uniform(0.5, 1.0, int(real.sum())), dtype=torch.float32)
        detections.append(
            {"boxes": t["boxes"][real].clone(), "labels": t["labels"][real].clone(), "scores": scores}
        )
    return detections


def shifted(targets, rng):
    detections = perfect(targets, rng)
    for d in detections:
        d["boxes"] = d["boxes"] + torch.tensor(
            rng.uniform(-8, 8, tuple(d["boxes"].shape)), dtype=torch.float32
        )
    return detections


def missing(targets, rng):
    detections = perfect(targets, rng)
    for d in detections:
        keep = torch.tensor(rng.random(len(d["labels"])) < 0.6)
        d.update({key: value[keep] for key, value in d.items()})
    return detections


def duplicated(targets, rng):
    detections = perfect(targets, rng)
    for d in detections:
        d["boxes"] = torch.cat([d["boxes"], d["boxes"] + 1.0])
        d["labels"] = torch.cat([d["labels"], d["labels"]])
        d["scores"] = torch.cat([d["scores"], d["scores"] * 0.9])
    return detections


def wrong_class(targets, rng):
    detections = perfect(targets, rng)
    for d in detections:
        flip = torch.tensor(rng.random(len(d["labels"])) < 0.4)
        d["labels"] = torch.where(flip, d["labels"] % 3 + 1, d["labels"])
    return detections


def mixed_scores(targets, rng):
    """Right boxes with low scores, false boxes with high ones: the ranking matters."""
    detections = shifted(targets, rng)
    for d in detections:
        count = len(d["labels"])
        d["scores"] = torch.tensor(rng.uniform(0.01, 0.6, count), dtype=torch.float32)
        false_boxes = torch.tensor(rng.uniform(0, 400, (count, 2)), dtype=torch.float32)
        false_boxes = torch.cat([false_boxes, false_boxes + 50], dim=1)
        d["boxes"] = torch.cat([d["boxes"], false_boxes])
        d["labels"] = torch.cat([d["labels"], torch.tensor(rng.integers(1, 4, count))])
        d["scores"] = torch.cat(
            [d["scores"], torch.tensor(rng.uniform(0.3, 0.99, count), dtype=torch.float32)]
        )
    return detections


SCENARIOS = [perfect, shifted, missing, duplicated, wrong_class, mixed_scores]


def reference_stats(targets, detections, tmp_path) -> tuple[np.ndarray, list[float]]:
    """pycocotools on JSON files written here by hand from the same boxes: the 12 stats and AP per class."""
    images, annotations, results = [], [], []
    for index, (t, d) in enumerate(zip(targets, detections, strict=True)):
        image_id = 100 + 7 * index
        images.append({"id": image_id, "height": 480, "width": 640})
        for box, label, crowd in zip(
            t["boxes"].tolist(), t["labels"].tolist(), t["iscrowd"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(crowd),
                }
            )
        for box, label, score in zip(
            d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    categories = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASS_NAMES, strict=True)]
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    dt_path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dt_path))
        stats = _run_cocoeval(coco_gt, coco_dt)
        per_class = [_run_cocoeval(coco_gt, coco_dt, [c])[0] for c in CATEGORY_IDS]
    return stats, per_class


def _run_cocoeval(coco_gt, coco_dt, category_ids=None) -> np.ndarray:
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    if category_ids is not None:
        evaluator.params.catIds = category_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats)


def ours(targets, detections, backend="pycocotools"):
    ground_truth = build_coco_ground_truth(targets, CLASS_NAMES, CATEGORY_IDS)
    image_ids = [t["image_id"] for t in targets]
    return evaluate_coco(
        ground_truth, detections_to_coco_results(detections, image_ids, CATEGORY_IDS), backend
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_equals_pycocotools_on_detections_made_from_ground_truth(scenario, tmp_path):
    targets = make_targets()
    detections = scenario(targets, np.random.default_rng(1))
    metrics = ours(targets, detections)
    stats, per_class = reference_stats(targets, detections, tmp_path)
    np.testing.assert_allclose(metrics.stats, stats, rtol=0, atol=1e-9)
    np.testing.assert_allclose(metrics.ap_per_class, per_class, rtol=0, atol=1e-9)


def test_scenarios_move_the_numbers_the_expected_way():
    targets = make_targets()
    rng = np.random.default_rng(1)
    assert ours(targets, perfect(targets, rng)).stats[:3] == [1.0, 1.0, 1.0]
    assert ours(targets, missing(targets, rng)).stats[8] < 0.8  # AR@100 drops with 40 % of boxes gone
    assert ours(targets, wrong_class(targets, rng)).stats[0] < 0.8
    assert 0.0 < ours(targets, shifted(targets, rng)).stats[2] < 1.0  # shifts of up to 8 px hurt AP75


def test_crowd_box_neither_counted_nor_penalised():
    targets = make_targets()
    rng = np.random.default_rng(2)
    detections = perfect(targets, rng)
    crowd = targets[1]["iscrowd"]
    # Without the crowd box found, AP is still perfect: it was never an object to find.
    detections[1] = {key: value[~crowd] for key, value in detections[1].items()}
    assert ours(targets, detections).stats[0] == pytest.approx(1.0, abs=1e-12)
    ground_truth = build_coco_ground_truth(targets, CLASS_NAMES, CATEGORY_IDS)
    assert sum(a["iscrowd"] for a in ground_truth["annotations"]) == 1


def test_zero_size_boxes_dropped_and_categories_sparse():
    targets = make_targets()
    ground_truth = build_coco_ground_truth(targets, CLASS_NAMES, CATEGORY_IDS)
    total = sum(len(t["labels"]) for t in targets)
    assert len(ground_truth["annotations"]) == total - 1
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in ground_truth["annotations"])
    assert {c["id"] for c in ground_truth["categories"]} == set(CATEGORY_IDS)
    assert [i["id"] for i in ground_truth["images"]] == [t["image_id"] for t in targets]


def test_area_from_target_sets_the_size_ranges():
    targets = make_targets()[:1]
    targets[0]["area"] = torch.full((len(targets[0]["labels"]),), 50.0)  # all "small" by area
    ground_truth = build_coco_ground_truth(targets, CLASS_NAMES, CATEGORY_IDS)
    assert {a["area"] for a in ground_truth["annotations"]} == {50.0}
    metrics = ours(targets, perfect(targets, np.random.default_rng(0)))
    assert metrics.stats[3] == pytest.approx(1.0) and metrics.stats[4] == -1.0 and metrics.stats[5] == -1.0


def test_no_detections_give_zeros_not_an_error():
    targets = make_targets()
    empty = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    ]
    metrics = ours(targets, empty * len(targets))
    assert metrics.stats[0] == 0.0 and metrics.stats[1] == 0.0 and metrics.stats[8] == 0.0
    assert metrics.ap_per_class == [0.0, 0.0, 0.0]


def test_class_without_ground_truth_has_no_ap():
    targets = make_targets()
    for t in targets:
        t["labels"] = torch.where(t["labels"] == 3, torch.ones_like(t["labels"]), t["labels"])
    metrics = ours(targets, perfect(targets, np.random.default_rng(0)))
    assert np.isnan(metrics.ap_per_class[2]) and metrics.ap_per_class[:2] == [1.0, 1.0]


def test_results_file_holds_dataset_category_ids(tmp_path):
    targets = make_targets()
    detections = perfect(targets, np.random.default_rng(0))
    results = detections_to_coco_results(detections, [t["image_id"] for t in targets], CATEGORY_IDS)
    write_coco_results(results, tmp_path / "detections.json")
    written = json.loads((tmp_path / "detections.json").read_text())
    assert {r["category_id"] for r in written} == set(CATEGORY_IDS)
    assert set(written[0]) == {"image_id", "category_id", "bbox", "score"}
    first = detections[0]["boxes"][0].tolist()
    assert written[0]["bbox"] == pytest.approx([first[0], first[1], first[2] - first[0], first[3] - first[1]])


def test_errors_are_user_errors():
    targets = make_targets()
    ground_truth = build_coco_ground_truth(targets, CLASS_NAMES, CATEGORY_IDS)
    with pytest.raises(UserError, match="picture ids"):
        evaluate_coco(
            ground_truth, [{"image_id": 9999, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}]
        )
    with pytest.raises(UserError, match="unknown COCO backend"):
        evaluate_coco(ground_truth, [], backend="nope")
    with pytest.raises(UserError, match="category ids"):
        build_coco_ground_truth(targets, CLASS_NAMES, [1, 2])
    targets[0]["labels"][0] = 7
    with pytest.raises(UserError, match="outside 1..3"):
        build_coco_ground_truth(targets, CLASS_NAMES, CATEGORY_IDS)


@pytest.mark.parametrize("scenario", [shifted, mixed_scores], ids=["shifted", "mixed_scores"])
def test_faster_coco_eval_backend_gives_the_same_numbers(scenario):
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is an optional backend")
    targets = make_targets()
    detections = scenario(targets, np.random.default_rng(3))
    reference = ours(targets, detections)
    fast = ours(targets, detections, backend="faster-coco-eval")
    np.testing.assert_allclose(fast.stats, reference.stats, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.ap_per_class, reference.ap_per_class, rtol=0, atol=1e-9)


def test_coco_mini_category_ids_round_trip():
    """Labels 1..80 map back to COCO's sparse ids 1..90 exactly, and GT-made detections score AP 1."""
    annotation_file = shared_path(COCO_MINI / "annotations" / "instances_val2017.json")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(annotation_file))
    category_ids = sorted(coco_gt.getCatIds())
    assert len(category_ids) == 80 and category_ids[0] == 1 and category_ids[-1] == 90
    label_of = {c: label for label, c in enumerate(category_ids, start=1)}
    image_ids = sorted(coco_gt.getImgIds())
    detections, sources = [], []
    for image_id in image_ids:
        annotations = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in annotations
        ]
        detections.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor([label_of[a["category_id"]] for a in annotations], dtype=torch.int64),
                "scores": torch.ones(len(annotations), dtype=torch.float64),
            }
        )
        sources.extend(a["category_id"] for a in annotations)
    results = detections_to_coco_results(detections, image_ids, category_ids)
    assert [r["category_id"] for r in results] == sources
    # Every id, including those val does not use (58, 88), goes to its label and back unchanged.
    as_results = detections_to_coco_results(
        [{"boxes": torch.ones(80, 4), "labels": torch.arange(1, 81), "scores": torch.ones(80)}],
        [0],
        category_ids,
    )
    assert [r["category_id"] for r in as_results] == category_ids
    metrics = evaluate_coco(coco_gt.dataset, results)
    assert metrics.stats[0] == pytest.approx(1.0, abs=1e-12)
    assert all(np.isnan(ap) or ap == pytest.approx(1.0) for ap in metrics.ap_per_class)


def test_missing_faster_coco_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes `import faster_coco_eval` fail
    ground_truth = build_coco_ground_truth(make_targets(), CLASS_NAMES, CATEGORY_IDS)
    with pytest.raises(UserError, match="pip install faster-coco-eval"):
        evaluate_coco(ground_truth, [], backend="faster-coco-eval")
