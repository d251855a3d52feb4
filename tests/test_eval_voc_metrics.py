"""VOC AP on small cases whose answer is worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssd.evaluation.voc_metrics import average_precision_11point, average_precision_area, evaluate_voc


def target(boxes, labels, difficult=None, iscrowd=None) -> dict:
    count = len(labels)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult if difficult is not None else [False] * count),
        "iscrowd": torch.tensor(iscrowd if iscrowd is not None else [False] * count),
    }


def detection(boxes, labels, scores) -> dict:
    return {
        "result_boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "result_labels": torch.tensor(labels, dtype=torch.int64),
        "result_scores": torch.tensor(scores, dtype=torch.float32),
    }


A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
C = [40, 40, 50, 50]
FAR = [100, 100, 110, 110]


def test_ap_definitions_on_a_written_down_curve():
    # TP, FP, TP over 2 objects: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    # Area: precision made monotone is 1 up to recall 1/2, then 2/3: 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert average_precision_area(recall, precision) == pytest.approx(5 / 6, abs=1e-12)
    # 11-point: levels 0..0.5 (6 of them) reach precision 1, 0.6..1 (5) reach 2/3: (6 + 10/3) / 11.
    assert average_precision_11point(recall, precision) == pytest.approx(28 / 33, abs=1e-12)


def test_ap_definitions_differ_where_recall_stops_short():
    # One TP of 3 objects then nothing: recall 1/3 at precision 1.
    recall, precision = np.array([1 / 3]), np.array([1.0])
    assert average_precision_area(recall, precision) == pytest.approx(1 / 3, abs=1e-12)
    # Levels 0, 0.1, 0.2, 0.3 are reached (4 of 11).
    assert average_precision_11point(recall, precision) == pytest.approx(4 / 11, abs=1e-12)


def test_ranked_true_false_true_across_pictures():
    targets = [target([A], [1]), target([B], [1])]
    detections = [
        detection([A, FAR], [1, 1], [0.9, 0.8]),  # TP (0.9), FP (0.8)
        detection([B], [1], [0.7]),  # TP (0.7)
    ]
    metrics = evaluate_voc(detections, targets, num_object_classes=1)
    assert metrics.ap_area == [pytest.approx(5 / 6, abs=1e-12)]
    assert metrics.ap_11point == [pytest.approx(28 / 33, abs=1e-12)]
    curve = metrics.curves[0]
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0])
    assert (curve.num_objects, curve.true_positives, curve.false_positives) == (2, 2, 1)


def test_difficult_objects_are_neither_counted_nor_penalised():
    targets = [target([A, C], [1, 1], difficult=[False, True]), target([B], [1])]
    detections = [
        detection([A, C, FAR], [1, 1, 1], [0.9, 0.85, 0.8]),  # TP, on difficult C: ignored, FP
        detection([B], [1], [0.7]),  # TP
    ]
    metrics = evaluate_voc(detections, targets, num_object_classes=1)
    # The same curve as without C: only A and B are objects to find.
    assert metrics.curves[0].num_objects == 2
    assert metrics.ap_area[0] == pytest.approx(5 / 6, abs=1e-12)
    assert metrics.ap_11point[0] == pytest.approx(28 / 33, abs=1e-12)
    # A difficult object nobody finds costs nothing either.
    missed = [detection([A], [1], [0.9]), detection([B], [1], [0.7])]
    assert evaluate_voc(missed, targets, 1).ap_area[0] == pytest.approx(1.0)


def test_crowd_boxes_are_treated_like_difficult_ones():
    targets = [target([A, C], [1, 1], iscrowd=[False, True])]
    metrics = evaluate_voc([detection([C, A], [1, 1], [0.9, 0.8])], targets, 1)
    assert metrics.curves[0].num_objects == 1
    assert metrics.ap_area[0] == pytest.approx(1.0) and metrics.ap_11point[0] == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive():
    targets = [target([A, B], [1, 1])]
    # TP on A (0.9), duplicate on A (0.8) -> FP, TP on B (0.7): the same 5/6 and 28/33 as above.
    metrics = evaluate_voc([detection([A, [1, 0, 10, 10], B], [1, 1, 1], [0.9, 0.8, 0.7])], targets, 1)
    assert metrics.ap_area[0] == pytest.approx(5 / 6, abs=1e-12)
    assert metrics.ap_11point[0] == pytest.approx(28 / 33, abs=1e-12)


def test_wrong_class_is_false_for_one_class_and_missed_for_the_other():
    targets = [target([A, B], [1, 2])]
    metrics = evaluate_voc([detection([A, B], [1, 1], [0.9, 0.8])], targets, 2)
    # Class 1: TP then FP, recall 1 at precision 1 -> AP 1. Class 2: nothing found -> AP 0.
    assert metrics.ap_area == [pytest.approx(1.0), 0.0]
    assert metrics.ap_11point == [pytest.approx(1.0), 0.0]
    assert metrics.map_area == pytest.approx(0.5) and metrics.map_11point == pytest.approx(0.5)


def test_half_found_class_and_class_without_objects():
    targets = [target([A, B], [1, 1])]
    metrics = evaluate_voc([detection([A, C], [1, 2], [0.6, 0.9])], targets, 3)
    # Class 1: one TP over 2 objects -> recall 1/2 at precision 1: area 1/2, 11-point 6/11.
    assert metrics.ap_area[0] == pytest.approx(0.5) and metrics.ap_11point[0] == pytest.approx(6 / 11)
    # Classes 2 and 3 have no object: no AP, left out of the mean (the FP of class 2 does not count).
    assert math.isnan(metrics.ap_area[1]) and math.isnan(metrics.ap_area[2])
    assert metrics.map_area == pytest.approx(0.5) and metrics.map_11point == pytest.approx(6 / 11)


def test_iou_threshold_is_inclusive_and_pixel_convention_selectable():
    targets = [target([A], [1])]
    # IoU exactly 0.5 (100 / 200) counts as found.
    at_half = evaluate_voc([detection([[0, 0, 10, 20]], [1], [0.9])], targets, 1)
    assert at_half.ap_area[0] == pytest.approx(1.0)
    # 100 / 210 < 0.5: not found with widths x2 - x1 ...
    below = [detection([[0, 0, 10, 21]], [1], [0.9])]
    assert evaluate_voc(below, targets, 1).ap_area[0] == 0.0
    # ... but the devkit's inclusive pixels give 11*11 / (11*22) = 0.5: found.
    assert evaluate_voc(below, targets, 1, pixel_inclusive=True).ap_area[0] == pytest.approx(1.0)


def test_zero_size_ground_truth_is_dropped():
    targets = [target([A, [5, 5, 5, 9]], [1, 1])]
    metrics = evaluate_voc([detection([A], [1], [0.9])], targets, 1)
    assert metrics.curves[0].num_objects == 1 and metrics.ap_area[0] == pytest.approx(1.0)


def test_no_detections_and_no_objects_give_zero_not_an_error():
    empty = detection(np.zeros((0, 4)), [], [])
    metrics = evaluate_voc([empty, empty], [target([A], [1]), target([B], [2])], 2)
    assert metrics.ap_area == [0.0, 0.0] and metrics.map_area == 0.0 and metrics.map_11point == 0.0
    nothing = evaluate_voc([empty], [target(np.zeros((0, 4)), [])], 2)
    assert nothing.map_area == 0.0 and all(math.isnan(ap) for ap in nothing.ap_area)


def test_short_key_names_and_length_check():
    short = {
        "boxes": torch.tensor([A], dtype=torch.float32),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.5]),
    }
    assert evaluate_voc([short], [target([A], [1])], 1).ap_area[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1 detection sets for 2 pictures"):
        evaluate_voc([short], [target([A], [1]), target([B], [1])], 1)
